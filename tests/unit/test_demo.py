"""The demo says what its image is: noise from random weights, and how to run the workflow on a real checkpoint."""

from __future__ import annotations

from pathlib import Path

from comfyserve.demo import make_models, real_models_note


def test_demo_models_are_named_and_the_note_says_how_to_run_real_ones(tmp_path: Path) -> None:
    names = make_models(tmp_path)
    assert names == ["checkpoints/v1-5-pruned-emaonly.safetensors"]
    assert (tmp_path / names[0]).is_file()
    assert real_models_note(names) == (
        "The image is noise: the demo's models have random weights (comfyserve make-test-models wrote them).\n"
        "For a real picture, put real model files under the same names in a models folder:\n"
        "  models/checkpoints/v1-5-pruned-emaonly.safetensors\n"
        "then run the workflow locally:  comfyserve run examples/sd15_txt2img.json --models models --out out\n"
        "or serve it:  comfyserve serve --models models  (it prints your API key), then\n"
        "  comfyserve submit examples/sd15_txt2img.json --endpoint 127.0.0.1:8188 --api-key KEY --wait --out out"
    )
