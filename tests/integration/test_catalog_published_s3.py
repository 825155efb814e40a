"""The published catalog on S3 (moto over real HTTP): a worker's publish is what the API's catalog follows, the
object's ETag its version."""

from __future__ import annotations

from comfyserve.engine.catalog import Catalog
from comfyserve.service.catalog_source import DEFAULT_CATALOG_KEY, PublishedCatalog, publish_catalog
from tests.integration.conftest import AwsAdapters

FOREIGN = {
    "OnlyInComfyUI": {
        "input": {"required": {"image": ["IMAGE"]}},
        "input_order": {"required": ["image"]},
        "output": [],
        "output_is_list": [],
        "output_name": [],
        "name": "OnlyInComfyUI",
        "display_name": "OnlyInComfyUI",
        "description": "",
        "python_module": "custom_nodes.pack",
        "category": "x",
        "output_node": True,
    }
}


def test_the_api_catalog_follows_the_object_the_worker_publishes(aws_adapters: AwsAdapters) -> None:
    blobs = aws_adapters.blobs
    live = PublishedCatalog(blobs, Catalog.packaged(), refresh_s=0.0)
    assert "OnlyInComfyUI" not in live.specs and live.version is None
    info = publish_catalog(blobs, FOREIGN)
    assert list(live.specs) == ["OnlyInComfyUI"]
    assert live.version == info.etag == blobs.head(DEFAULT_CATALOG_KEY).etag  # type: ignore[union-attr]
