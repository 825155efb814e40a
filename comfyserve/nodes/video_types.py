"""ComfyUI's VIDEO values: a video read from a file, or one made of components (frames, frame rate, audio).

Saving follows ComfyUI's rules. Only ``mp4`` / ``h264`` (or ``auto``) can be asked for. A file whose container
and codec already match what is asked (``auto`` matches anything) is remuxed, its packets copied unchanged and
its metadata kept; anything else is decoded and encoded anew (:func:`~comfyserve.nodes.videofile.encode_mp4`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from comfyserve.engine.errors import NodeInputError
from comfyserve.nodes.videofile import VideoComponents, decode, encode_mp4, probe, remux_mp4

AUTO = "auto"
CONTAINERS = (AUTO, "mp4")  # ComfyUI's VideoContainer values, in its order
CODECS = (AUTO, "h264")  # ComfyUI's VideoCodec values
EXTENSION = "mp4"  # the file extension of every container above


class Video(abc.ABC):
    """A VIDEO value: its components, its size, and how it is written to a file."""

    @abc.abstractmethod
    def get_components(self) -> VideoComponents: ...

    @abc.abstractmethod
    def save_to(
        self, target: IO[bytes], format: str = AUTO, codec: str = AUTO, metadata: Mapping[str, Any] | None = None
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
        self, target: IO[bytes], format: str = AUTO, codec: str = AUTO, metadata: Mapping[str, Any] | None = None
    ) -> None:
        _check_choice("format", format, CONTAINERS)
        _check_choice("codec", codec, CODECS)
        encode_mp4(target, self._components, metadata)


class VideoFromFile(Video):
    def __init__(self, path: Path) -> None:
        self.path = path

    def get_components(self) -> VideoComponents:
        return decode(self.path)

    def get_dimensions(self) -> tuple[int, int]:
        info = probe(self.path)
        return info.width, info.height

    def save_to(
        self, target: IO[bytes], format: str = AUTO, codec: str = AUTO, metadata: Mapping[str, Any] | None = None
    ) -> None:
        info = probe(self.path)
        same_container = format == AUTO or format in info.container.split(",")
        same_codec = codec == AUTO or info.codec is None or codec == info.codec
        if same_container and same_codec:
            remux_mp4(self.path, target, metadata)
        else:
            VideoFromComponents(self.get_components()).save_to(target, format, codec, metadata)
