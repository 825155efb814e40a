"""The API-format workflow as pydantic models, for the HTTP API's schema and documentation.

Validation reads the raw dict instead (see ``comfyserve.engine.prompt_format``), so that every malformed node
is answered in ComfyUI's error shape rather than as a schema error, and without importing pydantic.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class WorkflowNode(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_type: str = Field(description="The node class, as in the catalog (`GET /v1/nodes`).")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Constants, or `[node_id, slot]` links.")
    meta: dict[str, Any] | None = Field(default=None, alias="_meta", description="Ignored (UI titles).")


class Workflow(RootModel[dict[str, WorkflowNode]]):
    """A ComfyUI workflow in API format."""
