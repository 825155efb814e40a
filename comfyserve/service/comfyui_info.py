"""ComfyUI's informational routes over the catalog, the model inventory and the tenant's uploads: the choices
of model-name and image inputs in ``/object_info``, ``/models``, ``/embeddings``, ``/system_stats`` and
``/features`` (reference §2.1).

The API runs apart from the GPU workers, so ``/system_stats`` describes the API host and names no GPU."""

from __future__ import annotations

import itertools
import mimetypes
import os
import platform
import posixpath
import sys
from typing import Any

from comfyserve import __version__
from comfyserve.engine.inventory import FOLDER_ALIASES, ModelInventory
from comfyserve.engine.node_api import takes_upload, upload_media
from comfyserve.service import keys
from comfyserve.service.assets import ASSETS_FOLDER
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import NotFound

MODEL_FOLDER = "model_folder"
MAX_LISTED_UPLOADS = 1000
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # ComfyUI's default --max-upload-size
FEATURE_FLAGS: dict[str, Any] = {"supports_preview_metadata": False, "max_upload_size": MAX_UPLOAD_BYTES}


def _combo(declaration: Any) -> dict[str, Any] | None:
    """The options of a combo declaration, ``[[choices…], {options}]`` or V3's ``["COMBO", {"options": …}]``;
    ``None`` for any other."""
    if not (isinstance(declaration, list) and len(declaration) > 1 and isinstance(declaration[1], dict)):
        return None
    options: dict[str, Any] = declaration[1]
    return options if isinstance(declaration[0], list) or declaration[0] == "COMBO" else None


def _is_video(name: str) -> bool:
    return (mimetypes.guess_type(name)[0] or "").startswith("video/")


def with_choices(object_info: dict[str, Any], models: dict[str, list[str]], images: list[str]) -> dict[str, Any]:
    """``object_info`` with each model-name input listing ``models[folder]`` and each upload input listing the
    uploads ``images``: a video input (Load Video) those named as videos, any other the rest, as ComfyUI lists
    its model folders and input directory by content type. ``object_info`` is not changed."""
    filled = dict(object_info)
    for name, info in object_info.items():
        inputs = info.get("input") or {}
        changed: dict[str, dict[str, Any]] = {}
        for kind, declared in inputs.items():
            for input_name, declaration in declared.items():
                options = _combo(declaration)
                if options is None:
                    continue
                if MODEL_FOLDER in options:
                    choices = models.get(str(options[MODEL_FOLDER]), [])
                elif takes_upload(options):
                    video = upload_media(options) == "video"
                    choices = [n for n in images if _is_video(n) == video]
                else:
                    continue
                if declaration[0] == "COMBO":
                    changed.setdefault(kind, dict(declared))[input_name] = ["COMBO", {**options, "options": choices}]
                else:
                    changed.setdefault(kind, dict(declared))[input_name] = [list(choices), options]
        if changed:
            filled[name] = {**info, "input": {**inputs, **changed}}
    return filled


def model_files(inventory: ModelInventory | None) -> dict[str, list[str]]:
    """Model file names by ComfyUI folder (every known folder, empty without an inventory)."""
    if inventory is None:
        return {folder: [] for folder in FOLDER_ALIASES}
    # names() first: a published inventory refreshes its listing there, and only then are its folders known.
    files = {folder: list(inventory.names(folder)) for folder in FOLDER_ALIASES}
    files.update({folder: list(inventory.names(folder)) for folder in inventory.files})
    return files


def uploaded_images(deps: ServiceDeps, tenant: str) -> list[str]:
    """The tenant's uploads as a ``LoadImage`` names them (``subfolder/name``), at most ``MAX_LISTED_UPLOADS``;
    Comfy API v2 asset bytes (named by hash, referenced by asset id) are not listed."""
    prefix = keys.uploads_prefix(tenant)
    names = (key[len(prefix) :] for key in deps.blobs.list(prefix))
    return list(itertools.islice((name for name in names if not name.startswith(ASSETS_FOLDER)), MAX_LISTED_UPLOADS))


def folder_files(inventory: ModelInventory | None, folder: str) -> list[str]:
    """``GET /models/{folder}``; :class:`NotFound` for a folder ComfyUI does not have."""
    files = model_files(inventory)
    if folder not in files:
        raise NotFound("Unknown model folder", type_="unknown_folder", details=f"folders: {', '.join(files)}")
    return files[folder]


def embeddings(inventory: ModelInventory | None) -> list[str]:
    """Embedding names as ComfyUI lists them: without their file extension."""
    return [posixpath.splitext(name)[0] for name in model_files(inventory)["embeddings"]]


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 0, 0


def system_stats() -> dict[str, Any]:
    """ComfyUI's ``/system_stats`` for this API host: jobs run on separate workers, so the one device listed
    is this host's CPU, as ComfyUI lists itself in CPU mode."""
    ram_total, ram_free = _memory()
    return {
        "system": {
            "os": platform.system().lower() or sys.platform,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": f"comfyserve-{__version__}",
            "required_frontend_version": "",
            "installed_templates_version": "",
            "required_templates_version": "",
            "python_version": sys.version,
            "pytorch_version": "",
            "embedded_python": False,
            "argv": ["comfyserve"],
        },
        "devices": [
            {
                "name": "cpu",
                "type": "cpu",
                "index": None,
                "vram_total": 0,
                "vram_free": 0,
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
        ],
    }
