"""Fast whole-file copies and checksums: ``copy_file_range`` (in-kernel, no user-space buffer), falling back
to ``sendfile`` and then to large buffered reads; every copy goes to a temporary name and is renamed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path

CHUNK = 1 << 30  # bytes asked of one copy_file_range / sendfile call (the kernel caps one call near 2 GiB)
BUFFER = 8 * 1024 * 1024  # bytes per read when hashing or when the kernel paths are unavailable
_UNSUPPORTED = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def temp_name(final: Path, owner: str) -> Path:
    """The temporary name ``owner`` writes ``final`` under: hidden, beside it, so the rename is atomic."""
    return final.with_name(f".{final.name}.{owner}.part")


def _kernel_copy(src: int, dst: int, size: int) -> bool:
    """Copy ``size`` bytes in the kernel; False when neither call is supported between these files."""
    for call in (os.copy_file_range, os.sendfile):
        copied = 0
        try:
            while copied < size:
                if call is os.sendfile:
                    n = os.sendfile(dst, src, copied, min(CHUNK, size - copied))
                else:
                    n = os.copy_file_range(src, dst, min(CHUNK, size - copied), copied, copied)
                if n == 0:
                    break
                copied += n
            return True
        except OSError as exc:
            if copied or exc.errno not in _UNSUPPORTED:
                raise
    return False


def _buffered_copy(src: int, dst: int) -> None:
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    with open(src, "rb", buffering=0, closefd=False) as reader, open(dst, "wb", buffering=0, closefd=False) as out:
        while n := reader.readinto(buffer):
            out.write(view[:n])


def copy_file(src: Path, dst: Path, owner: str) -> int:
    """Copy ``src`` to ``dst`` atomically (``dst`` is either absent or complete); returns the bytes copied."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(dst, owner)
    try:
        with open(src, "rb") as reader, open(temp, "wb") as writer:
            size = os.fstat(reader.fileno()).st_size
            os.posix_fadvise(reader.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            if not _kernel_copy(reader.fileno(), writer.fileno(), size):
                _buffered_copy(reader.fileno(), writer.fileno())
        copied = temp.stat().st_size
        if copied != size:
            raise OSError(f"copied {copied} of {size} bytes of {src}")
        os.replace(temp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return copied


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while n := file.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()
