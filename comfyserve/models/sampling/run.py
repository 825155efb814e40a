"""What every sampler is given: the denoiser, the sigmas, a noise source and a per-step callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from comfyserve.models.sampling.noise import NoiseSampler

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
StepCallback = Callable[[int], None]


@dataclass
class Run:
    """A sampler's inputs besides ``x``. Sigmas are Python floats, so no step waits on the device."""

    model: Denoiser
    sigmas: list[float]
    noise: NoiseSampler
    callback: StepCallback
    unguided: Callable[[], torch.Tensor] | None = None  # the last model call's unguided prediction (CFG++)
    percent_to_sigma: Callable[[float], float] | None = None  # the model schedule's (sa_solver's noise window)

    def uncond(self) -> torch.Tensor:
        """The unguided prediction of the last model call (samplers whose spec asks for it)."""
        assert self.unguided is not None, "this sampler's spec must set needs_uncond"
        return self.unguided()

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def denoise(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """The step's first model call, at ``sigmas[step]``, followed by the progress callback."""
        denoised = self.model(x, self.sigmas[step])
        self.callback(step)
        return denoised
