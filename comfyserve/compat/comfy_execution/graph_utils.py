"""``comfy_execution.graph_utils``: links, expansion graphs (``GraphBuilder``) and ``ExecutionBlocker``."""

from comfyserve.engine.graph_utils import ExecutionBlocker, GraphBuilder, is_link
from comfyserve.engine.graph_utils import GraphNode as Node

__all__ = ["ExecutionBlocker", "GraphBuilder", "Node", "is_link"]
