"""The editor's (UI-format) workflow wherever a workflow enters: POST /v1/jobs, /v1/validate, the drop folder,
and `comfyserve validate | convert | submit`. The job records the API prompt; bad files get a clear error."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfyserve.cli import main
from comfyserve.commands.common import read_workflow
from comfyserve.engine.catalog import Catalog
from comfyserve.service.drop_folder import DropFolder
from comfyserve.service.outbox import TenantMap
from comfyserve.ui_workflow import UIWorkflowError, to_api_prompt
from tests.api_stack import Stack, error_body, make_stack
from tests.images import png

DATA = Path(__file__).resolve().parents[1] / "data" / "ui_workflows"
EDITOR_FILE = DATA / "sd15_editor.json"
# What ComfyUI 0.3.64's editor (frontend 1.27.10) sends for sd15_editor.json, choosing the first option of
# each {a|b} (tests/ui_oracle/generate.py --only tests/data/ui_workflows/sd15_editor.json).
EDITOR_PROMPT = json.loads((DATA / "sd15_editor.api.json").read_text(encoding="utf-8"))


def editor_workflow() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EDITOR_FILE.read_text(encoding="utf-8"))
    return document


def chain(*nodes: tuple[str, str, list[Any]]) -> dict[str, Any]:
    """A UI-format workflow of (type, input name, widget values) nodes, each feeding the next one's input."""
    built = []
    for node_id, (type_, input_name, values) in enumerate(nodes, start=1):
        node: dict[str, Any] = {"id": node_id, "type": type_, "mode": 0, "widgets_values": values}
        node["outputs"] = [{"name": "out", "type": "*", "links": [node_id] if node_id < len(nodes) else []}]
        if node_id > 1:
            node["inputs"] = [{"name": input_name, "type": "*", "link": node_id - 1}]
        built.append(node)
    links = [[i, i, 0, i + 1, 0, "*"] for i in range(1, len(nodes))]
    return {"nodes": built, "links": links, "version": 0.4}


def first(options: list[str]) -> str:
    return options[0]


@pytest.fixture(scope="module")
def packaged() -> Catalog:
    return Catalog.packaged()


@pytest.fixture
def stack(tmp_path: Path, packaged: Catalog) -> Stack:
    return make_stack(tmp_path, catalog=packaged)


def test_converts_the_hand_made_workflow_as_the_editor(packaged: Catalog) -> None:
    assert to_api_prompt(editor_workflow(), packaged.specs, choose=first) == EDITOR_PROMPT


def test_a_submitted_editor_workflow_records_its_api_prompt(stack: Stack) -> None:
    response = stack.call("POST", "/v1/jobs", body={"workflow": editor_workflow()})

    assert response.status == 202, response.json()
    record: Any = stack.jobs.get("tenant-a", response.json()["job_id"])
    stored = record.workflow
    assert set(stored) == set(EDITOR_PROMPT)  # the API prompt, with subgraph ids, muted and virtual nodes gone
    assert stored["3"]["inputs"]["seed"] == 42 and stored["3"]["inputs"]["model"] == ["1", 0]
    assert stored["10:2"]["inputs"]["text"] == "blurry, lowres"
    assert record.metadata["comfyui"] == {"outputs": ["7"]}


def test_an_api_prompt_is_submitted_unchanged(stack: Stack, packaged: Catalog) -> None:
    response = stack.call("POST", "/v1/jobs", body={"workflow": EDITOR_PROMPT})

    assert response.status == 202, response.json()
    record: Any = stack.jobs.get("tenant-a", response.json()["job_id"])
    assert record.workflow["10:1"]["inputs"]["text"] == EDITOR_PROMPT["10:1"]["inputs"]["text"]


def test_comfyui_prompt_route_keeps_the_api_format_only(stack: Stack) -> None:
    response = stack.call("POST", "/prompt", body={"prompt": editor_workflow()})

    assert response.status == 400
    assert response.json()["error"]["message"] == (
        "this looks like a UI-format workflow; export it with 'Save (API Format)' in ComfyUI"
    )
    assert stack.jobs.list("tenant-a")[0] == []


def test_a_workflow_with_a_node_the_catalog_lacks_is_refused_naming_it(stack: Stack) -> None:
    document = editor_workflow()
    document["nodes"][4]["type"] = "FancyLatent"  # node 5, untitled

    response = stack.call("POST", "/v1/jobs", body={"workflow": document})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_prompt",
        "Cannot convert the editor's workflow to the API format",
        "node 5: node type 'FancyLatent' is not in this catalog",
    )
    assert stack.jobs.list("tenant-a")[0] == [] and stack.queue.receive(max_messages=10) == []


def test_validate_answers_for_the_converted_prompt(stack: Stack) -> None:
    valid = stack.call("POST", "/v1/validate", body={"workflow": editor_workflow()})
    document = editor_workflow()
    document["links"] = [link for link in document["links"] if link[0] != 5]  # the reroute's link to VAEDecode
    broken = stack.call("POST", "/v1/validate", body={"workflow": document})

    assert valid.status == 200 and valid.json()["node_errors"] == {}, valid.json()
    assert broken.json()["error"]["details"] == (
        "node 6: input 'vae' refers to link 5, which the graph does not have"
    ), broken.json()


@pytest.mark.parametrize(
    ("change", "details"),
    [
        (lambda d: d["nodes"].append({"id": 12}), "the workflow: node 11 (id 12) has no 'type'"),
        (lambda d: d.update(links=[["x", 1, 0, 3, 0]]), "the workflow: link 'x' has a non-numeric id or slot"),
        (
            lambda d: d["definitions"]["subgraphs"][0]["nodes"][1].update(type="FancyEncode"),
            "node 10:2 ('Negative'): node type 'FancyEncode' is not in this catalog",
        ),
        (
            lambda d: d["definitions"]["subgraphs"][0]["nodes"][0].update(type=d["nodes"][9]["type"]),
            "node 1: subgraph 'Prompts' contains itself",  # node 1 of 'Prompts' is an instance of it
        ),
    ],
)
def test_malformed_editor_files_are_refused_with_what_is_wrong(packaged: Catalog, change: Any, details: str) -> None:
    document = copy.deepcopy(editor_workflow())
    change(document)
    with pytest.raises(UIWorkflowError) as caught:
        to_api_prompt(document, packaged.specs)
    assert str(caught.value) == details


def test_a_dropped_editor_workflow_takes_the_image_beside_it(stack: Stack) -> None:
    ui = chain(("LoadImage", "", ["refs/cat.png", "image"]), ("SaveImage", "images", ["dropped"]))
    stack.blobs.put("inbox/acme/refs/cat.png", png(), "image/png")
    stack.blobs.put("inbox/acme/one.json", json.dumps(ui).encode(), "application/json")

    result = DropFolder(stack.service, stack.blobs, TenantMap()).on_object_created("inbox/acme/one.json", "v1")

    assert result.outcome == "submitted", result
    record: Any = stack.jobs.get("acme", result.job_id or "")
    assert record.workflow["1"]["inputs"]["image"] == "refs/cat.png" and set(record.inputs) == {"refs/cat.png"}
    assert record.workflow["2"]["inputs"] == {"filename_prefix": "dropped", "images": ["1", 0]}


def test_cli_convert_prints_the_api_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(EDITOR_FILE)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == set(EDITOR_PROMPT) and printed["3"] == EDITOR_PROMPT["3"]


def test_cli_convert_with_an_object_info_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "object_info.json"
    info = Catalog.packaged().to_object_info()
    info["CLIPTextEncode"]["display_name"] = "Prompt"
    catalog.write_text(json.dumps(info))

    assert main(["convert", str(EDITOR_FILE), "--catalog", str(catalog)]) == 0
    assert json.loads(capsys.readouterr().out)["10:1"]["_meta"] == {"title": "Prompt"}


def test_cli_validate_converts_and_reports_by_editor_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EDITOR_FILE)]) == 0
    assert capsys.readouterr().out == "valid: outputs 7\n"
    document = editor_workflow()
    document["nodes"][0]["title"] = "My loader"
    document["nodes"][0]["type"] = "UnknownLoader"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))

    assert main(["validate", str(bad)]) == 2
    assert capsys.readouterr().err == (
        "comfyserve validate: node 1 ('My loader'): node type 'UnknownLoader' is not in this catalog\n"
    )


def test_cli_submit_sends_the_editor_file_as_it_is() -> None:
    assert read_workflow(EDITOR_FILE) == editor_workflow()


def test_cli_run_runs_the_converted_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ui = chain(("EmptyImage", "", [8, 8, 1, 255]), ("Reroute", "", []), ("SaveImage", "images", ["ui/run"]))
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(ui))

    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [(o["node_id"], Path(o["path"]).name) for o in manifest["outputs"]] == [("3", "run_00001_.png")]
    with Image.open(manifest["outputs"][0]["path"]) as image:
        assert image.size == (8, 8)
        assert json.loads(image.info["prompt"])["3"]["inputs"] == {"filename_prefix": "ui/run", "images": ["1", 0]}
    assert "wrote" in capsys.readouterr().out
