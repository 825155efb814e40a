"""Resource caps see through primitive nodes and image-size chains at validation, and are checked again by
the nodes that allocate images at run time; ``comfyserve run`` (LocalRun's defaults) has no node-count cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.executor import Executor
from comfyserve.engine.registry import build_registry
from comfyserve.engine.validation import Limits, ValidationResult, validate_prompt
from comfyserve.worker.run_local import LocalRun, execute_workflow
from tests.api_stack import make_stack

SPECS = Catalog.packaged().specs
PACKS = ("comfyserve.nodes.primitives", "comfyserve.nodes.image", "comfyserve.nodes.image_io")
OVER = "6000x6000 exceeds this service's limit of 16,777,216 pixels"


def empty_image(width: Any = 64, height: Any = 64, batch_size: Any = 1) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": batch_size, "color": 0},
        },
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "caps"}},
    }


def errors_of(result: ValidationResult, node_id: str) -> list[tuple[str, str]]:
    assert not result.ok
    return [(e["type"], e["details"]) for e in result.node_errors[node_id]["errors"]]


def test_a_width_behind_primitive_ints_is_refused_as_a_literal_is() -> None:
    literal = validate_prompt(empty_image(6000, 6000), SPECS)
    prompt = empty_image(["p", 0], 6000)
    prompt["p"] = {"class_type": "PrimitiveInt", "inputs": {"value": ["q", 0]}}
    prompt["q"] = {"class_type": "PrimitiveInt", "inputs": {"value": 6000}}
    linked = validate_prompt(prompt, SPECS)

    assert errors_of(linked, "1") == errors_of(literal, "1") == [("resource_limit_exceeded", f"width: {OVER}")]
    prompt["q"]["inputs"]["value"] = 4096
    assert validate_prompt(
        {**prompt, "1": {**prompt["1"], "inputs": {**prompt["1"]["inputs"], "height": 4096}}}, SPECS
    ).ok


def test_a_batch_size_behind_a_primitive_int_is_capped() -> None:
    prompt = empty_image(batch_size=["p", 0])
    prompt["p"] = {"class_type": "PrimitiveInt", "inputs": {"value": 65}}
    assert errors_of(validate_prompt(prompt, SPECS), "1") == [
        ("resource_limit_exceeded", "batch_size: 65 exceeds this service's limit of 64")
    ]


def scaled(*factors: Any) -> dict[str, Any]:
    """EmptyImage 2048x2048 → ImageInvert → ImageScaleBy(f) for each factor → SaveImage."""
    prompt = empty_image(2048, 2048)
    prompt["2"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    previous = "2"
    for index, factor in enumerate(factors):
        node_id = f"s{index}"
        prompt[node_id] = {
            "class_type": "ImageScaleBy",
            "inputs": {"image": [previous, 0], "upscale_method": "nearest-exact", "scale_by": factor},
        }
        previous = node_id
    prompt["9"]["inputs"]["images"] = [previous, 0]
    return prompt


def test_an_image_scale_by_chain_is_bounded_by_multiplying_its_factors() -> None:
    assert validate_prompt(scaled(2.0, 0.5, 2.0), SPECS).ok  # 4096x4096 at most: the cap itself
    prompt = scaled(2.0, ["f", 0])
    prompt["f"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 2.0}}
    assert errors_of(validate_prompt(prompt, SPECS), "s1") == [
        ("resource_limit_exceeded", "scale_by: 8192x8192 exceeds this service's limit of 16,777,216 pixels")
    ]


def test_the_service_refuses_it_at_submit_and_records_nothing(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, catalog=Catalog.packaged())
    prompt = scaled(4.0)
    response = stack.call("POST", "/v1/jobs", body={"workflow": prompt})
    assert response.status == 400
    (error,) = response.json()["node_errors"]["s0"]["errors"]
    assert (error["type"], error["details"]) == (
        "resource_limit_exceeded",
        "scale_by: 8192x8192 exceeds this service's limit of 16,777,216 pixels",
    )
    assert stack.nothing_recorded()


@pytest.fixture(scope="module")
def registry() -> Any:
    return build_registry(PACKS)


def run(prompt: dict[str, Any], registry: Any, tmp_path: Path, **options: Any) -> tuple[str, str]:
    executor = Executor(registry)
    try:
        result, validation = execute_workflow(prompt, LocalRun(out_dir=tmp_path, **options), registry, executor)
    finally:
        executor.close()
    assert validation.ok
    if not result.errors:
        return result.status, ""
    (error,) = result.errors
    return result.status, f"{error['exception_type'].rpartition('.')[2]}: {error['exception_message']}"


def test_sizes_validation_cannot_see_are_refused_at_run_time_before_allocating(registry: Any, tmp_path: Path) -> None:
    aspect = empty_image(64, 8)  # ImageScale with width 0 keeps the aspect ratio: 32768x4096
    aspect["2"] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["1", 0],
            "upscale_method": "nearest-exact",
            "width": 0,
            "height": 4096,
            "crop": "disabled",
        },
    }
    aspect["9"]["inputs"]["images"] = ["2", 0]
    assert run(aspect, registry, tmp_path / "a", limits=Limits()) == (
        "error",
        "NodeInputError: 32768x4096 exceeds this service's limit of 16,777,216 pixels",
    )
    padded = empty_image(64, 64)
    padded["2"] = {
        "class_type": "ImagePadForOutpaint",
        "inputs": {"image": ["1", 0], "left": 0, "top": 0, "right": 8, "bottom": 0, "feathering": 0},
    }
    padded["9"]["inputs"]["images"] = ["2", 0]
    assert run(padded, registry, tmp_path / "b", limits=Limits(max_pixels=64 * 64)) == (
        "error",
        "NodeInputError: 72x64 exceeds this service's limit of 4,096 pixels",
    )


def test_comfyserve_run_has_no_node_count_cap_and_the_service_keeps_it(registry: Any, tmp_path: Path) -> None:
    prompt: dict[str, Any] = {"c0": {"class_type": "PrimitiveInt", "inputs": {"value": 8}}}
    for i in range(1, 10_000):
        prompt[f"c{i}"] = {"class_type": "PrimitiveInt", "inputs": {"value": [f"c{i - 1}", 0]}}
    prompt.update(empty_image(["c9999", 0], 8))
    assert len(prompt) == 10_002
    assert run(prompt, registry, tmp_path / "run")[0] == "success"
    refused = validate_prompt(prompt, SPECS, limits=Limits())
    assert refused.error is not None and refused.error["details"] == "10002 nodes exceeds the limit of 5000"
