"""ComfyUI's model loaders: checkpoints, VAEs and LoRAs from the job's model folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfyserve.engine import context
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.node_api import model_files
from comfyserve.models.checkpoint import load_checkpoint, load_vae
from comfyserve.models.errors import ModelFileError
from comfyserve.models.handles import Autoencoder, DiffusionModel, TextEncoder
from comfyserve.models.lora import apply_lora, load_lora_file

_STRENGTH = ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01})


def model_path(folder: str, name: str) -> Path:
    try:
        return context.current().models.path(folder, name)
    except FileNotFoundError as exc:
        raise NodeInputError(str(exc)) from None


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
            return load_checkpoint(model_path("checkpoints", ckpt_name))
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
            return (load_vae(model_path("vae", vae_name)),)
        except ModelFileError as exc:
            raise NodeInputError(str(exc)) from exc


def _load_lora(
    model: DiffusionModel, clip: TextEncoder | None, lora_name: str, strength_model: float, strength_clip: float
) -> tuple[DiffusionModel | None, TextEncoder | None]:
    if strength_model == 0 and strength_clip == 0:
        return model, clip
    try:
        lora = load_lora_file(model_path("loras", lora_name))
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
