"""Async node functions and nodes that report progress (sync and async)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from comfyserve.engine.context import ProgressBar
from comfyserve.engine.graph_utils import GraphBuilder

SECONDS = {"default": 0.05, "min": 0.0, "max": 10.0, "step": 0.01}


class TestSleep:
    """Async: sleeps in ``steps`` slices, reporting each through a ProgressBar; passes ``value`` through."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"value": ("*",), "seconds": ("FLOAT", SECONDS)},
            "optional": {"steps": ("INT", {"default": 2, "min": 1})},
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "sleep"
    CATEGORY = "Testing/Async"

    async def sleep(self, value: Any, seconds: float, steps: int = 2) -> tuple[Any]:
        bar = ProgressBar(steps)
        for _ in range(steps):
            await asyncio.sleep(seconds / steps)
            bar.update(1)
        return (value,)


class TestSyncSleep:
    """Blocking sleep with progress after each slice (where a cancellation inside a node surfaces)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"value": ("*",), "seconds": ("FLOAT", SECONDS)},
            "optional": {"steps": ("INT", {"default": 2, "min": 1})},
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "sleep"
    CATEGORY = "Testing/Async"

    def sleep(self, value: Any, seconds: float, steps: int = 2) -> tuple[Any]:
        bar = ProgressBar(steps)
        for _ in range(steps):
            time.sleep(seconds / steps)
            bar.update(1)
        return (value,)


class TestAsyncError:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",), "error_after": ("FLOAT", SECONDS)}}

    RETURN_TYPES = ("*",)
    FUNCTION = "error_execution"
    CATEGORY = "Testing/Async"

    async def error_execution(self, value: Any, error_after: float) -> tuple[Any]:
        await asyncio.sleep(error_after)
        raise RuntimeError("Intentional async execution error for testing")


class TestAsyncTimeout:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",), "timeout": ("FLOAT", SECONDS), "operation_time": ("FLOAT", SECONDS)}}

    RETURN_TYPES = ("*",)
    FUNCTION = "timeout_execution"
    CATEGORY = "Testing/Async"

    async def timeout_execution(self, value: Any, timeout: float, operation_time: float) -> tuple[Any]:
        try:
            await asyncio.wait_for(asyncio.sleep(operation_time), timeout=timeout)
        except TimeoutError:
            raise RuntimeError(f"Operation timed out after {timeout} seconds") from None
        return (value,)


class TestAsyncLazyCheck:
    """Async ``check_lazy_status``: needs ``input1`` when ``condition`` holds, else ``input2``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "input1": ("*", {"lazy": True}),
                "input2": ("*", {"lazy": True}),
                "condition": ("BOOLEAN", {"default": True}),
            }
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "process"
    CATEGORY = "Testing/Async"

    async def check_lazy_status(self, condition: bool, input1: Any, input2: Any) -> list[str]:
        await asyncio.sleep(0)
        if condition:
            return ["input1"] if input1 is None else []
        return ["input2"] if input2 is None else []

    async def process(self, condition: bool, input1: Any, input2: Any) -> tuple[Any]:
        return (input1 if condition else input2,)


class TestParallelSleep:
    """An output node that expands into three async sleeps and averages their images."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        images = {f"image{i}": ("IMAGE",) for i in (1, 2, 3)}
        sleeps = {f"sleep{i}": ("FLOAT", SECONDS) for i in (1, 2, 3)}
        return {"required": {**images, **sleeps}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "parallel_sleep"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Async"

    def parallel_sleep(self, **inputs: Any) -> dict[str, Any]:
        g = GraphBuilder()
        sleeps = [g.node("TestSleep", value=inputs[f"image{i}"], seconds=inputs[f"sleep{i}"]) for i in (1, 2, 3)]
        average = g.node(
            "TestVariadicAverage", input1=sleeps[0].out(0), input2=sleeps[1].out(0), input3=sleeps[2].out(0)
        )
        return {"result": (average.out(0),), "expand": g.finalize()}


class TestDynamicAsyncGeneration:
    """Expands into ``count`` async sleeps (of ``value``, ``value + 1``...) and a chain that adds them up."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("INT", {"default": 1}),
                "count": ("INT", {"default": 3, "min": 1}),
                "seconds": ("FLOAT", SECONDS),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "generate"
    CATEGORY = "Testing/Async"

    def generate(self, value: int, count: int, seconds: float) -> dict[str, Any]:
        g = GraphBuilder()
        sleeps = [g.node("TestSleep", value=value + i, seconds=seconds) for i in range(count)]
        total = sleeps[0].out(0)
        for sleep in sleeps[1:]:
            total = g.node("TestIntMathOperation", a=total, b=sleep.out(0), operation="add").out(0)
        return {"result": (total,), "expand": g.finalize()}


NODE_CLASS_MAPPINGS = {
    "TestSleep": TestSleep,
    "TestSyncSleep": TestSyncSleep,
    "TestAsyncError": TestAsyncError,
    "TestAsyncTimeout": TestAsyncTimeout,
    "TestAsyncLazyCheck": TestAsyncLazyCheck,
    "TestParallelSleep": TestParallelSleep,
    "TestDynamicAsyncGeneration": TestDynamicAsyncGeneration,
}
NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in NODE_CLASS_MAPPINGS}
