"""Test media written and read independently of the nodes under test: video files through PyAV directly,
animated images through Pillow's frame iterator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageSequence


def moving_frames(count: int, height: int, width: int) -> np.ndarray:
    """``count`` distinct uint8 RGB frames ``[N, H, W, 3]``: smooth waves that drift frame by frame."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    frames = [
        np.stack(
            [np.sin(2 * x + 0.3 * i), np.cos(3 * y - 0.2 * i), np.sin(2 * (x + y) + 0.5 * i)],
            axis=-1,
        )
        for i in range(count)
    ]
    return np.round(127.5 + 100 * np.asarray(frames)).astype(np.uint8)


def sine(sample_rate: int, seconds: float, channels: int, frequency: float = 440.0) -> np.ndarray:
    """A ``[channels, samples]`` float32 sine, each channel an octave above the last."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return np.stack([0.3 * np.sin(2 * math.pi * frequency * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: int,
    *,
    codec: str = "h264",
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
    metadata: dict[str, str] | None = None,
) -> Path:
    """``frames`` (uint8 RGB) as a video in the container ``path``'s suffix names, with optional AAC/Opus audio."""
    with av.open(str(path), mode="w") as output:
        for key, value in (metadata or {}).items():
            output.metadata[key] = value
        stream = output.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = None
        if audio is not None:
            sound = output.add_stream("aac" if path.suffix == ".mp4" else "libopus", rate=sample_rate)
        for image in frames:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        output.mux(stream.encode(None))
        if sound is not None and audio is not None:
            layout = "mono" if audio.shape[0] == 1 else "stereo"
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio.T.reshape(1, -1)), format="flt", layout=layout
            )
            frame.sample_rate, frame.pts = sample_rate, 0
            output.mux(sound.encode(frame))
            output.mux(sound.encode(None))
    return path


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # uint8 [N, H, W, 3]
    rate: Fraction
    container: str
    codec: str
    pix_fmt: str
    metadata: dict[str, str]
    audio: np.ndarray | None  # float [channels, samples]
    sample_rate: int | None
    audio_codec: str | None


def read_video(path: Path) -> DecodedVideo:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.asarray([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        rate = Fraction(stream.average_rate or 0)
        codec, pix_fmt = stream.codec_context.name, str(stream.codec_context.pix_fmt)
        audio, sample_rate, audio_codec = None, None, None
        if container.streams.audio:
            container.seek(0)
            sound = container.streams.audio[0]
            chunks = [f.to_ndarray() for p in container.demux(sound) for f in p.decode()]
            audio, sample_rate, audio_codec = (
                np.concatenate(chunks, axis=1),
                sound.sample_rate,
                sound.codec_context.name,
            )
        return DecodedVideo(
            frames,
            rate,
            container.format.name,
            codec,
            pix_fmt,
            dict(container.metadata),
            audio,
            sample_rate,
            audio_codec,
        )


@dataclass(frozen=True)
class Animation:
    frames: list[np.ndarray]  # uint8 [H, W, C] each, in the file's mode (RGB or RGBA)
    durations: list[int]
    format: str
    info: dict[str, Any]


def read_animation(path: Path) -> Animation:
    with Image.open(path) as image:
        mode = image.mode
        frames, durations = [], []
        for frame in ImageSequence.Iterator(image):
            frames.append(np.asarray(frame.convert(mode)))
            durations.append(int(frame.info.get("duration", 0)))
        return Animation(frames, durations, str(image.format), {str(k): v for k, v in image.info.items()})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
