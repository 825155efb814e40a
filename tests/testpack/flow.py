"""Lazy inputs, IS_CHANGED, ExecutionBlocker, list mapping and node expansion (loops included)."""

from __future__ import annotations

from typing import Any

from comfyserve.engine.graph import DynamicPrompt
from comfyserve.engine.graph_utils import ExecutionBlocker, GraphBuilder, is_link

STUB: dict[str, Any] = {"height": 8, "width": 8, "batch_size": 1}


class TestLazyMixImages:
    """``image1 * (1 - mask) + image2 * mask``, evaluating only the images the mask needs."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image1": ("IMAGE", {"lazy": True}),
                "image2": ("IMAGE", {"lazy": True}),
                "mask": ("MASK",),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mix"
    CATEGORY = "Testing/Nodes"

    def check_lazy_status(self, mask: list[float], image1: Any, image2: Any) -> list[str]:
        needed = []
        if image1 is None and (min(mask) != 1.0 or max(mask) != 1.0):
            needed.append("image1")
        if image2 is None and (min(mask) != 0.0 or max(mask) != 0.0):
            needed.append("image2")
        return needed

    def mix(self, mask: list[float], image1: list[float] | None, image2: list[float] | None) -> tuple[list[float]]:
        first = image1 or [0.0] * len(mask)
        second = image2 or [0.0] * len(mask)
        pairs = zip(first, second, mask, strict=False)
        return ([a * (1.0 - m) + b * m for a, b, m in pairs],)


class TestCustomIsChanged:
    """Passes ``value`` through; IS_CHANGED is NaN (always re-run) or False (cacheable)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",)}, "optional": {"should_change": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "custom_is_changed"
    CATEGORY = "Testing/Nodes"

    def custom_is_changed(self, value: Any, should_change: bool = False) -> tuple[Any]:
        return (value,)

    @classmethod
    def IS_CHANGED(cls, should_change: bool = False, **kwargs: Any) -> Any:
        return float("nan") if should_change else False


class TestIsChangedWithConstants:
    """Records what IS_CHANGED received (links must arrive as None); its result is ``value``."""

    seen: list[dict[str, Any]] = []

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "value": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "scale"
    CATEGORY = "Testing/Nodes"

    def scale(self, image: list[float], value: float) -> tuple[list[float]]:
        return ([v * value for v in image],)

    @classmethod
    def IS_CHANGED(cls, image: Any, value: float) -> float:
        cls.seen.append({"image": image, "value": value})
        return value


class TestExecutionBlocker:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "input": ("*",),
                "block": ("BOOLEAN", {"default": True}),
                "verbose": ("BOOLEAN", {"default": False}),
            }
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "execution_blocker"
    CATEGORY = "Testing/Flow"

    def execution_blocker(self, input: Any, block: bool, verbose: bool) -> tuple[Any]:
        if block:
            return (ExecutionBlocker("Blocked by node" if verbose else None),)
        return (input,)


class TestMakeListNode:
    """Its outputs are lists (OUTPUT_IS_LIST): downstream nodes run once per element."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value1": ("*",)}, "optional": {"value2": ("*",), "value3": ("*",)}}

    RETURN_TYPES = ("*",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make_list"
    CATEGORY = "Testing/Lists"

    def make_list(self, value1: Any, value2: Any = None, value3: Any = None) -> tuple[list[Any]]:
        return ([v for v in (value1, value2, value3) if v is not None],)


class TestIntRange:
    """``[start, start + 1, ... start + count - 1]`` as a list output."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"start": ("INT", {"default": 0}), "count": ("INT", {"default": 3, "min": 0})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"
    CATEGORY = "Testing/Lists"

    def make(self, start: int, count: int) -> tuple[list[int]]:
        return (list(range(start, start + count)),)


class TestListToAccumulation:
    """INPUT_IS_LIST: called once with whole lists; returns their sum and length."""

    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"values": ("INT",)}}

    RETURN_TYPES = ("INT", "INT")
    FUNCTION = "accumulate"
    CATEGORY = "Testing/Lists"

    def accumulate(self, values: list[int]) -> tuple[int, int]:
        return (sum(values), len(values))


class TestRebatchImages:
    """INPUT_IS_LIST: concatenates a list of image batches into one batch."""

    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "rebatch"
    CATEGORY = "Testing/Lists"

    def rebatch(self, images: list[list[float]]) -> tuple[list[float]]:
        return ([pixel for batch in images for pixel in batch],)


class TestMixedExpansionReturns:
    """Each list-mapped call returns another style: a tuple, ``{"result"}`` or ``{"result", "expand"}``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"input1": ("FLOAT",)}}

    RETURN_TYPES = ("IMAGE", "IMAGE")
    FUNCTION = "mixed_expansion_returns"
    CATEGORY = "Testing/Nodes"

    def mixed_expansion_returns(self, input1: float) -> Any:
        if input1 <= 0.1:
            return ([1.0], [0.0])
        if input1 <= 0.2:
            return {"result": ([0.0], [1.0])}
        g = GraphBuilder()
        mask = g.node("StubMask", value=0.3, **STUB)
        black = g.node("StubImage", content="BLACK", **STUB)
        white = g.node("StubImage", content="WHITE", **STUB)
        mix = g.node("TestLazyMixImages", image1=black.out(0), image2=white.out(0), mask=mask.out(0))
        return {"result": (mix.out(0), mix.out(0)), "expand": g.finalize()}


class TestDynamicDependencyCycle:
    """Expands into two mixes that each wait on the other: a cycle only visible at run time."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"input1": ("IMAGE",), "input2": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "dynamic_dependency_cycle"
    CATEGORY = "Testing/Nodes"

    def dynamic_dependency_cycle(self, input1: list[float], input2: list[float]) -> dict[str, Any]:
        g = GraphBuilder()
        mask = g.node("StubMask", value=0.5, **STUB)
        mix1 = g.node("TestLazyMixImages", image1=input1, mask=mask.out(0))
        mix2 = g.node("TestLazyMixImages", image1=mix1.out(0), image2=input2, mask=mask.out(0))
        mix1.set_input("image2", mix2.out(0))
        return {"result": (mix2.out(0),), "expand": g.finalize()}


class TestExpandWithIds:
    """Expands into one StubInt with the given raw id (no prefix), to provoke duplicate-id errors."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"node_id": ("STRING", {"default": "x"}), "value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "expand"
    CATEGORY = "Testing/Nodes"

    def expand(self, node_id: str, value: int) -> dict[str, Any]:
        graph = {node_id: {"class_type": "StubInt", "inputs": {"value": value}}}
        return {"result": ([node_id, 0],), "expand": graph}


class TestExpandSave:
    """Expands into a stub image and an output node (which the executor must schedule) and returns nothing."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"content": (["WHITE", "BLACK"],), "prefix": ("STRING", {"default": "expanded"})}}

    RETURN_TYPES = ()
    FUNCTION = "expand"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Nodes"

    def expand(self, content: str, prefix: str) -> dict[str, Any]:
        g = GraphBuilder()
        image = g.node("StubImage", content=content, **STUB)
        g.node("TestSaveImage", images=image.out(0), filename_prefix=prefix)
        return {"result": (), "expand": g.finalize()}


class TestForLoopOpen:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"remaining": ("INT", {"default": 1, "min": 1}), "value": ("INT", {"default": 0})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("FLOW_CONTROL", "INT")
    FUNCTION = "open"
    CATEGORY = "Testing/Flow"

    def open(self, remaining: int, value: int, unique_id: str) -> tuple[str, int]:
        return (unique_id, value)


class TestForLoopClose:
    """Runs the body between its open node and itself ``remaining`` times by re-expanding a copy of it."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"flow_control": ("FLOW_CONTROL", {"rawLink": True}), "value": ("INT", {})},
            "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "close"
    CATEGORY = "Testing/Flow"

    def close(self, flow_control: list[Any], value: int, dynprompt: DynamicPrompt, unique_id: str) -> Any:
        open_id = flow_control[0]
        remaining = dynprompt.get_node(open_id)["inputs"]["remaining"]
        if remaining <= 1:
            return (value,)
        body = _body_between(dynprompt, open_id, dynprompt.get_node(unique_id)["inputs"]["value"])
        g = GraphBuilder()
        new_open = g.node("TestForLoopOpen", "loop_open", remaining=remaining - 1, value=value)

        def relink(link: Any) -> Any:
            if not is_link(link):
                return link
            if link[0] == open_id:
                return new_open.out(link[1])
            return [g.prefix + link[0], link[1]] if link[0] in body else link

        for node_id in body:
            node = dynprompt.get_node(node_id)
            g.node(node["class_type"], node_id, **{k: relink(v) for k, v in node["inputs"].items()})
        value_link = relink(dynprompt.get_node(unique_id)["inputs"]["value"])
        close = g.node("TestForLoopClose", "loop_close", flow_control=new_open.out(0), value=value_link)
        return {"result": (close.out(0),), "expand": g.finalize()}


def _body_between(dynprompt: DynamicPrompt, open_id: str, link: Any) -> list[str]:
    """The nodes upstream of ``link`` down to (not including) ``open_id``, found without recursion."""
    body: list[str] = []
    stack = [link]
    while stack:
        current = stack.pop()
        if not is_link(current) or current[0] == open_id or current[0] in body:
            continue
        body.append(current[0])
        stack.extend(dynprompt.get_node(current[0])["inputs"].values())
    return body


NODE_CLASS_MAPPINGS = {
    "TestLazyMixImages": TestLazyMixImages,
    "TestCustomIsChanged": TestCustomIsChanged,
    "TestIsChangedWithConstants": TestIsChangedWithConstants,
    "TestExecutionBlocker": TestExecutionBlocker,
    "TestMakeListNode": TestMakeListNode,
    "TestIntRange": TestIntRange,
    "TestListToAccumulation": TestListToAccumulation,
    "TestRebatchImages": TestRebatchImages,
    "TestMixedExpansionReturns": TestMixedExpansionReturns,
    "TestDynamicDependencyCycle": TestDynamicDependencyCycle,
    "TestExpandWithIds": TestExpandWithIds,
    "TestExpandSave": TestExpandSave,
    "TestForLoopOpen": TestForLoopOpen,
    "TestForLoopClose": TestForLoopClose,
}
NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in NODE_CLASS_MAPPINGS}
