"""The ``comfyserve`` command: validate, catalog and run, with exit codes and one-sentence errors."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comfyserve.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
COMPAT = ROOT / "tests" / "data" / "compat_workflows"
IMAGE_ONLY = ROOT / "examples" / "image_only.json"


def test_validate_valid_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(IMAGE_ONLY)]) == 0
    assert capsys.readouterr().out.strip() == "valid: outputs 6, 8"


def test_validate_broken_workflow_prints_comfyui_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = json.loads(IMAGE_ONLY.read_text())
    prompt["3"]["inputs"]["blur_radius"] = 99
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(prompt))
    assert main(["validate", str(broken), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["error"] == {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    }
    assert result["outputs"] == []
    assert result["node_errors"]["3"]["errors"][0]["type"] == "value_bigger_than_max"
    assert result["node_errors"]["3"]["dependent_outputs"] == ["6"]
    assert main(["validate", str(broken)]) == 1
    text = capsys.readouterr().out
    assert main(["validate", str(broken), "--partial"]) == 0  # output 8 does not depend on node 3
    assert capsys.readouterr().out.startswith("valid: outputs 8\n  node 3 (ImageBlur)")
    assert "node 3 (ImageBlur): value_bigger_than_max: Value 99 bigger than max of 31: blur_radius" in text


def test_validate_unknown_custom_node(capsys: pytest.CaptureFixture[str]) -> None:
    path = COMPAT / "12_salad_sd15_img2img_CUSTOM_ImageResizePlus.json"
    assert main(["validate", str(path), "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["message"] == "Cannot execute because node ImageResize+ does not exist."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{nope", "comfyserve validate: the workflow is not valid JSON: "),
        ("[]", "comfyserve validate: a workflow must be a JSON object of nodes in API format, not an array"),
    ],
)
def test_validate_malformed_file_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "w.json"
    path.write_text(content)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err and err.count("\n") == 1


def test_missing_file_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/nonexistent/w.json"]) == 2
    assert (
        capsys.readouterr().err == "comfyserve validate: cannot read /nonexistent/w.json: No such file or directory\n"
    )


def test_run_writes_pngs_carrying_the_prompt_and_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["run", str(IMAGE_ONLY), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "success"
    files = {o["node_id"]: Path(o["path"]) for o in manifest["outputs"]}
    assert set(files) == {"6", "8"}
    assert files["6"] == out / "demo" / "outpaint_00001_.png"
    with Image.open(files["6"]) as image:
        assert image.size == (160, 128)  # (256 + 64) x (192 + 64), halved
        assert json.loads(image.info["prompt"])["1"]["class_type"] == "EmptyImage"
    assert set(manifest["timings"]["nodes"]) == {"1", "2", "3", "4", "5", "6", "7", "8"}
    assert f"wrote {files['6']}" in printed and "done #5 ImageScaleBy" in printed


def test_run_missing_input_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", str(IMAGE_ONLY), "--out", str(tmp_path), "--input", "a.png=/nonexistent.png"]
    assert main(args) == 2
    assert capsys.readouterr().err == "comfyserve run: --input a.png: /nonexistent.png is not a file\n"


def test_catalog_command_matches_the_packaged_catalog() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "comfyserve", "catalog"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    packaged = (ROOT / "comfyserve" / "engine" / "catalog.json").read_text()
    assert json.loads(out.stdout) == json.loads(packaged), "run `make catalog` to refresh the packaged catalog"


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_table_matches_each_module(name: str) -> None:
    """The table's one-line help is the module's own, and the module registers the command it is listed under."""
    subcommands = _subcommands(build_parser(name))
    helps = {action.dest: action.help for action in subcommands._choices_actions}
    assert helps == {other: summary for other, (_, summary) in COMMANDS.items()}
    assert len(subcommands.choices[name]._actions) > 1  # the module's parser, not the table's placeholder
    assert all(len(subcommands.choices[other]._actions) == 1 for other in COMMANDS if other != name)


def test_help_lists_every_command_and_imports_none(capsys: pytest.CaptureFixture[str]) -> None:
    probe = (
        "import sys\nfrom comfyserve.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('comfyserve.commands.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.splitlines()[-1] == "[]"
    listed = " ".join(out.split())
    for name, (_, summary) in COMMANDS.items():
        assert f"{name} {summary}" in listed


def test_validate_imports_only_its_own_command() -> None:
    probe = (
        "import sys\nfrom comfyserve.cli import main\n"
        f"main(['validate', {str(IMAGE_ONLY)!r}])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('comfyserve.commands.', 'comfyserve.localstack',"
        " 'comfyserve.engine.executor', 'comfyserve.engine.registry'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.splitlines() == ["valid: outputs 6, 8", "['comfyserve.commands.common', 'comfyserve.commands.validate']"]


def test_run_lists_every_validation_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = json.loads(IMAGE_ONLY.read_text())
    del prompt["2"]["inputs"]["left"]
    prompt["3"]["inputs"]["blur_radius"] = 99
    path = tmp_path / "w.json"
    path.write_text(json.dumps(prompt))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 1
    run_err = capsys.readouterr().err
    assert run_err == (
        "invalid: Prompt outputs failed validation\n"  # ComfyUI's order: a node after its inputs
        "  node 2 (ImagePadForOutpaint): required_input_missing: Required input is missing: left\n"
        "  node 3 (ImageBlur): value_bigger_than_max: Value 99 bigger than max of 31: blur_radius\n"
    )
    assert not (tmp_path / "o").exists()
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out == run_err  # one account of an invalid workflow, the same exit status


MISSING_FIX = (
    "missing models: checkpoints/v1-5-pruned-emaonly.safetensors: give the folder that holds them with --models DIR"
    " (checkpoints/, loras/, vae/ ...), or write random-weight stand-ins with: comfyserve make-test-models DIR"
    " --for WORKFLOW.json\n"
)


def test_missing_model_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = str(ROOT / "examples" / "sd15_txt2img.json")
    assert main(["run", workflow, "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.endswith("not in []\n" + MISSING_FIX)
    assert main(["validate", workflow, "--models", str(tmp_path)]) == 1
    assert capsys.readouterr().out.endswith("not in []\n" + MISSING_FIX)
    assert not (tmp_path / "o").exists()


def test_ctrl_c_stops_run_between_steps_and_records_it(tmp_path: Path) -> None:
    """SIGINT at a sampling step: the run stops at the next step, says so, exits 130, the manifest records it."""
    from comfyserve.models.testmodels import make_test_models

    prompt = json.loads((ROOT / "examples" / "sd15_txt2img.json").read_text())
    prompt["3"]["inputs"]["steps"] = 1000  # minutes on the CPU if the interrupt were ignored
    prompt["5"]["inputs"].update(width=64, height=64)
    workflow = tmp_path / "long.json"
    workflow.write_text(json.dumps(prompt))
    make_test_models(tmp_path / "models", [workflow])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "comfyserve", "run", str(workflow), "--out", str(out), "--models"]
    child = subprocess.Popen(
        [*command, str(tmp_path / "models")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    for line in child.stdout:
        if "KSampler step" in line:
            break
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == 130, stderr
    assert stderr == (
        "comfyserve run: stopping after the current step (Ctrl-C again to quit at once)\n"
        "comfyserve run: interrupted by Ctrl-C; the manifest records where it stopped\n"
    )
    assert "interrupted\n" in stdout and f"manifest: {out / 'manifest.json'} (interrupted)" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert "3" not in manifest["executed"] and manifest["outputs"] == []


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_serve_without_workers_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    data = tmp_path / "data"

    assert main(["serve", "--workers", workers, "--port", "0", "--data", str(data)]) == 2
    assert capsys.readouterr().err == (
        f"comfyserve serve: --workers {workers}: give 1 or more (with no worker, every job would stay queued)\n"
    )
    assert not data.exists()
