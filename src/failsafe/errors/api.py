"""The JSON API of the Error-handling service: reports in, records out, a person's actions.

Every route acts through one [`ErrorDesk`][failsafe.errors.ErrorDesk]; the desk's (blocking)
store calls run in a worker thread so the event loop keeps serving. Bad input never reaches
the store: a request is read with a hard size limit, decoded, and validated whole before
anything is written, and every refusal is a 4xx whose JSON body names the problem::

    {"error": "kind: must be 1-128 letters, digits, '.', '_', ':' or '-'", "field": "kind"}

Statuses: 400 malformed JSON, 401 missing or wrong token, 404 no such record, 409 the
record's status forbids the action, 413 body over the limit, 415 not JSON, 422 invalid,
503 the store cannot be reached (with ``Retry-After``).

Each route is declared once, as an `Operation`: its door,
its parameters and body fields (`Param`,
`Field`, `Body`) and its answers
(`Answer`). The same declarations validate every request and
write the OpenAPI 3.1 document ([`openapi_document`][failsafe.errors.api.openapi_document],
served at ``/openapi.json``): a field's type, length, pattern, enum and NUL rule are checked
by the code that writes its JSON Schema, so the document cannot promise what the API refuses.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, NoReturn, Protocol
from urllib.parse import urlsplit

import attrs

from failsafe import _tracing
from failsafe._extras import missing_extra

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import BaseRoute, Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:
    raise missing_extra("errors", "failsafe.errors.api", exc) from exc

from failsafe.errors._intake import Intake
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import GROUP_ACTIONS, ErrorDesk
from failsafe.errors.fingerprint import FINGERPRINT_PATTERN
from failsafe.errors.record import (
    KIND_PATTERN,
    SPAN_ID_PATTERN,
    TRACE_ID_PATTERN,
    Action,
    InvalidReport,
    Report,
    Status,
)
from failsafe.errors.store import (
    GROUP_ORDERS,
    GroupNotFound,
    GroupQuery,
    InvalidMove,
    Query,
    RecordNotFound,
    StoreUnavailable,
    cursor_text,
    parse_cursor,
)
from failsafe.errors.worker import DEFAULT_CALLBACK_HOSTS, HandlerPinned

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "OPERATIONS",
    "REPORT_SPAN",
    "Answer",
    "Body",
    "Field",
    "HandlerRegistry",
    "Operation",
    "Param",
    "api_routes",
    "openapi_document",
]

logger = logging.getLogger("failsafe.errors.api")

DEFAULT_MAX_BODY_BYTES: Final = 256 * 1024
"""The largest request body read, in bytes; a larger one is refused with 413."""
DEFAULT_MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""The largest report payload (as compact JSON), in bytes; a larger one is refused with 422."""
REPORT_SPAN: Final = "failsafe.errors report"
"""The span storing one ``POST /v1/reports`` (with a tracing system installed): attributes
``failsafe.errors.kind``, ``failsafe.errors.source``, ``failsafe.errors.record_id`` and
``failsafe.errors.created`` (whether the record is new)."""

_MAX_DEPTH: Final = 64
_MAX_ID: Final = 200
_MAX_BATCH: Final = 500
_MAX_ACTOR: Final = 200
_MAX_NOTE: Final = 10_000
_MAX_BULK: Final = 500
_MAX_URL: Final = 2000
_MAX_OFFSET: Final = 10**9
_MAX_SHORT: Final = 200  # record.py's limit on source, error_type, correlation_id, dedupe_key
_MAX_TEXT: Final = 64 * 1024  # record.py's limit on error_message and traceback
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS = re.compile(r"[0-9]{1,12}")

# -- patterns, written once for the document (ECMA-262) and the checks (Python's re) ----------

_WS: Final = (
    "\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000"
)
"""What ``str.isspace`` (and so ``str.strip``) counts as white space, as a character class."""
_CONTROL: Final = "\\u0000-\\u001f\\u007f"
_NO_NUL: Final = "^[^\\u0000]*$"
_NOT_BLANK_NO_NUL: Final = f"^[^\\u0000]*[^\\u0000{_WS}][^\\u0000]*$"
_NOT_BLANK: Final = f"^[\\s\\S]*[^{_WS}][\\s\\S]*$"
_KIND_PATTERN: Final = KIND_PATTERN

_YEAR: Final = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001-9999
_LEAP: Final = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE: Final = (
    f"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    f"|{_LEAP}-02-29)"
)
_TIME: Final = (
    "(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,6})?)?"
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?"
)
_EPOCH: Final = "-?[0-9]{1,15}(?:\\.[0-9]{1,9})?"
_INSTANT_PATTERN: Final = f"^(?:[{_WS}]*|{_EPOCH}|{_DATE}{_TIME})$"
_PORT: Final = "(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_URL_REST: Final = f"(?:[/?#][^{_WS}{_CONTROL}]*)?"


def _regex(pattern: str) -> re.Pattern[str]:
    r"""``pattern`` (ECMA-262, as in the document) for Python: ``$`` ends the text (``\Z``).

    Python's ``$`` also matches before a final newline, ECMA's does not.
    """
    return re.compile(pattern[:-1] + "\\Z" if pattern.endswith("$") else pattern)


def _caseless(text: str) -> str:
    """``text`` as a pattern matching it in any case (a host name as ``urlsplit`` reads it)."""
    out = []
    for char in text.lower():
        if char.isalpha():
            out.append(f"[{char}{char.upper()}]")
        elif char in ".[]":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _url_pattern(hosts: Iterable[str] | None) -> str:
    """An http(s) URL whose host is one of ``hosts`` (any host name when ``None``)."""
    if hosts is None:
        host = f"(?:[^{_WS}{_CONTROL}/?#@:\\[\\]]+|\\[[0-9A-Fa-f:.]+\\])"
    else:
        names = [
            f"\\[{_caseless(h)}\\]" if ":" in h else f"{_caseless(h)}\\.?" for h in sorted(hosts)
        ]
        host = f"(?:{'|'.join(names)})" if names else "(?!)"
    return f"^[Hh][Tt][Tt][Pp][Ss]?://{host}(?::{_PORT})?{_URL_REST}$"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _choices(values: Iterable[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# -- refusals -------------------------------------------------------------------------------------


class _Refused(Exception):
    """A request refused with ``status``; ``field`` names the problem's place."""

    def __init__(
        self, status: int, message: str, field: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def _refuse(status: int, message: str, field: str) -> NoReturn:
    raise _Refused(status, message, field)


def _error(
    status: int, message: str, field: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


# -- the declarations -----------------------------------------------------------------------------

FieldKind = Literal["string", "integer", "boolean", "array", "object", "json"]


@attrs.frozen(kw_only=True)
class Field:
    """One value a request carries (a body field, or a parameter): its rules and its schema.

    `check` enforces exactly what `schema` writes into the OpenAPI document: the type,
    ``null``, the length, NUL characters, white space, the enum and the pattern.

    Attributes:
        name: The field's or parameter's name.
        kind: ``string``; ``integer``; ``array`` (of ``items``); ``object`` (a ``body``);
            ``json`` (a JSON object or array of any depth, no NUL in its strings and keys).
        description: For the document.
        required: Whether the field must be given (``null`` counts as given).
        nullable: Whether ``null`` is accepted, meaning "not given".
        default: The value when not given (or ``null``).
        min_length: Strings: the fewest characters.
        max_length: Strings: the most characters.
        pattern: Strings: a regular expression (ECMA-262, anchored with ``^`` and ``$``)
            the whole value must match. Without one, the NUL and blank rules write one.
        enum: Strings: the accepted values; with ``separator``, the accepted items of a
            list such as ``resolved,discarded`` (white space around items and empty items
            are ignored).
        separator: Strings: the list separator for ``enum``.
        not_blank: Strings: must hold a character that is not white space.
        nul: Strings: ``refuse`` NUL characters, or ``replace`` them with U+FFFD (SQL text
            columns cannot hold them).
        minimum: Integers: the smallest value.
        maximum: Integers: the largest value.
        items: Arrays: what each item is.
        min_items: Arrays: the fewest items.
        max_items: Arrays: the most items.
        noun: Arrays: what the items are, for messages (``record ids``).
        body: Objects: the object's fields.
        json_types: ``json``: the JSON types of the value itself.
        same_place: Objects: its fields are named as its parent's own in messages
            (``reports[3].action`` rather than ``reports[3].report.action``).
        problem: The message (after ``<field>: ``) for a value of the wrong type, length or
            shape; ``{length}`` and ``{value}`` are filled in.
        explain: Strings: says, for a value the pattern refused, what is wrong with it.
        parse: Strings: turns a valid value into what the handler gets (a query's time).
    """

    name: str
    kind: FieldKind = "string"
    description: str | None = None
    required: bool = False
    nullable: bool = False
    default: Any = None
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] = ()
    separator: str | None = None
    not_blank: bool = False
    nul: Literal["refuse", "replace"] = "refuse"
    minimum: int | None = None
    maximum: int | None = None
    items: Field | None = None
    min_items: int = 0
    max_items: int | None = None
    noun: str | None = None
    body: Body | None = None
    json_types: tuple[str, ...] = ("object", "array")
    same_place: bool = False
    problem: str | None = None
    explain: Callable[[str], str] | None = attrs.field(default=None, eq=False, repr=False)
    parse: Callable[[str], Any] | None = attrs.field(default=None, eq=False, repr=False)
    # `effective_pattern` compiled for Python (`_regex`), once rather than per check
    _compiled: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        pattern = self.effective_pattern
        object.__setattr__(self, "_compiled", None if pattern is None else _regex(pattern))

    # -- what the document says

    @property
    def effective_pattern(self) -> str | None:
        """The pattern a string must match: the declared one, or the NUL and blank rules'."""
        if self.kind != "string":
            return None
        if self.pattern is not None:
            return self.pattern
        if self.separator is not None:
            word = f"[{_WS}]*(?:(?:{'|'.join(map(re.escape, self.enum))})[{_WS}]*)?"
            return f"^{word}(?:{re.escape(self.separator)}{word})*$"
        if self.enum:
            return None
        if self.nul == "refuse":
            return _NOT_BLANK_NO_NUL if self.not_blank else _NO_NUL
        return _NOT_BLANK if self.not_blank else None

    @property
    def expected(self) -> str:
        """What a valid value is, in words (``a string``, ``'retry' or 'review'``)."""
        if self.kind == "string":
            return _choices(self.enum) if self.enum and self.separator is None else "a string"
        if self.kind == "integer":
            return f"an integer from {self.minimum} to {self.maximum}"
        if self.kind == "boolean":
            return "true or false"
        if self.kind == "array":
            return f"an array of {self.noun or 'items'}"
        if self.kind == "object":
            return "a JSON object"
        return " or ".join(f"a JSON {t}" for t in self.json_types)

    def schema(self) -> dict[str, Any]:
        """This field's JSON Schema, as the OpenAPI document gives it."""
        schema: dict[str, Any]
        if self.kind == "object":
            assert self.body is not None
            schema = self.body.reference()
        elif self.kind == "json":
            schema = {
                "type": list(self.json_types),
                "propertyNames": {"pattern": _NO_NUL},
                "additionalProperties": _ref("JsonValue"),
                "items": _ref("JsonValue"),
            }
        elif self.kind == "array":
            assert self.items is not None
            schema = {"type": "array", "items": self.items.schema()}
            if self.min_items:
                schema["minItems"] = self.min_items
            if self.max_items is not None:
                schema["maxItems"] = self.max_items
        elif self.kind == "integer":
            schema = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        elif self.kind == "boolean":
            schema = {"type": "boolean"}
        else:
            schema = {"type": "string"}
            if self.enum and self.separator is None:
                schema["enum"] = [*self.enum, *([None] if self.nullable else [])]
            low = max(self.min_length, 1 if self.not_blank else 0)
            if low:
                schema["minLength"] = low
            if self.max_length is not None:
                schema["maxLength"] = self.max_length
            if self.effective_pattern is not None:
                schema["pattern"] = self.effective_pattern
        if self.nullable:
            if "$ref" in schema:
                schema = {"anyOf": [schema, {"type": "null"}]}
            elif isinstance(schema.get("type"), str):
                schema["type"] = [schema["type"], "null"]
        if self.default is not None:
            schema["default"] = self.default
        if self.description:
            schema = {**schema, "description": self.description}
        return schema

    # -- what the code checks

    def _problem(self, where: str, value: Any, default: str) -> NoReturn:
        if self.problem is None:
            _refuse(422, f"{where}: {default}", where)
        length = len(value) if isinstance(value, str | list) else "?"
        shown = repr(value[:80]) if isinstance(value, str) else _json_type(value)
        _refuse(422, f"{where}: {self.problem.format(length=length, value=shown)}", where)

    def check(self, value: Any, where: str, *, max_payload_bytes: int) -> Any:
        """``value`` checked (and cleaned) as this field, or a 422 naming ``where``.

        Args:
            value: A decoded JSON value, not ``None`` (the body deals with ``null``).
            where: The field's place in the request, such as ``reports[3].id``.
            max_payload_bytes: The report payload limit (the report body's own check).

        Returns:
            The value: a string with NUL replaced (``nul="replace"``), what ``body``
            makes of an object, a list of checked items.
        """
        if self.kind == "object":
            assert self.body is not None
            return self.body.check(value, where, max_payload_bytes=max_payload_bytes)
        if self.kind == "json":
            # _json_type's last word, without building it for the usual two
            if type(value) is dict:
                given = "object"
            elif type(value) is list:
                given = "array"
            else:
                given = _json_type(value).split()[-1]
            if given not in self.json_types:
                self._problem(where, value, f"must be {self.expected}, got {_json_type(value)}")
            _check_no_nul(value, where)
            return value
        if self.kind == "array":
            assert self.items is not None
            if not isinstance(value, list):
                self._problem(where, value, f"must be {self.expected}, got {_json_type(value)}")
            high = self.max_items if self.max_items is not None else math.inf
            if not self.min_items <= len(value) <= high:
                self._problem(
                    where,
                    value,
                    f"must hold {self.min_items} to {self.max_items} {self.name}, got {len(value)}",
                )
            return [
                self.items.check(item, f"{where}[{index}]", max_payload_bytes=max_payload_bytes)
                for index, item in enumerate(value)
            ]
        if self.kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                self._problem(where, value, f"must be {self.expected}, got {_json_type(value)}")
            return self.check_text(str(value), where)
        if self.kind == "boolean":
            if not isinstance(value, bool):
                self._problem(where, value, f"must be {self.expected}, got {_json_type(value)}")
            return value
        return self.check_string(value, where)

    def check_string(self, value: Any, where: str) -> str:
        """``value`` checked as a string field; NUL replaced if ``nul`` is ``replace``."""
        if not isinstance(value, str):
            self._problem(where, value, f"must be {self.expected}, got {_json_type(value)}")
        return self._check_str(value, where)

    def _check_str(self, value: str, where: str) -> str:
        if "\x00" in value:
            if self.nul == "replace":
                value = value.replace("\x00", "\ufffd")
            else:
                _refuse(422, f"{where}: must not contain NUL characters", where)
        if self.max_length is not None and len(value) > self.max_length:
            self._problem(
                where, value, f"is {len(value)} characters, over the limit of {self.max_length}"
            )
        if len(value) < self.min_length:
            self._problem(where, value, f"must be at least {self.min_length} characters")
        if self.not_blank and not value.strip():
            self._problem(where, value, "must not be empty")
        if self.enum and self.separator is None and value not in self.enum:
            self._problem(where, value, f"must be {self.expected}, got {value[:80]!r}")
        if self._compiled is not None and not self._compiled.search(value):
            pattern = self.effective_pattern
            if self.separator is not None:
                bad = next(
                    (p.strip() for p in value.split(self.separator) if p.strip() not in self.enum),
                    value,
                )
                known = ", ".join(self.enum)
                _refuse(422, f"{where}: unknown {self.name} {bad[:80]!r} (known: {known})", where)
            if self.explain is not None:
                _refuse(422, f"{where}: {self.explain(value)}", where)
            self._problem(where, value, f"must match {pattern}, got {value[:80]!r}")
        return value

    def check_text(self, text: str, where: str) -> Any:
        """A parameter's text checked and read as this field (``None``: not given)."""
        if self.kind == "integer":
            if not _DIGITS.fullmatch(text) or not (
                (self.minimum is None or self.minimum <= int(text))
                and (self.maximum is None or int(text) <= self.maximum)
            ):
                _refuse(422, f"{where}: must be {self.expected}, got {text[:80]!r}", where)
            return int(text)
        if self.enum and self.separator is None and not text.strip():
            return None  # an empty value is no filter, for a choice too
        value = self.check_string(text, where)
        if not value.strip():
            return None
        return self.parse(value) if self.parse is not None else value


def _check_no_nul(value: Any, where: str, depth: int = 0) -> None:
    if depth == 0:
        # look for a NUL without naming places (a string per item): most values hold none
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if "\x00" in item:
                    break
            elif isinstance(item, dict):
                if not all(type(key) is str and "\x00" not in key for key in item):
                    break  # a NUL, or an odd key: the walk below deals with it
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        else:
            return
    if isinstance(value, str):
        if "\x00" in value:
            _refuse(422, f"{where}: must not contain NUL characters", where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                _refuse(422, f"{where}: must not contain NUL characters (in a key)", where)
            _check_no_nul(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_no_nul(item, f"{where}[{index}]", depth + 1)


@attrs.frozen(kw_only=True)
class Body:
    """A JSON object: its fields, all others refused.

    Attributes:
        fields: The known fields, in the order they are checked.
        name: The name of its schema in the document's components (inline if ``None``).
        description: For the document.
        convert: Runs first (after NUL replacement), with its own messages; what it
            returns is what the handler gets. The report's own rules
            (`Report.from_json`) come in this way.
    """

    fields: tuple[Field, ...]
    name: str | None = None
    description: str | None = None
    convert: Callable[[dict[str, Any], int], Any] | None = attrs.field(
        default=None, eq=False, repr=False
    )
    # ``convert`` checks every rule of ``fields`` itself (tests/errors compare the two on
    # generated bodies): once it has taken a body, the field checks are not run again
    converts_all: bool = attrs.field(default=False, eq=False, repr=False)
    # from `fields`, once rather than per check: their names (a set too), and those whose
    # NUL characters are replaced
    _names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    _known: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _replaced: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        names = tuple(f.name for f in self.fields)
        replaced = frozenset(
            f.name for f in self.fields if f.kind == "string" and f.nul == "replace"
        )
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_known", frozenset(names))
        object.__setattr__(self, "_replaced", replaced)

    def schema(self) -> dict[str, Any]:
        """The object's JSON Schema (its fields inline)."""
        schema: dict[str, Any] = {"type": "object"}
        if self.description:
            schema["description"] = self.description
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
        schema["properties"] = {f.name: f.schema() for f in self.fields}
        return schema

    def reference(self) -> dict[str, Any]:
        """A ``$ref`` to the named schema, or the schema itself."""
        return _ref(self.name) if self.name is not None else self.schema()

    def check(self, data: Any, where: str = "", *, max_payload_bytes: int) -> Any:
        """``data`` checked as this object, or a 422 naming the first problem.

        Args:
            data: A decoded JSON value.
            where: The object's place (``""`` for the request body itself).
            max_payload_bytes: Passed to ``convert`` and nested bodies.

        Returns:
            What ``convert`` makes of it, or a dict of every field (defaults filled in).
        """
        prefix = f"{where}." if where else ""
        if not isinstance(data, dict):
            _refuse(
                422,
                f"{where or 'body'}: must be a JSON object, got {_json_type(data)}",
                where or "body",
            )
        if not self._known.issuperset(data):
            unknown = sorted(set(data) - self._known)
            _refuse(
                422,
                f"{prefix}{unknown[0]}: unknown field (known: {', '.join(self._names)})",
                f"{prefix}{unknown[0]}",
            )
        replaced = self._replaced
        if any(isinstance(v, str) and "\x00" in v for k, v in data.items() if k in replaced):
            data = {
                k: v.replace("\x00", "\ufffd") if k in replaced and isinstance(v, str) else v
                for k, v in data.items()
            }
        converted = None
        if self.convert is not None:
            try:
                converted = self.convert(data, max_payload_bytes)
            except InvalidReport as exc:
                _refuse(422, f"{prefix}{exc}", f"{prefix}{exc.field}")
            if self.converts_all:
                return converted
        checked: dict[str, Any] = {}
        for field in self.fields:
            place = where if field.same_place and where else f"{prefix}{field.name}"
            if field.name not in data:
                if field.required:
                    _refuse(422, f"{place}: is required (it must be {field.expected})", place)
                checked[field.name] = field.default
            elif data[field.name] is None:
                if not field.nullable:
                    field._problem(place, None, f"must be {field.expected}, got null")
                checked[field.name] = field.default
            else:
                checked[field.name] = field.check(
                    data[field.name], place, max_payload_bytes=max_payload_bytes
                )
        return converted if self.convert is not None else checked


@attrs.frozen(kw_only=True)
class Param:
    """A query, path or header parameter.

    Attributes:
        field: Its name and rules (a query ``array`` is the parameter repeated).
        location: ``query``, ``path`` or ``header``.
        not_found: A path parameter whose invalid values name nothing: 404, as for an
            unknown record id, rather than 422.
    """

    field: Field
    location: Literal["query", "path", "header"]
    not_found: bool = False

    @property
    def name(self) -> str:
        """The parameter's name."""
        return self.field.name

    def document(self) -> dict[str, Any]:
        """The parameter's OpenAPI object."""
        field = self.field
        described = attrs.evolve(field, description=None)
        schema = described.schema()
        out: dict[str, Any] = {
            "name": field.name,
            "in": self.location,
            "required": self.location == "path" or field.required,
        }
        if field.description:
            out["description"] = field.description
        if self.location == "query" and field.kind == "array":
            out.update(style="form", explode=True)
        if self.location == "query" and field.kind != "integer":
            out["allowEmptyValue"] = True  # an empty value is no filter
        out["schema"] = schema
        return out

    def read(self, texts: list[str]) -> Any:
        """The parameter's value from its texts (several only for a repeated query)."""
        if self.location == "header":
            try:
                return self.field.check_text(texts[0], self.name)
            except _Refused as exc:
                raise _Refused(exc.status, exc.message, self.name.lower()) from None
        field = self.field
        where = field.name
        if field.kind == "array":
            assert field.items is not None
            items = [field.items.check_text(t, where) for t in texts]
            return [value for item in items if item is not None for value in item]
        if len(texts) > 1:
            _refuse(422, f"{where}: given more than once", where)
        text = texts[0]
        if self.not_found:
            try:
                return field.check_string(text, where)
            except _Refused:
                # no store holds such an id; do not hand it to one (PostgreSQL refuses NUL)
                raise RecordNotFound(text[:_MAX_ID]) from None
        if self.location == "path":
            return field.check_string(text, where)
        return field.check_text(text, where)


_HEADERS: Final[dict[str, dict[str, Any]]] = {
    "WWW-Authenticate": {
        "description": 'The scheme to authenticate with: `Bearer realm="failsafe-errors"`.',
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before asking again.",
        "required": True,
        "schema": {"type": "string"},
    },
}


@attrs.frozen(kw_only=True)
class Answer:
    """One answer an operation may give.

    Attributes:
        status: The HTTP status.
        description: What it means.
        schema: Its JSON body: a component's name, or a schema.
        headers: The names of the headers it always carries (``WWW-Authenticate``,
            ``Retry-After``).
    """

    status: int
    description: str
    schema: str | Mapping[str, Any] = "Error"
    headers: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        """The answer's OpenAPI response object."""
        schema = _ref(self.schema) if isinstance(self.schema, str) else dict(self.schema)
        out: dict[str, Any] = {
            "description": self.description,
            "content": {"application/json": {"schema": schema}},
        }
        if self.headers:
            out["headers"] = {name: _HEADERS[name] for name in self.headers}
        return out


@attrs.frozen(kw_only=True)
class Operation:
    """One route: its declaration, from which both its checks and its document come.

    Attributes:
        operation_id: The OpenAPI ``operationId``; also names the handler.
        method: ``GET``, ``POST`` or ``PUT``.
        path: The route, such as ``/v1/records/{id}``.
        summary: One line for the document.
        door: ``report`` (which the review token also opens), ``review``, or ``None``.
        description: More, for the document.
        params: Its query, path and header parameters. An operation with query
            parameters refuses unknown ones (422).
        body: Its JSON body, if it takes one.
        body_required: Whether the body must be given (an empty body counts as ``{}``).
        body_scale: Its body may be this many times ``max_body_bytes`` (a batch).
        answers: Its own answers (success, 404, 409); the others follow from the rest of
            the declaration: 401 from the door, 400/413/415/422 from the body, 422 from
            the parameters, 404 from path parameters, 503 from ``store``.
        store: Whether it reads or writes the store (503 with ``Retry-After`` when the
            store cannot be reached).
    """

    operation_id: str
    method: Literal["GET", "POST", "PUT"]
    path: str
    summary: str
    door: Literal["report", "review"] | None
    description: str | None = None
    params: tuple[Param, ...] = ()
    body: Body | None = None
    body_required: bool = True
    body_scale: int = 1
    answers: tuple[Answer, ...] = ()
    store: bool = True

    def all_answers(self, *, door_open: bool, loopback_only: bool) -> list[Answer]:
        """Every answer, its own and those its declaration implies, by status.

        Args:
            door_open: Whether its door has no token (no 401).
            loopback_only: Whether the app refuses requests not addressed to loopback
                and cross-origin writes (403), as it does while a door is open.
        """
        answers = {a.status: a for a in self.answers}

        def add(status: int, description: str, *headers: str) -> None:
            answers.setdefault(
                status, Answer(status=status, description=description, headers=headers)
            )

        if self.door is not None and not door_open:
            add(401, "Missing or wrong bearer token.", "WWW-Authenticate")
        if loopback_only:
            add(
                403,
                "A door is open (no token): the request's Host is not loopback, or a write"
                " came from another origin.",
            )
        if self.body is not None:
            add(400, "Malformed JSON (the message names the position), or an empty body.")
            add(413, "The body is over the size limit.")
            add(415, "The body is not JSON (Content-Type).")
            add(422, "Invalid input; `field` names the problem's place.")
        if any(p.location != "path" or not p.not_found for p in self.params):
            add(422, "Invalid input; `field` names the problem's place.")
        if any(p.location == "path" for p in self.params):
            add(404, "No route for this path (a path parameter holding `/`).")
        if self.store:
            add(503, "The store cannot be reached now; ask again later.", "Retry-After")
        return [answers[s] for s in sorted(answers)]

    def document(self, *, door_open: bool, loopback_only: bool) -> dict[str, Any]:
        """The operation's OpenAPI object."""
        out: dict[str, Any] = {"operationId": self.operation_id, "summary": self.summary}
        if self.description:
            out["description"] = self.description
        if self.door is None or door_open:
            out["security"] = []
        elif self.door == "report":
            out["security"] = [{"report": []}, {"review": []}]
        else:
            out["security"] = [{"review": []}]
        if self.params:
            out["parameters"] = [p.document() for p in self.params]
        if self.body is not None:
            out["requestBody"] = {
                "required": self.body_required,
                "content": {"application/json": {"schema": self.body.reference()}},
            }
        out["responses"] = {
            str(a.status): a.document()
            for a in self.all_answers(door_open=door_open, loopback_only=loopback_only)
        }
        return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# -- the API's fields ---------------------------------------------------------------------------


def _instant(text: str) -> float:
    """Epoch seconds, or an ISO 8601 time (UTC when it names no zone)."""
    if re.fullmatch(_EPOCH, text):
        return float(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _statuses(text: str) -> tuple[Status, ...]:
    return tuple(Status(p.strip()) for p in text.split(",") if p.strip())


def _group_statuses(text: str) -> tuple[Status | None, ...]:
    """Statuses, ``all`` read as ``None`` (every group)."""
    return tuple(
        None if p.strip() == "all" else Status(p.strip()) for p in text.split(",") if p.strip()
    )


def _explain_url(url: str, hosts: Iterable[str] | None) -> str:
    """What is wrong with a callback URL its pattern refused."""
    problem = None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc}), got {url[:200]!r}"
    if parts.scheme not in ("http", "https"):
        problem = "must be an http:// or https:// URL"
    elif not parts.hostname:
        problem = "must name a host"
    elif any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        problem = "must not contain spaces or control characters"
    elif "@" in parts.netloc:
        problem = "must not hold a user name or password"
    elif hosts is not None and (parts.hostname or "").rstrip(".") not in hosts:
        allowed = ", ".join(sorted(hosts)) or "none"
        return (
            f"host {parts.hostname!r} is not one of the callback hosts allowed at start ({allowed})"
        )
    elif port is None and ":" in parts.netloc.rpartition("]")[2]:
        problem = "must give a port number after ':'"
    if problem is None:
        problem = "must be http(s)://<host>[:<port>][/<path>], written plainly"
    return f"{problem}, got {url[:200]!r}"


def _report(data: dict[str, Any], max_payload_bytes: int) -> Report:
    return Report.from_json(data, max_payload_bytes=max_payload_bytes)


def _text(name: str, limit: int, description: str | None = None) -> Field:
    """An optional text field of a report: ``null`` allowed, NUL stored as U+FFFD."""
    return Field(name=name, nul="replace", nullable=True, max_length=limit, description=description)


_REPORT: Final = Body(
    name="Report",
    description="One failure, as a service reports it. NUL characters in its text fields are"
    " stored as U+FFFD; the payload may hold none. The payload is at most max_payload_bytes"
    " as compact JSON (64 KiB by default; larger: 422) and nests at most 62 levels (59 in a"
    " batch).",
    convert=_report,
    converts_all=True,
    fields=(
        Field(
            name="kind",
            required=True,
            pattern=_KIND_PATTERN,
            problem="must be 1-128 letters, digits, '.', '_', ':' or '-', got {value}",
            description="What failed, such as `stock.decrement`.",
        ),
        Field(name="action", required=True, enum=("retry", "review")),
        Field(
            name="source",
            required=True,
            not_blank=True,
            nul="replace",
            max_length=_MAX_SHORT,
            description="The reporting service, such as `warehouse`.",
        ),
        Field(
            name="payload",
            kind="json",
            description="JSON data needed to act on the failure (default `{}`).",
        ),
        _text("error_type", _MAX_SHORT),
        _text("error_message", _MAX_TEXT),
        _text("traceback", _MAX_TEXT),
        _text("correlation_id", _MAX_SHORT),
        _text(
            "dedupe_key",
            _MAX_SHORT,
            "Reports with the same key, while a record is open, are one record (default: a"
            " hash of kind, source, error type and payload).",
        ),
        Field(
            name="fingerprint",
            nullable=True,
            pattern=FINGERPRINT_PATTERN,
            problem="must be 1-128 letters, digits, '.', '_', ':' or '-', got {value}",
            description="The failure group (default: made from the kind, error type, message"
            " and traceback, see the docs' failure groups).",
        ),
        Field(
            name="trace_id",
            nullable=True,
            pattern=TRACE_ID_PATTERN,
            problem="must be 32 lower-case hex digits, not all zero, got {value}",
            description="The W3C trace id of the trace the failure happened in: the record"
            " can be found by it, and the service's retries of it join that trace.",
        ),
        Field(
            name="span_id",
            nullable=True,
            pattern=SPAN_ID_PATTERN,
            problem="must be 16 lower-case hex digits, not all zero, got {value}",
            description="The W3C span id of the span that reported the failure (within"
            " trace_id's trace): the parent of the retries' spans.",
        ),
    ),
)
"""The body of ``POST /v1/reports`` (and of each report in a batch)."""

_ID: Final = Field(
    name="id",
    min_length=1,
    max_length=_MAX_ID,
    description="The record's id.",
    problem="must be a record id (a short string)",
)
_NOTE: Final = Field(
    name="note",
    nullable=True,
    max_length=_MAX_NOTE,
    description="Kept in the record's history.",
)
_ACTOR: Final = Field(
    name="actor",
    nullable=True,
    not_blank=True,
    max_length=_MAX_ACTOR,
    default="reviewer",
    description="Who acts.",
)
_ACTION: Final = Body(name="ActionRequest", fields=(_NOTE, _ACTOR))
_EDIT: Final = Body(
    name="EditRequest",
    fields=(
        Field(
            name="payload",
            kind="json",
            required=True,
            description="The corrected payload (checked as a report's is).",
        ),
        attrs.evolve(
            _NOTE,
            nullable=False,
            required=True,
            not_blank=True,
            description="Why it is changed (kept in the history, with the changes).",
        ),
        _ACTOR,
    ),
)
"""The body of ``POST /v1/records/{id}/edit``."""
"""The (optional) body of ``POST /v1/records/{id}/resolve``, ``/retry`` and ``/discard``."""
_BULK: Final = Body(
    name="BulkRequest",
    fields=(
        Field(name="action", required=True, enum=("resolve", "retry", "discard")),
        Field(
            name="ids",
            kind="array",
            required=True,
            items=attrs.evolve(_ID, name="id", description=None),
            min_items=1,
            max_items=_MAX_BULK,
            noun="record ids",
        ),
        _NOTE,
        _ACTOR,
    ),
)
"""The body of ``POST /v1/records/bulk``."""
_BATCH: Final = Body(
    name="ReportBatch",
    fields=(
        Field(
            name="reports",
            kind="array",
            required=True,
            min_items=1,
            max_items=_MAX_BATCH,
            noun="reports",
            items=Field(
                name="item",
                kind="object",
                body=Body(
                    fields=(
                        Field(
                            name="id",
                            nullable=True,
                            not_blank=True,
                            max_length=_MAX_ID,
                            description="The report's id: a redelivery with the same id"
                            " counts once.",
                        ),
                        Field(
                            name="report",
                            kind="object",
                            required=True,
                            body=_REPORT,
                            same_place=True,
                        ),
                    )
                ),
            ),
        ),
    ),
)
"""The body of ``POST /v1/reports/batch``."""


def _handler_body(hosts: Iterable[str] | None) -> Body:
    allowed = None if hosts is None else sorted(hosts)
    where = "any host" if allowed is None else f"a host allowed at start ({', '.join(allowed)})"
    return Body(
        name="HandlerRequest",
        fields=(
            Field(
                name="url",
                required=True,
                max_length=_MAX_URL,
                pattern=_url_pattern(allowed),
                explain=lambda url: _explain_url(url, allowed),
                description=f"An http(s) URL on {where}; no spaces or control characters.",
            ),
        ),
    )


_STATUS_NAMES: Final = tuple(s.value for s in Status)
# cursor_text's form: a float's repr (digits, a point, an exponent of two digits at most:
# always finite), "_", a record id
_CURSOR_NUMBER: Final = "-?[0-9]{1,17}(?:\\.[0-9]{1,24})?(?:e[+-]?[0-9]{1,2})?"
_CURSOR_PATTERN: Final = f"^(?:[{_WS}]*|{_CURSOR_NUMBER}_[0-9a-f]{{1,64}})$"
_NEXT_PATTERN: Final = f"^{_CURSOR_NUMBER}_[0-9a-f]{{1,64}}$"
_TRACE_FILTER_PATTERN: Final = f"^(?:[{_WS}]*|[0-9a-fA-F]{{32}})$"
_INSTANT_PROBLEM: Final = (
    "must be epoch seconds or an ISO 8601 time (epoch seconds: a finite number such as"
    " 1700000000.5; ISO 8601: such as 2026-11-01 or 2026-11-01T09:30:00+01:00, UTC when"
    " no zone is given), got {value}"
)


def _query(name: str, description: str, **rules: Any) -> Param:
    return Param(location="query", field=Field(name=name, description=description, **rules))


_LIST_PARAMS: Final = (
    Param(
        location="query",
        field=Field(
            name="status",
            kind="array",
            description="Only these statuses: comma-separated, or the parameter repeated;"
            f" any of {', '.join(_STATUS_NAMES)}.",
            items=Field(name="status", enum=_STATUS_NAMES, separator=",", parse=_statuses),
        ),
    ),
    _query("kind", "Only this kind (empty: any)."),
    _query("source", "Only this reporting service (empty: any)."),
    _query(
        "since",
        "Created at or after: epoch seconds, or an ISO 8601 date or time such as"
        " `2026-11-01T09:30:00Z` (UTC when no zone is given; empty: no limit).",
        pattern=_INSTANT_PATTERN,
        problem=_INSTANT_PROBLEM,
        parse=_instant,
    ),
    _query(
        "until",
        "Created before (as `since`).",
        pattern=_INSTANT_PATTERN,
        problem=_INSTANT_PROBLEM,
        parse=_instant,
    ),
    _query("q", "Text in the kind, error type, message or payload (any case; empty: any)."),
    _query("fingerprint", "Only the records of this failure group (empty: any)."),
    _query(
        "trace_id",
        "Only the records of this trace: its W3C trace id, 32 hex digits, any case (empty: any).",
        pattern=_TRACE_FILTER_PATTERN,
        problem="must be a trace id (32 hex digits), got {value}",
        parse=str.lower,
    ),
    _query("limit", "Records per page.", kind="integer", minimum=1, maximum=500, default=50),
    _query(
        "after",
        "The next page: the `next` of the previous answer (keyset pagination: any page costs"
        " the same, where `offset` costs as many records as it skips; empty: the first).",
        pattern=_CURSOR_PATTERN,
        problem="must be the `next` of a previous answer, got {value}",
        parse=parse_cursor,
    ),
    _query("offset", "Records to skip.", kind="integer", minimum=0, maximum=_MAX_OFFSET, default=0),
)
_GROUP_PARAMS: Final = (
    attrs.evolve(
        _LIST_PARAMS[0],
        field=attrs.evolve(
            _LIST_PARAMS[0].field,
            description="Only groups with a record in one of these statuses: comma-separated,"
            f" or the parameter repeated; any of {', '.join(_STATUS_NAMES)} (default: the"
            " open ones; `all`: every group).",
            items=Field(
                name="status", enum=(*_STATUS_NAMES, "all"), separator=",", parse=_group_statuses
            ),
        ),
    ),
    _query("kind", "Only this kind (empty: any)."),
    _query("source", "Only groups with a record from this service (empty: any)."),
    _query("q", "Text in the kind, error type or title (any case; empty: any)."),
    _query(
        "order",
        "`newest` (last seen first) or `largest` (most records in the statuses first).",
        enum=GROUP_ORDERS,
        default="newest",
    ),
    _query("limit", "Groups per page.", kind="integer", minimum=1, maximum=500, default=50),
    _query("offset", "Groups to skip.", kind="integer", minimum=0, maximum=_MAX_OFFSET, default=0),
)
_FINGERPRINT_PARAM: Final = Param(
    location="path",
    field=Field(
        name="fingerprint",
        pattern=FINGERPRINT_PATTERN,
        problem="must be a fingerprint (1-128 letters, digits, '.', '_', ':' or '-'), got {value}",
        description="The group's fingerprint.",
    ),
)
_GROUP_ACTION: Final = Body(
    name="GroupActionRequest",
    fields=(
        _NOTE,
        _ACTOR,
        Field(
            name="dry_run",
            kind="boolean",
            nullable=True,
            description="Change nothing; answer how many records the action would change.",
        ),
    ),
)
"""The (optional) body of ``POST /v1/groups/{fingerprint}/retry`` (and resolve, discard)."""
_ID_PARAM: Final = Param(location="path", field=_ID, not_found=True)
_RECORD_ANSWERS: Final = (
    Answer(status=404, description="No record with this id."),
    Answer(status=409, description="The record's status does not allow this action."),
)


def _operations(callback_hosts: Iterable[str] | None) -> tuple[Operation, ...]:
    """Every route of the JSON API, declared (``callback_hosts``: see `_handler_body`)."""

    def acting(name: str, summary: str) -> Operation:
        return Operation(
            operation_id=f"{name}Record",
            method="POST",
            path=f"/v1/records/{{id}}/{name}",
            summary=summary,
            door="review",
            params=(_ID_PARAM,),
            body=_ACTION,
            body_required=False,
            answers=(
                Answer(
                    status=200, description="The record after the action.", schema="ErrorRecord"
                ),
                *_RECORD_ANSWERS,
            ),
        )

    def group_acting(name: str, summary: str) -> Operation:
        return Operation(
            operation_id=f"{name}Group",
            method="POST",
            path=f"/v1/groups/{{fingerprint}}/{name}",
            summary=summary,
            description="One audit entry per record; records reported after the request are"
            ' left alone. With `{"dry_run": true}` nothing changes: the answer says how many'
            " records the action would change.",
            door="review",
            params=(_FINGERPRINT_PARAM,),
            body=_GROUP_ACTION,
            body_required=False,
            answers=(
                Answer(status=200, description="What changed.", schema="GroupAction"),
                Answer(status=404, description="No record has this fingerprint."),
            ),
        )

    return (
        Operation(
            operation_id="report",
            method="POST",
            path="/v1/reports",
            summary="Report a failure.",
            door="report",
            params=(
                Param(
                    location="header",
                    field=Field(
                        name="Idempotency-Key",
                        min_length=1,
                        max_length=_MAX_ID,
                        not_blank=True,
                        problem="must be 1 to 200 characters (not only spaces), got {length}",
                        description="The client's id for this report: a redelivery with the"
                        " same key counts once.",
                    ),
                ),
            ),
            body=_REPORT,
            answers=(
                Answer(
                    status=200,
                    description="Joined an open record, or a redelivery.",
                    schema="ReportAccepted",
                ),
                Answer(status=201, description="A new record.", schema="ReportAccepted"),
            ),
        ),
        Operation(
            operation_id="reportBatch",
            method="POST",
            path="/v1/reports/batch",
            summary="Report up to 500 failures in one transaction: all are stored, or none.",
            description="The body may be up to 8 times the service's body limit.",
            door="report",
            body=_BATCH,
            body_scale=8,
            answers=(
                Answer(
                    status=200,
                    description="Each report's record id and whether the record is new, in order.",
                    schema="BatchResult",
                ),
            ),
        ),
        Operation(
            operation_id="listRecords",
            method="GET",
            path="/v1/records",
            summary="List records, newest first.",
            door="review",
            params=_LIST_PARAMS,
            answers=(Answer(status=200, description="One page.", schema="Page"),),
        ),
        Operation(
            operation_id="bulkAction",
            method="POST",
            path="/v1/records/bulk",
            summary="Resolve, retry or discard many records, each on its own.",
            door="review",
            body=_BULK,
            answers=(
                Answer(
                    status=200,
                    description="What changed and what was refused.",
                    schema="BulkResult",
                ),
            ),
        ),
        Operation(
            operation_id="getRecord",
            method="GET",
            path="/v1/records/{id}",
            summary="One record with its attempts and history.",
            door="review",
            params=(_ID_PARAM,),
            answers=(
                Answer(status=200, description="The record.", schema="ErrorRecord"),
                _RECORD_ANSWERS[0],
            ),
        ),
        acting("resolve", "Close a record as dealt with."),
        acting("retry", "Queue a record for an automatic retry now."),
        acting("discard", "Close a record as not worth acting on."),
        Operation(
            operation_id="editRecord",
            method="POST",
            path="/v1/records/{id}/edit",
            summary="Correct a record's payload and queue it for a retry now.",
            description="Only when the service was started with edits allowed (off by"
            " default: 403). The record must need review or wait for a retry; its history"
            " gets who, why and the changes.",
            door="review",
            params=(_ID_PARAM,),
            body=_EDIT,
            answers=(
                Answer(status=200, description="The record after the edit.", schema="ErrorRecord"),
                Answer(
                    status=403,
                    description="Edits are not allowed on this service (or, while a door is"
                    " open, the request is not addressed to loopback or comes from another"
                    " origin).",
                ),
                *_RECORD_ANSWERS,
            ),
        ),
        Operation(
            operation_id="listGroups",
            method="GET",
            path="/v1/groups",
            summary="List failure groups: the records of one failure, with their numbers.",
            door="review",
            params=_GROUP_PARAMS,
            answers=(Answer(status=200, description="One page.", schema="GroupPage"),),
        ),
        Operation(
            operation_id="getGroup",
            method="GET",
            path="/v1/groups/{fingerprint}",
            summary="One failure group, with its reports per hour over the last 7 days.",
            door="review",
            params=(_FINGERPRINT_PARAM,),
            answers=(
                Answer(status=200, description="The group.", schema="Group"),
                Answer(status=404, description="No record has this fingerprint."),
            ),
        ),
        group_acting("retry", "Queue every record of a group that needs review for a retry now."),
        group_acting("resolve", "Close every open record of a group as dealt with."),
        group_acting("discard", "Close every open record of a group as not worth acting on."),
        Operation(
            operation_id="listHandlers",
            method="GET",
            path="/v1/handlers",
            summary="The HTTP callbacks that automatic retries are sent to, by kind.",
            door="review",
            store=False,
            answers=(Answer(status=200, description="The callbacks.", schema="Handlers"),),
        ),
        Operation(
            operation_id="putHandler",
            method="PUT",
            path="/v1/handlers/{kind}",
            summary="Send automatic retries of a kind to an HTTP callback.",
            description='The service POSTs {"record": <ErrorRecord>} with'
            " `Idempotency-Key: <record id>`; a 2xx answer resolves the record. The URL's"
            " host must be one of the callback hosts allowed at start (loopback by"
            " default).",
            door="review",
            store=False,
            params=(
                Param(
                    location="path",
                    field=Field(
                        name="kind",
                        pattern=_KIND_PATTERN,
                        problem="must be 1-128 letters, digits, '.', '_', ':' or '-', got {value}",
                    ),
                ),
            ),
            body=_handler_body(callback_hosts),
            answers=(
                Answer(status=200, description="The registered callback.", schema="Handler"),
                Answer(
                    status=409,
                    description="The kind's handler was set when the service started (in"
                    " code or with --callback): it cannot be changed over HTTP.",
                ),
            ),
        ),
        Operation(
            operation_id="health",
            method="GET",
            path="/healthz",
            summary="Whether the service can reach its store; records per status.",
            door=None,
            store=False,
            answers=(
                Answer(status=200, description="Healthy.", schema="Health"),
                Answer(
                    status=503,
                    description="The store cannot be reached (then with Retry-After), or the"
                    " retry worker stopped.",
                    schema="Health",
                ),
            ),
        ),
        Operation(
            operation_id="openapi",
            method="GET",
            path="/openapi.json",
            summary="This document.",
            door=None,
            store=False,
            answers=(
                Answer(status=200, description="The OpenAPI document.", schema={"type": "object"}),
            ),
        ),
    )


OPERATIONS: Final = _operations(DEFAULT_CALLBACK_HOSTS)
"""Every route of the JSON API, as declared (callbacks allowed on the default hosts)."""


# -- reading requests ---------------------------------------------------------------------------


class HandlerRegistry(Protocol):
    """What the API needs of the retry handlers: HTTP callbacks per kind.

    [`Handlers`][failsafe.errors.worker.Handlers] is the implementation. A registry with a
    ``callback_hosts`` attribute (as ``Handlers`` has) has those hosts written into the
    served document's URL pattern.
    """

    def offer_url(self, kind: str, url: str) -> object:
        """Send automatic retries of ``kind`` to ``url``, asked over HTTP.

        Raises ``InvalidReport`` (422) for a bad kind or URL or a host that is not allowed,
        and [`HandlerPinned`][failsafe.errors.worker.HandlerPinned] (409) for a kind whose
        handler was set at start.
        """
        ...

    def urls(self) -> dict[str, str]:
        """The registered HTTP callbacks, by kind."""
        ...

    def get(self, kind: str) -> object:
        """The handler of ``kind`` (a callable or a URL), or ``None`` when there is none."""
        ...


def _is_json(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if not (
        media == "application/json"
        or (media.startswith("application/") and media.endswith("+json"))
    ):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


async def _read_body(declared: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes, declared or actual.

    ``declared``: the ``Content-Length`` header, if any; ``chunks``: the body as it arrives.
    """
    if declared is not None:
        if not _DIGITS.fullmatch(declared.strip()):
            _refuse(400, f"Content-Length must be a number of bytes, got {declared[:40]!r}", "body")
        if int(declared) > limit:
            _refuse(413, f"body is {int(declared)} bytes, over the limit of {limit} bytes", "body")
    chunks_read: list[bytes] = []
    size = 0
    # count what arrives too: a chunked body declares no length, and a declared one may lie
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            _refuse(413, f"body is over the limit of {limit} bytes", "body")
        chunks_read.append(chunk)
    return b"".join(chunks_read)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    # 1e999 parses as inf, which no JSON answer can carry back (and SQL stores oddly)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
"""``json.loads(text, parse_constant=..., parse_float=...)`` without a decoder per call."""
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
"""A JSON escape of a surrogate (``\\ud800`` to ``\\udfff``), or text that looks like one."""


def _clean(value: Any, depth: int = 1, *, text: str | None = None) -> Any:
    r"""``value`` with unpaired surrogates replaced (they cannot be stored or sent as UTF-8).

    A client that encodes a ``surrogateescape``d file name with ``\\udcff`` escapes sends
    valid JSON that no UTF-8 database column accepts; the report must still be kept.

    ``text``, the JSON text ``value`` was decoded from, can prove the walk needless, and
    ``value`` is then returned as it is: UTF-8 decoding refuses surrogates, so one can only
    come from a ``\\ud800``-``\\udfff`` escape, and nothing nests deeper than the limit
    in a text with fewer ``[`` and ``{`` than the limit.
    """
    if (
        text is not None
        and text.count("[") + text.count("{") < _MAX_DEPTH
        and not _SURROGATE_ESCAPE.search(text)
    ):
        return value
    if depth > _MAX_DEPTH:
        _refuse(422, f"JSON nests deeper than {_MAX_DEPTH} levels", "body")
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_clean(k, depth): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    return value


_ABSENT: Final = object()
"""An optional body that was not sent (empty), as opposed to a JSON ``null``."""


async def _read_json(
    headers: Callable[[str], str | None],
    chunks: AsyncIterator[bytes],
    limit: int,
    *,
    optional: bool = False,
) -> Any:
    """Read and decode a JSON body (``_ABSENT`` when ``optional`` and the body is empty).

    ``headers`` gives a request header's value by its lower-case name.
    """
    content_type = headers("content-type")
    body = await _read_body(headers("content-length"), chunks, limit)
    blank = not body or body.isspace()  # not body.strip(): the same, without a copy
    if blank and optional:
        return _ABSENT
    if content_type is None or not _is_json(content_type):
        shown = "no Content-Type" if content_type is None else f"Content-Type {content_type[:80]!r}"
        _refuse(415, f"expected Content-Type application/json (UTF-8), got {shown}", "content-type")
    if blank:
        _refuse(400, "body is empty; expected a JSON object", "body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse(400, f"body is not UTF-8: {exc.reason} at byte {exc.start}", "body")
    try:
        # json.loads refuses a BOM before it decodes; a text without one goes straight in
        data = (
            json.loads(text, parse_constant=_no_constant, parse_float=_finite)
            if text.startswith("\ufeff")
            else _DECODER.decode(text)
        )
    except json.JSONDecodeError as exc:
        _refuse(
            400,
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
            "body",
        )
    except RecursionError:
        _refuse(400, f"malformed JSON: nests too deeply (the limit is {_MAX_DEPTH} levels)", "body")
    except ValueError as exc:  # NaN, 1e999, or an integer too long to convert
        _refuse(400, f"malformed JSON: {exc}", "body")
    return _clean(data, text=text)


@attrs.frozen
class _Inputs:
    """A request's parameters and body, checked against its operation's declaration."""

    params: dict[str, Any]
    body: Any


async def _inputs(
    operation: Operation, request: Request, *, max_body_bytes: int, max_payload_bytes: int
) -> _Inputs:
    """Check everything the request carries against ``operation``; refuse the first problem."""
    params: dict[str, Any] = {}
    query = [p for p in operation.params if p.location == "query"]
    if query:
        known = [p.name for p in query]
        given: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            if name not in known:
                _refuse(
                    422,
                    f"{name[:80]}: unknown query parameter (known: {', '.join(known)})",
                    name[:80],
                )
            given.setdefault(name, []).append(value)
        for param in query:
            texts = given.get(param.name)
            read = None if texts is None else param.read(texts)
            params[param.name] = param.field.default if read is None else read
    for param in operation.params:
        if param.location == "path":
            params[param.name] = param.read([request.path_params[param.name]])
    headers = request.headers.get
    _header_params(operation, headers, params)
    body = await _body(
        operation,
        headers,
        request.stream(),
        max_body_bytes=max_body_bytes,
        max_payload_bytes=max_payload_bytes,
    )
    return _Inputs(params, body)


def _header_params(
    operation: Operation, headers: Callable[[str], str | None], params: dict[str, Any]
) -> None:
    """Read ``operation``'s header parameters into ``params`` (``headers``: by lower-case name)."""
    for param in operation.params:
        if param.location == "header":
            text = headers(param.name.lower())
            params[param.name] = None if text is None else param.read([text])


async def _body(
    operation: Operation,
    headers: Callable[[str], str | None],
    chunks: AsyncIterator[bytes],
    *,
    max_body_bytes: int,
    max_payload_bytes: int,
) -> Any:
    """Read and check ``operation``'s body (``None`` if it takes none)."""
    if operation.body is None:
        return None
    data = await _read_json(
        headers, chunks, max_body_bytes * operation.body_scale, optional=not operation.body_required
    )
    return operation.body.check(
        {} if data is _ABSENT else data, max_payload_bytes=max_payload_bytes
    )


Endpoint = Callable[[Request], Awaitable[Response]]

_REFUSALS: Final = (_Refused, InvalidReport, RecordNotFound, GroupNotFound, InvalidMove)


def _refusal(exc: Exception) -> Response:
    """The answer to one of `_REFUSALS`: its status, message and field."""
    if isinstance(exc, _Refused):
        return _error(exc.status, exc.message, exc.field, exc.headers)
    if isinstance(exc, InvalidReport):
        return _error(422, str(exc), exc.field)
    if isinstance(exc, RecordNotFound):
        return _error(404, str(exc), "id")
    if isinstance(exc, GroupNotFound):
        return _error(404, str(exc), "fingerprint")
    return _error(409, str(exc), "status")


def _door_refusal(door: str | None, tokens: Tokens, authorization: str | None) -> Response | None:
    """The 401 answer if ``door`` needs a token and ``authorization`` does not carry it."""
    if door is None or tokens.allows(door, authorization):
        return None
    problem = "wrong bearer token" if authorization is not None else "missing bearer token"
    return _error(
        401,
        f"{problem} for the {door} door (send 'Authorization: Bearer <token>')",
        "authorization",
        {"WWW-Authenticate": 'Bearer realm="failsafe-errors"'},
    )


def _unavailable(exc: StoreUnavailable) -> Response:
    """The API's ``503`` for a store that cannot be reached: ``Retry-After``, no details."""
    # the details (where the database is) stay in the log
    return JSONResponse(
        {"error": exc.public, "field": "store"},
        status_code=503,
        headers={"Retry-After": exc.retry_after_header},
    )


Handler = Callable[[_Inputs], Awaitable[Response]]


def _endpoint(
    operation: Operation,
    handler: Handler,
    *,
    tokens: Tokens,
    max_body_bytes: int,
    max_payload_bytes: int,
) -> Endpoint:
    """Check the door's token and the request, run ``handler``, map refusals to 4xx answers."""
    door = operation.door

    async def endpoint(request: Request) -> Response:
        refused = _door_refusal(door, tokens, request.headers.get("authorization"))
        if refused is not None:
            return refused
        try:
            inputs = await _inputs(
                operation,
                request,
                max_body_bytes=max_body_bytes,
                max_payload_bytes=max_payload_bytes,
            )
            return await handler(inputs)
        except _REFUSALS as exc:
            return _refusal(exc)

    endpoint.__name__ = operation.operation_id
    endpoint.__doc__ = f"{operation.method} {operation.path}: {operation.summary}"
    return endpoint


# -- the routes ----------------------------------------------------------------------------------


def api_routes(
    desk: ErrorDesk,
    *,
    tokens: Tokens,
    handlers: HandlerRegistry,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    worker_problem: Callable[[], str | None] | None = None,
) -> list[BaseRoute]:
    """The JSON routes: ``/v1/...``, ``/healthz`` and ``/openapi.json``.

    Each is built from its declaration in `OPERATIONS`,
    which also writes the document served at ``/openapi.json`` (for these tokens: an open
    door's routes need none, and answer 403 to requests not addressed to loopback).

    The service's app ([`create_app`][failsafe.errors.service.create_app]) answers
    ``POST /v1/reports`` before its router, through the same checks, with the same
    answers, in less time; these routes alone answer it too, with the router's cost.

    Args:
        desk: Every route acts through it.
        tokens: ``report`` opens ``POST /v1/reports`` (and its batch form); ``review``
            opens those and every other ``/v1`` route, ``PUT /v1/handlers/{kind}``
            included (where retries go is the operator's choice, not a reporter's).
        handlers: Where ``PUT /v1/handlers/{kind}`` registers HTTP callbacks.
        max_body_bytes: The largest request body read (larger: 413).
        max_payload_bytes: The largest report payload (larger: 422).
        worker_problem: Returns why the retry worker stopped, if it did (``/healthz``
            then answers 503).

    Returns:
        Starlette routes, to mount at the root of an app.
    """
    return _api(
        desk,
        tokens=tokens,
        handlers=handlers,
        max_body_bytes=max_body_bytes,
        max_payload_bytes=max_payload_bytes,
        worker_problem=worker_problem,
    ).routes


@attrs.frozen
class _Api:
    """The JSON routes, and the report door that answers ``POST /v1/reports`` before them."""

    routes: list[BaseRoute]
    report_door: Callable[[ASGIApp], ASGIApp]


def _api(
    desk: ErrorDesk,
    *,
    tokens: Tokens,
    handlers: HandlerRegistry,
    max_body_bytes: int,
    max_payload_bytes: int,
    worker_problem: Callable[[], str | None] | None,
    require_handlers: bool = False,
    allow_edits: bool = False,
) -> _Api:
    """`api_routes`, and the `_ReportDoor` to put in front of them (sharing their intake)."""
    hosts = getattr(handlers, "callback_hosts", None)
    operations = _operations(None if hosts is None else [h for h in hosts if isinstance(h, str)])

    intake = Intake(desk)  # concurrent reports share a transaction
    accepts = _handled_only(handlers) if require_handlers else _any_report

    async def report(inputs: _Inputs) -> Response:
        status, body = await _store_report(intake, inputs, accepts)
        return Response(body, status_code=status, media_type="application/json")

    async def report_batch(inputs: _Inputs) -> Response:
        parsed = [(item["report"], item["id"]) for item in inputs.body["reports"]]
        for n, (report, _) in enumerate(parsed):
            try:
                accepts(report)
            except InvalidReport as exc:  # the whole batch is refused, naming the report
                _refuse(422, f"reports[{n}].{exc}", f"reports[{n}].{exc.field}")
        results = await run_in_threadpool(desk.report_many, parsed)
        return JSONResponse(
            {"results": [{"record_id": rid, "created": created} for rid, created in results]}
        )

    async def list_records(inputs: _Inputs) -> Response:
        p = inputs.params
        query = Query(
            statuses=tuple(dict.fromkeys(p["status"] or ())),
            kind=p["kind"],
            source=p["source"],
            since=p["since"],
            until=p["until"],
            text=p["q"],
            fingerprint=p["fingerprint"],
            trace_id=p["trace_id"],
            limit=p["limit"],
            offset=p["offset"],
            after=p["after"],
        )
        page = await run_in_threadpool(desk.find, query)
        return JSONResponse(
            {
                "records": [r.to_json() for r in page.records],
                "next": None if page.next_after is None else cursor_text(page.next_after),
                "total": page.total,
                "total_exact": page.total_exact,
                "limit": query.limit,
                "offset": query.offset,
            }
        )

    async def list_groups(inputs: _Inputs) -> Response:
        p = inputs.params
        given = tuple(dict.fromkeys(p["status"] or ()))
        query = GroupQuery(
            statuses=GroupQuery().statuses
            if not given
            else tuple(s for s in given if s is not None)
            if None not in given
            else (),
            kind=p["kind"],
            source=p["source"],
            text=p["q"],
            order=p["order"],
            limit=p["limit"],
            offset=p["offset"],
        )
        page = await run_in_threadpool(desk.store.groups, query)
        return JSONResponse(
            {
                "groups": [g.to_json() for g in page.groups],
                "total": page.total,
                "limit": query.limit,
                "offset": query.offset,
            }
        )

    async def get_group(inputs: _Inputs) -> Response:
        group = await run_in_threadpool(desk.store.group, inputs.params["fingerprint"])
        return JSONResponse(group.to_json())

    def group_acting(name: str) -> Handler:
        async def act(inputs: _Inputs) -> Response:
            body = inputs.body
            done = await run_in_threadpool(
                functools.partial(
                    desk.group_action,
                    inputs.params["fingerprint"],
                    name,
                    actor=body["actor"],
                    note=body["note"],
                    dry_run=bool(body["dry_run"]),
                )
            )
            return JSONResponse(done.to_json())

        return act

    async def get_record(inputs: _Inputs) -> Response:
        record = await run_in_threadpool(desk.get, inputs.params["id"])
        return JSONResponse(record.to_json())

    def acting(name: str) -> Handler:
        operation = {"resolve": desk.resolve, "retry": desk.retry, "discard": desk.discard}[name]

        async def act(inputs: _Inputs) -> Response:
            body = inputs.body
            record = await run_in_threadpool(
                operation, inputs.params["id"], actor=body["actor"], note=body["note"]
            )
            return JSONResponse(record.to_json())

        return act

    async def edit_record(inputs: _Inputs) -> Response:
        if not allow_edits:
            _refuse(
                403,
                "editing payloads is off on this service (start it with --allow-edits)",
                "payload",
            )
        body = inputs.body
        record = await run_in_threadpool(
            functools.partial(
                desk.edit_and_retry,
                inputs.params["id"],
                body["payload"],
                actor=body["actor"],
                note=body["note"],
                max_payload_bytes=max_payload_bytes,
            )
        )
        return JSONResponse(record.to_json())

    async def bulk(inputs: _Inputs) -> Response:
        body = inputs.body
        result = await run_in_threadpool(
            desk.bulk,
            body["action"],
            list(dict.fromkeys(body["ids"])),
            actor=body["actor"],
            note=body["note"],
        )
        return JSONResponse(
            {"changed": [r.to_json() for r in result.changed], "refused": result.refused}
        )

    async def put_handler(inputs: _Inputs) -> Response:
        kind, url = inputs.params["kind"], inputs.body["url"]
        try:
            handlers.offer_url(kind, url)
        except HandlerPinned as exc:
            _refuse(409, str(exc), "kind")
        logger.info("retries of %s now go to %s", kind, url)
        return JSONResponse({"kind": kind, "url": url})

    async def get_handlers(inputs: _Inputs) -> Response:
        return JSONResponse({"handlers": handlers.urls()})

    async def healthz(inputs: _Inputs) -> Response:
        try:
            counts = await run_in_threadpool(desk.store.counts)
        except StoreUnavailable as exc:
            # an outage the store has logged once already: not once per health check
            logger.debug("health check: %s", exc)
            return JSONResponse(
                {"ok": False, "error": f"store: {exc.public}"},
                status_code=503,
                headers={"Retry-After": exc.retry_after_header},
            )
        except Exception as exc:
            # /healthz needs no token: the error's text (paths, hosts) stays in the log
            logger.exception("health check: the store failed")
            return JSONResponse(
                {"ok": False, "error": f"store: {type(exc).__name__}"}, status_code=503
            )
        problem = worker_problem() if worker_problem is not None else None
        if problem is not None:
            return JSONResponse(
                {"ok": False, "error": f"retry worker: {problem}", "counts": counts},
                status_code=503,
            )
        return JSONResponse({"ok": True, "counts": counts})

    document = _document(operations, tokens)

    async def openapi(inputs: _Inputs) -> Response:
        return JSONResponse(document)

    implementations: dict[str, Handler] = {
        "report": report,
        "reportBatch": report_batch,
        "listRecords": list_records,
        "bulkAction": bulk,
        "getRecord": get_record,
        "resolveRecord": acting("resolve"),
        "retryRecord": acting("retry"),
        "discardRecord": acting("discard"),
        "editRecord": edit_record,
        "listGroups": list_groups,
        "getGroup": get_group,
        "retryGroup": group_acting("retry"),
        "resolveGroup": group_acting("resolve"),
        "discardGroup": group_acting("discard"),
        "listHandlers": get_handlers,
        "putHandler": put_handler,
        "health": healthz,
        "openapi": openapi,
    }
    assert set(implementations) == {o.operation_id for o in operations}
    routes: list[BaseRoute] = [
        Route(
            o.path,
            _endpoint(
                o,
                implementations[o.operation_id],
                tokens=tokens,
                max_body_bytes=max_body_bytes,
                max_payload_bytes=max_payload_bytes,
            ),
            methods=[o.method],
        )
        for o in operations
    ]
    (reporting,) = (o for o in operations if o.operation_id == "report")

    def report_door(app: ASGIApp) -> ASGIApp:
        return _ReportDoor(
            app,
            operation=reporting,
            tokens=tokens,
            intake=intake,
            accepts=accepts,
            max_body_bytes=max_body_bytes,
            max_payload_bytes=max_payload_bytes,
        )

    return _Api(routes, report_door)


def _any_report(report: Report) -> None:
    """Every valid report is taken (the default)."""


def _handled_only(handlers: HandlerRegistry) -> Callable[[Report], None]:
    """A check refusing a ``retry`` report for a kind no handler retries (422, ``kind``)."""

    def accepts(report: Report) -> None:
        if report.action is Action.RETRY and handlers.get(report.kind) is None:
            raise InvalidReport(
                "kind",
                f"no handler retries {report.kind!r}: register one (PUT /v1/handlers/"
                f"{report.kind}, or --callback at start), or report it with action 'review'",
            )

    return accepts


# the answer's JSON as Starlette's JSONResponse writes it, with the encoder made once
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


async def _store_report(
    intake: Intake, inputs: _Inputs, accepts: Callable[[Report], None]
) -> tuple[int, bytes]:
    """Store a checked report; the answer's status and body (201: a new record).

    With a tracing system installed, storing it is a span (`REPORT_SPAN`) in the request's
    trace, naming the record it made or joined.
    """
    parsed: Report = inputs.body
    accepts(parsed)
    tracing = _tracing.installed()
    if tracing is None:
        record, created = await intake.report(
            parsed, actor=parsed.source, report_id=inputs.params["Idempotency-Key"]
        )
    else:
        attributes = {"failsafe.errors.kind": parsed.kind, "failsafe.errors.source": parsed.source}
        with tracing.span(REPORT_SPAN, kind="internal", attributes=attributes) as span:
            record, created = await intake.report(
                parsed, actor=parsed.source, report_id=inputs.params["Idempotency-Key"]
            )
            span.set("failsafe.errors.record_id", record.id)
            span.set("failsafe.errors.created", created)
    answer = {"record": record.to_json(), "created": created}
    return (201 if created else 200), _ENCODER.encode(answer).encode()


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    """A request's body as it arrives (as Starlette's ``Request.stream``)."""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect


class _ReportDoor:
    """ASGI middleware: ``POST /v1/reports`` answered here, before the router.

    Reporters send this one request far more often than all the others together (a storm
    is thousands a second), so it skips the router's layers (exception middleware, route
    matching, request and response objects): the same checks, in the same order, through
    the same functions as the route (`_endpoint`), and the same answers. A store that
    cannot be reached answers ``503`` here; any other exception goes up to the app's
    server-error handler, as the route's would.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        operation: Operation,
        tokens: Tokens,
        intake: Intake,
        accepts: Callable[[Report], None],
        max_body_bytes: int,
        max_payload_bytes: int,
    ) -> None:
        self.app = app
        self._operation = operation
        self._tokens = tokens
        self._intake = intake
        self._accepts = accepts
        self._max_body_bytes = max_body_bytes
        self._max_payload_bytes = max_payload_bytes
        self._path = operation.path
        self._wanted = frozenset(
            ["authorization", "content-type", "content-length"]
            + [p.name.lower() for p in operation.params if p.location == "header"]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``POST /v1/reports``; pass every other request on."""
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != self._path:
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1")
            if key in self._wanted and key not in headers:  # the first, as Starlette's
                headers[key] = value.decode("latin-1")
        refused = _door_refusal(self._operation.door, self._tokens, headers.get("authorization"))
        if refused is None:
            try:
                params: dict[str, Any] = {}
                _header_params(self._operation, headers.get, params)
                body = await _body(
                    self._operation,
                    headers.get,
                    _chunks(receive),
                    max_body_bytes=self._max_body_bytes,
                    max_payload_bytes=self._max_payload_bytes,
                )
                status, answer = await _store_report(
                    self._intake, _Inputs(params, body), self._accepts
                )
            except _REFUSALS as exc:
                refused = _refusal(exc)
            except StoreUnavailable as exc:
                refused = _unavailable(exc)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def _route_path(scope: Scope) -> str:
    """The path the router matches: the request's, less the prefix the app is mounted at."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


# -- the OpenAPI document ------------------------------------------------------------------------


def _response_schemas() -> dict[str, Any]:
    """The schemas of what the API answers (what it accepts comes from the declarations)."""
    text = {"type": ["string", "null"]}
    statuses = list(_STATUS_NAMES)
    record: dict[str, Any] = {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "source": {"type": "string"},
        "action": {"type": "string", "enum": ["retry", "review"]},
        "payload": {"type": ["object", "array"]},
        "error_type": text,
        "error_message": text,
        "traceback": text,
        "correlation_id": text,
        "dedupe_key": {"type": "string"},
        "count": {"type": "integer", "minimum": 1},
        "status": {"type": "string", "enum": statuses},
        "attempts": {"type": "array", "items": _ref("Attempt")},
        "history": {"type": "array", "items": _ref("AuditEntry")},
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
        "next_attempt_at": {"type": ["number", "null"]},
        "fingerprint": {"type": "string", "description": "The record's failure group."},
        "trace_id": {
            "type": ["string", "null"],
            "pattern": TRACE_ID_PATTERN,
            "description": "The trace the failure happened in (that of the latest report"
            " carrying one), or null.",
        },
        "span_id": {
            "type": ["string", "null"],
            "pattern": SPAN_ID_PATTERN,
            "description": "The span that reported it, within trace_id's trace, or null.",
        },
    }
    count = {"type": "integer", "minimum": 0}
    group: dict[str, Any] = {
        "fingerprint": {"type": "string"},
        "kind": {"type": "string"},
        "error_type": text,
        "title": {**text, "description": "The first record's message (300 characters)."},
        "first_seen": {"type": "number"},
        "last_seen": {"type": "number"},
        "reports": {**count, "description": "Reports, repeats included."},
        "records": count,
        "open": {**count, "description": "Records in an open status."},
        "statuses": {
            "type": "object",
            "required": statuses,
            "properties": dict.fromkeys(statuses, count),
        },
        "sources": {
            "type": "array",
            "description": "Records per source, the most first (at most 10).",
            "items": {
                "type": "object",
                "required": ["source", "records"],
                "properties": {"source": {"type": "string"}, "records": count},
            },
        },
        "hours": {
            "type": "array",
            "description": "Reports per hour over the last 7 days (hours with reports;"
            " empty in a listing).",
            "items": {
                "type": "object",
                "required": ["at", "reports"],
                "properties": {"at": {"type": "number"}, "reports": count},
            },
        },
    }
    return {
        "Attempt": {
            "type": "object",
            "required": ["at", "ok", "detail"],
            "properties": {
                "at": {"type": "number"},
                "ok": {"type": "boolean"},
                "detail": {"type": "string"},
            },
        },
        "AuditEntry": {
            "type": "object",
            "required": ["at", "actor", "action", "note"],
            "properties": {
                "at": {"type": "number"},
                "actor": {"type": "string"},
                "action": {"type": "string"},
                "note": text,
            },
        },
        "ErrorRecord": {
            "type": "object",
            "description": "A reported failure as the service keeps it (times: epoch seconds).",
            "required": list(record),
            "properties": record,
        },
        "ReportAccepted": {
            "type": "object",
            "required": ["record", "created"],
            "properties": {
                "record": _ref("ErrorRecord"),
                "created": {
                    "type": "boolean",
                    "description": "False when the report joined an open record or was a "
                    "redelivery of an Idempotency-Key seen before.",
                },
            },
        },
        "BatchResult": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["record_id", "created"],
                        "properties": {
                            "record_id": {"type": "string"},
                            "created": {"type": "boolean"},
                        },
                    },
                }
            },
        },
        "Page": {
            "type": "object",
            "required": ["records", "next", "total", "total_exact", "limit", "offset"],
            "properties": {
                "records": {"type": "array", "items": _ref("ErrorRecord")},
                "next": {
                    "type": ["string", "null"],
                    "pattern": _NEXT_PATTERN,
                    "description": "Pass it as `after` for the next page; null on the last.",
                },
                "total": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "How many records match, counted up to 10,000.",
                },
                "total_exact": {
                    "type": "boolean",
                    "description": "False when more than 10,000 match (total is then 10,000).",
                },
                "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                "offset": {"type": "integer", "minimum": 0},
            },
        },
        "Group": {
            "type": "object",
            "description": "A failure group: the records with one fingerprint (times: epoch"
            " seconds).",
            "required": list(group),
            "properties": group,
        },
        "GroupPage": {
            "type": "object",
            "required": ["groups", "total", "limit", "offset"],
            "properties": {
                "groups": {"type": "array", "items": _ref("Group")},
                "total": {"type": "integer", "minimum": 0},
                "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                "offset": {"type": "integer", "minimum": 0},
            },
        },
        "GroupAction": {
            "type": "object",
            "required": ["action", "fingerprint", "dry_run", "matched", "changed"],
            "properties": {
                "action": {"type": "string", "enum": list(GROUP_ACTIONS)},
                "fingerprint": {"type": "string"},
                "dry_run": {"type": "boolean"},
                "matched": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "The records the action applies to.",
                },
                "changed": {"type": "integer", "minimum": 0},
            },
        },
        "BulkResult": {
            "type": "object",
            "required": ["changed", "refused"],
            "properties": {
                "changed": {"type": "array", "items": _ref("ErrorRecord")},
                "refused": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Record id to the reason it was not changed.",
                },
            },
        },
        "Handler": {
            "type": "object",
            "required": ["kind", "url"],
            "properties": {"kind": {"type": "string"}, "url": {"type": "string"}},
        },
        "Handlers": {
            "type": "object",
            "required": ["handlers"],
            "properties": {
                "handlers": {"type": "object", "additionalProperties": {"type": "string"}}
            },
        },
        "Health": {
            "type": "object",
            "required": ["ok"],
            "properties": {
                "ok": {"type": "boolean"},
                "counts": {
                    "type": "object",
                    "properties": {s: {"type": "integer"} for s in statuses},
                },
                "error": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error", "field"],
            "properties": {
                "error": {"type": "string", "description": "What is wrong, for a person."},
                "field": {
                    "type": "string",
                    "description": "Where: a body field, a parameter, `body`, `authorization`,"
                    " `content-type`, `host`, `origin`, `id`, `status`, `path` or `store`.",
                },
            },
        },
        "JsonValue": {
            "description": "Any JSON value whose strings and keys hold no NUL character.",
            "anyOf": [
                {"type": ["null", "boolean", "number"]},
                {"type": "string", "pattern": _NO_NUL},
                {"type": "array", "items": _ref("JsonValue")},
                {
                    "type": "object",
                    "propertyNames": {"pattern": _NO_NUL},
                    "additionalProperties": _ref("JsonValue"),
                },
            ],
        },
    }


def _bodies(fields: Iterable[Field]) -> Iterable[Body]:
    """The bodies nested in ``fields``, depth first."""
    for field in fields:
        if field.body is not None:
            yield field.body
            yield from _bodies(field.body.fields)
        if field.items is not None:
            yield from _bodies([field.items])


def _document(operations: Iterable[Operation], tokens: Tokens) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` as served with ``tokens``."""
    open_doors = {d for d, t in (("report", tokens.report), ("review", tokens.review)) if t is None}
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for operation in operations:
        if operation.body is not None:
            for body in (operation.body, *_bodies(operation.body.fields)):
                if body.name is not None:
                    schemas[body.name] = body.schema()
        paths.setdefault(operation.path, {})[operation.method.lower()] = operation.document(
            door_open=operation.door in open_doors, loopback_only=bool(open_doors)
        )
    schemas.update(_response_schemas())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "failsafe Error-handling service",
            "version": "1",
            "description": "Services report failures; the service retries them by its own "
            "logic or keeps them for a person to review. Errors answer "
            '{"error": <message>, "field": <where>}. The review pages (`/review/`, HTML) are '
            "not part of this API.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "report": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "FAILSAFE_ERRORS_REPORT_TOKEN: for reporting services.",
                },
                "review": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "FAILSAFE_ERRORS_REVIEW_TOKEN: for people reviewing (also "
                    "accepted for reporting).",
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the JSON API, as served at ``/openapi.json``.

    As served with both tokens set and the default callback hosts (loopback): it is
    written from `OPERATIONS`, the declarations the
    routes validate requests with.
    """
    return _document(OPERATIONS, Tokens(report="set", review="set"))
