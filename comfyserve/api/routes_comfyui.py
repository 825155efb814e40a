"""ComfyUI's own API (reference §2) over the job service, so ComfyUI clients work unchanged; every route is
also served under ``/api/`` (the resolver strips that prefix). A tenant sees only its own prompts."""

from __future__ import annotations

import base64
from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query

from comfyserve.api.bodies import form_body, json_request, parse, raw_json
from comfyserve.api.docs import AUTH_ERRORS as AUTH
from comfyserve.api.docs import empty_ok, error_responses, ok
from comfyserve.api.gate import tenant_of
from comfyserve.api.models import ImageUploaded, InterruptRequest, PromptAccepted, QueueEdit
from comfyserve.api.multipart import FORM_DATA, FormField
from comfyserve.contracts.comfyui import prompt_id_of
from comfyserve.service.comfyui import HISTORY_LIMIT
from comfyserve.service.comfyui_uploads import ImageUpload
from comfyserve.service.errors import Invalid
from comfyserve.service.history import prompt_number
from comfyserve.service.inputs import FORMAT_NAMES, UPLOAD_TYPES
from comfyserve.service.job_service import JobService
from comfyserve.service.models import PromptRequest

TAGS = ["comfyui"]


def binary_response(content_type: str, data: bytes, headers: dict[str, str]) -> Response[str]:
    """A 200 carrying ``data`` base64-encoded, as API Gateway expects binary bodies (a bytes body would go
    through the JSON response validation)."""
    response = Response(200, content_type, base64.b64encode(data).decode(), headers=headers)
    response.base64_encoded = True
    return response


def empty_response() -> Response[str]:
    return Response(200, content_types.TEXT_PLAIN, "")


UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            FORM_DATA: {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": f"The image file ({FORMAT_NAMES}).",
                        },
                        "type": {"type": "string", "enum": list(UPLOAD_TYPES), "default": "input"},
                        "subfolder": {"type": "string", "default": ""},
                        "overwrite": {"type": "string", "description": "'true' or '1' replaces a file of that name."},
                    },
                }
            }
        },
    }
}


def image_upload(form: dict[str, FormField]) -> ImageUpload:
    """The upload a ``POST /upload/image`` form asks for (ComfyUI's fields)."""
    image = form.get("image")
    if image is None or image.filename is None:
        raise Invalid("No image uploaded", type_="invalid_upload", details="send the file in the form field 'image'")

    def text(name: str) -> str:
        field = form.get(name)
        return field.text if field is not None else ""

    return ImageUpload(
        filename=image.filename,
        data=image.data,
        type=text("type") or "input",
        subfolder=text("subfolder"),
        overwrite=text("overwrite") in ("true", "1"),
    )


def register(app: APIGatewayRestResolver, service: JobService) -> None:
    @app.post(
        "/prompt",
        summary="Queue a prompt (ComfyUI)",
        description="{prompt, client_id, extra_data, prompt_id?, partial_execution_targets?} as in ComfyUI.",
        tags=TAGS,
        openapi_extensions=json_request(PromptRequest),
        responses={**ok(200, PromptAccepted, "Queued"), **error_responses(400, *AUTH, 409, 429, 503)},
    )
    def post_prompt() -> PromptAccepted:
        document = raw_json(app)
        if not isinstance(document, dict) or "prompt" not in document:
            raise Invalid("No prompt provided", type_="no_prompt", details="No prompt provided")
        submitted = service.submit_prompt(tenant_of(app), parse(PromptRequest, document))
        record = submitted.record
        return PromptAccepted(
            prompt_id=prompt_id_of(record), number=prompt_number(record), node_errors=submitted.node_errors
        )

    @app.get("/prompt", summary="Queue size (ComfyUI)", tags=TAGS, responses=error_responses(*AUTH))
    def get_prompt() -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": service.queue_remaining(tenant_of(app))}}

    @app.get("/queue", summary="Running and pending prompts (ComfyUI)", tags=TAGS, responses=error_responses(*AUTH))
    def get_queue() -> dict[str, Any]:
        return service.queue(tenant_of(app))

    @app.post(
        "/queue",
        summary="Delete pending prompts (ComfyUI)",
        description="{'delete': [prompt ids]} and/or {'clear': true}; running prompts are not touched.",
        tags=TAGS,
        openapi_extensions=json_request(QueueEdit),
        responses={**empty_ok("Done"), **error_responses(400, *AUTH)},
    )
    def post_queue() -> Response[str]:
        edit = parse(QueueEdit, raw_json(app) or {})
        service.delete_queued(tenant_of(app), edit.delete, edit.clear)
        return empty_response()

    @app.post(
        "/interrupt",
        summary="Interrupt running prompts (ComfyUI)",
        tags=TAGS,
        openapi_extensions=json_request(InterruptRequest),
        responses={**empty_ok("Done"), **error_responses(400, *AUTH)},
    )
    def interrupt() -> Response[str]:
        request = parse(InterruptRequest, raw_json(app) or {})
        service.interrupt(tenant_of(app), request.prompt_id)
        return empty_response()

    @app.get(
        "/history",
        summary="Finished prompts (ComfyUI)",
        description=(
            "Finished prompts, oldest first, in ComfyUI's history shape: offset skips the oldest, max_items caps "
            "the window; max_items alone gives the last max_items."
        ),
        tags=TAGS,
        responses=error_responses(400, *AUTH),
    )
    def history(
        max_items: Annotated[int | None, Query(ge=1, le=HISTORY_LIMIT)] = None,
        offset: Annotated[int, Query(ge=-1)] = -1,
    ) -> dict[str, Any]:
        return service.history(tenant_of(app), max_items, offset)

    @app.get(
        "/history/<prompt_id>",
        summary="One finished prompt (ComfyUI)",
        description="{prompt_id: entry} once finished; {} while queued or running, and for unknown ids.",
        tags=TAGS,
        responses=error_responses(*AUTH),
    )
    def history_of(prompt_id: str) -> dict[str, Any]:
        return service.history_of(tenant_of(app), prompt_id)

    @app.post(
        "/upload/image",
        summary="Upload an input image (ComfyUI)",
        description="Stores the image in your uploads (every type); a LoadImage naming 'subfolder/name' uses it. "
        "A name that holds other content becomes 'name (1).ext' unless overwrite is 'true' or '1'.",
        tags=TAGS,
        openapi_extensions=UPLOAD_FORM,
        responses={**ok(200, ImageUploaded, "Stored"), **error_responses(400, *AUTH, 409, 415)},
    )
    def upload_image() -> ImageUploaded:
        stored = service.upload_image(tenant_of(app), image_upload(form_body(app)))
        return ImageUploaded(name=stored.name, subfolder=stored.subfolder, type=stored.type)

    @app.get(
        "/view",
        summary="An output or uploaded file (ComfyUI)",
        description="An output named as in history entries, or with type=input an upload; large files redirect "
        "to a presigned URL.",
        tags=TAGS,
        responses={
            200: {
                "description": "The file",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            307: {"description": "Redirect to a presigned URL of the file"},
            **error_responses(400, *AUTH, 404),
        },
    )
    def view(
        filename: Annotated[str, Query(max_length=1024)],
        type_: Annotated[str, Query(alias="type")] = "output",
        subfolder: Annotated[str, Query(max_length=1024)] = "",
    ) -> Response[str]:
        ref = service.find_output(tenant_of(app), filename, subfolder, type_)
        if ref.size > service.settings.view_inline_max_bytes:
            return Response(307, content_types.TEXT_PLAIN, "", headers={"Location": service.output_url(ref)})
        name = ref.filename.rsplit("/", 1)[-1]
        headers = {"Content-Disposition": f'filename="{name}"'}
        return binary_response(ref.content_type, service.output_bytes(ref), headers)

    @app.get("/object_info", summary="The node catalog (ComfyUI)", tags=TAGS, responses=error_responses(*AUTH))
    def object_info() -> dict[str, Any]:
        return service.object_info_for(tenant_of(app))

    @app.get(
        "/object_info/<node_class>",
        summary="One node class (ComfyUI)",
        description="{class: info}, or {} for an unknown class.",
        tags=TAGS,
        responses=error_responses(*AUTH),
    )
    def object_info_of(node_class: str) -> dict[str, Any]:
        name = unquote(node_class)
        info = service.object_info_for(tenant_of(app))
        return {name: info[name]} if name in info else {}
