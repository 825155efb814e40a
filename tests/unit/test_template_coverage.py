"""The template coverage benchmark's rules (bench/template_coverage.py): which nodes and model files a workflow
uses, its family, the time caps, and the summary and ranking of outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.bench_template_coverage import stand_ins
from bench.template_coverage import (
    Outcome,
    Record,
    Workflow,
    capped,
    index_api_names,
    missing_ranking,
    name_family,
    summary,
    used_nodes,
    workflow_family,
)
from comfyserve.engine.catalog import Catalog


def ui_node(node_id: int, type_: str, values: list[Any], mode: int = 0) -> dict[str, Any]:
    return {"id": node_id, "type": type_, "mode": mode, "inputs": [], "outputs": [], "widgets_values": values}


def ui_workflow(nodes: list[dict[str, Any]], subgraph_nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"nodes": nodes, "links": []}
    if subgraph_nodes is not None:
        document["definitions"] = {"subgraphs": [{"id": "sub-1", "name": "inner", "nodes": subgraph_nodes}]}
    return document


@pytest.mark.parametrize(
    ("loader", "name", "family"),
    [
        ("CheckpointLoaderSimple", "sd_xl_base_1.0.safetensors", "sd"),
        ("CheckpointLoaderSimple", "v1-5-pruned-emaonly.ckpt", "sd"),
        ("CheckpointLoaderSimple", "dreamshaper_8.safetensors", "sd"),  # unmarked, an SD-era loader
        ("UNETLoader", "dreamshaper_8.safetensors", "other"),  # unmarked, a loader of later families
        ("UNETLoader", "SD1.5/sd15_unet.safetensors", "sd"),
        ("UpscaleModelLoader", "RealESRGAN_x4plus.pth", "sd"),
        ("CheckpointLoaderSimple", "sd3.5_large_fp8_scaled.safetensors", "sd3"),
        ("CheckpointLoaderSimple", "flux1-dev-fp8.safetensors", "flux"),
        ("VAELoader", "wan_2.1_vae.safetensors", "wan"),
        ("LoraLoaderModelOnly", "Qwen-Image-Lightning-4steps-V1.0.safetensors", "qwen"),
        ("CheckpointLoaderSimple", "ace_step_v1_3.5b.safetensors", "audio"),
        ("CheckpointLoaderSimple", "sam3.1_multiplex_fp16.safetensors", "other"),
    ],
)
def test_a_model_file_gets_its_family_from_its_name_then_its_loader(loader: str, name: str, family: str) -> None:
    assert name_family(loader, name) == family


def test_used_nodes_skip_frontend_nodes_subgraph_instances_and_inactive_nodes() -> None:
    document = ui_workflow(
        [
            ui_node(1, "CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"]),
            ui_node(2, "UNETLoader", ["flux1-dev.safetensors", "default"], mode=4),  # bypassed
            ui_node(3, "Note", ["flux1-dev.safetensors"]),
            ui_node(4, "sub-1", []),
        ],
        [ui_node(1, "KSampler", [1, "fixed", 20]), ui_node(2, "VAEDecode", [], mode=2)],  # the last one muted
    )
    assert used_nodes(document) == [
        ("CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"]),
        ("KSampler", [1, "fixed", 20]),
    ]
    api = {"9": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}}
    assert used_nodes(api) == [("VAELoader", ["ae.safetensors"])]


def test_a_workflow_family_is_sd_when_all_its_models_are_none_without_models_else_the_commonest_other() -> None:
    sd = ui_workflow([ui_node(1, "CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"])])
    no_models = ui_workflow([ui_node(1, "LoadImage", ["photo.png", "image"])])
    mixed = ui_workflow(
        [ui_node(1, "CheckpointLoaderSimple", ["sd_xl_base_1.0.safetensors"]), ui_node(2, "LoraLoader", ["x.pt"])],
        [ui_node(1, "UNETLoader", ["qwen_image_fp8.safetensors"]), ui_node(2, "VAELoader", ["qwen_vae.pth"])],
    )
    api_node = ui_workflow([ui_node(1, "OpenAIDalle3", ["a cat"])])
    families = {
        name: workflow_family(Workflow(name, "template", document, listed), frozenset({"OpenAIDalle3"}))
        for name, document, listed in [
            ("sd", sd, False),
            ("none", no_models, False),
            ("mixed", mixed, False),
            ("api_node", api_node, False),
            ("listed", no_models, True),
        ]
    }
    assert families == {"sd": "sd", "none": "none", "mixed": "qwen", "api_node": "api", "listed": "api"}


def test_the_index_lists_api_templates_by_tag_or_as_not_open_source() -> None:
    index: list[dict[str, Any]] = [
        {"templates": [{"name": "a", "tags": ["API"]}, {"name": "b", "openSource": False}, {"name": "c"}]},
        {"templates": [{"name": "d", "tags": ["Image"], "openSource": True}]},
    ]
    assert index_api_names(index) == {"a", "b"}


def test_caps_bound_steps_sizes_and_batch_and_leave_links_and_conditioning_alone() -> None:
    prompt: dict[str, Any] = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 4}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"width": 4096, "height": 4096, "clip": ["5", 1]}},
        "3": {
            "class_type": "KSamplerAdvanced",
            "inputs": {"steps": 30, "start_at_step": 20, "end_at_step": 10000, "latent_image": ["1", 0]},
        },
        "4": {"class_type": "KSampler", "inputs": {"steps": 1}},
        "6": {"class_type": "ImageScale", "inputs": {"width": ["7", 0], "height": 2048}},
    }
    return_types = {
        "EmptyLatentImage": ("LATENT",),
        "CLIPTextEncodeSDXL": ("CONDITIONING",),
        "ImageScale": ("IMAGE",),
    }
    out = capped(prompt, return_types)
    assert out["1"]["inputs"] == {"width": 256, "height": 192, "batch_size": 1}
    assert out["2"] == prompt["2"]
    assert out["3"]["inputs"] == {"steps": 2, "start_at_step": 1, "end_at_step": 10000, "latent_image": ["1", 0]}
    assert out["4"] == prompt["4"] and out["6"] == prompt["6"]
    assert prompt["1"]["inputs"]["width"] == 1024  # the original is left as it was


def record(name: str, family: str, before: Outcome, after: Outcome, source: str = "template") -> Record:
    return Record(name, source, family, True, {"before": before, "after": after})


def test_summary_counts_each_stage_reached_per_scope_and_engine() -> None:
    records = [
        record("a", "sd", Outcome("missing_classes", ["X"]), Outcome("ran")),
        record("b", "sd", Outcome("invalid"), Outcome("failed")),
        record("c", "none", Outcome("no_stand_in"), Outcome("timeout")),
        record("d", "flux", Outcome("missing_classes", ["Y"]), Outcome("ran")),
        record("e", "sd", Outcome("ran"), Outcome("ran"), source="example"),
    ]
    figures = summary(records, ["before", "after"])
    assert figures["templates"] == {
        "total": 4,
        "converts": 4,
        "before": {"classes_offered": 2, "validates": 0, "runs": 0},
        "after": {"classes_offered": 4, "validates": 4, "runs": 2},
    }
    assert figures["sd_family_templates"]["after"] == {"classes_offered": 3, "validates": 3, "runs": 1}
    assert figures["examples"]["before"] == {"classes_offered": 1, "validates": 1, "runs": 1}
    assert figures["templates_by_family"] == {"sd": 2, "none": 1, "flux": 1}


def test_the_ranking_counts_sd_family_workflows_and_those_a_class_alone_blocks() -> None:
    blocked = Outcome("ran")
    records = [
        record("a", "sd", blocked, Outcome("missing_classes", ["ControlNetLoader", "ControlNetApply"])),
        record("b", "none", blocked, Outcome("missing_classes", ["ImageCompare"])),
        record("c", "sd", blocked, Outcome("missing_classes", ["ControlNetLoader"])),
        record("d", "flux", blocked, Outcome("missing_classes", ["ImageCompare", "FluxGuidance"])),
        record("e", "sd", blocked, Outcome("missing_classes", ["ImageCompare", "SaveVideo"])),
        record("f", "sd", blocked, Outcome("missing_classes", ["ControlNetLoader"]), source="example"),
    ]
    assert missing_ranking(records, "after") == [
        {"class": "ControlNetLoader", "templates": 2, "examples": 1, "only_missing_class_of": 2},
        {"class": "ImageCompare", "templates": 2, "examples": 0, "only_missing_class_of": 1},
        {"class": "ControlNetApply", "templates": 1, "examples": 0, "only_missing_class_of": 0},
        {"class": "SaveVideo", "templates": 1, "examples": 0, "only_missing_class_of": 0},
    ]


def test_a_model_no_stand_in_can_be_written_for_stops_the_workflow_before_it_runs(tmp_path: Path) -> None:
    # A loader the stand-in writer does not know yet, and a model of another family.
    specs = Catalog.packaged().specs
    upscale = {
        "input": {"required": {"model_name": [[], {"model_folder": "upscale_models"}]}},
        "output": ["UPSCALE_MODEL"],
        "output_is_list": [False],
        "output_name": ["UPSCALE_MODEL"],
        "name": "FutureSDLoader",
        "category": "loaders",
    }
    specs = {**specs, **Catalog.from_object_info({"FutureSDLoader": upscale}).specs}
    prompt = {
        "1": {"class_type": "FutureSDLoader", "inputs": {"model_name": "sd15_upscaler.pth"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev-fp8.safetensors"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
    }
    inputs, stopped = stand_ins(prompt, specs, tmp_path)
    assert inputs == {} and stopped is not None and stopped.stage == "no_stand_in"
    assert stopped.detail == (
        "CheckpointLoaderSimple flux1-dev-fp8.safetensors (flux model); "
        "FutureSDLoader sd15_upscaler.pth (no stand-in writer for upscale_models)"
    )
    assert not (tmp_path / "models").exists()
