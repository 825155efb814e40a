"""``comfy``: the parts of ComfyUI's ``comfy`` package that node packs use outside the model internals."""
