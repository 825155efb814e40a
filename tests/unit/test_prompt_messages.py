"""The websocket's ``executed`` UI as ``GET /view`` serves a published job's files."""

from __future__ import annotations

from comfyserve.localstack.prompt_messages import published_output


def test_published_images_live_under_the_job_and_keep_their_folder_type() -> None:
    output = {
        "images": [
            {"filename": "a_00001_.png", "subfolder": "", "type": "output"},
            {"filename": "ComfyUI_temp_abcde_00001_.png", "subfolder": "", "type": "temp"},
            {"filename": "b_00001_.png", "subfolder": "x", "type": "output"},
        ],
        "text": ["kept"],
    }
    assert published_output("job1", output) == {
        "images": [
            {"filename": "a_00001_.png", "subfolder": "job1", "type": "output"},
            {"filename": "ComfyUI_temp_abcde_00001_.png", "subfolder": "job1", "type": "temp"},
            {"filename": "b_00001_.png", "subfolder": "job1/x", "type": "output"},
        ],
        "text": ["kept"],
    }
