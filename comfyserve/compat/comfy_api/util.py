"""``comfy_api.util``: the video choices (``VideoContainer``, ``VideoCodec``) and ``VideoComponents``."""

from __future__ import annotations

from enum import StrEnum

from comfyserve.nodes.video_types import EXTENSION
from comfyserve.nodes.videofile import VideoComponents

__all__ = ["VideoCodec", "VideoComponents", "VideoContainer"]


class VideoCodec(StrEnum):
    AUTO = "auto"
    H264 = "h264"

    @classmethod
    def as_input(cls) -> list[str]:
        """The values, as a combo input's options."""
        return [member.value for member in cls]


class VideoContainer(StrEnum):
    AUTO = "auto"
    MP4 = "mp4"

    @classmethod
    def as_input(cls) -> list[str]:
        """The values, as a combo input's options."""
        return [member.value for member in cls]

    @classmethod
    def get_extension(cls, value: str) -> str:
        """The file extension a video of this container is saved with."""
        return EXTENSION if cls(value) in (cls.AUTO, cls.MP4) else ""
