"""The animated and video nodes against real files: SaveAnimatedWEBP/PNG (frames, durations, metadata, ui),
CreateVideo/SaveVideo/LoadVideo/GetVideoComponents (encode/decode round trips: frame count, fps, size, codec,
audio, metadata; remux or re-encode; the pixel caps), and their catalog entries against ComfyUI 0.3.64's
(``tests/data/comfyui_object_info/video.json``)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from comfyserve.engine import context
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.context import RunContext
from comfyserve.engine.errors import NodeInputError
from comfyserve.nodes import builtin_registry, videofile
from comfyserve.nodes.animated import SaveAnimatedPNG, SaveAnimatedWEBP
from comfyserve.nodes.imagefile import to_uint8
from comfyserve.nodes.video import CreateVideo, GetVideoComponents, LoadVideo, SaveVideo
from comfyserve.nodes.video_types import VideoFromComponents, VideoFromFile
from comfyserve.nodes.videofile import VideoComponents
from comfyserve.ui_workflow import to_api_prompt
from tests.unit.media_fixtures import moving_frames, psnr, read_animation, read_video, sine, write_video

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "comfyui_object_info" / "video.json").read_text())
PROMPT = {"9": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/ComfyUI"}}}
EXTRA = {"workflow": {"nodes": [{"id": 9}], "version": 0.4}}
H264_PSNR_DB = 30.0  # an encode of smooth 8-bit frames against the frames themselves


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[RunContext]:
    run = RunContext(output_dir=tmp_path / "output", temp_dir=tmp_path / "temp", input_dir=tmp_path / "input")
    run.input_dir.mkdir()
    with context.use(run):
        yield run


def images(count: int = 4, height: int = 24, width: int = 32, channels: int = 3) -> torch.Tensor:
    frames = torch.from_numpy(moving_frames(count, height, width)).float() / 255.0
    if channels == 4:
        alpha = torch.linspace(0.2, 1.0, width).expand(count, height, width)[..., None]
        frames = torch.cat([frames, alpha], dim=-1)
    return frames


def saved_path(run: RunContext, entry: dict[str, str]) -> Path:
    return run.output_dir / entry["subfolder"] / entry["filename"]


# -- catalog -------------------------------------------------------------------------------------------


def _entry(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("python_module", "comfyserve")}


def test_every_class_has_comfyui_s_catalog_entry() -> None:
    ours = Catalog.from_registry(builtin_registry()).to_object_info()
    for name, reference in REFERENCE.items():
        assert _entry(ours[name]) == _entry(reference), name


def test_v3_entries_survive_the_catalog_round_trip() -> None:
    """The edge reads the packaged catalog: V3 hidden lists, flags and output tooltips stay as ComfyUI's."""
    exported = Catalog.from_registry(builtin_registry()).to_object_info()
    again = Catalog.from_object_info(exported)
    assert _entry(again.specs["SaveVideo"].to_object_info()) == _entry(REFERENCE["SaveVideo"])
    assert _entry(again.specs["GetVideoComponents"].to_object_info()) == _entry(REFERENCE["GetVideoComponents"])
    assert "api_node" not in exported["SaveAnimatedWEBP"]  # a classic node keeps the classic shape


def test_the_packaged_catalog_carries_the_classes() -> None:
    packaged = Catalog.packaged().to_object_info()
    for name, reference in REFERENCE.items():
        assert _entry(packaged[name]) == _entry(reference), name


def test_an_editor_workflow_of_video_nodes_converts_as_the_editor_sends_it() -> None:
    """Widget values as ComfyUI's editor saves them (a template's): Load Video's upload button serialises
    ``"image"`` after the file name, which the API prompt leaves out."""
    chain = [
        ("LoadVideo", None, ["clip.mp4", "image"]),
        ("GetVideoComponents", "video", []),
        ("CreateVideo", "images", [24]),
        ("SaveVideo", "video", ["video/ComfyUI", "auto", "auto"]),
    ]
    nodes = []
    for node_id, (type_, input_name, values) in enumerate(chain, start=1):
        node: dict[str, Any] = {"id": node_id, "type": type_, "mode": 0, "widgets_values": values}
        node["outputs"] = [{"name": "out", "type": "*", "links": [node_id] if node_id < len(chain) else []}]
        if input_name is not None:
            node["inputs"] = [{"name": input_name, "type": "*", "link": node_id - 1}]
        nodes.append(node)
    links = [[i, i, 0, i + 1, 0, "*"] for i in range(1, len(chain))]
    prompt = to_api_prompt({"nodes": nodes, "links": links, "version": 0.4}, Catalog.packaged().specs)
    assert {key: (node["class_type"], node["inputs"]) for key, node in prompt.items()} == {
        "1": ("LoadVideo", {"file": "clip.mp4"}),
        "2": ("GetVideoComponents", {"video": ["1", 0]}),
        "3": ("CreateVideo", {"fps": 24, "images": ["2", 0]}),
        "4": ("SaveVideo", {"filename_prefix": "video/ComfyUI", "format": "auto", "codec": "auto", "video": ["3", 0]}),
    }


# -- SaveAnimatedWEBP / SaveAnimatedPNG ------------------------------------------------------------------


def test_animated_webp_holds_every_frame_lossless_with_the_frame_duration(ctx: RunContext) -> None:
    batch = images(4)
    ui = SaveAnimatedWEBP().save_images(batch, 7.0, "anim/clip", True, 80, "default", PROMPT, EXTRA)["ui"]
    assert ui == {
        "images": [{"filename": "clip_00001_.webp", "subfolder": "anim", "type": "output"}],
        "animated": (True,),
    }
    animation = read_animation(saved_path(ctx, ui["images"][0]))
    assert animation.format == "WEBP" and animation.durations == [142] * 4  # int(1000 / 7)
    assert len(animation.frames) == 4 and animation.frames[0].shape == (24, 32, 3)
    for frame, image in zip(animation.frames, batch, strict=True):
        assert np.array_equal(frame, to_uint8(image))


def test_animated_webp_carries_the_prompt_and_workflow_in_its_exif(ctx: RunContext) -> None:
    ui = SaveAnimatedWEBP().save_images(images(2), 6.0, "meta", True, 80, "fastest", PROMPT, EXTRA)["ui"]
    with Image.open(saved_path(ctx, ui["images"][0])) as webp:
        exif = webp.getexif()
    assert exif[0x0110] == "prompt:" + json.dumps(PROMPT)
    assert exif[0x010F] == "workflow:" + json.dumps(EXTRA["workflow"])


def test_a_single_image_webp_is_not_animated_and_lossy_webp_stays_close(ctx: RunContext) -> None:
    node = SaveAnimatedWEBP()
    single = node.save_images(images(1), 6.0, "one", True, 80, "default")["ui"]
    assert single["animated"] == (False,)
    lossy = node.save_images(images(3), 6.0, "lossy", False, 90, "slowest")["ui"]
    frames = read_animation(saved_path(ctx, lossy["images"][0])).frames
    assert len(frames) == 3 and min(psnr(f, to_uint8(i)) for f, i in zip(frames, images(3), strict=True)) > 25
    again = node.save_images(images(1), 6.0, "one", True, 80, "default")["ui"]
    assert again["images"][0]["filename"] == "one_00002_.webp"  # the counter continues


def test_animated_png_holds_rgba_frames_durations_and_comf_chunks(ctx: RunContext) -> None:
    batch = images(3, channels=4)
    ui = SaveAnimatedPNG().save_images(batch, 12.0, 9, "apng", PROMPT, EXTRA)["ui"]
    assert ui == {"images": [{"filename": "apng_00001_.png", "subfolder": "", "type": "output"}], "animated": (True,)}
    path = saved_path(ctx, ui["images"][0])
    animation = read_animation(path)
    assert animation.format == "PNG" and animation.durations == [83, 83, 83]
    for frame, image in zip(animation.frames, batch, strict=True):
        assert np.array_equal(frame, to_uint8(image))
    data = path.read_bytes()
    assert b"comf" + b"prompt\0" + json.dumps(PROMPT).encode() in data
    assert data.index(b"comfworkflow\0") > data.rindex(b"IDAT")  # after the image data, as ComfyUI adds them


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (torch.zeros(0, 8, 8, 3), "non-empty IMAGE batch"),
        (torch.zeros(2, 8, 8, 1), "3 or 4 channels"),
        (torch.zeros(8, 8, 3), "non-empty IMAGE batch"),
    ],
)
def test_animated_savers_refuse_what_is_not_an_image_batch(ctx: RunContext, batch: torch.Tensor, message: str) -> None:
    with pytest.raises(NodeInputError, match=message):
        SaveAnimatedPNG().save_images(batch, 6.0, 4)


def test_apng_metadata_keys_must_be_latin_1(ctx: RunContext) -> None:
    with pytest.raises(NodeInputError, match="latin-1"):
        SaveAnimatedPNG().save_images(images(2), 6.0, 4, "x", None, {"工作流": {}})


# -- CreateVideo / SaveVideo ------------------------------------------------------------------------------


def test_create_and_save_video_round_trip_frames_rate_size_and_metadata(ctx: RunContext) -> None:
    batch = images(12)
    (video,) = CreateVideo().execute(batch, 24.0)
    ui = SaveVideo().execute(video, "video/ComfyUI", "auto", "auto", PROMPT, EXTRA)["ui"]
    assert ui == {
        "images": [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}],
        "animated": (True,),
    }
    decoded = read_video(saved_path(ctx, ui["images"][0]))
    assert (decoded.container, decoded.codec, decoded.pix_fmt) == ("mov,mp4,m4a,3gp,3g2,mj2", "h264", "yuv420p")
    assert decoded.rate == 24 and decoded.frames.shape == (12, 24, 32, 3) and decoded.audio is None
    assert min(psnr(f, to_uint8(i)) for f, i in zip(decoded.frames, batch, strict=True)) >= H264_PSNR_DB
    assert json.loads(decoded.metadata["prompt"]) == PROMPT
    assert json.loads(decoded.metadata["workflow"]) == EXTRA["workflow"]


def test_a_fractional_rate_is_rounded_to_thousandths_as_comfyui_writes_it(ctx: RunContext) -> None:
    (video,) = CreateVideo().execute(images(6), 29.97)
    assert video.get_components().frame_rate == Fraction(29.97)  # exact until encoded
    ui = SaveVideo().execute(video, "rate", "mp4", "h264")["ui"]
    decoded = read_video(saved_path(ctx, ui["images"][0]))
    assert decoded.rate == Fraction(2997, 100) and "prompt" not in decoded.metadata
    assert GetVideoComponents().execute(VideoFromFile(saved_path(ctx, ui["images"][0])))[2] == 29.97


def test_audio_is_encoded_as_aac_cut_to_the_video_length(ctx: RunContext) -> None:
    sample_rate, frames, fps = 16000, 6, 12.0
    audio = {"waveform": torch.from_numpy(sine(sample_rate, 2.0, 2))[None], "sample_rate": sample_rate}
    (video,) = CreateVideo().execute(images(frames), fps, audio)
    ui = SaveVideo().execute(video, "sound", "auto", "auto")["ui"]
    decoded = read_video(saved_path(ctx, ui["images"][0]))
    assert (decoded.audio_codec, decoded.sample_rate) == ("aac", sample_rate)
    assert decoded.audio is not None and decoded.audio.shape[0] == 2
    expected = math.ceil(sample_rate / fps * frames)  # 8000 of the 32000 samples given
    assert expected <= decoded.audio.shape[1] < expected + 2048  # AAC pads to whole 1024-sample frames


@pytest.mark.parametrize(
    ("video_images", "message"),
    [
        (torch.zeros(2, 9, 16, 3), "even width and height"),
        (torch.zeros(2, 8, 8, 4), "RGB images"),
        (torch.zeros(0, 8, 8, 3), "RGB images"),
    ],
)
def test_save_video_refuses_frames_h264_cannot_take(ctx: RunContext, video_images: torch.Tensor, message: str) -> None:
    (video,) = CreateVideo().execute(video_images, 24.0)
    with pytest.raises(NodeInputError, match=message):
        SaveVideo().execute(video, "bad", "auto", "auto")


def test_save_video_refuses_audio_that_is_not_an_audio(ctx: RunContext) -> None:
    for audio in ({"waveform": torch.zeros(2, 100)}, {"waveform": torch.zeros(1, 2, 100), "sample_rate": "fast"}):
        (video,) = CreateVideo().execute(images(2), 24.0, audio)
        with pytest.raises(NodeInputError, match="audio must be an AUDIO"):
            SaveVideo().execute(video, "bad", "auto", "auto")
    five_channels = {"waveform": torch.zeros(1, 5, 100), "sample_rate": 8000}
    with pytest.raises(NodeInputError, match="mono or stereo, got 5 channels"):
        SaveVideo().execute(CreateVideo().execute(images(2), 24.0, five_channels)[0], "bad", "auto", "auto")


def test_a_video_in_memory_is_read_and_saved_to_a_path(tmp_path: Path) -> None:
    """``comfy_api``'s ``VideoFromFile(BytesIO)`` and ``save_to(path)``, which node packs use."""
    data = write_video(tmp_path / "clip.mp4", moving_frames(3, 16, 16), 5).read_bytes()
    video = VideoFromFile(io.BytesIO(data))
    assert video.get_dimensions() == (16, 16) and video.get_components().images.shape == (3, 16, 16, 3)
    video.save_to(str(tmp_path / "copy.mp4"))
    assert np.array_equal(read_video(tmp_path / "copy.mp4").frames, read_video(tmp_path / "clip.mp4").frames)


def test_save_video_refuses_what_is_not_a_video_and_unknown_formats(ctx: RunContext) -> None:
    with pytest.raises(NodeInputError, match="must be a VIDEO"):
        SaveVideo().execute(images(2), "bad", "auto", "auto")  # type: ignore[arg-type]
    with pytest.raises(NodeInputError, match="format 'webm' is not supported"):
        VideoFromComponents(VideoComponents(images(2), Fraction(24))).save_to(io.BytesIO(), format="webm")


# -- LoadVideo / GetVideoComponents -----------------------------------------------------------------------


def test_load_video_gives_frames_rate_audio_and_metadata(ctx: RunContext) -> None:
    source = moving_frames(8, 24, 32)
    path = write_video(ctx.input_dir / "clip.mp4", source, 12, audio=sine(22050, 1.0, 1), sample_rate=22050)
    (video,) = LoadVideo().execute("clip.mp4")
    assert video.get_dimensions() == (32, 24)
    frames, audio, fps = GetVideoComponents().execute(video)
    assert frames.shape == (8, 24, 32, 3) and frames.dtype == torch.float32 and fps == 12.0
    decoded = read_video(path)
    assert np.array_equal(to_uint8(frames[3] + 1e-6), decoded.frames[3])  # PyAV's own RGB of the same frame
    # AAC's default layout is stereo: the mono track was written with two channels
    assert audio is not None and audio["sample_rate"] == 22050 and audio["waveform"].shape[:2] == (1, 2)
    assert LoadVideo.IS_CHANGED("clip.mp4") == LoadVideo.IS_CHANGED("clip.mp4")


def test_a_video_without_audio_gives_none_and_a_file_in_the_inputs_map(ctx: RunContext, tmp_path: Path) -> None:
    path = write_video(tmp_path / "silent.webm", moving_frames(3, 16, 16), 10, codec="libvpx-vp9")
    ctx.inputs["upload.webm"] = path
    frames, audio, fps = GetVideoComponents().execute(LoadVideo().execute("upload.webm")[0])
    assert frames.shape == (3, 16, 16, 3) and audio is None and fps == 10.0


def test_saving_a_loaded_mp4_copies_its_packets_and_keeps_its_metadata(ctx: RunContext) -> None:
    path = write_video(ctx.input_dir / "in.mp4", moving_frames(5, 24, 32), 8, metadata={"title": "kept"})
    (video,) = LoadVideo().execute("in.mp4")
    ui = SaveVideo().execute(video, "copy", "auto", "h264", PROMPT, None)["ui"]
    source, saved = read_video(path), read_video(saved_path(ctx, ui["images"][0]))
    assert np.array_equal(source.frames, saved.frames) and saved.rate == 8
    assert saved.metadata["title"] == "kept" and json.loads(saved.metadata["prompt"]) == PROMPT


def test_saving_a_loaded_webm_encodes_it_anew_as_h264(ctx: RunContext) -> None:
    path = write_video(ctx.input_dir / "in.webm", moving_frames(5, 24, 32), 8, codec="libvpx-vp9")
    ui = SaveVideo().execute(LoadVideo().execute("in.webm")[0], "webm", "mp4", "auto")["ui"]
    source, saved = read_video(path), read_video(saved_path(ctx, ui["images"][0]))
    assert (saved.codec, saved.container.split(",")[1], saved.rate) == ("h264", "mp4", 8)
    assert min(psnr(a, b) for a, b in zip(source.frames, saved.frames, strict=True)) >= H264_PSNR_DB


def test_decoding_is_capped_per_frame_and_for_all_frames(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    write_video(ctx.input_dir / "big.mp4", moving_frames(6, 24, 32), 12)
    (video,) = LoadVideo().execute("big.mp4")
    ctx.max_pixels = 32 * 24 - 1
    with pytest.raises(NodeInputError, match="32x24 exceeds this service's limit"):
        video.get_components()
    ctx.max_pixels = None
    monkeypatch.setattr(videofile, "MAX_IMAGE_PIXELS", 32 * 24 * 5)
    with pytest.raises(NodeInputError, match=r"'big\.mp4' is too large to decode"):
        video.get_components()


def test_unreadable_and_missing_videos_are_named(ctx: RunContext) -> None:
    (ctx.input_dir / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64)
    with pytest.raises(NodeInputError, match=r"junk\.mp4"):
        LoadVideo().execute("junk.mp4")[0].get_components()
    with pytest.raises(NodeInputError, match="was not supplied"):
        LoadVideo().execute("absent.mp4")
    with pytest.raises(NodeInputError, match="outside the input folder"):
        LoadVideo().execute("../secret.mp4")
