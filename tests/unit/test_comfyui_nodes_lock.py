"""The custom nodes lock: parsed strictly, installed at the locked commit from a local git repository, with the
requirements going to ComfyUI's own Python (a stand-in that records its arguments)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from comfyserve.cli import main
from comfyserve.worker.comfyui.config import ComfyUIError
from comfyserve.worker.comfyui.nodes_lock import LockedPack, LockError, install_lock, parse_lock

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env={**os.environ, **GIT_ENV}
    )
    return done.stdout.strip()


@pytest.fixture
def pack_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """A node pack repository with two commits; returns its path and the commit ids, oldest first."""
    repo = tmp_path / "pack-src"
    repo.mkdir()
    git(repo, "init", "--quiet")
    commits = []
    for version in ("1", "2"):
        (repo / "__init__.py").write_text(f"NODE_CLASS_MAPPINGS = {{}}\nVERSION = {version}\n")
        (repo / "requirements.txt").write_text("tinydep==1.0\n")
        git(repo, "add", "-A")
        git(repo, "commit", "--quiet", "-m", f"v{version}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    return repo, commits


@pytest.fixture
def comfyui(tmp_path: Path) -> tuple[Path, Path]:
    """A ComfyUI checkout stand-in whose venv Python records how it was called."""
    root = tmp_path / "ComfyUI"
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "main.py").write_text("")
    python = root / "venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "pip-calls.txt"}\n')
    python.chmod(0o755)
    return root, tmp_path / "pip-calls.txt"


def lock_text(url: Path, commit: str, extra: str = "") -> str:
    return f'[[pack]]\nname = "TestPack"\nurl = "{url}"\ncommit = "{commit}"\n{extra}'


def test_a_pack_is_installed_at_its_commit_with_its_requirements_in_comfyuis_python(
    pack_repo: tuple[Path, list[str]], comfyui: tuple[Path, Path]
) -> None:
    repo, commits = pack_repo
    root, calls = comfyui
    python = root / "venv" / "bin" / "python"
    packs = parse_lock(lock_text(repo, commits[0], 'pip = ["extra==2.0"]\n'))
    assert install_lock(packs, root, python) == [(packs[0], True)]
    folder = root / "custom_nodes" / "TestPack"
    assert git(folder, "rev-parse", "HEAD") == commits[0]
    assert "VERSION = 1" in (folder / "__init__.py").read_text()
    assert calls.read_text().splitlines() == [
        f"-m pip install --quiet -r {folder / 'requirements.txt'}",
        "-m pip install --quiet extra==2.0",
    ]
    # installing the same lock again changes nothing
    assert install_lock(packs, root, python) == [(packs[0], False)]
    assert len(calls.read_text().splitlines()) == 2
    # a new commit in the lock moves the pack
    moved = parse_lock(lock_text(repo, commits[1], "requirements = false\n"))
    assert install_lock(moved, root, python) == [(moved[0], True)]
    assert "VERSION = 2" in (folder / "__init__.py").read_text()
    assert len(calls.read_text().splitlines()) == 2  # requirements = false: pip not called


def test_the_command_installs_the_lock(
    pack_repo: tuple[Path, list[str]], comfyui: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, commits = pack_repo
    root, _ = comfyui
    lock = tmp_path / "custom_nodes.lock"
    lock.write_text(lock_text(repo, commits[1]))
    assert main(["nodes", "install", str(lock), "--comfyui-dir", str(root)]) == 0
    assert main(["nodes", "install", str(lock), "--comfyui-dir", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"TestPack: installed {commits[1][:12]}",
        f"TestPack: already at {commits[1][:12]}",
    ]


def test_a_commit_the_repository_does_not_have_fails_naming_the_command(
    pack_repo: tuple[Path, list[str]], comfyui: tuple[Path, Path]
) -> None:
    repo, _ = pack_repo
    root, _ = comfyui
    packs = [LockedPack("TestPack", str(repo), "0" * 40)]
    with pytest.raises(ComfyUIError, match="git fetch --quiet --depth 1"):
        install_lock(packs, root, root / "venv" / "bin" / "python")
    assert not (root / "custom_nodes" / "TestPack").exists()  # nothing left in the way of a retry


def test_a_retry_after_a_failed_install_installs(pack_repo: tuple[Path, list[str]], comfyui: tuple[Path, Path]) -> None:
    repo, commits = pack_repo
    root, _ = comfyui
    python = root / "venv" / "bin" / "python"
    with pytest.raises(ComfyUIError):
        install_lock([LockedPack("TestPack", str(repo) + "-typo", commits[0])], root, python)
    folder = root / "custom_nodes" / "TestPack"
    folder.mkdir()
    git(folder, "init", "--quiet")  # what an install interrupted before its fetch leaves
    packs = parse_lock(lock_text(repo, commits[0]))
    assert install_lock(packs, root, python) == [(packs[0], True)]
    assert git(folder, "rev-parse", "HEAD") == commits[0]


def test_a_folder_in_the_way_is_not_overwritten(pack_repo: tuple[Path, list[str]], comfyui: tuple[Path, Path]) -> None:
    repo, commits = pack_repo
    root, _ = comfyui
    (root / "custom_nodes" / "TestPack").mkdir(parents=True)
    (root / "custom_nodes" / "TestPack" / "mine.py").write_text("keep")
    with pytest.raises(ComfyUIError, match="exists and is not a git checkout"):
        install_lock(parse_lock(lock_text(repo, commits[0])), root, root / "venv" / "bin" / "python")
    assert (root / "custom_nodes" / "TestPack" / "mine.py").read_text() == "keep"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[pack]\n", "the lock file is not TOML"),
        ("packs = 1\n", "unknown top-level keys ['packs']"),
        ('[[pack]]\nname = "../x"\nurl = "u"\ncommit = "' + "a" * 40 + '"\n', "'name' must be a folder name"),
        ('[[pack]]\nname = "x"\ncommit = "' + "a" * 40 + '"\n', "pack x: 'url' is required"),
        ('[[pack]]\nname = "x"\nurl = "u"\ncommit = "main"\n', "pack x: 'commit' must be a full 40-character"),
        ('[[pack]]\nname = "x"\nurl = "u"\ncommit = "' + "a" * 40 + '"\nbranch = "m"\n', "unknown keys ['branch']"),
        ('[[pack]]\nname = "x"\nurl = "u"\ncommit = "' + "a" * 40 + '"\npip = "numba"\n', "'pip' must be a list"),
        (('[[pack]]\nname = "x"\nurl = "u"\ncommit = "' + "a" * 40 + '"\n') * 2, "packs listed twice: x"),
    ],
)
def test_a_bad_lock_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(LockError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_lock(text)
