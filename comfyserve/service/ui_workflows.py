"""Workflows saved by ComfyUI's editor (the UI format), converted at the edge with the catalog the fleet
serves (``deps.catalog``: the published catalog, else the fallback). API-format documents pass unchanged."""

from __future__ import annotations

from typing import Any

from comfyserve.engine.validation import ErrorDict, make_error
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Invalid
from comfyserve.ui_workflow import UIWorkflowError, is_ui_workflow, to_api_prompt

MESSAGE = "Cannot convert the editor's workflow to the API format"


def api_prompt(deps: ServiceDeps, document: Any) -> Any:
    """``document`` itself, or the API prompt of an editor's workflow; :class:`Invalid` (400, ``invalid_prompt``)
    names the node that cannot be converted."""
    try:
        return convert(deps, document)
    except UIWorkflowError as exc:
        raise Invalid(MESSAGE, type_="invalid_prompt", details=str(exc)) from None


def convert(deps: ServiceDeps, document: Any) -> Any:
    return to_api_prompt(document, deps.catalog.specs) if is_ui_workflow(document) else document


def conversion_error(exc: UIWorkflowError) -> ErrorDict:
    return make_error("invalid_prompt", MESSAGE, str(exc))
