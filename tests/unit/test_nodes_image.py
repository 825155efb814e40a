"""Model-free image, mask and primitive nodes: contracts, shapes, and values on tiny known tensors."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.registry import build_registry
from comfyserve.nodes import image as image_nodes
from comfyserve.nodes import mask as mask_nodes
from comfyserve.nodes import primitives
from comfyserve.nodes.image import (
    EmptyImage,
    ImageBatch,
    ImageBlur,
    ImageCrop,
    ImageInvert,
    ImagePadForOutpaint,
    ImageScale,
    ImageScaleBy,
    ImageSharpen,
)
from comfyserve.nodes.mask import ImageToMask, InvertMask, MaskToImage, SolidMask
from comfyserve.nodes.primitives import PrimitiveBoolean, PrimitiveFloat, PrimitiveInt, PrimitiveStringMultiline

PACKS = ["comfyserve.nodes.image", "comfyserve.nodes.mask", "comfyserve.nodes.primitives"]


def grid(values: list[list[float]], channels: int = 3) -> torch.Tensor:
    """A one-image IMAGE batch whose channels all hold ``values``."""
    plane = torch.tensor(values, dtype=torch.float32)
    return plane[None, :, :, None].expand(1, *plane.shape, channels).clone()


# -- contracts ---------------------------------------------------------------------------------------


def test_packs_register_with_comfyui_names_and_display_names() -> None:
    registry = build_registry(PACKS)
    assert registry.failures == []
    assert set(registry.classes) == {
        *image_nodes.NODE_CLASS_MAPPINGS,
        *mask_nodes.NODE_CLASS_MAPPINGS,
        *primitives.NODE_CLASS_MAPPINGS,
    }
    assert registry.spec("ImageScale").display_name == "Upscale Image"
    assert registry.spec("ImageBlur").display_name == "ImageBlur"
    assert registry.spec("MaskToImage").display_name == "Convert Mask to Image"
    assert registry.spec("PrimitiveStringMultiline").display_name == "String (Multiline)"


@pytest.mark.parametrize(
    ("node", "input_name", "config"),
    [
        ("ImageScale", "width", ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}]),
        ("ImageScale", "upscale_method", [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]]),
        ("ImageScale", "crop", [["disabled", "center"]]),
        ("ImageScaleBy", "scale_by", ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}]),
        ("ImageCrop", "width", ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}]),
        ("ImageCrop", "y", ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}]),
        ("ImagePadForOutpaint", "left", ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}]),
        ("ImagePadForOutpaint", "feathering", ["INT", {"default": 40, "min": 0, "max": 16384, "step": 1}]),
        ("EmptyImage", "batch_size", ["INT", {"default": 1, "min": 1, "max": 4096}]),
        ("EmptyImage", "color", ["INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}]),
        ("ImageBlur", "sigma", ["FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}]),
        ("ImageSharpen", "alpha", ["FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01}]),
        ("SolidMask", "value", ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]),
        ("ImageToMask", "channel", [["red", "green", "blue", "alpha"]]),
        ("PrimitiveInt", "value", ["INT", {"min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True}]),
        ("PrimitiveStringMultiline", "value", ["STRING", {"multiline": True}]),
    ],
)
def test_input_declarations_match_comfyui(node: str, input_name: str, config: list[object]) -> None:
    assert build_registry(PACKS).spec(node).inputs[input_name].config() == config


def test_output_types() -> None:
    specs = build_registry(PACKS).specs()
    assert specs["ImagePadForOutpaint"].return_types == ("IMAGE", "MASK")
    assert specs["ImageToMask"].return_types == ("MASK",)
    assert specs["MaskToImage"].return_types == ("IMAGE",)
    assert specs["PrimitiveBoolean"].return_types == ("BOOLEAN",)
    assert specs["PrimitiveFloat"].category == "utils/primitive"


# -- scaling -------------------------------------------------------------------------------------------


def test_nearest_exact_doubles_each_pixel() -> None:
    (out,) = ImageScale().upscale(grid([[0.0, 1.0], [0.25, 0.5]]), "nearest-exact", 4, 4, "disabled")
    assert out.shape == (1, 4, 4, 3) and out.dtype == torch.float32
    expected = [[0, 0, 1, 1], [0, 0, 1, 1], [0.25, 0.25, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]]
    assert torch.equal(out[0, :, :, 1], torch.tensor(expected))


def test_bilinear_uses_half_pixel_centres() -> None:
    (out,) = ImageScale().upscale(grid([[0.0, 1.0]]), "bilinear", 4, 1, "disabled")
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_area_averages_blocks() -> None:
    image = grid([[0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0.5, 0.5], [1, 1, 0.5, 0.5]])
    (out,) = ImageScale().upscale(image, "area", 2, 2, "disabled")
    assert torch.allclose(out[0, :, :, 2], torch.tensor([[0.5, 0.0], [1.0, 0.5]]))


def test_zero_width_keeps_aspect_ratio_and_both_zero_is_identity() -> None:
    image = torch.rand(2, 4, 8, 3)
    assert ImageScale().upscale(image, "bicubic", 0, 2, "disabled")[0].shape == (2, 2, 4, 3)
    assert ImageScale().upscale(image, "bicubic", 2, 0, "disabled")[0].shape == (2, 1, 2, 3)
    assert ImageScale().upscale(image, "bicubic", 0, 0, "disabled")[0] is image


def test_center_crop_keeps_the_middle_before_resizing() -> None:
    image = grid([[0, 0, 1, 2, 3, 4, 0, 0]] * 4)  # 8 wide, 4 high: the centre 4x4 holds columns 2..5
    (out,) = ImageScale().upscale(image, "area", 2, 2, "center")
    assert torch.allclose(out[0, :, :, 0], torch.tensor([[1.5, 3.5], [1.5, 3.5]]))


def test_lanczos_goes_through_8_bits_truncating_as_comfyui() -> None:
    image = grid([[0.0, 17 / 255, 200 / 255], [1.0, 0.5, 1 / 255]])
    expected = grid([[0.0, 17 / 255, 200 / 255], [1.0, 127 / 255, 1 / 255]])  # 0.5 * 255 = 127.5 -> 127
    assert torch.equal(ImageScale().upscale(image, "lanczos", 3, 2, "disabled")[0], expected)
    (big,) = ImageScaleBy().upscale(torch.full((1, 3, 3, 4), 0.2), "lanczos", 2.0)
    assert big.shape == (1, 6, 6, 4)
    assert torch.allclose(big, torch.full_like(big, 51 / 255))  # 0.2 * 255 = 51 exactly


def test_scale_by_rounds_the_size_and_rejects_an_empty_result() -> None:
    assert ImageScaleBy().upscale(torch.rand(1, 3, 5, 3), "bilinear", 1.5)[0].shape == (1, 4, 8, 3)
    with pytest.raises(NodeInputError) as err:
        ImageScaleBy().upscale(torch.rand(1, 3, 5, 3), "area", 0.01)
    assert str(err.value) == "cannot resize to 0x0: both sides must be at least 1 pixel"


# -- invert, crop, pad, batch, empty --------------------------------------------------------------------


def test_invert() -> None:
    (out,) = ImageInvert().invert(grid([[0.0, 0.25], [1.0, 0.5]]))
    assert torch.equal(out[0, :, :, 0], torch.tensor([[1.0, 0.75], [0.0, 0.5]]))


def test_crop_takes_the_region_and_clamps_the_origin() -> None:
    image = grid([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    assert torch.equal(ImageCrop().crop(image, 2, 2, 1, 1)[0][0, :, :, 0], torch.tensor([[4.0, 5], [7, 8]]))
    (clamped,) = ImageCrop().crop(image, 512, 512, 100, 0)  # x beyond the image: last column
    assert torch.equal(clamped[0, :, :, 0], torch.tensor([[2.0], [5], [8]]))


def test_pad_fills_grey_and_masks_the_padding() -> None:
    image = torch.rand(2, 4, 4, 3)
    padded, mask = ImagePadForOutpaint().expand_image(image, 8, 0, 0, 16, 40)
    assert padded.shape == (2, 20, 12, 3) and mask.shape == (1, 20, 12)
    assert torch.equal(padded[:, :4, 8:, :], image)
    assert torch.all(padded[:, :, :8] == 0.5) and torch.all(padded[:, 4:] == 0.5)
    assert torch.all(mask[0, :4, 8:] == 0)  # feathering 40 is too large for a 4x4 image: a hard edge
    assert torch.all(mask[0, :, :8] == 1) and torch.all(mask[0, 4:] == 1)


def test_pad_feathers_quadratically_from_the_padded_side_only() -> None:
    _, mask = ImagePadForOutpaint().expand_image(torch.rand(1, 10, 10, 3), 8, 0, 0, 0, 2)
    assert torch.all(mask[0, :, :8] == 1)
    assert torch.all(mask[0, :, 8] == 1.0) and torch.all(mask[0, :, 9] == 0.25)
    assert torch.all(mask[0, :, 10:] == 0)


def test_batch_resizes_the_second_image_to_the_first() -> None:
    first, second = torch.rand(2, 4, 6, 3), torch.full((1, 2, 3, 3), 0.25)
    (out,) = ImageBatch().batch(first, second)
    assert out.shape == (3, 4, 6, 3)
    assert torch.equal(out[:2], first)
    assert torch.allclose(out[2], torch.full((4, 6, 3), 0.25))


def test_batch_adds_an_opaque_alpha_channel_when_channels_differ() -> None:
    (out,) = ImageBatch().batch(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 4))
    assert out.shape == (2, 2, 2, 4)
    assert torch.all(out[0, ..., 3] == 1.0) and torch.all(out[1, ..., 3] == 0.0)


def test_empty_image_fills_the_colour() -> None:
    (out,) = EmptyImage().generate(3, 2, 2, 0xFF8000)
    assert out.shape == (2, 2, 3, 3) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out[1, 1, 2], torch.tensor([1.0, 128 / 255, 0.0]))


# -- blur and sharpen -----------------------------------------------------------------------------------


def _impulse(background: float, peak: float) -> torch.Tensor:
    image = torch.full((1, 5, 5, 3), background)
    image[0, 2, 2] = peak
    return image


# ComfyUI's 3x3 kernel (radius 1, sigma 1) spans -1..1: weights exp(-d^2 / 2) for d^2 = 0, 1, 2.
_WEIGHT_SUM = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)


def test_blur_spreads_an_impulse_with_comfyui_kernel() -> None:
    (out,) = ImageBlur().blur(_impulse(0.0, 1.0), 1, 1.0)
    assert out.shape == (1, 5, 5, 3)
    assert out[0, 2, 2, 0].item() == pytest.approx(1 / _WEIGHT_SUM, rel=1e-5)
    assert out[0, 2, 1, 0].item() == pytest.approx(math.exp(-0.5) / _WEIGHT_SUM, rel=1e-5)
    assert out[0, 1, 1, 0].item() == pytest.approx(math.exp(-1) / _WEIGHT_SUM, rel=1e-5)
    assert out[0, 0, 0, 0].item() == 0.0


def test_blur_and_sharpen_keep_a_constant_image() -> None:
    flat = torch.full((1, 4, 4, 3), 0.3)
    assert torch.allclose(ImageBlur().blur(flat, 3, 2.0)[0], flat)
    assert torch.allclose(ImageSharpen().sharpen(flat, 2, 1.0, 1.0)[0], flat)


def test_sharpen_raises_the_centre_by_its_unsharp_weight() -> None:
    (out,) = ImageSharpen().sharpen(_impulse(0.5, 0.6), 1, 1.0, 0.01)
    centre_weight = 1 + 0.1 * (1 - 1 / _WEIGHT_SUM)
    assert out[0, 2, 2, 1].item() == pytest.approx(0.5 + 0.1 * centre_weight, rel=1e-5)
    (strong,) = ImageSharpen().sharpen(_impulse(0.5, 0.6), 1, 1.0, 5.0)
    assert strong.min().item() == 0.0 and strong.max().item() == 1.0  # clamped to 0..1


def test_blur_radius_larger_than_the_image_is_a_clear_error() -> None:
    with pytest.raises(NodeInputError) as err:
        ImageBlur().blur(torch.rand(1, 2, 2, 3), 2, 1.0)
    assert str(err.value) == "blur_radius 2 is too large for a 2x2 image (it must be smaller than both sides)"


# -- masks and primitives -------------------------------------------------------------------------------


def test_solid_and_invert_mask() -> None:
    (solid,) = SolidMask().solid(0.25, 3, 2)
    assert solid.shape == (1, 2, 3) and solid.dtype == torch.float32 and torch.all(solid == 0.25)
    assert torch.all(InvertMask().invert(solid)[0] == 0.75)


def test_mask_to_image_and_back() -> None:
    mask = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    (image,) = MaskToImage().mask_to_image(mask)
    assert image.shape == (1, 2, 2, 3)
    assert all(torch.equal(image[..., c], mask) for c in range(3))
    assert MaskToImage().mask_to_image(mask[0])[0].shape == (1, 2, 2, 3)
    rgba = torch.stack([torch.full((1, 2, 2), v) for v in (0.1, 0.2, 0.3, 0.4)], dim=-1)
    assert torch.all(ImageToMask().image_to_mask(rgba, "blue")[0] == 0.3)
    assert ImageToMask().image_to_mask(rgba, "alpha")[0].shape == (1, 2, 2)


def test_alpha_of_an_rgb_image_is_a_clear_error() -> None:
    with pytest.raises(NodeInputError) as err:
        ImageToMask().image_to_mask(torch.zeros(1, 2, 2, 3), "alpha")
    assert str(err.value) == "channel 'alpha': the image has only 3 channels"


def test_primitives_return_their_value() -> None:
    assert PrimitiveInt().execute(-(2**40)) == (-(2**40),)
    assert PrimitiveFloat().execute(0.25) == (0.25,)
    assert PrimitiveBoolean().execute(False) == (False,)
    assert PrimitiveStringMultiline().execute("a\nb") == ("a\nb",)
