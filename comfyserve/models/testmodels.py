"""Tiny random-weight model files in the very single-file layouts real ones use (``make-test-models``).

Checkpoints (SD1.x, SD1.x inpainting, SD2.x 768-v, SDXL base and refiner), kohya-format LoRAs, a VAE,
ControlNets (:mod:`testcontrolnet`) and upscale models (:mod:`testmodels_upscale`), each a few MB, stored in fp16
like most published files. With workflows, the files are written under the names and folders the workflows ask
for: the family comes from the loader and the name (``xl`` -> SDXL, ``refiner`` -> SDXL refiner, ``inpaint`` ->
SD1.x inpainting, ``768-v`` / ``v2`` / ``sd2`` / ``2.1`` -> SD2.x v-prediction, else SD1.x), a LoRA's family from
the checkpoint its model input comes from. Files for UNETLoader, CLIPLoader and DualCLIPLoader are the parts of
one checkpoint per family (:mod:`testsplit`), so a split workflow gives the same images as that checkpoint would.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from comfyserve.engine.errors import ComfyServeError
from comfyserve.models import layout, testsplit
from comfyserve.models.configs import unet_config
from comfyserve.models.detect import V_PRED_NORM_KEY
from comfyserve.models.handles import ModelFamily
from comfyserve.models.testcontrolnet import controlnet_family, controlnet_shapes
from comfyserve.models.testmodels_upscale import scale_from_name, tiny_upscale_model

StateDict = dict[str, torch.Tensor]

LORA_RANK = 4
LORA_ALPHA = 2.0
_UNET_LORA_TARGETS = re.compile(r"\.(attn[12]\.to_(?:q|k|v|out\.0)|ff\.net\.(?:0\.proj|2)|proj_in|proj_out)\.weight$")
_CLIP_LORA_TARGETS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
)

DEFAULT_FILES: dict[str, tuple[str, ModelFamily]] = {
    "checkpoints/tiny-sd15.safetensors": ("checkpoint", ModelFamily.SD1),
    "checkpoints/tiny-sd15-inpainting.safetensors": ("checkpoint", ModelFamily.SD1_INPAINT),
    "checkpoints/tiny-sd21-768-v.safetensors": ("checkpoint", ModelFamily.SD2_V),
    "checkpoints/tiny-sdxl-base.safetensors": ("checkpoint", ModelFamily.SDXL),
    "checkpoints/tiny-sdxl-refiner.safetensors": ("checkpoint", ModelFamily.SDXL_REFINER),
    "loras/tiny-sd15-lora.safetensors": ("lora", ModelFamily.SD1),
    "loras/tiny-sd15-lora.pth": ("lora", ModelFamily.SD1),
    "loras/tiny-sdxl-lora.safetensors": ("lora", ModelFamily.SDXL),
    "loras/tiny-sdxl-lora.pth": ("lora", ModelFamily.SDXL),
    "vae/tiny-vae.safetensors": ("vae", ModelFamily.SD1),
    "controlnet/tiny-sd15-controlnet.safetensors": ("controlnet", ModelFamily.SD1),
    "controlnet/tiny-sdxl-controlnet.safetensors": ("controlnet", ModelFamily.SDXL),
    "upscale_models/RealESRGAN_x4plus.pth": ("upscale", ModelFamily.SD1),  # the family is unused
    "upscale_models/4x-UltraSharp.pth": ("upscale", ModelFamily.SD1),
}
_LOADERS = {
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints", "checkpoint"),
    "VAELoader": ("vae_name", "vae", "vae"),
    "LoraLoader": ("lora_name", "loras", "lora"),
    "LoraLoaderModelOnly": ("lora_name", "loras", "lora"),
    "ControlNetLoader": ("control_net_name", "controlnet", "controlnet"),
    "DiffControlNetLoader": ("control_net_name", "controlnet", "controlnet"),
    "UpscaleModelLoader": ("model_name", "upscale_models", "upscale"),
}
_MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt", ".bin")


class ModelRequestError(ComfyServeError):
    """A workflow asks for a file that cannot be made (bad name, conflicting families)."""


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "little")


def _random(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if key.endswith("position_ids"):
        return torch.arange(shape[-1]).reshape(shape)
    if key.endswith("logit_scale"):
        return torch.tensor(math.log(1 / 0.07))
    noise = torch.randn(shape, generator=gen)
    if len(shape) == 1:
        return 1.0 + 0.02 * noise if key.endswith("weight") else 0.02 * noise
    if "embedding" in key:
        return 0.02 * noise
    return noise / math.sqrt(math.prod(shape[1:]))


def _materialise(shapes: Mapping[str, tuple[int, ...]], seed: int) -> StateDict:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        tensor = _random(key, shape, gen)
        out[key] = tensor.half() if tensor.is_floating_point() else tensor
    return out


def full_size_checkpoint(family: ModelFamily, seed: int = 1234) -> StateDict:
    """A random checkpoint of ``family`` with its published widths and key layout (fp16, as released)."""
    return _materialise(layout.checkpoint_shapes(family, layout.FULL_SIZE[family]), seed)


def write_full_size_checkpoint(family: ModelFamily, path: Path, timeout_s: float = 900) -> None:
    """Write :func:`full_size_checkpoint` to ``path`` from a child process, so the caller never holds its
    tensors (SDXL: about 7 GB) and its memory figures stay its own."""
    code = (
        "import sys; from pathlib import Path; from comfyserve.models import testmodels;"
        "from comfyserve.models.handles import ModelFamily;"
        "testmodels.save(testmodels.full_size_checkpoint(ModelFamily(sys.argv[1])), Path(sys.argv[2]))"
    )
    subprocess.run([sys.executable, "-c", code, family.value, str(path)], check=True, timeout=timeout_s)


Sizes = Mapping[ModelFamily, layout.FamilyDims]


def tiny_checkpoint(family: ModelFamily, seed: int = 0, sizes: Sizes = layout.TINY) -> StateDict:
    """A random checkpoint of ``family`` with the published key layout and tiny widths (or ``sizes``)."""
    sd = _materialise(layout.checkpoint_shapes(family, sizes[family]), seed)
    if family is ModelFamily.SD2_V:  # what ComfyUI's v-prediction test looks at (detect.py)
        gen = torch.Generator().manual_seed(seed + 1)
        sd[V_PRED_NORM_KEY] = (0.3 * torch.randn(sd[V_PRED_NORM_KEY].shape, generator=gen)).half()
    return sd


def tiny_vae(seed: int = 0, sizes: Sizes = layout.TINY) -> StateDict:
    """A standalone VAE file's keys (no ``first_stage_model.`` prefix)."""
    return _materialise(layout.vae_shapes(sizes[ModelFamily.SD1].vae, prefix=""), seed)


def _unet_lora_modules(family: ModelFamily, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    """kohya module name -> weight shape; SD1.x/SD2.x LoRAs use diffusers names, SDXL ones LDM names."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    shapes = layout.unet_shapes(sizes[family].unet)
    targets = {k: v for k, v in shapes.items() if _UNET_LORA_TARGETS.search(k)}
    if family.is_xl:
        return {k[len(layout.UNET_PREFIX) : -len(".weight")]: v for k, v in targets.items()}
    meta = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    config = unet_config(family, {k[len(layout.UNET_PREFIX) :]: t for k, t in meta.items()})
    renamed = {id(t): k for k, t in convert_ldm_unet_checkpoint(meta, config).items()}
    return {renamed[id(meta[k])][: -len(".weight")]: v for k, v in targets.items()}


def _clip_lora_modules(dims: layout.ClipDims) -> dict[str, tuple[int, int]]:
    out = {}
    for i in range(dims.layers):
        for target in _CLIP_LORA_TARGETS:
            rows, cols = dims.width, dims.width
            if target == "mlp.fc1":
                rows = dims.mlp
            elif target == "mlp.fc2":
                cols = dims.mlp
            out[f"text_model.encoder.layers.{i}.{target}"] = (rows, cols)
    return out


def tiny_lora(family: ModelFamily, seed: int = 0, sizes: Sizes = layout.TINY) -> StateDict:
    """A kohya-format LoRA (rank 4, alpha 2) for the UNet and text encoders of the tiny ``family`` model."""
    dims = sizes[family]
    modules = {"lora_unet_" + k.replace(".", "_"): v for k, v in _unet_lora_modules(family, sizes).items()}
    if family.is_xl:
        encoders = [("lora_te1_", dims.clip_l), ("lora_te2_", dims.open_clip)]
    else:
        encoders = [("lora_te_", dims.clip_l or dims.open_clip)]
    for prefix, clip in encoders:
        if clip is not None:
            modules.update({prefix + k.replace(".", "_"): v for k, v in _clip_lora_modules(clip).items()})
    gen = torch.Generator().manual_seed(seed)
    sd: StateDict = {}
    for name, shape in modules.items():
        kernel = shape[2:]
        sd[f"{name}.lora_down.weight"] = (0.1 * torch.randn((LORA_RANK, shape[1], *kernel), generator=gen)).half()
        sd[f"{name}.lora_up.weight"] = (
            0.1 * torch.randn((shape[0], LORA_RANK, *[1] * len(kernel)), generator=gen)
        ).half()
        sd[f"{name}.alpha"] = torch.tensor(LORA_ALPHA).half()
    return sd


def tiny_controlnet(family: ModelFamily, seed: int = 0, sizes: Sizes = layout.TINY) -> StateDict:
    """A ControlNet fitting the UNet of the tiny ``family`` model (or ``sizes``), in its published layout."""
    return _materialise(controlnet_shapes(family, sizes[family].unet), seed)


def save(sd: StateDict, path: Path) -> None:
    """Write ``sd`` as safetensors, or as a torch pickle for ``.ckpt`` (under ``state_dict``) / ``.pth``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": sd} if path.suffix.lower() == ".ckpt" else sd, path)
    path.chmod(0o644)  # safetensors writes owner-only files: a model folder is read by others (ComfyUI, workers)


def family_from_name(name: str) -> ModelFamily:
    lowered = name.lower()
    if "refiner" in lowered:
        return ModelFamily.SDXL_REFINER
    if "xl" in lowered:
        return ModelFamily.SDXL
    if "inpaint" in lowered:
        return ModelFamily.SD1_INPAINT
    if any(mark in lowered for mark in ("768-v", "v2", "sd2", "2.1", "2-1", "2_1")):
        return ModelFamily.SD2_V
    return ModelFamily.SD1


@dataclass(frozen=True)
class Request:
    folder: str
    name: str
    kind: str
    family: ModelFamily


def _upstream_checkpoint(prompt: Mapping[str, Any], node_id: str, seen: set[str]) -> str | None:
    node = prompt.get(node_id)
    if not isinstance(node, dict) or node_id in seen:
        return None
    seen.add(node_id)
    inputs = node.get("inputs", {})
    if node.get("class_type") == "CheckpointLoaderSimple" and isinstance(inputs.get("ckpt_name"), str):
        return str(inputs["ckpt_name"])
    link = inputs.get("model")
    if isinstance(link, list) and link:
        return _upstream_checkpoint(prompt, str(link[0]), seen)
    return None


def requests_for(prompt: Mapping[str, Any]) -> list[Request]:
    """The model files an API-format workflow names, with the family each should have."""
    found = []
    for node_id, node in prompt.items():
        if isinstance(node, dict) and node.get("class_type") in testsplit.SPLIT_LOADERS:
            for folder, name, part, family in testsplit.split_requests(
                node["class_type"], node.get("inputs", {}), family_from_name
            ):
                if name.lower().endswith(_MODEL_SUFFIXES):
                    found.append(Request(folder, name, part, family))
            continue
        if not isinstance(node, dict) or node.get("class_type") not in _LOADERS:
            continue
        field, folder, kind = _LOADERS[node["class_type"]]
        name = node.get("inputs", {}).get(field)
        if not isinstance(name, str) or not name.lower().endswith(_MODEL_SUFFIXES):
            continue
        if kind == "lora":
            checkpoint = _upstream_checkpoint(prompt, node_id, set())
            family = family_from_name(checkpoint) if checkpoint else ModelFamily.SD1
            family = ModelFamily.SD1 if family is ModelFamily.SD1_INPAINT else family
        elif kind == "controlnet":
            family = controlnet_family(family_from_name(name))
        else:
            family = ModelFamily.SD1 if kind == "upscale" else family_from_name(name)
        found.append(Request(folder, name, kind, family))
    return found


def _safe_relative(folder: str, name: str) -> str:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ModelRequestError(f"model file name {name!r} must be a relative path inside the {folder} folder")
    return f"{folder}/{path}"


def split_source(family: ModelFamily, sizes: Sizes = layout.TINY) -> StateDict:
    """The checkpoint every split file of ``family`` is a part of."""
    return tiny_checkpoint(family, _seed("split", family.value), sizes)


def split_part(part: str, family: ModelFamily, sizes: Sizes = layout.TINY) -> StateDict:
    """One part (:data:`testsplit.PARTS`) of :func:`split_source`."""
    return testsplit.split_checkpoint(split_source(family, sizes), family)[part]


def _state_dict(kind: str, family: ModelFamily, seed: int, sizes: Sizes, name: str) -> StateDict:
    if kind in testsplit.PARTS:
        return split_part(kind, family, sizes)
    if kind == "upscale":
        return tiny_upscale_model(scale_from_name(name), seed)
    if kind == "checkpoint":
        return tiny_checkpoint(family, seed, sizes)
    if kind == "lora":
        return tiny_lora(family, seed, sizes)
    if kind == "controlnet":
        return tiny_controlnet(family, seed, sizes)
    return tiny_vae(seed, sizes)


def _workflow_prompt(document: Any) -> Mapping[str, Any]:
    if isinstance(document, dict) and isinstance(document.get("prompt"), dict):
        return document["prompt"]
    if isinstance(document, dict):
        return document
    raise ModelRequestError("a workflow must be a JSON object of nodes (API format)")


def make_test_models(directory: Path, workflows: Iterable[Path] = (), comfyui: bool = False) -> list[Path]:
    """Write tiny models into ``directory/<folder>/`` (the default set, or what ``workflows`` name); with
    ``comfyui``, in the smallest sizes ComfyUI loads too (:data:`layout.COMFYUI_LOADABLE`: SD1.x only)."""
    sizes: Sizes = layout.COMFYUI_LOADABLE if comfyui else layout.TINY
    wanted: dict[str, tuple[str, ModelFamily]] = {}
    workflow_list = list(workflows)
    if not workflow_list:
        wanted.update({name: entry for name, entry in DEFAULT_FILES.items() if entry[1] in sizes})
    for workflow in workflow_list:
        try:
            document = json.loads(workflow.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelRequestError(f"cannot read workflow {workflow}: {exc}") from exc
        for request in requests_for(_workflow_prompt(document)):
            relative = _safe_relative(request.folder, request.name)
            previous = wanted.setdefault(relative, (request.kind, request.family))
            if previous != (request.kind, request.family):
                raise ModelRequestError(
                    f"{relative} is asked for as a {previous[1].value} {previous[0]} and as a "
                    f"{request.family.value} {request.kind}"
                )
    unloadable = sorted(f"{name} ({family.value})" for name, (_, family) in wanted.items() if family not in sizes)
    if unloadable:
        raise ModelRequestError(
            f"no stand-in ComfyUI loads too for {', '.join(unloadable)}: --comfyui writes SD1.x files only"
        )
    written = []
    for relative, (kind, family) in sorted(wanted.items()):
        path = directory / relative
        save(_state_dict(kind, family, _seed(str(PurePosixPath(relative).with_suffix(""))), sizes, relative), path)
        written.append(path)
    return written
