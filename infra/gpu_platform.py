"""The GPU hosts' AMI and the worker image's CUDA build, as one pair.

The image's CUDA version has one source, the ``CUDA_IMAGE`` argument of gpu_container/Dockerfile; the CUDA major
picks the NVIDIA driver branch it needs (NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit and Minimum Required
Driver Version"), and the AMI family is the ECS GPU-optimized one whose driver branch is at least that. A CUDA
major without a known driver, or an AMI family whose driver is older, stops the synth naming both versions. The
worker gets both figures (``COMFYSERVE_CUDA_VERSION``, ``COMFYSERVE_MIN_DRIVER``) and checks its host at start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import aws_ecs as ecs

from infra.settings import ConfigurationError

DOCKERFILE = Path(__file__).resolve().parents[1] / "gpu_container" / "Dockerfile"
_CUDA_IMAGE = re.compile(r"^ARG CUDA_IMAGE=nvidia/cuda:(?P<version>\d+\.\d+)(?:\.\d+)?-", re.MULTILINE)
# CUDA major -> the oldest NVIDIA driver branch that runs it (minor-version compatibility within the major).
MIN_DRIVER_BRANCH = {12: 525, 13: 580}
# ECS GPU-optimized AMI families -> the NVIDIA driver branch they carry (the ECS AMI release notes): Amazon Linux
# 2023's carries R580; Amazon Linux 2's (past its end of life) stays on an older branch.
AMI_DRIVER_BRANCH = {"amazon-linux-2023": 580, "amazon-linux-2": 535}
AMI_FAMILY = "amazon-linux-2023"


def image_cuda_version(dockerfile: Path = DOCKERFILE) -> str:
    """``major.minor`` of the CUDA base image the worker image is built on."""
    found = _CUDA_IMAGE.search(dockerfile.read_text(encoding="utf-8"))
    if found is None:
        raise ConfigurationError(f"{dockerfile.name}: no `ARG CUDA_IMAGE=nvidia/cuda:<version>-…` line")
    return found["version"]


@dataclass(frozen=True)
class GpuPlatform:
    cuda_version: str
    ami_family: str
    min_driver: int

    @classmethod
    def pair(cls, cuda_version: str, ami_family: str = AMI_FAMILY) -> GpuPlatform:
        """The AMI family with the image's CUDA; :class:`ConfigurationError` when its driver cannot run it."""
        major = int(cuda_version.split(".")[0])
        needed = MIN_DRIVER_BRANCH.get(major)
        carried = AMI_DRIVER_BRANCH.get(ami_family)
        if needed is None:
            raise ConfigurationError(
                f"CUDA {cuda_version} (gpu_container/Dockerfile): no known minimum NVIDIA driver; "
                f"add it to infra/gpu_platform.py MIN_DRIVER_BRANCH with the AMI that carries it"
            )
        if carried is None or carried < needed:
            raise ConfigurationError(
                f"CUDA {cuda_version} (gpu_container/Dockerfile) needs NVIDIA driver R{needed}+, but the ECS GPU AMI "
                f"{ami_family} carries R{carried if carried is not None else '?'}"
            )
        return cls(cuda_version=cuda_version, ami_family=ami_family, min_driver=needed)

    @classmethod
    def of_image(cls) -> GpuPlatform:
        return cls.pair(image_cuda_version())

    def machine_image(self) -> ecs.EcsOptimizedImage:
        """The ECS GPU-optimized AMI of this family (looked up once, cached in cdk.json / cdk.context.json)."""
        if self.ami_family != "amazon-linux-2023":
            raise ConfigurationError(f"ECS GPU AMI {self.ami_family}: only amazon-linux-2023 is wired")
        return ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU, cached_in_context=True)

    @property
    def environment(self) -> dict[str, str]:
        """What the worker checks its host's driver against at start."""
        return {"COMFYSERVE_CUDA_VERSION": self.cuda_version, "COMFYSERVE_MIN_DRIVER": str(self.min_driver)}
