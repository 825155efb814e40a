import asyncio
import os

import comfy.model_management
import folder_paths
import torch
from comfy.comfy_types import IO, ComfyNodeABC, InputTypeDict
from comfy.utils import ProgressBar, common_upscale
from comfy_api.v0_0_2 import ComfyAPI
from comfy_execution.graph import ExecutionBlocker
from comfy_execution.graph_utils import GraphBuilder, is_link
from server import PromptServer

api = ComfyAPI()


class PackSolid(ComfyNodeABC):
    @classmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        return {
            "required": {
                "value": (IO.FLOAT, {"default": 0.5, "min": 0.0, "max": 1.0}),
                "size": (IO.INT, {"default": 8, "min": 1, "max": 64}),
            }
        }

    RETURN_TYPES = (IO.IMAGE,)
    FUNCTION = "make"
    CATEGORY = "_for_testing"

    def make(self, value, size):
        bar = ProgressBar(2)
        bar.update(1)
        bar.update(1)
        image = torch.full((1, size, size, 3), value)
        upscaled = common_upscale(image.movedim(-1, 1), size * 2, size * 2, "nearest-exact", "disabled")
        return (upscaled.movedim(1, -1),)


class PackCheckedFloat(ComfyNodeABC):
    """Passes anything on (IO.ANY); its async VALIDATE_INPUTS refuses negative numbers."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY, {})}}

    @classmethod
    async def VALIDATE_INPUTS(cls, value):
        await asyncio.sleep(0)
        if isinstance(value, (int, float)) and value < 0:
            return "negative values are not allowed"
        return True

    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "passthrough"
    CATEGORY = "_for_testing"

    def passthrough(self, value):
        return (value,)


class PackCountdown(ComfyNodeABC):
    """Expands into itself until ``count`` reaches 0 (raw links, UNIQUE_ID, DYNPROMPT, GraphBuilder)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"count": (IO.INT, {"default": 2})},
            "optional": {"image": (IO.IMAGE, {"rawLink": True})},
            "hidden": {"unique_id": "UNIQUE_ID", "dynprompt": "DYNPROMPT", "prompt": "PROMPT"},
        }

    RETURN_TYPES = (IO.IMAGE, IO.INT)
    FUNCTION = "step"
    CATEGORY = "_for_testing"

    def step(self, count, unique_id, dynprompt, prompt, image=None):
        assert image is None or is_link(image), "rawLink delivers the link itself"
        assert dynprompt.get_node(unique_id)["class_type"] == "PackCountdown"
        assert isinstance(prompt, dict)
        if count <= 0:
            if image is None:
                return (ExecutionBlocker("nothing to count down"), 0)
            return {"result": (image, 0), "expand": {}}  # the raw link resolves to the image it names
        graph = GraphBuilder()
        solid = graph.node("PackSolid", value=0.25 * count, size=4)
        nxt = graph.node("PackCountdown", count=count - 1, image=solid.out(0))
        return {"result": (solid.out(0), nxt.out(1)), "expand": graph.finalize()}


class PackReport(ComfyNodeABC):
    """An output node using folder_paths, model_management, PromptServer and ComfyAPI progress."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": (IO.IMAGE,), "number": (IO.ANY, {})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "_for_testing"

    async def report(self, images, number, unique_id):
        await api.execution.set_progress(value=0.5, max_value=1.0)
        PromptServer.instance.send_sync("pack.hello", {"node": unique_id, "pixels": int(images[0].numel())})
        comfy.model_management.throw_exception_if_processing_interrupted()
        out = folder_paths.get_output_directory()
        with open(os.path.join(out, "pack_report.txt"), "w") as handle:
            handle.write(str(number))
        return {
            "ui": {
                "text": [f"{images.shape[1]}x{images.shape[2]} {number}"],
                "device": [str(comfy.model_management.get_torch_device())],
                "checkpoints": folder_paths.get_filename_list("checkpoints"),
            }
        }


CLASSIC_NODES = {
    "PackSolid": PackSolid,
    "PackCheckedFloat": PackCheckedFloat,
    "PackCountdown": PackCountdown,
    "PackReport": PackReport,
}
