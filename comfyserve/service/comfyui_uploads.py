"""ComfyUI's ``POST /upload/image`` over the blob store, per tenant: an image (or a video: ComfyUI's editor
uploads Load Video's files here too) is stored at
``uploads/{tenant}/{subfolder/}{name}``, a ``LoadImage`` value that names it becomes a job input
(comfyserve.service.inputs, which also holds the image check both apply), and ``GET /view?type=input`` serves
it back.

Every upload type (input, temp, output) lands in the tenant's upload folder; the response echoes the type as
ComfyUI does. A name taken by other content becomes ``name (1).ext``, ``name (2).ext`` … unless ``overwrite``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from comfyserve.contracts.jobs import OutputRef
from comfyserve.ports import InvalidKey, validate_key
from comfyserve.service import keys
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Conflict, Invalid
from comfyserve.service.inputs import UPLOAD_TYPES, media_content_type, pixel_cap, upload_path_key

# Short enough that "subfolder/name (N).ext [input]" stays a valid job input name (256 characters).
MAX_NAME_CHARS = 128
MAX_SUBFOLDER_CHARS = 100
MAX_RENAMES = 1000


@dataclass(frozen=True)
class ImageUpload:
    filename: str
    data: bytes
    type: str = "input"
    subfolder: str = ""
    overwrite: bool = False


@dataclass(frozen=True)
class UploadedImage:
    name: str
    subfolder: str
    type: str


def _invalid(message: str, details: str, type_: str = "invalid_upload") -> Invalid:
    return Invalid(message, type_=type_, details=details)


def upload_image(deps: ServiceDeps, tenant: str, upload: ImageUpload) -> UploadedImage:
    """Check the upload (type, names, image), then store it under a free name; nothing is stored on error."""
    if upload.type not in UPLOAD_TYPES:
        raise _invalid("Invalid type", f"type must be one of {', '.join(UPLOAD_TYPES)}, not {upload.type!r}")
    name = _check_name(upload.filename)
    subfolder = _check_subfolder(upload.subfolder)
    content_type = media_content_type(name, upload.data, pixel_cap(deps))
    folder = keys.uploads_prefix(tenant) + (f"{subfolder}/" if subfolder else "")
    name, stored = (name, False) if upload.overwrite else _free_name(deps, folder, name, upload.data)
    if not stored:
        deps.blobs.put(folder + name, upload.data, content_type)
    return UploadedImage(name, subfolder, upload.type)


def _check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise _invalid("Invalid file name", f"a file name is 1-{MAX_NAME_CHARS} printable characters")
    if name in (".", "..") or "/" in name or "\\" in name:
        raise _invalid("Invalid file name", f"{name!r} is not a plain file name (no '/', '\\' or '..')")
    return name


def _check_subfolder(subfolder: str) -> str:
    folder = subfolder.removesuffix("/")
    if len(folder) > MAX_SUBFOLDER_CHARS:
        raise _invalid("Invalid subfolder", f"a subfolder is at most {MAX_SUBFOLDER_CHARS} characters")
    try:
        return validate_key(folder) if folder else ""
    except InvalidKey as exc:
        raise _invalid("Invalid subfolder", f"subfolder {subfolder!r}: {exc.reason}") from None


def _free_name(deps: ServiceDeps, folder: str, name: str, data: bytes) -> tuple[str, bool]:
    """ComfyUI's choice of name: ``name`` when free or holding the same bytes (then already stored), else the
    first free ``stem (i).ext``."""
    info = deps.blobs.head(folder + name)
    if info is None:
        return name, False
    if info.size == len(data) and deps.blobs.get(folder + name) == data:
        return name, True
    stem, ext = posixpath.splitext(name)
    for index in range(1, MAX_RENAMES + 1):
        candidate = f"{stem} ({index}){ext}"
        if deps.blobs.head(folder + candidate) is None:
            return candidate, False
    raise Conflict("Too many files with this name", type_="upload_name_taken", details=f"{name!r}: use overwrite")


def find_upload(deps: ServiceDeps, tenant: str, path: str) -> OutputRef | None:
    """The upload at ``subfolder/name`` as a file ``/view`` serves (no node: ``node_id`` is empty)."""
    key = upload_path_key(tenant, path)
    info = deps.blobs.head(key) if key is not None else None
    if info is None:
        return None
    return OutputRef(node_id="", key=info.key, filename=path, content_type=info.content_type, size=info.size)
