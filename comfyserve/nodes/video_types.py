"""ComfyUI's VIDEO values: a video read from a file, or one made of components (frames, frame rate, audio).

A video is saved to a path or into a writable file object, following ComfyUI's rules. Only ``mp4`` / ``h264``
(or ``auto``) can be asked for. A file whose container and codec already match what is asked (``auto`` matches
anything) is remuxed, its packets copied unchanged and its metadata kept; anything else is decoded and encoded
anew (:func:`~comfyserve.nodes.videofile.encode_mp4`). These classes are also ComfyUI's ``comfy_api`` video
types for node packs (``comfyserve.compat.comfy_api``).
"""

from __future__ import annotations

import abc
import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from comfyserve.engine.errors import NodeInputError
from comfyserve.nodes.videofile import Source, VideoComponents, decode, encode_mp4, probe, remux_mp4

AUTO = "auto"
CONTAINERS = (AUTO, "mp4")  # ComfyUI's VideoContainer values, in its order
CODECS = (AUTO, "h264")  # ComfyUI's VideoCodec values
EXTENSION = "mp4"  # the file extension of every container above
Target = str | Path | IO[bytes]


@contextmanager
def _writable(target: Target) -> Iterator[IO[bytes]]:
    """``target`` itself when it is a file object, else the file at that path opened for writing."""
    if isinstance(target, str | Path):
        with open(target, "wb") as handle:
            yield handle
    else:
        yield target


class Video(abc.ABC):
    """A VIDEO value: its components, its size, and how it is written to a file."""

    @abc.abstractmethod
    def get_components(self) -> VideoComponents: ...

    @abc.abstractmethod
    def save_to(
        self, target: Target, format: str = AUTO, codec: str = AUTO, metadata: Mapping[str, Any] | None = None
    ) -> None: ...

    def get_dimensions(self) -> tuple[int, int]:
        """``(width, height)``."""
        images = self.get_components().images
        return int(images.shape[2]), int(images.shape[1])


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise NodeInputError(f"video {name} {value!r} is not supported: choose one of {', '.join(allowed)}")


class VideoFromComponents(Video):
    def __init__(self, components: VideoComponents) -> None:
        self._components = components

    def get_components(self) -> VideoComponents:
        """The frames, frame rate and audio (never metadata: a made video has none of its own)."""
        parts = self._components
        return VideoComponents(parts.images, parts.frame_rate, parts.audio)

    def save_to(
        self, target: Target, format: str = AUTO, codec: str = AUTO, metadata: Mapping[str, Any] | None = None
    ) -> None:
        _check_choice("format", format, CONTAINERS)
        _check_choice("codec", codec, CODECS)
        with _writable(target) as output:
            encode_mp4(output, self._components, metadata)


class VideoFromFile(Video):
    """A video file, or a video's bytes in a seekable buffer (``io.BytesIO``)."""

    def __init__(self, source: str | Path | io.BytesIO) -> None:
        self.source: Source = Path(source) if isinstance(source, str) else source

    def get_components(self) -> VideoComponents:
        return decode(self.source)

    def get_dimensions(self) -> tuple[int, int]:
        info = probe(self.source)
        return info.width, info.height

    def save_to(
        self, target: Target, format: str = AUTO, codec: str = AUTO, metadata: Mapping[str, Any] | None = None
    ) -> None:
        info = probe(self.source)
        same_container = format == AUTO or format in info.container.split(",")
        same_codec = codec == AUTO or info.codec is None or codec == info.codec
        if not (same_container and same_codec):
            VideoFromComponents(self.get_components()).save_to(target, format, codec, metadata)
            return
        with _writable(target) as output:
            remux_mp4(self.source, output, metadata)
