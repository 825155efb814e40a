"""The cloud composition root: the job service over S3, SQS, DynamoDB and EventBridge, and its route table.

Resource names (:class:`AwsResourceNames`) and service settings (:class:`ServiceSettings`) come from the
environment the CDK stack sets on the ``api`` function, as docs/SETTINGS.md lists them (``COMFYSERVE_AUTH``
defaults to ``api_gateway`` here). boto3 honours ``AWS_ENDPOINT_URL`` for runs against an emulator.
"""

from __future__ import annotations

import os

import boto3
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from botocore.config import Config

from comfyserve.adapters.aws.ports import aws_ports
from comfyserve.api.app import build_app
from comfyserve.api.auth import authenticator_from_settings
from comfyserve.engine.catalog import Catalog
from comfyserve.model_store.settings import ModelStoreSettings, api_inventory
from comfyserve.service.catalog_source import PublishedCatalog
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService
from comfyserve.settings import AwsResourceNames, ServiceSettings


def aws_service(
    names: AwsResourceNames,
    settings: ServiceSettings,
    *,
    catalog: Catalog | None = None,
    session: boto3.session.Session | None = None,
    client_config: Config | None = None,
) -> JobService:
    """The job service; model names are checked against the published inventory when
    ``COMFYSERVE_MODELS_BUCKET`` is set (docs/MODELS.md), else any name is accepted and the worker checks it.
    Workflows are validated against ``catalog``, by default the catalog the workers published under
    ``COMFYSERVE_CATALOG_KEY`` (the packaged one until they have: for a ``COMFYSERVE_BACKEND=comfyui`` fleet the
    service is then starting, and a workflow the packaged catalog refuses is a 503, not a 400)."""
    session = session or boto3.session.Session()
    ports = aws_ports(names, session=session, client_config=client_config)
    deps = ServiceDeps(
        blobs=ports.blobs,
        queue=ports.queue,
        jobs=ports.jobs,
        events=ports.events,
        catalog=catalog
        or PublishedCatalog(
            ports.blobs,
            Catalog.packaged(),
            key=names.catalog_key,
            awaited=os.environ.get("COMFYSERVE_BACKEND") == "comfyui",
        ),
        settings=settings,
        inventory=api_inventory(ModelStoreSettings.from_env(), session.client("s3", config=client_config)),
    )
    return JobService(deps)


def aws_app_from_env() -> APIGatewayRestResolver:
    """The Lambda ``api`` function's resolver, built once per cold start."""
    settings = ServiceSettings.from_env(auth=os.environ.get("COMFYSERVE_AUTH", "api_gateway"))
    service = aws_service(AwsResourceNames.from_env(), settings)
    return build_app(service, authenticator_from_settings(settings))
