"""A fake ComfyUI for the backend's tests: started as ``python main.py --listen H --port P ...`` exactly as the
worker starts ComfyUI, it speaks ComfyUI's HTTP and websocket protocol (reference §1.10, §2) for three node
classes, with failures, hangs and crashes on demand.

``FakeGenerate.mode`` chooses what a prompt does: ``ok``, ``error`` (an ``execution_error``), ``slow`` (progress
until ``/interrupt``), ``hang`` (ignores ``/interrupt``), ``crash`` (the process exits mid-prompt) or
``crash_once`` (crashes unless ``crashed.flag``, which the crash leaves behind, is beside the output folder).
``FakeSave`` writes a PNG carrying the prompt as ComfyUI's SaveImage does (a ``tEXt`` chunk) under its
filename_prefix, numbered after the files already there (and, with ``extra_kinds``, an audio and a video file, a
preview in the temp folder and a text output). As ComfyUI, the temp folder is ``--temp-directory`` + ``/temp``
(emptied at start), and a node whose inputs and upstream equal the previous prompt's is served from the cache
(``--cache-none``: never): it runs no code and its history entry names the earlier run's files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from zlib import crc32

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

PNG_HEAD = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")
PNG_TAIL = bytes.fromhex("0000000d49444154789c6360000002000001e5270ade0000000049454e44ae426082")
PNG = PNG_HEAD + PNG_TAIL
OBJECT_INFO: dict[str, Any] = {
    "FakeLoad": {
        "input": {"required": {"image": [[], {"image_upload": True}]}},
        "input_order": {"required": ["image"]},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": "FakeLoad",
        "display_name": "FakeLoad",
        "description": "",
        "python_module": "nodes",
        "category": "fake",
        "output_node": False,
    },
    "FakeGenerate": {
        "input": {
            "required": {
                "mode": [["ok", "error", "slow", "hang", "crash", "crash_once"]],
                "steps": ["INT", {"default": 3, "min": 1, "max": 100}],
            },
            "optional": {"image": ["IMAGE"]},
        },
        "input_order": {"required": ["mode", "steps"], "optional": ["image"]},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": "FakeGenerate",
        "display_name": None,  # as ComfyUI serves a class without one
        "description": "",
        "python_module": "nodes",
        "category": "fake",
        "output_node": False,
        "output_tooltips": ["the image"],
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    },
    "FakeSave": {
        "input": {
            "required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
            "optional": {"extra_kinds": ["BOOLEAN", {"default": False}]},
            "hidden": {"prompt": "PROMPT"},
        },
        "input_order": {"required": ["images", "filename_prefix"], "optional": ["extra_kinds"]},
        "output": [],
        "output_is_list": [],
        "output_name": [],
        "name": "FakeSave",
        "display_name": "FakeSave",
        "description": "",
        "python_module": "nodes",
        "category": "fake",
        "output_node": True,
    },
}


class WebSocket:
    """A server-side websocket over a request handler's streams (the websockets library's sans-I/O protocol)."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.handler = handler
        self.protocol = ServerProtocol()
        self.lock = threading.Lock()

    def accept(self) -> bool:
        # The handler has read the request already: hand the protocol its bytes, so that its parser moves on to
        # frames (a protocol that never parsed a request reads every frame as HTTP: no pong, no close answer).
        head = f"GET {self.handler.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in self.handler.headers.items()
        )
        self.protocol.receive_data((head + "\r\n").encode("latin-1"))
        (request,) = self.protocol.events_received()
        assert isinstance(request, Request)
        response = self.protocol.accept(request)
        self.protocol.send_response(response)
        self.flush()
        return response.status_code == 101

    def flush(self) -> None:
        with self.lock:
            self.handler.wfile.write(b"".join(self.protocol.data_to_send()))
            self.handler.wfile.flush()

    def send_text(self, text: str) -> None:
        with self.lock:
            self.protocol.send_text(text.encode())
        self.flush()

    def run(self) -> None:
        """Read until the client closes (pings are answered by the protocol)."""
        while data := self.handler.rfile.read1(65536):
            with self.lock:
                self.protocol.receive_data(data)
                events = self.protocol.events_received()
            self.flush()
            if any(isinstance(event, Frame) and event.opcode is Opcode.CLOSE for event in events):
                return


def png_with_prompt(prompt: dict[str, Any]) -> bytes:
    """A 1x1 PNG with a ``tEXt`` chunk ``prompt`` holding the prompt's JSON, as SaveImage writes it."""
    data = b"prompt\0" + json.dumps(prompt).encode("latin-1", "replace")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", crc32(b"tEXt" + data))
    return PNG_HEAD + chunk + PNG_TAIL


def signatures(prompt: dict[str, Any]) -> dict[str, str]:
    """Each node's cache key: its class and inputs, links replaced by the upstream node's key."""
    keys: dict[str, str] = {}

    def key(node_id: str) -> str:
        if node_id not in keys:
            node = prompt[node_id]
            inputs = {
                name: key(str(value[0])) + f"/{value[1]}" if isinstance(value, list) else value
                for name, value in node["inputs"].items()
            }
            keys[node_id] = json.dumps([node["class_type"], inputs], sort_keys=True)
        return keys[node_id]

    for node_id in prompt:
        key(node_id)
    return keys


class Fake:
    def __init__(self, args: argparse.Namespace) -> None:
        self.input_dir = Path(args.input_directory)
        self.output_dir = Path(args.output_directory)
        self.temp_dir = Path(args.temp_directory) / "temp"
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.cache_none = bool(args.cache_none)
        self.cache: dict[str, dict[str, Any]] = {}  # node signature -> its UI output, the previous prompt's
        self.sockets: dict[str, WebSocket] = {}
        self.history: dict[str, Any] = {}
        self.interrupted = threading.Event()
        self.lock = threading.Lock()
        self.counter = 0
        (self.output_dir.parent / "fake-argv.json").write_text(json.dumps(sys.argv))

    def send(self, client_id: str, event: str, data: dict[str, Any]) -> None:
        socket = self.sockets.get(client_id)
        if socket is not None:
            socket.send_text(json.dumps({"type": event, "data": data}))

    def validate(self, prompt: dict[str, Any]) -> dict[str, Any] | None:
        for node_id, node in prompt.items():
            if node.get("class_type") not in OBJECT_INFO:
                return {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {node.get('class_type')} does not exist.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                }
        return None

    def execute(self, prompt_id: str, prompt: dict[str, Any], client_id: str) -> None:
        with self.lock:  # one prompt at a time, as ComfyUI's single worker thread
            self.interrupted.clear()
            self._execute(prompt_id, prompt, client_id)

    def _execute(self, prompt_id: str, prompt: dict[str, Any], client_id: str) -> None:
        send = lambda event, data: self.send(client_id, event, {**data, "prompt_id": prompt_id})  # noqa: E731
        outputs: dict[str, Any] = {}
        keys = signatures(prompt)
        cached = [node_id for node_id in prompt if keys[node_id] in self.cache]
        send("execution_start", {"timestamp": 0})
        send("execution_cached", {"nodes": cached, "timestamp": 0})
        ok = True
        done: dict[str, dict[str, Any]] = {}
        for node_id, node in prompt.items():
            kind, inputs = node["class_type"], node["inputs"]
            if node_id in cached:
                done[keys[node_id]] = ui = self.cache[keys[node_id]]
                if kind == "FakeSave":
                    outputs[node_id] = ui
                    send("executed", {"node": node_id, "display_node": node_id, "output": ui})
                continue
            send("executing", {"node": node_id, "display_node": node_id})
            if kind == "FakeLoad" and not (self.input_dir / inputs["image"]).is_file():
                ok = self.fail(send, node_id, kind, f"Invalid image file: {inputs['image']}")
                break
            if kind == "FakeGenerate":
                ok = self.generate(send, node_id, inputs)
                if not ok:
                    break
            if kind == "FakeSave":
                outputs[node_id] = self.save(inputs, prompt)
                send("executed", {"node": node_id, "display_node": node_id, "output": outputs[node_id]})
            done[keys[node_id]] = outputs.get(node_id, {})
        self.cache = {} if self.cache_none else done
        status = {"status_str": "success" if ok else "error", "completed": ok, "messages": []}
        self.history[prompt_id] = {"prompt": [0, prompt_id, prompt, {}, []], "outputs": outputs, "status": status}
        if ok:
            send("execution_success", {"timestamp": 0})
        send("executing", {"node": None})

    def fail(self, send: Any, node_id: str, kind: str, message: str) -> bool:
        send(
            "execution_error",
            {"node_id": node_id, "node_type": kind, "exception_message": message, "exception_type": "RuntimeError"},
        )
        return False

    def generate(self, send: Any, node_id: str, inputs: dict[str, Any]) -> bool:
        mode, steps = inputs["mode"], int(inputs["steps"])
        flag = self.output_dir.parent / "crashed.flag"
        if mode == "crash" or (mode == "crash_once" and not flag.exists()):
            flag.touch()
            os._exit(3)
        if mode == "error":
            return self.fail(send, node_id, "FakeGenerate", "boom")
        step = 0
        while mode in ("slow", "hang") or step < steps:
            if mode == "slow" and self.interrupted.is_set():
                send("execution_interrupted", {"node_id": node_id, "node_type": "FakeGenerate", "executed": []})
                return False
            step = min(step + 1, steps)
            send("progress", {"value": step, "max": steps, "node": node_id})
            send("progress_state", {"nodes": {node_id: {"value": step, "max": steps, "state": "running"}}})
            time.sleep(0.05 if mode in ("slow", "hang") else 0)
        return True

    def save(self, inputs: dict[str, Any], prompt: dict[str, Any]) -> dict[str, Any]:
        prefix = Path(inputs["filename_prefix"])
        folder = self.output_dir / prefix.parent
        folder.mkdir(parents=True, exist_ok=True)
        subfolder = prefix.parent.as_posix() if prefix.parent != Path(".") else ""
        index = len(list(folder.glob(f"{prefix.name}_*.png"))) + 1
        image = f"{prefix.name}_{index:05}_.png"
        (folder / image).write_bytes(png_with_prompt(prompt))
        ui: dict[str, Any] = {"images": [{"filename": image, "subfolder": subfolder, "type": "output"}]}
        if inputs.get("extra_kinds"):
            for key, suffix in (("audio", "flac"), ("video", "mp4")):
                name = f"{prefix.name}_{index:05}_.{suffix}"
                (folder / name).write_bytes(suffix.encode())
                ui[key] = [{"filename": name, "subfolder": subfolder, "type": "output"}]
            preview = f"ComfyUI_temp_fake_{uuid.uuid4().hex[:5]}_00001_.png"  # as PreviewImage names them
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            (self.temp_dir / preview).write_bytes(PNG)
            ui["images"].append({"filename": preview, "subfolder": "", "type": "temp"})
            ui["text"] = ["not a file"]
        return ui


def handler(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/ws":
                return self.websocket(parse_qs(url.query).get("clientId", [uuid.uuid4().hex])[0])
            if url.path == "/system_stats":
                return self.answer(200, {"system": {"comfyui_version": "fake"}, "devices": []})
            if url.path == "/object_info":
                return self.answer(200, OBJECT_INFO)
            if url.path == "/models":
                return self.answer(200, ["checkpoints"])
            if url.path == "/models/checkpoints":
                return self.answer(200, ["tiny.safetensors"])
            if url.path.startswith("/history/"):
                prompt_id = url.path.removeprefix("/history/")
                entry = fake.history.get(prompt_id)
                return self.answer(200, {prompt_id: entry} if entry is not None else {})
            return self.answer(404, {})

        def do_POST(self) -> None:
            body = self.body()
            if self.path == "/prompt":
                error = fake.validate(body["prompt"])
                if error is not None:
                    return self.answer(400, {"error": error, "node_errors": {}})
                prompt_id = body.get("prompt_id") or uuid.uuid4().hex
                fake.counter += 1
                threading.Thread(target=fake.execute, args=(prompt_id, body["prompt"], body["client_id"])).start()
                return self.answer(200, {"prompt_id": prompt_id, "number": fake.counter, "node_errors": {}})
            if self.path == "/interrupt":
                fake.interrupted.set()
                return self.answer(200, {})
            if self.path == "/history":
                for prompt_id in body.get("delete", []):
                    fake.history.pop(prompt_id, None)
                return self.answer(200, {})
            return self.answer(404, {})

        def websocket(self, client_id: str) -> None:
            self.close_connection = True
            socket = WebSocket(self)
            if not socket.accept():
                return
            fake.sockets[client_id] = socket
            socket.send_text(json.dumps({"type": "status", "data": {"status": {}, "sid": client_id}}))
            socket.run()

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--input-directory", required=True)
    parser.add_argument("--output-directory", required=True)
    parser.add_argument("--temp-directory", required=True)
    parser.add_argument("--cache-none", action="store_true")
    args, _ = parser.parse_known_args()
    if os.environ.get("FAKE_COMFYUI_FAIL_START"):
        print("fake ComfyUI: failing at start as asked", flush=True)
        sys.exit(7)
    time.sleep(float(os.environ.get("FAKE_COMFYUI_START_S") or 0))  # ComfyUI takes 8-20 s to load its nodes
    server = ThreadingHTTPServer((args.listen, args.port), handler(Fake(args)))
    server.daemon_threads = True
    print(
        "Import times for custom nodes:\n   0.0 seconds (IMPORT FAILED): /somewhere/custom_nodes/BrokenPack", flush=True
    )
    print(f"To see the GUI go to: http://{args.listen}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
