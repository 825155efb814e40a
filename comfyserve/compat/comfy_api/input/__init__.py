"""``comfy_api.input``: the types node packs annotate their inputs with (``VideoInput``, ``ImageInput`` …)."""

from __future__ import annotations

from typing import Any

import torch

from comfyserve.nodes.video_types import Video as VideoInput

ImageInput = torch.Tensor  # [batch, height, width, channels]
MaskInput = torch.Tensor  # [batch, height, width]
AudioInput = dict[str, Any]  # {"waveform": [batch, channels, samples], "sample_rate": int}
LatentInput = dict[str, Any]  # {"samples": [batch, channels, height, width], …}

__all__ = ["AudioInput", "ImageInput", "LatentInput", "MaskInput", "VideoInput"]
