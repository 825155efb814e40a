"""Which device models run on, in which dtype, and how much memory they may keep resident.

CUDA when available, else the CPU. On a GPU the UNet and text encoders run in fp16 and the VAE in bf16 where
the card supports it (fp16 VAEs overflow on SDXL), else fp32; on the CPU the UNet and VAE are fp32 and the text
encoders are kept in fp16 and computed in fp32 layer by layer, as ComfyUI keeps and runs them. Budgets can be
set with ``COMFYSERVE_VRAM_BUDGET_GB`` and ``COMFYSERVE_RAM_BUDGET_GB``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import torch

GIB = 1024**3
_VRAM_HEADROOM = 2 * GIB  # activations of a 1024² SDXL step, with margin
_RAM_SHARE = 0.5


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    model_dtype: torch.dtype
    vae_dtype: torch.dtype
    device_budget: int  # bytes of weights kept on the compute device
    ram_budget: int  # bytes of weights kept loaded in host memory (all tiers)
    text_dtype: torch.dtype = torch.float16  # text encoder weights as stored
    text_compute_dtype: torch.dtype = torch.float32  # text encoder activations (weights cast per layer)


def _env_gib(name: str) -> int | None:
    value = os.environ.get(name)
    return int(float(value) * GIB) if value else None


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@cache
def policy() -> DevicePolicy:
    """The process-wide device policy, decided once."""
    ram = _env_gib("COMFYSERVE_RAM_BUDGET_GB") or int(_host_memory() * _RAM_SHARE)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        total = torch.cuda.get_device_properties(device).total_memory
        vram = _env_gib("COMFYSERVE_VRAM_BUDGET_GB") or max(total - _VRAM_HEADROOM, total // 2)
        vae_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return DevicePolicy(device, torch.float16, vae_dtype, vram, ram, torch.float16, torch.float16)
    return DevicePolicy(torch.device("cpu"), torch.float32, torch.float32, ram, ram)
