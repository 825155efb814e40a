"""Real users' workflows run end to end on tiny test models, through `comfyserve run` and the full model path.

The models are written by ``make-test-models --for`` under the names each workflow asks for; a LoadImage value
(a URL in these files) is supplied from a local file with ``--input``, matched exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyserve.cli import main
from comfyserve.models.testmodels import make_test_models

COMPAT = Path(__file__).resolve().parents[1] / "data" / "compat_workflows"
RUNNABLE = {
    "01": (512, 512),
    "03": (1024, 1024),
    "04": (96, 64),  # img2img: the size of the supplied input image
    "05": (96, 64),  # inpainting: likewise
    "06": (1024, 1024),
    "07": (1024, 1024),
    "10": (512, 512),
}
INPUT_SIZE = (96, 64)
pytestmark = pytest.mark.timeout(900)  # SDXL at 1024² on two CPU cores: tiny weights, full-size attention


def workflow(key: str) -> Path:
    return next(COMPAT.glob(f"{key}_*.json"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_test_models(root, [workflow(key) for key in RUNNABLE])
    return root


@pytest.fixture(scope="module")
def input_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RGBA picture whose transparent corner becomes the inpainting mask."""
    pixels = np.random.default_rng(7).integers(0, 255, (INPUT_SIZE[1], INPUT_SIZE[0], 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:32, :48, 3] = 0
    path = tmp_path_factory.mktemp("inputs") / "input.png"
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def run(key: str, models: Path, image: Path, out: Path) -> dict[str, object]:
    prompt = json.loads(workflow(key).read_text())
    args = ["run", str(workflow(key)), "--out", str(out), "--models", str(models)]
    for node in prompt.values():
        if node["class_type"] == "LoadImage":
            args += ["--input", f"{node['inputs']['image']}={image}"]
    assert main(args) == 0
    manifest: dict[str, object] = json.loads((out / "manifest.json").read_text())
    return manifest


@pytest.mark.parametrize("key", sorted(RUNNABLE))
def test_workflow_runs_and_writes_images_of_the_requested_size(
    key: str, models: Path, input_image: Path, tmp_path: Path
) -> None:
    manifest = run(key, models, input_image, tmp_path)
    assert manifest["status"] == "success"
    outputs = manifest["outputs"]
    assert isinstance(outputs, list) and outputs
    for output in outputs:
        with Image.open(output["path"]) as image:
            assert image.size == RUNNABLE[key]
            assert json.loads(image.info["prompt"]) == json.loads(workflow(key).read_text())
            pixels = np.asarray(image, dtype=np.float32)
        assert np.isfinite(pixels).all() and pixels.std() > 0, "the image is blank"


def test_a_fixed_seed_gives_the_same_image(models: Path, input_image: Path, tmp_path: Path) -> None:
    first = run("04", models, input_image, tmp_path / "a")
    second = run("04", models, input_image, tmp_path / "b")
    paths = [Path(m["outputs"][0]["path"]) for m in (first, second)]  # type: ignore[index]
    assert paths[0].read_bytes() == paths[1].read_bytes()
