"""Validation: ComfyUI's rules and error shapes (reference §1.2) and comfyserve's additions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.spec import NodeSpec
from comfyserve.engine.validation import Limits, ValidationResult, validate_prompt
from tests.unit import validation_nodes

REGISTRY = NodeRegistry()
REGISTRY.load_module(validation_nodes)
SPECS = REGISTRY.specs()


def graph(**overrides: Any) -> dict[str, Any]:
    """A valid five-node graph: Loader → Sampler → Passthrough → Save."""
    prompt: dict[str, Any] = {
        "4": {"class_type": "Loader", "inputs": {"ckpt_name": "v1-5.safetensors"}, "_meta": {"title": "x"}},
        "3": {
            "class_type": "Sampler",
            "inputs": {
                "model": ["4", 0],
                "seed": 5,
                "steps": 20,
                "cfg": 8,
                "sampler_name": "euler",
                "scheduler": "normal",
                "width": 512,
                "height": 512,
            },
        },
        "8": {"class_type": "Passthrough", "inputs": {"image": ["3", 0], "upload": "image"}},
        "9": {"class_type": "Save", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}},
    }
    for key, value in overrides.items():
        node_id, _, input_name = key.partition("__")
        prompt[node_id]["inputs"][input_name] = value
    return prompt


def check(prompt: Any, **kwargs: Any) -> ValidationResult:
    return validate_prompt(prompt, SPECS, **kwargs)


def only_error(result: ValidationResult, node_id: str) -> dict[str, Any]:
    assert not result.ok
    errors = result.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_graph_coerces_values_without_mutating_the_input() -> None:
    prompt = graph(**{"3__cfg": 8, "3__steps": "20", "3__flag": "false"})
    original = copy.deepcopy(prompt)
    result = check(prompt)
    assert result.ok and result.outputs == ["9"] and result.node_errors == {}
    inputs = result.prompt["3"]["inputs"]
    assert inputs["cfg"] == 8.0 and isinstance(inputs["cfg"], float)
    assert inputs["steps"] == 20 and inputs["flag"] is False
    assert prompt == original


def test_missing_class_type_is_invalid_prompt() -> None:
    prompt = graph()
    del prompt["8"]["class_type"]
    result = check(prompt)
    assert result.error == {
        "type": "invalid_prompt",
        "message": "Cannot execute because a node is missing the class_type property.",
        "details": "Node ID '#8'",
        "extra_info": {},
    }
    assert result.node_errors == {}


def test_unknown_node_anywhere_rejects_the_prompt_naming_node_and_id() -> None:
    prompt = graph()
    prompt["unused"] = {"class_type": "ImageResize+", "inputs": {}}
    result = check(prompt)
    assert not result.ok
    assert result.error == {
        "type": "invalid_prompt",
        "message": "Cannot execute because node ImageResize+ does not exist.",
        "details": "Node ID '#unused'",
        "extra_info": {},
    }


@pytest.mark.parametrize("targets", [None, [], ["3"]])
def test_no_outputs(targets: list[str] | None) -> None:
    prompt = graph() if targets is not None else {k: v for k, v in graph().items() if k != "9"}
    result = check(prompt, targets=targets)
    assert result.error == {
        "type": "prompt_no_outputs",
        "message": "Prompt has no outputs",
        "details": "",
        "extra_info": {},
    }


def test_required_input_missing_names_the_input() -> None:
    prompt = graph()
    del prompt["3"]["inputs"]["steps"]
    result = check(prompt)
    assert result.error is not None and result.error["type"] == "prompt_outputs_failed_validation"
    assert result.error["details"] == ""  # the bad input is upstream of the output
    assert only_error(result, "3") == {
        "type": "required_input_missing",
        "message": "Required input is missing",
        "details": "steps",
        "extra_info": {"input_name": "steps"},
    }
    assert result.node_errors["3"]["dependent_outputs"] == ["9"]
    assert result.node_errors["3"]["class_type"] == "Sampler"
    assert "8" not in result.node_errors  # downstream nodes are not listed


def test_error_on_the_output_node_fills_the_top_level_details() -> None:
    prompt = graph()
    del prompt["9"]["inputs"]["filename_prefix"]
    result = check(prompt)
    assert result.error is not None
    assert result.error["details"] == "Required input is missing: filename_prefix"


def test_bad_linked_input() -> None:
    result = check(graph(**{"8__image": ["3", 0, 1]}))
    error = only_error(result, "8")
    assert error["type"] == "bad_linked_input" and error["details"] == "image"


def test_link_to_missing_node_is_an_error_not_an_exception() -> None:
    result = check(graph(**{"8__image": ["404", 0]}))
    error = only_error(result, "8")
    assert error["type"] == "linked_node_missing"
    assert error["details"] == "image: node '404' is not in the prompt"


def test_slot_out_of_range() -> None:
    error = only_error(check(graph(**{"8__image": ["3", 4]})), "8")
    assert error["type"] == "bad_linked_input"
    assert error["details"] == "image: node '3' (Sampler) has 1 outputs, not slot 4"


def test_return_type_mismatch_details() -> None:
    error = only_error(check(graph(**{"8__image": ["4", 1]})), "8")
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "image, received_type(CLIP) mismatch input_type(IMAGE)"
    assert error["extra_info"]["linked_node"] == ["4", 1]


def test_union_types_match_on_intersection() -> None:
    prompt = graph()
    prompt["8"] = {"class_type": "Union", "inputs": {"value": ["3", 0]}}
    assert check(prompt).ok
    prompt["8"]["inputs"]["value"] = ["4", 0]
    assert only_error(check(prompt), "8")["type"] == "return_type_mismatch"


def test_value_not_in_list_classic_and_new_style_combo() -> None:
    error = only_error(check(graph(**{"3__sampler_name": "nope"})), "3")
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "sampler_name: 'nope' not in ['euler', 'heun', 'dpmpp_2m']"
    error = only_error(check(graph(**{"3__scheduler": "beta"})), "3")
    assert error["details"] == "scheduler: 'beta' not in ['normal', 'karras']"


def test_long_combo_lists_are_summarised() -> None:
    prompt = graph()
    prompt["8"] = {"class_type": "Many", "inputs": {"choice": "option99", "image": ["3", 0]}}
    error = only_error(check(prompt), "8")
    assert error["details"] == "choice: 'option99' not in (list of length 30)"
    assert error["extra_info"]["input_config"] is None


@pytest.mark.parametrize(
    ("key", "value", "type_", "message"),
    [
        ("3__steps", 0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
        ("3__cfg", 100.5, "value_bigger_than_max", "Value 100.5 bigger than max of 100.0"),
        ("3__seed", -1, "value_smaller_than_min", "Value -1 smaller than min of 0"),
    ],
)
def test_min_and_max(key: str, value: Any, type_: str, message: str) -> None:
    error = only_error(check(graph(**{key: value})), "3")
    assert (error["type"], error["message"], error["details"]) == (type_, message, key.split("__")[1])


@pytest.mark.parametrize("value", ["abc", [1], {"a": 1}, float("inf"), float("nan"), "1e400"])
def test_invalid_input_type(value: Any) -> None:
    error = only_error(check(graph(**{"3__cfg": value if not isinstance(value, list) else {"__value__": value}})), "3")
    assert error["type"] == "invalid_input_type"
    assert error["message"] == "Failed to convert an input value to a FLOAT value"
    assert error["details"].startswith("cfg, ")


def test_boolean_strings_mean_what_they_say() -> None:
    assert check(graph(**{"3__flag": "true"})).prompt["3"]["inputs"]["flag"] is True
    error = only_error(check(graph(**{"3__flag": "maybe"})), "3")
    assert error["type"] == "invalid_input_type"


def test_step_is_enforced() -> None:
    error = only_error(check(graph(**{"3__width": 500})), "3")
    assert error["type"] == "value_not_multiple_of_step"
    assert error["message"] == "Value 500 is not a multiple of step 8"
    assert check(graph(**{"3__cfg": 7.55})).ok  # FLOAT: checked against round (0.01), not the UI step
    assert only_error(check(graph(**{"3__cfg": 7.555})), "3")["type"] == "value_not_multiple_of_step"
    assert check(graph(**{"3__cfg": 0.2700000000000001})).ok  # float noise from real exports
    assert check(graph(**{"3__denoise": 0.155})).ok  # a FLOAT step without round is a UI increment only


def test_static_cycle_is_named() -> None:
    prompt = graph()
    prompt["a"] = {"class_type": "Passthrough", "inputs": {"image": ["b", 0]}}
    prompt["b"] = {"class_type": "Passthrough", "inputs": {"image": ["a", 0]}}
    prompt["9"]["inputs"]["images"] = ["b", 0]
    result = check(prompt)
    assert not result.ok
    assert set(result.node_errors) == {"a", "b"}
    error = result.node_errors["a"]["errors"][0]
    assert error["type"] == "dependency_cycle"
    assert error["details"] in ("cycle: b -> a -> b", "cycle: a -> b -> a")


def test_self_loop_is_a_cycle() -> None:
    prompt = graph(**{"8__image": ["8", 0]})
    assert only_error(check(prompt), "8")["details"] == "cycle: 8 -> 8"


def test_partly_valid_prompt_runs_the_valid_output() -> None:
    prompt = graph()
    prompt["bad"] = {"class_type": "Save", "inputs": {"images": ["missing", 0], "filename_prefix": "x"}}
    result = check(prompt)
    assert result.ok and result.outputs == ["9"]
    assert result.node_errors["bad"]["errors"][0]["type"] == "linked_node_missing"
    assert result.node_errors["bad"]["dependent_outputs"] == ["bad"]
    strict = check(prompt, strict=True)
    assert not strict.ok and strict.error is not None
    assert strict.error["type"] == "prompt_outputs_failed_validation"


def test_shared_bad_ancestor_lists_every_dependent_output() -> None:
    prompt = graph(**{"3__steps": 0})
    prompt["10"] = {"class_type": "Save", "inputs": {"images": ["3", 0], "filename_prefix": "b"}}
    result = check(prompt)
    assert result.node_errors["3"]["dependent_outputs"] == ["9", "10"]


def test_model_names_checked_against_an_inventory() -> None:
    inventory = ModelInventory.from_listing({"checkpoints": ["other.safetensors"]})
    error = only_error(check(graph(), inventory=inventory), "4")
    assert error["details"] == "ckpt_name: 'v1-5.safetensors' not in ['other.safetensors']"
    assert check(graph()).ok  # without an inventory any name is accepted
    assert check(graph(), inventory=ModelInventory.from_listing({"checkpoints": ["v1-5.safetensors"]})).ok


def test_input_images_checked_against_supplied_inputs() -> None:
    prompt = graph()
    prompt["1"] = {"class_type": "LoadPicture", "inputs": {"image": "https://example.com/a.png", "upload": "image"}}
    prompt["8"]["inputs"]["image"] = ["1", 0]
    assert check(prompt).ok
    assert check(prompt, input_names={"https://example.com/a.png"}).ok
    error = only_error(check(prompt, input_names={"b.png"}), "1")
    assert error["details"] == "image: 'https://example.com/a.png' not in ['b.png']"


@pytest.mark.parametrize(
    ("overrides", "details"),
    [
        ({"3__steps": 1001}, "steps: 1001 exceeds this service's limit of 1000"),
        ({"3__width": 8192, "3__height": 8192}, "width: 8192x8192 exceeds this service's limit of 16,777,216 pixels"),
    ],
)
def test_resource_caps(overrides: dict[str, Any], details: str) -> None:
    error = only_error(check(graph(**overrides)), "3")
    assert error["type"] == "resource_limit_exceeded" and error["details"] == details


def test_node_count_cap() -> None:
    result = check(graph(), limits=Limits(max_nodes=3))
    assert result.error is not None and result.error["type"] == "resource_limit_exceeded"
    assert result.error["details"] == "4 nodes exceeds the limit of 3"


def test_validate_inputs_hook_runs_with_classes_and_bypasses_max() -> None:
    prompt = graph()
    prompt["8"] = {"class_type": "Checked", "inputs": {"image": ["3", 0], "limit": 5.0}}
    assert check(prompt).ok  # catalog-only: the hook owns `limit`, so max 1.0 is not applied
    assert check(prompt, node_classes=REGISTRY.classes).ok
    prompt["8"]["inputs"]["limit"] = 7.0
    error = only_error(check(prompt, node_classes=REGISTRY.classes), "8")
    assert error == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "limit - limit 7.0 is not below 7",
        "extra_info": {},
    }


def test_a_long_chain_validates_without_recursion() -> None:
    prompt: dict[str, Any] = {"0": graph()["3"], "m": graph()["4"]}
    prompt["0"]["inputs"]["model"] = ["m", 0]
    for i in range(1, 10_000):
        prompt[str(i)] = {"class_type": "Passthrough", "inputs": {"image": [str(i - 1), 0]}}
    prompt["out"] = {"class_type": "Save", "inputs": {"images": ["9999", 0], "filename_prefix": "x"}}
    result = check(prompt, limits=Limits(max_nodes=None))
    assert result.ok and result.outputs == ["out"]


def test_catalog_round_trip_gives_the_same_verdicts() -> None:
    catalog = Catalog.from_object_info(Catalog(SPECS).to_object_info())
    for overrides in ({}, {"3__steps": 0}, {"8__image": ["4", 1]}, {"3__sampler_name": "x"}):
        direct, via_catalog = check(graph(**overrides)), validate_prompt(graph(**overrides), catalog.specs)
        assert direct.response() == via_catalog.response()
    sampler: NodeSpec = catalog.specs["Sampler"]
    assert sampler.declared["scheduler"].choices == ("normal", "karras")
    assert catalog.specs["Checked"].validate_hook is not None


def test_node_errors_come_in_comfyuis_order() -> None:
    """ComfyUI lists a node's errors after its inputs' (its ``validated`` dict, filled depth first), and adds a
    failed output to the dependents of every node with errors found so far, even one not upstream of it."""
    prompt = graph(**{"3__steps": 0})
    del prompt["4"]["inputs"]["ckpt_name"]
    prompt["19"] = {"class_type": "Save", "inputs": {"images": ["18", 0]}}
    prompt["18"] = {"class_type": "Passthrough", "inputs": {"image": ["3", 0], "upload": "image"}}
    prompt["29"] = {"class_type": "Save", "inputs": {"images": ["8", 0]}}
    result = check(prompt)
    assert [(node, entry["dependent_outputs"]) for node, entry in result.node_errors.items()] == [
        ("4", ["9", "19", "29"]),
        ("3", ["9", "19", "29"]),
        ("19", ["19", "29"]),
        ("29", ["29"]),
    ]
