"""VAE encode/decode, tiling with blending, and the inpainting encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.checkpoint import load_checkpoint
from comfyserve.models.handles import Autoencoder
from comfyserve.models.vae import decode_latent, decode_latent_tiled, encode_pixels, encode_pixels_tiled, tiled
from comfyserve.nodes.vae import VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeForInpaint
from tests.unit.models_fixtures import SD1, tiny_models  # noqa: F401


@pytest.fixture()
def vae(tiny_models: Path) -> Autoencoder:  # noqa: F811
    return load_checkpoint(tiny_models / SD1)[2]


def test_encode_scales_and_crops_and_decode_clamps(vae: Autoencoder) -> None:
    pixels = torch.rand(2, 70, 67, 4)
    latent = VAEEncode().encode(vae, pixels)[0]["samples"]
    assert latent.shape == (2, 4, 8, 8)
    cropped = pixels[:, 3:67, 1:65, :3].movedim(-1, 1) * 2 - 1
    with torch.no_grad():
        mean = vae.vae.encode(cropped).latent_dist.mode()
    torch.testing.assert_close(latent, mean * 0.18215)
    image = VAEDecode().decode(vae, {"samples": latent})[0]
    assert image.shape == (2, 64, 64, 3) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    with torch.no_grad():
        raw = vae.vae.decode(latent / 0.18215).sample
    torch.testing.assert_close(image, ((raw + 1) / 2).clamp(0, 1).movedim(1, -1))


def test_blending_of_consistent_tiles_is_exact() -> None:
    x = torch.rand(1, 2, 20, 28)
    upsample = lambda t: F.interpolate(t, scale_factor=8, mode="nearest")  # noqa: E731
    torch.testing.assert_close(tiled(x, upsample, 8, 4, 8), upsample(x))
    downsample = lambda t: F.avg_pool2d(t, 4)  # noqa: E731
    torch.testing.assert_close(tiled(upsample(x), downsample, 64, 32, 0.25), downsample(upsample(x)))


def test_tiled_paths_match_whole_ones_when_one_tile_covers_the_image(vae: Autoencoder) -> None:
    pixels = torch.rand(1, 64, 48, 3)
    latent = encode_pixels(vae, pixels)
    torch.testing.assert_close(encode_pixels_tiled(vae, pixels, 512, 64), latent)
    torch.testing.assert_close(decode_latent_tiled(vae, latent, 512, 64), decode_latent(vae, latent))
    small_tiles = VAEDecodeTiled().decode(vae, {"samples": latent}, tile_size=64, overlap=32)[0]
    assert small_tiles.shape == (1, 64, 48, 3)
    assert encode_pixels_tiled(vae, pixels, 32, 16).shape == latent.shape


def test_wrong_latent_shape_is_a_node_error(vae: Autoencoder) -> None:
    with pytest.raises(NodeInputError) as info:
        decode_latent(vae, torch.zeros(1, 9, 8, 8))
    assert str(info.value) == "this VAE decodes latents of shape [batch, 4, height, width], got [1, 9, 8, 8]"


def test_encode_for_inpaint_greys_masked_pixels_and_grows_the_mask(vae: Autoencoder) -> None:
    pixels = torch.rand(1, 36, 33, 3)
    mask = torch.zeros(1, 36, 33)
    mask[:, 10:20, 10:20] = 1.0
    out = VAEEncodeForInpaint().encode(vae, pixels, mask, grow_mask_by=6)[0]
    assert out["samples"].shape == (1, 4, 4, 4)
    noise_mask = out["noise_mask"]
    assert noise_mask.shape == (1, 1, 32, 32)
    cropped_mask = mask[:, 2:34, 0:32]
    assert torch.equal(noise_mask[0, 0, 8:19, 8:19], torch.ones(11, 11))  # grown by 6 // 2 around the hole
    assert noise_mask[0, 0, 0, 0] == 0 and noise_mask.sum() > cropped_mask.sum()
    greyed = pixels[:, 2:34, 0:32].clone()
    greyed[cropped_mask.bool()] = 0.5
    torch.testing.assert_close(out["samples"], encode_pixels(vae, greyed))
