"""The faster request checks refuse and accept exactly what the ones before them did.

`_clean` skips its walk when the JSON text proves it needless; `Field` compiles its pattern
once; `Body` computes its names once and copies a body only to replace a NUL;
`_check_no_nul` names places only once it found a NUL. The functions below are the checks
as they were before (copied whole, on the same declarations): generated bodies, texts and
JSON give the same value or the same refusal (status, message and field) from both.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from failsafe.errors.api import (
    _ABSENT,
    _DIGITS,
    _MAX_DEPTH,
    _SURROGATE,
    OPERATIONS,
    Body,
    Field,
    _check_no_nul,
    _clean,
    _finite,
    _is_json,
    _json_type,
    _no_constant,
    _operations,
    _read_body,
    _read_json,
    _refuse,
    _Refused,
    _regex,
)
from failsafe.errors.record import InvalidReport, Report

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
)

# -- the reference: the checks before the fast paths --------------------------------------------


def old_clean(value: Any, depth: int = 1) -> Any:
    if depth > _MAX_DEPTH:
        _refuse(422, f"JSON nests deeper than {_MAX_DEPTH} levels", "body")
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {old_clean(k, depth): old_clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [old_clean(v, depth + 1) for v in value]
    return value


def old_check_no_nul(value: Any, where: str, depth: int = 0) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            _refuse(422, f"{where}: must not contain NUL characters", where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                _refuse(422, f"{where}: must not contain NUL characters (in a key)", where)
            old_check_no_nul(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            old_check_no_nul(item, f"{where}[{index}]", depth + 1)


def old_field_check(field: Field, value: Any, where: str, *, max_payload_bytes: int) -> Any:
    if field.kind == "object":
        assert field.body is not None
        return old_body_check(field.body, value, where, max_payload_bytes=max_payload_bytes)
    if field.kind == "json":
        if _json_type(value).split()[-1] not in field.json_types:
            field._problem(where, value, f"must be {field.expected}, got {_json_type(value)}")
        old_check_no_nul(value, where)
        return value
    if field.kind == "array":
        assert field.items is not None
        if not isinstance(value, list):
            field._problem(where, value, f"must be {field.expected}, got {_json_type(value)}")
        high = field.max_items if field.max_items is not None else math.inf
        if not field.min_items <= len(value) <= high:
            field._problem(
                where,
                value,
                f"must hold {field.min_items} to {field.max_items} {field.name}, got {len(value)}",
            )
        return [
            old_field_check(
                field.items, item, f"{where}[{index}]", max_payload_bytes=max_payload_bytes
            )
            for index, item in enumerate(value)
        ]
    if field.kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            field._problem(where, value, f"must be {field.expected}, got {_json_type(value)}")
        return old_check_text(field, str(value), where)
    if field.kind == "boolean":  # a kind added with the group actions (not a speed-up)
        if not isinstance(value, bool):
            field._problem(where, value, f"must be {field.expected}, got {_json_type(value)}")
        return value
    return old_check_string(field, value, where)


def old_check_string(field: Field, value: Any, where: str) -> str:
    if not isinstance(value, str):
        field._problem(where, value, f"must be {field.expected}, got {_json_type(value)}")
    return old_check_str(field, value, where)


def old_check_str(field: Field, value: str, where: str) -> str:
    if "\x00" in value:
        if field.nul == "replace":
            value = value.replace("\x00", "\ufffd")
        else:
            _refuse(422, f"{where}: must not contain NUL characters", where)
    if field.max_length is not None and len(value) > field.max_length:
        field._problem(
            where, value, f"is {len(value)} characters, over the limit of {field.max_length}"
        )
    if len(value) < field.min_length:
        field._problem(where, value, f"must be at least {field.min_length} characters")
    if field.not_blank and not value.strip():
        field._problem(where, value, "must not be empty")
    if field.enum and field.separator is None and value not in field.enum:
        field._problem(where, value, f"must be {field.expected}, got {value[:80]!r}")
    pattern = field.effective_pattern
    if pattern is not None and not _regex(pattern).search(value):
        if field.separator is not None:
            bad = next(
                (p.strip() for p in value.split(field.separator) if p.strip() not in field.enum),
                value,
            )
            known = ", ".join(field.enum)
            _refuse(422, f"{where}: unknown {field.name} {bad[:80]!r} (known: {known})", where)
        if field.explain is not None:
            _refuse(422, f"{where}: {field.explain(value)}", where)
        field._problem(where, value, f"must match {pattern}, got {value[:80]!r}")
    return value


def old_check_text(field: Field, text: str, where: str) -> Any:
    if field.kind == "integer":
        if not _DIGITS.fullmatch(text) or not (
            (field.minimum is None or field.minimum <= int(text))
            and (field.maximum is None or int(text) <= field.maximum)
        ):
            _refuse(422, f"{where}: must be {field.expected}, got {text[:80]!r}", where)
        return int(text)
    if field.enum and field.separator is None and not text.strip():
        return None  # a rule added with the group listing's order (not a speed-up)
    value = old_check_string(field, text, where)
    if not value.strip():
        return None
    return field.parse(value) if field.parse is not None else value


def old_body_check(body: Body, data: Any, where: str = "", *, max_payload_bytes: int) -> Any:
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        _refuse(
            422,
            f"{where or 'body'}: must be a JSON object, got {_json_type(data)}",
            where or "body",
        )
    names = [f.name for f in body.fields]
    unknown = sorted(set(data) - set(names))
    if unknown:
        _refuse(
            422,
            f"{prefix}{unknown[0]}: unknown field (known: {', '.join(names)})",
            f"{prefix}{unknown[0]}",
        )
    replaced = {f.name for f in body.fields if f.kind == "string" and f.nul == "replace"}
    data = {
        k: v.replace("\x00", "\ufffd") if k in replaced and isinstance(v, str) else v
        for k, v in data.items()
    }
    converted = None
    if body.convert is not None:
        try:
            converted = body.convert(data, max_payload_bytes)
        except InvalidReport as exc:
            _refuse(422, f"{prefix}{exc}", f"{prefix}{exc.field}")
    checked: dict[str, Any] = {}
    for field in body.fields:
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
            checked[field.name] = old_field_check(
                field, data[field.name], place, max_payload_bytes=max_payload_bytes
            )
    return converted if body.convert is not None else checked


def outcome(run: Any) -> tuple[str, Any]:
    """What a check gave: its value, or its refusal (an exception's type and text)."""
    try:
        return ("value", run())
    except _Refused as exc:
        return ("refused", (exc.status, exc.message, exc.field))
    except Exception as exc:  # a bug shows as a difference: both must fail alike
        return ("error", (type(exc).__name__, str(exc)))


# -- generated input ----------------------------------------------------------------------------

_PIECES = [
    "", " ", "\t", "\n", "\x00", "\u2003", "\x85", "\ud800", "\udcff", "a", "Z", "0", "9", ".",
    "_", ":", "-", "/", ",", "stock.decrement", "retry", "review", "resolve", "discard",
    "needs_review", "resolved", " resolved ,discarded", "pending_retry", "bogus", "warehouse",
    "2026-11-01", "2026-02-29", "2024-02-29T09:30:00+01:00", "T10:00", "1700000000.5", "-1",
    "http://127.0.0.1:9/x", "https://localhost/x", "http://[::1]:80/", "http://evil.example/",
    "1.5_ab12", "é", "\U0001f600",
]  # fmt: skip
_TEXT = st.one_of(
    st.lists(st.sampled_from(_PIECES), max_size=6).map("".join),
    st.text(max_size=8),
    st.builds(lambda c, n, tail: c * n + tail, st.sampled_from("ax \x00"),
              st.integers(120, 260), st.sampled_from(["", "\n", "\x00", " "])),
)  # fmt: skip
_SCALAR = st.none() | st.booleans() | st.integers(-5, 600) | st.floats(-1e3, 1e3) | _TEXT
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _bodies() -> list[Body]:
    found: list[Body] = []
    for operation in (*OPERATIONS, *_operations(None)):
        if operation.body is not None and operation.body not in found:
            found.append(operation.body)
    return found


BODIES = _bodies()


@st.composite
def _data(draw: st.DrawFn, body: Body) -> Any:
    """A body for ``body``: mostly an object of its fields (and some others), sometimes not."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_JSON)
    out: dict[str, Any] = {}
    for field in body.fields:
        if draw(st.integers(0, 4)) == 0:
            continue
        if field.kind == "object" and field.body is not None:
            out[field.name] = draw(_data(field.body))
        elif field.kind == "array" and field.items is not None and field.items.body is not None:
            out[field.name] = draw(st.lists(_data(field.items.body), max_size=3))
        elif field.kind == "array":
            out[field.name] = draw(st.lists(_TEXT | _SCALAR, max_size=4))
        elif field.kind == "string":  # mostly a string near its rules
            choices = st.sampled_from([*field.enum, *_PIECES]) | _TEXT
            out[field.name] = draw(choices if draw(st.integers(0, 5)) else _JSON)
        else:
            out[field.name] = draw(_JSON)
    if draw(st.integers(0, 5)) == 0:
        out[draw(_TEXT)] = draw(_SCALAR)
    return out


@SETTINGS
@given(data=st.data(), which=st.integers(0, len(BODIES) - 1), limit=st.sampled_from([40, 65536]))
def test_bodies_are_checked_as_before(data: st.DataObject, which: int, limit: int) -> None:
    """Every generated body gets the same value or the same refusal from both checks."""
    body = BODIES[which]
    value = data.draw(_data(body))
    new = outcome(lambda: body.check(value, max_payload_bytes=limit))
    old = outcome(lambda: old_body_check(body, value, max_payload_bytes=limit))
    assert new == old


_REPORT = next(o.body for o in OPERATIONS if o.operation_id == "report")
assert _REPORT is not None


@SETTINGS
@given(
    kind=st.just("stock.decrement")
    | st.sampled_from(["a\n", "a\x00", " ", "has space", 5, None, "a" * 129, "a" * 128]),
    action=st.sampled_from(["retry", "review"]) | st.sampled_from(["ignore", "", None, 1]),
    source=st.just("warehouse") | st.sampled_from([" ", "a\x00b", "s" * 201, None, ["x"]]),
    payload=_JSON,
    texts=st.lists(_TEXT | st.none() | st.integers(), min_size=5, max_size=5),
)
def test_reports_are_checked_as_before(
    kind: Any, action: Any, source: Any, payload: Any, texts: list[Any]
) -> None:
    """Reports near every rule of both passes (Report.from_json's and the fields') agree."""
    names = ["error_type", "error_message", "traceback", "correlation_id", "dedupe_key"]
    value = {"kind": kind, "action": action, "source": source, "payload": payload}
    value.update(zip(names, texts, strict=True))
    value = {k: v for k, v in value.items() if v is not None or k in ("payload", "traceback")}
    new = outcome(lambda: _REPORT.check(value, max_payload_bytes=65536))
    assert new == outcome(lambda: old_body_check(_REPORT, value, max_payload_bytes=65536))
    if new[0] == "value":
        assert isinstance(new[1], Report)


def _params() -> list[Field]:
    found: list[Field] = []
    for operation in (*OPERATIONS, *_operations(None)):
        for param in operation.params:
            field = param.field.items if param.field.kind == "array" else param.field
            assert field is not None
            if field not in found:
                found.append(field)
    return found


PARAMS = _params()


@SETTINGS
@given(which=st.integers(0, len(PARAMS) - 1), text=_TEXT)
def test_parameters_are_read_as_before(which: int, text: str) -> None:
    """Every parameter's text reads to the same value, or the same refusal, from both."""
    field = PARAMS[which]
    new = outcome(lambda: field.check_text(text, field.name))
    assert new == outcome(lambda: old_check_text(field, text, field.name))
    assert outcome(lambda: field.check_string(text, "x")) == outcome(
        lambda: old_check_string(field, text, "x")
    )


@SETTINGS
@given(value=_JSON)
def test_nul_is_found_as_before(value: Any) -> None:
    """_check_no_nul refuses the same first NUL, naming the same place, or none."""
    new = outcome(lambda: _check_no_nul(value, "payload"))
    assert new == outcome(lambda: old_check_no_nul(value, "payload"))


def test_a_non_string_key_fails_as_before() -> None:
    """A key that is not a string (never from JSON) fails the same way as before."""
    for value in ({1: "x"}, {"a": [{2: "x"}]}, {"a": {None: 1}}):
        new = outcome(lambda v=value: _check_no_nul(v, "payload"))
        assert new == outcome(lambda v=value: old_check_no_nul(v, "payload"))
        assert new[0] == "error"


# -- _clean with the text -----------------------------------------------------------------------

_DEEP = st.tuples(st.sampled_from(["[", '{"k":']), st.integers(55, 70))


def _nest(opener: str, n: int, leaf: Any) -> str:
    closer = "]" if opener == "[" else "}"
    return opener * n + json.dumps(leaf) + closer * n


@SETTINGS
@given(
    value=_JSON,
    deep=st.none() | _DEEP,
    upper=st.booleans(),
    ascii_only=st.booleans(),
)
def test_clean_with_the_text_is_clean_without(
    value: Any, deep: tuple[str, int] | None, upper: bool, ascii_only: bool
) -> None:
    """The walk is skipped only where it would change nothing and refuse nothing."""
    text = json.dumps(value, ensure_ascii=ascii_only) if deep is None else _nest(*deep, value)
    if upper:  # escapes in capitals: \uD800
        text = text.replace("\\ud", "\\uD")
    try:
        decoded = json.loads(text)
        text.encode("utf-8")  # as _read_json has it: decoded from UTF-8
    except (ValueError, RecursionError):
        return
    new = outcome(lambda: _clean(decoded, text=text))
    assert new == outcome(lambda: old_clean(decoded))
    assert new == outcome(lambda: _clean(decoded))


def test_clean_keeps_the_walk_for_surrogates_and_depth() -> None:
    """A surrogate escape (any case) and 64 brackets still get the walk."""
    for text in ('{"a": "\\udcff"}', '["\\uDBFF"]', '{"\\ud800": 1}'):
        assert "\ud800" not in json.dumps(_clean(json.loads(text), text=text), ensure_ascii=False)
        assert _clean(json.loads(text), text=text) == old_clean(json.loads(text))
    for n in (63, 64, 65):
        text = "[" * n + "1" + "]" * n
        assert outcome(lambda t=text: _clean(json.loads(t), text=t)) == outcome(
            lambda t=text: old_clean(json.loads(t))
        )


# -- _read_json, with its decoder built once ----------------------------------------------------


async def old_read_json(request: Request, limit: int, *, optional: bool = False) -> Any:
    content_type = request.headers.get("content-type")
    body = await _read_body(request.headers.get("content-length"), request.stream(), limit)
    if not body.strip() and optional:
        return _ABSENT
    if content_type is None or not _is_json(content_type):
        shown = "no Content-Type" if content_type is None else f"Content-Type {content_type[:80]!r}"
        _refuse(415, f"expected Content-Type application/json (UTF-8), got {shown}", "content-type")
    if not body.strip():
        _refuse(400, "body is empty; expected a JSON object", "body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse(400, f"body is not UTF-8: {exc.reason} at byte {exc.start}", "body")
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        _refuse(
            400,
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
            "body",
        )
    except RecursionError:
        _refuse(400, f"malformed JSON: nests too deeply (the limit is {_MAX_DEPTH} levels)", "body")
    except ValueError as exc:
        _refuse(400, f"malformed JSON: {exc}", "body")
    return old_clean(data)


def _request(body: bytes, content_type: str | None) -> Request:
    headers = [] if content_type is None else [(b"content-type", content_type.encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        assert not sent
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


_BODY_PIECES = [
    b"", b" ", b"\t", b"\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x85", b"\xa0", b"\xef\xbb\xbf",
    b"\xff", b"{", b"}", b"[", b"]", b'"', b":", b",", b"1", b"-", b"1e999", b"1.5", b"NaN",
    b"Infinity", b"null", b"true", b'"a"', b'"\\ud800"', b'"\\uDC00"', b'"\\u0000"',
    b'{"k": ', b"9" * 5000, b"[" * 70, b"]" * 70, b"[" * 3000,
]  # fmt: skip


@SETTINGS
@given(
    body=st.lists(st.sampled_from(_BODY_PIECES) | st.binary(max_size=4), max_size=8).map(b"".join)
    | st.builds(lambda v: json.dumps(v).encode(), _JSON),
    content_type=st.sampled_from(["application/json", "text/plain", None]),
    optional=st.booleans(),
)
def test_bodies_are_read_as_before(body: bytes, content_type: str | None, optional: bool) -> None:
    """Every generated body reads to the same value, or the same refusal, from both."""

    def read(reader: Any) -> tuple[str, Any]:
        return outcome(
            lambda: asyncio.run(reader(_request(body, content_type), 10**6, optional=optional))
        )

    def new_read_json(request: Request, limit: int, *, optional: bool) -> Any:
        return _read_json(request.headers.get, request.stream(), limit, optional=optional)

    assert read(new_read_json) == read(old_read_json)
