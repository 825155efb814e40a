"""Shared fixtures for the model tests: the tiny test models written once per session, and no network."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from comfyserve.models.testmodels import make_test_models

COMPAT = Path(__file__).resolve().parents[1] / "data" / "compat_workflows"
SD1 = "checkpoints/tiny-sd15.safetensors"
SD1_INPAINT = "checkpoints/tiny-sd15-inpainting.safetensors"
SD2_V = "checkpoints/tiny-sd21-768-v.safetensors"
SDXL = "checkpoints/tiny-sdxl-base.safetensors"
REFINER = "checkpoints/tiny-sdxl-refiner.safetensors"


_written: list[Path] = []


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the default set of tiny models, written once per session.

    Each test module imports this fixture, which makes pytest set it up once per module; the files are
    still written only once.
    """
    if not _written:
        torch.set_num_threads(1)
        root = tmp_path_factory.mktemp("tiny-models")
        make_test_models(root)
        _written.append(root)
    return _written[0]


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open a socket fails the test; Hugging Face libraries are told to stay offline too."""

    def refuse(*args: Any, **kwargs: Any) -> socket.socket:
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
