"""The settings contract: every setting of the API, the Lambda handlers and the worker, typed, from the environment.

Each field is read from ``COMFYSERVE_<FIELD NAME IN CAPITALS>`` unless it names its own variable
(``COMFYUI_DIR``, ``ECS_AGENT_URI`` …). ``Model.from_env()`` reads the environment (or a given mapping);
constructing a model directly never does, so code and tests pass exactly what they mean. A value that
cannot be read fails with the variable's name. docs/SETTINGS.md is generated from these models
(``python -m comfyserve.settings``) and a test keeps it in step.

The family: :class:`ServiceSettings` (the job service: API Lambda and local stack), :class:`AwsResourceNames`
(the resources every cloud component talks to) and :class:`CloudWorkerSettings` (``comfyserve worker``).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from comfyserve.engine.validation import Limits

MiB = 1024 * 1024
ENV_PREFIX = "COMFYSERVE_"
AuthMode = Literal["api_keys", "api_gateway"]
BackendName = Literal["builtin", "comfyui"]
_NONE_WORDS = ("", "none", "null")
_DOCUMENTED: list[type[EnvSettings]] = []


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class EnvSettings(BaseSettings):
    """Base of the family: ``COMFYSERVE_`` prefix, immutable, read by :meth:`from_env` only."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid", populate_by_name=True)
    # A model with a title is documented in docs/SETTINGS.md under it.
    doc_title: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__dict__.get("doc_title"):
            _DOCUMENTED.append(cls)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment is read by from_env(), never behind a constructor's back

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Settings from the environment (``os.environ`` by default); ``overrides`` win.

        Raises ``ValueError`` naming the variable when a value cannot be read or a required one is missing.
        """
        env = os.environ if environ is None else environ
        values = {**_MappingEnvSource(cls, env)(), **overrides}
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ValueError(_explain(cls, exc, values)) from None

    @model_validator(mode="before")
    @classmethod
    def _none_words(cls, data: Any) -> Any:
        """``none``, ``null`` or an empty value mean None for a field that may be None."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            key: None
            if isinstance(value, str) and value.strip().lower() in _NONE_WORDS and _optional(fields.get(key))
            else value
            for key, value in data.items()
        }

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable of field ``name``."""
        alias = cls.model_fields[name].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return str(alias) if isinstance(alias, str) else ENV_PREFIX + name.upper()

    @classmethod
    def env_table(cls, exclude: Collection[str] = ()) -> list[tuple[str, str, str, str]]:
        """``(variable, type, default, description)`` for every field not in ``exclude``, in declaration order."""
        rows = []
        for name, info in cls.model_fields.items():
            if name in exclude:
                continue
            default = "required" if info.is_required() else _default_text(info)
            rows.append((cls.env_name(name), type_text(info.annotation), default, info.description or ""))
        return rows


def _optional(info: FieldInfo | None) -> bool:
    return info is not None and type(None) in typing.get_args(info.annotation)


def type_text(annotation: Any) -> str:
    """``int``, ``int or None``, ``api_keys or api_gateway`` … as a person reads a type."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(str(arg) for arg in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(arg) for arg in typing.get_args(annotation))
    if origin is Annotated:
        return type_text(typing.get_args(annotation)[0])
    if origin is tuple:
        return f"comma list of {type_text(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None or value == "":
        return "unset"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or "unset"
    return str(value)


def _explain(cls: type[EnvSettings], exc: ValidationError, values: Mapping[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        info = cls.model_fields.get(name)
        if info is None:
            lines.append(message)
            continue
        variable, value = cls.env_name(name), values.get(name)
        if error["type"] == "missing":
            lines.append(f"{variable} is required")
        elif error["type"] == "literal_error":
            choices = " or ".join(str(arg) for arg in typing.get_args(info.annotation))
            lines.append(f"{variable} must be {choices}, not {value!r}")
        elif error["type"].endswith(("_parsing", "_type")):
            lines.append(f"{variable}: cannot read {value!r} as {type_text(info.annotation)}")
        elif error["type"] == "value_error":
            lines.append(f"{variable}: {message}")
        else:
            lines.append(f"{variable}: {message[:1].lower()}{message[1:]}, not {value!r}")
    return "; ".join(lines)


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


CommaList = Annotated[tuple[str, ...], NoDecode]


class ServiceSettings(EnvSettings):
    """The job service (API Lambda, local stack): request limits, backpressure, presigning, authentication."""

    doc_title = "Job service (API Lambda and `comfyserve serve`)"

    max_body_bytes: int = Field(
        default=5 * MiB, description="largest request body; above it 413 (Lambda's synchronous payload is 6 MB)"
    )
    max_backlog: int | None = Field(
        default=10_000, description="above this many queued + in-flight messages a submit gets 429 (none disables)"
    )
    retry_after_s: int = Field(default=10, description="Retry-After of a 429")
    backlog_cache_s: float = Field(default=2.0, description="how long one queue-depth reading is reused")
    inline_workflow_bytes: int = Field(
        default=64 * 1024, description="workflows up to this size stay in the job record; larger ones go to the bucket"
    )
    max_inline_input_bytes: int = Field(default=4 * MiB, description="decoded size limit of one base64 input")
    max_inputs: int = Field(default=32, description="inputs one job may carry")
    max_url_input_bytes: int = Field(
        default=16 * MiB, description="size limit of one URL input (fetched at submit time into the bucket)"
    )
    url_fetch_timeout_s: float = Field(
        default=10.0, gt=0, description="time allowed to fetch one submission's URL inputs, all together"
    )
    presign_expiry_s: int = Field(default=3600, description="lifetime of presigned output URLs")
    upload_expiry_s: int = Field(default=900, description="lifetime of upload tickets")
    view_inline_max_bytes: int = Field(
        default=4 * MiB, description="GET /view serves up to this size inline, above it redirects to a presigned URL"
    )
    allow_private_urls: bool = Field(
        default=False, description="accept URL inputs and webhooks on private addresses (local stacks and tests only)"
    )
    max_nodes: int | None = Field(default=5000, description="nodes one workflow may have")
    max_pixels: int | None = Field(default=4096 * 4096, description="pixels of one image a workflow may ask for")
    max_steps: int | None = Field(default=1000, description="sampler steps a workflow may ask for")
    max_batch_size: int | None = Field(default=64, description="batch size a workflow may ask for")
    auth: AuthMode = Field(
        default="api_keys",
        description="api_keys: x-api-key mapped to a tenant by API_KEYS/API_KEYS_FILE; "
        "api_gateway: trust API Gateway's key id (the API Lambda's default)",
    )
    api_keys: str = Field(default="", repr=False, description='"tenant:key,…"')
    api_keys_file: Path | None = Field(default=None, description='a file of "tenant:key" lines')
    anonymous_tenant: str | None = Field(
        default=None, description="local stacks only: the tenant of requests without a key (unmodified ComfyUI clients)"
    )
    dispatch_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="a job whose submit left its queue message or Job Queued event unsent this long is dispatched "
        "by the reconciler",
    )

    @property
    def limits(self) -> Limits:
        return Limits(
            max_nodes=self.max_nodes,
            max_pixels=self.max_pixels,
            max_steps=self.max_steps,
            max_batch_size=self.max_batch_size,
        )


class AwsResourceNames(EnvSettings):
    """The AWS resources of one deployment, as the CDK stack names them in every component's environment."""

    doc_title = "AWS resources (API Lambda, other Lambdas, worker)"

    bucket: str = Field(description="jobs/results bucket: inputs, uploads, outputs/{tenant}/{job_id}/…, manifests")
    queue_url: str = Field(description="jobs queue URL")
    table: str = Field(description="jobs table")
    event_bus: str = Field(description='event bus name ("comfyserve")')
    dlq_url: str | None = Field(default=None, description="dead-letter queue URL")
    models_bucket: str | None = Field(
        default=None, description='models bucket, the source of truth (keys "<folder>/<name>")'
    )
    inventory_key: str = Field(
        default="inventory.json", description="key of the published inventory in the models bucket"
    )
    catalog_key: str = Field(
        default="catalog/object_info.json", description="key of the published node catalog in the jobs bucket"
    )
    inbox_bucket: str | None = Field(
        default=None, description="drop-folder bucket (inbox/{tenant}/…, outbox/{tenant}/…)"
    )
    record_retention_days: int | None = Field(
        default=30,
        ge=1,
        description="days a job's record is kept once finished (the table's TTL attribute expires_at); none keeps it",
    )

    def resources(self) -> AwsResourceNames:
        """Only the resource names (for a subclass that carries more)."""
        return AwsResourceNames(**{name: getattr(self, name) for name in AwsResourceNames.model_fields})


class CloudWorkerSettings(AwsResourceNames):
    """``comfyserve worker``: the GPU task's resources, model tiers, timing and backend."""

    doc_title = "Worker (`comfyserve worker`, the GPU task)"

    model_root: Path = Field(default=Path("/mnt/models"), description="EFS shared model root")
    local_cache_dir: Path = Field(
        default=Path("/var/cache/comfyserve/models"), description="instance NVMe cache of models copied from the root"
    )
    local_cache_bytes: int = Field(
        default=0, description="NVMe cache budget in bytes (0: no NVMe tier, models are read from the root)", ge=0
    )
    inventory_ttl_s: float = Field(
        default=30.0, description="how long one read of the published inventory is reused", gt=0
    )
    model_lock_stale_s: float = Field(
        default=30.0, description="a model copy lock without a heartbeat for this long is taken over", gt=0
    )
    drain_timeout_s: float = Field(
        default=90.0, description="on SIGTERM, how long the job in hand may finish (ECS stop timeout is 120)", ge=0
    )
    job_timeout_s: int = Field(default=3600, description="cap on a job's own timeout", ge=1)
    visibility_timeout_s: int = Field(
        default=120, description="message visibility the heartbeat keeps extending (the queue's own is the same)", ge=1
    )
    receive_wait_s: int = Field(default=20, description="SQS long-poll wait", ge=0, le=20)
    preload: CommaList = Field(default=(), description='"<folder>/<name>" models loaded before the first receive')
    warmup_workflow: Path | None = Field(
        default=None, description="an API-format workflow run once before the first receive"
    )
    backend: BackendName = Field(default="builtin", description="execution backend")
    comfyui_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("COMFYUI_DIR", "comfyui_dir"),
        description="ComfyUI checkout (comfyui backend)",
    )
    comfyui_python: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("COMFYUI_PYTHON", "comfyui_python"),
        description=(
            "Python that runs ComfyUI (comfyui backend; default: the checkout's venv/bin/python, else its"
            " .venv/bin/python, else the worker's own)"
        ),
    )
    custom_nodes: CommaList = Field(default=(), description="custom_nodes directories whose packs the worker loads")
    node_allow: CommaList = Field(default=(), description="node class allowlist (unset: every class)")
    node_deny: CommaList = Field(default=(), description="node class denylist")
    work_dir: Path = Field(default=Path("/tmp/comfyserve-work"), description="scratch space of running jobs")
    worker_id: str | None = Field(
        default=None, description="this worker's name (default: the ECS task id, else the host name)"
    )
    ecs_agent_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ECS_AGENT_URI", "ecs_agent_uri"),
        description="set by ECS; task scale-in protection is a no-op without it",
    )
    log_level: str = Field(
        default="INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"), description="Powertools log level"
    )
    cuda_version: str | None = Field(
        default=None,
        description="the image's CUDA build (e.g. 13.0), named when the host's driver is too old for it",
    )
    min_driver: str | None = Field(
        default=None,
        description="oldest NVIDIA driver that runs the image (e.g. 580 or 580.65.06): with a GPU, an older host"
        " driver stops the worker before its first job (unset: not checked)",
    )

    @field_validator("preload", "custom_nodes", "node_allow", "node_deny", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("preload")
    @classmethod
    def _model_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [item for item in value if item.count("/") != 1 or item.startswith("/") or item.endswith("/")]
        if bad:
            raise ValueError(f'expected "<folder>/<name>" items, got {", ".join(repr(item) for item in bad)}')
        return value

    @model_validator(mode="after")
    def _comfyui_needs_a_dir(self) -> Self:
        if self.backend == "comfyui" and self.comfyui_dir is None:
            raise ValueError("COMFYSERVE_BACKEND=comfyui needs COMFYUI_DIR")
        return self


def settings_models() -> list[type[EnvSettings]]:
    """Every documented settings model (one with a ``doc_title``): the modules of the ``comfyserve`` package
    that subclass :class:`EnvSettings` are imported to find them."""
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        if path.name != "settings.py" and "(EnvSettings)" in path.read_text(encoding="utf-8"):
            module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
            importlib.import_module(module)
    # This module's first, then by module; a module's own in the order it defines them (the sort is stable).
    return sorted(_DOCUMENTED, key=lambda model: (model.__module__ != __name__, model.__module__))


def settings_markdown() -> str:
    """docs/SETTINGS.md: every variable of every documented model (inherited variables under their parent)."""
    parts = [
        "# Settings",
        "",
        "Every component reads its settings from the environment: one contract, the `EnvSettings` models",
        "(`comfyserve/settings.py` and the modules that subclass it), generated into this page",
        "(`python -m comfyserve.settings > docs/SETTINGS.md`; a test fails when it is out of date). A model",
        "that extends another (the worker extends the AWS resources) also reads its parent's variables.",
        "",
    ]
    models = settings_models()
    for model in models:
        inherited = {name for base in model.__mro__[1:] if base in models for name in base.model_fields}
        parts += [f"## {model.doc_title} — `{model.__module__}.{model.__qualname__}`", ""]
        parts += [settings_table(model, exclude=inherited), ""]
    return "\n".join(parts)


def settings_table(model: type[EnvSettings], exclude: Collection[str] = ()) -> str:
    """A Markdown table of ``model``'s variables (docs/SETTINGS.md, docs/WORKER.md)."""
    rows = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    for variable, kind, default, description in model.env_table(exclude=exclude):
        rows.append(f"| `{variable}` | {kind} | {default} | {description} |")
    return "\n".join(rows)


if __name__ == "__main__":  # run as a script, this file is __main__: document the package's own module
    from comfyserve import settings

    sys.stdout.write(settings.settings_markdown())
