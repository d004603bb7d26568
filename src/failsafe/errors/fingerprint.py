"""Failure groups: the fingerprint that says two records are the same failure.

Two records are one failure when their kind, error type, message and place in the code are
the same once what changes from one occurrence to the next is taken out: numbers, UUIDs,
hex ids, quoted values and timestamps in the message; line numbers in the traceback. The
console lists records by group, and acts on a whole group at once.

```python
from failsafe.errors import Report
from failsafe.errors.fingerprint import fingerprint, normalise_message

a = Report(kind="stock.decrement", action="retry", source="warehouse",
           error_type="OperationalError", error_message="row 4711 locked after 2.5 s")
b = Report(kind="stock.decrement", action="retry", source="warehouse",
           error_type="OperationalError", error_message="row 90 locked after 0.1 s")
assert normalise_message(a.error_message) == "row <n> locked after <n> s"
assert fingerprint(a) == fingerprint(b)
assert fingerprint(a).startswith("v1-")
```

A report may set its own (``Report.fingerprint``): then records with the same one are one
group whatever their messages. The rule has a version, written into every fingerprint it
makes (``v1-...``): a later rule makes fingerprints of another version, so records stored
before it are never merged into or split from new groups without a trace.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Final, Protocol

__all__ = [
    "FINGERPRINT_PATTERN",
    "Failure",
    "FINGERPRINT_VERSION",
    "TOP_FRAMES",
    "fingerprint",
    "normalise_message",
    "top_frames",
]

FINGERPRINT_VERSION: Final = 1
"""The version of the rule `fingerprint` follows; its fingerprints start ``v1-``."""

FINGERPRINT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""What a fingerprint may be, one a report sets included: 1-128 letters, digits, ``._:-``."""

TOP_FRAMES: Final = 3
"""How many frames of a traceback (the innermost: where it failed) the fingerprint takes."""

_MAX_MESSAGE: Final = 2000  # characters of the message the rule reads (the rest: ignored)

# in this order: a timestamp holds numbers, a UUID hex, a quoted value anything
_RULES: Final = (
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?\b"
        ),
        "<time>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
    ),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    # a run of 8 or more hex digits with a digit and a letter in it: an id, not a word
    (re.compile(r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"'[^'\n]{0,200}'"), "'<value>'"),
    (re.compile(r'"[^"\n]{0,200}"'), '"<value>"'),
    (re.compile(r"\b\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?\b"), "<n>"),
    (re.compile(r"\s+"), " "),
)

# a Python traceback's frame line: File "path", line 12, in function
_FRAME: Final = re.compile(r'^\s*File "([^"\n]*)", line \d+, in (\S+)', re.MULTILINE)


def normalise_message(message: str | None) -> str:
    """``message`` with what varies between occurrences replaced by placeholders.

    Timestamps become ``<time>``, UUIDs ``<uuid>``, hex ids (``0x7f3a``, or 8+ hex digits
    mixing digits and letters) ``<hex>``, quoted values ``'<value>'`` / ``"<value>"``,
    numbers ``<n>``; runs of white space one space. Only the first 2,000 characters are
    read.
    """
    if not message:
        return ""
    text = message[:_MAX_MESSAGE]
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return text.strip()


def top_frames(traceback: str | None, limit: int = TOP_FRAMES) -> tuple[str, ...]:
    """The innermost ``limit`` frames of a Python traceback, as ``file:function``.

    The file is its name without the directories (the same code installed in two places is
    the same place); line numbers are left out (an edit above the failing line moves it).
    A traceback in another format gives no frames.
    """
    if not traceback:
        return ()
    frames = _FRAME.findall(traceback)
    return tuple(
        f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{function}"
        for path, function in frames[-limit:]
    )


class Failure(Protocol):
    """What `fingerprint` reads: a report, a record, or anything with these attributes."""

    @property
    def kind(self) -> str:
        """What failed."""
        ...

    @property
    def error_type(self) -> str | None:
        """The exception's class name."""
        ...

    @property
    def error_message(self) -> str | None:
        """The exception's message."""
        ...

    @property
    def traceback(self) -> str | None:
        """The traceback text."""
        ...


def fingerprint(report: Failure) -> str:
    """The report's group: its own ``fingerprint`` if it set one, else one made by the rule.

    The rule (version `FINGERPRINT_VERSION`): a hash of the kind, the error type, the
    message as `normalise_message` gives it and the `top_frames` of the traceback, written
    ``v1-`` and 16 hex digits. The source is not part of it: the same failure reported by
    two services is one group (the console lists its sources).
    """
    own = getattr(report, "fingerprint", None)
    if own:
        return str(own)
    parts = [
        FINGERPRINT_VERSION,
        report.kind,
        report.error_type or "",
        normalise_message(report.error_message),
        list(top_frames(report.traceback)),
    ]
    digest = hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()
    return f"v{FINGERPRINT_VERSION}-{digest[:16]}"
