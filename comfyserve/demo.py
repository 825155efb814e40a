"""``python -m comfyserve.demo`` (``make demo``): the whole flow on one machine, nothing to configure.

Starts the local stack on a free port with a temporary data directory, writes tiny random-weight models under
the names ``examples/sd15_txt2img.json`` asks for (ComfyUI's own basic API example, unchanged), submits it over
HTTP with an API key, shows its progress, prints the completion event and where the PNG is, and stops the stack.
The models have random weights, so the PNG is noise: the demo ends by saying how to run a real checkpoint.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from comfyserve.commands.api_client import Client
from comfyserve.commands.common import read_workflow
from comfyserve.commands.submit import ProgressPrinter
from comfyserve.contracts.events import JobEvent

WORKFLOW = Path(__file__).resolve().parent.parent / "examples" / "sd15_txt2img.json"
OUTPUT_DIR = Path("demo-data")
TENANT = "demo"


def make_models(models_dir: Path) -> list[str]:
    """Write the workflow's models with random weights; their ``folder/name``s."""
    from comfyserve.models.testmodels import make_test_models

    names = []
    for path in make_test_models(models_dir, [WORKFLOW]):
        names.append(path.relative_to(models_dir).as_posix())
        print(f"  tiny test model: {names[-1]} ({path.stat().st_size // 1024} KiB, random weights)")
    return names


def real_models_note(names: list[str]) -> str:
    """What the demo's image is, and how to run the same workflow on real model files."""
    workflow = f"examples/{WORKFLOW.name}"
    lines = [
        "The image is noise: the demo's models have random weights (comfyserve make-test-models wrote them).",
        "For a real picture, put real model files under the same names in a models folder:",
        *(f"  models/{name}" for name in names),
        f"then run the workflow locally:  comfyserve run {workflow} --models models --out out",
        "or serve it:  comfyserve serve --models models  (it prints your API key), then",
        f"  comfyserve submit {workflow} --endpoint 127.0.0.1:8188 --api-key KEY --wait --out out",
    ]
    return "\n".join(lines)


def completion_event(events: list[JobEvent]) -> dict[str, Any]:
    """The job's last terminal event, as subscribers receive it."""
    final = [e for e in events if e.status.is_terminal]
    document: dict[str, Any] = json.loads(final[-1].model_dump_json()) if final else {}
    return document


def main() -> int:
    from comfyserve.localstack.stack import LocalStack

    key = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="comfyserve-demo-") as temp:
        data_dir = Path(temp)
        models_dir = data_dir / "models"
        models_dir.mkdir()
        print("comfyserve demo: the local stack end to end")
        names = make_models(models_dir)
        started = time.perf_counter()
        with LocalStack(data_dir, port=0, workers=1, api_keys={TENANT: key}, models_dir=models_dir) as stack:
            print(f"local stack on {stack.url} (data in {data_dir}); starting a worker…")
            stack.wait_ready()
            print(f"worker ready after {time.perf_counter() - started:.1f} s")
            client = Client(stack.url, key)
            accepted = client.submit(read_workflow(WORKFLOW))
            job_id = accepted["job_id"]
            print(f"submitted {WORKFLOW.name} over HTTP: POST /v1/jobs -> 202, job {job_id}")
            view = client.wait(job_id, ProgressPrinter(), poll_s=0.2, timeout_s=600)
            print("completion event (from the event bus):")
            print(json.dumps(completion_event(stack.adapters.bus.events(job_id)), indent=2))
            if view["status"] != "succeeded":
                print(f"the job {view['status']}: {view.get('error')}", file=sys.stderr)
                return 1
            saved = client.download_outputs(view, OUTPUT_DIR.resolve() / job_id)
        for path in saved:
            print(f"image: {path}")
    print(real_models_note(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
