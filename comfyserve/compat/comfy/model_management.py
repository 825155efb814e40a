"""``comfy.model_management`` basics: the compute device, interruption and cache release."""

from __future__ import annotations

import torch

from comfyserve.engine import context
from comfyserve.engine.errors import InterruptedError_
from comfyserve.models.device import policy

InterruptProcessingException = InterruptedError_


def get_torch_device() -> torch.device:
    return policy().device


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return policy().device


def interrupt_current_processing(value: bool = True) -> None:
    """Accepted for compatibility: jobs are cancelled through the API, not from node code."""


def processing_interrupted() -> bool:
    """Whether the running job was cancelled."""
    ctx = context.active()
    return ctx is not None and ctx.cancel_check()


def throw_exception_if_processing_interrupted() -> None:
    ctx = context.active()
    if ctx is not None:
        ctx.check_cancelled()


def soft_empty_cache(force: bool = False) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
