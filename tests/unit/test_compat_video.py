"""A V3 node pack written for ComfyUI that takes and makes VIDEO values through ``comfy_api`` (``io.Video``,
``comfy_api.input.VideoInput``, ``comfy_api.input_impl.VideoFromComponents``, ``comfy_api.util``) loads from
``custom_nodes`` and runs beside the built-in video nodes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from comfyserve.engine.executor import Executor
from comfyserve.engine.registry import build_registry
from tests.testpack.harness import context, run
from tests.unit.media_fixtures import moving_frames, read_video, write_video

PACK = """
from fractions import Fraction

from comfy_api.input import VideoInput
from comfy_api.input_impl import VideoFromComponents, VideoFromFile
from comfy_api.latest import ComfyExtension, io
from comfy_api.util import VideoCodec, VideoComponents, VideoContainer


class ReverseVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ReverseVideo",
            category="video",
            inputs=[io.Video.Input("video"), io.Combo.Input("codec", options=VideoCodec.as_input())],
            outputs=[io.Video.Output()],
        )

    @classmethod
    def execute(cls, video: VideoInput, codec: str) -> io.NodeOutput:
        parts = video.get_components()
        reversed_video = VideoFromComponents(VideoComponents(images=parts.images.flip(0), frame_rate=Fraction(6)))
        assert isinstance(video, VideoFromFile)
        return io.NodeOutput(reversed_video)


class DescribeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DescribeVideo",
            category="video",
            inputs=[io.Video.Input("video")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, video: VideoInput) -> io.NodeOutput:
        width, height = video.get_dimensions()
        extension = VideoContainer.get_extension(VideoContainer.AUTO)
        return io.NodeOutput(ui={"text": [f"{width}x{height} {extension}"]})


class VideoPack(ComfyExtension):
    async def get_node_list(self):
        return [ReverseVideo, DescribeVideo]


async def comfy_entrypoint():
    return VideoPack()
"""


def test_a_v3_pack_reads_and_makes_videos_through_comfy_api(tmp_path: Path) -> None:
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    (custom / "video_pack_for_test.py").write_text(textwrap.dedent(PACK))
    registry = build_registry(["comfyserve.nodes.video"], custom_nodes=[custom])
    assert not registry.failures, registry.failures[0].traceback if registry.failures else ""
    ctx = context(tmp_path)
    ctx.input_dir.mkdir(parents=True)
    source = moving_frames(4, 16, 24)
    write_video(ctx.input_dir / "clip.mp4", source, 12)
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "2": {"class_type": "ReverseVideo", "inputs": {"video": ["1", 0], "codec": "h264"}},
        "3": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["2", 0], "filename_prefix": "rev", "format": "auto", "codec": "auto"},
        },
        "4": {"class_type": "DescribeVideo", "inputs": {"video": ["2", 0]}},
    }
    executor = Executor(registry)
    try:
        result, _ = run(executor, prompt, ["3", "4"], ctx)
    finally:
        executor.close()
    assert result.status == "success", result.errors
    assert result.ui_outputs["4"] == {"text": ["24x16 mp4"]}
    saved = read_video(ctx.output_dir / "rev_00001_.mp4")
    assert saved.rate == 6 and saved.frames.shape == (4, 16, 24, 3)
    original = read_video(ctx.input_dir / "clip.mp4").frames
    assert float(np.mean(np.abs(saved.frames[0].astype(int) - original[-1]))) < 3  # the last frame comes first
