"""``comfyserve nodes install LOCK --comfyui-dir DIR``: the locked custom node packs into a ComfyUI checkout.

Packs go to ``DIR/custom_nodes/<name>`` at their locked commits and their requirements into the Python that
runs that ComfyUI (``--comfyui-python``, default the checkout's ``venv/bin/python`` or ``.venv/bin/python``).
The lock file format is described in ``comfyserve.worker.comfyui.nodes_lock`` and docs/COMFYUI_BACKEND.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from comfyserve.commands.common import UsageError


def add_comfyui_options(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--comfyui-dir`` and ``--comfyui-python`` (defaults: ``COMFYUI_DIR``, ``COMFYUI_PYTHON``)."""
    parser.add_argument(
        "--comfyui-dir",
        type=Path,
        default=os.environ.get("COMFYUI_DIR") or None,
        required=required and not os.environ.get("COMFYUI_DIR"),
        help="a ComfyUI checkout (default: $COMFYUI_DIR)",
    )
    parser.add_argument(
        "--comfyui-python",
        type=Path,
        default=os.environ.get("COMFYUI_PYTHON") or None,
        help="the Python that runs it (default: $COMFYUI_PYTHON, else the checkout's venv/bin/python or .venv)",
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "nodes", help="install the locked custom node packs into the ComfyUI backend's checkout"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser("install", help="install the custom node packs of a lock file")
    install.add_argument("lock", type=Path, help="the lock file (TOML, [[pack]] tables)")
    add_comfyui_options(install, required=True)
    install.set_defaults(func=run_install_nodes)


def run_install_nodes(args: argparse.Namespace) -> int:
    from comfyserve.worker.comfyui.config import ComfyUIConfig
    from comfyserve.worker.comfyui.nodes_lock import install_lock, parse_lock

    if not args.lock.is_file():
        raise UsageError(f"the lock file {args.lock} does not exist")
    packs = parse_lock(args.lock.read_text(encoding="utf-8"))
    config = ComfyUIConfig(args.comfyui_dir, work_dir=Path("."), python=args.comfyui_python).checked()
    assert config.python is not None
    for pack, installed in install_lock(packs, config.comfyui_dir, config.python):
        state = "installed" if installed else "already at"
        print(f"{pack.name}: {state} {pack.commit[:12]}", flush=True)
    return 0


def export_from_comfyui(args: argparse.Namespace) -> int:
    """``comfyserve catalog --from-comfyui DIR``: start that ComfyUI, print its catalog, stop it."""
    from comfyserve.worker.comfyui import ComfyUIBackend, ComfyUIConfig
    from comfyserve.worker.comfyui.catalog import read_allowlist

    allow = read_allowlist(args.allow.read_text(encoding="utf-8")) if args.allow is not None else None
    with tempfile.TemporaryDirectory(prefix="comfyserve-catalog-") as work:
        config = ComfyUIConfig(
            comfyui_dir=args.from_comfyui,
            work_dir=Path(work),
            python=args.comfyui_python,
            model_root=args.models,
            custom_nodes=tuple(args.custom_nodes),
            node_allow=tuple(sorted(allow)) if allow is not None else None,
        )
        backend = ComfyUIBackend(config)
        try:
            document = backend.object_info()
            failures = backend.process.import_failures()
        finally:
            backend.close()
    for failure in failures:
        print(f"comfyserve catalog: ComfyUI could not import node pack {failure}", file=sys.stderr)
    sys.stdout.write(json.dumps(document, indent=1) + "\n")
    return 0
