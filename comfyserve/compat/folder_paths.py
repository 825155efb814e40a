"""``folder_paths`` over the model inventory and the running job's folders.

Model folders are the inventory's (``checkpoints``, ``loras`` ...); the output, temp and input directories are
the job's own, so a pack that saves through them writes where the job's outputs are collected.
"""

from __future__ import annotations

import os
from pathlib import Path

from comfyserve.engine import context
from comfyserve.engine.node_api import active_inventory
from comfyserve.nodes.image_io import resolve_save_target

SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def _job() -> context.RunContext:
    return context.current()


def _root() -> Path:
    return active_inventory().root or Path("models")


models_dir = str(_root())


def get_filename_list(folder_name: str) -> list[str]:
    return list(active_inventory().names(folder_name))


def get_full_path(folder_name: str, filename: str) -> str | None:
    try:
        return str(active_inventory().path(folder_name, filename))
    except FileNotFoundError:
        return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    return str(active_inventory().path(folder_name, filename))


def get_folder_paths(folder_name: str) -> list[str]:
    return [str(_root() / folder_name)]


def get_output_directory() -> str:
    return str(_job().output_dir)


def get_temp_directory() -> str:
    return str(_job().temp_dir)


def get_input_directory() -> str:
    return str(_job().input_dir)


def get_directory_by_type(type_name: str) -> str | None:
    folders = {"output": get_output_directory, "temp": get_temp_directory, "input": get_input_directory}
    return folders[type_name]() if type_name in folders else None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """An input file's path; ``name [output]`` / ``[temp]`` / ``[input]`` pick the folder."""
    for suffix, folder in ((" [output]", "output"), (" [temp]", "temp"), (" [input]", "input")):
        if name.endswith(suffix):
            base = get_directory_by_type(folder)
            assert base is not None
            return os.path.join(base, name[: -len(suffix)])
    return str(_job().resolve_input(name))


def exists_annotated_filepath(name: str) -> bool:
    try:
        return os.path.exists(get_annotated_filepath(name))
    except Exception:
        return False


def get_save_image_path(
    filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0
) -> tuple[str, str, int, str, str]:
    """``(folder, filename, counter, subfolder, filename_prefix)`` as ComfyUI's SaveImage computes them."""
    target = resolve_save_target(Path(output_dir), filename_prefix, image_width, image_height)
    return str(target.folder), target.filename, target.counter, target.subfolder, filename_prefix
