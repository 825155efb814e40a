"""The local server under abuse, side by side with the server it replaced, in the same run.

Targets (issue 16): while idle keep-alive clients, half-sent bodies, large nested bodies and fragmented
websockets run, health p99 under 50 ms and no connection reset for 60 well-behaved clients (each, over one
keep-alive connection: health, submit, a pause of 250 ms); submit p99 no worse than the old server's without
abuse (the median of interleaved quiet runs of both servers); the server's memory bounded by the body limit
times the requests in flight.

    .venv/bin/python bench/bench_edge_abuse.py [--rounds 5] [--old 380736b]

Each server runs in its own process (``LocalStack`` with no workers: only the edge and the submit path are
measured): the old one from ``git archive <old>`` extracted to a temporary folder, the new one from this
checkout. The abuse runs from a process of its own: 130 idle keep-alive clients, 20 half-sent bodies, 4
senders of 4.6 MB nested bodies without a key, 10 websockets sending empty continuation frames (1000 each
10 ms), each reconnecting whenever the server closes on it. A last process serves the new edge application
on three servers at once (uvicorn with httptools, uvicorn with h11, hypercorn) for the quiet comparison that
chose the server.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import summary_ms, write_results

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
CLIENTS = 60
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 1234}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}
SUBMIT = json.dumps({"workflow": WORKFLOW}).encode()
NESTED = b"[" * 2_300_000 + b"]" * 2_300_000  # 4.6 MB, as the issue's

# Runs in the server process: a LocalStack with no workers; with "choice", the same edge application is also
# served by uvicorn + h11 and by hypercorn, on ports of their own.
LAUNCHER = r"""
import asyncio, json, socket, sys, threading
from pathlib import Path
import comfyserve
from comfyserve.localstack.stack import LocalStack

stack = LocalStack(Path(sys.argv[1]), port=0, workers=0, api_keys={"bench": "bench-key"}).start()
urls = {"default": stack.url}

def listen():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, as the server's
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock

if sys.argv[2] == "choice":
    import uvicorn
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    app = stack._server.app
    sock = listen()
    config = uvicorn.Config(app, http="h11", ws="websockets-sansio", lifespan="off", log_config=None,
                            access_log=False)
    server = uvicorn.Server(config)
    threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True).start()
    urls["uvicorn_h11"] = "http://127.0.0.1:%d" % sock.getsockname()[1]
    hsock = listen()
    hconfig = Config()
    hconfig.bind = ["fd://%d" % hsock.fileno()]
    hconfig.accesslog = hconfig.errorlog = None
    forever = lambda: asyncio.Event().wait()  # a shutdown trigger: no signal handlers off the main thread
    threading.Thread(target=lambda: asyncio.run(serve(app, hconfig, shutdown_trigger=forever)), daemon=True).start()
    urls["hypercorn"] = "http://127.0.0.1:%d" % hsock.getsockname()[1]
print(json.dumps({"urls": urls, "code": comfyserve.__file__}), flush=True)
sys.stdin.read()
stack.stop()
"""


# -- servers ----------------------------------------------------------------------------------------------


@contextmanager
def server(source: Path, data_dir: Path, mode: str = "plain") -> Iterator[tuple[dict[str, str], int]]:
    """A server process running the code under ``source``; its URLs and pid."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(data_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=source,
    )
    assert process.stdout is not None and process.stdin is not None
    started = json.loads(process.stdout.readline())
    if not started["code"].startswith(str(source)):
        raise RuntimeError(f"the server imported {started['code']}, not the code under {source}")
    try:
        yield started["urls"], process.pid
    finally:
        process.stdin.close()
        process.wait(60)


def old_source(commit: str, into: Path) -> Path:
    """The package as it was at ``commit`` (git archive), outside the repository."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "comfyserve"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def memory_kib(pid: int) -> dict[str, int]:
    """Resident now and at its peak (``VmRSS``, ``VmHWM``), in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


# -- well-behaved clients -------------------------------------------------------------------------------------


def well_behaved(url: str, rounds: int, interval_s: float = 0.25) -> dict[str, Any]:
    """60 clients, each over one keep-alive connection (reopened after an error): health, then submit, then a
    pause of ``interval_s`` (the clients start spread over one interval)."""
    parts = urlsplit(url)
    samples: dict[str, list[float]] = {"health": [], "submit": []}
    statuses: collections.Counter[str] = collections.Counter()
    resets = errors = 0
    lock = threading.Lock()

    def client(index: int) -> None:
        nonlocal resets, errors
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        time.sleep(interval_s * index / CLIENTS)
        for _ in range(rounds):
            for name, method, path, body in (
                ("health", "GET", "/v1/health", None),
                ("submit", "POST", "/v1/jobs", SUBMIT),
            ):
                started = time.perf_counter()
                try:
                    connection.request(method, path, body=body, headers={"x-api-key": KEY})
                    response = connection.getresponse()
                    response.read()
                    elapsed = time.perf_counter() - started
                    with lock:
                        samples[name].append(elapsed)
                        statuses[f"{name}_{response.status}"] += 1
                    if response.getheader("Connection", "").lower() == "close":
                        connection.close()
                except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                    with lock:
                        resets += 1
                    connection.close()
                except OSError:
                    with lock:
                        errors += 1
                    connection.close()
            time.sleep(interval_s)
        connection.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    return {
        "health": summary_ms(samples["health"]) if samples["health"] else None,
        "submit": summary_ms(samples["submit"]) if samples["submit"] else None,
        "statuses": dict(sorted(statuses.items())),
        "resets": resets,
        "other_errors": errors,
    }


# -- abuse ----------------------------------------------------------------------------------------------------


class Abuse:
    """The issue's abuse mix, each kind on its own threads, reconnecting whenever the server closes on it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "", parts.port or 0)
        self.stop = threading.Event()
        self.counts: collections.Counter[str] = collections.Counter()
        self.threads: list[threading.Thread] = []

    def start(self, idle: int = 130, half_sent: int = 20, nested: int = 4, websockets: int = 10) -> None:
        for kind, count in (
            (self._idle, idle),
            (self._half_sent, half_sent),
            (self._nested, nested),
            (self._websocket, websockets),
        ):
            for _ in range(count):
                thread = threading.Thread(target=self._loop, args=(kind,), daemon=True)
                thread.start()
                self.threads.append(thread)

    def finish(self) -> dict[str, int]:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        return dict(sorted(self.counts.items()))

    def _loop(self, kind: Callable[[socket.socket], None]) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(self.address, timeout=2) as sock:
                    kind(sock)
            except OSError:
                self.counts["abuse_connection_errors"] += 1
                self.stop.wait(0.1)

    def _hold(self, sock: socket.socket, trickle: bytes = b"") -> None:
        """Keep the connection open (sending ``trickle`` every second) until the server closes it."""
        while not self.stop.is_set():
            try:
                if trickle:
                    sock.sendall(trickle)
                if sock.recv(65536) == b"":
                    return
            except TimeoutError:
                continue

    def _idle(self, sock: socket.socket) -> None:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(65536)
        self.counts["idle_keep_alive_connections"] += 1
        sock.settimeout(1)
        self._hold(sock)

    def _half_sent(self, sock: socket.socket) -> None:
        head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nContent-Length: 100000\r\n\r\n"
        sock.sendall(head.encode() + b'{"workflow": ')
        self.counts["half_sent_bodies"] += 1
        sock.settimeout(1)
        self._hold(sock, trickle=b" ")

    def _nested(self, sock: socket.socket) -> None:
        sock.settimeout(60)
        head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {len(NESTED)}\r\n\r\n"
        sock.sendall(head.encode() + NESTED)
        sock.recv(65536)
        self.counts["nested_bodies"] += 1

    def _websocket(self, sock: socket.socket) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /ws?clientId=abuse{id(sock)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"x-api-key: {KEY}\r\n\r\n"
            ).encode()
        )
        if not sock.recv(65536).startswith(b"HTTP/1.1 101"):
            return
        self.counts["fragmented_websockets"] += 1
        mask = b"\x00\x00\x00\x00"
        sock.sendall(b"\x01\x80" + mask)  # a text message, not final
        batch = (b"\x00\x80" + mask) * 1000  # empty continuation frames
        while not self.stop.wait(0.01):
            sock.sendall(batch)
            self.counts["websocket_fragments_sent"] += 1000


# -- the run --------------------------------------------------------------------------------------------------


@contextmanager
def abuse_process(url: str) -> Iterator[dict[str, int]]:
    """The abuse mix from a process of its own (its threads do not slow the well-behaved clients' process);
    what it did is filled in when it ends."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--abuse", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
    )
    assert process.stdin is not None and process.stdout is not None
    counts: dict[str, int] = {}
    try:
        yield counts
    finally:
        process.stdin.close()
        counts.update(json.loads(process.stdout.read()))
        process.wait(60)


def run_abuse(url: str) -> None:
    abuse = Abuse(url)
    abuse.start()
    sys.stdin.read()
    print(json.dumps(abuse.finish()))


def quiet_runs(urls: dict[str, str], rounds: int, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """The servers without abuse, one after the other and again ``repeats`` times (interleaved, so that a
    passing load on the machine falls on both alike)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    for _ in range(repeats):
        for name, url in urls.items():
            runs[name].append(well_behaved(url, rounds))
    return runs


def median_p99(runs: list[dict[str, Any]], kind: str) -> float:
    return statistics.median(run[kind]["p99_ms"] for run in runs)


def under_abuse(url: str, pid: int, rounds: int) -> dict[str, Any]:
    before = memory_kib(pid)
    with abuse_process(url) as counts:
        time.sleep(3)
        measured = well_behaved(url, rounds)
    return {"under_abuse": measured, "abuse": counts, "memory_kib": {"before": before, "after": memory_kib(pid)}}


def server_choice(work: Path, rounds: int) -> dict[str, Any]:
    with server(ROOT, work / "choice", "choice") as (urls, _):
        figures = {}
        for name, url in {"uvicorn_httptools": urls.pop("default"), **urls}.items():
            well_behaved(url, 1)  # warm up
            figures[name] = well_behaved(url, rounds)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="health + submit pairs per client and phase")
    parser.add_argument("--repeats", type=int, default=3, help="quiet runs of each server, interleaved")
    parser.add_argument("--old", default="380736b", help="the commit whose server is compared")
    parser.add_argument("--abuse", metavar="URL", help=argparse.SUPPRESS)  # the abuse process
    args = parser.parse_args()
    if args.abuse:
        run_abuse(args.abuse)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with (
            server(old_source(args.old, work / "old-code"), work / "old") as (old_urls, old_pid),
            server(ROOT, work / "new") as (new_urls, new_pid),
        ):
            urls = {"old": old_urls["default"], "new": new_urls["default"]}
            for url in urls.values():
                well_behaved(url, 1)  # warm up
            quiet = quiet_runs(urls, args.rounds, args.repeats)
            old = {"quiet": quiet["old"], **under_abuse(urls["old"], old_pid, args.rounds)}
            new = {"quiet": quiet["new"], **under_abuse(urls["new"], new_pid, args.rounds)}
        choice = server_choice(work, args.rounds)
    limit_bytes, in_flight = 10 * 1024 * 1024, 128
    new_health = new["under_abuse"]["health"]
    write_results(
        "edge_abuse",
        {
            "clients": CLIENTS,
            "rounds": args.rounds,
            "quiet_repeats": args.repeats,
            "old_commit": args.old,
            "old": old,
            "new": new,
            "server_choice_quiet": choice,
            "targets": {
                "health_p99_under_abuse_ms": new_health["p99_ms"],
                "health_p99_under_abuse_under_50_ms": new_health["p99_ms"] < 50,
                "resets_under_abuse": new["under_abuse"]["resets"],
                "submit_p99_quiet_median_ms": {
                    "new": median_p99(new["quiet"], "submit"),
                    "old": median_p99(old["quiet"], "submit"),
                },
                "peak_rss_mib": round(new["memory_kib"]["after"]["VmHWM"] / 1024, 1),
                "memory_bound_mib": limit_bytes * in_flight // (1024 * 1024),
            },
        },
    )


if __name__ == "__main__":
    main()
