"""How many official templates and public example workflows run end to end on the built-in engine, before
and after (issue 18's coverage figure; docs/COMFYUI_SUITE.md, "Template coverage").

    .venv/bin/python bench/bench_template_coverage.py [--old 380736b] [--timeout 120]

The corpus: the templates of the pinned ``comfyui-workflow-templates-json`` package (the editor's format) and
the public API-format workflows of tests/data/compat_workflows. Each is converted with this checkout's
converter (``comfyserve.ui_workflow``) and classified (bench/template_coverage.py). Then, for each engine, the
engine at ``--old`` (``git archive`` into a temporary folder) and this checkout, each with the catalog its own
``comfyserve catalog`` prints: are all its classes offered; are stand-in models possible for every model file
it names (``make-test-models`` of this checkout writes them; a loader it does not know, or a model of a
non-SD family, counts as "no stand-in"); does ``comfyserve run`` of that engine validate and run it (with
synthesised input images, the caps of ``template_coverage.capped`` on steps, sizes and batch, and a timeout).
Figures go to bench/results/template_coverage.json, one line per workflow to template_coverage.details.jsonl.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import io
import json
import os
import queue
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, write_results
from bench.template_coverage import (
    CAP_BATCH,
    CAP_SIDE,
    CAP_STEPS,
    Outcome,
    Record,
    Workflow,
    capped,
    index_api_names,
    missing_ranking,
    name_family,
    read_workflows,
    summary,
    used_nodes,
    workflow_family,
)
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.node_api import IMAGE_UPLOAD, MODEL_FOLDER, takes_upload
from comfyserve.engine.spec import NodeSpec
from comfyserve.ui_workflow import UIWorkflowError, is_ui_workflow, to_api_prompt

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_PACKAGE = "comfyui-workflow-templates-json"
EXAMPLES = ROOT / "tests" / "data" / "compat_workflows"
PINNED_CATALOG = ROOT / "tests" / "data" / "ui_oracle" / "object_info.json.gz"  # ComfyUI 0.3.64's
FIXED_TIME = datetime(2025, 1, 1, 12)  # what %date:…% in an output prefix becomes
NOT_IN_CATALOG = re.compile(r"node type '(.+)' is not in this catalog")
Specs = Mapping[str, NodeSpec]


def first(options: list[str]) -> str:
    return options[0]


# -- the corpus -------------------------------------------------------------------------------------------


def templates() -> list[Workflow]:
    files = importlib.metadata.files(TEMPLATES_PACKAGE) or []
    found = {f.stem: Path(str(f.locate())) for f in files if f.suffix == ".json" and "/templates/" in f"/{f}"}
    index = json.loads(found["index"].read_text(encoding="utf-8"))
    workflows = {n: p for n, p in found.items() if not n.startswith("index") and n != "fuse_options"}
    return read_workflows(workflows, "template", index_api_names(index))


def examples(folder: Path) -> list[Workflow]:
    return read_workflows({p.stem: p for p in folder.glob("*.json")}, "example")


def pinned_catalog() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(gzip.decompress(PINNED_CATALOG.read_bytes()))
    return document


# -- the engines ------------------------------------------------------------------------------------------


# A worker process running ``comfyserve run`` of one engine for each job line on stdin (the imports are paid
# once per engine, not per workflow); it answers each with a marked line (other output may reach stdout).
RUNNER = """
import contextlib, io, json, sys, traceback
from comfyserve.cli import main
print(MARK + json.dumps({"code": __import__("comfyserve").__file__}), flush=True)
for line in sys.stdin:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = main(json.loads(line))
        except BaseException:
            traceback.print_exc()
            rc = 1
    print(MARK + json.dumps({"rc": rc, "stderr": err.getvalue()}), flush=True)
"""
MARK = "@@coverage@@ "


class Engine:
    """One engine's code (a folder holding the ``comfyserve`` package), the catalog it prints, and a worker
    process that runs workflows with it."""

    def __init__(self, name: str, source: Path) -> None:
        self.name = name
        self.source = source
        self.env = {**os.environ, "PYTHONPATH": str(source)}
        printed = subprocess.run(
            [sys.executable, "-m", "comfyserve", "catalog"],
            cwd=source,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.specs: Specs = Catalog.from_object_info(json.loads(printed)).specs
        self.worker: subprocess.Popen[str] | None = None
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()

    def _start(self, timeout: float) -> subprocess.Popen[str]:
        self.answers = queue.Queue()
        code = f"MARK = {MARK!r}\n{RUNNER}"
        worker = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=self.source,
            env=self.env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, args=(worker, self.answers), daemon=True).start()
        started = self.answers.get(timeout=timeout)
        if not str(started.get("code", "")).startswith(str(self.source)):
            raise RuntimeError(f"{self.name}: imported {started.get('code')}, not the code under {self.source}")
        return worker

    @staticmethod
    def _read(worker: subprocess.Popen[str], answers: queue.Queue[dict[str, Any]]) -> None:
        assert worker.stdout is not None
        for line in worker.stdout:
            if line.startswith(MARK):
                answers.put(json.loads(line[len(MARK) :]))
        answers.put({"rc": None, "stderr": f"the worker process ended (exit status {worker.wait()})"})

    def run(self, work: Path, inputs: dict[str, Path], timeout: float) -> Outcome:
        """``comfyserve run`` of this engine on ``work/prompt.json``: ran, failed (a manifest, or an error
        after validation), invalid (refused before running) or timeout (the worker is then replaced)."""
        argv = ["run", str(work / "prompt.json"), "--out", str(work / "out"), "--models", str(work / "models")]
        for name, path in inputs.items():
            argv += ["--input", f"{name}={path}"]
        if self.worker is None:
            self.worker = self._start(timeout)
        assert self.worker.stdin is not None
        self.worker.stdin.write(json.dumps(argv) + "\n")
        self.worker.stdin.flush()
        try:
            done = self.answers.get(timeout=timeout)
        except queue.Empty:
            self.close()
            return Outcome("timeout", detail=f"over {timeout:g} s")
        if done["rc"] is None:
            self.close()
            return Outcome("failed", detail=done["stderr"])
        if done["rc"] == 0:
            return Outcome("ran")
        tail = " | ".join(done["stderr"].strip().splitlines()[-3:])
        ran = (work / "out" / "manifest.json").exists() or "failed:" in done["stderr"]
        return Outcome("failed" if ran else "invalid", detail=tail)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker.wait()
            self.worker = None


def old_source(commit: str, into: Path) -> Path:
    """The package as it was at ``commit`` (git archive), outside the repository."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "comfyserve"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


# -- one workflow on one engine ---------------------------------------------------------------------------


def api_prompt(workflow: Workflow, specs: Specs) -> tuple[dict[str, Any] | None, Outcome | None]:
    """The workflow's API prompt with ``specs``, or the outcome that stops it (unreadable, missing classes)."""
    document = workflow.document
    classes = {cls for cls, _ in used_nodes(document)}
    if not is_ui_workflow(document):
        missing = sorted(classes - set(specs))
        return (None, Outcome("missing_classes", missing)) if missing else (document, None)
    try:
        return to_api_prompt(document, specs, now=FIXED_TIME, choose=first), None
    except UIWorkflowError as exc:
        named = NOT_IN_CATALOG.search(str(exc))
        if named is None:
            return None, Outcome("unreadable", detail=str(exc))
        return None, Outcome("missing_classes", sorted(classes - set(specs)) or [named.group(1)])


def converts(workflow: Workflow, pinned: Specs) -> bool:
    """Whether this checkout's converter reads it (with ComfyUI's catalog, sending unknown nodes as the
    editor does)."""
    if not is_ui_workflow(workflow.document):
        return True
    try:
        to_api_prompt(workflow.document, pinned, now=FIXED_TIME, choose=first, keep_unknown=True)
    except UIWorkflowError:
        return False
    return True


def stand_ins(prompt: dict[str, Any], specs: Specs, work: Path) -> tuple[dict[str, Path], Outcome | None]:
    """Write the stand-in models and input images ``prompt`` (saved as ``work/prompt.json``) needs under
    ``work``; the input images by name, or the outcome "no_stand_in" naming what cannot be stood in for."""
    from comfyserve.models.testmodels import make_test_models, requests_for

    writable = {(r.folder, r.name) for r in requests_for(prompt)}
    lacking: list[str] = []
    inputs: dict[str, Path] = {}
    for node in prompt.values():
        spec = specs.get(node.get("class_type", ""))
        for key, value in node.get("inputs", {}).items():
            declared = spec.inputs.get(key) if spec else None
            if declared is None or not isinstance(value, str):
                continue
            folder = declared.options.get(MODEL_FOLDER)
            family = name_family(node["class_type"], value)
            if isinstance(folder, str) and family != "sd":
                lacking.append(f"{node['class_type']} {value} ({family} model)")
            elif isinstance(folder, str) and (folder, value) not in writable:
                lacking.append(f"{node['class_type']} {value} (no stand-in writer for {folder})")
            elif declared.options.get(IMAGE_UPLOAD):
                inputs[value] = synthesised_image(work / "inputs" / f"{len(inputs)}.png")
            elif takes_upload(declared.options):
                lacking.append(f"{node['class_type']} {value} (no stand-in input of this kind)")
    if lacking:
        return {}, Outcome("no_stand_in", detail="; ".join(sorted(set(lacking))))
    try:
        make_test_models(work / "models", [work / "prompt.json"])
    except Exception as exc:  # a request the writer cannot meet, whatever the writer of the day raises
        return {}, Outcome("no_stand_in", detail=f"make-test-models: {exc}")
    (work / "models").mkdir(exist_ok=True)
    return inputs, None


def synthesised_image(path: Path) -> Path:
    """A 192×256 RGBA gradient (its alpha a gradient too, so a mask taken from it is not empty)."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:256, 0:192]
    pixels = np.stack([xs * 255 // 191, ys * 255 // 255, (xs + ys) * 255 // 446, ys * 255 // 255], axis=-1)
    Image.fromarray(pixels.astype(np.uint8), "RGBA").save(path)
    return path


def outcome(workflow: Workflow, engine: Engine, work: Path, timeout: float) -> Outcome:
    prompt, stopped = api_prompt(workflow, engine.specs)
    if stopped is not None or prompt is None:
        return stopped or Outcome("unreadable")
    return_types = {name: spec.return_types for name, spec in engine.specs.items()}
    prompt = capped(prompt, return_types)
    work.mkdir(parents=True)
    (work / "prompt.json").write_text(json.dumps(prompt))
    inputs, stopped = stand_ins(prompt, engine.specs, work)
    if stopped is not None:
        return stopped
    return engine.run(work, inputs, timeout)


# -- the benchmark ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", default="380736b", help="the commit whose engine is 'before'")
    parser.add_argument("--examples", type=Path, default=EXAMPLES, help="folder of public API-format workflows")
    parser.add_argument("--timeout", type=float, default=120, help="seconds allowed to one run")
    args = parser.parse_args()
    started = time.perf_counter()
    corpus = templates() + examples(args.examples)
    pinned_document = pinned_catalog()
    pinned = Catalog.from_object_info(pinned_document).specs
    api_classes = frozenset(name for name, info in pinned_document.items() if info.get("api_node"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        engines = [Engine("before", old_source(args.old, work / "old-code")), Engine("after", ROOT)]
        print(f"catalogs read in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        records = [Record(w.name, w.source, workflow_family(w, api_classes), converts(w, pinned), {}) for w in corpus]

        for engine in engines:
            for i, (workflow, record) in enumerate(zip(corpus, records, strict=True)):
                began = time.perf_counter()
                result = outcome(workflow, engine, work / engine.name / f"{i:04d}", args.timeout)
                if result.stage not in ("missing_classes", "unreadable"):
                    print(
                        f"{engine.name} {workflow.name}: {result.stage} in {time.perf_counter() - began:.1f} s",
                        file=sys.stderr,
                    )
                record.outcomes[engine.name] = result
            engine.close()
    names = [engine.name for engine in engines]
    details = RESULTS / "template_coverage.details.jsonl"
    RESULTS.mkdir(exist_ok=True)
    details.write_text("".join(json.dumps(r.row()) + "\n" for r in records))
    write_results(
        "template_coverage",
        {
            "old_commit": args.old,
            "new_commit": commit.stdout.strip(),
            "templates_package": f"{TEMPLATES_PACKAGE} {importlib.metadata.version(TEMPLATES_PACKAGE)}",
            "catalog_classes": {e.name: len(e.specs) for e in engines},
            "caps": {
                "steps": CAP_STEPS,
                "side_px": CAP_SIDE,
                "batch": CAP_BATCH,
                "run_timeout_s": args.timeout,
            },
            **summary(records, names),
            "ran_after": sorted(r.workflow for r in records if r.outcomes["after"].runs),
            "top_missing_sd_family_after": {
                row["class"]: {key: row[key] for key in ("templates", "examples", "only_missing_class_of")}
                for row in missing_ranking(records, "after")
            },
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )
    print(f"wrote {details}")


if __name__ == "__main__":
    main()
