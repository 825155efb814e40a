"""ComfyUI's video nodes (``comfy_extras/nodes_video.py``): Create Video, Save Video, Load Video and Get Video
Components, with their catalog entries in ComfyUI's V3 shape (``V3_SCHEMA``).

A VIDEO travels as a :class:`~comfyserve.nodes.video_types.Video`. Save Video writes ``{prefix}_{counter:05}_.mp4``
into the output folder and reports it as ComfyUI's ``ui.PreviewVideo`` does:
``{"images": [{"filename", "subfolder", "type": "output"}], "animated": [true]}``.
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import torch

from comfyserve.engine import context
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.node_api import input_files
from comfyserve.nodes.image_io import file_sha256, resolve_save_target, write_new_file
from comfyserve.nodes.video_types import CODECS, CONTAINERS, EXTENSION, Video, VideoFromComponents, VideoFromFile
from comfyserve.nodes.videofile import Audio, VideoComponents

CATEGORY = "image/video"
PREFIX_TOOLTIP = (
    "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or "
    "%Empty Latent Image.width% to include values from nodes."
)


def _combo(options: list[str], **extra: Any) -> tuple[str, dict[str, Any]]:
    """A V3 combo input as ComfyUI serialises it."""
    return ("COMBO", {"multiselect": False, "options": options, **extra})


def _video(value: Any) -> Video:
    if not isinstance(value, Video):
        raise NodeInputError(f"video must be a VIDEO (from Load Video or Create Video), got {type(value).__name__}")
    return value


class CreateVideo:
    V3_SCHEMA = True
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY
    DESCRIPTION = "Create a video from images."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to create a video from."}),
                "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}),
            },
            "optional": {"audio": ("AUDIO", {"tooltip": "The audio to add to the video."})},
        }

    def execute(self, images: torch.Tensor, fps: float, audio: Audio | None = None) -> tuple[Video]:
        """The frames at ``Fraction(fps)`` (exact: 29.97 stays 29.97 until it is encoded)."""
        return (VideoFromComponents(VideoComponents(images, Fraction(fps), audio)),)


class GetVideoComponents:
    V3_SCHEMA = True
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    FUNCTION = "execute"
    CATEGORY = CATEGORY
    DESCRIPTION = "Extracts all components from a video: frames, audio, and framerate."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"video": ("VIDEO", {"tooltip": "The video to extract components from."})}}

    def execute(self, video: Video) -> tuple[torch.Tensor, Audio | None, float]:
        """The frames, the audio (``None`` when the video has none) and the frame rate as a float."""
        components = _video(video).get_components()
        return components.images, components.audio, float(components.frame_rate)


class LoadVideo:
    V3_SCHEMA = True
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"file": _combo(input_files()[0], video_upload=True)}}

    def execute(self, file: str) -> tuple[Video]:
        """The file from the job's inputs or input folder (decoded when its frames are asked for)."""
        return (VideoFromFile(context.current().resolve_input(file)),)

    @classmethod
    def IS_CHANGED(cls, file: str) -> str:
        return file_sha256(file)


class SaveVideo:
    V3_SCHEMA = True
    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "video": ("VIDEO", {"tooltip": "The video to save."}),
                "filename_prefix": (
                    "STRING",
                    {"default": "video/ComfyUI", "multiline": False, "tooltip": PREFIX_TOOLTIP},
                ),
                "format": _combo(list(CONTAINERS), default="auto", tooltip="The format to save the video as."),
                "codec": _combo(list(CODECS), default="auto", tooltip="The codec to use for the video."),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def execute(
        self,
        video: Video,
        filename_prefix: str,
        format: str,
        codec: str,
        prompt: dict[str, Any] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the video as MP4 with the workflow (``extra_pnginfo``'s entries) and the prompt as metadata."""
        video = _video(video)
        width, height = video.get_dimensions()
        target = resolve_save_target(context.current().output_dir, filename_prefix, width, height)
        metadata = {**(extra_pnginfo or {}), **({} if prompt is None else {"prompt": prompt})}
        buffer = io.BytesIO()
        video.save_to(buffer, format=format, codec=codec, metadata=metadata or None)
        file, _ = write_new_file(target.folder, target.filename, target.counter, EXTENSION, buffer.getvalue())
        saved = {"filename": file, "subfolder": target.subfolder, "type": "output"}
        return {"ui": {"images": [saved], "animated": (True,)}}


NODE_CLASS_MAPPINGS = {
    "SaveVideo": SaveVideo,
    "CreateVideo": CreateVideo,
    "GetVideoComponents": GetVideoComponents,
    "LoadVideo": LoadVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SaveVideo": "Save Video",
    "CreateVideo": "Create Video",
    "GetVideoComponents": "Get Video Components",
    "LoadVideo": "Load Video",
}
