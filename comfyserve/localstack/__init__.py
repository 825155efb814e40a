"""The local stack: ``comfyserve serve``'s HTTP server, ComfyUI websocket and worker processes over the local
adapters (see ``stack.LocalStack``)."""
