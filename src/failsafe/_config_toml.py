"""TOML helpers of `failsafe.config`: where each key is written, and values written back.

``tomllib`` gives values without positions, so an error could name a key but not its line.
`locate` scans the text once for the structure only (table headers, keys, inline tables,
arrays, strings and comments; values are skipped) and maps each key path to the line it is
written on. It handles the forms a configuration file uses:

```toml
[pipelines.warehouse]                # a header: its path is on this line
retry = {attempts = 4}               # an inline table: its keys are on the key's line
timeout.seconds = 2.0                # dotted keys
[pipelines.warehouse.bulkhead]       # a sub-table header, then plain keys
max_concurrent = 10
[pipelines."with spaces".retry]      # quoted keys
```

It runs only on text that ``tomllib`` has parsed, and is forgiving: on anything it does not
follow, it returns what it found so far (an error then names a shorter key's line).
"""

from __future__ import annotations

import contextlib
import json
import math
import tomllib
from collections.abc import Mapping
from typing import Any

Path = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_VALUE_ENDS = frozenset(",]}\n#")


class _Stop(Exception):
    """The scanner met something it does not follow: keep what was found."""


class _Scanner:
    """One pass over a TOML text, recording the line of every key path."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.lines: dict[Path, int] = {}

    # -- characters --------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.text[j] if j < len(self.text) else ""

    def advance(self, n: int = 1) -> None:
        for _ in range(n):
            if self.i < len(self.text):
                if self.text[self.i] == "\n":
                    self.line += 1
                self.i += 1

    def skip_blank(self, *, newlines: bool) -> None:
        """Skip spaces and tabs (and newlines and comments when ``newlines``)."""
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif newlines and c == "#":
                self.skip_comment()
            else:
                return

    def skip_comment(self) -> None:
        while self.i < len(self.text) and self.text[self.i] != "\n":
            self.i += 1

    def record(self, path: Path) -> None:
        """Note the line of ``path`` and of its prefixes (the first mention of each wins)."""
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], self.line)

    # -- keys and strings ----------------------------------------------------------------------
    def string(self) -> str:
        """Read a string (any of TOML's four kinds) and return its value."""
        start = self.i
        quote = self.peek()
        triple = self.text.startswith(quote * 3, self.i)
        if triple:
            self.advance(3)
            end = self.text.find(quote * 3, self.i)
            if end < 0:
                raise _Stop
            while self.text.startswith(quote, end + 3):  # up to two quotes end the content
                end += 1
            self.advance(end + 3 - self.i)
        else:
            self.advance()
            while True:
                c = self.peek()
                if c in ("", "\n"):
                    raise _Stop
                if c == "\\" and quote == '"':
                    self.advance(2)
                    continue
                self.advance()
                if c == quote:
                    break
        raw = self.text[start : self.i]
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            raise _Stop from None
        assert isinstance(value, str)
        return value

    def key(self) -> tuple[str, ...]:
        """Read a (dotted, maybe quoted) key."""
        parts: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.string())
            else:
                start = self.i
                while self.peek() in _BARE and self.peek():
                    self.advance()
                if self.i == start:
                    raise _Stop
                parts.append(self.text[start : self.i])
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return tuple(parts)
            self.advance()

    # -- values --------------------------------------------------------------------------------
    def value(self, path: Path) -> None:
        self.skip_blank(newlines=False)
        c = self.peek()
        if c == "{":
            self.advance()
            while True:
                self.skip_blank(newlines=True)
                if self.peek() == "}":
                    self.advance()
                    return
                key = self.key()
                self.record((*path, *key))
                if self.peek() != "=":
                    raise _Stop
                self.advance()
                self.value((*path, *key))
                self.skip_blank(newlines=True)
                if self.peek() == ",":
                    self.advance()
        elif c == "[":
            self.advance()
            index = 0
            while True:
                self.skip_blank(newlines=True)
                if self.peek() == "]":
                    self.advance()
                    return
                self.record((*path, index))
                self.value((*path, index))
                self.skip_blank(newlines=True)
                if self.peek() == ",":
                    self.advance()
                    index += 1
                elif self.peek() != "]":
                    raise _Stop
        elif c in ('"', "'"):
            self.string()
        else:
            start = self.i
            while self.peek() and self.peek() not in _VALUE_ENDS:
                self.advance()
            if self.i == start:
                raise _Stop

    # -- statements ----------------------------------------------------------------------------
    def document(self) -> None:
        table: Path = ()
        arrays: dict[Path, int] = {}
        while True:
            self.skip_blank(newlines=True)
            if not self.peek():
                return
            if self.peek() == "[":
                double = self.peek(1) == "["
                self.advance(2 if double else 1)
                name = self.key()
                self.advance(2 if double else 1)
                if double:  # an array of tables: each header starts the next element
                    index = arrays.get(name, -1) + 1
                    arrays[name] = index
                    self.record(name)
                    table = (*name, index)
                else:
                    table = name
                self.record(table)
            else:
                key = self.key()
                self.record((*table, *key))
                if self.peek() != "=":
                    raise _Stop
                self.advance()
                self.value((*table, *key))
            self.skip_blank(newlines=False)
            if self.peek() == "#":
                self.skip_comment()


def locate(text: str) -> dict[Path, int]:
    """Map each key path of a TOML text (that tomllib parsed) to the line it is written on.

    A table's path maps to its header's line (or to the line of the first key that made
    it); an array's elements map to their own lines, by index.
    """
    scanner = _Scanner(text)
    with contextlib.suppress(_Stop, IndexError):
        scanner.document()
    return scanner.lines


def line_of(lines: Mapping[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its longest prefix that has one."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None


def render(value: object, limit: int | None = None) -> str:
    """Write ``value`` as TOML would (strings quoted, ``true``/``false``), cut at ``limit``."""
    text = _render(value)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_render_key(k)} = {_render(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value)


def _render_key(key: object) -> str:
    text = str(key)
    return text if text and all(c in _BARE for c in text) else json.dumps(text)


def parse_value(raw: str) -> Any:
    """An environment variable's value: a TOML value when it parses as one, else the string.

    ``30`` is an integer, ``0.5`` a float, ``true`` a boolean, ``"x"`` and ``x`` the string
    ``x``, ``[1, 2]`` an array, ``{kind = "constant", delay = 1}`` a table.
    """
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
