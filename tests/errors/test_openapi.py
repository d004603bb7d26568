"""The OpenAPI document and the JSON API agree: Schemathesis with every check, and by hand.

The document is written from the declarations the routes validate requests with
(`failsafe.errors.api.OPERATIONS`). Schemathesis drives the app over ASGI with valid and
invalid requests (every phase it has in pytest, every check, both generation modes) with
both tokens set and with none, and walks the links between operations; the other tests
hold the declarations, the document and the app together case by case.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from failsafe.errors.api import OPERATIONS, Field, Operation, _regex, openapi_document
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import REPORT_FIELDS, Action, Report, Status
from failsafe.errors.service import create_app
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import Query, StoreUnavailable
from failsafe.errors.worker import Handlers
from failsafe.testing import FakeClock

REPORT_TOKEN = "report-secret"
REVIEW_TOKEN = "review-secret"
REVIEW = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
LOCKED = Tokens(report=REPORT_TOKEN, review=REVIEW_TOKEN)
VALID = {"kind": "stock.decrement", "action": "retry", "source": "warehouse"}


def new_app(tokens: Tokens = LOCKED, store: Any = None) -> Starlette:
    """The service on an empty in-memory store and a fake clock."""
    desk = ErrorDesk(store if store is not None else SQLiteStore(":memory:"), clock=FakeClock())
    # edits allowed: every declared operation reaches its store (off, one answers 403)
    return create_app(desk, tokens=tokens, handlers=Handlers(), allow_edits=True)


def operation(operation_id: str) -> Operation:
    return next(o for o in OPERATIONS if o.operation_id == operation_id)


# -- Schemathesis, every check -------------------------------------------------------------------

# Requests carry the right token, as a client's would; `ignored_auth` takes it away and spoils
# it to see the 401s. A body's limit is in bytes, which JSON Schema cannot state: a string far
# past its maxLength may be past the limit too, and is then refused with the declared 413.
# Schemathesis' own list of refusals of invalid data, and 413
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"with-security-parameters": False},
        "checks": {"negative_data_rejection": {"expected-statuses": [*REFUSALS, "5xx"]}},
    }
)
EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
)

_locked = new_app()
_schema = schemathesis.openapi.from_asgi("/openapi.json", _locked, config=CONFIG)


@_schema.parametrize()
@EXAMPLES
def test_with_tokens_the_api_keeps_every_promise_of_its_document(case: Any) -> None:
    """Generated requests, valid and not, get the answers the document promises.

    Every check: no 5xx; statuses, content types, headers and bodies as declared; valid
    requests accepted, invalid ones refused; a missing or wrong token refused with 401;
    undeclared methods refused with 405.
    """
    case.call_and_validate(headers=REVIEW)


class AddressedToLoopback:
    """The app as reached at 127.0.0.1 (Schemathesis' ASGI client sends Host: testserver)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k, b"127.0.0.1" if k == b"host" else v) for k, v in scope["headers"]]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


_open = AddressedToLoopback(new_app(Tokens()))
_open_schema = schemathesis.openapi.from_asgi("/openapi.json", _open, config=CONFIG)


@_open_schema.parametrize()
@EXAMPLES
def test_without_tokens_the_api_keeps_every_promise_of_its_document(case: Any) -> None:
    """With both doors open, the served document asks for no token, and the API keeps it."""
    case.call_and_validate()


class Renewed:
    """An ASGI app that is a new service for every stateful run, holding a few records.

    Schemathesis starts its walks from lists and bulk actions (it takes `POST /v1/reports`
    for a consumer of correlation ids); the records give those lists ids to follow.
    """

    def __init__(self) -> None:
        self.app = new_app()

    def renew(self) -> None:
        desk = ErrorDesk(SQLiteStore(":memory:"), clock=FakeClock())
        for n, action in enumerate(["review", "retry", "review"]):
            report = Report(kind="stock.decrement", action=Action(action), source=f"s{n}")
            desk.report(report, actor=report.source)
        desk.resolve(desk.find(Query()).records[0].id, actor="ann")
        self.app = create_app(desk, tokens=LOCKED, handlers=Handlers())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


_renewed = Renewed()
_stateful_schema = schemathesis.openapi.from_asgi("/openapi.json", _renewed, config=CONFIG)


class Workflows(_stateful_schema.as_state_machine()):  # type: ignore[misc]
    """Sequences of linked calls (report, then read, act on, list the record...), all checked.

    The stateful checks run here too: a resource a 2xx created is there to be read
    (`ensure_resource_availability`), one that was removed is gone (`use_after_free`).
    """

    def setup(self) -> None:
        # a run replays the same choices on a fresh store, or Hypothesis finds it flaky
        _renewed.renew()

    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        return {"headers": REVIEW}


TestLinkedOperationsKeepTheirPromises = Workflows.TestCase
TestLinkedOperationsKeepTheirPromises.settings = settings(
    max_examples=15,
    stateful_step_count=5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


# -- the declarations, the app and the document --------------------------------------------------


def test_every_declared_operation_is_a_route_of_the_app_and_no_other() -> None:
    """Each declaration is a route with its method, and each JSON route is declared once."""
    app = new_app()
    routes = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    declared = [(o.path, o.method) for o in OPERATIONS]
    assert len(declared) == len(set(declared)) == 18
    assert set(declared) == routes
    document = openapi_document()
    for o in OPERATIONS:
        assert document["paths"][o.path][o.method.lower()]["operationId"] == o.operation_id
    # the review pages are HTML for people, not part of the JSON API
    assert any(isinstance(r, Mount) and r.path == "/review" for r in app.routes)
    assert not any(path.startswith("/review") for path in document["paths"])


def test_the_document_states_the_answers_the_code_gives() -> None:
    """Each operation declares the answers its declaration implies.

    401 with WWW-Authenticate behind every door, 400/413/415/422 with every body, 503 with
    Retry-After wherever the store is used, 422 wherever a query can be wrong.
    """
    document = openapi_document()
    for o in OPERATIONS:
        answers = document["paths"][o.path][o.method.lower()]["responses"]
        if o.door is not None:
            assert answers["401"]["headers"]["WWW-Authenticate"]["required"] is True, o
        else:
            assert "401" not in answers
            assert o.operation_id in ("health", "openapi")
        if o.body is not None:
            assert {"400", "413", "415", "422"} <= set(answers), o
        if o.store:
            assert answers["503"]["headers"]["Retry-After"]["required"] is True, o
        if any(p.location == "query" for p in o.params):
            assert "422" in answers, o
        # both doors locked: no loopback rule; only a service's own refusal (edits off)
        assert "403" not in answers or o.operation_id == "editRecord"
    assert "503" in document["paths"]["/healthz"]["get"]["responses"]
    schemas = document["components"]["schemas"]
    assert list(schemas["Report"]["properties"]) == list(REPORT_FIELDS)


def test_the_served_document_follows_the_doors() -> None:
    """Without tokens the operations need none and may answer 403 (Host, Origin)."""

    async def served(tokens: Tokens) -> dict[str, Any]:
        app = new_app(tokens)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            document: dict[str, Any] = (await c.get("/openapi.json")).json()
            return document

    locked = asyncio.run(served(LOCKED))
    assert locked == openapi_document()
    open_ = asyncio.run(served(Tokens()))
    for o in OPERATIONS:
        doc = open_["paths"][o.path][o.method.lower()]
        assert doc["security"] == [], o
        assert "401" not in doc["responses"], o
        assert "403" in doc["responses"], o
    half = asyncio.run(served(Tokens(review=REVIEW_TOKEN)))
    reporting = half["paths"]["/v1/reports"]["post"]
    assert reporting["security"] == []
    assert "401" not in reporting["responses"]
    listing = half["paths"]["/v1/records"]["get"]
    assert listing["security"] == [{"review": []}]
    assert "401" in listing["responses"]


def allows(schema: dict[str, Any], value: Any) -> bool:
    """Whether the document's ``schema`` (its $refs resolved in the document) allows ``value``.

    The validator is Schemathesis' own: its patterns are read as ECMA-262 reads them.
    """
    document = openapi_document()
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})
    return bool(validator.is_valid(value))


def parameter_schema(operation_id: str, name: str) -> dict[str, Any]:
    o = operation(operation_id)
    for parameter in openapi_document()["paths"][o.path][o.method.lower()]["parameters"]:
        if parameter["name"] == name:
            schema: dict[str, Any] = parameter["schema"]
            return schema
    raise KeyError(name)


def body_schema(operation_id: str) -> dict[str, Any]:
    o = operation(operation_id)
    document = openapi_document()["paths"][o.path][o.method.lower()]
    schema: dict[str, Any] = document["requestBody"]["content"]["application/json"]["schema"]
    return schema


def as_wire(schema: dict[str, Any], text: Any) -> Any:
    """A parameter's text as the value its schema describes (integers are written in digits)."""
    if schema.get("type") == "integer" and isinstance(text, str) and text.isdigit():
        return int(text)
    return text


ABSENT = object()


def request(
    operation_id: str,
    *,
    path: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    body: Any = ABSENT,
) -> httpx.Response:
    """One request to a new app, with the review token."""
    o = operation(operation_id)
    url = o.path
    for name, value in (path or {}).items():
        url = url.replace(f"{{{name}}}", quote(value, safe=""))
    content = None if body is ABSENT else json.dumps(body).encode()
    sent = {**REVIEW, **(headers or {})}
    if content is not None:
        sent["Content-Type"] = "application/json"

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=new_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://errors") as client:
            return await client.request(o.method, url, params=query, headers=sent, content=content)

    return asyncio.run(send())


def judged(
    operation_id: str,
    *,
    path: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    body: Any = ABSENT,
) -> tuple[bool, httpx.Response]:
    """Whether the document allows the request's inputs, and the app's answer to it."""
    allowed = True
    for name, value in {**(path or {}), **(query or {}), **(headers or {})}.items():
        schema = parameter_schema(operation_id, name)
        allowed &= allows(schema, as_wire(schema, value))
    if body is not ABSENT:
        allowed &= allows(body_schema(operation_id), body)
    return allowed, request(operation_id, path=path, query=query, headers=headers, body=body)


REPORT = {"kind": "stock.decrement", "action": "review", "source": "warehouse"}
RID = {"id": "no-such-record"}

FORBIDDEN: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("discardRecord", {"path": RID, "body": None}, 422, "body", "must be a JSON object, got null"),
    ("resolveRecord", {"path": RID, "body": {"actor": " \t"}}, 422, "actor", "must not be empty"),
    ("retryRecord", {"path": RID, "body": {"note": "n" * 10_001}}, 422, "note", "limit of 10000"),
    ("retryRecord", {"path": RID, "body": {"note": "a\x00b"}}, 422, "note", "NUL"),
    ("reportBatch", {"body": {"reports": [{"id": "", "report": REPORT}]}}, 422,
     "reports[0].id", "must not be empty"),
    ("reportBatch", {"body": {"reports": [{"id": "k\x00", "report": REPORT}]}}, 422,
     "reports[0].id", "NUL"),
    ("reportBatch", {"body": {"reports": [{"report": {**REPORT, "kind": "ok\n"}}]}}, 422,
     "reports[0].kind", "letters, digits"),
    ("report", {"body": {**REPORT, "kind": "stock.decrement\n"}}, 422, "kind", "letters, digits"),
    ("report", {"body": {**REPORT, "payload": {"sku": "A\x00"}}}, 422, "payload.sku", "NUL"),
    ("report", {"body": {**REPORT, "payload": None}}, 422, "payload", "object or array"),
    ("report", {"headers": {"Idempotency-Key": "   "}, "body": REPORT}, 422, "idempotency-key",
     "1 to 200 characters"),
    ("bulkAction", {"body": {"action": "resolve", "ids": [None]}}, 422, "ids[0]",
     "must be a record id"),
    ("bulkAction", {"body": {"action": "resolve", "ids": ["a\x00"]}}, 422, "ids[0]", "NUL"),
    ("bulkAction", {"body": {"action": None, "ids": ["a"]}}, 422, "action", "got null"),
    ("listRecords", {"query": {"limit": ""}}, 422, "limit", "from 1 to 500"),
    ("listRecords", {"query": {"since": "2023-02-29"}}, 422, "since", "ISO 8601"),
    ("listRecords", {"query": {"until": "1e5"}}, 422, "until", "epoch seconds"),
    ("listRecords", {"query": {"since": "2023-11-14T25:00"}}, 422, "since", "ISO 8601"),
    ("listRecords", {"query": {"status": ["resolved;discarded"]}}, 422, "status",
     "unknown status 'resolved;discarded'"),
    ("listRecords", {"query": {"q": "a\x00"}}, 422, "q", "NUL"),
    ("putHandler", {"path": {"kind": "stock decrement"}, "body": {"url": "http://127.0.0.1/"}},
     422, "kind", "letters, digits"),
    ("putHandler", {"path": {"kind": "k"}, "body": {"url": "http://10.0.0.7/x"}}, 422, "url",
     "not one of the callback hosts allowed at start"),
    ("putHandler", {"path": {"kind": "k"}, "body": {"url": "http://127.0.0.1:65536/x"}}, 422,
     "url", "URL"),
    ("putHandler", {"path": {"kind": "k"}, "body": {"url": "http://user@127.0.0.1/x"}}, 422,
     "url", "user name"),
    ("getRecord", {"path": {"id": "x" * 201}}, 404, "id", "no error record"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("operation_id", "inputs", "status", "field", "words"),
    FORBIDDEN,
    ids=[f"{case[0]}-{case[3]}-{n}" for n, case in enumerate(FORBIDDEN)],
)
def test_what_the_document_forbids_is_refused(
    operation_id: str, inputs: dict[str, Any], status: int, field: str, words: str
) -> None:
    """Hand-picked requests the document's schemas forbid get the refusal naming the field."""
    allowed, response = judged(operation_id, **inputs)
    assert not allowed
    assert response.status_code == status, response.text
    assert response.json()["field"] == field, response.text
    assert words in response.json()["error"], response.text


ALLOWED: list[tuple[str, dict[str, Any], int]] = [
    ("reportBatch", {"body": {"reports": [{"id": None, "report": REPORT}]}}, 200),
    ("report", {"body": {**REPORT, "source": "ware\x00house", "error_type": None}}, 201),
    ("report", {"headers": {"Idempotency-Key": "key-1"}, "body": {**REPORT, "payload": []}}, 201),
    ("resolveRecord", {"path": RID}, 404),
    ("resolveRecord", {"path": RID, "body": {"actor": None, "note": None}}, 404),
    ("listRecords", {"query": {"status": [" resolved , ,discarded", ""]}}, 200),
    ("listRecords", {"query": {"since": "2024-02-29T12:00:00.5+05:30", "until": ""}}, 200),
    ("listRecords", {"query": {"since": "-1.5", "until": "2000-02-29 00:00Z", "limit": "500"}},
     200),
    ("listRecords", {"query": {"kind": "  ", "q": "é", "offset": "1000000000"}}, 200),
    ("putHandler", {"path": {"kind": "k:1"}, "body": {"url": "HTTP://LocalHost.:65535/a?b#c"}},
     200),
    ("putHandler", {"path": {"kind": "k"}, "body": {"url": "https://[::1]"}}, 200),
    ("bulkAction", {"body": {"action": "discard", "ids": [" ", "é" * 200]}}, 200),
    ("listGroups", {"query": {"order": "largest", "status": [" all", "", "resolved ,"]}}, 200),
    ("retryGroup", {"path": {"fingerprint": "x" * 128}, "body": {"dry_run": None}}, 404),
]  # fmt: skip


@pytest.mark.parametrize(
    ("operation_id", "inputs", "status"),
    ALLOWED,
    ids=[f"{case[0]}-{n}" for n, case in enumerate(ALLOWED)],
)
def test_what_the_document_allows_is_accepted(
    operation_id: str, inputs: dict[str, Any], status: int
) -> None:
    """Hand-picked requests at the edges of what the document allows are taken as they are."""
    allowed, response = judged(operation_id, **inputs)
    assert allowed
    assert response.status_code == status, response.text


# -- the patterns: what the document says is what the code reads ---------------------------------


def field_of(operation_id: str, name: str) -> Field:
    o = operation(operation_id)
    for parameter in o.params:
        if parameter.name == name:
            return parameter.field
    assert o.body is not None
    return next(f for f in o.body.fields if f.name == name)


def pattern_of(field: Field) -> re.Pattern[str]:
    assert field.effective_pattern is not None
    return _regex(field.effective_pattern)


def test_the_white_space_of_the_patterns_is_what_strip_removes() -> None:
    """A one-character actor is blank by its pattern exactly when ``str.isspace`` says so."""
    pattern = pattern_of(field_of("bulkAction", "actor"))
    for code in range(0x110000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF or char == "\x00":
            continue
        assert (pattern.search(char) is None) == char.isspace(), hex(code)


def parsed(field: Field, text: str) -> Any:
    return field.check_text(text, field.name)


@given(st.data())
@settings(max_examples=300, deadline=None, database=None)
def test_every_time_the_pattern_allows_is_read(data: st.DataObject) -> None:
    """Epoch seconds and ISO 8601 times the pattern allows all parse, to a finite time."""
    field = field_of("listRecords", "since")
    text = data.draw(st.from_regex(pattern_of(field)))
    value = parsed(field, text)
    assert value is None if not text.strip() else isinstance(value, float)


@given(st.data())
@settings(max_examples=300, deadline=None, database=None)
def test_the_status_pattern_and_the_status_parser_agree(data: st.DataObject) -> None:
    """A status list matches the pattern exactly when every item in it is a status."""
    status = field_of("listRecords", "status")
    assert status.items is not None
    pattern = pattern_of(status.items)
    text = data.draw(
        st.from_regex(pattern)
        | st.lists(st.sampled_from([*(s.value for s in Status), "", " ", "open", "x"])).map(
            ",".join
        )
        | st.text(max_size=30)
    )
    known = {s.value for s in Status}
    readable = "\x00" not in text and all(p.strip() in known | {""} for p in text.split(","))
    assert (pattern.search(text) is not None) == readable


@given(st.data())
@settings(max_examples=100, deadline=None, database=None)
def test_every_callback_url_the_pattern_allows_is_registered(data: st.DataObject) -> None:
    """A URL the handler body's pattern allows passes the registry's own rules too."""
    url = data.draw(
        st.from_regex(pattern_of(field_of("putHandler", "url"))).filter(lambda u: len(u) <= 2000)
    )
    handlers = Handlers()
    handlers.offer_url("stock.decrement", url)
    assert handlers.urls() == {"stock.decrement": url}


# -- when the store cannot be reached -------------------------------------------------------------


class DownStore:
    """A store whose database cannot be reached: every call raises StoreUnavailable."""

    writers = 1

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("connection refused", retry_after=2.5)

        return down


EXAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "report": {"body": VALID},
    "reportBatch": {"body": {"reports": [{"id": "r-1", "report": VALID}]}},
    "listRecords": {"query": {"status": "needs_review", "since": "2026-11-01", "limit": "5"}},
    "bulkAction": {"body": {"action": "resolve", "ids": ["r-1"]}},
    "getRecord": {"path": RID},
    "resolveRecord": {"path": RID, "body": {"note": "checked"}},
    "retryRecord": {"path": RID},
    "discardRecord": {"path": RID, "body": {}},
    "listHandlers": {},
    "putHandler": {"path": {"kind": "stock.decrement"}, "body": {"url": "http://127.0.0.1:9/x"}},
    "health": {},
    "openapi": {},
    "listGroups": {"query": {"status": "all", "order": "largest", "limit": "5"}},
    "getGroup": {"path": {"fingerprint": "v1-0000000000000000"}},
    "retryGroup": {"path": {"fingerprint": "v1-0000000000000000"}, "body": {"dry_run": True}},
    "resolveGroup": {"path": {"fingerprint": "v1-0000000000000000"}, "body": {"note": "ok"}},
    "discardGroup": {"path": {"fingerprint": "v1-0000000000000000"}},
    "editRecord": {"path": RID, "body": {"payload": {"qty": 2}, "note": "fixed"}},
}


@pytest.mark.parametrize("store_down", [False, True], ids=["store-up", "store-down"])
def test_every_operation_answers_as_its_document_says(store_down: bool) -> None:
    """A valid request to each operation gets a declared status, headers and body.

    With the store down, every operation declared to use it answers 503 with Retry-After.
    """
    document = openapi_document()
    app = new_app(store=DownStore() if store_down else None)

    async def answers() -> list[tuple[Operation, httpx.Response]]:
        transport = httpx.ASGITransport(app=app)
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://errors") as client:
            for o in OPERATIONS:
                inputs = EXAMPLE_INPUTS[o.operation_id]
                url = o.path
                for name, value in inputs.get("path", {}).items():
                    url = url.replace(f"{{{name}}}", value)
                body = inputs.get("body")
                response = await client.request(
                    o.method,
                    url,
                    params=inputs.get("query"),
                    headers=REVIEW,
                    json=body,
                )
                out.append((o, response))
        return out

    assert set(EXAMPLE_INPUTS) == {o.operation_id for o in OPERATIONS}
    for o, response in asyncio.run(answers()):
        declared = document["paths"][o.path][o.method.lower()]["responses"]
        answer = declared.get(str(response.status_code))
        assert answer is not None, (o.operation_id, response.status_code, response.text)
        for name, header in answer.get("headers", {}).items():
            assert not header["required"] or name in response.headers, (o, name)
        schema = answer["content"]["application/json"]["schema"]
        assert allows(schema, response.json()), (o.operation_id, response.text)
        if store_down and o.store:
            assert response.status_code == 503, (o.operation_id, response.text)
            assert response.json()["field"] == "store"
            assert response.headers["Retry-After"] == "3"
        elif store_down and o.operation_id == "health":
            assert response.status_code == 503
            assert response.json()["ok"] is False
            assert response.headers["Retry-After"] == "3"
        else:
            assert response.status_code < 300 or response.status_code == 404, response.text
