"""Where loaded modules live between uses: on the compute device, under an LRU bound on its memory.

Modules are loaded to host memory and moved to the device when a job uses them (:func:`on_device`). When the
weights on the device exceed the budget, the least recently used modules that are not in use go back to the
host; the :mod:`cache` decides which loaded files stay in host memory at all. On the CPU nothing moves.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch

from comfyserve.models.device import DevicePolicy, policy
from comfyserve.models.handles import Autoencoder, ControlNet, DiffusionModel, TextEncoder


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


class DeviceResidency:
    """LRU set of modules held on the compute device."""

    def __init__(self, settings: DevicePolicy) -> None:
        self.settings = settings
        self._resident: OrderedDict[int, torch.nn.Module] = OrderedDict()
        self._in_use: dict[int, int] = {}
        self._lock = threading.RLock()

    @property
    def moves(self) -> bool:
        return self.settings.device.type != "cpu"

    def resident_bytes(self) -> int:
        return sum(module_bytes(m) for m in self._resident.values())

    @contextlib.contextmanager
    def use(self, *modules: torch.nn.Module) -> Iterator[None]:
        """Keep ``modules`` on the compute device for the duration of the block."""
        with self._lock:
            for module in modules:
                key = id(module)
                self._in_use[key] = self._in_use.get(key, 0) + 1
                if self.moves and key not in self._resident:
                    module.to(self.settings.device)
                self._resident[key] = module
                self._resident.move_to_end(key)
            self._evict()
        try:
            yield
        finally:
            with self._lock:
                for module in modules:
                    key = id(module)
                    self._in_use[key] -= 1
                    if not self._in_use[key]:
                        del self._in_use[key]

    def forget(self, module: torch.nn.Module) -> None:
        with self._lock:
            self._resident.pop(id(module), None)

    def _evict(self) -> None:
        total = self.resident_bytes()
        for key in list(self._resident):
            if total <= self.settings.device_budget:
                return
            if key in self._in_use:
                continue
            module = self._resident.pop(key)
            total -= module_bytes(module)
            if self.moves:
                module.to("cpu")
        if self.moves:
            torch.cuda.empty_cache()


_residency: DeviceResidency | None = None


def residency() -> DeviceResidency:
    global _residency
    if _residency is None:
        _residency = DeviceResidency(policy())
    return _residency


def on_device(*modules: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """``with on_device(unet): ...`` — the modules are on ``policy().device`` inside the block."""
    return residency().use(*modules)


def release(value: object) -> None:
    """Take the modules of evicted handles (or a tuple of them) off the device's books."""
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        modules: tuple[object, ...] = ()
        if isinstance(item, DiffusionModel):
            modules = (item.unet,)
        elif isinstance(item, TextEncoder):
            modules = item.encoders
        elif isinstance(item, Autoencoder):
            modules = (item.vae,)
        elif isinstance(item, ControlNet):
            modules = (item.model,)
        for module in modules:
            if isinstance(module, torch.nn.Module):
                residency().forget(module)
