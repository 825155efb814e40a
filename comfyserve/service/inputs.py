"""Input resolution: ``{url | key | base64}`` per input name → :class:`InputRef` (a blob key).

Every input is checked before anything is written, so a bad input leaves nothing behind: keys must be the
tenant's own existing uploads, base64 must decode within the size limit, and once those cheap checks pass, URLs
are fetched here, at submit time (comfyserve.service.url_inputs: the SSRF guard, no redirects, a size cap, a
deadline), never by a worker. Then base64 and URL inputs are claim-checked into the blob store under
deterministic per-job keys, so the record and the queue message carry keys only.

This module is the one home of a submit's input checks: which values of the prompt name uploaded media
(:func:`upload_values`: images, videos …), which of them name an upload or a URL (:func:`attach_uploads`), what
an image must be (:func:`image_content_type`: a known format, read from its header, within the pixel cap),
what a video must be (:func:`video_content_type`: a known container by its signature; its frames are capped
where they are decoded, by the worker) and the resolution itself. ComfyUI's upload route
(comfyserve.service.comfyui_uploads) applies the same checks.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from comfyserve.contracts.jobs import InputRef
from comfyserve.engine.node_api import upload_media
from comfyserve.netguard import UnsafeURL
from comfyserve.ports import InvalidKey, validate_key
from comfyserve.service import keys, url_inputs
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Invalid, TooLarge
from comfyserve.service.models import InputSource
from comfyserve.service.uploads import check_upload_key

MAX_NAME_LENGTH = 256
UPLOAD_TYPES = ("input", "temp", "output")
# ComfyUI's annotated file names: "name [input]" and the like name a file of that folder.
ANNOTATIONS = tuple(f" [{kind}]" for kind in UPLOAD_TYPES)
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
# Below Pillow's own bomb limits (a warning above 89M pixels, an error above twice that): the cap whatever
# COMFYSERVE_MAX_PIXELS says.
MAX_UPLOAD_PIXELS = 8192 * 8192
DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.-]+)*;base64,")
MAGIC_TYPES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


@dataclass(frozen=True)
class _Blob:
    name: str
    data: bytes
    content_type: str


CHECKED_MEDIA = ("image", "video")  # the upload media whose bytes are checked before a job takes them
VIDEO_NAMES = "MP4, MOV, WEBM, MKV, AVI"
EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # Matroska and WebM


def sniff_video_type(data: bytes) -> str | None:
    """The content type of a video container recognised by its signature (ISO BMFF ``ftyp``, EBML, RIFF AVI)."""
    if data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:12] == b"qt  " else "video/mp4"
    if data.startswith(EBML_MAGIC):
        return "video/webm" if b"webm" in data[:64] else "video/x-matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/x-msvideo"
    return None


def sniff_content_type(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    image = next((kind for magic, kind in MAGIC_TYPES if data.startswith(magic)), None)
    return image or sniff_video_type(data) or "application/octet-stream"


def video_content_type(name: str, data: bytes) -> str:
    """The content type of a video in a known container (:func:`sniff_video_type`); :class:`Invalid` for
    anything else. Nothing is decoded here (the edge has no codecs): the worker caps the decoded frames, each
    within ``COMFYSERVE_MAX_PIXELS`` and all together within one image file's budget."""
    kind = sniff_video_type(data)
    if kind is None:
        raise Invalid("Invalid video", type_="invalid_video", details=f"{name!r} is not a video ({VIDEO_NAMES})")
    return kind


def media_content_type(name: str, data: bytes, max_pixels: int = MAX_UPLOAD_PIXELS) -> str:
    """The content type of an uploaded image or video: a video by its container signature, else checked as an
    image (:func:`image_content_type`)."""
    return sniff_video_type(data) or image_content_type(name, data, max_pixels)


def pixel_cap(deps: ServiceDeps) -> int:
    """The most pixels an image input may have: ``COMFYSERVE_MAX_PIXELS``, never above :data:`MAX_UPLOAD_PIXELS`."""
    cap = deps.settings.limits.max_pixels
    return MAX_UPLOAD_PIXELS if cap is None else min(cap, MAX_UPLOAD_PIXELS)


def image_content_type(name: str, data: bytes, max_pixels: int = MAX_UPLOAD_PIXELS) -> str:
    """The content type of an image in one of ``IMAGE_FORMATS``, its size read from its header and its data
    checked with Pillow's ``verify`` (no pixels decoded); :class:`Invalid` for anything else and for an image
    over ``max_pixels``."""
    from PIL import Image  # imported here: the API's other routes never load Pillow

    try:
        with Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS)) as image:
            width, height = image.size
            if width * height > max_pixels:
                details = f"{name!r} is {width}x{height}, over the limit of {max_pixels:,} pixels"
                raise Invalid("Image too large", type_="image_too_large", details=details)
            image.verify()
            kind = image.format
    except Invalid:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning, where it is an error
        details = f"{name!r} is over the limit of {max_pixels:,} pixels"
        raise Invalid("Image too large", type_="image_too_large", details=details) from None
    except Exception:  # Pillow raises many exception types on malformed data
        details = f"{name!r} is not a valid image ({FORMAT_NAMES})"
        raise Invalid("Invalid image", type_="invalid_image", details=details) from None
    return IMAGE_FORMATS.get(kind or "", "application/octet-stream")


def upload_path_key(tenant: str, path: str) -> str | None:
    """The key of the tenant's upload at ``subfolder/name``, ``None`` for a path that cannot be one."""
    try:
        return validate_key(keys.uploads_prefix(tenant) + path) if path else None
    except InvalidKey:
        return None


def upload_key(tenant: str, value: str) -> str | None:
    """The key a ``LoadImage`` value ("name", "subfolder/name", "name [input]") names, ``None`` for a value that
    cannot name an upload."""
    return upload_path_key(tenant, next((value.removesuffix(a) for a in ANNOTATIONS if value.endswith(a)), value))


def upload_values(deps: ServiceDeps, prompt: Mapping[str, Any]) -> dict[str, str]:
    """The string value of every upload input of the parsed ``prompt`` (``LoadImage.image``,
    ``LoadVideo.file`` …) and the media it takes (``"image"``, ``"video"`` …)."""
    return dict(_upload_values(deps, prompt))


def _upload_values(deps: ServiceDeps, prompt: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for node in prompt.values():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        spec = deps.catalog.specs.get(class_type) if isinstance(class_type, str) else None
        values = node.get("inputs") if spec is not None else None
        if spec is None or not isinstance(values, dict):
            continue
        for name, input_spec in spec.inputs.items():
            value = values.get(name)
            media = upload_media(input_spec.options)
            if media is not None and isinstance(value, str):
                yield value, media


def is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def attach_uploads(
    deps: ServiceDeps, tenant: str, images: Collection[str], supplied: Mapping[str, InputSource]
) -> dict[str, InputSource]:
    """The inputs an upload value (of :func:`upload_values`) names without being in ``supplied``: one of the
    tenant's uploads (``{"key": upload}``), or an http(s) URL, as cog-style workflows name images (``{"url":
    value}``, fetched at submit time with every URL input). Any other value stays as it is (validation refuses
    it)."""
    attached: dict[str, InputSource] = {}
    for value in dict.fromkeys(images):
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


def resolve_inputs(
    deps: ServiceDeps,
    tenant: str,
    job_id: str,
    sources: Mapping[str, InputSource],
    written: list[str],
    media: Mapping[str, str] | None = None,
) -> dict[str, InputRef]:
    """Check every input and fetch the URL ones, then write the inline and fetched ones (appending their keys
    to ``written`` as it goes); :class:`Invalid`, :class:`Forbidden` or :class:`TooLarge`, naming the input,
    before any write. Inputs ``media`` names (of :func:`upload_values`) get ``POST /upload/image``'s checks:
    an image readable, not truncated, within the pixel cap (:func:`pixel_cap`) by its header; a video in a
    known container."""
    media = media or {}
    if len(sources) > deps.settings.max_inputs:
        raise Invalid("Too many inputs", type_="invalid_input", details=f"at most {deps.settings.max_inputs}")
    refs: dict[str, InputRef] = {}
    blobs: list[_Blob] = []
    urls: dict[str, str] = {}
    for name, source in sources.items():
        _check_name(name)
        if source.url is not None:
            urls[name] = source.url  # fetched once every other input has passed its checks
        elif source.key is not None:
            refs[name] = _upload_ref(deps, tenant, name, source.key, source.content_type, media.get(name))
        else:
            blobs.append(_checked(deps, _decode(deps, name, source), media))
    deadline = time.monotonic() + deps.settings.url_fetch_timeout_s
    for name, url in urls.items():
        blobs.append(_checked(deps, _fetch(deps, name, url, sources[name].content_type, deadline), media))
    for blob in blobs:
        key = keys.input_key(tenant, job_id, blob.name)
        deps.blobs.put(key, blob.data, blob.content_type)
        written.append(key)
        refs[blob.name] = InputRef(key=key, content_type=blob.content_type)
    return refs


def _invalid(name: str, message: str, details: str) -> Invalid:
    return Invalid(message, type_="invalid_input", details=f"input {name!r}: {details}", extra_info={"input": name})


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise _invalid(name[:40], "Invalid input name", f"a name is 1-{MAX_NAME_LENGTH} printable characters")


def _fetch(deps: ServiceDeps, name: str, url: str, content_type: str | None, deadline: float) -> _Blob:
    limit = deps.settings.max_url_input_bytes
    try:
        fetched = url_inputs.fetch(
            url, max_bytes=limit, deadline=deadline, allow_private=deps.settings.allow_private_urls
        )
    except UnsafeURL as exc:
        raise _invalid(name, "Input URL refused", exc.reason) from None
    except url_inputs.FetchTooLarge:
        raise _too_large(name, limit) from None
    except url_inputs.FetchFailed as exc:
        raise _invalid(name, "Input URL could not be fetched", exc.reason) from None
    return _Blob(name, fetched.data, content_type or fetched.content_type or sniff_content_type(fetched.data))


def _upload_ref(
    deps: ServiceDeps, tenant: str, name: str, key: str, content_type: str | None, media: str | None
) -> InputRef:
    info = deps.blobs.head(check_upload_key(tenant, key, f"input {name!r}"))
    if info is None:
        raise _invalid(name, "Input key not found", f"nothing was uploaded to {key}")
    if media in CHECKED_MEDIA:
        return InputRef(key=key, content_type=_media_type(deps, name, deps.blobs.get(key), media))
    return InputRef(key=key, content_type=content_type or info.content_type)


def _checked(deps: ServiceDeps, blob: _Blob, media: Mapping[str, str]) -> _Blob:
    """``blob`` with the content type its bytes verify as, when a node loads it as an image or a video."""
    kind = media.get(blob.name)
    if kind not in CHECKED_MEDIA:
        return blob
    return _Blob(blob.name, blob.data, _media_type(deps, blob.name, blob.data, kind))


def _media_type(deps: ServiceDeps, name: str, data: bytes, media: str | None) -> str:
    try:
        return video_content_type(name, data) if media == "video" else image_content_type(name, data, pixel_cap(deps))
    except Invalid as exc:
        raise Invalid(exc.message, type_=exc.type, details=exc.details, extra_info={"input": name}) from None


def _too_large(name: str, limit: int) -> TooLarge:
    return TooLarge(
        "Input too large",
        type_="input_too_large",
        details=f"input {name!r} is over {limit} bytes; upload it with POST /v1/uploads instead",
        extra_info={"input": name, "limit": limit},
    )


def _decode(deps: ServiceDeps, name: str, source: InputSource) -> _Blob:
    text = "".join((source.base64 or "").split())
    declared = None
    match = DATA_URL.match(text)
    if match:
        declared, text = match.group(1), text[match.end() :]
    limit = deps.settings.max_inline_input_bytes
    if len(text) // 4 * 3 - 2 > limit:  # refuse before decoding
        raise _too_large(name, limit)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(name, "Invalid base64 input", "not valid base64") from None
    if len(data) > limit:
        raise _too_large(name, limit)
    return _Blob(name, data, source.content_type or declared or sniff_content_type(data))
