"""``comfy_execution.graph``: ``ExecutionBlocker`` and the ``DynamicPrompt`` a ``DYNPROMPT`` input receives."""

from comfyserve.engine.graph import DependencyCycleError, DynamicPrompt
from comfyserve.engine.graph_utils import ExecutionBlocker

__all__ = ["DependencyCycleError", "DynamicPrompt", "ExecutionBlocker"]
