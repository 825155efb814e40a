"""RebatchImages and RebatchLatents: every item, in order, regrouped into batches of the chosen size."""

from __future__ import annotations

import torch

from comfyserve.nodes.batch import RebatchImages, RebatchLatents


def _images(*counts: int) -> list[torch.Tensor]:
    start = 0
    batches = []
    for count in counts:
        batches.append(
            torch.arange(start, start + count, dtype=torch.float32).reshape(count, 1, 1, 1).expand(-1, 2, 2, 3)
        )
        start += count
    return batches


def test_rebatch_images_regroups_every_image_in_order() -> None:
    (out,) = RebatchImages().rebatch(_images(1, 3, 2), [4])
    assert [tuple(batch.shape) for batch in out] == [(4, 2, 2, 3), (2, 2, 2, 3)]
    assert [batch[:, 0, 0, 0].tolist() for batch in out] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0]]
    (singles,) = RebatchImages().rebatch(_images(3), [1])
    assert len(singles) == 3


def test_rebatch_latents_keeps_indices_and_masks_and_splits_on_size_changes() -> None:
    small = {"samples": torch.zeros(3, 4, 2, 2)}
    masked = {"samples": torch.zeros(2, 4, 2, 2), "noise_mask": torch.zeros(1, 16, 16), "batch_index": [7, 9]}
    large = {"samples": torch.zeros(2, 4, 3, 3)}
    (out,) = RebatchLatents().rebatch([small, masked, large], [2])
    assert [tuple(b["samples"].shape) for b in out] == [(2, 4, 2, 2), (2, 4, 2, 2), (1, 4, 2, 2), (2, 4, 3, 3)]
    assert [b["batch_index"] for b in out] == [[0, 1], [2, 7], [9], [5, 6]]
    assert "noise_mask" not in out[0] and "noise_mask" not in out[3]  # all-ones masks are dropped
    assert out[1]["noise_mask"][:, 0].mean(dim=(1, 2)).tolist() == [1.0, 0.0]
    assert out[2]["noise_mask"].shape == (1, 1, 16, 16)
