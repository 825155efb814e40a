"""The job service's settings: one typed object, read once from the environment at start.

Every field has a documented default and an environment variable ``COMFYSERVE_<FIELD NAME IN CAPITALS>``
(``COMFYSERVE_MAX_BODY_BYTES``, ``COMFYSERVE_API_KEYS`` …); ``ServiceSettings.from_env()`` reads them all.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from comfyserve.engine.validation import Limits

MiB = 1024 * 1024
AuthMode = Literal["api_keys", "api_gateway"]
ENV_PREFIX = "COMFYSERVE_"


@dataclass(frozen=True)
class ServiceSettings:
    # Request limits. Lambda's synchronous payload is 6 MB, so bodies above 5 MiB are refused with 413.
    max_body_bytes: int = 5 * MiB
    # Backpressure: above this many queued + in-flight messages a submit gets 429 (None disables the check).
    max_backlog: int | None = 10_000
    retry_after_s: int = 10
    # How long one queue-depth reading is reused, so that a burst of submits costs one depth request.
    backlog_cache_s: float = 2.0
    # Workflows up to this size (JSON bytes) stay in the job record; larger ones are claim-checked to blobs.
    inline_workflow_bytes: int = 64 * 1024
    # Decoded size limit of one base64 input.
    max_inline_input_bytes: int = 4 * MiB
    max_inputs: int = 32
    # Presigned URLs: outputs in job views, and upload tickets.
    presign_expiry_s: int = 3600
    upload_expiry_s: int = 900
    # GET /view serves bytes up to this size and redirects to a presigned URL above it (Lambda's 6 MB cap).
    view_inline_max_bytes: int = 4 * MiB
    # Accept URL inputs and webhooks on private addresses (local stacks and tests only).
    allow_private_urls: bool = False
    max_nodes: int | None = 5000
    max_pixels: int | None = 4096 * 4096
    max_steps: int | None = 1000
    max_batch_size: int | None = 64
    # Authentication: "api_keys" maps x-api-key to a tenant from ``api_keys`` ("tenant:key,…") and/or
    # ``api_keys_file`` (one "tenant:key" a line); "api_gateway" trusts the request's API Gateway key id.
    auth: AuthMode = "api_keys"
    api_keys: str = field(default="", repr=False)
    api_keys_file: Path | None = None
    # Local stacks only: the tenant of requests that carry no key (lets unmodified ComfyUI scripts in).
    anonymous_tenant: str | None = None

    @property
    def limits(self) -> Limits:
        return Limits(
            max_nodes=self.max_nodes,
            max_pixels=self.max_pixels,
            max_steps=self.max_steps,
            max_batch_size=self.max_batch_size,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServiceSettings:
        """Settings from ``COMFYSERVE_*`` variables (``os.environ`` by default); ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + spec.name.upper())
            if raw is not None:
                values[spec.name] = _parse(spec.name, str(spec.type), raw)
        values.update(overrides)
        settings = cls(**values)
        if settings.auth not in ("api_keys", "api_gateway"):
            raise ValueError(f"{ENV_PREFIX}AUTH must be api_keys or api_gateway, not {settings.auth!r}")
        return settings


def _parse(name: str, type_text: str, raw: str) -> Any:
    text = raw.strip()
    optional = "None" in type_text
    if optional and text.lower() in ("", "none", "null"):
        return None
    try:
        if type_text.startswith("int"):
            return int(text)
        if type_text.startswith("float"):
            return float(text)
        if type_text.startswith("bool"):
            if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes", "on")
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: cannot read {raw!r} as {type_text}") from None
    if type_text.startswith("Path"):
        return Path(text)
    return text
