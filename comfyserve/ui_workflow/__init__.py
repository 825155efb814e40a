"""ComfyUI's editor format (the saved "UI" workflow) converted to the API format, as the editor itself does."""

from comfyserve.ui_workflow.convert import to_api_prompt
from comfyserve.ui_workflow.document import UIWorkflowError, is_ui_workflow

__all__ = ["UIWorkflowError", "is_ui_workflow", "to_api_prompt"]
