"""Video files in and out with PyAV, encoded and decoded as ComfyUI 0.3.64 does (``comfy_api``'s video types).

Encoding: MP4, H.264 in ``yuv420p`` at the frame rate rounded to 1/1000 (a :class:`~fractions.Fraction`),
frames scaled by 255, clamped and truncated to 8 bits, then converted to YUV by libswscale; audio, when
given, as AAC at its own sample rate, cut to the video's length. Container metadata: every entry as JSON,
written as MP4 tags (``movflags=use_metadata_tags``). Decoding: every frame of the first video stream as
RGB in 0..1, the average frame rate, the last audio stream as float samples, the container's metadata.

Decoding is bounded: each frame within the run's pixel cap (``COMFYSERVE_MAX_PIXELS``) and all frames
together within :data:`~comfyserve.nodes.imagefile.MAX_IMAGE_PIXELS`, the budget of one decoded image file,
checked before each frame is kept. A file PyAV cannot read is a :class:`NodeInputError` naming it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from comfyserve.engine import context
from comfyserve.engine.errors import NodeInputError
from comfyserve.nodes.imagefile import MAX_IMAGE_PIXELS, to_uint8

MP4_OPTIONS = {"movflags": "use_metadata_tags"}  # MP4 keeps custom tags (prompt, workflow)
VIDEO_CODEC = "h264"
AUDIO_CODEC = "aac"
PIXEL_FORMAT = "yuv420p"

Audio = dict[str, Any]  # ComfyUI's AUDIO: {"waveform": [batch, channels, samples] float, "sample_rate": int}
Source = Path | IO[bytes]  # a file, or its bytes in a seekable buffer


@dataclass(frozen=True)
class VideoComponents:
    """A video's content: ``images`` ``[N, H, W, 3]`` in 0..1, its ``frame_rate``, optional ``audio`` and the
    container ``metadata`` it was read with."""

    images: torch.Tensor
    frame_rate: Fraction
    audio: Audio | None = None
    metadata: dict[str, str] | None = None


def encoded_rate(frame_rate: Fraction | float) -> Fraction:
    """The stream rate ComfyUI writes: ``frame_rate`` rounded to a multiple of 1/1000."""
    return Fraction(round(frame_rate * 1000), 1000)


def encode_mp4(target: IO[bytes], components: VideoComponents, metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``components`` to ``target`` as an H.264 MP4 (AAC audio when it has some), ``metadata`` as JSON
    tags."""
    import av

    images = components.images
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise NodeInputError(f"a video needs a batch of RGB images [frames, height, width, 3], got {shape}")
    height, width = int(images.shape[1]), int(images.shape[2])
    if width % 2 or height % 2:
        raise NodeInputError(f"H.264 in {PIXEL_FORMAT} needs an even width and height, got {width}x{height}")
    rate = encoded_rate(components.frame_rate)
    with av.open(target, mode="w", format="mp4", options=MP4_OPTIONS) as output:
        for key, value in (metadata or {}).items():
            output.metadata[key] = json.dumps(value)
        video = output.add_stream(VIDEO_CODEC, rate=rate)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, PIXEL_FORMAT
        audio = _checked_audio(components.audio)
        audio_stream = output.add_stream(AUDIO_CODEC, rate=int(audio["sample_rate"])) if audio else None
        for image in images:
            frame = av.VideoFrame.from_ndarray(to_uint8(image), format="rgb24").reformat(format=PIXEL_FORMAT)
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        if audio_stream is not None and audio:
            _encode_audio(output, audio_stream, audio, rate, int(images.shape[0]))


def _checked_audio(audio: Any) -> Audio | None:
    if audio is None:
        return None
    waveform = audio.get("waveform") if isinstance(audio, dict) else None
    if (
        not isinstance(waveform, torch.Tensor)
        or waveform.ndim != 3
        or not isinstance(audio.get("sample_rate"), Integral)
    ):
        raise NodeInputError("audio must be an AUDIO: a waveform [batch, channels, samples] and an int sample_rate")
    return dict(audio)


def _encode_audio(output: Any, stream: Any, audio: Audio, rate: Fraction, frames: int) -> None:
    import av

    sample_rate = int(audio["sample_rate"])
    waveform = audio["waveform"][:, :, : math.ceil(sample_rate / rate * frames)]
    channels = int(waveform.shape[1])
    if channels not in (1, 2):
        raise NodeInputError(f"video audio must be mono or stereo, got {channels} channels")
    interleaved = waveform.movedim(2, 1).reshape(1, -1).float().cpu().numpy()
    frame = av.AudioFrame.from_ndarray(interleaved, format="flt", layout="mono" if channels == 1 else "stereo")
    frame.sample_rate, frame.pts = sample_rate, 0
    output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def remux_mp4(source: Source, target: IO[bytes], metadata: Mapping[str, Any] | None) -> None:
    """Copy ``source``'s video, audio and subtitle packets unchanged into an MP4, its metadata kept except
    where ``metadata`` replaces it (strings as they are, other values as JSON)."""
    import av

    try:
        with _open(source) as container, av.open(target, mode="w", format="mp4", options=MP4_OPTIONS) as output:
            _copy(container, output, metadata)
    except av.FFmpegError as exc:  # a stream MP4 cannot carry (a Matroska subtitle track …), damaged packets
        raise NodeInputError(f"cannot copy video {name_of(source)!r} into an MP4: {exc}") from exc


def _copy(container: Any, output: Any, metadata: Mapping[str, Any] | None) -> None:
    for key, value in container.metadata.items():
        if metadata is None or key not in metadata:
            output.metadata[key] = value
    for key, value in (metadata or {}).items():
        output.metadata[key] = value if isinstance(value, str) else json.dumps(value)
    streams = {}
    for stream in container.streams:
        if stream.type in ("video", "audio", "subtitle"):
            streams[stream] = output.add_stream_from_template(template=stream, opaque=True)
    for packet in container.demux():
        if packet.stream in streams and packet.dts is not None:
            packet.stream = streams[packet.stream]
            output.mux(packet)


@dataclass(frozen=True)
class VideoInfo:
    """What a file's header says: its container format names (``"mov,mp4,m4a,3gp,3g2,mj2"``), the first
    video stream's codec and size."""

    container: str
    codec: str | None
    width: int
    height: int


def probe(source: Source) -> VideoInfo:
    with _open(source) as container:
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise NodeInputError(f"video {name_of(source)!r} has no video stream")
        return VideoInfo(container.format.name, stream.codec.name, int(stream.width), int(stream.height))


def decode(source: Source) -> VideoComponents:
    """Every frame of the first video stream (RGB, 0..1), the average frame rate (1 when unknown), the last
    audio stream's samples ``[1, channels, samples]`` and the container metadata."""
    name = name_of(source)
    with _open(source) as container:
        if not container.streams.video:
            raise NodeInputError(f"video {name!r} has no video stream")
        try:
            frames = _frames(container, name)
            stream = container.streams.video[0]
            frame_rate = Fraction(stream.average_rate) if stream.average_rate else Fraction(1)
            audio = _audio(container)
        except NodeInputError:
            raise
        except Exception as exc:  # PyAV raises FFmpeg's errors for damaged streams
            raise NodeInputError(f"cannot decode video {name!r}: {exc}") from exc
        return VideoComponents(torch.stack(frames), frame_rate, audio, dict(container.metadata))


def _frames(container: Any, name: str) -> list[torch.Tensor]:
    frames: list[torch.Tensor] = []
    decoded = 0
    for frame in container.decode(video=0):
        context.check_pixels(frame.width, frame.height)
        decoded += frame.width * frame.height
        if decoded > MAX_IMAGE_PIXELS:
            raise NodeInputError(
                f"video {name!r} is too large to decode (the limit is {MAX_IMAGE_PIXELS:,} pixels, all frames)"
            )
        ctx = context.active()
        if ctx is not None:
            ctx.check_cancelled()
        frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")) / 255.0)
    if not frames:
        raise NodeInputError(f"video {name!r} holds no frames")
    return frames


def _audio(container: Any) -> Audio | None:
    audio: Audio | None = None
    container.seek(0)
    for stream in container.streams.audio:
        chunks = [frame.to_ndarray() for packet in container.demux(stream) for frame in packet.decode()]
        if chunks:
            waveform = torch.from_numpy(np.concatenate(chunks, axis=1)).unsqueeze(0)
            audio = {"waveform": waveform, "sample_rate": int(stream.sample_rate) if stream.sample_rate else 1}
    return audio


def name_of(source: Source) -> str:
    """How errors name a source: the file's name, or ``<buffer>``."""
    return source.name if isinstance(source, Path) else "<buffer>"


def _open(source: Source) -> Any:
    import av

    if not isinstance(source, Path):
        source.seek(0)
    try:
        return av.open(str(source) if isinstance(source, Path) else source, mode="r")
    except Exception as exc:  # av.error.InvalidDataError and friends, FileNotFoundError
        raise NodeInputError(f"cannot read video {name_of(source)!r}: {exc}") from exc
