"""Regenerate the UI → API oracle pairs with ComfyUI's own editor (`make test-ui-oracle COMFYUI_DIR=…`).

Starts the ComfyUI at COMFYUI_DIR (its own venv, CPU, fresh temp folders, no custom nodes) on a free
loopback port, opens its editor in Debian's headless Chromium through Playwright, and for every template of
the pinned `comfyui-workflow-templates-json` package runs `app.loadGraphData(workflow)` then
`app.graphToPrompt()`. Writes `object_info.json.gz` (the catalog the editor converted with) and
`pairs.json.gz` (versions, the editor's API prompt per template, and the templates it could not convert with
the reason) under tests/data/ui_oracle. Never part of `make test`: it needs ComfyUI, Chromium and Playwright.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

OUT_DIR = Path(__file__).resolve().parents[1] / "data" / "ui_oracle"
TEMPLATES_PACKAGE = "comfyui-workflow-templates-json"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

# The editor reports a workflow it cannot load with a dialog and console.error, and carries on: a template
# fails when the graph's configure throws (or graphToPrompt does). Other console errors (a model file's size
# or a 3D model fetched over the network, absent offline) are recorded as notes. Math.random is pinned while
# converting: dynamic prompts ({a|b}) then take their first choice, as
# `to_api_prompt(..., choose=lambda options: options[0])` does in the tests.
CONVERT_JS = """async (workflow) => {
  const errors = [];
  const consoleError = console.error;
  console.error = (...args) => { errors.push(args.map((a) => (a && a.message) || String(a)).join(' ')); };
  const graph = window.app.graph;
  const configure = graph.configure;
  let loadError = null;
  graph.configure = function (...args) {
    try { return configure.apply(this, args); } catch (e) { loadError = e; throw e; }
  };
  const random = Math.random;
  try {
    await window.app.loadGraphData(workflow, true, false);
    if (loadError) return { failure: String(loadError.message || loadError), errors };
    Math.random = () => 0;
    const prompt = await window.app.graphToPrompt();
    return { output: prompt.output, errors };
  } finally {
    delete graph.configure;
    console.error = consoleError;
    Math.random = random;
  }
}"""
FIXED_TIME = "2025-01-01T12:00:00Z"  # the page's clock: what %date:…% in an output prefix becomes (UTC machine)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def start_comfyui(comfyui_dir: Path, work: Path, port: int) -> subprocess.Popen[bytes]:
    for name in ("input", "output", "temp", "user"):
        (work / name).mkdir()
    argv = [
        str(comfyui_dir / "venv" / "bin" / "python"),
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-auto-launch",
        "--disable-all-custom-nodes",
        "--input-directory",
        str(work / "input"),
        "--output-directory",
        str(work / "output"),
        "--temp-directory",
        str(work / "temp"),
        "--user-directory",
        str(work / "user"),
        "--database-url",
        f"sqlite:///{work / 'user' / 'comfyui.db'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = (work / "comfyui.log").open("wb")
    process = subprocess.Popen(
        argv, cwd=comfyui_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"ComfyUI exited with {process.returncode}; see {work / 'comfyui.log'}")
        try:
            get_json(f"http://127.0.0.1:{port}/system_stats")
            return process
        except OSError:
            time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    sys.exit("ComfyUI did not answer /system_stats within 180 s")


def templates() -> dict[str, Any]:
    """The package's UI-format workflows by name (index files and other JSON left out)."""
    files = importlib.metadata.files(TEMPLATES_PACKAGE) or []
    found: dict[str, Any] = {}
    for entry in sorted(files, key=str):
        if entry.suffix != ".json" or "/templates/" not in f"/{entry}":
            continue
        document = json.loads(Path(str(entry.locate())).read_text(encoding="utf-8"))
        if isinstance(document, dict) and "nodes" in document:
            found[entry.stem] = document
    return found


@dataclass
class Converted:
    pairs: dict[str, Any]  # template -> the editor's API prompt
    failures: dict[str, str]  # template -> why the editor could not convert it
    notes: dict[str, str]  # template -> what else the editor logged as an error (network fetches, offline)
    frontend: str
    chromium: str


async def convert_all(url: str, workflows: dict[str, Any]) -> Converted:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS, headless=True
        )
        page = await open_editor(browser, url)
        frontend = await page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? null")
        pairs: dict[str, Any] = {}
        failures: dict[str, str] = {}
        notes: dict[str, str] = {}
        for name, workflow in workflows.items():
            print(f"{len(pairs) + len(failures) + 1}/{len(workflows)} {name}", file=sys.stderr, flush=True)
            try:
                result = await asyncio.wait_for(page.evaluate(CONVERT_JS, workflow), 120)
            except Exception as exc:  # the editor's own error is the recorded reason
                result = {"failure": str(exc).splitlines()[0], "errors": []}
            if result["errors"]:
                notes[name] = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", "; ".join(result["errors"]))
            if "output" in result:
                pairs[name] = result["output"]
                continue
            failures[name] = result["failure"]
            await page.close()
            page = await open_editor(browser, url)  # nothing of a failed load is left for the next template
        version = browser.version
        await browser.close()
    return Converted(pairs, failures, notes, str(frontend), version)


async def open_editor(browser: Any, url: str) -> Page:
    page = await browser.new_page()
    await page.clock.set_fixed_time(FIXED_TIME)
    await page.goto(url)
    await page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
    return page


def write_gz(path: Path, document: Any) -> None:
    data = json.dumps(document, indent=None, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def comfyui_commit(comfyui_dir: Path, given: str | None) -> str | None:
    if given:
        return given
    done = subprocess.run(
        ["git", "-C", str(comfyui_dir), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", type=Path, required=True)
    parser.add_argument("--comfyui-commit", help="recorded when the checkout has no .git")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument(
        "--only",
        nargs="*",
        help="template names or UI-format files: print the editor's API prompts, write nothing",
    )
    args = parser.parse_args()
    comfyui_dir = args.comfyui_dir.resolve()
    workflows = templates()
    if args.only:
        workflows = {
            name: json.loads(Path(name).read_text(encoding="utf-8")) if name.endswith(".json") else workflows[name]
            for name in args.only
        }
    with tempfile.TemporaryDirectory(prefix="ui-oracle-") as scratch:
        port = free_port()
        process = start_comfyui(comfyui_dir, Path(scratch), port)
        try:
            base = f"http://127.0.0.1:{port}"
            object_info = get_json(f"{base}/object_info")
            system_stats = get_json(f"{base}/system_stats")
            converted = asyncio.run(convert_all(base + "/", workflows))
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    found = {"pairs": converted.pairs, "failures": converted.failures, "notes": converted.notes}
    if args.only:
        json.dump(found, sys.stdout, indent=1, sort_keys=True)
        return
    versions = {
        "comfyui_version": system_stats["system"]["comfyui_version"],
        "comfyui_commit": comfyui_commit(comfyui_dir, args.comfyui_commit),
        "frontend_version": converted.frontend,
        "templates_package": TEMPLATES_PACKAGE,
        "templates_version": importlib.metadata.version(TEMPLATES_PACKAGE),
        "chromium": converted.chromium,
        "playwright": importlib.metadata.version("playwright"),
        "fixed_time": FIXED_TIME,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_gz(args.out / "object_info.json.gz", object_info)
    write_gz(args.out / "pairs.json.gz", {"versions": versions, **found})
    failed = sorted(converted.failures)
    print(f"{len(converted.pairs)} of {len(workflows)} templates converted; {len(failed)} failed: {failed}")


if __name__ == "__main__":
    main()
