"""A tiny stand-in for diffusers' ``UNet2DConditionModel``: same call signature, cheap, and it records calls."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from comfyserve.models.handles import DiffusionModel, ModelFamily, SamplingSettings

CONTEXT_DIM = 8


class FakeUNet(torch.nn.Module):
    """Predicts ``0.5 * sample + 0.1 * mean(context)`` on the first four channels."""

    def __init__(self, in_channels: int = 4, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.5, dtype=dtype))
        self.config = SimpleNamespace(cross_attention_dim=CONTEXT_DIM, in_channels=in_channels)
        self.calls: list[dict[str, Any]] = []

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    ) -> SimpleNamespace:
        self.calls.append(
            {
                "sample": sample.clone(),
                "timestep": timestep.clone(),
                "context": encoder_hidden_states,
                "added": added_cond_kwargs,
            }
        )
        context = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=sample[:, :4] * self.weight + 0.1 * context)


def fake_model(
    family: ModelFamily = ModelFamily.SD1,
    in_channels: int = 4,
    prediction: str = "eps",
    dtype: torch.dtype = torch.float32,
) -> DiffusionModel:
    unet = FakeUNet(in_channels, dtype)
    return DiffusionModel(unet, family, SamplingSettings(prediction=prediction), in_channels=in_channels)


def cond(value: float, tokens: int = 77, **extras: Any) -> list[list[Any]]:
    return [[torch.full((1, tokens, CONTEXT_DIM), value), extras]]
