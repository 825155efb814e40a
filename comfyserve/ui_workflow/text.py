"""The editor's text rewriting at send time: dynamic prompts and output-prefix replacements.

A prompt widget that declares ``dynamicPrompts`` loses its ``/* */`` and ``//`` comments and has each
``{a|b|c}`` replaced by one of its options (``\\{`` keeps a brace). An output node's ``filename_prefix`` has
``%date:yyyy-MM-dd%`` replaced by the date and ``%Node.widget%`` by that widget's value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from comfyserve.ui_workflow.widgets import PREFIX_REPLACING_CLASSES

if TYPE_CHECKING:
    from comfyserve.ui_workflow.nodes import Configured

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n\r\u2028\u2029]*", re.DOTALL)
_ESCAPED = re.compile(r"\\([{}|])")
_PATTERN = re.compile(r"%([^%]+)%")
_DATE_PARTS = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")
_UNSAFE = re.compile(r'[/?<>\\:*|"\x00-\x1f\x7f]')
SEARCH_PROPERTY = "Node name for S&R"


def expand_dynamic_prompt(text: str, choose: Callable[[list[str]], str]) -> str:
    return _Expander(_COMMENTS.sub("", text), choose).run()


class _Expander:
    def __init__(self, text: str, choose: Callable[[list[str]], str]) -> None:
        self.text = text
        self.i = 0
        self.choose = choose

    def run(self) -> str:
        out = []
        while self.i < len(self.text):
            char = self._next()
            out.append(self._escape() if char == "\\" else self._choice() if char == "{" else char)
        return _ESCAPED.sub(r"\1", "".join(out))

    def _next(self) -> str:
        char = self.text[self.i]
        self.i += 1
        return char

    def _escape(self) -> str:
        following = self.text[self.i] if self.i < len(self.text) else "undefined"  # what JavaScript appends
        self.i += 1
        return "\\" + following

    def _choice(self) -> str:
        options: list[str] = []
        choice = ""
        depth = 0
        while self.i < len(self.text):
            char = self._next()
            if char == "\\":
                choice += self._escape()
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append(choice)
                choice = ""
                continue
            choice += char
        options.append(choice)
        return expand_dynamic_prompt(self.choose(options), self.choose)


def replace_text(nodes: list[Configured], text: str, now: datetime) -> str:
    """``%date:FORMAT%`` and ``%NodeTitle.widget%`` (or the node's search-and-replace name) expanded."""

    def one(match: re.Match[str]) -> str:
        parts = match.group(1).split(".")
        if len(parts) != 2:
            return _format_date(parts[0][5:], now) if parts[0].startswith("date:") else match.group(0)
        named = [n for n in nodes if _search_name(n) == parts[0]] or [n for n in nodes if n.title == parts[0]]
        widget = named[0].widget(parts[1]) if named else None
        if widget is None:
            return match.group(0)
        return _UNSAFE.sub("_", "" if widget.value is None else _js_text(widget.value))

    return _PATTERN.sub(one, text)


def _search_name(node: Configured) -> object:
    """The editor gives every node but the save nodes this property (its class) unless the file sets it."""
    if SEARCH_PROPERTY in node.node.properties or node.class_type in PREFIX_REPLACING_CLASSES:
        return node.node.properties.get(SEARCH_PROPERTY)
    return node.class_type


def _format_date(pattern: str, now: datetime) -> str:
    values = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "yy":
            return str(now.year)[2:]
        if token == "yyyy":
            return str(now.year)
        if token[0] in values:
            return str(values[token[0]]).rjust(len(token), "0")
        return token

    return _DATE_PARTS.sub(one, pattern)


def _js_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
