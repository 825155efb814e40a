"""The ComfyUI backend: an unmodified ComfyUI run by the worker as a managed child process, driven over its own
HTTP and websocket API on loopback (no torch in this process).

``ComfyUIConfig`` says where ComfyUI is and how to start it; ``ComfyUIBackend`` implements the worker's
``Backend`` port on top of ``ComfyUIProcess`` (start, readiness, restart, stop) and ``run_prompt`` (one job).
"""

from comfyserve.worker.comfyui.backend import ComfyUIBackend
from comfyserve.worker.comfyui.config import ComfyUIConfig, ComfyUIError, ComfyUIRestarted

__all__ = ["ComfyUIBackend", "ComfyUIConfig", "ComfyUIError", "ComfyUIRestarted"]
