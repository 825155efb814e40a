"""Model files in tiers: the S3 models bucket (source of truth) → the EFS shared root → instance NVMe.

RAM and VRAM above them are the loaded-model caches of :mod:`comfyserve.models`. This package is light (no
torch, no numpy): the API's Lambda reads the published inventory through it, and the worker resolves files.
See docs/MODELS.md.
"""
