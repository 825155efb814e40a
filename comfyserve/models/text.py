"""CLIPTextEncode: prompt -> CONDITIONING the way ComfyUI computes it.

Per encoder: the prompt's 77-token windows are encoded in one batch; the hidden states come from
``TextEncoder.stop_at_layer`` (-1 last, -2 penultimate ...; a layer beyond the encoder's depth means the last),
passed through the final layer norm for SD1/SD2 (not for SDXL). When any token is weighted the empty prompt is
encoded too and each weighted token becomes ``(z - z_empty) * w + z_empty``. SDXL concatenates CLIP-L's and
bigG's states (768 + 1280 = 2048 wide); the pooled output is the first window's (bigG's projection on SDXL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from comfyserve.models.device import policy
from comfyserve.models.handles import TextEncoder
from comfyserve.models.lora import merged
from comfyserve.models.memory import on_device
from comfyserve.models.prompt import Weighted, Windowing, empty_window, token_windows

Conditioning = list[list[Any]]


@dataclass
class ClipEncoder:
    """One text encoder of a CLIP handle with how it pads and whether hidden layers get the final norm."""

    module: Any  # transformers CLIPTextModel / CLIPTextModelWithProjection
    pad_token: int
    final_norm: bool
    missing_layers: int = 0  # top layers a file lacks (diffusers' SD2.x encoder: 23 of ViT-H's 24)

    @property
    def layers(self) -> int:
        return int(self.module.config.num_hidden_layers)

    def final_layer_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        owner = getattr(self.module, "text_model", self.module)
        result: torch.Tensor = owner.final_layer_norm(hidden)
        return result


@contextlib.contextmanager
def computed_in(module: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Within the block each layer of ``module`` runs with its weights cast to ``dtype`` just for its own
    call (ComfyUI's ``manual_cast``): fp16 weights compute in fp32 while at most one layer's copy exists. An
    embedding casts the rows it looked up instead (the same values, without a cast copy of its whole table:
    250 MB for SDXL's bigG)."""
    layers = [m for m in module.modules() if any(p.dtype != dtype for p in m.parameters(recurse=False))]
    if not layers:
        yield
        return
    stored: dict[torch.nn.Module, dict[str, torch.nn.Parameter | None]] = {}

    def cast(layer: torch.nn.Module, _args: Any) -> None:
        stored[layer] = dict(layer._parameters)
        for name, param in stored[layer].items():
            if param is not None and param.is_floating_point():
                layer._parameters[name] = torch.nn.Parameter(param.to(dtype), requires_grad=False)

    def restore(layer: torch.nn.Module, _args: Any, _out: Any) -> None:
        layer._parameters.update(stored.pop(layer))

    def cast_rows(_layer: torch.nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
        return out.to(dtype)

    handles = []
    for layer in layers:
        if isinstance(layer, torch.nn.Embedding):
            handles.append(layer.register_forward_hook(cast_rows))
        else:
            handles += [layer.register_forward_pre_hook(cast), layer.register_forward_hook(restore)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for layer, params in stored.items():  # a forward that raised midway
            layer._parameters.update(params)


def _encode_windows(encoder: ClipEncoder, windows: Sequence[Weighted], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = [[t for t, _ in window] for window in windows]
    weighted = any(w != 1.0 for window in windows for _, w in window)
    if weighted:
        tokens.append(empty_window(encoder.pad_token))
    ids = torch.tensor(tokens, device=policy().device)
    with torch.inference_mode(), computed_in(encoder.module, policy().text_compute_dtype):
        out = encoder.module(input_ids=ids, output_hidden_states=True)
        if layer < 0:  # counted from the published depth, as ComfyUI builds it whatever the file holds
            layer += encoder.missing_layers
        if layer >= 0 or abs(layer) > encoder.layers:
            hidden = out.last_hidden_state
        else:
            hidden = out.hidden_states[layer]
            if encoder.final_norm:
                hidden = encoder.final_layer_norm(hidden)
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    z = hidden.float().cpu()
    if weighted:
        empty, z = z[-1], z[:-1]
        weights = torch.tensor([[w for _, w in window] for window in windows], dtype=torch.float32)[..., None]
        z = (z - empty) * weights + empty
    return z.reshape(1, -1, z.shape[-1]), pooled[:1].float().cpu()


def prompt_windows(clip: TextEncoder, text: str) -> list[list[Weighted]]:
    """``text``'s token windows for each of ``clip``'s encoders."""
    return [
        token_windows(text, Windowing(tokenize, encoder.pad_token))
        for tokenize, encoder in zip(clip.tokenizers, clip.encoders, strict=True)
    ]


def sdxl_windows(clip: TextEncoder, text_g: str, text_l: str) -> list[list[Weighted]]:
    """SDXL base's windows with CLIP-L reading ``text_l`` and bigG ``text_g``; the side with fewer windows is
    padded with the empty prompt's window until both have as many (``CLIPTextEncodeSDXL``)."""
    (tokenize_l, tokenize_g), (clip_l, clip_g) = clip.tokenizers, clip.encoders
    windows_l = token_windows(text_l, Windowing(tokenize_l, clip_l.pad_token))
    windows_g = token_windows(text_g, Windowing(tokenize_g, clip_g.pad_token))
    for windows, encoder in ((windows_l, clip_l), (windows_g, clip_g)):
        empty = [(token, 1.0) for token in empty_window(encoder.pad_token)]
        windows.extend(list(empty) for _ in range(max(len(windows_l), len(windows_g)) - len(windows)))
    return [windows_l, windows_g]


def encode_windows(clip: TextEncoder, windows: Sequence[Sequence[Weighted]]) -> Conditioning:
    """CONDITIONING ``[[cond [1, 77*k, width], {"pooled_output": [1, pooled width]}]]`` from each encoder's
    windows, on the CPU, float32; the encoders' states are cut to the shortest and concatenated."""
    conds, pooled = [], None
    targets = [(f"{i}.", encoder.module) for i, encoder in enumerate(clip.encoders)]
    with on_device(*(module for _, module in targets)), merged(targets, clip.lora):
        for encoder, encoder_windows in zip(clip.encoders, windows, strict=True):
            cond, pooled = _encode_windows(encoder, encoder_windows, clip.stop_at_layer)
            conds.append(cond)
    length = min(c.shape[1] for c in conds)
    cond = torch.cat([c[:, :length] for c in conds], dim=-1)
    return [[cond, {"pooled_output": pooled}]]


def encode_text(clip: TextEncoder, text: str) -> Conditioning:
    """``text`` encoded by every encoder of ``clip`` (CLIPTextEncode)."""
    return encode_windows(clip, prompt_windows(clip, text))
