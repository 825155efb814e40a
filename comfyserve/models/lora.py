"""LoRA files -> :class:`LoraPatch` es, and merging them into weights around a use of the model.

Key formats: kohya / A1111 (``lora_unet_*``, ``lora_te_*``, ``lora_te1_*``, ``lora_te2_*`` with
``.lora_down.weight``, ``.lora_up.weight``, ``.alpha``; UNet names in diffusers or LDM spelling) and
diffusers / PEFT (``unet.*`` / ``text_encoder.*`` / ``text_encoder_2.*`` with ``.lora_A.weight`` /
``.lora_B.weight``, or the older ``.lora.down.weight`` / ``processor.to_q_lora.down.weight``).
A patch adds ``strength * alpha / rank * up @ down`` to the target weight (alpha defaults to the rank).

Patches never change the loaded model: :func:`merged` writes ``W + sum(deltas)`` into the parameters for the
duration of a block and puts the original tensors back after it, so the base model stays shared and reusable.
Text-encoder delta names carry the encoder's index as a prefix (``"0.encoder.layers.3.mlp.fc1.weight"``).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from comfyserve.models.cache import model_cache
from comfyserve.models.errors import ModelFileError
from comfyserve.models.files import StateDict, read_state_dict, state_dict_bytes
from comfyserve.models.handles import DiffusionModel, LoraPatch, ModelFamily, TextEncoder
from comfyserve.models.memory import on_device

FAMILY_LABELS = {
    ModelFamily.SD1: "SD1.x",
    ModelFamily.SD1_INPAINT: "SD1.x inpainting",
    ModelFamily.SD2: "SD2.x",
    ModelFamily.SD2_V: "SD2.x",
    ModelFamily.SDXL: "SDXL",
    ModelFamily.SDXL_REFINER: "SDXL refiner",
}
_ROLES = (
    (re.compile(r"(.+)\.lora_down\.weight$"), "down"),
    (re.compile(r"(.+)\.lora_up\.weight$"), "up"),
    (re.compile(r"(.+)\.lora_A(?:\.default)?\.weight$"), "down"),
    (re.compile(r"(.+)\.lora_B(?:\.default)?\.weight$"), "up"),
    (re.compile(r"(.+)\.lora\.down\.weight$"), "down"),
    (re.compile(r"(.+)\.lora\.up\.weight$"), "up"),
    (re.compile(r"(.+)_lora\.down\.weight$"), "down"),
    (re.compile(r"(.+)_lora\.up\.weight$"), "up"),
    (re.compile(r"(.+)\.alpha$"), "alpha"),
)
_OLD_DIFFUSERS = (("processor.to_out", "to_out.0"), ("processor.", ""))
_patch_lock = threading.RLock()


@dataclass
class _Module:
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    keys: int = 0


def _group(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, _Module], int]:
    """LoRA modules by base name, and the number of keys that are not LoRA weights at all."""
    modules: dict[str, _Module] = defaultdict(_Module)
    stray = 0
    for key, tensor in sd.items():
        for pattern, role in _ROLES:
            match = pattern.match(key)
            if match:
                module = modules[match.group(1)]
                module.tensors[role] = tensor
                module.keys += 1
                break
        else:
            stray += 1
    return dict(modules), stray


def _index(module: torch.nn.Module, aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every spelling of a weight's module (dots, underscores, with or without ``text_model``) -> its name.

    ``aliases`` maps other parameter names (the UNet's LDM names) to the module's own.
    """
    index: dict[str, str] = {}
    names = {name: name for name, _ in module.named_parameters() if name.endswith(".weight")}
    names.update({ldm: own for ldm, own in (aliases or {}).items() if ldm.endswith(".weight")})
    for spelled, name in names.items():
        base = spelled[: -len(".weight")]
        for variant in (base, "text_model." + base):
            index[variant] = name
            index[variant.replace(".", "_")] = name
    return index


@dataclass(frozen=True)
class _Target:
    prefix: str  # "" for the UNet, "<i>." for text encoder i
    module: torch.nn.Module
    index: dict[str, str]


def _targets(model: DiffusionModel | None, clip: TextEncoder | None) -> dict[str, _Target]:
    """LoRA name prefixes (both spellings) -> what they patch."""
    targets: dict[str, _Target] = {}
    if model is not None:
        unet = _Target("", model.unet, _index(model.unet, model.extra.get("ldm_names", {})))
        for prefix in ("lora_unet_", "unet.", "base_model.model.", "model.diffusion_model."):
            targets[prefix] = unet
    if clip is not None:
        modules = [encoder.module for encoder in clip.encoders]
        kohya = {"lora_te_": 0} if len(modules) == 1 else {"lora_te1_": 0, "lora_te2_": 1}
        peft = {"text_encoder.": 0} if len(modules) == 1 else {"text_encoder.": 0, "text_encoder_2.": 1}
        if clip.family is ModelFamily.SDXL_REFINER:
            kohya, peft = {"lora_te2_": 0, "lora_te_": 0}, {"text_encoder_2.": 0, "text_encoder.": 0}
        indexes = [_index(m) for m in modules]
        for prefix, i in {**kohya, **peft}.items():
            targets[prefix] = _Target(f"{i}.", modules[i], indexes[i])
    return targets


def _delta_fits(up: torch.Tensor, down: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        up.shape[0] == weight.shape[0]
        and up.ndim >= 2
        and up.shape[1] == down.shape[0]
        and up.shape[0] * down[0].numel() == weight.numel()
    )


@dataclass
class _Resolved:
    unet: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)
    text: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)
    considered: int = 0
    unmatched: int = 0
    misshapen: int = 0


def _resolve(sd: Mapping[str, torch.Tensor], targets: dict[str, _Target], skip: tuple[str, ...]) -> _Resolved:
    """Deltas by target weight; modules whose names start with ``skip`` are left out of the count."""
    modules, stray = _group(sd)
    result = _Resolved(considered=stray, unmatched=stray)
    for base, module in modules.items():
        if skip and base.startswith(skip):
            continue
        result.considered += module.keys
        prefix = next((p for p in targets if base.startswith(p)), None)
        target = targets[prefix] if prefix is not None else None
        rest = base[len(prefix) :] if prefix is not None else ""
        for old, new in _OLD_DIFFUSERS:
            rest = rest.replace(old, new)
        name = target.index.get(rest) if target is not None else None
        up, down = module.tensors.get("up"), module.tensors.get("down")
        if target is None or name is None or up is None or down is None:
            result.unmatched += module.keys
            continue
        if not _delta_fits(up, down, target.module.get_parameter(name)):
            result.unmatched += module.keys
            result.misshapen += module.keys
            continue
        rank = down.shape[0]
        alpha = float(module.tensors["alpha"]) if "alpha" in module.tensors else float(rank)
        deltas = result.text if target.prefix else result.unet
        deltas[target.prefix + name] = (up, down, alpha / rank)
    return result


def load_lora_file(path: Path) -> StateDict:
    """A LoRA file's tensors, kept in the model cache like checkpoints."""

    def load(p: Path) -> tuple[StateDict, int]:
        sd = read_state_dict(p)
        return sd, state_dict_bytes(sd)

    return model_cache().get_or_load("lora", path, load)


def apply_lora(
    lora: Mapping[str, torch.Tensor],
    name: str,
    model: DiffusionModel | None,
    clip: TextEncoder | None,
    strength_model: float,
    strength_clip: float,
) -> tuple[DiffusionModel | None, TextEncoder | None]:
    """Clones of ``model`` / ``clip`` carrying the LoRA ``lora`` (a loaded file named ``name``) as a patch."""
    family = model.family if model is not None else clip.family if clip is not None else None
    if family is None:
        return model, clip
    text_prefixes = ("lora_te", "text_encoder") if clip is None else ()  # a model-only loader ignores them
    resolved = _resolve(lora, _targets(model, clip), text_prefixes)
    if resolved.considered == 0:
        raise ModelFileError(f"LoRA {name!r} holds no LoRA weights for this {FAMILY_LABELS[family]} model")
    if resolved.misshapen or resolved.unmatched * 2 > resolved.considered:
        raise ModelFileError(
            f"LoRA {name!r} does not match this {FAMILY_LABELS[family]} model: {resolved.unmatched} of its "
            f"{resolved.considered} keys have no target"
            + (f" ({resolved.misshapen} of them target weights of another shape)" if resolved.misshapen else "")
        )
    if model is not None and resolved.unet and strength_model != 0:
        model = model.clone(lora=(*model.lora, LoraPatch(name, strength_model, resolved.unet)))
    if clip is not None and resolved.text and strength_clip != 0:
        clip = clip.clone(lora=(*clip.lora, LoraPatch(name, strength_clip, resolved.text)))
    return model, clip


def lora_delta(up: torch.Tensor, down: torch.Tensor, scale: float, strength: float, like: torch.Tensor) -> torch.Tensor:
    """``strength * scale * up @ down`` shaped like the weight ``like``, in float32 on its device."""
    up32 = up.to(like.device, torch.float32).flatten(1)
    down32 = down.to(like.device, torch.float32).flatten(1)
    return ((up32 @ down32) * (strength * scale)).reshape(like.shape)


@contextlib.contextmanager
def merged(targets: Sequence[tuple[str, torch.nn.Module]], patches: Sequence[LoraPatch]) -> Iterator[None]:
    """Within the block, the parameters of ``targets`` (name prefix, module) include ``patches``."""
    if not patches:
        yield
        return
    with _patch_lock:
        totals: dict[tuple[int, str], torch.Tensor] = {}
        params: dict[tuple[int, str], torch.nn.Parameter] = {}
        for patch in patches:
            for key, (up, down, scale) in patch.deltas.items():
                for i, (prefix, module) in enumerate(targets):
                    if key.startswith(prefix):
                        name = key[len(prefix) :]
                        param = params.setdefault((i, name), module.get_parameter(name))
                        delta = lora_delta(up, down, scale, patch.strength, param)
                        totals[(i, name)] = totals[(i, name)] + delta if (i, name) in totals else delta
                        break
        originals = {slot: params[slot].data for slot in totals}
        try:
            for slot, delta in totals.items():
                original = originals[slot]
                params[slot].data = (original.float() + delta).to(original.dtype)
            yield
        finally:
            for slot, original in originals.items():
                params[slot].data = original


@contextlib.contextmanager
def patched(model: DiffusionModel) -> Iterator[torch.nn.Module]:
    """``with patched(model) as unet:`` — the UNet on the compute device with the model's LoRAs merged in.

    The sampling side calls the UNet only inside this block; the merge is undone when it ends.
    """
    with on_device(model.unet), merged([("", model.unet)], model.lora):
        yield model.unet
