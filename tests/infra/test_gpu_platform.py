"""The AMI family and the image's CUDA build as one pair, checked before anything is synthesized."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.gpu_platform import DOCKERFILE, GpuPlatform, image_cuda_version
from infra.settings import ConfigurationError


def test_the_image_is_cuda_13_on_the_al2023_gpu_ami_with_driver_r580() -> None:
    assert image_cuda_version() == "13.0"
    platform = GpuPlatform.of_image()
    assert (platform.ami_family, platform.min_driver) == ("amazon-linux-2023", 580)
    assert platform.environment == {"COMFYSERVE_CUDA_VERSION": "13.0", "COMFYSERVE_MIN_DRIVER": "580"}


def test_an_ami_whose_driver_is_older_is_refused_naming_both_versions() -> None:
    with pytest.raises(ConfigurationError) as raised:
        GpuPlatform.pair("13.0", "amazon-linux-2")
    assert str(raised.value) == (
        "CUDA 13.0 (gpu_container/Dockerfile) needs NVIDIA driver R580+, but the ECS GPU AMI amazon-linux-2"
        " carries R535"
    )
    assert GpuPlatform.pair("12.8", "amazon-linux-2").min_driver == 525  # an older CUDA runs there


def test_a_cuda_major_without_a_known_driver_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^CUDA 14.1 \(gpu_container/Dockerfile\): no known minimum"):
        GpuPlatform.pair("14.1")


def test_the_version_is_read_from_the_dockerfiles_cuda_image_argument(tmp_path: Path) -> None:
    assert "ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime" in DOCKERFILE.read_text(encoding="utf-8")
    other = tmp_path / "Dockerfile"
    other.write_text("FROM scratch\nARG CUDA_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04\n", encoding="utf-8")
    assert image_cuda_version(other) == "12.4"
    other.write_text("FROM ubuntu:24.04\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no `ARG CUDA_IMAGE"):
        image_cuda_version(other)
