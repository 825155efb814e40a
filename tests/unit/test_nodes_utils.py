"""Utility, image-transform, mask-editing and latent-batch nodes: catalog entries equal to the real ComfyUI
0.3.64's, and exact values on tiny tensors as ComfyUI's nodes compute them (quirks included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from comfyserve.engine import context as run_context
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.executor import Executor
from comfyserve.engine.graph_utils import GraphBuilder
from comfyserve.nodes import builtin_registry
from comfyserve.nodes.image_resize import ImageScaleToMaxDimension, ImageScaleToTotalPixels
from comfyserve.nodes.image_transform import (
    GetImageSize,
    ImageCompositeMasked,
    ImageFlip,
    ImageFromBatch,
    ImageRotate,
    ImageStitch,
    RepeatImageBatch,
)
from comfyserve.nodes.latent_batch import LatentBlend, LatentComposite, LatentFromBatch, RepeatLatentBatch
from comfyserve.nodes.mask_ops import FeatherMask, GrowMask, MaskComposite, MaskPreview, ThresholdMask
from comfyserve.nodes.utility import PreviewAny, StringConcatenate, preview_text
from tests.testpack.harness import context, run

REFERENCE = Path(__file__).parents[1] / "data" / "comfyui_0364_object_info_utils.json"
REGISTRY = builtin_registry()

# -- catalog identity --------------------------------------------------------------------------------


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    """An /object_info entry without what differs by design: ``python_module`` (our module), comfyserve's
    own ``comfyserve`` key, V3 nodes' all-default extras (``output_tooltips`` of nulls, false flags), and an
    empty options dict (``["BOOLEAN", {}]`` and ``["BOOLEAN"]`` validate alike)."""
    out = {k: v for k, v in entry.items() if k not in ("python_module", "comfyserve")}
    if not any(out.get("output_tooltips") or ()):
        out.pop("output_tooltips", None)
    if out.get("display_name") is None:  # a V3 node without one: the frontend shows the class name
        out["display_name"] = out["name"]
    for flag in ("deprecated", "experimental", "api_node"):
        if out.get(flag) is False:
            out.pop(flag)
    out["input"] = {
        kind: {name: decl[:1] if len(decl) == 2 and decl[1] == {} else decl for name, decl in inputs.items()}
        for kind, inputs in out["input"].items()
    }
    return out


REFERENCE_ENTRIES: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(REFERENCE_ENTRIES))
def test_catalog_entry_equals_the_real_comfyuis(name: str) -> None:
    ours = Catalog.from_registry(REGISTRY).to_object_info()[name]
    assert _comparable(ours) == _comparable(REFERENCE_ENTRIES[name])


def test_the_packaged_catalog_carries_the_new_classes() -> None:
    assert set(REFERENCE_ENTRIES) <= set(Catalog.packaged().specs)


# -- images ------------------------------------------------------------------------------------------


def ramp(batch: int, height: int, width: int, channels: int = 3) -> torch.Tensor:
    """Pixel value = its flat index, so every position is distinct (exact in float32)."""
    count = batch * height * width * channels
    return torch.arange(count, dtype=torch.float32).reshape(batch, height, width, channels)


def test_mask_composite_combines_the_source_at_its_offset_cut_at_the_edges_and_clamped() -> None:
    destination = torch.full((1, 3, 4), 0.5)
    source = torch.tensor([[[0.75, 1.0], [0.25, 0.0]]])
    combine = MaskComposite().combine

    added = combine(destination, source, 3, 1, "add")[0][0]
    assert added.tolist() == [[0.5] * 4, [0.5, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 0.75]]  # 1.25 clamped, column 4 cut
    assert combine(destination, source, 0, 0, "multiply")[0][0, :2, :2].tolist() == [[0.375, 0.5], [0.125, 0.0]]
    assert combine(destination, source, 0, 0, "subtract")[0][0, 0, :2].tolist() == [0.0, 0.0]  # -0.25, -0.5
    # and/or/xor on masks rounded to 0 or 1 (0.5 rounds to 0, half to even)
    assert combine(destination, source, 0, 0, "or")[0][0, :2, :2].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert combine(destination, source, 0, 0, "and")[0][0, :2, :2].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert combine(torch.ones(1, 2, 2), source, 0, 0, "xor")[0][0].tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert torch.equal(combine(destination, source, 4, 0, "add")[0], destination)  # entirely outside


def test_get_image_size_reports_width_height_batch() -> None:
    assert GetImageSize().get_size(ramp(3, 2, 5)) == (5, 2, 3)


def test_image_rotate_turns_clockwise() -> None:
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]
    assert ImageRotate().rotate(image, "90 degrees")[0][0, :, :, 0].tolist() == [[3.0, 1.0], [4.0, 2.0]]
    assert ImageRotate().rotate(image, "180 degrees")[0][0, :, :, 0].tolist() == [[4.0, 3.0], [2.0, 1.0]]
    assert ImageRotate().rotate(image, "270 degrees")[0][0, :, :, 0].tolist() == [[2.0, 4.0], [1.0, 3.0]]
    assert torch.equal(ImageRotate().rotate(image, "none")[0], image)


def test_image_flip_axes() -> None:
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]
    assert ImageFlip().flip(image, "x-axis: vertically")[0][0, :, :, 0].tolist() == [[3.0, 4.0], [1.0, 2.0]]
    assert ImageFlip().flip(image, "y-axis: horizontally")[0][0, :, :, 0].tolist() == [[2.0, 1.0], [4.0, 3.0]]


def test_image_stitch_pads_centred_and_inserts_a_coloured_spacer() -> None:
    left = torch.full((1, 3, 1, 3), 0.5)
    right = torch.full((1, 1, 1, 3), 0.25)
    (out,) = ImageStitch().stitch(left, "right", False, 1, "red", right)
    assert out.shape == (1, 3, 4, 3)  # spacing 1 rounds up to 2
    assert out[0, :, 1].tolist() == [[1.0, 0.0, 0.0]] * 3  # the red spacer
    assert out[0, :, 3, 0].tolist() == [0.0, 0.25, 0.0]  # image2 centred, padded with 0 for a coloured spacer


def test_image_stitch_up_puts_image2_on_top_resized_to_image1s_width() -> None:
    top = torch.full((1, 2, 2, 3), 0.75)
    (out,) = ImageStitch().stitch(torch.zeros(1, 1, 4, 3), "up", True, 0, "white", top)
    assert out.shape == (1, 5, 4, 3)
    # resized with Lanczos through 8 bits, as ComfyUI does: 0.75 comes back as 191/255
    assert torch.equal(out[0, :4], torch.full((4, 4, 3), 191 / 255)) and out[0, 4].sum() == 0


def test_image_stitch_without_image2_passes_image1_and_matches_batches() -> None:
    image = ramp(1, 2, 2)
    assert ImageStitch().stitch(image, "right", True, 0, "white")[0] is image
    (out,) = ImageStitch().stitch(ramp(2, 2, 2), "down", False, 0, "white", image)
    assert out.shape == (2, 4, 2, 3) and torch.equal(out[1, 2:], image[0])  # image2's last item repeated


def test_repeat_image_batch_and_image_from_batch() -> None:
    image = ramp(2, 1, 1, 1)
    assert RepeatImageBatch().repeat(image, 3)[0].flatten().tolist() == [0.0, 1.0] * 3
    batch = ramp(4, 1, 1, 1)
    assert ImageFromBatch().frombatch(batch, 1, 2)[0].flatten().tolist() == [1.0, 2.0]
    assert ImageFromBatch().frombatch(batch, 9, 5)[0].flatten().tolist() == [3.0]  # past the end: the last


def test_image_composite_masked_blends_and_clips_at_the_edge() -> None:
    destination = torch.zeros(1, 3, 3, 3)
    source = torch.ones(1, 2, 2, 4)  # RGBA: the alpha is dropped
    mask = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])
    (out,) = ImageCompositeMasked().composite(destination, source, 2, 1, False, mask)
    assert out.shape == (1, 3, 3, 3) and destination.sum() == 0  # the input is not changed
    assert out[0, :, :, 0].tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    (resized,) = ImageCompositeMasked().composite(destination, torch.ones(1, 1, 1, 3), 0, 0, True)
    assert resized.min() == 1.0


def test_image_composite_masked_refuses_a_source_with_fewer_channels() -> None:
    with pytest.raises(NodeInputError, match="source has 3 channels, fewer than the destination's 4"):
        ImageCompositeMasked().composite(torch.zeros(1, 2, 2, 4), torch.ones(1, 2, 2, 3), 0, 0, False)


def test_image_scale_to_total_pixels_keeps_the_aspect_ratio() -> None:
    (out,) = ImageScaleToTotalPixels().execute(torch.ones(1, 2, 4, 3), "nearest-exact", 32 / 1024 / 1024)
    assert out.shape == (1, 4, 8, 3) and out.min() == 1.0  # 32 pixels: 2x4 scaled by 2


@pytest.mark.parametrize(
    ("height", "width", "largest", "expected"),
    [(2, 4, 8, (4, 8)), (4, 2, 8, (8, 4)), (3, 3, 5, (5, 5)), (3, 7, 5, (2, 5))],
)
def test_image_scale_to_max_dimension_sets_the_longer_side(
    height: int, width: int, largest: int, expected: tuple[int, int]
) -> None:
    (out,) = ImageScaleToMaxDimension().upscale(torch.ones(1, height, width, 3), "area", largest)
    assert tuple(out.shape[1:3]) == expected and out.min() == 1.0


# -- masks -------------------------------------------------------------------------------------------


def dot(size: int = 5) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, size // 2, size // 2] = 1.0
    return mask


def test_threshold_mask_is_strictly_above() -> None:
    assert ThresholdMask().image_to_mask(torch.tensor([[[0.2, 0.5, 0.7]]]), 0.5)[0].tolist() == [[[0.0, 0.0, 1.0]]]


def test_grow_mask_tapered_is_a_cross_and_square_otherwise() -> None:
    cross = GrowMask().expand_mask(dot(), 1, True)[0][0]
    square = GrowMask().expand_mask(dot(), 1, False)[0][0]
    assert cross[1:4, 1:4].tolist() == [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]] and cross.sum() == 5
    assert square.sum() == 9 and square[1:4, 1:4].min() == 1.0
    assert GrowMask().expand_mask(dot(), 2, True)[0][0].sum() == 13  # a diamond of radius 2


def test_grow_mask_negative_erodes_with_the_border_repeated() -> None:
    assert GrowMask().expand_mask(torch.ones(1, 3, 3), -1, True)[0].min() == 1.0  # edges are not eroded
    block = torch.zeros(1, 5, 5)
    block[0, 1:4, 1:4] = 1.0
    assert torch.equal(GrowMask().expand_mask(block, -1, False)[0], dot())
    assert GrowMask().expand_mask(block, 0, True)[0].shape == (1, 5, 5)


def test_feather_mask_ramps_with_comfyuis_end_indexing() -> None:
    row = torch.ones(1, 1, 4)
    assert FeatherMask().feather(row, 2, 0, 0, 0)[0].flatten().tolist() == [0.5, 1.0, 1.0, 1.0]
    # ComfyUI feathers the right edge at columns -0 (= 0), -1, -2 …
    out = FeatherMask().feather(row, 0, 0, 3, 0)[0].flatten()
    assert out.tolist() == pytest.approx([1 / 3, 1.0, 1.0, 2 / 3])
    column = FeatherMask().feather(torch.ones(2, 3, 1), 0, 9, 0, 0)[0]
    assert column.shape == (2, 3, 1) and column[1].flatten().tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_mask_preview_saves_a_grey_png_to_temp(tmp_path: Path) -> None:
    with run_context.use(context(tmp_path)):
        result = MaskPreview().execute(torch.full((1, 2, 3), 0.5))
    [entry] = result["ui"]["images"]
    assert entry["type"] == "temp" and entry["filename"].startswith("ComfyUI_temp_")
    assert (tmp_path / "temp" / entry["filename"]).is_file()


def test_mask_nodes_refuse_a_non_mask() -> None:
    with pytest.raises(NodeInputError, match="mask must be a MASK tensor"):
        GrowMask().expand_mask(torch.ones(3), 1, True)


# -- latents -----------------------------------------------------------------------------------------


def latent(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.arange(batch * height * width, dtype=torch.float32).reshape(batch, 1, height, width)


def test_latent_composite_pastes_on_the_latent_grid_and_cuts_at_the_edge() -> None:
    zeros = torch.zeros(1, 1, 3, 3)
    target = {"samples": zeros, "batch_index": [7]}
    (out,) = LatentComposite().composite(target, {"samples": torch.ones(1, 1, 2, 2)}, 15, 8, 0)
    assert out["batch_index"] == [7] and zeros.sum() == 0  # the input is not changed
    assert out["samples"][0, 0].tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    (same,) = LatentComposite().composite(target, {"samples": torch.ones(1, 1, 2, 2)}, 24, 0, 0)
    assert same["samples"].sum() == 0  # at the edge: unchanged


def test_latent_composite_feathers_only_inner_edges() -> None:
    target, source = {"samples": torch.zeros(1, 1, 6, 6)}, {"samples": torch.ones(1, 1, 4, 4)}
    (out,) = LatentComposite().composite(target, source, 8, 0, 16)
    # at (1, 0) in latent units: the top edge lies on the border (no fade); left, right and bottom fade over 2
    half = [0.5, 1.0, 1.0, 0.5]
    assert out["samples"][0, 0, :4, 1:5].tolist() == [half, half, half, [0.25, 0.5, 0.5, 0.25]]
    assert out["samples"][0, 0, 4:].sum() == 0 and out["samples"][0, 0, :, 0].sum() == 0


def test_latent_blend_mixes_and_resizes_the_second() -> None:
    first, second = {"samples": torch.full((1, 1, 2, 2), 2.0)}, {"samples": torch.full((1, 1, 2, 2), 4.0)}
    assert LatentBlend().blend(first, second, 0.25)[0]["samples"].flatten().tolist() == [3.5] * 4
    resized = LatentBlend().blend(first, {"samples": torch.full((1, 1, 4, 6), 4.0)}, 0.5)[0]["samples"]
    assert resized.shape == (1, 1, 2, 2) and resized.flatten().tolist() == pytest.approx([3.0] * 4)


def test_latent_from_batch_keeps_noise_masks_and_batch_index() -> None:
    masks = torch.arange(2, dtype=torch.float32).reshape(2, 1, 1, 1)
    samples = {"samples": latent(4, 1, 1), "noise_mask": masks}
    (out,) = LatentFromBatch().frombatch(samples, 1, 2)
    assert out["samples"].flatten().tolist() == [1.0, 2.0]
    assert out["noise_mask"].flatten().tolist() == [1.0, 0.0]  # two masks tiled over four items
    assert out["batch_index"] == [1, 2]
    (again,) = LatentFromBatch().frombatch(out, 1, 5)
    assert again["batch_index"] == [2] and again["samples"].flatten().tolist() == [2.0]


def test_repeat_latent_batch_offsets_batch_index() -> None:
    samples = {"samples": latent(2, 1, 1), "noise_mask": torch.ones(2, 1, 1, 1), "batch_index": [3, 4]}
    (out,) = RepeatLatentBatch().repeat(samples, 3)
    assert out["samples"].flatten().tolist() == [0.0, 1.0] * 3 and out["noise_mask"].shape[0] == 6
    assert out["batch_index"] == [3, 4, 5, 6, 7, 8]
    single = {"samples": latent(1, 1, 1), "noise_mask": torch.ones(1, 1, 1, 1)}
    assert RepeatLatentBatch().repeat(single, 2)[0]["noise_mask"].shape[0] == 1  # one mask serves every item


def test_latent_nodes_refuse_a_non_latent() -> None:
    with pytest.raises(NodeInputError, match="samples must be a LATENT"):
        RepeatLatentBatch().repeat({"samples": torch.ones(2, 2)}, 2)


# -- text --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a b", "a b"),
        (3, "3"),
        (0.5, "0.5"),
        (True, "True"),
        (None, "None"),
        ({"k": [1, 2]}, '{"k": [1, 2]}'),
        (torch.tensor([1]), "tensor([1])"),
    ],
)
def test_preview_text_as_comfyui_shows_it(value: Any, text: str) -> None:
    assert preview_text(value) == text
    assert PreviewAny().main(value) == {"ui": {"text": (text,)}}


def test_string_concatenate() -> None:
    assert StringConcatenate().execute("a", "b", ", ") == ("a, b",)


def test_preview_any_text_reaches_the_history_outputs_and_the_executed_event(tmp_path: Path) -> None:
    g = GraphBuilder()
    number = g.node("PrimitiveInt", value=7)
    joined = g.node("StringConcatenate", string_a="x", string_b="y", delimiter="-")
    shown_number = g.node("PreviewAny", source=number.out(0))
    shown_text = g.node("PreviewAny", source=joined.out(0))
    executor = Executor(REGISTRY)
    try:
        result, events = run(executor, g, [shown_number, shown_text], context(tmp_path))
    finally:
        executor.close()
    assert result.status == "success"
    history = json.loads(json.dumps(result.ui_outputs))  # as /history and the events serve it
    assert history == {shown_number.id: {"text": ["7"]}, shown_text.id: {"text": ["x-y"]}}
    assert {e["node"]: e["output"] for e in events.of("executed")} == result.ui_outputs
