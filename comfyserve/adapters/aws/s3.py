"""BlobStore on one S3 bucket. One request per operation (``list`` one per 1000 keys); presigning is local."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from comfyserve.adapters.aws.errors import error_code
from comfyserve.ports import BlobInfo, BlobNotFound, validate_key, validate_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlobStore:
    """``client`` decides the endpoint and signing; use path-style addressing for non-AWS endpoints."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._s3 = client
        self.bucket = bucket

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> BlobInfo:
        response = self._s3.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data, ContentType=content_type)
        return BlobInfo(key=key, size=len(data), content_type=content_type, etag=response["ETag"].strip('"'))

    def get(self, key: str) -> bytes:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                raise BlobNotFound(key) from None
            raise
        return response["Body"].read()

    def head(self, key: str) -> BlobInfo | None:
        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                return None
            raise
        return BlobInfo(
            key=key,
            size=response["ContentLength"],
            content_type=response.get("ContentType", DEFAULT_CONTENT_TYPE),
            etag=response["ETag"].strip('"'),
        )

    def list(self, prefix: str = "") -> builtins.list[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=validate_prefix(prefix))
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=validate_key(key))

    def presigned_get(self, key: str, expires_s: int = 3600) -> str:
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": validate_key(key)}, ExpiresIn=expires_s
        )

    def presigned_put(self, key: str, expires_s: int = 3600, content_type: str = DEFAULT_CONTENT_TYPE) -> str:
        params = {"Bucket": self.bucket, "Key": validate_key(key), "ContentType": content_type}
        return self._s3.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_s)
