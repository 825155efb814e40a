"""Seeded noise, always drawn on the CPU so that a seed gives the same numbers on any device.

``initial_noise`` is ComfyUI's ``prepare_noise``; the step noise of ancestral samplers is a Gaussian stream
seeded with ``seed`` (ComfyUI's ``default_noise_sampler``); SDE samplers draw Brownian increments from
torchsde's ``BrownianTree`` seeded with ``seed`` (ComfyUI's ``BrownianTreeNoiseSampler``). The random inpaint
noise of ``ddim`` is the first draw of the stream of ``seed + 1``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torchsde

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
    """Independent standard normal draws shaped like ``like``, one per call, from the stream of ``seed``
    (ComfyUI's ``default_noise_sampler`` with the sampler's seed)."""
    generator = _generator(seed)

    def draw(sigma: float, sigma_next: float) -> torch.Tensor:
        noise = torch.randn(like.shape, generator=generator, dtype=torch.float32)
        return noise.to(device=like.device, dtype=like.dtype)

    return draw


class BrownianNoise:
    """Normalised increments ``(W(b) - W(a)) / sqrt(|b - a|)`` of one Brownian path ``W`` over sigma.

    The path is torchsde's ``BrownianTree`` over ``[sigma_min, sigma_max]`` with the job's seed as its
    entropy, built on the CPU in float32 as ComfyUI's ``BrownianTreeNoiseSampler(cpu=True)`` builds it, so a
    seed gives ComfyUI's path; increments over overlapping sub-steps are consistent.
    """

    def __init__(self, like: torch.Tensor, sigma_min: float, sigma_max: float, seed: int) -> None:
        self._like = like
        zero = torch.zeros(like.shape, dtype=torch.float32)
        self._tree = torchsde.BrownianTree(
            torch.tensor(sigma_min, dtype=torch.float32),
            zero,
            torch.tensor(sigma_max, dtype=torch.float32),
            entropy=seed % _SEED_SPACE,
        )

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        a, b = torch.tensor([sigma, sigma_next], dtype=torch.float32).tolist()
        low, high = min(a, b), max(a, b)
        with warnings.catch_warnings():  # float32 ends a hair outside the tree's rounded ends are clamped
            warnings.simplefilter("ignore", UserWarning)
            increment = self._tree(low, high) * (1.0 if b > a else -1.0)
        noise = increment / math.sqrt(high - low)
        return noise.to(device=self._like.device, dtype=self._like.dtype)
