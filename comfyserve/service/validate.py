"""Validation against the node catalog (and the model inventory when one is configured); no torch involved."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from typing import Any

from comfyserve.engine.errors import WorkflowFormatError
from comfyserve.engine.prompt_format import workflow_from_json
from comfyserve.engine.validation import ValidationResult, make_error, validate_prompt
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Starting

PREFIX_INPUT = "filename_prefix"
MAX_PREFIX_CHARS = 200
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_workflow(
    deps: ServiceDeps,
    document: Any,
    *,
    input_names: Collection[str] | None = None,
    targets: list[str] | None = None,
    strict: bool = True,
) -> ValidationResult:
    """ComfyUI's validation result for ``document`` (a bare prompt or ``{"prompt": ...}``).

    ``input_names`` are the names ``LoadImage`` may use; ``None`` leaves them unchecked. ``strict`` requires
    every output to be valid; without it, as in ComfyUI, valid outputs run and ``node_errors`` lists the rest.
    Raises :class:`Starting` instead of refusing a workflow while the catalog only stands in for the fleet's.
    """
    try:
        prompt = parse_workflow(document)
    except WorkflowFormatError as exc:
        return format_error(exc)
    return check_prompt(deps, prompt, input_names=input_names, targets=targets, strict=strict)


def parse_workflow(document: Any) -> dict[str, Any]:
    """The one place where a submitted workflow document (a bare prompt or ``{"prompt": ...}``) becomes the
    prompt every later step works on; :class:`WorkflowFormatError` when it is not one."""
    return workflow_from_json(document)


def format_error(exc: WorkflowFormatError) -> ValidationResult:
    return ValidationResult(False, make_error("invalid_prompt", str(exc)), {}, [], {})


def check_prompt(
    deps: ServiceDeps,
    prompt: dict[str, Any],
    *,
    input_names: Collection[str] | None = None,
    targets: list[str] | None = None,
    strict: bool = True,
) -> ValidationResult:
    """:func:`check_workflow` for a prompt :func:`parse_workflow` returned."""
    result = validate_prompt(
        prompt,
        deps.catalog.specs,
        inventory=deps.inventory,
        input_names=set(input_names) if input_names is not None else None,
        targets=targets,
        strict=strict,
        limits=deps.settings.limits,
        node_classes=deps.catalog.node_classes,
    )
    if not result.ok and deps.catalog.starting:
        raise Starting(
            "The workers are starting: their node catalog is not published yet",
            details=f"retry in {Starting.retry_after_s} s; the stand-in catalog says: {result.error['message']}"
            if result.error
            else "",
        )
    return _check_prefixes(prompt, result) if result.ok else result


def prefix_problem(prefix: str) -> str | None:
    """Why an output ``filename_prefix`` cannot name the job's output files (a path out of its folder, a control
    character no blob key may hold), or ``None`` when it can."""
    if len(prefix) > MAX_PREFIX_CHARS:
        return f"longer than {MAX_PREFIX_CHARS} characters"
    if (bad := next((ch for ch in prefix if unicodedata.category(ch) in ("Cc", "Cs")), None)) is not None:
        return f"a control character (U+{ord(bad):04X}); no output file may be named with one"
    if prefix.startswith(("/", "\\")) or _DRIVE.match(prefix):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", prefix):
        return "a '..' segment"
    return None


def _check_prefixes(prompt: dict[str, Any], result: ValidationResult) -> ValidationResult:
    """Refuse output prefixes that cannot name an output (the worker would find out only after running the
    whole workflow); the node errors name each offending node, in ComfyUI's shape."""
    node_errors: dict[str, Any] = {}
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        value = inputs.get(PREFIX_INPUT) if isinstance(inputs, dict) else None
        if not isinstance(value, str) or (problem := prefix_problem(value)) is None:
            continue
        error = make_error(
            "value_not_valid",
            "Invalid filename_prefix",
            f"{PREFIX_INPUT}: {problem}",
            {"input_name": PREFIX_INPUT, "received_value": value[:MAX_PREFIX_CHARS]},
        )
        dependent = [node_id] if node_id in result.outputs else []
        node_errors[node_id] = {"errors": [error], "dependent_outputs": dependent, "class_type": node["class_type"]}
    if not node_errors:
        return result
    details = "\n".join(f"{e['message']}: {e['details']}" for entry in node_errors.values() for e in entry["errors"])
    error = make_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
    return ValidationResult(False, error, node_errors, [], result.prompt)
