"""The single-file (LDM / ComfyUI / A1111) key layouts of SD1.x, SD2.x and SDXL checkpoints, as key -> shape.

The layouts are parameterised by widths so that one generator describes both a published full-size
checkpoint and a tiny test model with exactly the same keys: only the widths differ, never the structure
(levels, blocks, transformer depths, text-encoder layers). Tests build the full-size layout on the meta device
and check that diffusers' converter turns it into exactly the bundled full-size configs' parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfyserve.models.handles import ModelFamily

Shapes = dict[str, tuple[int, ...]]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_POSITIONS = 77
CLIP_VOCAB = 49408
SIZE_EMBED_DIM = 256  # SDXL embeds each size/crop/score number in 256 sinusoidal features


@dataclass(frozen=True)
class UNetDims:
    channels: tuple[int, ...]  # per level
    depth: tuple[int, ...]  # transformer blocks per level (0: no attention at that level)
    mid_depth: int
    context: int
    linear_proj: bool
    in_channels: int = 4
    adm: int = 0  # SDXL's pooled + size embedding width (label_emb); 0 for SD1/SD2
    layers: int = 2


@dataclass(frozen=True)
class ClipDims:
    width: int
    layers: int
    mlp: int
    projection: int = 0  # OpenCLIP text_projection width (0: none stored)


@dataclass(frozen=True)
class VaeDims:
    channels: tuple[int, ...]
    layers: int = 2
    latent: int = 4


@dataclass(frozen=True)
class FamilyDims:
    unet: UNetDims
    vae: VaeDims
    clip_l: ClipDims | None = None  # HF-layout CLIP-L (SD1, SDXL base)
    open_clip: ClipDims | None = None  # OpenCLIP layout (SD2: ViT-H, SDXL: ViT-bigG)


class _Writer:
    def __init__(self) -> None:
        self.shapes: Shapes = {}

    def norm(self, name: str, width: int) -> None:
        self.shapes[f"{name}.weight"] = (width,)
        self.shapes[f"{name}.bias"] = (width,)

    def linear(self, name: str, out: int, inp: int, bias: bool = True) -> None:
        self.shapes[f"{name}.weight"] = (out, inp)
        if bias:
            self.shapes[f"{name}.bias"] = (out,)

    def conv(self, name: str, out: int, inp: int, kernel: int) -> None:
        self.shapes[f"{name}.weight"] = (out, inp, kernel, kernel)
        self.shapes[f"{name}.bias"] = (out,)


def _unet_resblock(w: _Writer, name: str, inp: int, out: int, emb: int) -> None:
    w.norm(f"{name}.in_layers.0", inp)
    w.conv(f"{name}.in_layers.2", out, inp, 3)
    w.linear(f"{name}.emb_layers.1", out, emb)
    w.norm(f"{name}.out_layers.0", out)
    w.conv(f"{name}.out_layers.3", out, out, 3)
    if inp != out:
        w.conv(f"{name}.skip_connection", out, inp, 1)


def _spatial_transformer(w: _Writer, name: str, width: int, depth: int, d: UNetDims) -> None:
    w.norm(f"{name}.norm", width)
    for proj in ("proj_in", "proj_out"):
        if d.linear_proj:
            w.linear(f"{name}.{proj}", width, width)
        else:
            w.conv(f"{name}.{proj}", width, width, 1)
    for k in range(depth):
        block = f"{name}.transformer_blocks.{k}"
        for attn, kv in (("attn1", width), ("attn2", d.context)):
            w.linear(f"{block}.{attn}.to_q", width, width, bias=False)
            w.linear(f"{block}.{attn}.to_k", width, kv, bias=False)
            w.linear(f"{block}.{attn}.to_v", width, kv, bias=False)
            w.linear(f"{block}.{attn}.to_out.0", width, width)
        w.linear(f"{block}.ff.net.0.proj", 8 * width, width)
        w.linear(f"{block}.ff.net.2", width, 4 * width)
        for n in ("norm1", "norm2", "norm3"):
            w.norm(f"{block}.{n}", width)


def unet_shapes(d: UNetDims) -> Shapes:
    """The UNet's keys (``model.diffusion_model.*``) in the openaimodel.UNetModel layout."""
    w = _Writer()
    base, emb, last = d.channels[0], 4 * d.channels[0], len(d.channels) - 1
    w.linear("time_embed.0", emb, base)
    w.linear("time_embed.2", emb, emb)
    if d.adm:
        w.linear("label_emb.0.0", emb, d.adm)
        w.linear("label_emb.0.2", emb, emb)
    w.conv("input_blocks.0.0", base, d.in_channels, 3)
    width, skips, index = base, [base], 1
    for level, out in enumerate(d.channels):
        for _ in range(d.layers):
            _unet_resblock(w, f"input_blocks.{index}.0", width, out, emb)
            width = out
            if d.depth[level]:
                _spatial_transformer(w, f"input_blocks.{index}.1", width, d.depth[level], d)
            skips.append(width)
            index += 1
        if level != last:
            w.conv(f"input_blocks.{index}.0.op", width, width, 3)
            skips.append(width)
            index += 1
    _unet_resblock(w, "middle_block.0", width, width, emb)
    _spatial_transformer(w, "middle_block.1", width, d.mid_depth, d)
    _unet_resblock(w, "middle_block.2", width, width, emb)
    index = 0
    for level in range(last, -1, -1):
        out = d.channels[level]
        for j in range(d.layers + 1):
            _unet_resblock(w, f"output_blocks.{index}.0", width + skips.pop(), out, emb)
            width, sub = out, 1
            if d.depth[level]:
                _spatial_transformer(w, f"output_blocks.{index}.1", width, d.depth[level], d)
                sub = 2
            if level and j == d.layers:
                w.conv(f"output_blocks.{index}.{sub}.conv", width, width, 3)
            index += 1
    w.norm("out.0", base)
    w.conv("out.2", 4, base, 3)
    return {UNET_PREFIX + k: v for k, v in w.shapes.items()}


def _vae_resblock(w: _Writer, name: str, inp: int, out: int) -> None:
    w.norm(f"{name}.norm1", inp)
    w.conv(f"{name}.conv1", out, inp, 3)
    w.norm(f"{name}.norm2", out)
    w.conv(f"{name}.conv2", out, out, 3)
    if inp != out:
        w.conv(f"{name}.nin_shortcut", out, inp, 1)


def _vae_mid(w: _Writer, name: str, width: int) -> None:
    _vae_resblock(w, f"{name}.block_1", width, width)
    w.norm(f"{name}.attn_1.norm", width)
    for proj in ("q", "k", "v", "proj_out"):
        w.conv(f"{name}.attn_1.{proj}", width, width, 1)
    _vae_resblock(w, f"{name}.block_2", width, width)


def vae_shapes(d: VaeDims, prefix: str = VAE_PREFIX) -> Shapes:
    """The KL autoencoder's keys (``first_stage_model.*`` in a checkpoint, bare in a VAE file)."""
    w = _Writer()
    last = len(d.channels) - 1
    w.conv("encoder.conv_in", d.channels[0], 3, 3)
    width = d.channels[0]
    for i, out in enumerate(d.channels):
        for j in range(d.layers):
            _vae_resblock(w, f"encoder.down.{i}.block.{j}", width, out)
            width = out
        if i != last:
            w.conv(f"encoder.down.{i}.downsample.conv", width, width, 3)
    _vae_mid(w, "encoder.mid", width)
    w.norm("encoder.norm_out", width)
    w.conv("encoder.conv_out", 2 * d.latent, width, 3)
    w.conv("quant_conv", 2 * d.latent, 2 * d.latent, 1)
    w.conv("post_quant_conv", d.latent, d.latent, 1)
    w.conv("decoder.conv_in", width, d.latent, 3)
    _vae_mid(w, "decoder.mid", width)
    for i in range(last, -1, -1):
        out = d.channels[i]
        for j in range(d.layers + 1):
            _vae_resblock(w, f"decoder.up.{i}.block.{j}", width, out)
            width = out
        if i:
            w.conv(f"decoder.up.{i}.upsample.conv", width, width, 3)
    w.norm("decoder.norm_out", width)
    w.conv("decoder.conv_out", 3, width, 3)
    return {prefix + k: v for k, v in w.shapes.items()}


def clip_l_shapes(d: ClipDims, prefix: str) -> Shapes:
    """A transformers-layout CLIP text model (``<prefix>text_model.*``), as SD1 and SDXL store CLIP-L."""
    w = _Writer()
    w.shapes["text_model.embeddings.token_embedding.weight"] = (CLIP_VOCAB, d.width)
    w.shapes["text_model.embeddings.position_embedding.weight"] = (CLIP_POSITIONS, d.width)
    w.shapes["text_model.embeddings.position_ids"] = (1, CLIP_POSITIONS)
    for i in range(d.layers):
        layer = f"text_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w.linear(f"{layer}.self_attn.{proj}", d.width, d.width)
        w.norm(f"{layer}.layer_norm1", d.width)
        w.linear(f"{layer}.mlp.fc1", d.mlp, d.width)
        w.linear(f"{layer}.mlp.fc2", d.width, d.mlp)
        w.norm(f"{layer}.layer_norm2", d.width)
    w.norm("text_model.final_layer_norm", d.width)
    return {prefix + k: v for k, v in w.shapes.items()}


def open_clip_shapes(d: ClipDims, prefix: str) -> Shapes:
    """An OpenCLIP text tower (``<prefix>*``), as SD2 stores ViT-H and SDXL stores ViT-bigG."""
    w = _Writer()
    w.shapes["token_embedding.weight"] = (CLIP_VOCAB, d.width)
    w.shapes["positional_embedding"] = (CLIP_POSITIONS, d.width)
    for i in range(d.layers):
        block = f"transformer.resblocks.{i}"
        w.norm(f"{block}.ln_1", d.width)
        w.shapes[f"{block}.attn.in_proj_weight"] = (3 * d.width, d.width)
        w.shapes[f"{block}.attn.in_proj_bias"] = (3 * d.width,)
        w.linear(f"{block}.attn.out_proj", d.width, d.width)
        w.norm(f"{block}.ln_2", d.width)
        w.linear(f"{block}.mlp.c_fc", d.mlp, d.width)
        w.linear(f"{block}.mlp.c_proj", d.width, d.mlp)
    w.norm("ln_final", d.width)
    w.shapes["text_projection"] = (d.width, d.projection)
    w.shapes["logit_scale"] = ()
    return {prefix + k: v for k, v in w.shapes.items()}


SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_CLIP_PREFIX = "cond_stage_model.model."
XL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
XL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."


def checkpoint_shapes(family: ModelFamily, dims: FamilyDims) -> Shapes:
    """Every key of a single-file checkpoint of ``family`` with the given widths."""
    shapes = {**unet_shapes(dims.unet), **vae_shapes(dims.vae)}
    if family in (ModelFamily.SD1, ModelFamily.SD1_INPAINT):
        assert dims.clip_l is not None
        shapes.update(clip_l_shapes(dims.clip_l, SD1_CLIP_PREFIX))
    elif family in (ModelFamily.SD2, ModelFamily.SD2_V):
        assert dims.open_clip is not None
        shapes.update(open_clip_shapes(dims.open_clip, SD2_CLIP_PREFIX))
    elif family is ModelFamily.SDXL:
        assert dims.clip_l is not None and dims.open_clip is not None
        shapes.update(clip_l_shapes(dims.clip_l, XL_CLIP_L_PREFIX))
        shapes.update(open_clip_shapes(dims.open_clip, XL_CLIP_G_PREFIX))
    else:
        assert dims.open_clip is not None
        shapes.update(open_clip_shapes(dims.open_clip, REFINER_CLIP_G_PREFIX))
    return shapes


def _sd1(channels: tuple[int, ...], vae: tuple[int, ...], clip: ClipDims, in_channels: int = 4) -> FamilyDims:
    unet = UNetDims(channels, (1, 1, 1, 0), 1, clip.width, linear_proj=False, in_channels=in_channels)
    return FamilyDims(unet, VaeDims(vae), clip_l=clip)


def _sd2(channels: tuple[int, ...], vae: tuple[int, ...], clip: ClipDims) -> FamilyDims:
    return FamilyDims(UNetDims(channels, (1, 1, 1, 0), 1, clip.width, True), VaeDims(vae), open_clip=clip)


def _xl(channels: tuple[int, ...], vae: tuple[int, ...], clip_l: ClipDims, clip_g: ClipDims) -> FamilyDims:
    adm = clip_g.projection + 6 * SIZE_EMBED_DIM
    unet = UNetDims(channels, (0, 2, 10), 10, clip_l.width + clip_g.width, True, adm=adm)
    return FamilyDims(unet, VaeDims(vae), clip_l=clip_l, open_clip=clip_g)


def _refiner(channels: tuple[int, ...], vae: tuple[int, ...], clip_g: ClipDims) -> FamilyDims:
    adm = clip_g.projection + 5 * SIZE_EMBED_DIM
    unet = UNetDims(channels, (0, 4, 4, 0), 4, clip_g.width, True, adm=adm)
    return FamilyDims(unet, VaeDims(vae), open_clip=clip_g)


_FULL_VAE = (128, 256, 512, 512)
_TINY4 = (16, 32, 48, 48)

FULL_SIZE: dict[ModelFamily, FamilyDims] = {
    ModelFamily.SD1: _sd1((320, 640, 1280, 1280), _FULL_VAE, ClipDims(768, 12, 3072)),
    ModelFamily.SD1_INPAINT: _sd1((320, 640, 1280, 1280), _FULL_VAE, ClipDims(768, 12, 3072), in_channels=9),
    ModelFamily.SD2: _sd2((320, 640, 1280, 1280), _FULL_VAE, ClipDims(1024, 24, 4096, 1024)),
    ModelFamily.SD2_V: _sd2((320, 640, 1280, 1280), _FULL_VAE, ClipDims(1024, 24, 4096, 1024)),
    ModelFamily.SDXL: _xl((320, 640, 1280), _FULL_VAE, ClipDims(768, 12, 3072), ClipDims(1280, 32, 5120, 1280)),
    ModelFamily.SDXL_REFINER: _refiner((384, 768, 1536, 1536), _FULL_VAE, ClipDims(1280, 32, 5120, 1280)),
}
"""Published widths (SD 1.5, SD 2.1, SDXL 1.0 base and refiner)."""

TINY: dict[ModelFamily, FamilyDims] = {
    ModelFamily.SD1: _sd1(_TINY4, _TINY4, ClipDims(16, 12, 32)),
    ModelFamily.SD1_INPAINT: _sd1(_TINY4, _TINY4, ClipDims(16, 12, 32), in_channels=9),
    ModelFamily.SD2: _sd2(_TINY4, _TINY4, ClipDims(16, 24, 32, 16)),
    ModelFamily.SD2_V: _sd2(_TINY4, _TINY4, ClipDims(16, 24, 32, 16)),
    ModelFamily.SDXL: _xl((16, 32, 48), _TINY4, ClipDims(8, 12, 16), ClipDims(16, 32, 32, 16)),
    ModelFamily.SDXL_REFINER: _refiner(_TINY4, _TINY4, ClipDims(16, 32, 32, 16)),
}
"""Test widths: same structure, multiples of 16 (so GroupNorm uses 16 groups, see ``configs``); CLIP-L and
bigG differ in width so that the two SDXL encoders stay distinguishable."""

COMFYUI_LOADABLE: dict[ModelFamily, FamilyDims] = {
    ModelFamily.SD1: _sd1((320, 320, 320, 320), _FULL_VAE, ClipDims(768, 12, 3072)),
}
"""The smallest widths ComfyUI loads too: it detects SD1.5 by a 320-wide first UNet block and a 768-wide
context, and builds the text encoder and the VAE at their published sizes whatever the file holds, so those
two are full size (a 320-wide UNet at every level; about 640 MB in fp16)."""
