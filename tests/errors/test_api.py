"""The service's JSON API, driven in-process over ASGI on a SQLite file and a fake clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from failsafe.backoff import Backoff
from failsafe.errors.api import openapi_document
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk, RetrySchedule
from failsafe.errors.record import REPORT_FIELDS, ErrorRecord
from failsafe.errors.redact import REDACTED
from failsafe.errors.service import create_app
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import Query
from failsafe.errors.worker import Handlers, RetryWorker
from failsafe.exceptions import ConfigurationError
from failsafe.testing import FakeClock

pytestmark = pytest.mark.anyio

REPORT_TOKEN = "report-secret"
REVIEW_TOKEN = "review-secret"
REVIEW = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
REPORTER = {"Authorization": f"Bearer {REPORT_TOKEN}"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Service:
    """One app on a SQLite file, its desk and fake clock, and a client holding the review token."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.clock = FakeClock(wall_start=1_700_000_000.0)
        self.store = SQLiteStore(tmp_path / "errors.db")
        self.desk = ErrorDesk(self.store, clock=self.clock)
        self.handlers = Handlers()
        self.app = create_app(
            self.desk,
            tokens=Tokens(report=REPORT_TOKEN, review=REVIEW_TOKEN),
            handlers=self.handlers,
            **options,
        )
        self.client = self.client_with(REVIEW)

    def client_with(self, headers: dict[str, str]) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://errors", headers=headers
        )

    def total(self) -> int:
        return self.store.find(Query()).total

    async def report(self, **fields: Any) -> httpx.Response:
        body = {"kind": "stock.decrement", "action": "retry", "source": "warehouse", **fields}
        key = body.pop("key", None)
        headers = {"Idempotency-Key": key} if key else {}
        return await self.client.post("/v1/reports", json=body, headers=headers)

    async def record(self, **fields: Any) -> dict[str, Any]:
        response = await self.report(**fields)
        assert response.status_code == 201, response.text
        record: dict[str, Any] = response.json()["record"]
        return record


@pytest.fixture
async def service(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Service]:
    svc = Service(tmp_path)
    async with svc.client:
        yield svc
    svc.store.close()


def assert_error(response: httpx.Response, status: int, field: str, *words: str) -> None:
    """The answer has the status, names the field, and its message has every word."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field, body
    for word in words:
        assert word in body["error"], body


# -- reporting ---------------------------------------------------------------------------------


async def test_a_new_report_answers_201_and_is_stored(service: Service) -> None:
    """A first report creates a record (201, created) that the store holds as returned."""
    response = await service.report(payload={"sku": "A-1", "amount": 2}, error_type="DBError")
    assert response.status_code == 201
    body = response.json()
    assert body["created"] is True
    record = body["record"]
    assert (record["kind"], record["status"], record["count"]) == (
        "stock.decrement",
        "pending_retry",
        1,
    )
    assert record["history"][0]["actor"] == "warehouse"
    assert service.store.get(record["id"]).to_json() == record


async def test_a_batch_is_stored_in_one_go_and_redeliveries_count_once(service: Service) -> None:
    """POST /v1/reports/batch stores every report; the same ids again change nothing."""
    batch = {
        "reports": [
            {
                "id": f"r-{n}",
                "report": {
                    "kind": "stock.decrement",
                    "action": "retry",
                    "source": "warehouse",
                    "payload": {"n": n},
                },
            }
            for n in range(20)
        ]
    }
    first = await service.client.post("/v1/reports/batch", json=batch)
    assert first.status_code == 200, first.text
    results = first.json()["results"]
    assert [r["created"] for r in results] == [True] * 20
    again = await service.client.post("/v1/reports/batch", json=batch)
    assert [r["record_id"] for r in again.json()["results"]] == [r["record_id"] for r in results]
    assert [r["created"] for r in again.json()["results"]] == [False] * 20
    assert service.total() == 20
    assert all(r.count == 1 for r in service.store.find(Query(limit=50)).records)


async def test_a_batch_with_one_bad_report_is_refused_whole(service: Service) -> None:
    """One invalid report in a batch: 422 naming it, and nothing of the batch is stored."""
    good = {"kind": "stock.decrement", "action": "retry", "source": "warehouse"}
    response = await service.client.post(
        "/v1/reports/batch",
        json={"reports": [{"report": good}, {"report": {**good, "action": "explode"}}]},
    )
    assert_error(response, 422, "reports[1].action", "reports[1]", "retry")
    assert service.total() == 0
    empty = await service.client.post("/v1/reports/batch", json={"reports": []})
    assert_error(empty, 422, "reports", "1 to 500")


async def test_a_repeated_report_joins_the_open_record_with_200(service: Service) -> None:
    """The same failure reported again is 200, not created, and counts 2 on one record."""
    first = await service.record(payload={"sku": "A-1"})
    again = await service.report(payload={"sku": "A-1"})
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["record"]["id"] == first["id"]
    assert again.json()["record"]["count"] == 2
    assert service.total() == 1


async def test_a_redelivery_with_the_same_idempotency_key_counts_once(service: Service) -> None:
    """A report sent twice with one Idempotency-Key is 200 the second time and counts once."""
    first = await service.report(payload={"sku": "A-1"}, key="report-1")
    again = await service.report(payload={"sku": "A-1"}, key="report-1")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == {"record": first.json()["record"], "created": False}
    assert service.store.get(first.json()["record"]["id"]).count == 1


async def test_secrets_are_redacted_in_answers_listings_and_the_store(service: Service) -> None:
    """Secrets in the payload and message never come back from the API nor reach the store."""
    response = await service.report(
        action="review",
        payload={"headers": {"Authorization": "Bearer s3cr3t"}, "card": "4111 1111 1111 1111"},
        error_message="login failed with password=hunter2",
    )
    record = response.json()["record"]
    listed = (await service.client.get("/v1/records")).text
    fetched = (await service.client.get(f"/v1/records/{record['id']}")).text
    stored = json.dumps(service.store.get(record["id"]).to_json())
    for text in (response.text, listed, fetched, stored):
        assert "s3cr3t" not in text
        assert "hunter2" not in text
        assert "4111" not in text
    assert record["payload"]["headers"]["Authorization"] == REDACTED


async def test_unpaired_surrogates_and_nul_in_a_report_are_kept_replaced(service: Service) -> None:
    """A report whose text has a lone surrogate or NUL is stored (replaced), never a 500."""
    body = (
        b'{"kind": "a", "action": "review", "source": "s",'
        b' "error_message": "\\udcff-\\u0000", "payload": {"f": "\\ud800"}}'
    )
    response = await service.client.post("/v1/reports", content=body, headers=JSON)
    assert response.status_code == 201
    record = service.store.get(response.json()["record"]["id"])
    assert record.error_message == "\ufffd-\ufffd"
    assert record.payload == {"f": "\ufffd"}


# -- listing and reading -----------------------------------------------------------------------


@pytest.fixture
async def listing(service: Service) -> dict[str, str]:
    """Four records, 100 s apart: two stock retries, an order review, a resolved payment."""
    ids = {}
    for name, fields in (
        ("stock1", {"payload": {"sku": "A"}}),
        ("stock2", {"payload": {"sku": "B"}, "error_message": "Deadlock detected"}),
        ("order", {"kind": "order.not_found", "action": "review", "source": "orders"}),
        ("payment", {"kind": "payment.failed", "action": "review", "source": "payments"}),
    ):
        ids[name] = (await service.record(**fields))["id"]
        service.clock.advance(100)
    service.desk.resolve(ids["payment"], actor="ann")
    return ids


async def listed(service: Service, params: str) -> tuple[list[str], int]:
    response = await service.client.get(f"/v1/records?{params}")
    assert response.status_code == 200, response.text
    body = response.json()
    return [r["id"] for r in body["records"]], body["total"]


async def test_next_walks_the_pages_by_keyset(service: Service, listing: dict[str, str]) -> None:
    """Each answer's ``next`` is the ``after`` of the following page; the last has none."""
    seen: list[str] = []
    after = ""
    while True:
        response = await service.client.get("/v1/records", params={"limit": "3", "after": after})
        body = response.json()
        assert body["total"] == 4
        seen += [r["id"] for r in body["records"]]
        if body["next"] is None:
            break
        after = body["next"]
    assert seen == [listing["payment"], listing["order"], listing["stock2"], listing["stock1"]]
    refused = await service.client.get("/v1/records", params={"after": "yesterday"})
    assert refused.status_code == 422
    assert refused.json()["field"] == "after"


async def test_listing_filters_by_status(service: Service, listing: dict[str, str]) -> None:
    """Status filters take a comma-separated list, or the parameter repeated."""
    ids, total = await listed(service, "status=needs_review,resolved")
    assert (ids, total) == ([listing["payment"], listing["order"]], 2)
    ids, _ = await listed(service, "status=pending_retry&status=resolved")
    assert set(ids) == {listing["stock1"], listing["stock2"], listing["payment"]}


async def test_listing_filters_by_kind_source_and_text(
    service: Service, listing: dict[str, str]
) -> None:
    """Kind and source match exactly; q finds text in the message or payload in any case."""
    assert (await listed(service, "kind=order.not_found"))[0] == [listing["order"]]
    assert (await listed(service, "source=payments"))[0] == [listing["payment"]]
    assert (await listed(service, "q=deadlock"))[0] == [listing["stock2"]]
    assert (await listed(service, "kind=stock.decrement&q=%22B%22"))[0] == [listing["stock2"]]


async def test_listing_filters_by_time_in_epoch_seconds_or_iso(
    service: Service, listing: dict[str, str]
) -> None:
    """Since is inclusive and until exclusive, in epoch seconds or ISO 8601 (UTC by default)."""
    start = 1_700_000_000
    ids, _ = await listed(service, f"since={start + 100}&until={start + 300}")
    assert ids == [listing["order"], listing["stock2"]]
    iso = "2023-11-14T22:15:00%2B00:00"  # start + 100 s is 22:15:00 UTC
    assert (await listed(service, f"since={iso}&until=2023-11-14T22:16:40"))[0] == [
        listing["stock2"]
    ]
    assert (await listed(service, "since=2023-11-14T22:18:20Z"))[0] == [listing["payment"]]


async def test_listing_pages_newest_first_with_the_total(
    service: Service, listing: dict[str, str]
) -> None:
    """Limit and offset page through the records newest first; total counts all matches."""
    response = await service.client.get("/v1/records?limit=3&offset=0")
    body = response.json()
    assert (body["total"], body["limit"], body["offset"]) == (4, 3, 0)
    assert body["total_exact"] is True
    first = [r["id"] for r in body["records"]]
    second, total = await listed(service, "limit=3&offset=3")
    assert first == [listing["payment"], listing["order"], listing["stock2"]]
    assert (second, total) == ([listing["stock1"]], 4)
    assert await listed(service, "offset=10") == ([], 4)


async def test_get_returns_one_record_or_404(service: Service) -> None:
    """A record comes back whole; an unknown id is 404 naming the id."""
    record = await service.record()
    response = await service.client.get(f"/v1/records/{record['id']}")
    assert response.json() == record
    missing = await service.client.get("/v1/records/no-such-id")
    assert_error(missing, 404, "id", "no error record with id 'no-such-id'")


# -- a person's actions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status"),
    [("resolve", "resolved"), ("retry", "pending_retry"), ("discard", "discarded")],
)
async def test_actions_move_the_record_with_the_note_and_actor_in_history(
    service: Service, action: str, status: str
) -> None:
    """Resolve, retry and discard move the record and record who did it and why."""
    record = await service.record(action="review")
    response = await service.client.post(
        f"/v1/records/{record['id']}/{action}", json={"note": "checked by hand", "actor": "ann"}
    )
    assert response.status_code == 200
    assert response.json()["status"] == status
    last = service.store.get(record["id"]).history[-1]
    assert (last.actor, last.action, last.note) == ("ann", status, "checked by hand")


async def test_an_action_without_a_body_is_done_by_the_reviewer(service: Service) -> None:
    """With no body, the actor is 'reviewer' and there is no note."""
    record = await service.record(action="review")
    response = await service.client.post(f"/v1/records/{record['id']}/resolve")
    assert response.status_code == 200
    last = response.json()["history"][-1]
    assert (last["actor"], last["note"]) == ("reviewer", None)


async def test_an_action_the_status_forbids_is_409(service: Service) -> None:
    """A resolved record cannot be retried: 409 naming both statuses, and nothing changes."""
    record = await service.record(action="review")
    await service.client.post(f"/v1/records/{record['id']}/resolve")
    response = await service.client.post(f"/v1/records/{record['id']}/retry")
    assert_error(
        response,
        409,
        "status",
        f"record {record['id']} is resolved; it cannot become pending_retry",
    )
    assert service.store.get(record["id"]).status.value == "resolved"


@pytest.mark.parametrize("action", ["resolve", "retry", "discard"])
async def test_an_action_on_an_unknown_record_is_404(service: Service, action: str) -> None:
    """Acting on an id no record has is 404 naming the id."""
    response = await service.client.post(f"/v1/records/ghost/{action}", json={"note": "x"})
    assert_error(response, 404, "id", "'ghost'")


async def test_bulk_changes_what_it_can_and_lists_the_refused(service: Service) -> None:
    """Bulk resolves each record on its own: open ones change, closed and unknown are refused."""
    one = (await service.record(action="review", source="a"))["id"]
    two = (await service.record(action="review", source="b"))["id"]
    done = (await service.record(action="review", source="c"))["id"]
    service.desk.discard(done, actor="ann")
    response = await service.client.post(
        "/v1/records/bulk",
        json={"action": "resolve", "ids": [one, two, done, "ghost", one], "note": "batch"},
    )
    assert response.status_code == 200
    body = response.json()
    assert [r["id"] for r in body["changed"]] == [one, two]
    assert body["refused"] == {
        done: f"record {done} is discarded; it cannot become resolved",
        "ghost": "no error record with id 'ghost'",
    }
    assert service.store.get(two).history[-1].note == "batch"


# -- handlers, health, the OpenAPI document ---------------------------------------------------


async def test_handlers_are_registered_with_the_review_token_and_listed(service: Service) -> None:
    """PUT registers a callback (an operator's right); GET lists it; the worker sees it."""
    url = "http://127.0.0.1:9000/warehouse/v1/retry/stock-decrement"
    response = await service.client.put("/v1/handlers/stock.decrement", json={"url": url})
    assert response.json() == {"kind": "stock.decrement", "url": url}
    listed = await service.client.get("/v1/handlers")
    assert listed.json() == {"handlers": {"stock.decrement": url}}
    assert service.handlers.get("stock.decrement") == url


async def test_a_reporter_cannot_redirect_retries(service: Service) -> None:
    """The report token every reporting service holds does not open PUT /v1/handlers."""
    url = "http://127.0.0.1:9000/retry"
    await service.client.put("/v1/handlers/stock.decrement", json={"url": url})
    async with service.client_with(REPORTER) as reporter:
        hijack = await reporter.put(
            "/v1/handlers/stock.decrement", json={"url": "http://127.0.0.1:6666/mine"}
        )
    assert_error(hijack, 401, "authorization", "wrong bearer token", "review door")
    assert service.handlers.get("stock.decrement") == url


async def test_a_kind_set_at_start_cannot_be_changed_over_http(service: Service) -> None:
    """An operator's --callback (or a handler in code) stays, even for the review token: 409."""
    operator = "http://127.0.0.1:8001/warehouse/v1/retry/stock-decrement"
    service.handlers.register_url("stock.decrement", operator)
    service.handlers.register("order.status", lambda record: None)
    for kind in ("stock.decrement", "order.status"):
        response = await service.client.put(
            f"/v1/handlers/{kind}", json={"url": "http://127.0.0.1:6666/mine"}
        )
        assert_error(response, 409, "kind", f"{kind!r}", "set when the service started")
    assert service.handlers.get("stock.decrement") == operator
    assert callable(service.handlers.get("order.status"))


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/retry",  # another machine
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://127.0.0.1.attacker.example/retry",  # a name made to look like loopback
        "http://LOCALHOST.evil/x",
    ],
)
async def test_a_callback_host_must_be_allowed_at_start(service: Service, url: str) -> None:
    """Callbacks over HTTP may point only at the hosts given at start (loopback by default)."""
    response = await service.client.put("/v1/handlers/stock.decrement", json={"url": url})
    assert_error(response, 422, "url", "not one of the callback hosts allowed at start")
    assert service.handlers.urls() == {}


async def test_loopback_callback_hosts_are_allowed_by_default(service: Service) -> None:
    for url in ("http://127.0.0.1:1/a", "http://[::1]:2/b", "http://LocalHost:3/c"):
        response = await service.client.put("/v1/handlers/k.one", json={"url": url})
        assert response.status_code == 200, response.text
        assert service.handlers.get("k.one") == url


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/v1/handlers/stock.decrement", {"url": "ftp://x/y"}, "url", ("http://",)),
        ("/v1/handlers/stock.decrement", {"url": "http:///nohost"}, "url", ("host",)),
        ("/v1/handlers/stock.decrement", {"url": 5}, "url", ("must be a string",)),
        ("/v1/handlers/stock.decrement", {}, "url", ("is required",)),
        ("/v1/handlers/stock.decrement", {"url": "http://a", "x": 1}, "x", ("unknown field",)),
        ("/v1/handlers/bad%20kind", {"url": "http://a/b"}, "kind", ("letters, digits",)),
    ],
)
async def test_a_bad_handler_is_refused_and_not_registered(
    service: Service, path: str, body: Any, field: str, words: tuple[str, ...]
) -> None:
    """A callback that is not an http(s) URL, or a bad kind, is 422 and registers nothing."""
    response = await service.client.put(path, json=body)
    assert_error(response, 422, field, *words)
    assert service.handlers.urls() == {}


async def test_healthz_needs_no_token_and_counts_records(service: Service) -> None:
    """The health check is open and counts records per status."""
    await service.record()
    async with service.client_with({}) as anonymous:
        response = await anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "counts": {
            "pending_retry": 1,
            "retrying": 0,
            "needs_review": 0,
            "resolved": 0,
            "discarded": 0,
        },
    }


async def test_healthz_is_503_naming_the_store_when_it_fails(service: Service) -> None:
    """A store that cannot answer makes /healthz 503 with the store's error, not a crash."""
    service.store.close()
    response = await service.client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["ok"] is False
    assert response.json()["error"].startswith("store: ")


def app_routes(app: Starlette) -> Iterator[tuple[str, str]]:
    for route in app.routes:
        if isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    yield route.path, method.lower()
        elif isinstance(route, Mount):
            yield route.path + "/", "get"


async def test_openapi_describes_every_route_of_the_app(service: Service) -> None:
    """Every JSON route and method of the app is in /openapi.json, with the shared schemas.

    The review pages (HTML for people, mounted at /review) are not part of the JSON API, and
    not in its document.
    """
    async with service.client_with({}) as anonymous:
        document = (await anonymous.get("/openapi.json")).json()
    assert document == openapi_document()
    assert document["openapi"].startswith("3.1")
    routes = set(app_routes(service.app))
    assert len(routes) >= 11
    for path, method in routes:
        if path == "/review/":
            assert path not in document["paths"]
            continue
        assert method in document["paths"].get(path, {}), (path, method)
    schemas = document["components"]["schemas"]
    assert {"Report", "ErrorRecord", "Page", "Error"} <= set(schemas)
    assert set(schemas["Report"]["properties"]) == set(REPORT_FIELDS)
    assert document["components"]["securitySchemes"]["review"]["scheme"] == "bearer"


async def test_openapi_record_schema_matches_what_the_api_returns(service: Service) -> None:
    """The ErrorRecord schema names exactly the fields a record has in answers."""
    record = await service.record()
    schema = openapi_document()["components"]["schemas"]["ErrorRecord"]
    assert set(schema["required"]) == set(record) == set(schema["properties"])


# -- tokens -------------------------------------------------------------------------------------

DOORS = [
    ("POST", "/v1/reports", "report"),
    ("PUT", "/v1/handlers/stock.decrement", "review"),
    ("GET", "/v1/records", "review"),
    ("GET", "/v1/records/some-id", "review"),
    ("POST", "/v1/records/some-id/resolve", "review"),
    ("POST", "/v1/records/some-id/retry", "review"),
    ("POST", "/v1/records/some-id/discard", "review"),
    ("POST", "/v1/records/bulk", "review"),
    ("GET", "/v1/handlers", "review"),
    ("GET", "/review/", "review"),
]
BODIES = {
    "/v1/reports": {"kind": "k", "action": "review", "source": "s"},
    "/v1/handlers/stock.decrement": {"url": "http://127.0.0.1:1/x"},
    "/v1/records/bulk": {"action": "resolve", "ids": ["x"]},
}


async def knock(service: Service, method: str, path: str, headers: dict[str, str]) -> int:
    """The answer's status; the review pages' redirect to their login form counts as 401."""
    async with service.client_with(headers) as client:
        response = await client.request(method, path, json=BODIES.get(path))
    if response.status_code == 401 and path.startswith("/v1"):
        assert response.json()["field"] == "authorization"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if response.status_code == 303 and path.startswith("/review"):
        assert "/review/login" in response.headers["location"]
        return 401
    return response.status_code


@pytest.mark.parametrize(("method", "path", "door"), DOORS)
async def test_every_door_refuses_a_missing_or_wrong_token(
    service: Service, method: str, path: str, door: str
) -> None:
    """No token, a wrong one, or the report token on a review door is 401, and nothing changes."""
    assert await knock(service, method, path, {}) == 401
    assert await knock(service, method, path, {"Authorization": "Bearer nope"}) == 401
    assert await knock(service, method, path, {"Authorization": REVIEW_TOKEN}) == 401
    if door == "review":
        assert await knock(service, method, path, REPORTER) == 401
    assert service.total() == 0
    assert service.handlers.urls() == {}


@pytest.mark.parametrize(("method", "path", "door"), DOORS)
async def test_the_right_token_opens_each_door(
    service: Service, method: str, path: str, door: str
) -> None:
    """The door's own token opens it, and the review token also opens the report door."""
    assert await knock(service, method, path, REVIEW) != 401
    if door == "report":
        assert await knock(service, method, path, REPORTER) != 401


async def test_the_missing_token_message_says_how_to_send_one(service: Service) -> None:
    """A 401 says whether the token was missing or wrong, and which door it was for."""
    async with service.client_with({}) as anonymous:
        missing = await anonymous.post("/v1/reports", json={})
    async with service.client_with({"Authorization": "Bearer nope"}) as wrong:
        wrong_answer = await wrong.get("/v1/records")
    assert_error(missing, 401, "authorization", "missing bearer token", "report door")
    assert_error(wrong_answer, 401, "authorization", "wrong bearer token", "review door")


# -- bad input ------------------------------------------------------------------------------------

VALID = {"kind": "stock.decrement", "action": "retry", "source": "warehouse"}

BAD_REPORTS = [
    # (id, body bytes, content type, status, field, words in the message)
    ("malformed", b'{"kind": "a",', JSON, 400, "body", ("malformed JSON", "line 1 column 14")),
    ("trailing", b'{"kind": "a"} x', JSON, 400, "body", ("Extra data", "char 14")),
    ("empty", b"", JSON, 400, "body", ("empty",)),
    ("not-utf8", b'{"kind": "\xff"}', JSON, 400, "body", ("not UTF-8", "byte 10")),
    ("nan", b'{"payload": {"x": NaN}}', JSON, 400, "body", ("NaN is not a JSON value",)),
    ("huge-float", b'{"payload": {"x": 1e999}}', JSON, 400, "body", ("out of range",)),
    ("huge-int", b'{"payload": [' + b"9" * 5000 + b"]}", JSON, 400, "body", ("digits",)),
    ("deep", b"[" * 5000 + b"]" * 5000, JSON, 400, "body", ("nests",)),
    ("deep-payload", json.dumps({**VALID, "payload": [[[]]]}).encode().replace(b"[]", b"[" * 70
     + b"]" * 70), JSON, 422, "body", ("deeper than 64 levels",)),
    ("array", b"[1, 2]", JSON, 422, "body", ("must be a JSON object",)),
    ("string", b'"hello"', JSON, 422, "body", ("must be a JSON object",)),
    ("null", b"null", JSON, 422, "body", ("must be a JSON object",)),
    ("missing-kind", json.dumps({"action": "retry", "source": "s"}).encode(), JSON, 422, "kind",
     ("is required",)),
    ("missing-source", json.dumps({"kind": "k", "action": "retry"}).encode(), JSON, 422, "source",
     ("is required",)),
    ("unknown-field", json.dumps({**VALID, "colour": "red"}).encode(), JSON, 422, "colour",
     ("unknown field",)),
    ("kind-type", json.dumps({**VALID, "kind": 5}).encode(), JSON, 422, "kind",
     ("must be a string, got int",)),
    ("kind-shape", json.dumps({**VALID, "kind": "has space"}).encode(), JSON, 422, "kind",
     ("letters, digits",)),
    ("action-value", json.dumps({**VALID, "action": "ignore"}).encode(), JSON, 422, "action",
     ("'retry' or 'review'",)),
    ("payload-type", json.dumps({**VALID, "payload": "text"}).encode(), JSON, 422, "payload",
     ("object or array",)),
    ("message-type", json.dumps({**VALID, "error_message": ["x"]}).encode(), JSON, 422,
     "error_message", ("must be a string",)),
    ("empty-source", json.dumps({**VALID, "source": "  "}).encode(), JSON, 422, "source",
     ("must not be empty",)),
    ("payload-too-big", json.dumps({**VALID, "payload": {"x": "y" * 70_000}}).encode(), JSON, 422,
     "payload", ("over the limit of 65536 bytes",)),
    ("text-plain", json.dumps(VALID).encode(), {"Content-Type": "text/plain"}, 415,
     "content-type", ("application/json", "text/plain")),
    ("form", b"kind=a", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "content-type", ("application/json",)),
    ("no-type", json.dumps(VALID).encode(), {}, 415, "content-type", ("no Content-Type",)),
    ("latin1", json.dumps(VALID).encode(), {"Content-Type": "application/json; charset=latin-1"},
     415, "content-type", ("UTF-8",)),
    ("body-too-big", json.dumps({**VALID, "traceback": "t" * 300_000}).encode(), JSON, 413,
     "body", ("body is 3000", "over the limit of 262144 bytes")),
    ("bad-length", json.dumps(VALID).encode(), {**JSON, "Content-Length": "ten"}, 400, "body",
     ("Content-Length",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "status", "field", "words"),
    [case[1:] for case in BAD_REPORTS],
    ids=[case[0] for case in BAD_REPORTS],
)
async def test_bad_reports_are_refused_naming_the_problem_and_store_nothing(
    service: Service,
    body: bytes,
    headers: dict[str, str],
    status: int,
    field: str,
    words: tuple[str, ...],
) -> None:
    """Each malformed report gets its 4xx naming the problem, and the store stays empty."""
    response = await service.client.post("/v1/reports", content=body, headers=headers)
    assert_error(response, status, field, *words)
    assert service.total() == 0


async def test_a_body_over_the_limit_without_a_length_is_cut_off(service: Service) -> None:
    """A chunked body (no Content-Length) is counted while read and refused past the limit."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"kind": "k", "action": "review", "source": "s", "traceback": "'
        for _ in range(100):
            sent += 1
            yield b"x" * 10_000
        yield b'"}'

    response = await service.client.post("/v1/reports", content=chunks(), headers=JSON)
    assert_error(response, 413, "body", "over the limit of 262144 bytes")
    assert "content-length" not in response.request.headers
    assert sent < 100  # the service stopped reading at the limit
    assert service.total() == 0


async def test_the_size_limits_are_configurable(tmp_path: Path, anyio_backend: str) -> None:
    """max_body_bytes and max_payload_bytes set the 413 and 422 limits."""
    svc = Service(tmp_path, max_body_bytes=300, max_payload_bytes=20)
    async with svc.client:
        big_body = await svc.client.post("/v1/reports", json={**VALID, "traceback": "t" * 300})
        big_payload = await svc.client.post("/v1/reports", json={**VALID, "payload": ["y" * 30]})
        fine = await svc.client.post("/v1/reports", json={**VALID, "payload": ["y"]})
    assert_error(big_body, 413, "body", "over the limit of 300 bytes")
    assert_error(big_payload, 422, "payload", "over the limit of 20 bytes")
    assert fine.status_code == 201


def test_size_limits_must_be_positive(tmp_path: Path) -> None:
    """A zero or non-integer size limit is a ConfigurationError naming the option."""
    desk = ErrorDesk(SQLiteStore(":memory:"))
    with pytest.raises(ConfigurationError, match="max_body_bytes"):
        create_app(desk, tokens=Tokens(), handlers=Handlers(), max_body_bytes=0)
    with pytest.raises(ConfigurationError, match="max_payload_bytes"):
        create_app(desk, tokens=Tokens(), handlers=Handlers(), max_payload_bytes=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "words"), [("x" * 201, ("1 to 200 characters",)), ("  ", ("got 2",))]
)
async def test_a_bad_idempotency_key_is_refused(
    service: Service, key: str, words: tuple[str, ...]
) -> None:
    """An empty or over-long Idempotency-Key is 422 naming the header, and nothing is stored."""
    response = await service.client.post(
        "/v1/reports", json=VALID, headers={"Idempotency-Key": key}
    )
    assert_error(response, 422, "idempotency-key", *words)
    assert service.total() == 0


BAD_QUERIES = [
    ("limit=0", "limit", "from 1 to 500"),
    ("limit=501", "limit", "from 1 to 500"),
    ("limit=ten", "limit", "'ten'"),
    ("limit=5_0", "limit", "'5_0'"),
    ("limit=-1", "limit", "'-1'"),
    ("offset=-5", "offset", "'-5'"),
    ("offset=99999999999", "offset", "from 0 to"),
    ("status=open", "status", "unknown status 'open'"),
    ("status=resolved,nope", "status", "'nope'"),
    ("since=yesterday", "since", "epoch seconds or an ISO 8601 time"),
    ("until=nan", "until", "finite"),
    ("since=1e999", "since", "finite"),
    ("sort=kind", "sort", "unknown query parameter"),
    ("kind=a&kind=b", "kind", "given more than once"),
    ("q=%00", "q", "NUL"),
    ("limit=", "limit", "from 1 to 500"),
    ("limit=5%0A", "limit", "from 1 to 500"),
    ("since=2023-02-29", "since", "ISO 8601"),
    ("since=1.7e9", "since", "epoch seconds"),
    ("until=2023-11-14T22:15:00%2B24:00", "until", "ISO 8601"),
    ("status=resolved%3Bdiscarded", "status", "unknown status 'resolved;discarded'"),
]


@pytest.mark.parametrize(("params", "field", "words"), BAD_QUERIES)
async def test_bad_query_parameters_are_422_naming_the_parameter(
    service: Service, params: str, field: str, words: str
) -> None:
    """A bad or unknown listing parameter is 422 naming it and what it must be."""
    response = await service.client.get(f"/v1/records?{params}")
    assert_error(response, 422, field, words)


BAD_ACTIONS = [
    (b'{"note": ', JSON, 400, "body", "malformed JSON"),
    (b'["note"]', JSON, 422, "body", "must be a JSON object, got an array"),
    (b'{"note": 5}', JSON, 422, "note", "must be a string, got a number"),
    (b'{"actor": ""}', JSON, 422, "actor", "must not be empty"),
    (b'{"actor": true}', JSON, 422, "actor", "must be a string, got a boolean"),
    (b'{"colour": "red"}', JSON, 422, "colour", "unknown field"),
    (b'{"note": "x"}', {"Content-Type": "text/plain"}, 415, "content-type", "application/json"),
    (json.dumps({"note": "n" * 70_000}).encode(), JSON, 422, "note", "over the limit"),
    (json.dumps({"note": "n" * 10_001}).encode(), JSON, 422, "note", "limit of 10000"),
    (b"null", JSON, 422, "body", "must be a JSON object, got null"),
    (b'{"actor": " "}', JSON, 422, "actor", "must not be empty"),
    (b'{"note": "a\\u0000"}', JSON, 422, "note", "NUL"),
]


@pytest.mark.parametrize(("body", "headers", "status", "field", "words"), BAD_ACTIONS)
async def test_bad_action_bodies_are_refused_and_change_nothing(
    service: Service, body: bytes, headers: dict[str, str], status: int, field: str, words: str
) -> None:
    """A bad action body is refused naming the problem; the record keeps its status and history."""
    record = await service.record(action="review")
    response = await service.client.post(
        f"/v1/records/{record['id']}/resolve", content=body, headers=headers
    )
    assert_error(response, status, field, words)
    assert service.store.get(record["id"]).to_json() == record


BAD_BULKS = [
    ({"ids": ["a"]}, "action", "is required"),
    ({"action": "delete", "ids": ["a"]}, "action", "'resolve', 'retry' or 'discard'"),
    ({"action": "resolve"}, "ids", "must be an array"),
    ({"action": "resolve", "ids": "a"}, "ids", "must be an array of record ids, got a string"),
    ({"action": "resolve", "ids": []}, "ids", "1 to 500 ids, got 0"),
    ({"action": "resolve", "ids": ["a"] * 501}, "ids", "got 501"),
    ({"action": "resolve", "ids": ["a", 7]}, "ids[1]", "must be a record id"),
    ({"action": "resolve", "ids": ["a"], "note": 1}, "note", "must be a string"),
    ({"action": "resolve", "ids": ["a"], "extra": 1}, "extra", "unknown field"),
]


@pytest.mark.parametrize(("body", "field", "words"), BAD_BULKS)
async def test_bad_bulk_requests_are_refused_before_any_change(
    service: Service, body: dict[str, Any], field: str, words: str
) -> None:
    """A bad bulk request is 422 naming the field, and no record changes."""
    record = await service.record(action="review")
    response = await service.client.post("/v1/records/bulk", json=body)
    assert_error(response, 422, field, words)
    assert service.store.get(record["id"]).to_json() == record


async def test_unknown_routes_and_methods_answer_json(service: Service) -> None:
    """An unknown path is a JSON 404 and a wrong method a JSON 405, naming the path."""
    missing = await service.client.get("/v1/nothing")
    wrong = await service.client.delete("/v1/records")
    assert_error(missing, 404, "path", "no route GET /v1/nothing")
    assert_error(wrong, 405, "path", "DELETE is not allowed on /v1/records")


async def test_odd_record_ids_are_404_not_500(service: Service) -> None:
    """An id with NUL or an over-long id is simply not found."""
    for record_id in ("%00", "x" * 500):
        response = await service.client.get(f"/v1/records/{record_id}")
        assert response.status_code == 404


# -- the worker in the app's lifespan -----------------------------------------------------------


async def test_the_lifespan_runs_the_retry_worker_until_shutdown(
    tmp_path: Path, anyio_backend: str
) -> None:
    """With a worker, the app retries due records while it runs and stops the worker after."""
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "errors.db")
    desk = ErrorDesk(
        store, clock=clock, default_schedule=RetrySchedule(backoff=Backoff.constant(5.0))
    )
    handlers = Handlers()
    loop = asyncio.get_running_loop()
    retried = asyncio.Event()
    seen: list[ErrorRecord] = []

    def decrement(record: ErrorRecord) -> str:
        seen.append(record)
        loop.call_soon_threadsafe(retried.set)
        return "decremented"

    handlers.register("stock.decrement", decrement)
    worker = RetryWorker(desk, handlers, poll_interval=1.0)
    app = create_app(desk, tokens=Tokens(), handlers=handlers, worker=worker)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    async with client, app.router.lifespan_context(app):
        created = await client.post("/v1/reports", json=VALID)
        with anyio.fail_after(10):  # a deadline only: the fake clock drives the worker's waits
            await retried.wait()
        health = await client.get("/healthz")
    record = store.get(created.json()["record"]["id"])
    assert [r.id for r in seen] == [record.id]
    assert record.status.value == "resolved"
    assert record.attempts[0].detail == "decremented"
    assert health.json()["ok"] is True
    rounds = len(clock.sleeps)
    await asyncio.sleep(0)
    assert len(clock.sleeps) == rounds  # the worker stopped with the app
    store.close()


class CrashingWorker:
    """A worker whose loop dies at once, as a bug would kill it."""

    async def run_forever(self, stop: asyncio.Event) -> None:
        raise RuntimeError("worker bug")


async def test_healthz_is_503_when_the_worker_died(tmp_path: Path, anyio_backend: str) -> None:
    """If the worker's loop ends on its own, /healthz says so with 503."""
    desk = ErrorDesk(SQLiteStore(":memory:"), clock=FakeClock())
    app = create_app(desk, tokens=Tokens(), handlers=Handlers(), worker=CrashingWorker())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    async with client, app.router.lifespan_context(app):
        for _ in range(3):
            await asyncio.sleep(0)
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["ok"] is False
    assert "RuntimeError: worker bug" in response.json()["error"]


async def test_the_answer_to_a_repeated_report_stays_small(service: Service) -> None:
    """Report #200 of one failure answers about as much as report #12 (was 467 KB at #6,000)."""
    sizes = []
    async with service.client_with(REPORTER) as reporter:
        for _ in range(200):
            response = await reporter.post("/v1/reports", json=VALID)
            sizes.append(len(response.content))
    assert response.json()["record"]["count"] == 200
    assert sizes[-1] <= sizes[11] + 100  # only the count and the time grow


# -- no tokens: requests addressed to loopback only, no cross-origin writes ---------------------


@pytest.fixture
async def open_service(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Any]:
    """A service without tokens (on loopback), and a way to send it raw requests."""
    store = SQLiteStore(str(tmp_path / "open.db"))
    app = create_app(ErrorDesk(store), tokens=Tokens(), handlers=Handlers())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    async with client:
        yield client, store
    store.close()


@pytest.mark.parametrize(
    "host",
    ["rebind.attacker.example", "rebind.attacker.example:8090", "10.0.0.7", "", "127.0.0.1.nip.io"],
)
async def test_without_tokens_a_request_addressed_elsewhere_is_refused(
    open_service: Any, host: str
) -> None:
    """DNS rebinding: a page at attacker.example resolved to 127.0.0.1 reads nothing."""
    client, store = open_service
    created = await client.post("/v1/reports", json=VALID)
    for method, path in (("GET", "/v1/records"), ("GET", "/review/"), ("POST", "/v1/reports")):
        response = await client.request(
            method, path, headers={"Host": host}, json=VALID if method == "POST" else None
        )
        assert_error(response, 403, "host", "not this machine")
        assert created.json()["record"]["id"] not in response.text
    assert sum(store.counts().values()) == 1  # the refused report was not stored


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8090", "localhost", "LOCALHOST:1", "[::1]:8090", "127.8.9.1"]
)
async def test_without_tokens_loopback_hosts_are_served(open_service: Any, host: str) -> None:
    client, _ = open_service
    response = await client.get("/v1/records", headers={"Host": host})
    assert response.status_code == 200, response.text


async def test_without_tokens_a_write_from_another_origin_is_refused(open_service: Any) -> None:
    """A form on another site (or another port) cannot discard a record; the same origin can."""
    client, store = open_service
    record_id = (await client.post("/v1/reports", json=VALID)).json()["record"]["id"]
    before = store.get(record_id).status
    for origin in ("http://evil.example", "null", "http://127.0.0.1:3000", "http://localhost:8090"):
        headers = {"Host": "127.0.0.1:8090", "Origin": origin}
        api = await client.post(f"/v1/records/{record_id}/discard", json={}, headers=headers)
        assert_error(api, 403, "origin", "another site")
        page = await client.post(f"/review/records/{record_id}/discard", headers=headers)
        assert page.status_code == 403
        assert store.get(record_id).status is before
    same = {"Host": "127.0.0.1:8090", "Origin": "http://127.0.0.1:8090"}
    done = await client.post(f"/v1/records/{record_id}/discard", json={}, headers=same)
    assert done.status_code == 200, done.text
    assert store.get(record_id).status.value == "discarded"


async def test_with_both_tokens_the_host_is_not_checked(service: Service) -> None:
    """Behind a proxy or on a network address, the tokens are the lock, not the Host."""
    response = await service.client.get("/v1/records", headers={"Host": "errors.internal"})
    assert response.status_code == 200
