"""ComfyUI's model loaders: checkpoints, VAEs and LoRAs from the job's model folders."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from comfyserve.engine import context
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.node_api import model_files
from comfyserve.model_store.errors import ModelStoreError
from comfyserve.model_store.store import invalidate, resolve
from comfyserve.model_store.tiers import ModelLoad, Tier, record
from comfyserve.models.cache import model_cache
from comfyserve.models.checkpoint import load_checkpoint, load_vae
from comfyserve.models.controlnet import load_controlnet
from comfyserve.models.errors import ModelFileError
from comfyserve.models.handles import Autoencoder, DiffusionModel, TextEncoder
from comfyserve.models.lora import apply_lora, load_lora_file
from comfyserve.models.split import load_clip_module, load_diffusion_model

T = TypeVar("T")
_STRENGTH = ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01})


def load_model(models: ModelInventory, folder: str, name: str, load: Callable[[Path], T]) -> T:
    """``load`` the file behind ``name``, resolved through the model tiers of ``models``; records the tier it
    came from ("ram" when it was already loaded) and the seconds taken for the job's timings."""
    started = time.perf_counter()
    try:
        with resolve(models, folder, name) as found:
            fetched = time.perf_counter()
            loads = model_cache().loads
            try:
                value = load(found.path)
            except ModelFileError:
                invalidate(models, folder, name)
                raise
    except FileNotFoundError as exc:
        raise NodeInputError(str(exc)) from None
    except ModelStoreError as exc:
        raise NodeInputError(str(exc)) from exc
    tier = found.tier if model_cache().loads != loads else Tier.RAM
    done = time.perf_counter()
    record(ModelLoad(model=f"{folder}/{name}", tier=tier, fetch_s=fetched - started, load_s=done - fetched))
    return value


def _load(folder: str, name: str, load: Callable[[Path], T]) -> T:
    return load_model(context.current().models, folder, name, load)


# What preloading calls for each folder (a folder without a loader is only made local).
FILE_LOADERS: dict[str, Callable[[Path], object]] = {
    "checkpoints": load_checkpoint,
    "vae": load_vae,
    "loras": load_lora_file,
    "controlnet": load_controlnet,
    "diffusion_models": load_diffusion_model,
    "text_encoders": load_clip_module,
}


class CheckpointLoaderSimple:
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = (
        "The model used for denoising latents.",
        "The CLIP model used for encoding text prompts.",
        "The VAE model used for encoding and decoding images to and from latent space.",
    )
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"ckpt_name": model_files("checkpoints", tooltip="The name of the checkpoint (model) to load.")}
        }

    def load_checkpoint(self, ckpt_name: str) -> tuple[DiffusionModel, TextEncoder, Autoencoder]:
        try:
            return _load("checkpoints", ckpt_name, load_checkpoint)
        except ModelFileError as exc:
            raise NodeInputError(str(exc)) from exc


class VAELoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"vae_name": model_files("vae")}}

    def load_vae(self, vae_name: str) -> tuple[Autoencoder]:
        try:
            return (_load("vae", vae_name, load_vae),)
        except ModelFileError as exc:
            raise NodeInputError(str(exc)) from exc


def _load_lora(
    model: DiffusionModel, clip: TextEncoder | None, lora_name: str, strength_model: float, strength_clip: float
) -> tuple[DiffusionModel | None, TextEncoder | None]:
    if strength_model == 0 and strength_clip == 0:
        return model, clip
    try:
        lora = _load("loras", lora_name, load_lora_file)
        return apply_lora(lora, lora_name, model, clip, strength_model, strength_clip)
    except ModelFileError as exc:
        raise NodeInputError(str(exc)) from exc


class LoraLoader:
    DESCRIPTION = (
        "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such "
        "as applying styles. Multiple LoRA nodes can be linked together."
    )
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The modified diffusion model.", "The modified CLIP model.")
    FUNCTION = "load_lora"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
                "lora_name": model_files("loras", tooltip="The name of the LoRA."),
                "strength_model": (
                    _STRENGTH[0],
                    {
                        **_STRENGTH[1],
                        "tooltip": "How strongly to modify the diffusion model. This value can be negative.",
                    },
                ),
                "strength_clip": (
                    _STRENGTH[0],
                    {**_STRENGTH[1], "tooltip": "How strongly to modify the CLIP model. This value can be negative."},
                ),
            }
        }

    def load_lora(
        self, model: DiffusionModel, clip: TextEncoder, lora_name: str, strength_model: float, strength_clip: float
    ) -> tuple[DiffusionModel | None, TextEncoder | None]:
        return _load_lora(model, clip, lora_name, strength_model, strength_clip)


class LoraLoaderModelOnly:
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "lora_name": model_files("loras"),
                "strength_model": _STRENGTH,
            }
        }

    def load_lora_model_only(self, model: DiffusionModel, lora_name: str, strength_model: float) -> tuple[Any]:
        return (_load_lora(model, None, lora_name, strength_model, 0)[0],)


NODE_CLASS_MAPPINGS = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "VAELoader": VAELoader,
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "VAELoader": "Load VAE",
    "LoraLoader": "Load LoRA",
}
