"""BlobStore on a directory, with HMAC-signed local URLs standing in for S3 presigned URLs.

Layout under ``root``: ``objects/<key>`` holds the bytes, ``meta/<key>`` a small JSON (content type, etag),
``tmp/`` the files being written (same filesystem, so ``os.replace`` publishes them atomically). Keys pass
:func:`comfyserve.ports.validate_key` and the resolved path is checked against the root once more. Unlike
S3, a key cannot also be the directory of another key ("a" and "a/b"): such a put raises ``InvalidKey``.

Like a bucket that sends "Object Created" events, the store calls its listeners (:meth:`LocalBlobStore.
on_created`) with the key of every object it has written; the worker processes of the local stack run the
completion use case from there, as the cloud runs it from the S3 event. A listener runs in the writer's
process, after the object is in place; its failure is the put's failure (the writer then retries, as the
cloud's event delivery does).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from comfyserve.ports import BlobInfo, BlobNotFound, InvalidKey, PortError, validate_key, validate_prefix

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class PresignedUrlInvalid(PortError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"presigned URL rejected: {reason}")
        self.reason = reason


class BlobUrlSigner:
    """Signs and verifies ``{base_url}/v1/blobs/{key}?expires=<unix>&sig=<hex>`` URLs.

    The signature is HMAC-SHA256 over method, key, expiry and (for PUT) the content type the uploader must
    send. The local HTTP server calls :meth:`verify` with the request's values before serving the blob.
    """

    def __init__(self, base_url: str, secret: bytes) -> None:
        if not secret:
            raise ValueError("a signing secret is required")
        self._base_url = base_url.rstrip("/")
        self._secret = secret

    def _signature(self, method: str, key: str, expires: int, content_type: str) -> str:
        message = f"{method.upper()}\n{key}\n{expires}\n{content_type}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign_url(self, method: str, key: str, expires_s: int, content_type: str = "", now: float | None = None) -> str:
        validate_key(key)
        if expires_s <= 0:
            raise ValueError("expires_s must be positive")
        expires = int(now if now is not None else time.time()) + expires_s
        signature = self._signature(method, key, expires, content_type)
        return f"{self._base_url}/v1/blobs/{quote(key, safe='/')}?expires={expires}&sig={signature}"

    def verify(
        self,
        method: str,
        key: str,
        expires: str | None,
        sig: str | None,
        content_type: str = "",
        now: float | None = None,
    ) -> None:
        """Raise :class:`PresignedUrlInvalid` unless the URL parameters authorise ``method`` on ``key`` now."""
        if not expires or not sig:
            raise PresignedUrlInvalid("missing expires or sig")
        try:
            expires_at = int(expires)
        except ValueError:
            raise PresignedUrlInvalid("malformed expires") from None
        if not hmac.compare_digest(self._signature(method, key, expires_at, content_type), sig):
            raise PresignedUrlInvalid("bad signature")
        if (now if now is not None else time.time()) > expires_at:
            raise PresignedUrlInvalid("expired")


class LocalBlobStore:
    """Blobs as files under ``root``; every put is atomic (temp file, then ``os.replace``).

    ``durable`` (default ``False``) also fsyncs each file before publishing it. Without it a process crash still
    never shows a partial blob, but a power loss may lose (or leave empty) blobs written in the last seconds. That
    suits the local stack: the SQLite job record is the source of truth and outputs can be re-created by
    re-running the job, while two fsyncs per put (meta and object) cost most of a worker's time per small job.
    """

    def __init__(self, root: Path, signer: BlobUrlSigner, *, durable: bool = False) -> None:
        self.root = root.resolve()
        self.signer = signer
        self.durable = durable
        self._objects = self.root / "objects"
        self._meta = self.root / "meta"
        self._tmp = self.root / "tmp"
        self._listeners: builtins.list[Callable[[str], object]] = []
        for folder in (self._objects, self._meta, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def _path(self, base: Path, key: str) -> Path:
        path = base.joinpath(*validate_key(key).split("/"))
        if not path.resolve().is_relative_to(base):
            raise InvalidKey(key, "escapes the blob root")
        return path

    def _write_atomic(self, key: str, target: Path, data: bytes) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    if self.durable:
                        handle.flush()
                        os.fsync(handle.fileno())
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            raise InvalidKey(key, "collides with another key's path") from None

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> BlobInfo:
        info = BlobInfo(key=key, size=len(data), content_type=content_type, etag=_etag(data))
        meta = json.dumps({"content_type": info.content_type, "etag": info.etag}).encode()
        self._write_atomic(key, self._path(self._meta, key), meta)
        self._write_atomic(key, self._path(self._objects, key), data)
        for listener in self._listeners:
            listener(key)
        return info

    def on_created(self, listener: Callable[[str], object]) -> None:
        """Call ``listener(key)`` after each put, as S3 sends an "Object Created" event."""
        self._listeners.append(listener)

    def get(self, key: str) -> bytes:
        try:
            return self._path(self._objects, key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None

    def head(self, key: str) -> BlobInfo | None:
        path = self._path(self._objects, key)
        if not path.is_file():
            return None
        try:
            meta = json.loads(self._path(self._meta, key).read_bytes())
        except (FileNotFoundError, ValueError):
            meta = {"content_type": DEFAULT_CONTENT_TYPE, "etag": _etag(path.read_bytes())}
        return BlobInfo(key=key, size=path.stat().st_size, content_type=meta["content_type"], etag=meta["etag"])

    def list(self, prefix: str = "") -> builtins.list[str]:
        validate_prefix(prefix)
        # Walk only the deepest directory the prefix names completely, then filter by the plain prefix.
        folder = prefix.rpartition("/")[0]
        start = self._objects.joinpath(*folder.split("/")) if folder else self._objects
        keys = []
        for dirpath, _dirnames, filenames in os.walk(start):
            relative = Path(dirpath).relative_to(self._objects).as_posix()
            for name in filenames:
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        for base in (self._objects, self._meta):
            with contextlib.suppress(IsADirectoryError, NotADirectoryError):
                self._path(base, key).unlink(missing_ok=True)

    def presigned_get(self, key: str, expires_s: int = 3600) -> str:
        return self.signer.sign_url("GET", key, expires_s)

    def presigned_put(self, key: str, expires_s: int = 3600, content_type: str = DEFAULT_CONTENT_TYPE) -> str:
        return self.signer.sign_url("PUT", key, expires_s, content_type)
