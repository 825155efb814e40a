"""The Lambda bundle, built without Docker: the handlers, the light part of comfyserve, and its dependencies
as wheels for the Lambda platform (arm64, CPython ``RUNTIME_VERSION``).

``python -m infra.lambda_bundle [DIR]`` (``make lambda-bundle``) builds it in ``build/lambda``; the stack's
local bundler copies that folder into the asset (building it first when it is missing). The dependencies are
``[project].dependencies`` of pyproject.toml, installed by pip for ``manylinux2014_aarch64`` (wheels only), so
the heavy extras (torch, numpy, diffusers) never enter; the comfyserve packages that need them are left out.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_DIR = ROOT / "build" / "lambda"
RUNTIME_VERSION = "3.13"
PLATFORM = "manylinux2014_aarch64"
# comfyserve packages the Lambdas never import: they need torch or run only on the worker or locally.
HEAVY_PACKAGES = ("nodes", "models", "worker", "localstack", "compat", "commands")
FORBIDDEN_DISTRIBUTIONS = ("torch", "numpy", "diffusers", "transformers", "safetensors", "scipy")
_STAMP = ".dependencies-stamp"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def dependencies(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The core requirements of comfyserve (no extras)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return [str(requirement) for requirement in project["dependencies"]]


def _install_dependencies(target: Path, requirements: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(target)]
    command += ["--platform", PLATFORM, "--implementation", "cp", "--python-version", RUNTIME_VERSION]
    command += ["--only-binary=:all:", "--upgrade", *requirements]
    subprocess.run(command, check=True)


def build(target: Path = BUNDLE_DIR) -> Path:
    """Build (or refresh) the bundle in ``target``; dependencies are reinstalled only when they change."""
    requirements = dependencies()
    stamp = hashlib.sha256("\n".join([RUNTIME_VERSION, PLATFORM, *requirements]).encode()).hexdigest()
    stamp_file = target / _STAMP
    if not stamp_file.exists() or stamp_file.read_text(encoding="utf-8") != stamp:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        _install_dependencies(target, requirements)
        stamp_file.write_text(stamp, encoding="utf-8")
    for package in ("comfyserve", "lambdas"):
        shutil.rmtree(target / package, ignore_errors=True)
    heavy = {ROOT / "comfyserve" / name for name in HEAVY_PACKAGES}
    shutil.copytree(
        ROOT / "comfyserve",
        target / "comfyserve",
        ignore=lambda folder, names: [*_SKIP(folder, names), *(n for n in names if Path(folder, n) in heavy)],
    )
    shutil.copytree(ROOT / "lambdas", target / "lambdas", ignore=_SKIP)
    return target


def copy_bundle(output_dir: Path, source: Path = BUNDLE_DIR) -> None:
    """The built bundle into an asset folder (what the stack's local bundler does)."""
    build(source)
    shutil.copytree(source, output_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(_STAMP))


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else BUNDLE_DIR))
