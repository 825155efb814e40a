"""Link type compatibility (ComfyUI's ``validate_node_input``), with ``"*"`` as a real wildcard."""

from __future__ import annotations

from typing import Any


def types_compatible(received: Any, expected: Any, *, strict: bool = False) -> bool:
    """Whether an output of type ``received`` may feed an input declared ``expected``.

    Comma-separated unions: non-strict needs a shared member, strict needs received ⊆ expected. A ``str``
    subclass with its own ``__ne__`` (ComfyUI's "any" types) is honoured. Unlike ComfyUI, a plain ``"*"``
    matches anything, so custom nodes that declare it work without special classes.
    """
    if not received != expected:  # noqa: SIM202 — honours custom __ne__ overrides, as ComfyUI does
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == "*" or expected == "*":
        return True
    received_set = {t.strip() for t in received.split(",")}
    expected_set = {t.strip() for t in expected.split(",")}
    if strict:
        return received_set <= expected_set
    return bool(received_set & expected_set)
