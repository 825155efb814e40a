"""Custom nodes, reproducibly: a lock file of node packs at exact commits, installed into ComfyUI's
``custom_nodes/`` and ComfyUI's own Python environment (never another one).

The lock file is TOML, one ``[[pack]]`` table per pack::

    [[pack]]
    name = "ComfyUI_essentials"                          # the folder under custom_nodes/
    url = "https://github.com/cubiq/ComfyUI_essentials"  # any URL git can fetch (file:// too)
    commit = "33ff89fd354d8ec3ab6affb605a79a931b445d99"  # a full commit id: the pack is pinned
    requirements = true                                  # pip install -r its requirements.txt (default true)
    pip = ["numba==0.60.0"]                              # more pinned requirements (optional)

A pack already at its commit is left as it is, so installing twice does nothing the second time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from comfyserve.worker.comfyui.config import ComfyUIError

COMMIT = re.compile(r"[0-9a-f]{40}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
REQUIREMENTS = "requirements.txt"
Runner = Callable[[Sequence[str], Path | None], str]


class LockError(ComfyUIError):
    """The lock file is not valid; the message names the pack and the field."""


@dataclass(frozen=True)
class LockedPack:
    name: str
    url: str
    commit: str
    requirements: bool = True
    pip: tuple[str, ...] = ()


def parse_lock(text: str) -> list[LockedPack]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"the lock file is not TOML: {exc}") from exc
    unknown = set(document) - {"pack"}
    if unknown:
        raise LockError(f"unknown top-level keys {sorted(unknown)}: the lock file holds [[pack]] tables")
    packs: list[LockedPack] = []
    for index, table in enumerate(document.get("pack", [])):
        where = f"pack #{index + 1}"
        extra = set(table) - {"name", "url", "commit", "requirements", "pip"}
        if extra:
            raise LockError(f"{where}: unknown keys {sorted(extra)}")
        name, url, commit = table.get("name"), table.get("url"), table.get("commit")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise LockError(f"{where}: 'name' must be a folder name (letters, digits, . _ + -), got {name!r}")
        if not isinstance(url, str) or not url:
            raise LockError(f"pack {name}: 'url' is required")
        if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
            raise LockError(f"pack {name}: 'commit' must be a full 40-character commit id, got {commit!r}")
        pip = table.get("pip", [])
        if not isinstance(pip, list) or not all(isinstance(item, str) for item in pip):
            raise LockError(f"pack {name}: 'pip' must be a list of requirement strings")
        requirements = table.get("requirements", True)
        if not isinstance(requirements, bool):
            raise LockError(f"pack {name}: 'requirements' must be true or false")
        packs.append(LockedPack(name, url, commit, requirements, tuple(pip)))
    names = [pack.name for pack in packs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise LockError(f"packs listed twice: {', '.join(duplicates)}")
    return packs


def run_command(argv: Sequence[str], cwd: Path | None) -> str:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ComfyUIError(f"{' '.join(argv)} failed ({done.returncode}):\n{(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def _head(folder: Path, run: Runner) -> str | None:
    if not (folder / ".git").exists():
        return None
    try:
        return run(["git", "rev-parse", "HEAD"], folder).strip()
    except ComfyUIError:
        return None


def _only_git(folder: Path) -> bool:
    """Whether ``folder`` holds a git repository with no commit checked out and nothing else."""
    return [path.name for path in folder.iterdir()] == [".git"] and (folder / ".git").is_dir()


def install_pack(pack: LockedPack, custom_nodes: Path, python: Path, run: Runner = run_command) -> bool:
    """Put ``pack`` at its commit under ``custom_nodes`` and its requirements into ``python``'s environment;
    returns False when it was already there."""
    folder = custom_nodes / pack.name
    if _head(folder, run) == pack.commit:
        return False
    fresh = not folder.exists() or _only_git(folder)  # an empty checkout (an interrupted install) is reused
    if not fresh and _head(folder, run) is None:
        raise ComfyUIError(f"{folder} exists and is not a git checkout; remove it or rename the pack")
    if not folder.exists():
        folder.mkdir(parents=True)
        run(["git", "init", "--quiet"], folder)
    try:
        run(["git", "fetch", "--quiet", "--depth", "1", pack.url, pack.commit], folder)
        run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "FETCH_HEAD"], folder)
    except ComfyUIError:
        if fresh:  # leave nothing behind that a retry would have to get out of the way
            shutil.rmtree(folder, ignore_errors=True)
        raise
    got = _head(folder, run)
    if got != pack.commit:
        raise ComfyUIError(f"pack {pack.name}: fetched {got}, expected {pack.commit}")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    if pack.requirements and (folder / REQUIREMENTS).is_file():
        run([*pip, "-r", str(folder / REQUIREMENTS)], folder)
    if pack.pip:
        run([*pip, *pack.pip], folder)
    return True


def install_lock(
    packs: Sequence[LockedPack], comfyui_dir: Path, python: Path, run: Runner = run_command
) -> list[tuple[LockedPack, bool]]:
    """Install every pack into ``comfyui_dir/custom_nodes``; ``(pack, installed now)`` for each."""
    custom_nodes = comfyui_dir / "custom_nodes"
    custom_nodes.mkdir(exist_ok=True)
    return [(pack, install_pack(pack, custom_nodes, python, run)) for pack in packs]
