"""Seeded noise, always drawn on the CPU so that a seed gives the same numbers on any device.

``initial_noise`` is ComfyUI's ``prepare_noise``; the step noise of ancestral samplers is a Gaussian stream
seeded with ``seed + 1`` (what ComfyUI's default noise sampler uses on the CPU); SDE samplers draw Brownian
increments from one Brownian path, so that noise over overlapping sub-steps is consistent.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

import torch

NoiseSampler = Callable[[float, float], torch.Tensor]

_SEED_SPACE = 2**64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed % _SEED_SPACE)


def initial_noise(latent: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """The starting noise for ``latent`` (CPU). With ``batch_index``, item ``i`` of the batch gets the
    ``batch_index[i]``-th draw of the seed's stream, so a batch split in pieces keeps each image's noise."""
    generator = _generator(seed)
    if batch_index is None:
        return torch.randn(latent.shape, generator=generator, dtype=latent.dtype)
    wanted = set(batch_index)
    draws: dict[int, torch.Tensor] = {}
    for index in range(max(wanted) + 1):
        draw = torch.randn([1, *latent.shape[1:]], generator=generator, dtype=latent.dtype)
        if index in wanted:
            draws[index] = draw
    return torch.cat([draws[index] for index in batch_index])


def gaussian_noise(like: torch.Tensor, seed: int) -> NoiseSampler:
    """Independent standard normal draws shaped like ``like``, one per call."""
    generator = _generator(seed + 1)

    def draw(sigma: float, sigma_next: float) -> torch.Tensor:
        noise = torch.randn(like.shape, generator=generator, dtype=torch.float32)
        return noise.to(device=like.device, dtype=like.dtype)

    return draw


class BrownianNoise:
    """Normalised increments ``(W(b) - W(a)) / sqrt(|b - a|)`` of one Brownian path ``W`` over sigma.

    The path is sampled lazily: a new time between two known ones is drawn from the Brownian bridge
    between them, a time outside extends the path with an independent increment. Queries come in a fixed
    order for a given sampler and schedule, so a seed always gives the same path.
    """

    def __init__(self, like: torch.Tensor, sigma_min: float, sigma_max: float, seed: int) -> None:
        self._like = like
        self._generator = _generator(seed)
        self._times = [sigma_min]
        self._values = [torch.zeros(like.shape, dtype=torch.float32)]
        self._value_at(sigma_max)

    def _normal(self) -> torch.Tensor:
        return torch.randn(self._like.shape, generator=self._generator, dtype=torch.float32)

    def _value_at(self, t: float) -> torch.Tensor:
        position = bisect.bisect_left(self._times, t)
        if position < len(self._times) and self._times[position] == t:
            return self._values[position]
        if position == 0 or position == len(self._times):
            edge = 0 if position == 0 else -1
            value = self._values[edge] + math.sqrt(abs(t - self._times[edge])) * self._normal()
        else:
            t0, t1 = self._times[position - 1], self._times[position]
            w0, w1 = self._values[position - 1], self._values[position]
            fraction = (t - t0) / (t1 - t0)
            spread = math.sqrt((t - t0) * (t1 - t) / (t1 - t0))
            value = w0 + fraction * (w1 - w0) + spread * self._normal()
        self._times.insert(position, t)
        self._values.insert(position, value)
        return value

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        increment = self._value_at(sigma_next) - self._value_at(sigma)
        noise = increment / math.sqrt(abs(sigma_next - sigma))
        return noise.to(device=self._like.device, dtype=self._like.dtype)
