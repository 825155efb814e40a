"""Who is calling: every request names a tenant through its API key (``x-api-key``).

Locally an :class:`ApiKeyAuthenticator` holds the keys (``COMFYSERVE_API_KEYS="tenant:key,…"`` or a keys
file, one ``tenant:key`` a line); behind API Gateway, which has already checked the key against its usage
plans, the tenant is the request's API key id. A missing key is 401, an unknown one 403.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from comfyserve.contracts.jobs import TENANT_PATTERN
from comfyserve.service.errors import Forbidden, Unauthorized
from comfyserve.service.settings import ServiceSettings

API_KEY_HEADER = "x-api-key"
_tenant = re.compile(TENANT_PATTERN)


class Authenticator(Protocol):
    def authenticate(self, event: BaseProxyEvent) -> str:
        """The caller's tenant; :class:`Unauthorized` without a key, :class:`Forbidden` with a bad one."""
        ...


def _missing_key() -> Unauthorized:
    return Unauthorized("Missing API key", details=f"send your API key in the {API_KEY_HEADER} header")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeyAuthenticator:
    """Keys are kept only as SHA-256 digests (a lookup by digest leaks nothing about the keys)."""

    def __init__(self, tenants_by_key: Mapping[str, str], anonymous_tenant: str | None = None) -> None:
        for tenant in [*tenants_by_key.values(), *([anonymous_tenant] if anonymous_tenant else [])]:
            if not _tenant.match(tenant):
                raise ValueError(f"invalid tenant name {tenant!r} (letters, digits, '_', '.', '-')")
        self._tenants = {_digest(key): tenant for key, tenant in tenants_by_key.items()}
        self._anonymous = anonymous_tenant

    @classmethod
    def from_pairs(cls, pairs: Iterable[str], anonymous_tenant: str | None = None) -> ApiKeyAuthenticator:
        """From ``tenant:key`` strings (blank ones and ``#`` comments skipped)."""
        keys: dict[str, str] = {}
        for pair in pairs:
            text = pair.strip()
            if not text or text.startswith("#"):
                continue
            tenant, sep, key = text.partition(":")
            if not sep or not tenant.strip() or not key.strip():
                raise ValueError(f"an API key entry is 'tenant:key', got {text[:20]!r}…")
            keys[key.strip()] = tenant.strip()
        return cls(keys, anonymous_tenant)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ApiKeyAuthenticator:
        pairs = settings.api_keys.split(",")
        if settings.api_keys_file is not None:
            pairs += Path(settings.api_keys_file).read_text(encoding="utf-8").splitlines()
        return cls.from_pairs(pairs, settings.anonymous_tenant)

    def authenticate(self, event: BaseProxyEvent) -> str:
        key = event.headers.get(API_KEY_HEADER)
        if not key:
            if self._anonymous is None:
                raise _missing_key()
            return self._anonymous
        tenant = self._tenants.get(_digest(key))
        if tenant is None:
            raise Forbidden("Invalid API key", details=f"the {API_KEY_HEADER} header names no known key")
        return tenant


class ApiGatewayAuthenticator:
    """The tenant is the id of the API key API Gateway validated (the key itself never reaches us)."""

    def authenticate(self, event: BaseProxyEvent) -> str:
        identity = (event.get("requestContext") or {}).get("identity") or {}
        key_id = identity.get("apiKeyId")
        if not key_id:
            raise _missing_key()
        if not _tenant.match(key_id):
            raise Forbidden("Invalid API key", details="the API key id is not a valid tenant name")
        return str(key_id)


def authenticator_from_settings(settings: ServiceSettings) -> Authenticator:
    if settings.auth == "api_gateway":
        return ApiGatewayAuthenticator()
    return ApiKeyAuthenticator.from_settings(settings)
