"""The two sides of the txt2img benchmarks: our node chain and diffusers' ``StableDiffusionPipeline``.

Both encode a prompt and a negative prompt and run Euler steps with classifier-free guidance on the very
same module objects; ``decode`` adds the VAE decode (both sides) or stops at the latent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from comfyserve.models.handles import Autoencoder, DiffusionModel, TextEncoder
from comfyserve.nodes.conditioning import CLIPTextEncode
from comfyserve.nodes.latent import EmptyLatentImage
from comfyserve.nodes.sampling import KSampler
from comfyserve.nodes.vae import VAEDecode

PROMPT = "a photograph of a lighthouse on a cliff at sunset"
NEGATIVE = "blurry, watermark"
CFG = 8.0
SEED = 42

Side = Callable[[int, int, int], object]  # (size, steps, batch) -> images or latents


def diffusers_side(
    model: DiffusionModel, clip: TextEncoder, vae: Autoencoder, *, decode: bool, device: str = "cpu"
) -> Side:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from comfyserve.models.configs import TOKENIZER_DIR, config_root

    tokenizer = CLIPTokenizer.from_pretrained(str(config_root() / TOKENIZER_DIR), local_files_only=True)
    tokenizer.model_max_length = 77
    pipe: Any = StableDiffusionPipeline(
        vae=vae.vae,
        text_encoder=clip.encoders[0].module,
        tokenizer=tokenizer,
        unet=model.unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="linspace",
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)

    def run(size: int, steps: int, batch: int) -> object:
        return pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            height=size,
            width=size,
            num_inference_steps=steps,
            num_images_per_prompt=batch,
            guidance_scale=CFG,
            generator=torch.Generator().manual_seed(SEED),
            output_type="pt" if decode else "latent",
        ).images

    return run


def comfyserve_side(model: DiffusionModel, clip: TextEncoder, vae: Autoencoder, *, decode: bool) -> Side:
    def run(size: int, steps: int, batch: int) -> object:
        positive = CLIPTextEncode().encode(clip, PROMPT)[0]
        negative = CLIPTextEncode().encode(clip, NEGATIVE)[0]
        latent = EmptyLatentImage().generate(size, size, batch)[0]
        sampled = KSampler().sample(model, SEED, steps, CFG, "euler", "normal", positive, negative, latent)[0]
        return VAEDecode().decode(vae, sampled)[0] if decode else sampled

    return run
