"""Fuzzing the validator: random JSON and random graphs give a clean result, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyserve.engine.errors import WorkflowFormatError
from comfyserve.engine.prompt_format import parse_workflow_document
from comfyserve.engine.validation import ValidationResult, validate_prompt
from tests.unit.test_validation import SPECS

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
node_ids = st.sampled_from(["1", "2", "3", "4", "5", "x", "68:8"])
input_names = st.sampled_from(
    ["model", "image", "images", "seed", "steps", "cfg", "width", "ckpt_name", "value", "extra"]
)
input_values = st.one_of(
    json_values,
    st.tuples(node_ids, st.integers(-2, 4)).map(list),
    st.sampled_from(["euler", "normal", "v1-5.safetensors", "ComfyUI"]),
)
nodes = st.fixed_dictionaries(
    {
        "class_type": st.sampled_from([*SPECS, "Unknown"]),
        "inputs": st.dictionaries(input_names, input_values, max_size=8),
    }
)
graphs = st.dictionaries(node_ids, nodes | json_values, max_size=7)


def assert_clean(result: ValidationResult) -> None:
    assert isinstance(result, ValidationResult)
    json.dumps(result.response())  # every result serialises to ComfyUI's shape
    assert result.ok == (result.error is None)
    if result.ok:
        assert result.outputs
    for entry in result.node_errors.values():
        assert entry["errors"] and entry["dependent_outputs"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs)
def test_random_graphs_validate_cleanly(prompt: dict[str, Any]) -> None:
    assert_clean(validate_prompt(prompt, SPECS))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_random_json_validates_cleanly(document: Any) -> None:
    assert_clean(validate_prompt(document, SPECS))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_random_bytes_parse_or_fail_with_a_format_error(raw: bytes) -> None:
    try:
        prompt = parse_workflow_document(raw)
    except WorkflowFormatError as exc:
        assert str(exc)
    else:
        assert isinstance(prompt, dict)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "the workflow is not valid JSON: Expecting property name enclosed in double quotes"),
        (b"[1, 2]", "a workflow must be a JSON object of nodes in API format, not an array"),
        (b'"text"', "a workflow must be a JSON object of nodes in API format, not a string"),
        (b"[" * 100_000 + b"]" * 100_000, "the workflow is nested too deeply to be a workflow"),
        (
            b'{"nodes": [], "links": [], "version": 0.4}',
            "this looks like a UI-format workflow; export it with 'Save (API Format)' in ComfyUI",
        ),
    ],
)
def test_malformed_documents_get_one_clear_sentence(raw: bytes, message: str) -> None:
    with pytest.raises(WorkflowFormatError) as info:
        parse_workflow_document(raw)
    assert str(info.value).startswith(message)


def test_huge_documents_are_refused_before_parsing() -> None:
    with pytest.raises(WorkflowFormatError, match=r"over the limit of 16,777,216 bytes"):
        parse_workflow_document(b" " * (16 * 1024 * 1024 + 1))


def test_prompt_wrapper_is_accepted() -> None:
    assert parse_workflow_document(b'{"prompt": {"1": {"class_type": "Save", "inputs": {}}}}') == {
        "1": {"class_type": "Save", "inputs": {}}
    }
