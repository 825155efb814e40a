"""The cloud model store: S3 models bucket (source of truth) → EFS shared root → instance NVMe.

``resolve`` looks in the NVMe cache, then on EFS, and only then copies the object from S3 into EFS: once for
all workers, under the model's lease lock (:mod:`lock`), streamed to a temporary name while it is hashed,
verified against the inventory's size and sha256, and renamed into place. A stamp beside it
(``.<name>.sha256``, written after the rename) says which version the file is; an EFS file is trusted when
its size and stamp match the inventory (it was verified when it was written). A file a loader then cannot
read is :meth:`invalidate`\\ d: its NVMe copy is dropped and its EFS copy is re-hashed and removed if it does
not match. NVMe copies live under ``<folder>/<sha256 prefix>/<name>``, so a replaced model never reuses one.

The worker's copy of the inventory is re-read only when it lacks a name or an object's ETag changed
(``PublishedSource.refresh``): a warm worker makes no inventory requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from comfyserve.engine.inventory import folder_name
from comfyserve.model_store.copying import BUFFER, sha256_file, temp_name
from comfyserve.model_store.errors import ModelStoreError, ModelVerifyError
from comfyserve.model_store.local_cache import LocalCache
from comfyserve.model_store.lock import LeaseLock
from comfyserve.model_store.published import ModelEntry, PublishedSource
from comfyserve.model_store.tiers import Resolved, Tier

log = logging.getLogger(__name__)


class ModelChanged(ModelStoreError):
    """The object's ETag is not the one the inventory recorded."""


def nvme_key(folder: str, entry: ModelEntry) -> str:
    """Where the NVMe tier keeps ``entry``: its version in the path, its name last (loaders read the suffix)."""
    return f"{folder}/{entry.sha256[:16]}/{entry.name}"


def stamp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.sha256")


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
        part_bytes: int = 32 * 1024 * 1024,
        parallel: int = 8,
    ) -> None:
        """``part_bytes``/``parallel``: objects larger than one part are fetched with that many ranged GETs at
        once (at most ``(parallel + 2) * part_bytes`` of memory)."""
        self.s3, self.bucket, self.source = s3, bucket, source
        self.efs_root = efs_root
        self.local = local
        self.stale_after_s = stale_after_s
        self.lock_timeout_s = lock_timeout_s
        self.part_bytes, self.parallel = part_bytes, parallel

    def listing(self) -> Mapping[str, list[str]]:
        return self.source.listing()

    def refresh(self) -> bool:
        return self.source.refresh()

    def _entry(self, folder: str, name: str) -> ModelEntry:
        entry = self.source.get().entry(folder, name)
        if entry is None and self.source.refresh():
            entry = self.source.get().entry(folder, name)
        if entry is None:
            raise FileNotFoundError(f"model file {name!r} is not in the {folder} folder")
        return entry

    @contextlib.contextmanager
    def resolve(self, folder: str, name: str) -> Iterator[Resolved]:
        started = time.perf_counter()
        folder = folder_name(folder)
        entry = self._entry(folder, name)
        with contextlib.ExitStack() as pins:
            try:
                path, tier = self._make_local(folder, entry, pins)
            except ModelChanged:
                if not self.source.refresh():
                    raise
                path, tier = self._make_local(folder, self._entry(folder, name), pins)
            yield Resolved(path, tier, time.perf_counter() - started)

    def _make_local(self, folder: str, entry: ModelEntry, pins: contextlib.ExitStack) -> tuple[Path, Tier]:
        if self.local is None:
            return self.ensure_efs(folder, entry)
        key = nvme_key(folder, entry)
        pins.enter_context(self.local.pinned(key))
        cached = self.local.lookup(key, entry.size)
        if cached is not None:
            return cached, Tier.NVME
        path, tier = self.ensure_efs(folder, entry)
        try:
            return self.local.admit(key, path, entry.size) or path, tier
        except OSError:  # the job still runs, reading the file from EFS
            log.warning("nvme cache: copying %s failed; reading it from EFS", key, exc_info=True)
            return path, tier

    def ensure_efs(self, folder: str, entry: ModelEntry) -> tuple[Path, Tier]:
        """The model's file on EFS, copied from S3 first unless its size and stamp match the inventory."""
        final = self.efs_root / folder / entry.name
        if _is_current(final, entry):
            return final, Tier.EFS
        final.parent.mkdir(parents=True, exist_ok=True)
        lock = LeaseLock(
            final.with_name(f".{final.name}.lock"), stale_after_s=self.stale_after_s, timeout_s=self.lock_timeout_s
        )
        with lock:
            if lock.taken_over is not None:
                with contextlib.suppress(FileNotFoundError):
                    temp_name(final, lock.taken_over).unlink()  # the dead holder's half-written copy
            if _is_current(final, entry):
                return final, Tier.EFS  # another worker copied it while we waited
            self._fetch(folder, entry, final, lock.holder)
        return final, Tier.S3

    def _fetch(self, folder: str, entry: ModelEntry, final: Path, owner: str) -> None:
        """Download to a temporary name while hashing, verify, rename, then stamp."""
        model, where = f"{folder}/{entry.name}", f"s3://{self.bucket}/{entry.s3_key(folder)}"
        temp = temp_name(final, owner)
        digest = hashlib.sha256()
        try:
            if entry.size > self.part_bytes:
                size = self._download_parts(folder, entry, temp, digest)
            else:
                size = self._download(folder, entry, temp, digest)
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
        stamp = temp_name(stamp_path(final), owner)
        stamp.write_text(entry.sha256)
        os.replace(stamp, stamp_path(final))

    def _get(self, folder: str, entry: ModelEntry, **extra: str) -> Any:
        """The body of a GET of the model's object (conditional on its ETag); errors name the model."""
        model, key = f"{folder}/{entry.name}", entry.s3_key(folder)
        where = f"s3://{self.bucket}/{key}"
        if entry.etag:
            extra["IfMatch"] = entry.etag
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise ModelStoreError(f"model {model}: {where} does not exist; run `comfyserve models sync`") from None
            if code in ("PreconditionFailed", "412"):
                raise ModelChanged(
                    f"model {model}: {where} changed since the inventory was published; run `comfyserve models sync`"
                ) from None
            if code in ("InvalidRange", "416"):
                raise ModelVerifyError(
                    f"model {model}: {where} is shorter than the {entry.size} bytes the inventory says; "
                    "run `comfyserve models sync`"
                ) from None
            raise ModelStoreError(f"model {model}: cannot read {where} ({code or exc})") from exc

    def _download(self, folder: str, entry: ModelEntry, temp: Path, digest: Any) -> int:
        size = 0
        with contextlib.closing(self._get(folder, entry)) as body, open(temp, "wb") as out:
            for chunk in body.iter_chunks(BUFFER):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        return size

    def _download_parts(self, folder: str, entry: ModelEntry, temp: Path, digest: Any) -> int:
        """Ranged GETs of ``part_bytes`` on ``parallel`` threads (one S3 connection tops out near 5 Gbit/s),
        written in place; this thread hashes the parts in order as they arrive, a bounded window ahead."""
        parts = iter(range(0, entry.size, self.part_bytes))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

        def part(start: int) -> bytes:
            end = min(start + self.part_bytes, entry.size) - 1
            with contextlib.closing(self._get(folder, entry, Range=f"bytes={start}-{end}")) as body:
                data: bytes = body.read()
            view, offset = memoryview(data), 0
            while offset < len(data):
                offset += os.pwrite(fd, view[offset:], start + offset)
            return data

        size = 0
        try:
            with ThreadPoolExecutor(self.parallel, thread_name_prefix="model-part") as pool:
                window: deque[Future[bytes]] = deque(pool.submit(part, s) for s in islice(parts, self.parallel + 2))
                try:
                    while window:
                        data = window.popleft().result()
                        digest.update(data)
                        size += len(data)
                        following = next(parts, None)
                        if following is not None:
                            window.append(pool.submit(part, following))
                except BaseException:
                    for future in window:
                        future.cancel()
                    raise
        finally:
            os.close(fd)
        return size

    def invalidate(self, folder: str, name: str) -> None:
        entry = self._entry(folder, name)
        if self.local is not None:
            self.local.discard(nvme_key(folder, entry))
        final = self.efs_root / folder / entry.name
        with contextlib.suppress(FileNotFoundError):
            if not _is_current(final, entry) or sha256_file(final) != entry.sha256:
                stamp_path(final).unlink(missing_ok=True)
                final.unlink()


def _is_current(path: Path, entry: ModelEntry) -> bool:
    try:
        return path.stat().st_size == entry.size and stamp_path(path).read_text() == entry.sha256
    except FileNotFoundError:
        return False
