"""A node's inputs and widgets as ComfyUI's editor builds them from a catalog entry, and its saved values.

The editor gives every widget-typed input (INT, FLOAT, STRING, COMBO …) a widget and a socket; an INT named
``seed``/``noise_seed`` (or declared ``control_after_generate``) gets a second, unsent widget for the
control mode, and upload inputs get an unsent button. ``widgets_values`` fills the widgets in order. A few
of the editor's extensions change core nodes' inputs (uploads, audio players, 3D previews) and are
reproduced here by class name, as the frontend does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyserve.engine.spec import NodeSpec
from comfyserve.ui_workflow.document import Slot

SEED_NAMES = ("seed", "noise_seed")
MEDIA_UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
AUDIO_PLAYER_CLASSES = frozenset({"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus"})
PREVIEW_3D_CLASSES = {"Preview3D": "PREVIEW_3D", "Preview3DAnimation": "PREVIEW_3D_ANIMATION", "SaveGLB": "PREVIEW_3D"}
# The 3D loaders' buttons, after the model file (sent with these values; the editor's ``image`` for them is a
# capture of its 3D viewer, which only a browser makes).
LOAD_3D_CLASSES = frozenset({"Load3D", "Load3DAnimation"})
LOAD_3D_BUTTONS = (
    ("upload 3d model", "upload3dmodel"),
    ("upload extra resources", "uploadExtraResources"),
    ("clear", "clear"),
)
# The output nodes whose ``filename_prefix`` the editor expands (%date:…%, %Node.widget%) before sending.
PREFIX_REPLACING_CLASSES = frozenset(
    {
        "SaveImage",
        "SaveAnimatedWEBP",
        "SaveWEBM",
        "SaveAudio",
        "SaveGLB",
        "SaveAnimatedPNG",
        "CLIPSave",
        "VAESave",
        "ModelSave",
        "LoraSave",
        "SaveLatent",
    }
)
# Widget types of the editor (core widgets and those its bundled extensions add), by their initial value.
OTHER_WIDGETS: dict[str, Any] = {
    "FILEUPLOAD": "",
    "MULTISELECT": [],
    "PREVIEW_3D": "",
    "PREVIEW_3D_ANIMATION": "",
    "LOAD_3D": "",
    "LOAD_3D_ANIMATION": "",
    "AUDIO_RECORD": "",
    "WEBCAM": "",
    "COLOR": "",
    "IMAGECOMPARE": None,
    "TREESELECT": None,
    "CHART": {},
    "GALLERIA": [],
    "SELECTBUTTON": "",
    "TEXTAREA": "",
}
WIDGET_TYPES = frozenset(
    {"INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "AUDIOUPLOAD", "AUDIO_UI", *OTHER_WIDGETS}
)


@dataclass
class EditorInput:
    """An input as the editor declares it: name, type (``COMBO`` for lists), options, optional or not."""

    name: str
    type: str
    options: Mapping[str, Any]
    optional: bool

    @property
    def widget_type(self) -> str:
        return str(self.options.get("widgetType") or self.type)

    @property
    def has_widget(self) -> bool:
        return self.widget_type in WIDGET_TYPES and not self.options.get("forceInput")


class _Undefined:
    """JavaScript's ``undefined``: what a PrimitiveNode without a widget pushes (a number widget makes it NaN)."""


UNDEFINED: Any = _Undefined()


@dataclass
class NumberRule:
    """How the editor's number widget settles a value it is handed (rounding to its step; floats clamped)."""

    integer: bool
    minimum: float
    maximum: float
    step: float
    round_to: float | None
    precision: int

    def settle(self, value: Any) -> Any:
        settled = self._settle(value)
        return int(settled) if isinstance(settled, float) and settled.is_integer() else settled  # JS has one number

    def _settle(self, value: Any) -> Any:
        number = _js_number(value)
        if self.integer:
            if self.step == 1:
                return _js_round(number)
            offset = math.fmod(self.minimum, self.step)
            return _js_round((number - offset) / self.step) * self.step + offset
        if not self.round_to:
            return value
        rounded = float(f"{_js_round(number / self.round_to) * self.round_to:.{self.precision}f}")
        return min(max(rounded, self.minimum), self.maximum)


@dataclass
class Widget:
    name: str
    value: Any
    saved: bool = True  # takes an entry of ``widgets_values``
    sent: bool = True  # appears in the API prompt
    dynamic_prompts: bool = False
    text_area: bool = False  # an HTML text area: it holds what it is given as text
    number: NumberRule | None = None
    alias: Widget | None = None  # a promoted text area is the inner one: they share one value

    def set(self, value: Any) -> None:
        self.value = js_string(value) if self.text_area else value
        if self.alias is not None:
            self.alias.set(self.value)

    def set_as_editor(self, value: Any) -> None:
        """A value pushed in by a PrimitiveNode: set, then settled by the widget's own change handler."""
        self.set(value)
        if self.number is not None:
            self.value = self.number.settle(self.value)


def js_string(value: Any) -> str:
    """JavaScript's ``String(value)`` for JSON values (a text area's ``value = x``; null becomes empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, list):
        return ",".join("" if v is None else js_string(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _js_number(value: Any) -> float:
    if value is UNDEFINED:
        return math.nan
    if isinstance(value, bool) or value is None:
        return float(bool(value))
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip() or 0)
    except ValueError:
        return math.nan


def _js_round(value: float) -> float:
    return float(math.floor(value + 0.5)) if math.isfinite(value) else value


def editor_inputs(spec: NodeSpec) -> list[EditorInput]:
    """The class's inputs in the editor's order: declared ones (required, then optional), then any the
    editor's extensions add to the class."""
    inputs: dict[str, EditorInput] = {}
    for name, declared in spec.declared.items():
        if isinstance(declared.type, tuple):
            inputs[name] = EditorInput(name, "COMBO", {**declared.options, "options": list(declared.type)}, False)
        else:
            inputs[name] = EditorInput(name, declared.type, declared.options, declared.kind == "optional")
    preview = PREVIEW_3D_CLASSES.get(spec.name)
    if preview:
        inputs["image"] = EditorInput("image", preview, {}, False)
    if spec.name in AUDIO_PLAYER_CLASSES:
        inputs["audioUI"] = EditorInput("audioUI", "AUDIO_UI", {}, False)
    audio = inputs.get("audio")
    if audio is not None and not audio.optional and audio.options.get("audio_upload") is True:
        inputs["upload"] = EditorInput("upload", "AUDIOUPLOAD", {}, False)
    media = next((i for i in inputs.values() if not i.optional and _is_media_upload(i)), None)
    if media is not None:
        inputs["upload"] = EditorInput("upload", "IMAGEUPLOAD", {**media.options, "imageInputName": media.name}, False)
    return list(inputs.values())


def _is_media_upload(spec: EditorInput) -> bool:
    return spec.type == "COMBO" and any(spec.options.get(key) is True for key in MEDIA_UPLOAD_OPTIONS)


def input_slots(inputs: list[EditorInput]) -> list[Slot]:
    """The node's input sockets: plain sockets first, then one per widget, as the editor adds them."""
    plain = [Slot(i.name, i.type) for i in inputs if not i.has_widget]
    return plain + [Slot(i.name, i.type, widget=i.name) for i in inputs if i.has_widget]


def make_widgets(class_type: str, inputs: list[EditorInput]) -> list[Widget]:
    widgets: list[Widget] = []
    for spec in inputs:
        if spec.has_widget:
            widgets.extend(_widgets_for(spec))
        if spec.name == "model_file" and class_type in LOAD_3D_CLASSES:
            widgets.extend(Widget(name, value) for name, value in LOAD_3D_BUTTONS)
    if class_type == "PreviewAny":
        widgets.append(Widget("preview", "", saved=False))
    return widgets


def _widgets_for(spec: EditorInput) -> list[Widget]:
    kind, options = spec.widget_type, spec.options
    default = options.get("default")
    if kind == "INT":
        control = options.get("control_after_generate")
        wants_control = control if control is not None else spec.name in SEED_NAMES
        main = Widget(spec.name, 0 if default is None else default, number=_number_rule(options, integer=True))
        return [main, _control()] if wants_control else [main]
    if kind == "FLOAT":
        return [Widget(spec.name, 0 if default is None else default, number=_number_rule(options, integer=False))]
    if kind in ("BOOLEAN", "STRING", "MARKDOWN"):
        empty = False if kind == "BOOLEAN" else ""
        dynamic = kind == "STRING" and options.get("dynamicPrompts") is True
        area = kind == "MARKDOWN" or bool(kind == "STRING" and options.get("multiline"))
        return [Widget(spec.name, empty if default is None else default, dynamic_prompts=dynamic, text_area=area)]
    if kind == "COMBO":
        return _combo(spec)
    if kind == "IMAGEUPLOAD":
        return [Widget(spec.name, "image", sent=False)]
    if kind == "AUDIOUPLOAD":
        return [Widget(spec.name, "", sent=False)]
    if kind == "AUDIO_UI":
        return [Widget(spec.name, None, saved=False)]
    return [Widget(spec.name, OTHER_WIDGETS[kind])]


def _combo(spec: EditorInput) -> list[Widget]:
    options = spec.options
    if options.get("multi_select"):
        return [Widget(spec.name, [])]
    choices = options.get("options") or []
    value = options.get("default") or (choices[0] if choices else ("Loading..." if options.get("remote") else None))
    main = Widget(spec.name, value)
    return [main, _control()] if options.get("control_after_generate") else [main]


def _number_rule(options: Mapping[str, Any], *, integer: bool) -> NumberRule:
    step = float(options.get("step") or (1 if integer else 0.5))
    precision = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    declared = options.get("round")
    round_to = 10.0**-precision if precision and not declared else (declared or None)
    low, high = options.get("min"), options.get("max")
    return NumberRule(integer, 0 if low is None else low, 2048 if high is None else high, step, round_to, precision)


def _control() -> Widget:
    return Widget("control_after_generate", "randomize", sent=False)


def migrate_values(inputs: list[EditorInput], widgets: list[Widget], values: list[Any]) -> list[Any]:
    """Values saved before sockets and widgets coexisted held an entry for each ``forceInput`` too: drop those
    when the count says so (the editor's ``migrateWidgetsValues``)."""
    names = {w.name for w in widgets}
    originals = [i for i in inputs if i.name in names or i.options.get("forceInput")]
    count = sum(2 if i.options.get("control_after_generate") or i.name in SEED_NAMES else 1 for i in originals)
    if count != len(values):
        return values
    # lodash's zip pads the shorter list, so values past the inputs stay (a seed's control value shifts them).
    return [v for i, v in enumerate(values) if i >= len(originals) or not originals[i].options.get("forceInput")]


def fill(widgets: list[Widget], values: Any) -> None:
    """Assign saved values to the widgets that take them, in order; extra values are ignored, as in the editor."""
    if not isinstance(values, list):
        return
    for widget, value in zip((w for w in widgets if w.saved), values, strict=False):
        widget.set(value)
