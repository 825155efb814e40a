"""A test node pack in the spirit of ComfyUI's testing-pack, with plain Python values instead of tensors.

An IMAGE here is a list of floats, one uniform pixel value per batch element (1.0 white, 0.0 black); a MASK
likewise. That keeps every executor test fast and torch-free while exercising the same engine paths.
"""
