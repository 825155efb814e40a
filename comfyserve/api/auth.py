"""Who is calling: every request names a tenant through its API key, sent as ``x-api-key: <key>``, as
``Authorization: Bearer <key>``, or (for clients that only know Basic) as the password of
``Authorization: Basic`` (the user name is ignored; a key alone as the user name works too).

Locally an :class:`ApiKeyAuthenticator` holds the keys (``COMFYSERVE_API_KEYS="tenant:key,…"`` or a keys
file, one ``tenant:key`` a line); behind API Gateway, which has already checked the key against its usage
plans, the tenant is the request's API key id. A missing key is 401, an unknown one 403.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from comfyserve.contracts.jobs import TENANT_PATTERN
from comfyserve.engine.errors import ComfyServeError
from comfyserve.service.errors import Forbidden, Unauthorized
from comfyserve.service.settings import ServiceSettings

API_KEY_HEADER = "x-api-key"
HOW_TO_SEND = f"send your API key in the {API_KEY_HEADER} header or as Authorization: Bearer <key>"
_tenant = re.compile(TENANT_PATTERN)


class Authenticator(Protocol):
    def authenticate(self, event: BaseProxyEvent) -> str:
        """The caller's tenant; :class:`Unauthorized` without a key, :class:`Forbidden` with a bad one."""
        ...


def _missing_key() -> Unauthorized:
    return Unauthorized("Missing API key", details=HOW_TO_SEND)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request carries (``x-api-key``, Bearer or Basic), ``None`` when it carries none;
    :class:`Unauthorized` for an ``Authorization`` header that holds no key."""
    key = headers.get(API_KEY_HEADER)
    if key:
        return key
    authorization = (headers.get("authorization") or "").strip()
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("Invalid Authorization header", details="Basic credentials are not base64") from None
        if password or user:
            return password or user
    raise Unauthorized("Invalid Authorization header", details=HOW_TO_SEND)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyConfigError(ComfyServeError, ValueError):
    """The configured API keys cannot be read; the message never quotes a key."""


TENANT_RULE = "letters, digits, '_', '.', '-'"


class ApiKeyAuthenticator:
    """Keys are kept only as SHA-256 digests (a lookup by digest leaks nothing about the keys)."""

    def __init__(self, tenants_by_key: Mapping[str, str], anonymous_tenant: str | None = None) -> None:
        for index, tenant in enumerate(tenants_by_key.values(), 1):
            if not _tenant.match(tenant):
                raise KeyConfigError(f"API key entry {index}: a tenant name is {TENANT_RULE}")
        if anonymous_tenant is not None and not _tenant.match(anonymous_tenant):
            raise KeyConfigError(f"invalid anonymous tenant name {anonymous_tenant!r} ({TENANT_RULE})")
        self._tenants = {_digest(key): tenant for key, tenant in tenants_by_key.items()}
        self._anonymous = anonymous_tenant

    @classmethod
    def from_pairs(cls, pairs: Iterable[str], anonymous_tenant: str | None = None) -> ApiKeyAuthenticator:
        """From ``tenant:key`` strings (blank ones and ``#`` comments skipped); entries are counted from 1."""
        keys: dict[str, str] = {}
        entries = (pair.strip() for pair in pairs)
        for index, text in enumerate((text for text in entries if text and not text.startswith("#")), 1):
            tenant, sep, key = text.partition(":")
            if not sep or not tenant.strip() or not key.strip():
                raise KeyConfigError(f"API key entry {index} is not 'tenant:key'")
            keys[key.strip()] = tenant.strip()
        return cls(keys, anonymous_tenant)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ApiKeyAuthenticator:
        pairs = settings.api_keys.split(",")
        if settings.api_keys_file is not None:
            path = Path(settings.api_keys_file)
            try:
                pairs += path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise KeyConfigError(f"cannot read the API keys file {path}: {getattr(exc, 'strerror', exc)}") from None
        return cls.from_pairs(pairs, settings.anonymous_tenant)

    def authenticate(self, event: BaseProxyEvent) -> str:
        key = presented_key(event.headers)
        if not key:
            if self._anonymous is None:
                raise _missing_key()
            return self._anonymous
        tenant = self._tenants.get(_digest(key))
        if tenant is None:
            raise Forbidden("Invalid API key", details="the request names no known API key")
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
