"""Differential parity of the animated and video outputs: the same workflows through the built-in engine and
through ComfyUI write files that decode to the same frames (lossless: max abs diff <= 1; lossy: PSNR bound),
with the same frame durations, frame rate, codec, pixel format, container metadata and ``ui`` entries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfyserve.engine.inventory import ModelInventory
from comfyserve.worker.backend import BackendJob, BackendResult
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.unit.media_fixtures import moving_frames, psnr, read_animation, read_video, sine, write_video

LOSSY_PSNR_DB = 40.0  # lossy WEBP (Pillow and libwebp alike on both sides)
H264_PSNR_DB = 30.0  # one frame encoded by both; x264 on 32x24 gradients


@pytest.fixture(scope="module")
def builtin(model_root: Path) -> Iterator[BuiltinBackend]:
    backend = BuiltinBackend(models=ModelInventory.scan(model_root))
    backend.start()
    yield backend
    backend.close()


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def frames_graph() -> dict[str, Any]:
    """Three 32x24 frames: a solid colour, a feathered mask as an image, its inverse (node "7")."""
    return {
        "1": _node("EmptyImage", width=32, height=24, batch_size=1, color=0xFF2000),
        "2": _node("SolidMask", value=0.75, width=32, height=24),
        "3": _node("FeatherMask", mask=["2", 0], left=9, top=5, right=7, bottom=11),
        "4": _node("MaskToImage", mask=["3", 0]),
        "5": _node("ImageInvert", image=["4", 0]),
        "6": _node("ImageBatch", image1=["1", 0], image2=["4", 0]),
        "7": _node("ImageBatch", image1=["6", 0], image2=["5", 0]),
    }


def run(backend: Any, prompt: dict[str, Any], work_dir: Path, inputs: dict[str, Path] | None = None) -> BackendResult:
    job = BackendJob(
        job_id=f"video-{time.monotonic_ns()}",
        prompt=prompt,
        work_dir=work_dir,
        inputs=inputs or {},
        extra_pnginfo={"workflow": {"nodes": [], "note": "parity"}},
    )
    result = backend.run(job)
    assert result.status == "success", result.error
    return result


def by_name(result: BackendResult) -> dict[str, Path]:
    return {output.relative_name: output.path for output in result.outputs}


def both(
    backend: ComfyUIBackend,
    builtin: BuiltinBackend,
    prompt: dict[str, Any],
    tmp_path: Path,
    inputs: dict[str, Path] | None = None,
) -> tuple[BackendResult, BackendResult]:
    theirs = run(backend, prompt, tmp_path / "comfyui", inputs)
    ours = run(builtin, prompt, tmp_path / "builtin", inputs)
    assert sorted(by_name(theirs)) == sorted(by_name(ours))
    assert json_ui(ours) == json_ui(theirs)  # the non-file ui: "animated" flags, Preview Any's text
    return theirs, ours


def json_ui(result: BackendResult) -> dict[str, Any]:
    """The non-file ui as JSON carries it (tuples become lists)."""
    ui: dict[str, Any] = json.loads(json.dumps(result.ui))
    return ui


def test_animated_webp_and_png_decode_to_the_same_frames(
    backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path
) -> None:
    prompt = {
        **frames_graph(),
        "10": _node(
            "SaveAnimatedWEBP",
            images=["7", 0],
            filename_prefix="anim/lossless",
            fps=6.0,
            lossless=True,
            quality=80,
            method="default",
        ),
        "11": _node(
            "SaveAnimatedWEBP",
            images=["7", 0],
            filename_prefix="lossy",
            fps=7.5,
            lossless=False,
            quality=60,
            method="slowest",
        ),
        "12": _node("SaveAnimatedPNG", images=["7", 0], filename_prefix="apng", fps=12.0, compress_level=6),
        "13": _node(
            "SaveAnimatedWEBP",
            images=["1", 0],
            filename_prefix="single",
            fps=6.0,
            lossless=True,
            quality=80,
            method="fastest",
        ),
    }
    theirs, ours = both(backend, builtin, prompt, tmp_path)
    assert json_ui(ours)["13"] == {"animated": [False]} and json_ui(ours)["10"] == {"animated": [True]}
    for name, path in by_name(theirs).items():
        a, b = read_animation(path), read_animation(by_name(ours)[name])
        assert (a.format, a.durations, len(a.frames)) == (b.format, b.durations, len(b.frames)), name
        assert a.info.get("exif") == b.info.get("exif"), name  # the prompt and workflow, as EXIF text
        if name.startswith("lossy"):
            assert min(psnr(x, y) for x, y in zip(a.frames, b.frames, strict=True)) >= LOSSY_PSNR_DB
        else:
            assert max(int(np.max(np.abs(x.astype(int) - y))) for x, y in zip(a.frames, b.frames, strict=True)) <= 1
    apng_t, apng_o = (by_name(r)["apng_00001_.png"].read_bytes() for r in (theirs, ours))
    assert apng_t.count(b"comf") == apng_o.count(b"comf") == 2  # prompt and workflow chunks after the frames
    assert read_animation(by_name(ours)["apng_00001_.png"]).durations == [83, 83, 83]


def _without_fingerprints(metadata: dict[str, str]) -> dict[str, str]:
    """The container metadata less what differs by design: ComfyUI writes each node's change fingerprint into
    the prompt it embeds (``"is_changed": [file mtime]`` on Load Video), which the built-in engine does not."""
    if "prompt" not in metadata:
        return metadata
    prompt = json.loads(metadata["prompt"])
    for node in prompt.values():
        node.pop("is_changed", None)
    return {**metadata, "prompt": json.dumps(prompt)}


def _compare_videos(theirs: Path, ours: Path, *, remuxed: bool) -> None:
    """Same container, codec, pixel format, frame rate, frame count and size, metadata and audio; frames equal
    when packets were copied, within :data:`H264_PSNR_DB` each when encoded (x264's threads make its output
    vary from run to run, in ComfyUI's own process too)."""
    a, b = read_video(theirs), read_video(ours)
    assert (a.container, a.codec, a.pix_fmt, a.rate, a.frames.shape) == (
        b.container,
        b.codec,
        b.pix_fmt,
        b.rate,
        b.frames.shape,
    )
    if remuxed:
        assert int(np.max(np.abs(a.frames.astype(int) - b.frames))) == 0
    else:
        assert min(psnr(x, y) for x, y in zip(a.frames, b.frames, strict=True)) >= H264_PSNR_DB
    assert (a.audio_codec, a.sample_rate) == (b.audio_codec, b.sample_rate)
    assert (a.audio is None) == (b.audio is None)
    if a.audio is not None and b.audio is not None:
        assert a.audio.shape == b.audio.shape and float(np.max(np.abs(a.audio - b.audio))) <= 1e-4
    assert _without_fingerprints(a.metadata) == _without_fingerprints(b.metadata)


def test_create_and_save_video_write_the_same_mp4(
    backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path
) -> None:
    prompt = {
        **frames_graph(),
        "10": _node("CreateVideo", images=["7", 0], fps=24.0),
        "11": _node("SaveVideo", video=["10", 0], filename_prefix="video/made", format="auto", codec="auto"),
        "12": _node("GetVideoComponents", video=["10", 0]),
        "13": _node("PreviewAny", source=["12", 2]),
    }
    theirs, ours = both(backend, builtin, prompt, tmp_path)
    assert json_ui(ours)["11"] == {"animated": [True]} and json_ui(ours)["13"] == {"text": ["24.0"]}
    saved = "video/made_00001_.mp4"
    _compare_videos(by_name(theirs)[saved], by_name(ours)[saved], remuxed=False)
    metadata = read_video(by_name(ours)[saved]).metadata
    assert json.loads(metadata["workflow"]) == {"nodes": [], "note": "parity"} and "prompt" in metadata


@pytest.mark.parametrize(("suffix", "codec", "audio"), [(".mp4", "h264", True), (".webm", "libvpx-vp9", False)])
def test_loaded_videos_give_the_same_components_and_saved_files(
    backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path, suffix: str, codec: str, audio: bool
) -> None:
    """An MP4 input is remuxed (packets copied, its metadata kept); a WEBM one decoded and encoded anew as MP4;
    its frames, frame rate and audio come out of Get Video Components the same, and go back in through Create
    Video."""
    source = write_video(
        tmp_path / f"clip{suffix}",
        moving_frames(10, 24, 32),
        12,
        codec=codec,
        audio=sine(44100, 1.0, 2) if audio else None,
        metadata={"title": "clip"},
    )
    prompt = {
        "1": _node("LoadVideo", file=source.name),
        "2": _node("SaveVideo", video=["1", 0], filename_prefix="loaded", format="mp4", codec="h264"),
        "3": _node("GetVideoComponents", video=["1", 0]),
        "4": _node("SaveAnimatedPNG", images=["3", 0], filename_prefix="frames", fps=12.0, compress_level=1),
        "5": _node("PreviewAny", source=["3", 2]),
        "6": _node("CreateVideo", images=["3", 0], fps=["3", 2], **({"audio": ["3", 1]} if audio else {})),
        "7": _node("SaveVideo", video=["6", 0], filename_prefix="again", format="auto", codec="auto"),
    }
    theirs, ours = both(backend, builtin, prompt, tmp_path, {source.name: source})
    assert json_ui(ours)["5"] == {"text": ["12.0"]}
    _compare_videos(by_name(theirs)["loaded_00001_.mp4"], by_name(ours)["loaded_00001_.mp4"], remuxed=suffix == ".mp4")
    _compare_videos(by_name(theirs)["again_00001_.mp4"], by_name(ours)["again_00001_.mp4"], remuxed=False)
    a, b = (read_animation(by_name(r)["frames_00001_.png"]) for r in (theirs, ours))
    assert len(a.frames) == len(b.frames) == 10
    assert max(int(np.max(np.abs(x.astype(int) - y))) for x, y in zip(a.frames, b.frames, strict=True)) <= 1
    if suffix == ".mp4":
        assert read_video(by_name(ours)["loaded_00001_.mp4"]).metadata["title"] == "clip"
