"""A catalog exported from a ComfyUI's /object_info: the edge validates workflows with node and data types it does
not know itself, refuses unknown classes with ComfyUI's error, and follows the catalog the workers publish."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from comfyserve.adapters.local.blobs import BlobUrlSigner, LocalBlobStore
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import CatalogError
from comfyserve.engine.node_api import upload_media
from comfyserve.engine.validation import validate_prompt
from comfyserve.service.catalog_source import DEFAULT_CATALOG_KEY, PublishedCatalog, publish_catalog
from comfyserve.worker.comfyui.catalog import export_catalog, read_allowlist


def node(inputs: dict[str, Any], outputs: list[str], *, output_node: bool = False, hidden: Any = None) -> Any:
    declared: dict[str, Any] = {"required": inputs}
    if hidden is not None:
        declared["hidden"] = hidden
    return {
        "input": declared,
        "input_order": {"required": list(inputs)},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": outputs,
        "name": "",
        "display_name": "",
        "description": "",
        "python_module": "comfy_extras.nodes_wan",
        "category": "video",
        "output_node": output_node,
    }


# The shapes ComfyUI serves (V3 COMBO with options, upload flags, list-valued hidden inputs), with types and
# classes comfyserve has never heard of.
FOREIGN: dict[str, Any] = {
    "UNETLoader": node(
        {
            "unet_name": [["wan2.2_ti2v_5B_fp16.safetensors"]],
            "weight_dtype": [["default", "fp8_e4m3fn"]],
        },
        ["MODEL"],
    ),
    "LoadVideo": node({"file": ["COMBO", {"options": [], "video_upload": True}]}, ["VIDEO"]),
    "Wan22ImageToVideoLatent": node(
        {"vae": ["WANVAE"], "width": ["INT", {"default": 1280, "min": 32, "max": 16384, "step": 32}]},
        ["LATENT"],
    ),
    "WanVAELoader": node({"name": ["COMBO", {"options": ["wan2.2_vae.safetensors"]}]}, ["WANVAE"]),
    "SaveVideo": node(
        {"video": ["VIDEO"], "filename_prefix": ["STRING", {"default": "video/ComfyUI"}]},
        [],
        output_node=True,
        hidden={"prompt": ["PROMPT"]},
    ),
    "PreviewAny": node({"source": ["*"]}, [], output_node=True),
}


def workflow() -> dict[str, Any]:
    return {
        "1": {"class_type": "WanVAELoader", "inputs": {"name": "wan2.2_vae.safetensors"}},
        "2": {"class_type": "Wan22ImageToVideoLatent", "inputs": {"vae": ["1", 0], "width": 640}},
        "3": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "out"}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_object_info(export_catalog(FOREIGN))


def test_a_workflow_of_foreign_nodes_and_types_validates(catalog: Catalog) -> None:
    result = validate_prompt(workflow(), catalog.specs)
    assert result.ok, (result.error, result.node_errors)
    assert sorted(result.outputs) == ["4", "5"]


def test_an_unknown_class_is_refused_with_comfyuis_error(catalog: Catalog) -> None:
    prompt = {**workflow(), "9": {"class_type": "ImageResize+", "inputs": {}}}
    result = validate_prompt(prompt, catalog.specs)
    assert not result.ok
    assert result.error == {
        "type": "invalid_prompt",
        "message": "Cannot execute because node ImageResize+ does not exist.",
        "details": "Node ID '#9'",
        "extra_info": {},
    }
    assert result.node_errors == {}


def test_a_foreign_type_mismatch_is_refused(catalog: Catalog) -> None:
    prompt = workflow()
    prompt["2"]["inputs"]["vae"] = ["3", 0]  # a VIDEO into a WANVAE input
    result = validate_prompt(prompt, catalog.specs)
    errors = result.node_errors["2"]["errors"]
    assert [e["type"] for e in errors] == ["return_type_mismatch"]
    assert errors[0]["details"] == "vae, received_type(VIDEO) mismatch input_type(WANVAE)"


def test_model_lists_are_checked_as_comfyui_checks_them(catalog: Catalog) -> None:
    prompt = workflow()
    prompt["1"]["inputs"]["name"] = "missing.safetensors"
    result = validate_prompt(prompt, catalog.specs)
    error = result.node_errors["1"]["errors"][0]
    assert (error["type"], error["details"]) == (
        "value_not_in_list",
        "name: 'missing.safetensors' not in ['wan2.2_vae.safetensors']",
    )


def test_upload_inputs_accept_any_uploaded_name(catalog: Catalog) -> None:
    spec = catalog.specs["LoadVideo"].inputs["file"]
    assert upload_media(spec.options) == "video" and "image_upload" not in spec.options  # read, never rewritten
    assert FOREIGN["LoadVideo"]["input"]["required"]["file"][1] == {"options": [], "video_upload": True}  # unchanged
    assert catalog.specs["SaveVideo"].hidden == {"prompt": "PROMPT"}


def test_the_allowlist_and_denylist_keep_only_the_classes_a_fleet_accepts() -> None:
    allow = read_allowlist("# video only\nLoadVideo\nSaveVideo  # the output\n\n")
    assert allow == {"LoadVideo", "SaveVideo"}
    exported = export_catalog(FOREIGN, allow, deny=("SaveVideo",))
    assert sorted(exported) == ["LoadVideo"]


def test_an_entry_the_edge_cannot_read_fails_the_export() -> None:
    broken = {**FOREIGN, "Broken": "not an object"}
    with pytest.raises(CatalogError, match="object_info entry 'Broken' is not an object"):
        export_catalog(broken)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_api_follows_the_published_catalog(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path, BlobUrlSigner("http://h", b"s"))
    fallback = Catalog.from_object_info({"SaveVideo": copy.deepcopy(FOREIGN["SaveVideo"])})
    clock = Clock()
    live = PublishedCatalog(blobs, fallback, refresh_s=5.0, clock=clock)
    assert sorted(live.specs) == ["SaveVideo"] and live.version is None

    published = publish_catalog(blobs, export_catalog(FOREIGN))
    assert blobs.head(DEFAULT_CATALOG_KEY) == published
    assert sorted(live.specs) == ["SaveVideo"]  # not looked at again before refresh_s
    clock.now = 5.0
    assert sorted(live.specs) == sorted(FOREIGN)
    assert live.version == published.etag
    assert validate_prompt(workflow(), live.specs).ok

    assert publish_catalog(blobs, export_catalog(FOREIGN)).etag == published.etag  # same content, same version
    blobs.delete(DEFAULT_CATALOG_KEY)
    clock.now = 10.0
    assert sorted(live.specs) == ["SaveVideo"] and live.version is None


def test_an_unreadable_published_catalog_keeps_the_current_one(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path, BlobUrlSigner("http://h", b"s"))
    blobs.put(DEFAULT_CATALOG_KEY, b"{not json", "application/json")
    fallback = Catalog.from_object_info(export_catalog(FOREIGN))
    live = PublishedCatalog(blobs, fallback, refresh_s=0.0)
    assert sorted(live.specs) == sorted(FOREIGN) and live.version is None


def test_a_catalog_the_api_could_not_read_is_never_published(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path, BlobUrlSigner("http://h", b"s"))
    with pytest.raises(CatalogError):
        publish_catalog(blobs, {"Broken": {"input": {"required": {"x": 5}}}})
    assert blobs.head(DEFAULT_CATALOG_KEY) is None


class FailingBlobs:
    def head(self, key: str) -> None:
        raise RuntimeError("AccessDenied")


def test_a_store_that_fails_keeps_the_current_catalog() -> None:
    fallback = Catalog.from_object_info(export_catalog(FOREIGN))
    live = PublishedCatalog(FailingBlobs(), fallback, refresh_s=0.0)  # type: ignore[arg-type]
    assert sorted(live.specs) == sorted(FOREIGN) and live.version is None


def test_the_published_catalog_is_served_as_comfyui_serves_it(tmp_path: Path) -> None:
    served = copy.deepcopy(FOREIGN)
    served["PreviewAny"].update(display_name=None, deprecated=False, experimental=True, api_node=False)
    served["WanVAELoader"]["output_tooltips"] = ["the VAE"]
    served = {name: served[name] for name in reversed(served)}  # ComfyUI's order, not sorted
    blobs = LocalBlobStore(tmp_path, BlobUrlSigner("http://h", b"s"))
    publish_catalog(blobs, export_catalog(served))
    live = PublishedCatalog(blobs, Catalog.packaged(), refresh_s=0.0)
    assert live.specs["PreviewAny"].display_name == "PreviewAny"  # what the edge names it in errors
    document = live.to_object_info()
    assert document == served and list(document) == list(served)
    assert document["PreviewAny"]["display_name"] is None
    assert list(document["Wan22ImageToVideoLatent"]["input"]["required"]) == ["vae", "width"]
    assert document["SaveVideo"]["input"]["hidden"] == {"prompt": ["PROMPT"]}  # V3's shape, kept


def test_an_awaited_catalog_is_starting_until_one_is_published(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path, BlobUrlSigner("http://h", b"s"))
    assert not PublishedCatalog(blobs, Catalog.packaged(), refresh_s=0.0).starting  # a builtin fleet: no wait
    live = PublishedCatalog(blobs, Catalog.packaged(), refresh_s=0.0, awaited=True)
    assert live.starting
    publish_catalog(blobs, export_catalog(FOREIGN))
    assert not live.starting
