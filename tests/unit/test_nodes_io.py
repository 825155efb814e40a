"""LoadImage, LoadImageMask, SaveImage and PreviewImage against real files in a job's folders."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngImageFile

from comfyserve.engine import context
from comfyserve.engine.context import RunContext
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.registry import build_registry
from comfyserve.nodes import imagefile
from comfyserve.nodes.image_io import LoadImage, LoadImageMask, PreviewImage, SaveImage
from comfyserve.nodes.imagefile import encode_png, to_uint8

PROMPT = {"3": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}}}
EXTRA = {"workflow": {"nodes": [{"id": 3, "type": "SaveImage"}], "version": 0.4}}


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[RunContext]:
    run = RunContext(output_dir=tmp_path / "output", temp_dir=tmp_path / "temp", input_dir=tmp_path / "input")
    run.input_dir.mkdir()
    with context.use(run):
        yield run


def write_input(run: RunContext, name: str, pixels: np.ndarray) -> Path:
    path = run.input_dir / name
    Image.fromarray(pixels).save(path)
    return path


def open_png(path: Path) -> PngImageFile:
    png = Image.open(path)
    assert isinstance(png, PngImageFile)
    return png


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# -- contracts ---------------------------------------------------------------------------------------


def test_contracts_match_comfyui() -> None:
    registry = build_registry(["comfyserve.nodes.image_io"])
    assert registry.failures == []
    save, preview, load = registry.spec("SaveImage"), registry.spec("PreviewImage"), registry.spec("LoadImage")
    assert save.display_name == "Save Image" and save.output_node and save.return_types == ()
    assert save.inputs["filename_prefix"].options["default"] == "ComfyUI"
    assert save.hidden == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert list(preview.declared) == ["images"] and preview.output_node
    assert load.return_types == ("IMAGE", "MASK") and load.inputs["image"].options["image_upload"] is True
    assert load.has_is_changed
    assert registry.spec("LoadImageMask").inputs["channel"].choices == ("alpha", "red", "green", "blue")


# -- loading -----------------------------------------------------------------------------------------


def test_load_rgba_gives_image_and_inverted_alpha_mask(ctx: RunContext) -> None:
    pixels = np.zeros((2, 3, 4), dtype=np.uint8)
    pixels[..., 0] = [[10, 20, 30], [40, 50, 60]]
    pixels[..., 3] = [[0, 128, 255], [255, 255, 0]]
    write_input(ctx, "rgba.png", pixels)
    image, mask = LoadImage().load_image("rgba.png")
    assert image.shape == (1, 2, 3, 3) and image.dtype == torch.float32
    assert mask.shape == (1, 2, 3) and mask.dtype == torch.float32
    assert torch.equal(image[0, :, :, 0], torch.tensor([[10, 20, 30], [40, 50, 60]], dtype=torch.float32) / 255)
    expected_mask = 1.0 - torch.tensor([[0, 128, 255], [255, 255, 0]], dtype=torch.float32) / 255
    assert torch.equal(mask[0], expected_mask)


def test_load_without_alpha_gives_a_64x64_empty_mask(ctx: RunContext) -> None:
    write_input(ctx, "rgb.png", np.full((5, 7, 3), 255, dtype=np.uint8))
    image, mask = LoadImage().load_image("rgb.png")
    assert image.shape == (1, 5, 7, 3) and torch.all(image == 1.0)
    assert mask.shape == (1, 64, 64) and torch.all(mask == 0)


def test_load_applies_exif_orientation(ctx: RunContext) -> None:
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[0, 0] = [255, 0, 0]
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    img.save(ctx.input_dir / "sideways.png", exif=exif)
    image, _ = LoadImage().load_image("sideways.png")
    assert image.shape == (1, 3, 2, 3)
    assert image[0, 0, 1, 0] == 1.0 and image[0, :, :, 0].sum() == 1.0


def test_load_keeps_frames_of_the_first_frames_size_as_a_batch(ctx: RunContext) -> None:
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (2, 2)), Image.new("RGB", (4, 4), (0, 0, 255))]
    frames[0].save(ctx.input_dir / "pages.tiff", save_all=True, append_images=frames[1:])
    image, mask = LoadImage().load_image("pages.tiff")
    assert image.shape == (2, 4, 4, 3) and mask.shape == (2, 64, 64)
    assert torch.equal(image[:, 0, 0], torch.tensor([[1.0, 0, 0], [0, 0, 1]]))


def test_load_reads_16_bit_greyscale_at_full_precision(ctx: RunContext) -> None:
    write_input(ctx, "deep.png", np.array([[0, 32768, 65535]], dtype=np.uint16))
    image, _ = LoadImage().load_image("deep.png")
    assert image.shape == (1, 1, 3, 3)
    expected = torch.tensor([0.0, 32768 / 65535, 1.0])
    assert all(torch.allclose(image[0, 0, :, c], expected) for c in range(3))


def test_load_image_mask_channels(ctx: RunContext) -> None:
    pixels = np.zeros((1, 2, 4), dtype=np.uint8)
    pixels[0] = [[255, 0, 51, 0], [0, 102, 0, 255]]
    write_input(ctx, "m.png", pixels)
    write_input(ctx, "opaque.png", np.zeros((3, 2, 3), dtype=np.uint8))
    (alpha,) = LoadImageMask().load_image("m.png", "alpha")
    assert torch.equal(alpha, torch.tensor([[[1.0, 0.0]]]))
    assert torch.equal(LoadImageMask().load_image("m.png", "red")[0], torch.tensor([[[1.0, 0.0]]]))
    assert torch.equal(LoadImageMask().load_image("m.png", "blue")[0], torch.tensor([[[0.2, 0.0]]]))
    (none,) = LoadImageMask().load_image("opaque.png", "alpha")
    assert none.shape == (1, 3, 2) and torch.all(none == 0)


def test_is_changed_is_the_sha256_of_the_file(ctx: RunContext) -> None:
    path = write_input(ctx, "a.png", np.zeros((2, 2, 3), dtype=np.uint8))
    first = LoadImage.IS_CHANGED("a.png")
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    write_input(ctx, "a.png", np.ones((2, 2, 3), dtype=np.uint8))
    assert LoadImage.IS_CHANGED("a.png") != first
    assert LoadImageMask.IS_CHANGED("a.png", "red") == LoadImage.IS_CHANGED("a.png")


def test_supplied_inputs_are_named_by_their_input_value_in_errors(ctx: RunContext) -> None:
    junk = ctx.input_dir / "download.bin"
    junk.write_bytes(b"<html>not an image</html>")
    ctx.inputs["https://example.com/cat.png"] = junk
    with pytest.raises(NodeInputError) as err:
        LoadImage().load_image("https://example.com/cat.png")
    assert str(err.value) == "cannot decode image 'https://example.com/cat.png': not a recognised image format"


def test_missing_input_is_a_clear_error(ctx: RunContext) -> None:
    with pytest.raises(NodeInputError) as err:
        LoadImage().load_image("nope.png")
    assert str(err.value) == "input file 'nope.png' was not supplied and is not in the input folder"


def test_truncated_file_is_a_clear_error(ctx: RunContext) -> None:
    path = write_input(ctx, "cut.png", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(NodeInputError) as err:
        LoadImage().load_image("cut.png")
    assert str(err.value) == "cannot decode image 'cut.png': image file is truncated"


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb in shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# 20000² trips Pillow's warning (over the limit), 30000² its error (over twice the limit).
@pytest.mark.parametrize("side", [20000, 30000])
def test_decompression_bomb_is_refused(ctx: RunContext, side: int) -> None:
    (ctx.input_dir / "bomb.png").write_bytes(png_header_only(side, side))
    with pytest.raises(NodeInputError) as err:
        LoadImage().load_image("bomb.png")
    assert str(err.value) == "image 'bomb.png' is too large to decode (the limit is 268,435,456 pixels)"


def test_pixel_limit_counts_all_frames(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [Image.new("RGB", (4, 4)) for _ in range(3)]
    frames[0].save(ctx.input_dir / "pages.tiff", save_all=True, append_images=frames[1:])
    monkeypatch.setattr(imagefile, "MAX_IMAGE_PIXELS", 40)  # two 4x4 frames fit, three do not
    with pytest.raises(NodeInputError) as err:
        LoadImage().load_image("pages.tiff")
    assert str(err.value) == "image 'pages.tiff' is too large to decode (the limit is 40 pixels)"


# -- saving ------------------------------------------------------------------------------------------


def test_save_writes_numbered_pngs_with_comfyui_metadata(ctx: RunContext) -> None:
    images = torch.rand(2, 3, 5, 3)
    result = SaveImage().save_images(images, "ComfyUI", prompt=PROMPT, extra_pnginfo=EXTRA)
    assert result == {
        "ui": {
            "images": [
                {"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"},
                {"filename": "ComfyUI_00002_.png", "subfolder": "", "type": "output"},
            ]
        }
    }
    for index, name in enumerate(["ComfyUI_00001_.png", "ComfyUI_00002_.png"]):
        with open_png(ctx.output_dir / name) as png:
            assert png.text == {"prompt": json.dumps(PROMPT), "workflow": json.dumps(EXTRA["workflow"])}
            assert png.mode == "RGB" and png.size == (5, 3)
            assert np.array_equal(np.asarray(png), to_uint8(images[index]))
    chunks = {"prompt": json.dumps(PROMPT), "workflow": json.dumps(EXTRA["workflow"])}
    assert (ctx.output_dir / "ComfyUI_00002_.png").read_bytes() == encode_png(to_uint8(images[1]), chunks, 4)


def test_save_truncates_to_8_bits_as_comfyui(ctx: RunContext) -> None:
    SaveImage().save_images(torch.tensor([[[[0.5, 1.5, -0.2]]]]), "t")
    with open_png(ctx.output_dir / "t_00001_.png") as png:
        assert png.getpixel((0, 0)) == (127, 255, 0)
        assert png.text == {}


def test_counter_continues_after_the_highest_matching_file(ctx: RunContext) -> None:
    ctx.output_dir.mkdir()
    for name in ["ComfyUI_00007_.png", "ComfyUI_temp_abcde_00009_.png", "Other_00020_.png", "ComfyUI_x.png"]:
        (ctx.output_dir / name).write_bytes(b"")
    result = SaveImage().save_images(torch.rand(1, 2, 2, 3), "ComfyUI")
    assert result["ui"]["images"][0]["filename"] == "ComfyUI_00008_.png"
    assert SaveImage().save_images(torch.rand(1, 2, 2, 3))["ui"]["images"][0]["filename"] == "ComfyUI_00009_.png"


def test_prefix_may_name_subfolders_and_size_variables(ctx: RunContext) -> None:
    result = SaveImage().save_images(torch.rand(1, 3, 5, 3), "a/b/img_%width%x%height%")
    assert result["ui"]["images"] == [{"filename": "img_5x3_00001_.png", "subfolder": "a/b", "type": "output"}]
    assert (ctx.output_dir / "a" / "b" / "img_5x3_00001_.png").is_file()


@pytest.mark.parametrize("prefix", ["../x", "/abs/x", "a/../../b", "a/../b", "C:\\evil\\x", "..\\x"])
def test_prefix_cannot_leave_the_output_folder(ctx: RunContext, prefix: str) -> None:
    before = files_under(ctx.output_dir.parent)
    with pytest.raises(NodeInputError) as err:
        SaveImage().save_images(torch.rand(1, 2, 2, 3), prefix)
    assert str(err.value) == (
        f"filename_prefix {prefix!r} must stay inside the output folder (no absolute path, drive letter or '..')"
    )
    assert files_under(ctx.output_dir.parent) == before


def test_prefix_cannot_follow_a_symlink_out(ctx: RunContext, tmp_path: Path) -> None:
    ctx.output_dir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (ctx.output_dir / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NodeInputError) as err:
        SaveImage().save_images(torch.rand(1, 2, 2, 3), "link/x")
    assert str(err.value) == "filename_prefix 'link/x' leads outside the output folder"
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_preview_writes_to_temp_with_a_random_prefix(ctx: RunContext) -> None:
    images = torch.rand(2, 2, 2, 4)
    entries = PreviewImage().save_images(images, prompt=PROMPT)["ui"]["images"]
    assert [e["type"] for e in entries] == ["temp", "temp"] and entries[0]["subfolder"] == ""
    first, second = (e["filename"] for e in entries)
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", first) and second == first.replace("00001", "00002")
    assert not ctx.output_dir.exists()
    expected = encode_png(to_uint8(images[0]), {"prompt": json.dumps(PROMPT)}, 1)
    assert (ctx.temp_dir / first).read_bytes() == expected


def test_unsupported_channel_count_is_a_clear_error(ctx: RunContext) -> None:
    with pytest.raises(NodeInputError) as err:
        SaveImage().save_images(torch.rand(1, 2, 2, 2), "two")
    assert str(err.value) == "cannot save an image of shape (2, 2, 2) as PNG"
