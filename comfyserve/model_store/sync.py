"""``comfyserve models sync``: upload a local models folder to the bucket (optional), build the inventory from
the bucket's listing, publish it as one object, and warm EFS (optional).

Checksums: an object uploaded here carries its sha256 in its metadata (``x-amz-meta-sha256``); an entry of
the previous inventory with the same ETag and size is reused; anything else is streamed once and hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from comfyserve.engine.inventory import FOLDER_ALIASES, MODEL_SUFFIXES
from comfyserve.model_store.copying import BUFFER, sha256_file
from comfyserve.model_store.errors import ModelStoreError
from comfyserve.model_store.published import ModelEntry, PublishedInventory, read_inventory, write_inventory
from comfyserve.model_store.tiered import TieredModelStore

log = logging.getLogger(__name__)

SHA256_META = "sha256"
FOLDER_OF_PREFIX = {alias: folder for folder, aliases in FOLDER_ALIASES.items() for alias in aliases}


def model_key(key: str) -> tuple[str, str] | None:
    """``(folder, name)`` for a key ``<folder or alias>/<name>`` naming a model file, else ``None``."""
    prefix, _, name = key.partition("/")
    folder = FOLDER_OF_PREFIX.get(prefix)
    path = PurePosixPath(name)
    if folder is None or not name or path.suffix.lower() not in MODEL_SUFFIXES or ".." in path.parts:
        return None
    return folder, name


def _local_files(directory: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            key = path.relative_to(directory).as_posix()
            if model_key(key) is not None:
                yield key, path


def upload_folder(s3: Any, bucket: str, directory: Path) -> list[str]:
    """Upload ``directory/<folder>/<name>`` model files with their sha256; unchanged objects are skipped."""
    uploaded = []
    for key, path in _local_files(directory):
        digest = sha256_file(path)
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] == path.stat().st_size and head.get("Metadata", {}).get(SHA256_META) == digest:
                continue
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                raise
        s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {SHA256_META: digest}})
        uploaded.append(key)
    return uploaded


def _hash_object(s3: Any, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    with contextlib.closing(s3.get_object(Bucket=bucket, Key=key)["Body"]) as body:
        for chunk in body.iter_chunks(BUFFER):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class SyncReport:
    inventory: PublishedInventory
    uploaded: list[str] = field(default_factory=list)
    hashed: list[str] = field(default_factory=list)  # objects without a recorded sha256, streamed and hashed
    ignored: list[str] = field(default_factory=list)  # keys that are not model files in a known folder
    warmed: dict[str, str] = field(default_factory=dict)  # model -> tier it was found in ("s3": copied now)


def build_inventory(
    s3: Any, bucket: str, *, inventory_key: str, previous: PublishedInventory | None = None
) -> tuple[PublishedInventory, list[str], list[str]]:
    """The inventory of the bucket's model objects; returns it, the keys hashed and the keys ignored."""
    known = {
        (entry.s3_key(folder), entry.etag, entry.size): entry
        for folder, entries in (previous.folders if previous else {}).items()
        for entry in entries
    }
    folders: dict[str, list[ModelEntry]] = {}
    hashed, ignored = [], []
    seen: set[tuple[str, str]] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key, size, etag = obj["Key"], obj["Size"], obj["ETag"]
            if key == inventory_key:
                continue
            found = model_key(key)
            if found is None:
                ignored.append(key)
                continue
            folder, name = found
            old = known.get((key, etag, size))
            digest = old.sha256 if old else s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(SHA256_META)
            if digest is None:
                digest = _hash_object(s3, bucket, key)
                hashed.append(key)
            if (folder, name) in seen:
                raise ModelStoreError(f"model {folder}/{name} is in the bucket twice (under two folder aliases)")
            seen.add((folder, name))
            alias_key = None if key == f"{folder}/{name}" else key
            entry = ModelEntry(name=name, size=size, sha256=digest, etag=etag, key=alias_key)
            folders.setdefault(folder, []).append(entry)
    return PublishedInventory.build(folders), hashed, ignored


def sync(
    s3: Any,
    bucket: str,
    inventory_key: str,
    *,
    upload: Path | None = None,
    warm: TieredModelStore | None = None,
    publish: bool = True,
) -> SyncReport:
    """Upload (optional), build, publish (unless ``publish`` is false), then warm EFS (optional)."""
    uploaded = upload_folder(s3, bucket, upload) if upload is not None else []
    try:
        previous: PublishedInventory | None = read_inventory(s3, bucket, inventory_key)
    except ModelStoreError:
        previous = None
    inventory, hashed, ignored = build_inventory(s3, bucket, inventory_key=inventory_key, previous=previous)
    if publish:
        write_inventory(s3, bucket, inventory_key, inventory)
    report = SyncReport(inventory, uploaded, hashed, ignored)
    if warm is not None:
        for folder, entries in inventory.folders.items():
            for entry in entries:
                _, tier = warm.ensure_efs(folder, entry)
                report.warmed[f"{folder}/{entry.name}"] = tier.value
    return report
