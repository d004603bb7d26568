"""``POST /v1/reports`` is answered before the router (the report door): the same answers.

Each request goes to two apps made alike by ``create_app``: one as built (the door answers),
one with the door taken out (the route answers). Their answers must be the same, byte for
byte (the new record's id aside), for good reports, every refusal, a store away and a
failing store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import ErrorRecord, Report
from failsafe.errors.service import create_app
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import Query, StoreUnavailable
from failsafe.errors.worker import Handlers
from failsafe.testing import FakeClock

TOKEN = "report-secret"
REPORT = {"kind": "stock.decrement", "action": "retry", "source": "warehouse", "payload": {"n": 1}}
Headers = list[tuple[bytes, bytes]]


class FailingDesk(ErrorDesk):
    """A desk whose every store call fails with ``error``."""

    error: Exception = RuntimeError("the disk is on fire")

    def report_each(
        self, reports: Sequence[tuple[Report, str, str | None]]
    ) -> list[tuple[ErrorRecord, bool] | BaseException]:
        raise self.error


def _app(tmp: Path, desk_type: type[ErrorDesk] = ErrorDesk, *, door: bool, **options: Any) -> Any:
    tmp.mkdir()
    store = SQLiteStore(tmp / "errors.db")
    desk = desk_type(store, clock=FakeClock(wall_start=1_700_000_000.0))
    app = create_app(
        desk, tokens=Tokens(report=TOKEN, review="review"), handlers=Handlers(), **options
    )
    if not door:
        app.user_middleware = [
            m for m in app.user_middleware if getattr(m.cls, "__name__", "") != "report_door"
        ]
        app.middleware_stack = None
    return app


async def _call(
    app: Any,
    headers: Headers,
    chunks: Sequence[bytes],
    *,
    method: str = "POST",
    path: str = "/v1/reports",
    root_path: str = "",
) -> tuple[int, Headers, bytes]:
    """Drive ``app`` over ASGI: the status, headers and body it sends."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "server": ("127.0.0.1", 8090),
        "client": ("127.0.0.1", 5555),
        "headers": [(b"host", b"127.0.0.1:8090"), *headers],
    }
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks or [b""])
    ]
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], list(message["headers"])
        else:
            answer["body"] += message.get("body", b"")

    # the server-error middleware answers, then raises again
    with contextlib.suppress(Exception):
        await app(scope, receive, send)
    return answer["status"], answer["headers"], answer["body"]


def _no_ids(body: bytes) -> bytes:
    """The body without what differs between two stores: the record's id, the jittered due time."""
    body = re.sub(rb'"id":"[0-9a-f-]+"', b'"id":"ID"', body)
    return re.sub(rb'"next_attempt_at":[0-9.e+-]+', b'"next_attempt_at":0', body)


JSON = (b"content-type", b"application/json")
AUTH = (b"authorization", f"Bearer {TOKEN}".encode())
KEY = (b"idempotency-key", b"order-1")

REQUESTS: dict[str, tuple[Headers, list[bytes]]] = {
    "new": ([JSON, AUTH, KEY], [json.dumps(REPORT).encode()]),
    "in two chunks": (
        [JSON, AUTH],
        [b'{"kind":"stock.decrement","action":"retry",', b'"source":"w"}'],
    ),
    "review token": ([JSON, (b"authorization", b"Bearer review")], [json.dumps(REPORT).encode()]),
    "no token": ([JSON], [json.dumps(REPORT).encode()]),
    "wrong token": ([JSON, (b"authorization", b"Bearer nope")], [json.dumps(REPORT).encode()]),
    "empty token": ([JSON, (b"authorization", b"")], [json.dumps(REPORT).encode()]),
    "no content type": ([AUTH], [json.dumps(REPORT).encode()]),
    "text/plain": ([(b"content-type", b"text/plain"), AUTH], [json.dumps(REPORT).encode()]),
    "latin-1 charset": (
        [(b"content-type", b"application/json; charset=latin-1"), AUTH],
        [json.dumps(REPORT).encode()],
    ),
    "malformed": ([JSON, AUTH], [b'{"kind": ']),
    "empty": ([JSON, AUTH], [b""]),
    "not UTF-8": ([JSON, AUTH], [b'{"kind": "\xff"}']),
    "an array": ([JSON, AUTH], [b"[1, 2]"]),
    "unknown field": ([JSON, AUTH], [json.dumps({**REPORT, "colour": "red"}).encode()]),
    "bad kind": ([JSON, AUTH], [json.dumps({**REPORT, "kind": "Stock Decrement"}).encode()]),
    "blank key": ([JSON, AUTH, (b"idempotency-key", b"   ")], [json.dumps(REPORT).encode()]),
    "key too long": ([JSON, AUTH, (b"idempotency-key", b"k" * 201)], [json.dumps(REPORT).encode()]),
    "two content types, the first counts": (
        [(b"content-type", b"text/plain"), JSON, AUTH],
        [json.dumps(REPORT).encode()],
    ),
    "declared too big": ([JSON, AUTH, (b"content-length", b"5000")], [b"{}"]),
    "bad length": ([JSON, AUTH, (b"content-length", b"12abc")], [b"{}"]),
    "too big, undeclared": ([JSON, AUTH], [b'{"payload": "', b"x" * 3000, b'"}']),
}


@pytest.fixture
def apps(tmp_path: Path) -> tuple[Any, Any]:
    return (
        _app(tmp_path / "door", door=True, max_body_bytes=2048),
        _app(tmp_path / "route", door=False, max_body_bytes=2048),
    )


@pytest.mark.parametrize("name", list(REQUESTS))
def test_the_door_answers_as_the_route(apps: tuple[Any, Any], name: str) -> None:
    headers, chunks = REQUESTS[name]

    async def both() -> list[tuple[int, Headers, bytes]]:
        answers = []
        for app in apps:
            # twice: the second of a report with a key is a redelivery (200)
            first = await _call(app, headers, chunks)
            second = await _call(app, headers, chunks)
            for status, sent, body in (first, second):
                assert (b"content-length", str(len(body)).encode()) in sent
                # the length differs with the due time's digits: the rest must not
                sent = [h for h in sent if h[0] != b"content-length"]
                answers.append((status, sent, _no_ids(body)))
        return answers

    door_first, door_again, route_first, route_again = asyncio.run(both())
    assert door_first == route_first
    assert door_again == route_again


def test_the_door_answers_without_the_route(tmp_path: Path) -> None:
    """What the comparison above stands on: the door answers, 201 then 200, by itself."""
    app = _app(tmp_path / "a", door=True)
    app.router.routes = [
        r
        for r in app.router.routes
        if getattr(r, "methods", None) != {"POST"} or getattr(r, "path", None) != "/v1/reports"
    ]
    headers, chunks = REQUESTS["new"]

    async def main() -> list[tuple[int, bool]]:
        answers = [await _call(app, headers, chunks) for _ in range(2)]
        return [(status, json.loads(body)["created"]) for status, _, body in answers]

    assert asyncio.run(main()) == [(201, True), (200, False)]


@pytest.mark.parametrize(
    ("error", "status"),
    [(StoreUnavailable("the database is down", retry_after=2.0), 503), (RuntimeError("x"), 500)],
)
def test_a_failing_store_answers_alike(tmp_path: Path, error: Exception, status: int) -> None:
    FailingDesk.error = error
    headers, chunks = REQUESTS["new"]

    async def both() -> list[tuple[int, Headers, bytes]]:
        return [
            await _call(_app(tmp_path / "door", FailingDesk, door=True), headers, chunks),
            await _call(_app(tmp_path / "route", FailingDesk, door=False), headers, chunks),
        ]

    door, route = asyncio.run(both())
    assert door == route
    assert door[0] == status
    if status == 503:
        assert (b"retry-after", b"2") in door[1]
        assert b"down" not in door[2]  # the details stay in the log


def test_other_requests_pass_the_door(tmp_path: Path) -> None:
    app = _app(tmp_path / "a", door=True)
    review = [(b"authorization", b"Bearer review")]

    async def main() -> list[int]:
        await _call(app, [JSON, AUTH], [json.dumps(REPORT).encode()])
        listed = await _call(app, review, [], method="GET", path="/v1/records")
        get = await _call(app, review, [], method="GET")
        batch = await _call(app, [JSON, AUTH], [b'{"reports": []}'], path="/v1/reports/batch")
        slash = await _call(app, [JSON, AUTH], [json.dumps(REPORT).encode()], path="/v1/reports/")
        put = await _call(app, [JSON, AUTH], [b"{}"], method="PUT")
        assert json.loads(listed[2])["total"] == 1
        return [listed[0], get[0], batch[0], slash[0], put[0]]

    listed, get, batch, slash, put = asyncio.run(main())
    assert listed == 200
    assert get == 405
    assert batch in (200, 422)  # the batch route's own answer, not the door's
    assert slash in (307, 404)  # the router's answer to a path it does not have
    assert put == 405


def test_the_door_works_where_the_app_is_mounted(tmp_path: Path) -> None:
    app = _app(tmp_path / "a", door=True)
    parent = Starlette(routes=[Mount("/errors", app=app)])

    async def main() -> tuple[int, Headers, bytes]:
        return await _call(
            parent, [JSON, AUTH, KEY], [json.dumps(REPORT).encode()], path="/errors/v1/reports"
        )

    status, _, body = asyncio.run(main())
    assert status == 201
    assert json.loads(body)["record"]["kind"] == "stock.decrement"


def test_an_open_door_still_answers_only_loopback(tmp_path: Path) -> None:
    tmp_path.joinpath("a").mkdir()
    store = SQLiteStore(tmp_path / "a" / "errors.db")
    app = create_app(ErrorDesk(store), tokens=Tokens(report=None, review=None), handlers=Handlers())

    async def main(host: bytes, *more: tuple[bytes, bytes]) -> int:
        answer: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": json.dumps(REPORT).encode()}

        async def send(message: MutableMapping[str, Any]) -> None:
            answer.setdefault("status", message.get("status"))

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/reports",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", host), JSON, *more],
        }
        await app(scope, receive, send)
        return int(answer["status"])

    assert asyncio.run(main(b"attacker.example")) == 403
    assert asyncio.run(main(b"127.0.0.1:8090", (b"origin", b"http://evil.example"))) == 403
    assert store.find(Query()).total == 0
    assert asyncio.run(main(b"127.0.0.1:8090")) == 201
    assert store.find(Query()).total == 1
