"""``make-test-models``: the files each workflow asks for, of the right family, small, and the CLI contract."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from comfyserve.commands import make_test_models as command
from comfyserve.commands.common import UsageError
from comfyserve.models.detect import detect
from comfyserve.models.files import read_state_dict
from comfyserve.models.handles import ModelFamily
from comfyserve.models.testmodels import DEFAULT_FILES, ModelRequestError, family_from_name, make_test_models
from tests.unit.models_fixtures import COMPAT, tiny_models  # noqa: F401

WORKFLOWS = ["01", "03", "05", "06", "07"]


def _compat(prefix: str) -> Path:
    return next(COMPAT.glob(f"{prefix}_*.json"))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_files_for_the_compat_workflows(tmp_path: Path) -> None:
    args = _parse(["make-test-models", str(tmp_path), *[a for p in WORKFLOWS for a in ("--for", str(_compat(p)))]])
    assert args.func(args) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "checkpoints/512-inpainting-ema.safetensors",
        "checkpoints/sd_xl_base_1.0.safetensors",
        "checkpoints/v1-5-pruned-emaonly.safetensors",
        "loras/lcm_lora_sdxl.safetensors",
        "loras/sdxl_lightning_4step_lora.pth",
    ]
    families = {name: detect(read_state_dict(tmp_path / name)).family for name in written[:3]}
    assert families == {
        "checkpoints/512-inpainting-ema.safetensors": ModelFamily.SD1_INPAINT,
        "checkpoints/sd_xl_base_1.0.safetensors": ModelFamily.SDXL,
        "checkpoints/v1-5-pruned-emaonly.safetensors": ModelFamily.SD1,
    }
    lightning = read_state_dict(tmp_path / "loras/sdxl_lightning_4step_lora.pth")
    assert any(k.startswith("lora_unet_input_blocks_4_1_transformer_blocks_1_") for k in lightning)
    assert any(k.startswith("lora_te2_") for k in lightning)


def test_default_set_is_small(tiny_models: Path) -> None:  # noqa: F811
    sizes = {p.relative_to(tiny_models).as_posix(): p.stat().st_size for p in tiny_models.rglob("*") if p.is_file()}
    assert set(sizes) == set(DEFAULT_FILES)
    assert max(sizes.values()) < 12 * 2**20


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("sd_xl_base_1.0.safetensors", ModelFamily.SDXL),
        ("sd_xl_refiner_1.0.safetensors", ModelFamily.SDXL_REFINER),
        ("v2-1_768-ema-pruned.safetensors", ModelFamily.SD2_V),
        ("sd-v1-5-inpainting.ckpt", ModelFamily.SD1_INPAINT),
        ("dreamshaper_8.safetensors", ModelFamily.SD1),
    ],
)
def test_family_from_name(name: str, family: ModelFamily) -> None:
    assert family_from_name(name) is family


def test_a_name_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    workflow = tmp_path / "w.json"
    workflow.write_text(
        json.dumps({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "../x.ckpt"}}})
    )
    with pytest.raises(ModelRequestError) as info:
        make_test_models(tmp_path / "models", [workflow])
    assert str(info.value) == "model file name '../x.ckpt' must be a relative path inside the checkpoints folder"
    assert not (tmp_path / "models").exists()


def test_cli_errors_are_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ModelRequestError) as info:
        command.run(_parse(["make-test-models", str(tmp_path / "m"), "--for", str(bad)]))
    assert str(info.value) == "a workflow must be a JSON object of nodes (API format)"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(UsageError) as usage:
        command.run(_parse(["make-test-models", str(not_a_dir)]))
    assert str(usage.value) == f"{not_a_dir} exists and is not a directory"


def test_the_files_are_readable_by_others(tiny_models: Path) -> None:  # noqa: F811
    modes = {oct(p.stat().st_mode & 0o777) for p in tiny_models.rglob("*") if p.is_file()}
    assert modes == {oct(0o644)}


def test_comfyui_loadable_stand_ins_are_sd1_only_and_say_so(tmp_path: Path) -> None:
    workflow = _compat("07")  # an SDXL workflow
    args = _parse(["make-test-models", str(tmp_path / "models"), "--for", str(workflow), "--comfyui"])
    with pytest.raises(ModelRequestError, match=r"no stand-in ComfyUI loads too for checkpoints/sd_xl_base_1\.0"):
        args.func(args)
    assert not (tmp_path / "models").exists()
