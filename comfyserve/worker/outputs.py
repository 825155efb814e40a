"""Publishing a job's results to the blob store: images under deterministic keys, then ``manifest.json``.

Keys are ``outputs/{tenant}/{job_id}/{subfolder/}{filename}``: a re-run of the same job (a redelivery after
a crash) writes the same keys, so duplicates overwrite instead of adding. The manifest is written last, so a
reader (or the cloud's completion handler, triggered by its creation) that sees it knows every output it
lists is complete.
"""

from __future__ import annotations

import io
import mimetypes
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from comfyserve.contracts.jobs import OutputOptions, OutputRef, OutputType
from comfyserve.contracts.manifest import JobManifest, job_prefix, manifest_key
from comfyserve.ports import BlobStore

DEFAULT_QUALITY = 90
# By suffix, whatever the platform's mimetypes table holds (webp and webm are missing from some).
CONTENT_TYPES = {
    "webp": "image/webp",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "mp4": "video/mp4",
    "webm": "video/webm",
}
SUFFIXES = {"webp": ".webp", "jpeg": ".jpg"}


@dataclass(frozen=True)
class LocalOutput:
    """One file a run wrote: its node, its file, its name relative to the job (``subfolder/filename``) and
    ComfyUI's folder type (``temp`` for previews)."""

    node_id: str
    path: Path
    relative_name: str
    type: OutputType = "output"


def _is_file_entry(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("filename"), str)


def file_entries(ui: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every file entry of a node's UI output, whatever its key (images, gifs, audio, video, 3d …)."""
    for items in ui.values():
        if isinstance(items, list):
            yield from (item for item in items if _is_file_entry(item))


def non_file_ui(ui: Mapping[str, Any]) -> dict[str, Any]:
    """A node's UI output less its file lists: text, numbers and flags (``PreviewAny``'s ``text``, the
    ``animated`` flag of animated and video savers), tuples as the lists JSON makes of them."""
    return {
        key: _as_json(value)
        for key, value in ui.items()
        if not (isinstance(value, list) and value and all(_is_file_entry(item) for item in value))
    }


def _as_json(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_as_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    return value


def encode(output: LocalOutput, options: OutputOptions) -> tuple[str, bytes, str]:
    """The name, bytes and content type to publish: files as written for ``png`` (a PNG carries the prompt),
    else still images re-encoded to webp or jpeg with the requested quality. Videos, audio and animated images
    (SaveAnimatedWEBP, SaveAnimatedPNG) are always published as written: re-encoding would keep one frame."""
    data = output.path.read_bytes()
    content_type = CONTENT_TYPES.get(output.path.suffix.lstrip(".").lower())
    content_type = content_type or mimetypes.guess_type(output.relative_name)[0] or "application/octet-stream"
    if options.format == "png" or not content_type.startswith("image/"):
        return output.relative_name, data, content_type
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if getattr(image, "is_animated", False):
            return output.relative_name, data, content_type
        image.load()
        keep_alpha = options.format == "webp" and image.mode in ("RGB", "RGBA")
        converted = image if keep_alpha else image.convert("RGB")
        buffer = io.BytesIO()
        converted.save(buffer, format=options.format.upper(), quality=options.quality or DEFAULT_QUALITY)
    name = PurePosixPath(output.relative_name).with_suffix(SUFFIXES[options.format]).as_posix()
    return name, buffer.getvalue(), CONTENT_TYPES[options.format]


def upload_outputs(
    blobs: BlobStore, tenant: str, job_id: str, outputs: list[LocalOutput], options: OutputOptions
) -> list[OutputRef]:
    refs = []
    for output in outputs:
        name, data, content_type = encode(output, options)
        key = job_prefix(tenant, job_id) + name
        info = blobs.put(key, data, content_type)
        refs.append(
            OutputRef(
                node_id=output.node_id,
                key=key,
                filename=name,
                content_type=content_type,
                size=info.size,
                type=output.type,
            )
        )
    return refs


def write_manifest(blobs: BlobStore, manifest: JobManifest) -> str:
    """Write the manifest: the job's last object (its creation starts the completion path)."""
    key = manifest_key(manifest.tenant, manifest.job_id)
    blobs.put(key, manifest.to_bytes(), "application/json")
    return key
