"""Reading safetensors files into the process's own memory, each tensor through a cast as it is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyserve.models.errors import ModelFileError
from comfyserve.models.files import read_safetensors, read_state_dict

TENSORS = {
    "half": torch.randn(3, 4).half(),
    "bf16": torch.randn(2, 2).bfloat16(),
    "float": torch.randn(7, 3, 3),
    "long": torch.arange(5),
    "empty": torch.zeros(0, 3),
    "flag": torch.tensor(True),
}


@pytest.fixture
def written(tmp_path: Path) -> Path:
    path = tmp_path / "weights.safetensors"
    save_file(TENSORS, str(path), metadata={"format": "pt"})
    return path


def test_every_dtype_and_shape_reads_back_as_safetensors_reads_it(written: Path) -> None:
    ours, theirs = read_safetensors(written), load_file(str(written))
    assert sorted(ours) == sorted(TENSORS)  # the metadata entry is not a tensor
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert torch.equal(ours[name], tensor)


def test_each_tensor_owns_its_memory(written: Path) -> None:
    ours = read_safetensors(written)
    pointers = {t.untyped_storage().data_ptr() for t in ours.values() if t.numel()}
    assert len(pointers) == len([t for t in TENSORS.values() if t.numel()])


def test_the_cast_sees_each_key_and_what_it_returns_is_kept(written: Path) -> None:
    seen = []

    def to_float(key: str, tensor: torch.Tensor) -> torch.Tensor:
        seen.append(key)
        return tensor.float() if key == "half" else tensor

    ours = read_state_dict(written, to_float)
    assert sorted(seen) == sorted(TENSORS)
    assert ours["half"].dtype == torch.float32 and torch.equal(ours["half"], TENSORS["half"].float())
    assert torch.equal(ours["float"], TENSORS["float"])


def test_a_tensor_past_the_end_of_the_file_is_a_clear_error(written: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(written.read_bytes()[:-8])
    with pytest.raises(ModelFileError) as info:
        read_state_dict(cut)
    assert str(info.value) == "cannot read model file 'cut.safetensors': the file is truncated or corrupt"
