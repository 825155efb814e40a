"""ComfyUI's prompt syntax and CLIP token windows (the behaviour of ``comfy/sd1_clip.py``), in plain Python.

- ``(text)`` multiplies the weight by 1.1 per level of nesting; ``(text:1.3)`` sets it to 1.3 (not multiplied
  by the enclosing parentheses); ``\\(`` and ``\\)`` are literal parentheses; ``[text]`` has no special meaning.
  An unclosed ``(`` is literal text.
- Each weighted segment is tokenized whole. Tokens go into windows of 77: start token, up to 75 tokens, end
  token, padding. A segment shorter than 8 tokens that does not fit moves whole to the next window; a longer
  one is split across windows. CLIP-L pads with the end token, OpenCLIP (SD2's ViT-H, SDXL's bigG) with 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

WINDOW = 77
START_TOKEN = 49406
END_TOKEN = 49407
MAX_WORD_LENGTH = 8
_ESCAPES = (("\\)", "\0\1"), ("\\(", "\0\2"))

Weighted = list[tuple[int, float]]


def _split_parentheses(text: str) -> list[str]:
    """Top-level pieces: plain text and balanced ``( ... )`` groups."""
    pieces: list[str] = []
    current, depth = "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                pieces.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            current += char
            if depth == 0:
                pieces.append(current)
                current = ""
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for piece in _split_parentheses(text):
        if len(piece) < 2 or not (piece.startswith("(") and piece.endswith(")")):
            out.append((piece, weight))
            continue
        inner, inner_weight = piece[1:-1], weight * 1.1
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight = float(inner[colon + 1 :])
                inner = inner[:colon]
            except ValueError:
                pass
        out.extend(_weights(inner, inner_weight))
    return out


def parse_weights(text: str) -> list[tuple[str, float]]:
    """``"a (b:1.2) c"`` -> ``[("a ", 1.0), ("b", 1.2), (" c", 1.0)]`` with escapes restored."""
    for literal, marker in _ESCAPES:
        text = text.replace(literal, marker)
    segments = _weights(text, 1.0)
    restored = []
    for segment, weight in segments:
        for literal, marker in _ESCAPES:
            segment = segment.replace(marker, literal[1])
        restored.append((segment, weight))
    return restored


@dataclass(frozen=True)
class Windowing:
    """How one text encoder lays tokens out; ``tokenize`` maps text to token ids without start/end tokens."""

    tokenize: Callable[[str], list[int]]
    pad_token: int


def token_windows(text: str, windowing: Windowing) -> list[Weighted]:
    """The prompt as windows of 77 ``(token, weight)`` pairs, ComfyUI's way."""
    groups = [[(t, weight) for t in windowing.tokenize(segment)] for segment, weight in parse_weights(text) if segment]
    body = WINDOW - 1
    windows: list[Weighted] = []
    window: Weighted = [(START_TOKEN, 1.0)]
    for group in groups:
        is_large = len(group) >= MAX_WORD_LENGTH
        while group:
            if len(group) + len(window) <= body:
                window.extend(group)
                break
            room = body - len(window)
            if is_large:
                window.extend(group[:room])
                group = group[room:]
                window.append((END_TOKEN, 1.0))
            else:
                window.append((END_TOKEN, 1.0))
                window.extend([(windowing.pad_token, 1.0)] * room)
            windows.append(window)
            window = [(START_TOKEN, 1.0)]
    window.append((END_TOKEN, 1.0))
    window.extend([(windowing.pad_token, 1.0)] * (WINDOW - len(window)))
    windows.append(window)
    return windows


def empty_window(pad_token: int) -> list[int]:
    """The tokens of the empty prompt: the reference point that weights scale away from."""
    return [START_TOKEN, END_TOKEN] + [pad_token] * (WINDOW - 2)


@cache
def clip_tokenizer() -> Callable[[str], list[int]]:
    """The CLIP BPE tokenizer from the vocabulary bundled in the package (no network)."""
    from transformers import CLIPTokenizer

    from comfyserve.models.configs import TOKENIZER_DIR, config_root

    tokenizer = CLIPTokenizer.from_pretrained(str(config_root() / TOKENIZER_DIR), local_files_only=True)

    def tokenize(text: str) -> list[int]:
        ids: list[int] = tokenizer(text)["input_ids"]
        return ids[1:-1]

    return tokenize
