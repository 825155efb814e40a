"""Built-in node packs. Each module exports ``NODE_CLASS_MAPPINGS``; torch is imported here, never on the edge."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from comfyserve.engine.registry import NodeFilter, NodeRegistry, build_registry

BUILTIN_PACKS: tuple[str, ...] = (
    "comfyserve.nodes.primitives",
    "comfyserve.nodes.utility",
    "comfyserve.nodes.image",
    "comfyserve.nodes.image_transform",
    "comfyserve.nodes.image_resize",
    "comfyserve.nodes.batch",
    "comfyserve.nodes.mask",
    "comfyserve.nodes.mask_ops",
    "comfyserve.nodes.image_io",
    "comfyserve.nodes.animated",
    "comfyserve.nodes.video",
    "comfyserve.nodes.loaders",
    "comfyserve.nodes.split_loaders",
    "comfyserve.nodes.conditioning",
    "comfyserve.nodes.vae",
    "comfyserve.nodes.latent",
    "comfyserve.nodes.latent_batch",
    "comfyserve.nodes.sampling",
    "comfyserve.nodes.custom_sampling",
    "comfyserve.nodes.controlnet",
    "comfyserve.nodes.upscale_model",
    "comfyserve.nodes.conditioning_sdxl",
    "comfyserve.nodes.model_patches",
    "comfyserve.nodes.canny",
)


def builtin_registry(custom_nodes: Iterable[Path] = (), node_filter: NodeFilter | None = None) -> NodeRegistry:
    """A registry holding the built-in packs plus any ``custom_nodes`` directories."""
    return build_registry(BUILTIN_PACKS, custom_nodes=custom_nodes, node_filter=node_filter)
