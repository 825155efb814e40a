"""``comfyserve models sync | publish | list``: the models bucket's published inventory.

The bucket and key come from ``COMFYSERVE_MODELS_BUCKET`` / ``COMFYSERVE_INVENTORY_KEY`` unless given. ``sync``
is what the stack's sync task runs: it uploads a local folder (``--upload``), builds the inventory from the
bucket, publishes it, and copies every model into the EFS root (``--warm``, ``COMFYSERVE_MODEL_ROOT``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from comfyserve.commands.common import UsageError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("models", help="sync, publish and list the model inventory of the models bucket")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(action: argparse.ArgumentParser) -> None:
        action.add_argument("--bucket", help="models bucket (default: $COMFYSERVE_MODELS_BUCKET)")
        action.add_argument("--key", help="inventory key (default: $COMFYSERVE_INVENTORY_KEY or inventory.json)")

    sync = actions.add_parser("sync", help="build the inventory from the bucket and publish it")
    common(sync)
    sync.add_argument("--upload", type=Path, metavar="DIR", help="first upload DIR/<folder>/<name> model files")
    sync.add_argument("--warm", action="store_true", help="then copy every model into $COMFYSERVE_MODEL_ROOT (EFS)")
    sync.add_argument("--dry-run", action="store_true", help="print the inventory, publish nothing")
    sync.set_defaults(func=run_sync)

    publish = actions.add_parser("publish", help="validate an inventory JSON file and publish it")
    common(publish)
    publish.add_argument("file", type=Path, help="inventory JSON (the shape `models list --json` prints)")
    publish.set_defaults(func=run_publish)

    listing = actions.add_parser("list", help="print the published inventory")
    common(listing)
    listing.add_argument("--json", action="store_true", help="the whole document as JSON")
    listing.set_defaults(func=run_list)


def _target(args: argparse.Namespace) -> tuple[Any, str, str, Any]:
    from comfyserve.model_store.settings import ModelStoreSettings, s3_client

    settings = ModelStoreSettings.from_env()
    bucket = args.bucket or settings.models_bucket
    if not bucket:
        raise UsageError("no models bucket: pass --bucket or set COMFYSERVE_MODELS_BUCKET")
    return settings, bucket, args.key or settings.inventory_key, s3_client()


def run_sync(args: argparse.Namespace) -> int:
    from comfyserve.model_store.published import PublishedSource
    from comfyserve.model_store.sync import sync
    from comfyserve.model_store.tiered import TieredModelStore

    settings, bucket, key, s3 = _target(args)
    if args.upload is not None and not args.upload.is_dir():
        raise UsageError(f"--upload {args.upload} is not a directory")
    warm = None
    if args.warm and not args.dry_run:
        source = PublishedSource(s3, bucket, key, ttl_s=settings.inventory_ttl_s)
        warm = TieredModelStore(s3, bucket, source, settings.model_root, stale_after_s=settings.model_lock_stale_s)
    report = sync(s3, bucket, key, upload=args.upload, warm=warm, publish=not args.dry_run)
    for uploaded in report.uploaded:
        print(f"uploaded s3://{bucket}/{uploaded}")
    for ignored in report.ignored:
        print(f"ignored s3://{bucket}/{ignored} (not a model file in a known folder)", file=sys.stderr)
    if args.dry_run:
        print(report.inventory.model_dump_json(indent=1))
        return 0
    count = sum(len(entries) for entries in report.inventory.folders.values())
    print(f"published s3://{bucket}/{key}: {count} models, version {report.inventory.version}")
    for model, tier in report.warmed.items():
        print(f"warm {model}: {'copied from s3' if tier == 's3' else 'already on efs'}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from comfyserve.model_store.published import PublishedInventory, write_inventory

    _, bucket, key, s3 = _target(args)
    try:
        document = PublishedInventory.model_validate_json(args.file.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"{args.file} is not a model inventory: {where}: {first['msg']}") from exc
    inventory = PublishedInventory.build(document.folders)
    write_inventory(s3, bucket, key, inventory)
    print(f"published s3://{bucket}/{key}: version {inventory.version}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from comfyserve.model_store.published import read_inventory

    _, bucket, key, s3 = _target(args)
    inventory = read_inventory(s3, bucket, key)
    if args.json:
        print(inventory.model_dump_json(indent=1))
        return 0
    print(f"# s3://{bucket}/{key} version {inventory.version} published {inventory.published_at}")
    for folder, entries in inventory.folders.items():
        for entry in entries:
            print(f"{folder}/{entry.name}\t{entry.size}\t{entry.sha256}")
    return 0
