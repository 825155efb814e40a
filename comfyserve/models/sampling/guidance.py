"""The denoiser a sampler calls: UNet predictions per conditioning entry, combined with classifier-free guidance.

At each sigma the active entries of each side are averaged by strength (ComfyUI sums ``strength * x0`` and
divides by the summed strengths), then ``uncond + cfg * (cond - uncond)``. With ``cfg == 1`` the negative
side is never evaluated. Entries whose tensors have equal shapes (and that hold the same ControlNet) run through
the UNet in one batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from comfyserve.models.handles import DiffusionModel
from comfyserve.models.sampling.conditioning import PreparedCond
from comfyserve.models.sampling.prediction import input_scale, to_denoised
from comfyserve.models.sampling.schedule import DiscreteSchedule

_EMPTY_WEIGHT = 1e-37


@dataclass
class _Batch:
    """UNet inputs of several conditioning entries, concatenated along the batch."""

    context: torch.Tensor
    added: dict[str, torch.Tensor] | None
    concat: torch.Tensor | None


class Guider:
    """``D(x, sigma)`` for a model, its prepared positive and negative conditioning, and a CFG scale."""

    def __init__(
        self,
        model: DiffusionModel,
        schedule: DiscreteSchedule,
        positive: list[PreparedCond],
        negative: list[PreparedCond],
        cfg: float,
    ) -> None:
        self.model = model
        self.schedule = schedule
        self.positive = positive
        self.negative = negative
        self.cfg = cfg
        self.skip_negative = math.isclose(cfg, 1.0)
        self.uncond: torch.Tensor | None = None  # the last unguided prediction, kept when keep_uncond() was called
        self.unet_dtype = next(model.unet.parameters()).dtype
        self._batches: dict[tuple[int, ...], _Batch] = {}

    def keep_uncond(self) -> None:
        """Keep each call's unguided (negative) prediction in :attr:`uncond`, evaluating it even at cfg 1 (what
        CFG++ samplers step on; ComfyUI's post-CFG hook with the cfg-1 shortcut disabled)."""
        self.skip_negative = False

    def last_uncond(self) -> torch.Tensor:
        assert self.uncond is not None, "keep_uncond() was not called, or the model was not called yet"
        return self.uncond

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        entries = [c for c in self.positive if c.active(sigma)]
        count_positive = len(entries)
        if not self.skip_negative:
            entries += [c for c in self.negative if c.active(sigma)]
        predictions = self._predict(x, sigma, entries)
        cond = _average(x, entries[:count_positive], predictions[:count_positive])
        if self.skip_negative:
            return cond
        uncond = self.uncond = _average(x, entries[count_positive:], predictions[count_positive:])
        return uncond + (cond - uncond) * self.cfg

    def _predict(self, x: torch.Tensor, sigma: float, entries: list[PreparedCond]) -> list[torch.Tensor]:
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, entry in enumerate(entries):
            groups.setdefault(entry.batch_key(), []).append(index)
        predictions: list[torch.Tensor] = [x] * len(entries)
        for indices in groups.values():
            outputs = self._run_unet(x, sigma, [entries[i] for i in indices])
            for index, output in zip(indices, outputs, strict=True):
                predictions[index] = output
        return predictions

    def _batch(self, entries: list[PreparedCond]) -> _Batch:
        """The entries' tensors concatenated along the batch, built once per set of entries."""
        key = tuple(id(entry) for entry in entries)
        if key not in self._batches:
            first = entries[0]
            added = None
            if first.added is not None:
                added = {k: torch.cat([e.added[k] for e in entries if e.added is not None]) for k in first.added}
            concat = None
            if first.concat is not None:
                concat = torch.cat([e.concat for e in entries if e.concat is not None])
            self._batches[key] = _Batch(torch.cat([e.context for e in entries]), added, concat)
        return self._batches[key]

    def _run_unet(self, x: torch.Tensor, sigma: float, entries: list[PreparedCond]) -> list[torch.Tensor]:
        prediction = self.model.sampling.prediction
        timestep = self.schedule.timestep(sigma)
        batch = self._batch(entries)
        model_input = (x * input_scale(prediction, sigma)).repeat(len(entries), 1, 1, 1)
        if batch.concat is not None:
            model_input = torch.cat([model_input, batch.concat], 1)
        timesteps = torch.full((model_input.shape[0],), timestep, device=x.device, dtype=torch.float32)
        control = entries[0].control
        residuals = {}
        if control is not None:
            residuals = control.unet_kwargs(
                model_input[:, : x.shape[1]].to(self.unet_dtype), sigma, timesteps, batch.context, batch.added
            )
        output = self.model.unet(
            model_input.to(self.unet_dtype),
            timesteps,
            encoder_hidden_states=batch.context,
            added_cond_kwargs=batch.added,
            **residuals,
        ).sample.float()
        return [to_denoised(prediction, x, chunk, sigma, timestep) for chunk in output.chunk(len(entries))]


def _average(x: torch.Tensor, entries: Sequence[PreparedCond], predictions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Strength-weighted mean of the side's predictions; zeros when no entry is active (as ComfyUI)."""
    if not entries:
        return torch.zeros_like(x)
    if len(entries) == 1 and entries[0].strength == 1.0:
        return predictions[0]
    total = sum(entry.strength for entry in entries) + _EMPTY_WEIGHT
    weighted = predictions[0] * entries[0].strength
    for entry, prediction in zip(entries[1:], predictions[1:], strict=True):
        weighted = weighted + prediction * entry.strength
    return weighted / total
