"""The OpenAPI document, generated from the route table. ``python -m comfyserve.api.openapi`` rewrites
``docs/openapi.json`` (``--check`` only compares); a test keeps the committed file equal to the generated one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBase, HTTPBearer

from comfyserve import __version__
from comfyserve.api.app import build_app
from comfyserve.api.auth import ApiKeyAuthenticator
from comfyserve.api.gate import PUBLIC_ROUTES
from comfyserve.api.v2_errors import is_v2
from comfyserve.engine.catalog import Catalog
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
DESCRIPTION = (
    "Run ComfyUI API-format workflows as jobs. Every route but /v1/health needs an API key: in x-api-key, as "
    "Authorization: Bearer <key>, or as the password of Authorization: Basic. "
    "ComfyUI's own routes are also served under /api/; the Comfy API v2 routes (/v2/...) are called as "
    "/api/v2/.... Errors use ComfyUI's {error, node_errors} shape; "
    "request validation errors are 400, not 422. The /v2 routes answer errors in Comfy API v2's envelope "
    "{error: {code, message, details}}."
)


class _NoPorts:
    """Stands in for the ports: generating the document never calls the service."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the OpenAPI generator's service has no adapters")


def generate() -> dict[str, Any]:
    ports: Any = _NoPorts()
    service = JobService(ServiceDeps(blobs=ports, queue=ports, jobs=ports, events=ports, catalog=Catalog({})))
    app = build_app(service, ApiKeyAuthenticator({}))
    text = app.get_openapi_json_schema(
        title="comfyserve",
        version=__version__,
        description=DESCRIPTION,
        security_schemes={
            "apiKey": APIKey(name="x-api-key", **{"in": APIKeyIn.header}),  # type: ignore[arg-type]
            "bearer": HTTPBearer(),
            "basic": HTTPBase(scheme="basic"),
        },
        security=[{"apiKey": []}, {"bearer": []}, {"basic": []}],
    )
    document = cast(dict[str, Any], json.loads(text))
    _document_error_bodies(document)
    for path in PUBLIC_ROUTES:
        for operation in document["paths"].get(path, {}).values():
            operation["security"] = []
    return document


def _document_error_bodies(document: dict[str, Any]) -> None:
    """Powertools documents request validation failures as 422 and response validation failures with its
    own body; this API answers them with 400 and 500, both with :class:`ErrorBody`."""
    internal = {
        "description": "Internal error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    v2_internal = {
        "description": "Internal error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2ErrorEnvelope"}}},
    }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                responses.pop("422")
            if "500" in responses:
                responses["500"] = v2_internal if is_v2(path) else internal
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)


def render() -> str:
    return json.dumps(generate(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the OpenAPI document of the HTTP API.")
    parser.add_argument("path", nargs="?", type=Path, default=DOCUMENT)
    parser.add_argument("--check", action="store_true", help="fail if the file differs from the generated one")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is out of date: run python -m comfyserve.api.openapi", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
