"""The committed OpenAPI document is the one the route table generates; the edge stays free of torch."""

from __future__ import annotations

import json
import subprocess
import sys

from comfyserve.api.openapi import DOCUMENT, generate, render


def test_committed_document_matches_the_route_table() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(), "run: python -m comfyserve.api.openapi"


def test_document_lists_every_route_with_our_error_shapes() -> None:
    document = generate()

    assert sorted(document["paths"]) == [
        "/embeddings",
        "/extensions",
        "/features",
        "/free",
        "/history",
        "/history/{prompt_id}",
        "/interrupt",
        "/jobs",
        "/jobs/cancel",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/models",
        "/models/{folder}",
        "/object_info",
        "/object_info/{node_class}",
        "/prompt",
        "/queue",
        "/system_stats",
        "/upload/image",
        "/v1/health",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/metrics",
        "/v1/nodes",
        "/v1/uploads",
        "/v1/validate",
        "/v2/assets",
        "/v2/assets/by-hash/{hash_text}",
        "/v2/assets/from-hash",
        "/v2/assets/{asset_id}",
        "/v2/assets/{asset_id}/content",
        "/v2/jobs",
        "/v2/jobs/{job_id}",
        "/v2/jobs/{job_id}/cancel",
        "/v2/jobs/{job_id}/events",
        "/v2/jobs/{job_id}/workflow",
        "/view",
    ]
    submit = document["paths"]["/v1/jobs"]["post"]
    assert sorted(submit["responses"]) == [
        "202",
        "400",
        "401",
        "403",
        "409",
        "413",
        "415",
        "429",
        "500",
        "503",
    ]
    assert submit["requestBody"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/JobSubmission"
    )
    comfy_paths = {path: item for path, item in document["paths"].items() if not path.startswith("/v2/")}
    assert "422" not in json.dumps(comfy_paths)  # request validation failures are 400 there
    v2_submit = document["paths"]["/v2/jobs"]["post"]["responses"]
    assert v2_submit["422"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/V2ErrorEnvelope"
    assert "HTTPValidationError" not in json.dumps(document)
    assert document["components"]["securitySchemes"] == {
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        "bearer": {"type": "http", "scheme": "bearer"},
        "basic": {"type": "http", "scheme": "basic"},
    }


def test_edge_modules_do_not_import_torch() -> None:
    code = (
        "import sys, comfyserve.api.app, comfyserve.api.wiring, comfyserve.service.job_service;"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
