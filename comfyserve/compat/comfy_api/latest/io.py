"""``comfy_api.latest.io``: V3 node schemas, as far as classic nodes reach.

A :class:`ComfyNode` subclass declares ``define_schema()`` and a classmethod ``execute``; the class gets the
classic attributes (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION`` ...) derived from its schema, so the
registry, validation and the executor treat it as any other node. Hidden values reach ``execute`` through
``cls.hidden`` (``unique_id``, ``prompt``, ``extra_pnginfo``, ``dynprompt``), as in ComfyUI.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from comfyserve.engine.graph_utils import ExecutionBlocker


class Hidden(StrEnum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """The hidden values of one call; a value the node did not ask for reads as ``None``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, key: str) -> Any:
        return None


@dataclass
class Input:
    """One declared input: ``(io_type, options)`` in the classic declaration."""

    id: str
    io_type: str
    options: dict[str, Any] = field(default_factory=dict)
    optional: bool = False

    def declaration(self) -> tuple[str, dict[str, Any]]:
        return (self.io_type, {k: v for k, v in self.options.items() if v is not None})


@dataclass
class Output:
    io_type: str
    id: str | None = None
    display_name: str | None = None
    tooltip: str | None = None
    is_output_list: bool = False


class _IOType:
    """``io.Int.Input(...)`` / ``io.Int.Output(...)`` for one type name."""

    io_type: ClassVar[str] = "*"

    @classmethod
    def Input(
        cls,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        **options: Any,
    ) -> Input:
        extras = {"display_name": display_name, "tooltip": tooltip, "lazy": lazy, **options}
        return Input(id, cls.io_type, extras, optional)

    @classmethod
    def Output(
        cls,
        id: str | None = None,
        display_name: str | None = None,
        tooltip: str | None = None,
        is_output_list: bool = False,
    ) -> Output:
        return Output(cls.io_type, id, display_name, tooltip, is_output_list)


def _type(name: str) -> type[_IOType]:
    return type(name, (_IOType,), {"io_type": name})


Int, Float, String, Boolean = _type("INT"), _type("FLOAT"), _type("STRING"), _type("BOOLEAN")
Image, Mask, Latent = _type("IMAGE"), _type("MASK"), _type("LATENT")
Conditioning, Model, Clip, Vae = _type("CONDITIONING"), _type("MODEL"), _type("CLIP"), _type("VAE")
Sampler, Sigmas, Noise, Guider = _type("SAMPLER"), _type("SIGMAS"), _type("NOISE"), _type("GUIDER")
ControlNet, UpscaleModel = _type("CONTROL_NET"), _type("UPSCALE_MODEL")
Video, Audio = _type("VIDEO"), _type("AUDIO")  # comfy_api.input's VideoInput and AudioInput
AnyType = _type("*")


class Combo(_IOType):
    io_type = "COMBO"

    @classmethod
    def Input(  # type: ignore[override]
        cls,
        id: str,
        options: list[Any] | None = None,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        **extra: Any,
    ) -> Input:
        return Input(
            id,
            "COMBO",
            {"options": list(options or []), "default": default, "display_name": display_name, "tooltip": tooltip}
            | {"lazy": lazy, **extra},
            optional,
        )


def Custom(io_type: str) -> type[_IOType]:
    """A pack's own type name."""
    return _type(io_type)


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    not_idempotent: bool = False


class NodeOutput:
    """``execute``'s return: the output values, and optionally ``ui``, ``expand`` or ``block_execution``."""

    def __init__(
        self, *args: Any, ui: Any = None, expand: dict[str, Any] | None = None, block_execution: str | None = None
    ) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None

    def classic(self, outputs: int) -> Any:
        """The classic return value the executor understands."""
        if self.block_execution is not None:
            return (ExecutionBlocker(self.block_execution),) * max(outputs, 1)
        returned: dict[str, Any] = {"result": self.args}
        if self.ui is not None:
            returned["ui"] = self.ui.as_dict() if hasattr(self.ui, "as_dict") else self.ui
        if self.expand is not None:
            returned["expand"] = self.expand
        return returned


class ComfyNode:
    """Base class of V3 nodes. Subclasses define ``define_schema()`` and ``execute(**inputs)`` as classmethods
    (``validate_inputs``, ``fingerprint_inputs`` and ``check_lazy_status`` when they need them)."""

    hidden: ClassVar[HiddenHolder] = HiddenHolder({})
    _schema: ClassVar[Schema | None] = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__} must define define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError(f"{cls.__name__} must define execute()")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "define_schema" not in cls.__dict__:
            return  # a per-call clone or an abstract intermediate class
        schema = cls._schema = cls.define_schema()
        cls.RETURN_TYPES = tuple(o.io_type for o in schema.outputs)  # type: ignore[attr-defined]
        cls.RETURN_NAMES = tuple(o.display_name or o.id or o.io_type for o in schema.outputs)  # type: ignore[attr-defined]
        cls.OUTPUT_IS_LIST = tuple(o.is_output_list for o in schema.outputs)  # type: ignore[attr-defined]
        cls.OUTPUT_NODE = schema.is_output_node  # type: ignore[attr-defined]
        cls.INPUT_IS_LIST = schema.is_input_list  # type: ignore[attr-defined]
        cls.NOT_IDEMPOTENT = schema.not_idempotent  # type: ignore[attr-defined]
        cls.CATEGORY = schema.category  # type: ignore[attr-defined]
        cls.DESCRIPTION = schema.description  # type: ignore[attr-defined]
        cls.DEPRECATED = schema.is_deprecated  # type: ignore[attr-defined]
        cls.EXPERIMENTAL = schema.is_experimental  # type: ignore[attr-defined]
        cls.FUNCTION = "run_v3"  # type: ignore[attr-defined]
        if "validate_inputs" in cls.__dict__:
            cls.VALIDATE_INPUTS = cls.validate_inputs  # type: ignore[attr-defined]
        if "fingerprint_inputs" in cls.__dict__:
            cls.IS_CHANGED = cls.fingerprint_inputs  # type: ignore[attr-defined]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        schema = cls._schema
        assert schema is not None, f"{cls.__name__} has no schema"
        declared: dict[str, Any] = {"required": {}, "optional": {}}
        for item in schema.inputs:
            declared["optional" if item.optional else "required"][item.id] = item.declaration()
        if schema.hidden:
            declared["hidden"] = {h.name: h.value for h in schema.hidden}
        return declared

    def run_v3(self, **kwargs: Any) -> Any:
        cls = type(self)
        schema = cls._schema
        assert schema is not None
        hidden = {h.name: kwargs.pop(h.name, None) for h in schema.hidden}
        clone: type[ComfyNode] = type(cls.__name__, (cls,), {"hidden": HiddenHolder(hidden)})
        returned = clone.execute(**kwargs)
        if inspect.isawaitable(returned):
            return self._finish_async(returned, len(schema.outputs))
        return _classic(returned, len(schema.outputs))

    async def _finish_async(self, returned: Any, outputs: int) -> Any:
        return _classic(await returned, outputs)


def _classic(returned: Any, outputs: int) -> Any:
    return returned.classic(outputs) if isinstance(returned, NodeOutput) else returned
