"""The JSON API's failure groups: listing, one group, and actions with a dry run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from failsafe.errors.record import Status
from failsafe.errors.store import Query
from tests.errors.test_api import REPORTER, Service, assert_error

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def service(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Service]:
    svc = Service(tmp_path)
    async with svc.client:
        yield svc
    svc.store.close()


async def storm(service: Service, n: int) -> str:
    """``n`` reports of one failure that differ by a number; their group's fingerprint."""
    fingerprints = set()
    for i in range(n):
        record = await service.record(
            action="review",
            payload={"productId": f"p-{i}"},
            error_type="OperationalError",
            error_message=f"row {i} locked after {i * 3} ms",
        )
        fingerprints.add(record["fingerprint"])
    assert len(fingerprints) == 1
    return fingerprints.pop()


async def test_groups_are_listed_with_their_numbers(service: Service) -> None:
    fingerprint = await storm(service, 3)
    await service.record(kind="order.unknown", action="review", source="payments")
    r = await service.client.get("/v1/groups", params={"order": "largest"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["limit"], body["offset"]) == (2, 50, 0)
    first = body["groups"][0]
    assert first["fingerprint"] == fingerprint
    assert (first["records"], first["reports"], first["open"]) == (3, 3, 3)
    assert first["statuses"]["needs_review"] == 3
    assert first["sources"] == [{"source": "warehouse", "records": 3}]
    assert first["title"] == "row 0 locked after 0 ms"
    assert first["hours"] == []  # a listing carries no hours
    only = await service.client.get("/v1/groups", params={"source": "payments"})
    assert [g["kind"] for g in only.json()["groups"]] == ["order.unknown"]


async def test_one_group_carries_its_hours(service: Service) -> None:
    fingerprint = await storm(service, 2)
    r = await service.client.get(f"/v1/groups/{fingerprint}")
    assert r.status_code == 200, r.text
    group = r.json()
    assert group["fingerprint"] == fingerprint
    assert group["hours"] == [{"at": 1_699_999_200.0, "reports": 2}]
    listed = await service.client.get("/v1/records", params={"fingerprint": fingerprint})
    assert listed.json()["total"] == 2


async def test_a_dry_run_counts_and_changes_nothing_then_the_action_changes_all(
    service: Service,
) -> None:
    fingerprint = await storm(service, 4)
    dry = await service.client.post(
        f"/v1/groups/{fingerprint}/retry", json={"dry_run": True, "actor": "ann"}
    )
    assert dry.status_code == 200, dry.text
    assert dry.json() == {
        "action": "retry",
        "fingerprint": fingerprint,
        "dry_run": True,
        "matched": 4,
        "changed": 0,
    }
    assert service.store.group(fingerprint).statuses["needs_review"] == 4
    done = await service.client.post(
        f"/v1/groups/{fingerprint}/retry", json={"actor": "ann", "note": "db is back"}
    )
    assert done.json()["changed"] == 4
    records = service.store.find(Query(fingerprint=fingerprint)).records
    assert {r.status for r in records} == {Status.PENDING_RETRY}
    assert {(r.history[-1].actor, r.history[-1].note) for r in records} == {("ann", "db is back")}
    # nothing left in review: a second retry matches none
    again = await service.client.post(f"/v1/groups/{fingerprint}/retry")
    assert (again.json()["matched"], again.json()["changed"]) == (0, 0)


async def test_bad_group_requests_are_refused_naming_the_problem(service: Service) -> None:
    fingerprint = await storm(service, 1)
    missing = await service.client.get("/v1/groups/v1-0000000000000000")
    assert_error(missing, 404, "fingerprint", "no failure group")
    bad = await service.client.get("/v1/groups/has%20space")
    assert_error(bad, 422, "fingerprint", "must be a fingerprint")
    order = await service.client.get("/v1/groups", params={"order": "biggest"})
    assert_error(order, 422, "order", "biggest")
    status = await service.client.get("/v1/groups", params={"status": "lost"})
    assert_error(status, 422, "status", "lost")
    dry = await service.client.post(f"/v1/groups/{fingerprint}/resolve", json={"dry_run": "yes"})
    assert_error(dry, 422, "dry_run", "true or false")
    reporter = service.client_with(REPORTER)
    async with reporter:
        refused = await reporter.get("/v1/groups")
    assert refused.status_code == 401
    assert service.store.group(fingerprint).open == 1


async def test_status_all_lists_closed_groups_too(service: Service) -> None:
    fingerprint = await storm(service, 1)
    await service.client.post(f"/v1/groups/{fingerprint}/discard", json={"actor": "ann"})
    open_only = await service.client.get("/v1/groups")
    assert open_only.json()["total"] == 0
    every = await service.client.get("/v1/groups", params={"status": "all"})
    assert [g["statuses"]["discarded"] for g in every.json()["groups"]] == [1]


async def test_a_report_may_set_its_fingerprint_over_http(service: Service) -> None:
    record = await service.record(fingerprint="stock-outage")
    assert record["fingerprint"] == "stock-outage"
    bad = await service.report(fingerprint="not one")
    assert_error(bad, 422, "fingerprint", "must be 1-128 letters")
