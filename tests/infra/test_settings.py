"""Context settings: read once, by type, with clear errors (no synthesis needed)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import ConfigurationError, StackSettings
from tests.infra.conftest import synthesize


class _Context:
    """A stand-in for a construct node: only ``try_get_context``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def try_get_context(self, key: str) -> Any:
        return self._values.get(key)


def _read(**values: Any) -> StackSettings:
    node: Any = _Context(values)
    return StackSettings.from_context(node)


def test_defaults_are_the_documented_ones() -> None:
    settings = _read()
    assert settings == StackSettings()
    assert settings.instance_families == ("g6",) and settings.spot is False and settings.open_egress is False
    assert settings.vpc_id is None and settings.alarm_email is None
    assert settings.warm_pool == 1
    assert settings.backend == "builtin" and settings.worker_image is None
    assert settings.direct_capacity is True and settings.sizes_group is True
    assert settings.hot_models == () and settings.volume_throughput == 125 and settings.ssm_access is False


def test_command_line_strings_and_cdk_json_values_read_the_same() -> None:
    from_cli = _read(instance_families="g5, g6e", spot="true", max_workers="8", api_rate_limit="2.5", vpc_id="none")
    from_json = _read(instance_families=["g5", "g6e"], spot=True, max_workers=8, api_rate_limit=2.5, vpc_id=None)
    assert from_cli == from_json
    assert from_cli.instance_families == ("g5", "g6e") and from_cli.max_workers == 8
    assert _read(backend=" comfyui ").backend == "comfyui"


def test_the_scaler_sizes_a_group_only_with_one_family() -> None:
    assert _read(instance_families="g6,g5").sizes_group is False
    assert _read(direct_capacity="false").sizes_group is False


def test_hot_models_raise_the_volumes_throughput_unless_it_is_set() -> None:
    settings = _read(hot_models="checkpoints/sdxl.safetensors, loras/a.safetensors")
    assert settings.hot_models == ("checkpoints/sdxl.safetensors", "loras/a.safetensors")
    assert settings.volume_throughput == 500
    assert _read(hot_models="checkpoints/a.safetensors", root_volume_throughput="1000").volume_throughput == 1000


def test_spot_has_no_warm_pool() -> None:
    assert _read(spot="true", warm_pool_size="2").warm_pool == 0
    assert _read(warm_pool_size="2").warm_pool == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"instance_families": "p5"}, "instance_families: p5 not one of g5, g6, g6e"),
        ({"instance_families": "g6,g6"}, "instance_families: a family is named twice"),
        ({"max_workers": "0"}, "max_workers: must be at least 1"),
        ({"max_workers": "2", "warm_pool_size": "3"}, "warm_pool_size: must not exceed max_workers"),
        ({"alarm_email": "oncall"}, "alarm_email: 'oncall' is not an e-mail address"),
        ({"vpc_id": "default"}, "vpc_id: 'default' is not a VPC id"),
        ({"backend": "ComfyUI"}, "backend: 'ComfyUI' not one of builtin, comfyui"),
        ({"spot": "maybe"}, "context spot: cannot read 'maybe' as bool"),
        ({"max_workers": "four"}, "context max_workers: cannot read 'four' as int"),
        ({"hot_models": "sdxl.safetensors"}, 'hot_models: sdxl.safetensors not "<folder>/<name>"'),
        ({"root_volume_throughput": "2000"}, "root_volume_throughput: must be 125 to 1000 (MiB/s)"),
        ({"ssm_access": "sometimes"}, "context ssm_access: cannot read 'sometimes' as bool"),
    ],
)
def test_bad_settings_name_the_setting(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        _read(**values)
    assert message in str(raised.value)


def test_a_bad_context_value_is_one_line_without_a_traceback(tmp_path: Any) -> None:
    done = synthesize(tmp_path, {"max_workers": "four"})
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert errors == ["error: context max_workers: cannot read 'four' as int"]
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())  # nothing synthesized
