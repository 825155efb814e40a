"""boto3 clients for the Lambdas, one per service per cold start. boto3 honours ``AWS_ENDPOINT_URL`` (moto in
tests); S3 signs with SigV4 so that presigned URLs work in every region."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config


@cache
def aws_client(service: str) -> Any:
    config = Config(signature_version="s3v4") if service == "s3" else Config()
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]
