"""Validation against the node catalog (and the model inventory when one is configured); no torch involved."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from comfyserve.engine.errors import WorkflowFormatError
from comfyserve.engine.prompt_format import workflow_from_json
from comfyserve.engine.validation import ValidationResult, make_error, validate_prompt
from comfyserve.service.deps import ServiceDeps


def check_workflow(
    deps: ServiceDeps,
    document: Any,
    *,
    input_names: Collection[str] | None = None,
    targets: list[str] | None = None,
    strict: bool = True,
) -> ValidationResult:
    """ComfyUI's validation result for ``document`` (a bare prompt or ``{"prompt": ...}``); never raises.

    ``input_names`` are the names ``LoadImage`` may use; ``None`` leaves them unchecked. ``strict`` requires
    every output to be valid; without it, as in ComfyUI, valid outputs run and ``node_errors`` lists the rest.
    """
    try:
        prompt = workflow_from_json(document)
    except WorkflowFormatError as exc:
        return ValidationResult(False, make_error("invalid_prompt", str(exc)), {}, [], {})
    return validate_prompt(
        prompt,
        deps.catalog.specs,
        inventory=deps.inventory,
        input_names=set(input_names) if input_names is not None else None,
        targets=targets,
        strict=strict,
        limits=deps.settings.limits,
        node_classes=deps.catalog.node_classes,
    )
