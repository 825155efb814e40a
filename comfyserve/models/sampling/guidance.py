"""The denoiser a sampler calls: UNet predictions per conditioning entry, combined with classifier-free guidance.

At each sigma the active entries of each side are averaged by strength (ComfyUI sums ``strength * x0`` and
divides by the summed strengths), then ``uncond + cfg * (cond - uncond)`` (or the model's patched CFG
function). With ``cfg == 1`` the negative side is never evaluated (its prediction taken as zeros). Entries whose
tensors have equal shapes (and that hold the same ControlNet) run through the UNet in one batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from comfyserve.models.handles import DiffusionModel
from comfyserve.models.sampling.cfg import guided
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
        cond, uncond = self._evaluate(x, sigma, [self.positive, None if self.skip_negative else self.negative])
        if not self.skip_negative:
            self.uncond = uncond
        return guided(self.model.cfg_function, x, sigma, cond, uncond, self.cfg)

    def _evaluate(self, x: torch.Tensor, sigma: float, sides: list[list[PreparedCond] | None]) -> list[torch.Tensor]:
        """Each side's prediction (its active entries averaged; zeros for a side that is ``None`` or has none
        active), all sides' entries batched together through the UNet."""
        active = [[c for c in side if c.active(sigma)] if side is not None else [] for side in sides]
        predictions = self._predict(x, sigma, [entry for entries in active for entry in entries])
        out, start = [], 0
        for entries in active:
            out.append(_average(x, entries, predictions[start : start + len(entries)]))
            start += len(entries)
        return out

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


class DualGuider(Guider):
    """ComfyUI's DualCFGGuider: ``cond1`` guided away from ``cond2`` by ``cfg1`` and ``cond2`` away from the
    negative by ``cfg2``; "regular" adds the two guidance terms, "nested" applies the second to the first's
    result. In the regular style, cfg2 of 1 skips the negative and cfg1 of 1 as well skips ``cond2``."""

    def __init__(
        self,
        model: DiffusionModel,
        schedule: DiscreteSchedule,
        conds: tuple[list[PreparedCond], list[PreparedCond], list[PreparedCond]],
        cfg1: float,
        cfg2: float,
        nested: bool,
    ) -> None:
        positive, self.middle, negative = conds
        super().__init__(model, schedule, positive, negative, cfg2)
        self.cfg1, self.cfg2, self.nested = cfg1, cfg2, nested
        self.skip_middle = self.skip_negative and math.isclose(cfg1, 1.0)

    def keep_uncond(self) -> None:
        super().keep_uncond()
        self.skip_middle = False

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        function = self.model.cfg_function
        if self.nested:
            negative, middle, positive = self._evaluate(x, sigma, [self.negative, self.middle, self.positive])
            self.uncond = middle
            text = guided(function, x, sigma, positive, middle, self.cfg1)
            return negative + self.cfg2 * (text - negative)
        sides = [None if self.skip_negative else self.negative, None if self.skip_middle else self.middle]
        negative, middle, positive = self._evaluate(x, sigma, [*sides, self.positive])
        self.uncond = negative
        return guided(function, x, sigma, middle, negative, self.cfg2) + (positive - middle) * self.cfg1


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
