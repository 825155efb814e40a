"""Buckets as every construct makes them: private, encrypted, TLS only, versioned, with access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct


def secure_bucket(
    scope: Construct,
    construct_id: str,
    *,
    access_logs: s3.IBucket | None,
    event_bridge: bool = False,
    expire_after: Duration | None = None,
    expire_prefixes: tuple[str, ...] = ("",),
) -> s3.Bucket:
    """A bucket that blocks public access and refuses non-TLS requests; ``expire_after`` ages out the objects
    under ``expire_prefixes`` (default: every object). A replaced or deleted version goes after a day anywhere."""
    rules = [s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(1))]
    if expire_after is not None:
        rules.append(
            s3.LifecycleRule(noncurrent_version_expiration=Duration.days(1), expired_object_delete_marker=True)
        )
        rules += [s3.LifecycleRule(expiration=expire_after, prefix=prefix or None) for prefix in expire_prefixes]
    return s3.Bucket(
        scope,
        construct_id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        versioned=True,
        event_bridge_enabled=event_bridge,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=f"{construct_id.lower()}/" if access_logs is not None else None,
        lifecycle_rules=rules,
        removal_policy=RemovalPolicy.RETAIN,
    )
