"""Progress on the console from executor events: a live bar on a terminal, plain lines when piped."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ConsoleProgress:
    """An ``on_event`` sink: one line per node, with a step bar that redraws in place on a terminal."""

    BAR_WIDTH = 24

    def __init__(self, prompt: dict[str, Any], stream: TextIO | None = None) -> None:
        self.prompt = prompt
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.node: str | None = None
        self.node_started = 0.0
        self.last_decile = -1
        self.done = 0

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "execution_cached" and data.get("nodes"):
            self._line(f"cached: {', '.join(self._label(n) for n in data['nodes'])}")
        elif event == "executing":
            self._finish_node()
            self.node = data.get("node")
            if self.node is not None:
                self.node_started = time.perf_counter()
                self.last_decile = -1
                self._line(f"running {self._label(self.node)}", end="" if self.tty else "\n")
        elif event == "progress":
            self._progress(int(data["value"]), int(data["max"]))
        elif event == "execution_error":
            self._finish_node()
            self._line(f"error in {self._label(str(data.get('node_id')))}: {data.get('exception_message', '')}")
        elif event == "execution_interrupted":
            self._finish_node()
            self._line("interrupted")

    def _label(self, node_id: str) -> str:
        class_type = self.prompt.get(node_id, {}).get("class_type", "?")
        return f"#{node_id} {class_type}"

    def _progress(self, value: int, total: int) -> None:
        if self.node is None or total <= 0:
            return
        if self.tty:
            filled = self.BAR_WIDTH * value // total
            bar = "#" * filled + "-" * (self.BAR_WIDTH - filled)
            self.stream.write(f"\rrunning {self._label(self.node)} [{bar}] {value}/{total}")
            self.stream.flush()
            return
        decile = 10 * value // total
        if decile != self.last_decile:
            self.last_decile = decile
            self._line(f"  {self._label(self.node)} step {value}/{total}")

    def _finish_node(self) -> None:
        if self.node is None:
            return
        elapsed = time.perf_counter() - self.node_started
        self.done += 1
        if self.tty:
            self.stream.write("\x1b[2K\r")
        self._line(f"done {self._label(self.node)} in {elapsed:.3f}s")
        self.node = None

    def _line(self, text: str, end: str = "\n") -> None:
        self.stream.write(text + end)
        self.stream.flush()
