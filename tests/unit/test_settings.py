"""The settings contract: typed values from the environment, errors that name the variable, and one generated
page (docs/SETTINGS.md) that cannot drift from the models."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyserve.settings import (
    AwsResourceNames,
    CloudWorkerSettings,
    ServiceSettings,
    settings_markdown,
    settings_models,
    settings_table,
)

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = {
    "COMFYSERVE_BUCKET": "jobs",
    "COMFYSERVE_QUEUE_URL": "http://127.0.0.1:1/q",
    "COMFYSERVE_TABLE": "jobs-table",
    "COMFYSERVE_EVENT_BUS": "comfyserve",
}


def test_settings_page_is_generated_from_the_models() -> None:
    import comfyserve.service.webhook_delivery  # noqa: F401 (imported first: the page must not depend on that)

    page = (ROOT / "docs" / "SETTINGS.md").read_text()
    assert page == settings_markdown(), "docs/SETTINGS.md is stale: python -m comfyserve.settings > docs/SETTINGS.md"
    models = settings_models()
    assert models[:3] == [ServiceSettings, AwsResourceNames, CloudWorkerSettings]
    for model in models:
        for variable, *_ in model.env_table():
            assert f"`{variable}`" in page


def test_worker_settings_from_the_contract_names() -> None:
    settings = CloudWorkerSettings.from_env(
        {
            **RESOURCES,
            "COMFYSERVE_DLQ_URL": "http://127.0.0.1:1/dlq",
            "COMFYSERVE_MODELS_BUCKET": "models",
            "COMFYSERVE_MODEL_ROOT": "/efs/models",
            "COMFYSERVE_LOCAL_CACHE_DIR": "/nvme/cache",
            "COMFYSERVE_LOCAL_CACHE_BYTES": "1000",
            "COMFYSERVE_DRAIN_TIMEOUT_S": "30",
            "COMFYSERVE_JOB_TIMEOUT_S": "600",
            "COMFYSERVE_VISIBILITY_TIMEOUT_S": "90",
            "COMFYSERVE_PRELOAD": " checkpoints/a.safetensors, loras/b.safetensors ,",
            "COMFYSERVE_WARMUP_WORKFLOW": "/etc/warmup.json",
            "COMFYSERVE_BACKEND": "comfyui",
            "COMFYUI_DIR": "/opt/ComfyUI",
            "COMFYUI_PYTHON": "/opt/venv/bin/python",
            "ECS_AGENT_URI": "http://169.254.170.2/api/x",
            "OTHER": "ignored",
        }
    )
    assert settings.resources() == AwsResourceNames(
        bucket="jobs",
        queue_url="http://127.0.0.1:1/q",
        table="jobs-table",
        event_bus="comfyserve",
        dlq_url="http://127.0.0.1:1/dlq",
        models_bucket="models",
    )
    assert (settings.model_root, settings.local_cache_dir, settings.local_cache_bytes) == (
        Path("/efs/models"),
        Path("/nvme/cache"),
        1000,
    )
    assert (settings.drain_timeout_s, settings.job_timeout_s, settings.visibility_timeout_s) == (30.0, 600, 90)
    assert settings.preload == ("checkpoints/a.safetensors", "loras/b.safetensors")
    assert settings.warmup_workflow == Path("/etc/warmup.json")
    assert (settings.backend, settings.comfyui_dir, settings.comfyui_python) == (
        "comfyui",
        Path("/opt/ComfyUI"),
        Path("/opt/venv/bin/python"),
    )
    assert settings.ecs_agent_uri == "http://169.254.170.2/api/x"


def test_constructing_settings_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYSERVE_MAX_INPUTS", "3")
    assert ServiceSettings().max_inputs == 32
    assert ServiceSettings.from_env().max_inputs == 3


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "COMFYSERVE_BUCKET is required; COMFYSERVE_QUEUE_URL is required"),
        (
            {**RESOURCES, "COMFYSERVE_BACKEND": "tensorrt"},
            "COMFYSERVE_BACKEND must be builtin or comfyui, not 'tensorrt'",
        ),
        ({**RESOURCES, "COMFYSERVE_BACKEND": "comfyui"}, "COMFYSERVE_BACKEND=comfyui needs COMFYUI_DIR"),
        ({**RESOURCES, "COMFYSERVE_JOB_TIMEOUT_S": "soon"}, "COMFYSERVE_JOB_TIMEOUT_S: cannot read 'soon' as int"),
        (
            {**RESOURCES, "COMFYSERVE_RECEIVE_WAIT_S": "30"},
            "COMFYSERVE_RECEIVE_WAIT_S: input should be less than or equal to 20, not '30'",
        ),
        (
            {**RESOURCES, "COMFYSERVE_PRELOAD": "checkpoints/a.safetensors,b.safetensors"},
            "COMFYSERVE_PRELOAD: expected \"<folder>/<name>\" items, got 'b.safetensors'",
        ),
    ],
)
def test_bad_worker_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        CloudWorkerSettings.from_env(environ)
    assert str(caught.value).startswith(message)


def test_worker_page_lists_the_worker_settings() -> None:
    page = (ROOT / "docs" / "WORKER.md").read_text()
    block = page.split("<!-- worker-settings:begin -->\n", 1)[1].split("<!-- worker-settings:end -->", 1)[0]
    assert block.strip() == settings_table(CloudWorkerSettings), "regenerate the table in docs/WORKER.md"
