"""Tenancy at the edge: API keys to tenants (local keys, or API Gateway's key id), and the settings object."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from comfyserve.api.app import build_app
from comfyserve.api.auth import (
    HOW_TO_SEND,
    ApiGatewayAuthenticator,
    ApiKeyAuthenticator,
    KeyConfigError,
    authenticator_from_settings,
)
from comfyserve.engine.errors import ComfyServeError
from comfyserve.service.errors import Forbidden, Unauthorized
from comfyserve.service.settings import ServiceSettings
from tests.api_stack import Stack, error_body, make_stack, workflow
from tests.apigw import resolve, rest_event


def event(headers: dict[str, str] | None = None, api_key_id: str | None = None) -> APIGatewayProxyEvent:
    return APIGatewayProxyEvent(rest_event("GET", "/v1/jobs", headers=headers, api_key_id=api_key_id))


def test_keys_from_pairs_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# tenant:key\nstudio:file-key-1\n\n")
    settings = ServiceSettings(api_keys=" alice : key-1 ,bob:key-2,", api_keys_file=keys_file)

    auth = authenticator_from_settings(settings)

    assert [auth.authenticate(event({"X-Api-Key": key})) for key in ("key-1", "key-2", "file-key-1")] == [
        "alice",
        "bob",
        "studio",
    ]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["alice:key-1", "no-colon-secret-key"], "API key entry 2 is not 'tenant:key'"),
        (["# comment", "", "tenant:"], "API key entry 1 is not 'tenant:key'"),
        (["bad tenant:key"], "API key entry 1: a tenant name is letters, digits, '_', '.', '-'"),
        (["sec ret:alice"], "API key entry 1: a tenant name is letters, digits, '_', '.', '-'"),
    ],
)
def test_malformed_key_entries_fail_at_start_without_quoting_them(pairs: list[str], message: str) -> None:
    with pytest.raises(KeyConfigError) as raised:
        ApiKeyAuthenticator.from_pairs(pairs)

    assert str(raised.value) == message
    assert isinstance(raised.value, ComfyServeError)  # the CLI prints it as one line


def test_an_unreadable_keys_file_is_one_line(tmp_path: Path) -> None:
    settings = ServiceSettings(api_keys_file=tmp_path / "missing.txt")

    with pytest.raises(KeyConfigError) as raised:
        authenticator_from_settings(settings)

    assert str(raised.value) == f"cannot read the API keys file {tmp_path / 'missing.txt'}: No such file or directory"


def test_missing_key_is_401_unknown_key_403() -> None:
    auth = ApiKeyAuthenticator.from_pairs(["alice:key-1"])

    with pytest.raises(Unauthorized):
        auth.authenticate(event())
    with pytest.raises(Forbidden):
        auth.authenticate(event({"x-api-key": "key-2"}))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "key-1"},
        {"Authorization": "Bearer key-1"},
        {"authorization": "bearer   key-1"},
        {"Authorization": basic("anyone", "key-1")},
        {"Authorization": basic("key-1", "")},
        {"x-api-key": "key-1", "Authorization": "Bearer other"},
    ],
)
def test_the_key_as_x_api_key_bearer_or_basic(headers: dict[str, str]) -> None:
    auth = ApiKeyAuthenticator.from_pairs(["alice:key-1"])

    assert auth.authenticate(event(headers)) == "alice"


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        ("Bearer", Unauthorized("Invalid Authorization header", details=HOW_TO_SEND)),
        ("Digest abc", Unauthorized("Invalid Authorization header", details=HOW_TO_SEND)),
        ("Basic !!!", Unauthorized("Invalid Authorization header", details="Basic credentials are not base64")),
        ("Bearer key-2", Forbidden("Invalid API key", details="the request names no known API key")),
    ],
)
def test_an_authorization_header_without_a_known_key(authorization: str, error: Exception) -> None:
    auth = ApiKeyAuthenticator.from_pairs(["alice:key-1"], anonymous_tenant="local")

    with pytest.raises(type(error)) as raised:
        auth.authenticate(event({"Authorization": authorization}))
    assert raised.value.args == error.args


def test_bearer_through_the_app_records_under_the_keys_tenant(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)

    headers = {"Authorization": "Bearer key-b-0123456789"}
    response = stack.call("POST", "/prompt", tenant=None, headers=headers, body={"prompt": workflow()})

    assert response.status == 200
    assert stack.jobs.get("tenant-b", response.json()["prompt_id"]) is not None


def test_anonymous_tenant_for_keyless_local_clients() -> None:
    auth = ApiKeyAuthenticator.from_pairs(["alice:key-1"], anonymous_tenant="local")

    assert auth.authenticate(event()) == "local"
    with pytest.raises(Forbidden):
        auth.authenticate(event({"x-api-key": "wrong"}))


def test_api_gateway_tenant_is_the_key_id() -> None:
    auth = ApiGatewayAuthenticator()

    assert auth.authenticate(event(api_key_id="k3y1d42")) == "k3y1d42"
    with pytest.raises(Unauthorized):
        auth.authenticate(event())


def test_api_gateway_tenancy_through_the_app(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    app = build_app(stack.service, ApiGatewayAuthenticator())

    def call(method: str, url: str, key_id: str | None, **kwargs: Any) -> Any:
        return resolve(app, rest_event(method, url, api_key_id=key_id, **kwargs))

    submitted = call("POST", "/v1/jobs", "key-one", body={"workflow": workflow()})
    job_id = submitted.json()["job_id"]

    assert submitted.status == 202
    assert call("GET", f"/v1/jobs/{job_id}", "key-one").status == 200
    assert call("GET", f"/v1/jobs/{job_id}", "key-two").status == 404
    assert call("GET", f"/v1/jobs/{job_id}", None).status == 401
    assert stack.jobs.get("key-one", job_id) is not None


def test_unknown_key_is_403_and_records_nothing(tmp_path: Path) -> None:
    stack: Stack = make_stack(tmp_path)

    response = stack.call(
        "POST", "/v1/jobs", tenant=None, headers={"x-api-key": "guess"}, body={"workflow": workflow()}
    )

    assert response.status == 403
    assert response.json() == error_body("forbidden", "Invalid API key", "the request names no known API key")
    assert stack.nothing_recorded()


def test_missing_key_wins_over_a_bad_body(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, max_body_bytes=10)

    response = stack.call("POST", "/v1/jobs", tenant=None, body="{not json", headers={"Content-Type": "text/plain"})

    assert response.status == 401
    assert response.header("WWW-Authenticate") == 'Bearer realm="comfyserve", Basic realm="comfyserve"'
    assert stack.nothing_recorded()


def test_settings_from_environment() -> None:
    settings = ServiceSettings.from_env(
        {
            "COMFYSERVE_MAX_BACKLOG": "none",
            "COMFYSERVE_RETRY_AFTER_S": "3",
            "COMFYSERVE_BACKLOG_CACHE_S": "0.5",
            "COMFYSERVE_ALLOW_PRIVATE_URLS": "true",
            "COMFYSERVE_API_KEYS_FILE": "/etc/keys",
            "COMFYSERVE_AUTH": "api_gateway",
            "OTHER": "ignored",
        },
        max_steps=50,
    )

    assert (settings.max_backlog, settings.retry_after_s, settings.backlog_cache_s) == (None, 3, 0.5)
    assert settings.allow_private_urls is True and settings.api_keys_file == Path("/etc/keys")
    assert settings.auth == "api_gateway" and settings.limits.max_steps == 50
    assert "api_keys=" not in repr(ServiceSettings(api_keys="a:secret"))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("COMFYSERVE_MAX_BODY_BYTES", "lots", "COMFYSERVE_MAX_BODY_BYTES: cannot read 'lots' as int"),
        (
            "COMFYSERVE_ALLOW_PRIVATE_URLS",
            "maybe",
            "COMFYSERVE_ALLOW_PRIVATE_URLS: cannot read 'maybe' as bool",
        ),
        ("COMFYSERVE_AUTH", "cookies", "COMFYSERVE_AUTH must be api_keys or api_gateway, not 'cookies'"),
    ],
)
def test_bad_settings_fail_with_the_variable_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceSettings.from_env({name: value})
