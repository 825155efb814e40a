"""The cloud model store: S3 models bucket (source of truth) → EFS shared root → instance NVMe.

``resolve`` looks in the NVMe cache, then on EFS, and only then copies the object from S3 into EFS: once for
all workers, under the model's lease lock (:mod:`lock`), streamed to a temporary name while it is hashed,
verified against the inventory's size and sha256, and renamed into place. An EFS file is trusted when its
size matches (it was verified when it was written); a file a loader then cannot read is :meth:`invalidate`d:
its NVMe copy is dropped and its EFS copy is re-hashed and removed if it does not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from comfyserve.model_store.copying import BUFFER, sha256_file, temp_name
from comfyserve.model_store.errors import ModelStoreError, ModelVerifyError
from comfyserve.model_store.local_cache import LocalCache
from comfyserve.model_store.lock import LeaseLock
from comfyserve.model_store.published import ModelEntry, PublishedSource
from comfyserve.model_store.tiers import Resolved, Tier

log = logging.getLogger(__name__)


def _short(digest: str) -> str:
    return digest[:12] + "…"


class TieredModelStore:
    def __init__(
        self,
        s3: Any,
        bucket: str,
        source: PublishedSource,
        efs_root: Path,
        local: LocalCache | None = None,
        *,
        stale_after_s: float = 30.0,
        lock_timeout_s: float = 3600.0,
    ) -> None:
        self.s3, self.bucket, self.source = s3, bucket, source
        self.efs_root = efs_root
        self.local = local
        self.stale_after_s = stale_after_s
        self.lock_timeout_s = lock_timeout_s

    def listing(self) -> Mapping[str, list[str]]:
        return self.source.listing()

    def _entry(self, folder: str, name: str) -> ModelEntry:
        entry = self.source.get().entry(folder, name)
        if entry is None:
            raise FileNotFoundError(f"model file {name!r} is not in the {folder} folder")
        return entry

    @contextlib.contextmanager
    def resolve(self, folder: str, name: str) -> Iterator[Resolved]:
        entry = self._entry(folder, name)
        relative = f"{folder}/{entry.name}"
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if self.local is not None:
                stack.enter_context(self.local.pinned(relative))
                cached = self.local.lookup(relative, entry.size)
                if cached is not None:
                    yield Resolved(cached, Tier.NVME, time.perf_counter() - started)
                    return
            path, tier = self.ensure_efs(folder, entry)
            if self.local is not None:
                path = self._to_local(relative, path, entry.size)
            yield Resolved(path, tier, time.perf_counter() - started)

    def _to_local(self, relative: str, efs_path: Path, size: int) -> Path:
        """The NVMe copy, or the EFS file itself when the copy does not fit or fails (the job still runs)."""
        assert self.local is not None
        try:
            return self.local.admit(relative, efs_path, size) or efs_path
        except OSError:
            log.warning("nvme cache: copying %s failed; reading it from EFS", relative, exc_info=True)
            return efs_path

    def ensure_efs(self, folder: str, entry: ModelEntry) -> tuple[Path, Tier]:
        """The model's file on EFS, copied from S3 first if it is missing or has the wrong size."""
        final = self.efs_root / folder / entry.name
        if _has_size(final, entry.size):
            return final, Tier.EFS
        final.parent.mkdir(parents=True, exist_ok=True)
        lock = LeaseLock(
            final.with_name(f".{final.name}.lock"), stale_after_s=self.stale_after_s, timeout_s=self.lock_timeout_s
        )
        with lock:
            if lock.taken_over is not None:
                with contextlib.suppress(FileNotFoundError):
                    temp_name(final, lock.taken_over).unlink()  # the dead holder's half-written copy
            if _has_size(final, entry.size):
                return final, Tier.EFS  # another worker copied it while we waited
            self._fetch(folder, entry, final, temp_name(final, lock.holder))
        return final, Tier.S3

    def _fetch(self, folder: str, entry: ModelEntry, final: Path, temp: Path) -> None:
        model, key = f"{folder}/{entry.name}", entry.s3_key(folder)
        where = f"s3://{self.bucket}/{key}"
        extra = {"IfMatch": entry.etag} if entry.etag else {}
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise ModelStoreError(f"model {model}: {where} does not exist; run `comfyserve models sync`") from None
            if code in ("PreconditionFailed", "412"):
                raise ModelStoreError(
                    f"model {model}: {where} changed since the inventory was published; run `comfyserve models sync`"
                ) from None
            raise ModelStoreError(f"model {model}: cannot read {where} ({code or exc})") from exc
        digest = hashlib.sha256()
        size = 0
        try:
            with contextlib.closing(body), open(temp, "wb") as out:
                for chunk in body.iter_chunks(BUFFER):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            if size != entry.size or digest.hexdigest() != entry.sha256:
                raise ModelVerifyError(
                    f"model {model}: the copy of {where} has {size} bytes and sha256 {_short(digest.hexdigest())}, "
                    f"the inventory says {entry.size} bytes and sha256 {_short(entry.sha256)}; the copy was "
                    "discarded (if the object was replaced on purpose, run `comfyserve models sync`)"
                )
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

    def invalidate(self, folder: str, name: str) -> None:
        entry = self._entry(folder, name)
        if self.local is not None:
            self.local.discard(f"{folder}/{entry.name}")
        final = self.efs_root / folder / entry.name
        with contextlib.suppress(FileNotFoundError):
            if not _has_size(final, entry.size) or sha256_file(final) != entry.sha256:
                final.unlink()


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False
