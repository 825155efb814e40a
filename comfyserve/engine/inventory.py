"""The model files a worker has, by ComfyUI folder name ("checkpoints", "loras", "vae", ...).

Validation checks model file names against an inventory when one is given; loaders list and resolve files
through it. It never opens a model file, so it is safe on the light (Lambda) path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin", ".sft")

# ComfyUI's folder names and the directories it searches for each, in its order (folder_paths.py).
FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "loras": ("loras",),
    "vae": ("vae",),
    "upscale_models": ("upscale_models",),
    "controlnet": ("controlnet", "t2i_adapter"),
    "embeddings": ("embeddings",),
    "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("unet", "diffusion_models"),
}
# The older folder names ComfyUI still accepts for two of them (its ``map_legacy``).
LEGACY_FOLDERS: dict[str, str] = {"clip": "text_encoders", "unet": "diffusion_models"}


def folder_name(folder: str) -> str:
    """ComfyUI's current name for ``folder`` ("clip" -> "text_encoders", "unet" -> "diffusion_models")."""
    return LEGACY_FOLDERS.get(folder, folder)


@dataclass
class ModelInventory:
    """Model files by folder. ``root`` is where the files live; an inventory built from a listing has none."""

    files: dict[str, list[str]] = field(default_factory=dict)
    root: Path | None = None

    @classmethod
    def scan(cls, root: Path) -> ModelInventory:
        """List model files under ``root/<folder>/`` (subfolders included, names use ``/``)."""
        files: dict[str, list[str]] = {}
        for folder, aliases in FOLDER_ALIASES.items():
            names: set[str] = set()
            for alias in aliases:
                base = root / alias
                if base.is_dir():
                    names.update(
                        p.relative_to(base).as_posix()
                        for p in base.rglob("*")
                        if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES
                    )
            files[folder] = sorted(names)
        return cls(files=files, root=root)

    @classmethod
    def from_listing(cls, listing: Mapping[str, Iterable[str]]) -> ModelInventory:
        return cls(files={folder: sorted(names) for folder, names in listing.items()})

    def names(self, folder: str) -> list[str]:
        return self.files.get(folder_name(folder), [])

    def has(self, folder: str, name: str) -> bool:
        return name in self.files.get(folder_name(folder), ())

    def path(self, folder: str, name: str) -> Path:
        """The file behind ``name``; raises FileNotFoundError naming the folder when it is not there."""
        folder = folder_name(folder)
        if self.root is None or not self.has(folder, name):
            raise FileNotFoundError(f"model file {name!r} is not in the {folder} folder")
        for alias in FOLDER_ALIASES.get(folder, (folder,)):
            candidate = self.root / alias / name
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"model file {name!r} is not in the {folder} folder")
