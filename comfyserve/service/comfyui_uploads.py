"""ComfyUI's ``POST /upload/image`` over the blob store, per tenant: an image is stored at
``uploads/{tenant}/{subfolder/}{name}``, a ``LoadImage`` value that names it becomes a job input, and
``GET /view?type=input`` serves it back.

Every upload type (input, temp, output) lands in the tenant's upload folder; the response echoes the type as
ComfyUI does. A name taken by other content becomes ``name (1).ext``, ``name (2).ext`` … unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from comfyserve.contracts.jobs import OutputRef
from comfyserve.engine.errors import WorkflowFormatError
from comfyserve.engine.node_api import IMAGE_UPLOAD
from comfyserve.engine.prompt_format import workflow_from_json
from comfyserve.ports import InvalidKey, validate_key
from comfyserve.service import keys
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Conflict, Invalid
from comfyserve.service.models import InputSource

UPLOAD_TYPES = ("input", "temp", "output")
# Pillow format → the content type the blob is stored (and served) with; MPO is a multi-picture JPEG.
IMAGE_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
FORMAT_NAMES = ", ".join(sorted(IMAGE_FORMATS.keys() - {"MPO"}))
# Below Pillow's own bomb limits (a warning above 89M pixels, an error above twice that).
MAX_UPLOAD_PIXELS = 8192 * 8192
# Short enough that "subfolder/name (N).ext [input]" stays a valid job input name (256 characters).
MAX_NAME_CHARS = 128
MAX_SUBFOLDER_CHARS = 100
MAX_RENAMES = 1000
# ComfyUI's annotated file names: "name [input]" and the like name a file of that folder.
ANNOTATIONS = tuple(f" [{kind}]" for kind in UPLOAD_TYPES)


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
    content_type = image_content_type(name, upload.data)
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


def image_content_type(name: str, data: bytes) -> str:
    """The content type of an image in one of ``IMAGE_FORMATS``, read from its header and checked with Pillow's
    ``verify`` (no pixels decoded); :class:`Invalid` for anything else and for decompression bombs."""
    from PIL import Image  # imported here: the API's other routes never load Pillow

    try:
        with Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS)) as image:
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}x{image.height}")
            image.verify()
            kind = image.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning, where it is an error
        details = f"{name!r} is over {MAX_UPLOAD_PIXELS:,} pixels"
        raise _invalid("Image too large", details, "image_too_large") from None
    except Exception:  # Pillow raises many exception types on malformed data
        details = f"{name!r} is not a valid image ({FORMAT_NAMES})"
        raise _invalid("Invalid image", details, "invalid_image") from None
    return IMAGE_FORMATS.get(kind or "", "application/octet-stream")


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


def _key(tenant: str, path: str) -> str | None:
    try:
        return validate_key(keys.uploads_prefix(tenant) + path) if path else None
    except InvalidKey:
        return None


def upload_key(tenant: str, value: str) -> str | None:
    """The key a ``LoadImage`` value ("name", "subfolder/name", "name [input]") names, ``None`` for a value that
    cannot name an upload."""
    return _key(tenant, next((value.removesuffix(a) for a in ANNOTATIONS if value.endswith(a)), value))


def image_values(deps: ServiceDeps, prompt: Any) -> Iterator[str]:
    """The string values of every image-upload input (``LoadImage.image`` …) in ``prompt``."""
    try:
        nodes = workflow_from_json(prompt)
    except WorkflowFormatError:
        return  # validation reports it
    for node in nodes.values():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        spec = deps.catalog.specs.get(class_type) if isinstance(class_type, str) else None
        values = node.get("inputs") if spec is not None else None
        if spec is None or not isinstance(values, dict):
            continue
        for name, input_spec in spec.inputs.items():
            value = values.get(name)
            if input_spec.options.get(IMAGE_UPLOAD) and isinstance(value, str):
                yield value


def is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def attach_uploads(
    deps: ServiceDeps, tenant: str, prompt: Any, supplied: Mapping[str, InputSource]
) -> dict[str, InputSource]:
    """The inputs an image-upload value of ``prompt`` names without being in ``supplied``: one of the tenant's
    uploads (``{"key": upload}``), or an http(s) URL, as cog-style workflows name images (``{"url": value}``,
    fetched at submit time with every URL input). Any other value stays as it is (validation refuses it)."""
    attached: dict[str, InputSource] = {}
    for value in dict.fromkeys(image_values(deps, prompt)):
        if value in supplied:
            continue
        if is_url(value):
            with contextlib.suppress(ValidationError):  # a URL too long to be an input: validation refuses it
                attached[value] = InputSource(url=value)
            continue
        key = upload_key(tenant, value)
        if key is not None and deps.blobs.head(key) is not None:
            attached[value] = InputSource(key=key)
    return attached


def find_upload(deps: ServiceDeps, tenant: str, path: str) -> OutputRef | None:
    """The upload at ``subfolder/name`` as a file ``/view`` serves (no node: ``node_id`` is empty)."""
    key = _key(tenant, path)
    info = deps.blobs.head(key) if key is not None else None
    if info is None:
        return None
    return OutputRef(node_id="", key=info.key, filename=path, content_type=info.content_type, size=info.size)
