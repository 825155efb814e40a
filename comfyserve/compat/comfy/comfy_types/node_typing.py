"""``comfy.comfy_types.node_typing``: the ``IO`` type names and the classic node base class."""

from __future__ import annotations

from abc import ABC
from enum import StrEnum
from typing import Any, ClassVar, TypedDict


class IO(StrEnum):
    """Node input and output type names. ``"*"`` (``ANY``) matches every type; a comma list matches any type
    that is a subset or superset of it, as ComfyUI's ``IO.__ne__`` decides."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    VIDEO = "VIDEO"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __ne__(self, value: object) -> bool:
        if self == "*" or value == "*":
            return False
        if not isinstance(value, str):
            return True
        mine, theirs = frozenset(self.split(",")), frozenset(value.split(","))
        return not (theirs <= mine or mine <= theirs)


class InputTypeDict(TypedDict, total=False):
    required: dict[str, Any]
    optional: dict[str, Any]
    hidden: dict[str, Any]


class ComfyNodeABC(ABC):  # noqa: B024 — ComfyUI's name; it declares no abstract method either
    """Base class of classic (V1) nodes: the attributes the loader reads, with ComfyUI's defaults."""

    DESCRIPTION: ClassVar[str] = ""
    CATEGORY: ClassVar[str] = "sd"
    EXPERIMENTAL: ClassVar[bool] = False
    DEPRECATED: ClassVar[bool] = False


class CheckLazyMixin:
    """``check_lazy_status`` that asks for every input that has not been evaluated yet."""

    def check_lazy_status(self, **kwargs: Any) -> list[str]:
        return [name for name, value in kwargs.items() if value is None]


class FileLocator(TypedDict):
    filename: str
    subfolder: str
    type: str
