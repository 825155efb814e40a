"""The stack speaks the settings contract (comfyserve.settings): every component's environment reads, with
the models the component itself uses, and no variable is one that nothing reads."""

from __future__ import annotations

from typing import Any

import pytest

from comfyserve.model_store.settings import ModelStoreSettings
from comfyserve.service.autoscale import ScalerTarget
from comfyserve.service.drop_folder import DropFolderSettings
from comfyserve.service.scaling import ScalingPolicy
from comfyserve.service.webhook_delivery import WebhookSettings
from comfyserve.settings import AwsResourceNames, CloudWorkerSettings, EnvSettings, ServiceSettings, settings_models
from infra.gpu_platform import GpuPlatform
from tests.infra.conftest import Synth, function_id, function_role, grants, only

READERS: dict[str, tuple[type[EnvSettings], ...]] = {
    "api": (AwsResourceNames, ServiceSettings),
    "completion": (AwsResourceNames,),
    "dead_letter": (AwsResourceNames,),
    "drop_folder": (AwsResourceNames, ServiceSettings, DropFolderSettings),
    "reconciler": (AwsResourceNames, ServiceSettings),
    "scaler": (AwsResourceNames, ScalingPolicy, ScalerTarget),
    "webhooks": (WebhookSettings,),
}
_OTHER_VARIABLES = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"}


def _as_text(environment: dict[str, Any]) -> dict[str, str]:
    """Deploy-time references (a queue URL, a table name) stand in as names."""
    return {
        name: value if isinstance(value, str) else f"deployed-{name.lower()}" for name, value in environment.items()
    }


def _function_environment(synth: Synth, handler: str) -> dict[str, str]:
    properties = synth.template["Resources"][function_id(synth, handler)]["Properties"]
    return _as_text(properties["Environment"]["Variables"])


def _worker_environment(synth: Synth) -> dict[str, str]:
    _, service = only(synth, "AWS::ECS::Service")
    task = synth.template["Resources"][service["TaskDefinition"]["Ref"]]["Properties"]
    (container,) = task["ContainerDefinitions"]
    return _as_text({item["Name"]: item["Value"] for item in container["Environment"]})


def _known_variables() -> set[str]:
    return {row[0] for model in settings_models() for row in model.env_table()} | _OTHER_VARIABLES


@pytest.mark.parametrize("handler", sorted(READERS))
def test_each_function_reads_its_settings_from_the_environment_the_stack_gives_it(synth: Synth, handler: str) -> None:
    environment = _function_environment(synth, handler)
    for model in READERS[handler]:
        model.from_env(environment)  # raises naming the variable when one is missing or unreadable
    assert set(environment) <= _known_variables()


def test_api_trusts_api_gateway_for_the_tenant(synth: Synth) -> None:
    environment = _function_environment(synth, "api")
    assert ServiceSettings.from_env(environment).auth == "api_gateway"


def test_submitters_validate_model_names_against_the_published_inventory(synth: Synth) -> None:
    for handler in ("api", "drop_folder"):
        store = ModelStoreSettings.from_env(_function_environment(synth, handler))
        assert store.models_bucket == "deployed-comfyserve_models_bucket"
        assert store.inventory_key == "inventory.json"


def test_scaler_is_capped_at_max_workers_and_the_drop_folder_names_its_inbox(synth: Synth) -> None:
    assert ScalingPolicy.from_env(_function_environment(synth, "scaler")).max_workers == 6
    assert AwsResourceNames.from_env(_function_environment(synth, "drop_folder")).inbox_bucket


@pytest.mark.parametrize("handler", ["api", "completion", "dead_letter", "drop_folder"])
def test_what_finishes_jobs_keeps_records_for_the_stacks_retention(synth: Synth, handler: str) -> None:
    """Whatever moves a job to a terminal state writes ``expires_at`` (the table's TTL) from this setting."""
    assert AwsResourceNames.from_env(_function_environment(synth, handler)).record_retention_days == 30
    assert CloudWorkerSettings.from_env(_worker_environment(synth)).record_retention_days == 30  # cancels queued jobs


def test_worker_reads_its_settings_and_the_stack_sizes_match(synth: Synth) -> None:
    environment = _worker_environment(synth)
    settings = CloudWorkerSettings.from_env(environment)
    # The image's CUDA build and the driver it needs: what the worker's start check compares the host with.
    assert (settings.cuda_version, settings.min_driver) == ("13.0", "580")
    assert {environment[name] for name in GpuPlatform.of_image().environment} == {"13.0", "580"}
    assert set(environment) <= _known_variables()
    assert str(settings.model_root) == "/mnt/models"
    assert str(settings.local_cache_dir) == "/var/cache/comfyserve/models"
    assert settings.local_cache_bytes == 200 * 1024**3
    assert settings.drain_timeout_s < 120  # the job in hand finishes within the ECS stop timeout
    assert settings.visibility_timeout_s == 120  # the queue's own visibility timeout
    assert settings.models_bucket and settings.dlq_url
    assert environment["POWERTOOLS_METRICS_NAMESPACE"] == "comfyserve"


def test_the_workers_and_the_scaler_share_the_fleets_backend_and_the_scaler_may_read_the_catalog(
    synth: Synth,
) -> None:
    scaler_environment = _function_environment(synth, "scaler")
    assert ScalerTarget.from_env(scaler_environment).backend == "builtin"
    for function in ("api", "drop_folder"):  # told, so that a comfyui fleet's start-up is a 503, not a 400
        assert _function_environment(synth, function)["COMFYSERVE_BACKEND"] == "builtin"
    assert CloudWorkerSettings.from_env(_worker_environment(synth)).backend == "builtin"
    catalog_key = AwsResourceNames.from_env(scaler_environment).catalog_key
    readable = grants(synth, function_role(synth, "scaler"), "s3:GetObject")
    assert sorted(resource["Fn::Join"][1][-1] for resource in readable if "Fn::Join" in resource) == sorted(
        ["/scaler/state.json", f"/{catalog_key}"]
    )
