"""A node's declared contract (ComfyUI's classic attributes), read from a class or from a catalog entry.

Validation and the catalog work on :class:`NodeSpec` alone, so a catalog exported from the node classes
can validate a workflow without importing a single node module (no torch on the light path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from comfyserve.engine.errors import CatalogError

INPUT_KINDS = ("required", "optional", "hidden")


@dataclass(frozen=True)
class InputSpec:
    """One declared input. ``type`` is a type name (``"INT"``, ``"IMAGE,FLOAT"``, ``"COMBO"``) or, for a
    classic combo, the list of its options. ``with_options``: declared with an options dict, even an empty one
    (ComfyUI serialises ``("MODEL", {})`` as ``["MODEL", {}]``)."""

    name: str
    type: str | tuple[Any, ...]
    options: Mapping[str, Any]
    kind: str
    with_options: bool = False

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, tuple) or self.type == "COMBO"

    @property
    def choices(self) -> tuple[Any, ...] | None:
        if isinstance(self.type, tuple):
            return self.type
        if self.type == "COMBO" and isinstance(self.options.get("options"), list | tuple):
            return tuple(self.options["options"])
        return None

    @property
    def lazy(self) -> bool:
        return bool(self.options.get("lazy", False))

    def config(self) -> list[Any]:
        """The ``(type, options)`` pair as ComfyUI serialises it in ``/object_info`` and error ``input_config``."""
        head: Any = list(self.type) if isinstance(self.type, tuple) else self.type
        return [head, dict(self.options)] if self.options or self.with_options else [head]


@dataclass(frozen=True)
class ValidateHook:
    """What a node's ``VALIDATE_INPUTS`` declares: its parameter names, ``**kwargs`` and ``input_types``."""

    params: frozenset[str]
    takes_kwargs: bool
    wants_input_types: bool

    def bypasses_builtin_checks(self, input_name: str) -> bool:
        """ComfyUI skips min/max/combo checks for inputs the hook handles itself."""
        return self.takes_kwargs or input_name in self.params


@dataclass(frozen=True)
class NodeSpec:
    name: str
    inputs: Mapping[str, InputSpec]
    return_types: tuple[str, ...]
    return_names: tuple[str, ...]
    output_is_list: tuple[bool, ...]
    output_node: bool = False
    input_is_list: bool = False
    not_idempotent: bool = False
    category: str = "sd"
    display_name: str = ""  # as shown (the class name when none is given)
    display_name_given: bool = True  # False: a V3 node that names none (its entry's display_name is null)
    description: str = ""
    python_module: str = "nodes"
    deprecated: bool = False
    experimental: bool = False
    validate_hook: ValidateHook | None = None
    has_is_changed: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    input_kinds: tuple[str, ...] = ()  # the kinds declared, even empty (DisableNoise: ``{"required": {}}``)
    # ComfyUI's V3 (``io.ComfyNode``) entry shape: hidden inputs as ``["PROMPT"]``, ``api_node``, ``deprecated``,
    # ``experimental`` and ``output_tooltips`` always present. A class opts in with ``V3_SCHEMA = True``.
    v3: bool = False
    output_tooltips: tuple[str | None, ...] = ()
    # combo options this engine serves, where it serves fewer than the catalog lists (``SERVED_OPTIONS``)
    served_options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @cached_property
    def declared(self) -> dict[str, InputSpec]:
        """Required and optional inputs (the ones a workflow may set), in declaration order."""
        return {n: s for n, s in self.inputs.items() if s.kind != "hidden"}

    @cached_property
    def hidden(self) -> dict[str, str]:
        return {n: str(s.type) for n, s in self.inputs.items() if s.kind == "hidden"}

    @property
    def uses_unique_id(self) -> bool:
        return "UNIQUE_ID" in self.hidden.values()

    # -- from a class -------------------------------------------------------------------------------

    @classmethod
    def from_class(cls, name: str, node_class: type, *, display_name: str = "", module: str = "") -> NodeSpec:
        declared = node_class.INPUT_TYPES()  # type: ignore[attr-defined]
        if not isinstance(declared, Mapping):
            raise CatalogError(f"{name}.INPUT_TYPES() returned {type(declared).__name__}, not a dict")
        inputs: dict[str, InputSpec] = {}
        for kind in INPUT_KINDS:
            for input_name, entry in (declared.get(kind) or {}).items():
                inputs[input_name] = _input_from_declaration(name, input_name, entry, kind)
        input_kinds = tuple(kind for kind in INPUT_KINDS if declared.get(kind) is not None)
        return_types = tuple(getattr(node_class, "RETURN_TYPES", ()))
        output_is_list = tuple(getattr(node_class, "OUTPUT_IS_LIST", ())) or (False,) * len(return_types)
        return cls(
            name=name,
            inputs=inputs,
            return_types=tuple(str(t) for t in return_types),
            return_names=tuple(getattr(node_class, "RETURN_NAMES", None) or return_types),
            output_is_list=tuple(bool(x) for x in output_is_list),
            output_node=bool(getattr(node_class, "OUTPUT_NODE", False)),
            input_is_list=bool(getattr(node_class, "INPUT_IS_LIST", False)),
            not_idempotent=bool(getattr(node_class, "NOT_IDEMPOTENT", False)),
            category=str(getattr(node_class, "CATEGORY", "sd")),
            display_name=display_name or name,
            display_name_given=bool(display_name) or not getattr(node_class, "V3_SCHEMA", False),
            description=str(getattr(node_class, "DESCRIPTION", "")),
            python_module=module or node_class.__module__,
            deprecated=bool(getattr(node_class, "DEPRECATED", False)),
            experimental=bool(getattr(node_class, "EXPERIMENTAL", False)),
            validate_hook=_validate_hook(node_class),
            has_is_changed=callable(getattr(node_class, "IS_CHANGED", None)),
            input_kinds=input_kinds,
            v3=bool(getattr(node_class, "V3_SCHEMA", False)),
            output_tooltips=tuple(getattr(node_class, "OUTPUT_TOOLTIPS", None) or (None,) * len(return_types)),
            served_options={k: tuple(v) for k, v in getattr(node_class, "SERVED_OPTIONS", {}).items()},
        )

    # -- to and from the /object_info shape ---------------------------------------------------------

    def to_object_info(self) -> dict[str, Any]:
        by_kind: dict[str, dict[str, Any]] = {kind: {} for kind in self.input_kinds}
        order: dict[str, list[str]] = {kind: [] for kind in self.input_kinds}
        for spec in self.inputs.values():
            value: Any = spec.config() if spec.kind != "hidden" else [spec.type] if self.v3 else spec.type
            by_kind.setdefault(spec.kind, {})[spec.name] = value
            order.setdefault(spec.kind, []).append(spec.name)
        info: dict[str, Any] = {
            "input": by_kind,
            "input_order": order,
            "output": list(self.return_types),
            "output_is_list": list(self.output_is_list),
            "output_name": list(self.return_names),
            "name": self.name,
            "display_name": self.display_name if self.display_name_given else None,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if self.v3:
            info.update(api_node=False, output_tooltips=list(self.output_tooltips))
        if self.deprecated or self.v3:
            info["deprecated"] = self.deprecated
        if self.experimental or self.v3:
            info["experimental"] = self.experimental
        # comfyserve's additions: what the engine needs to validate without the class.
        engine: dict[str, Any] = {"input_is_list": self.input_is_list, "not_idempotent": self.not_idempotent}
        if self.validate_hook is not None:
            engine["validate_inputs"] = {
                "params": sorted(self.validate_hook.params),
                "kwargs": self.validate_hook.takes_kwargs,
                "input_types": self.validate_hook.wants_input_types,
            }
        if self.served_options:
            engine["served_options"] = {k: list(v) for k, v in self.served_options.items()}
        info["comfyserve"] = engine
        return info

    @classmethod
    def from_object_info(cls, name: str, info: Mapping[str, Any]) -> NodeSpec:
        try:
            inputs: dict[str, InputSpec] = {}
            for kind in INPUT_KINDS:
                for input_name, entry in _in_input_order(info, kind):
                    if kind == "hidden":  # V3 nodes list them as ["PROMPT"], classic ones as "PROMPT"
                        hidden = entry[0] if isinstance(entry, list) and entry else entry
                        inputs[input_name] = InputSpec(input_name, str(hidden), {}, kind)
                    else:
                        inputs[input_name] = _input_from_declaration(name, input_name, entry, kind)
            engine = info.get("comfyserve", {})
            hook = engine.get("validate_inputs")
            return_types = tuple(str(t) for t in info.get("output", ()))
            return cls(
                name=name,
                inputs=inputs,
                return_types=return_types,
                return_names=tuple(info.get("output_name") or return_types),
                output_is_list=tuple(bool(x) for x in info.get("output_is_list") or (False,) * len(return_types)),
                output_node=bool(info.get("output_node", False)),
                input_is_list=bool(engine.get("input_is_list", False)),
                not_idempotent=bool(engine.get("not_idempotent", False)),
                category=str(info.get("category", "sd")),
                display_name=str(info.get("display_name") or name),
                display_name_given=info.get("display_name") is not None,
                description=str(info.get("description", "")),
                python_module=str(info.get("python_module", "nodes")),
                deprecated=bool(info.get("deprecated", False)),
                experimental=bool(info.get("experimental", False)),
                validate_hook=None
                if hook is None
                else ValidateHook(frozenset(hook["params"]), bool(hook["kwargs"]), bool(hook["input_types"])),
                input_kinds=tuple(kind for kind in INPUT_KINDS if kind in (info.get("input") or {})),
                v3="api_node" in info,
                output_tooltips=tuple(info.get("output_tooltips") or ()),
                served_options={k: tuple(v) for k, v in engine.get("served_options", {}).items()},
            )
        except (AttributeError, KeyError, TypeError) as exc:
            raise CatalogError(f"catalog entry {name!r} is malformed: {exc}") from exc


def _in_input_order(info: Mapping[str, Any], kind: str) -> list[tuple[str, Any]]:
    """One kind's declared inputs in ``input_order`` (ComfyUI's declaration order), then any it omits."""
    declared = info.get("input", {}).get(kind) or {}
    order = [name for name in (info.get("input_order") or {}).get(kind) or () if name in declared]
    return [(name, declared[name]) for name in dict.fromkeys([*order, *declared])]


def _input_from_declaration(node: str, input_name: str, entry: Any, kind: str) -> InputSpec:
    if isinstance(entry, str):  # hidden inputs and terse declarations: "PROMPT", "INT"
        return InputSpec(input_name, entry, {}, kind)
    if not isinstance(entry, list | tuple) or not entry:
        raise CatalogError(f"{node}: input {input_name!r} must be declared as (TYPE, options), got {entry!r}")
    head = entry[0]
    with_options = len(entry) > 1 and isinstance(entry[1], Mapping)
    options = dict(entry[1]) if with_options else {}
    type_: str | tuple[Any, ...] = tuple(head) if isinstance(head, list | tuple) else str(head)
    return InputSpec(input_name, type_, options, kind, with_options)


def _validate_hook(node_class: type) -> ValidateHook | None:
    hook = getattr(node_class, "VALIDATE_INPUTS", None)
    if not callable(hook):
        return None
    import inspect  # only for node classes with a hook: the edge reading a catalog never needs it

    spec = inspect.getfullargspec(hook)
    params = frozenset(a for a in spec.args + spec.kwonlyargs if a not in ("self", "cls", "s", "input_types"))
    wants_types = "input_types" in spec.args or "input_types" in spec.kwonlyargs
    return ValidateHook(params, spec.varkw is not None, wants_types)
