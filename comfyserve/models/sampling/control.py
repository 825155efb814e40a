"""ControlNet residuals for the UNet, as ComfyUI's ``ControlNet.get_control`` computes them.

A conditioning entry's ``"control"`` is a chain of ControlNets (each apply node's ControlNet holds the one
applied before it). Per UNet call every ControlNet of the chain whose sigma range holds the step runs on the
same scaled input, timestep, text context and SDXL embeddings as the UNet, with its hint resized to the latent
size × 8 (nearest-exact, centre crop) and repeated to the batch; its residuals are pooled (shuffle
ControlNets), multiplied by its strength and summed over the chain. The sums go to the diffusers UNet as
``down_block_additional_residuals`` / ``mid_block_additional_residual``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import ControlNet, DiffusionModel
from comfyserve.models.sampling.resize import repeat_to_batch, upscale
from comfyserve.models.sampling.schedule import DiscreteSchedule

HINT_SCALE = 8  # pixels per latent cell
HINT_UPSCALE = "nearest-exact"
UnetControl = dict[str, Any]  # the UNet's keyword arguments carrying the residuals (empty: no control)


@dataclass(eq=False)
class _Stage:
    """One ControlNet of a chain, ready for a run."""

    net: ControlNet
    hint: torch.Tensor
    sigma_start: float
    sigma_end: float

    def active(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start

    def residuals(
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, added: Mapping[str, Any] | None
    ) -> list[torch.Tensor]:
        """The down-block residuals followed by the middle block's, pooled and scaled by the strength."""
        repeats = x.shape[0] // self.hint.shape[0]
        down, mid = self.net.model(
            sample=x,
            timestep=timesteps.to(x.dtype),  # ComfyUI gives the ControlNet its own dtype's timestep (fp16 on GPUs)
            encoder_hidden_states=context,
            controlnet_cond=self.hint.repeat(repeats, 1, 1, 1),
            added_cond_kwargs=dict(added) if added is not None else None,
            return_dict=False,
        )
        out = []
        for residual in [*down, mid]:
            if self.net.global_average_pooling:
                residual = residual.mean(dim=(2, 3), keepdim=True).expand_as(residual)
            out.append(residual * self.net.strength)
        return out


@dataclass(eq=False)
class PreparedControl:
    """A conditioning entry's ControlNet chain on the sampling device; entries sharing one share UNet batches."""

    stages: list[_Stage]

    def unet_kwargs(
        self,
        x: torch.Tensor,
        sigma: float,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        added: Mapping[str, Any] | None,
    ) -> UnetControl:
        """The residuals of the chain's ControlNets active at ``sigma``, summed (the first applied first)."""
        total: list[torch.Tensor] | None = None
        for stage in self.stages:
            if not stage.active(sigma):
                continue
            current = stage.residuals(x, timesteps, context, added)
            total = current if total is None else [p + c for p, c in zip(total, current, strict=True)]
        if total is None:
            return {}
        return {"down_block_additional_residuals": tuple(total[:-1]), "mid_block_additional_residual": total[-1]}


def _check_fits(net: ControlNet, model: DiffusionModel) -> None:
    ours, theirs = net.model.config, getattr(model.unet, "config", None)
    for name in ("block_out_channels", "cross_attention_dim", "layers_per_block"):
        expected = getattr(theirs, name, None)
        if expected is not None and list(_as_list(getattr(ours, name))) != list(_as_list(expected)):
            raise NodeInputError(
                f"the ControlNet {net.source!r} does not fit this model ({name} {getattr(ours, name)} against "
                f"the model's {expected}): use a ControlNet made for the checkpoint's family"
            )


def _as_list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else [value]


@dataclass
class ControlPreparer:
    """Prepares each ControlNet chain of a run once, so conditioning entries holding the same ControlNet (both
    sides of ControlNetApplyAdvanced) share one :class:`PreparedControl`."""

    prepared: dict[int, PreparedControl] = field(default_factory=dict)

    def prepare(
        self,
        model: DiffusionModel,
        schedule: DiscreteSchedule,
        control: Any,
        latent: torch.Tensor,
        dtype: torch.dtype,
    ) -> PreparedControl | None:
        if control is None:
            return None
        if not isinstance(control, ControlNet):
            raise NodeInputError("a conditioning entry's control is not a CONTROL_NET")
        if id(control) not in self.prepared:
            stages = [_stage(net, model, schedule, latent, dtype) for net in control.chain()]
            self.prepared[id(control)] = PreparedControl(stages)
        return self.prepared[id(control)]


def _stage(
    net: ControlNet, model: DiffusionModel, schedule: DiscreteSchedule, latent: torch.Tensor, dtype: torch.dtype
) -> _Stage:
    if net.hint is None:
        raise NodeInputError(f"the ControlNet {net.source!r} has no hint image: apply it with a ControlNetApply node")
    _check_fits(net, model)
    height, width = latent.shape[2] * HINT_SCALE, latent.shape[3] * HINT_SCALE
    hint = upscale(net.hint.float(), width, height, HINT_UPSCALE, "center")
    hint = repeat_to_batch(hint, latent.shape[0]).to(latent.device, dtype)
    start, end = net.percent
    return _Stage(net, hint, schedule.percent_to_sigma(start), schedule.percent_to_sigma(end))


def fill_uncond_controls(positive: Sequence[Any], negative: Sequence[Any]) -> list[Any]:
    """``negative`` with the ControlNets of the positive entries marked ``control_apply_to_uncond``
    (ControlNetApply) handed to its entries, when none of them has one (ComfyUI's ``apply_empty_x_to_equal_area``):
    the i-th such ControlNet goes to negative entry ``i % len(negative)``, a later one replacing an earlier."""
    out = list(negative)
    extras = [_extras(entry) for entry in negative]
    if not out or any(e is not None and e.get("control") is not None for e in extras):
        return out
    nets = [
        e["control"]
        for e in map(_extras, positive)
        if e is not None and e.get("control_apply_to_uncond") is True and e.get("control") is not None
    ]
    for index, net in enumerate(nets):
        target = index % len(out)
        options = extras[target]
        if options is not None:
            out[target] = [negative[target][0], {**options, "control": net}]
    return out


def _extras(entry: Any) -> dict[str, Any] | None:
    """An entry's options; ``None`` for a malformed entry (which conditioning preparation then refuses)."""
    if isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[1], dict):
        return entry[1]
    return None


def control_modules(*conditionings: Any) -> list[torch.nn.Module]:
    """The ControlNet models the conditionings' entries use, each once (to hold on the device for a run)."""
    modules: dict[int, torch.nn.Module] = {}
    for conditioning in conditionings:
        for entry in conditioning if isinstance(conditioning, list | tuple) else ():
            control = (_extras(entry) or {}).get("control")
            for net in control.chain() if isinstance(control, ControlNet) else ():
                modules[id(net.model)] = net.model
    return list(modules.values())
