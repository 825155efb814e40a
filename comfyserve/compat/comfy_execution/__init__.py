"""``comfy_execution``: graph building and flow control for node expansion."""
