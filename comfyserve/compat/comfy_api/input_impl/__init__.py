"""``comfy_api.input_impl``: the VIDEO values a pack makes, a video file (or bytes) and one made of components."""

from __future__ import annotations

from comfyserve.nodes.video_types import VideoFromComponents, VideoFromFile

__all__ = ["VideoFromComponents", "VideoFromFile"]
