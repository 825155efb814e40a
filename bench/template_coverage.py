"""The pure part of the template coverage benchmark: which workflows, which node classes and model files they
use, their model family, the time caps applied before a run, and the summary and ranking of the outcomes.

The family rule (written down in docs/COMFYUI_SUITE.md, "Template coverage"):

- ``api``: the workflow uses an API node (a class ComfyUI's pinned catalog marks ``api_node``), or the
  templates' index lists it as one (tag ``API`` or ``"openSource": false``: API classes newer than that
  catalog).
- Otherwise each model file a node names (a string widget or input ending in a model suffix) gets a family
  from its name: a non-SD marker (:data:`NON_SD_MARKERS`, first match) gives that family; an SD marker
  (:data:`SD_MARKER`: ``sd15``, ``v1-5``, ``sd_xl``, ``512-inpainting`` ...) gives ``sd``; an unmarked name
  is ``sd`` when an SD-era loader (:data:`SD_ERA_LOADERS`) loads it (community SD checkpoints, LoRAs and VAEs
  are seldom named after their family; pixel upscalers suit every family), else ``other``.
- The workflow is ``sd`` when all its model files are ``sd``, ``none`` when it names no model file, else the
  most frequent non-SD family among its files. "SD-family" means ``sd`` or ``none``.
"""

from __future__ import annotations

import collections
import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyserve.ui_workflow import is_ui_workflow
from comfyserve.ui_workflow.document import parse_ui_workflow
from comfyserve.ui_workflow.nodes import RENAMED, VIRTUAL_TYPES

MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt", ".bin", ".gguf")
INACTIVE_MODES = (2, 4)  # muted, bypassed: the editor does not send them
SD_FAMILIES = ("sd", "none")
SD_ERA_LOADERS = frozenset(
    {
        "CheckpointLoaderSimple",
        "CheckpointLoader",
        "unCLIPCheckpointLoader",
        "LoraLoader",
        "LoraLoaderModelOnly",
        "VAELoader",
        "ControlNetLoader",
        "DiffControlNetLoader",
        "UpscaleModelLoader",
        "HypernetworkLoader",
        "GLIGENLoader",
        "CLIPVisionLoader",
    }
)
NON_SD_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (family, re.compile(pattern))
    for family, pattern in (
        ("sd3", r"sd3|sd_3"),
        ("flux", r"flux|^ae\.|chroma|kontext"),
        ("wan", r"wan|umt5|causvid|lightx2v|humo|chrono_?edit"),
        ("qwen", r"qwen"),
        ("hunyuan", r"hunyuan"),
        ("ltx", r"ltx|gemma"),
        ("hidream", r"hidream"),
        ("audio", r"ace[-_]?step|acestep|ace_1|ace15|stable[-_]audio|audio|music|wav2vec|whisper|yue\d|sheetsage"),
        (
            "other",
            r"sam\d|sam_|sdpose|neta|lumina|z_image|omnigen|cosmos|kandinsky|marigold|lotus|moge|birefnet|svd"
            r"|cogvideo|mochi|pixart|cascade|trellis|tripo|krea|anima|moss|mage_flow|ming_|minimax|seedvr"
            r"|firered|uso-|removal_timestep|full_encoder_small_decoder",
        ),
    )
)
SD_MARKER = re.compile(
    r"sd_?xl|xl_|_xl|(?<![a-z0-9])sd[-_ ]?v?(1[-_.]?[45]|2[-_.]?[01]?)(?![0-9])|v1-[45]|v2-[01]|768-v"
    r"|512-(base|inpainting)|stable[-_]?diffusion|vae-ft-mse"
)


@dataclass(frozen=True)
class Workflow:
    """One workflow of the corpus: a template (the editor's format) or a public example (API format)."""

    name: str
    source: str  # "template" or "example"
    document: dict[str, Any]
    listed_api: bool = False  # the templates' index lists it as an API-node workflow


def read_workflows(paths: Mapping[str, Path], source: str, listed_api: Iterable[str] = ()) -> list[Workflow]:
    api = set(listed_api)
    return [
        Workflow(name, source, json.loads(path.read_text(encoding="utf-8")), name in api)
        for name, path in sorted(paths.items())
    ]


def index_api_names(index: list[dict[str, Any]]) -> set[str]:
    """The templates the templates' ``index.json`` (a list of categories of templates) lists as API-node
    workflows: tagged ``API``, or not open source."""
    return {
        t["name"]
        for category in index
        for t in category.get("templates", [])
        if "API" in (t.get("tags") or []) or t.get("openSource") is False
    }


def used_nodes(document: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """Each node the workflow sends (class, its widget or input values): in the editor's format, every node
    of the root graph and of the subgraph definitions but notes, reroutes, primitives, subgraph instances and
    muted or bypassed nodes."""
    if not is_ui_workflow(document):
        return [
            (str(node["class_type"]), list(node.get("inputs", {}).values()))
            for node in document.values()
            if isinstance(node, dict) and isinstance(node.get("class_type"), str)
        ]
    workflow = parse_ui_workflow(document)
    found = []
    for graph in [workflow.graph, *(sub.graph for sub in workflow.subgraphs.values())]:
        for node in graph.nodes.values():
            class_type = RENAMED.get(node.type, node.type)
            if class_type in workflow.subgraphs or class_type in VIRTUAL_TYPES or node.mode in INACTIVE_MODES:
                continue
            values = node.widgets_values
            found.append((class_type, list(values.values()) if isinstance(values, dict) else list(values or [])))
    return found


def model_files(nodes: Iterable[tuple[str, list[Any]]]) -> list[tuple[str, str]]:
    """(class, file name) for every value that names a model file."""
    return sorted(
        {(cls, v) for cls, values in nodes for v in values if isinstance(v, str) and v.lower().endswith(MODEL_SUFFIXES)}
    )


def name_family(loader: str, name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    for family, marker in NON_SD_MARKERS:
        if marker.search(base):
            return family
    if SD_MARKER.search(base) or loader in SD_ERA_LOADERS:
        return "sd"
    return "other"


def workflow_family(workflow: Workflow, api_classes: frozenset[str]) -> str:
    nodes = used_nodes(workflow.document)
    if workflow.listed_api or any(cls in api_classes for cls, _ in nodes):
        return "api"
    families = [name_family(cls, name) for cls, name in model_files(nodes)]
    if not families:
        return "none"
    others = collections.Counter(f for f in families if f != "sd")
    if not others:
        return "sd"
    order = [family for family, _ in NON_SD_MARKERS]
    return min(others, key=lambda f: (-others[f], order.index(f)))


# -- the time caps ---------------------------------------------------------------------------------------

CAP_STEPS = 2
CAP_SIDE = 256
CAP_BATCH = 1
SIZED_OUTPUTS = frozenset({"LATENT", "IMAGE", "MASK"})


def capped(prompt: dict[str, Any], return_types: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """The prompt with its run time capped: ``steps`` at most :data:`CAP_STEPS` (a sampler's
    ``start_at_step``/``end_at_step`` below its steps scaled alike), the ``width``/``height`` of nodes that
    make latents, images or masks scaled to at most :data:`CAP_SIDE` (aspect kept, multiples of 8), and
    ``batch_size`` at most :data:`CAP_BATCH`. Linked inputs are left alone."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        inputs = node.get("inputs", {})
        steps = inputs.get("steps")
        if _is_int(steps) and steps > CAP_STEPS:
            for key in ("start_at_step", "end_at_step"):
                if _is_int(inputs.get(key)) and inputs[key] < steps:
                    inputs[key] = round(inputs[key] * CAP_STEPS / steps)
            inputs["steps"] = CAP_STEPS
        if _is_int(inputs.get("batch_size")) and inputs["batch_size"] > CAP_BATCH:
            inputs["batch_size"] = CAP_BATCH
        width, height = inputs.get("width"), inputs.get("height")
        sized = SIZED_OUTPUTS.intersection(return_types.get(node.get("class_type", ""), ()))
        if sized and _is_int(width) and _is_int(height) and max(width, height) > CAP_SIDE:
            scale = CAP_SIDE / max(width, height)
            inputs["width"], inputs["height"] = (max(8, round(side * scale / 8) * 8) for side in (width, height))
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- outcomes ---------------------------------------------------------------------------------------------

STAGES = ("unreadable", "missing_classes", "no_stand_in", "invalid", "failed", "timeout", "ran")


@dataclass
class Outcome:
    """How far one workflow got on one engine: ``stage`` is one of :data:`STAGES`."""

    stage: str
    missing: list[str] = field(default_factory=list)  # node classes the engine lacks
    detail: str = ""

    @property
    def classes_offered(self) -> bool:
        return STAGES.index(self.stage) > STAGES.index("missing_classes")

    @property
    def validates(self) -> bool:
        return STAGES.index(self.stage) > STAGES.index("invalid")

    @property
    def runs(self) -> bool:
        return self.stage == "ran"


@dataclass
class Record:
    workflow: str
    source: str
    family: str
    converts: bool
    outcomes: dict[str, Outcome]  # by engine ("before", "after")

    def row(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "source": self.source,
            "family": self.family,
            "converts": self.converts,
            **{
                engine: {"stage": o.stage, "missing": o.missing, "detail": o.detail[:300]}
                for engine, o in self.outcomes.items()
            },
        }


def counts(records: list[Record], engine: str) -> dict[str, int]:
    outcomes = [r.outcomes[engine] for r in records]
    return {
        "classes_offered": sum(o.classes_offered for o in outcomes),
        "validates": sum(o.validates for o in outcomes),
        "runs": sum(o.runs for o in outcomes),
    }


def summary(records: list[Record], engines: Iterable[str]) -> dict[str, Any]:
    """Totals per scope (all templates, the SD-family ones, the public examples) and engine."""
    scopes = {
        "templates": [r for r in records if r.source == "template"],
        "sd_family_templates": [r for r in records if r.source == "template" and r.family in SD_FAMILIES],
        "examples": [r for r in records if r.source == "example"],
    }
    out: dict[str, Any] = {
        name: {"total": len(scope), "converts": sum(r.converts for r in scope)} for name, scope in scopes.items()
    }
    for engine in engines:
        for name, scope in scopes.items():
            out[name][engine] = counts(scope, engine)
    out["templates_by_family"] = dict(collections.Counter(r.family for r in scopes["templates"]).most_common())
    return out


def missing_ranking(records: list[Record], engine: str) -> list[dict[str, Any]]:
    """The classes the engine lacks, by how many SD-family workflows (templates, then examples) use them, with
    how many each is the only missing class of (adding it alone would let those past the class check)."""
    using: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    alone: collections.Counter[str] = collections.Counter()
    for record in records:
        if record.family not in SD_FAMILIES:
            continue
        missing = record.outcomes[engine].missing
        for name in missing:
            using[name][record.source] += 1
        if len(missing) == 1:
            alone[missing[0]] += 1
    ranked = sorted(using, key=lambda c: (-using[c].total(), -alone[c], -using[c]["template"], c))
    return [
        {
            "class": c,
            "templates": using[c]["template"],
            "examples": using[c]["example"],
            "only_missing_class_of": alone[c],
        }
        for c in ranked
    ]
