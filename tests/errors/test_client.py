"""ErrorSink and AsyncErrorSink: deliver at once, spool when down, redeliver exactly once."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe import Backoff, CircuitBreaker, ConsecutiveFailures
from failsafe.errors.client import AsyncErrorSink, ErrorSink, ReportRejected, SinkClosed
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import Status
from failsafe.errors.spool import Spool
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import Query
from failsafe.exceptions import ConfigurationError
from failsafe.testing import FakeClock
from tests.errors.fake_service import FakeService

URL = "http://errors.test"


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "errors.db"


@pytest.fixture
def sinks() -> Iterator[list[ErrorSink]]:
    made: list[ErrorSink] = []
    yield made
    for sink in made:
        sink.close()


@pytest.fixture
def make(service: FakeService, clock: FakeClock, spool_path: Path, sinks: list[ErrorSink]) -> Any:
    def build(**options: Any) -> ErrorSink:
        options.setdefault("http", service.client())
        options.setdefault("background", False)
        options.setdefault("clock", clock)
        options.setdefault("spool", spool_path)
        sink = ErrorSink(URL, source="warehouse", **options)
        sinks.append(sink)
        return sink

    return build


def boom() -> ValueError:
    try:
        raise ValueError("stock row locked")
    except ValueError as exc:
        return exc


# -- the sync sink ---------------------------------------------------------------------------
def test_report_is_delivered_at_once_when_the_service_is_up(
    make: Any, service: FakeService
) -> None:
    """A report reaches the service inside report(), keyed by its id, and nothing is spooled."""
    sink = make(token="s3cret")
    report_id = sink.report(
        "stock.decrement",
        "retry",
        payload={"sku": "A1", "by": 2},
        error=boom(),
        correlation_id="o-1",
    )
    assert service.requests == [report_id]
    assert len(report_id) == 32
    assert int(report_id, 16) >= 0
    body = service.stored[report_id]
    assert body["kind"] == "stock.decrement"
    assert body["action"] == "retry"
    assert body["source"] == "warehouse"
    assert body["payload"] == {"sku": "A1", "by": 2}
    assert body["error_type"] == "ValueError"
    assert body["error_message"] == "stock row locked"
    assert "raise ValueError" in body["traceback"]
    assert body["correlation_id"] == "o-1"
    assert service.headers[0]["authorization"] == "Bearer s3cret"
    assert len(sink.spool) == 0


def test_token_comes_from_the_environment(
    make: Any, service: FakeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a token argument, FAILSAFE_ERRORS_REPORT_TOKEN is sent as the bearer token."""
    monkeypatch.setenv("FAILSAFE_ERRORS_REPORT_TOKEN", "from-env")
    make().report("order.not_found", "review", source="orders")
    assert service.headers[0]["authorization"] == "Bearer from-env"
    assert next(iter(service.stored.values()))["source"] == "orders"


def test_down_then_up_flush_delivers_every_report_exactly_once(
    make: Any, service: FakeService
) -> None:
    """Reports made while the service is down are spooled, then delivered once each, in order."""
    sink = make()
    service.mode = "down"
    ids = [sink.report("stock.decrement", "retry", payload={"n": i}) for i in range(7)]
    assert len(sink.spool) == 7
    assert not service.stored
    service.mode = "up"
    assert sink.flush() == 0
    assert list(service.stored) == ids  # oldest first
    assert sorted(service.requests) == sorted(ids)  # each sent once
    assert len(sink.spool) == 0
    assert sink.flush() == 0
    assert service.seen == 7


def test_a_password_in_the_url_reaches_no_log_and_no_repr(
    make: Any, service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make()
    sink.urls = ("http://bob:hunter2@errors.test",)
    service.mode = "down"
    with caplog.at_level("DEBUG", "failsafe.errors.client"):
        sink.report("stock.decrement", "retry")
        sink.deliver_due()
    assert "cannot deliver" in caplog.text
    assert "hunter2" not in caplog.text
    assert "hunter2" not in repr(sink)


def test_the_spool_is_delivered_in_batches(make: Any, service: FakeService) -> None:
    """Spooled reports go in one batch request, oldest first, not one request each."""
    sink = make()
    service.mode = "down"
    ids = [sink.report("stock.decrement", "retry", payload={"n": n}) for n in range(6)]
    service.mode = "up"
    assert sink.flush() == 0
    assert service.batches == [ids]
    assert list(service.stored) == ids


def test_a_batch_stays_under_the_size_limit(
    make: Any, service: FakeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reports that do not fit one batch's bytes go in the next batch."""
    import failsafe.errors.client as client

    sink = make()
    service.mode = "down"
    ids = [sink.report("stock.decrement", "retry", payload={"pad": "x" * 300}) for _ in range(5)]
    one = len(json.dumps({"id": ids[0], "report": sink.spool.due(math.inf, 1)[0].body}))
    sink.spool.release(ids[:1], 0.0)
    monkeypatch.setattr(client, "_BATCH_BYTES", 2 * one + 20)  # two reports per batch
    service.mode = "up"
    assert sink.flush() == 0
    assert service.batches == [ids[0:2], ids[2:4]]  # the last one alone: a single request
    assert list(service.stored) == ids


def test_a_refused_batch_falls_back_to_one_at_a_time(make: Any, service: FakeService) -> None:
    """One bad report refuses the whole batch: each is then sent alone; the bad one is parked."""
    sink = make()
    service.mode = "down"
    ids = [sink.report("stock.decrement", "retry", payload={"n": n}) for n in range(3)]
    service.mode = "up"
    service.refuse = {ids[1]}
    assert sink.flush() == 0
    assert service.batches == [ids]
    assert list(service.stored) == [ids[0], ids[2]]
    assert [r.report_id for r in sink.spool.rejected()] == [ids[1]]


def test_a_lost_answer_is_redelivered_and_counted_once(make: Any, service: FakeService) -> None:
    """A report stored by the service whose answer was lost is resent and still counted once."""
    sink = make()
    service.mode = "lost_answer"
    report_id = sink.report("stock.decrement", "retry", payload={"sku": "A1"})
    assert len(sink.spool) == 1
    assert list(service.stored) == [report_id]
    service.mode = "up"
    assert sink.flush() == 0
    assert service.requests == [report_id, report_id]
    assert list(service.stored) == [report_id]


def test_a_422_raises_report_rejected_with_the_services_message(
    make: Any, service: FakeService
) -> None:
    """A 4xx means the report is bad: ReportRejected carries the message and nothing is spooled."""
    sink = make()
    service.mode, service.status = "status", 422
    service.answer = {"error": "payload: is 70000 bytes, over the limit", "field": "payload"}
    with pytest.raises(ReportRejected, match="over the limit") as caught:
        sink.report("stock.decrement", "retry", payload={"sku": "A1"})
    assert (caught.value.status, caught.value.field) == (422, "payload")
    assert len(sink.spool) == 0


def test_a_wrong_token_raises_report_rejected(make: Any) -> None:
    """A 401 is not retried: retrying with the same token cannot help."""
    guarded = FakeService(token="right")
    sink = make(http=guarded.client(), token="wrong")
    with pytest.raises(ReportRejected) as caught:
        sink.report("stock.decrement", "retry")
    assert caught.value.status == 401
    assert caught.value.field == "authorization"
    assert len(sink.spool) == 0


@pytest.mark.parametrize(
    ("kind", "action", "payload", "field"),
    [
        ("bad kind!", "retry", None, "kind"),
        ("stock.decrement", "later", None, "action"),
        ("stock.decrement", "retry", "not an object", "payload"),
        ("stock.decrement", "retry", {"blob": "x" * 70_000}, "payload"),
        ("stock.decrement", "retry", {"when": object()}, "payload"),
    ],
)
def test_a_malformed_report_is_rejected_locally_without_the_network(
    make: Any, service: FakeService, kind: str, action: str, payload: Any, field: str
) -> None:
    """A report the service would refuse is refused before any request or spooling."""
    sink = make()
    service.mode = "down"
    with pytest.raises(ReportRejected) as caught:
        sink.report(kind, action, payload=payload)
    assert caught.value.status is None
    assert caught.value.field == field
    assert service.seen == 0
    assert len(sink.spool) == 0


def test_an_open_breaker_keeps_report_off_the_network(make: Any, service: FakeService) -> None:
    """While the breaker is open, report() spools and the deliverer waits: nothing is sent."""
    sink = make()
    sink.breaker.open()
    report_id = sink.report("stock.decrement", "retry")
    assert service.seen == 0
    assert [item.report_id for item in sink.spool.due(math.inf, 10)] == [report_id]
    assert sink.deliver_due() == 0  # the deliverer waits for the breaker too
    assert service.seen == 0


def test_the_breaker_opens_after_failures_and_report_stops_trying(
    make: Any, service: FakeService
) -> None:
    """After three failed quick attempts the breaker opens and later reports skip the network."""
    sink = make()
    service.mode = "down"
    for _ in range(3):
        sink.report("stock.decrement", "retry")
    assert sink.breaker.current_state == "open"
    raised_before = service.seen
    sink.report("stock.decrement", "retry")
    assert service.seen == raised_before  # no attempt: the fake raises before counting
    assert len(sink.spool) == 4


def test_flush_closes_the_breaker_once_the_service_answers(make: Any, service: FakeService) -> None:
    """flush() ignores an open breaker and, on success, lets report() deliver directly again."""
    sink = make()
    sink.breaker.open()
    sink.report("stock.decrement", "retry")
    assert sink.flush() == 0
    assert sink.breaker.current_state == "closed"
    sink.report("stock.decrement", "retry")
    assert len(sink.spool) == 0
    assert len(service.stored) == 2


def test_a_5xx_spools_the_report(make: Any, service: FakeService) -> None:
    """A 503 is the service's trouble, not the report's: the report is spooled."""
    sink = make()
    service.mode, service.status = "status", 503
    sink.report("stock.decrement", "retry")
    assert len(sink.spool) == 1


def test_the_deliverer_backs_off_on_the_fake_clock(
    make: Any, service: FakeService, clock: FakeClock
) -> None:
    """After a failed delivery the deliverer waits its backoff before the next attempt."""
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=100), clock=clock)
    sink = make(backoff=Backoff.constant(4.0), breaker=breaker)
    service.mode = "down"
    sink.report("stock.decrement", "retry")
    assert sink.deliver_due() == 0
    assert sink.spool.due(math.inf, 1)[0].attempts == 1
    service.mode = "up"
    clock.advance(3.9)
    assert sink.deliver_due() == 0
    assert not service.stored
    clock.advance(0.2)
    assert sink.deliver_due() == 1
    assert len(service.stored) == 1
    assert len(sink.spool) == 0


def test_a_spooled_report_refused_for_good_is_parked_not_lost(
    make: Any, service: FakeService
) -> None:
    """A spooled report the service later refuses (422) is kept aside, never resent."""
    sink = make()
    service.mode = "down"
    report_id = sink.report("stock.decrement", "retry")
    service.mode, service.status = "status", 422
    service.answer = {"error": "kind: unknown", "field": "kind"}
    assert sink.flush() == 0
    parked = sink.spool.rejected()
    assert [p.report_id for p in parked] == [report_id]
    assert parked[0].rejected == "HTTP 422: kind: unknown"
    assert sink.flush() == 0
    assert service.seen == 1


def test_flush_stops_at_the_first_failure(make: Any, service: FakeService) -> None:
    """With the service still down, flush() makes one attempt and says how many are left."""
    sink = make()
    service.mode = "down"
    for _ in range(5):
        sink.report("stock.decrement", "retry")
    seen_before = service.seen
    assert sink.flush() == 5
    assert service.seen == seen_before


def test_leftovers_of_an_earlier_process_are_delivered_at_construction(
    service: FakeService, spool_path: Path
) -> None:
    """A new sink's deliverer thread sends what an earlier sink left in the spool."""
    down = FakeService()
    down.mode = "down"
    first = ErrorSink(URL, source="w", spool=spool_path, http=down.client(), background=False)
    ids = {first.report("stock.decrement", "retry", payload={"n": i}) for i in range(3)}
    first.close()
    service.expect = 3
    second = ErrorSink(URL, source="w", spool=spool_path, http=service.client())
    try:
        assert service.received.wait(10)
        assert set(service.stored) == ids
    finally:
        second.close()
    spool = Spool(spool_path)
    assert len(spool) == 0
    spool.close()


def test_report_from_many_threads_while_down_keeps_every_report(
    make: Any, service: FakeService
) -> None:
    """Concurrent report() calls while the service is down each end up spooled, once."""
    sink = make()
    service.mode = "down"
    ids: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(25):
            report_id = sink.report("stock.decrement", "retry")
            with lock:
                ids.append(report_id)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 200
    assert len(sink.spool) == 200
    service.mode = "up"
    assert sink.flush() == 0
    assert set(service.stored) == set(ids)


def test_a_closed_sink_refuses_reports(make: Any) -> None:
    """report() after close() raises SinkClosed instead of silently dropping the report."""
    sink = make()
    sink.close()
    with pytest.raises(SinkClosed):
        sink.report("stock.decrement", "retry")


# -- the spool -------------------------------------------------------------------------------
def test_the_spool_keeps_order_claims_and_attempts(spool_path: Path) -> None:
    """due() is oldest first, a lease hides claimed reports, failed() counts and reschedules."""
    spool = Spool(spool_path)
    for i in range(3):
        assert spool.put(f"r{i}", {"n": i}, now=100.0)
    assert not spool.put("r0", {"n": 0}, now=100.0)  # the same id twice: stored once
    claimed = spool.due(100.0, 2, lease=30.0)
    assert [c.report_id for c in claimed] == ["r0", "r1"]
    assert claimed[0].body == {"n": 0}
    assert [c.report_id for c in spool.due(100.0, 10, lease=30.0)] == ["r2"]
    assert spool.due(120.0, 10) == []
    spool.failed("r0", 150.0, error="HTTP 503")
    spool.release(["r1"], 110.0)
    assert [c.report_id for c in spool.due(111.0, 10)] == ["r1"]
    again = spool.due(150.0, 10)
    assert [c.report_id for c in again] == ["r0", "r1", "r2"]
    assert again[0].attempts == 1
    assert again[0].last_error == "HTTP 503"
    assert spool.next_due() == 110.0
    assert spool.done("r0")
    assert not spool.done("r0")
    assert len(spool) == 2
    spool.close()
    assert len(Spool(spool_path)) == 2  # on disk


def test_the_spool_durability_setting(spool_path: Path) -> None:
    """The spool is WAL, NORMAL by default (survives kill -9), FULL on request (an OS crash)."""
    spool = Spool(spool_path)
    assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    spool.close()
    synced = Spool(spool_path, synchronous="FULL")
    assert synced._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    synced.close()
    with pytest.raises(ConfigurationError, match="synchronous"):
        Spool(spool_path, synchronous="OFF")  # type: ignore[arg-type]


# -- local mode ------------------------------------------------------------------------------
def test_local_mode_writes_straight_into_the_desk() -> None:
    """ErrorSink.local(desk) stores the report in the desk's store, keyed by the report id."""
    desk = ErrorDesk(SQLiteStore(":memory:"), clock=FakeClock())
    sink = ErrorSink.local(desk, source="orders")
    sink.report("order.not_found", "review", payload={"order": "o-9"}, error=KeyError("o-9"))
    sink.report("order.not_found", "review", payload={"order": "o-9"}, error=KeyError("o-9"))
    page = desk.find(Query())
    assert page.total == 1
    record = page.records[0]
    assert record.count == 2
    assert record.status is Status.NEEDS_REVIEW
    assert record.source == "orders"
    assert record.error_type == "KeyError"
    with pytest.raises(ReportRejected):
        sink.report("bad kind!", "review")
    assert sink.flush() == 0
    sink.close()


def test_async_local_mode_writes_straight_into_the_desk() -> None:
    """AsyncErrorSink.local(desk) stores the report in the desk's store."""
    desk = ErrorDesk(SQLiteStore(":memory:"), clock=FakeClock())
    sink = AsyncErrorSink.local(desk, source="payments")

    async def main() -> None:
        await sink.report("order.write_failed", "retry", payload={"order": "o-1"})
        await sink.aclose()

    asyncio.run(main())
    assert desk.find(Query()).records[0].kind == "order.write_failed"


# -- the async sink --------------------------------------------------------------------------
def async_sink(
    service: FakeService, spool_path: Path, clock: FakeClock, **kw: Any
) -> AsyncErrorSink:
    kw.setdefault("background", False)
    return AsyncErrorSink(
        URL, source="payments", spool=spool_path, clock=clock, http=service.async_client(), **kw
    )


def test_async_report_is_delivered_at_once_when_up(
    service: FakeService, spool_path: Path, clock: FakeClock
) -> None:
    """The async sink delivers inside report() and spools nothing when the service is up."""

    async def main() -> str:
        async with async_sink(service, spool_path, clock) as sink:
            report_id = await sink.report("order.write_failed", "retry", error=boom())
            assert len(sink.spool) == 0
            return report_id

    report_id = asyncio.run(main())
    assert service.requests == [report_id]
    assert service.stored[report_id]["error_type"] == "ValueError"


def test_async_down_then_up_delivers_each_report_once(
    service: FakeService, spool_path: Path, clock: FakeClock
) -> None:
    """Async reports made while down are spooled; flush() later delivers each one once."""

    async def main() -> list[str]:
        async with async_sink(service, spool_path, clock) as sink:
            service.mode = "down"
            ids = [
                await sink.report("order.write_failed", "retry", payload={"n": i}) for i in range(5)
            ]
            assert len(sink.spool) == 5
            service.mode = "lost_answer"
            assert await sink.flush() == 5  # stored, answer lost: still spooled
            service.mode = "up"
            assert await sink.flush() == 0
            return ids

    ids = asyncio.run(main())
    assert list(service.stored) == ids
    # one batch request, its answer lost, then the same batch again: each stored once
    assert service.batches == [ids, ids]
    assert sorted(service.requests) == sorted(ids * 2)


def test_async_open_breaker_and_rejection(
    service: FakeService, spool_path: Path, clock: FakeClock
) -> None:
    """Async: an open breaker skips the network; a 422 raises ReportRejected."""

    async def main() -> None:
        async with async_sink(service, spool_path, clock) as sink:
            sink.breaker.open()
            await sink.report("order.write_failed", "retry")
            assert service.seen == 0
            assert len(sink.spool) == 1
            sink.breaker.close()
            service.mode, service.status = "status", 422
            service.answer = {"error": "kind: no", "field": "kind"}
            with pytest.raises(ReportRejected, match="kind: no"):
                await sink.report("order.write_failed", "retry")
            assert len(sink.spool) == 1

    asyncio.run(main())


def test_async_deliverer_task_sends_leftovers_when_started(
    service: FakeService, spool_path: Path, clock: FakeClock
) -> None:
    """The async deliverer task, once started, delivers what an earlier process spooled."""
    spool = Spool(spool_path)
    spool.put("left-over-1", {"kind": "k.one", "action": "retry", "source": "s"}, now=clock.time())
    spool.put("left-over-2", {"kind": "k.two", "action": "retry", "source": "s"}, now=clock.time())
    spool.close()
    service.expect = 2

    async def main() -> None:
        async with async_sink(service, spool_path, clock, background=True) as sink:
            assert await asyncio.to_thread(service.received.wait, 10)
            for _ in range(10_000):  # done() follows the answer in a worker thread
                if await asyncio.to_thread(len, sink.spool) == 0:
                    break
            assert len(sink.spool) == 0

    asyncio.run(main())
    assert list(service.stored) == ["left-over-1", "left-over-2"]


def test_async_deliverer_backs_off_on_the_fake_clock(
    service: FakeService, spool_path: Path, clock: FakeClock
) -> None:
    """The async deliverer honours its backoff, measured on the injected clock."""
    breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=100), clock=clock)

    async def main() -> None:
        async with async_sink(
            service, spool_path, clock, backoff=Backoff.constant(2.0), breaker=breaker
        ) as sink:
            service.mode = "down"
            await sink.report("order.write_failed", "retry")
            assert await sink.deliver_due() == 0
            service.mode = "up"
            assert await sink.deliver_due() == 0
            clock.advance(2.0)
            assert await sink.deliver_due() == 1

    asyncio.run(main())
    assert len(service.stored) == 1


def test_against_the_real_service_app(spool_path: Path, clock: FakeClock) -> None:
    """Through the real service app, a redelivered spooled report is one record with count 1."""
    from failsafe.errors.auth import Tokens
    from failsafe.errors.service import create_app
    from failsafe.errors.worker import Handlers

    desk = ErrorDesk(SQLiteStore(":memory:"), clock=clock)
    app = create_app(desk, tokens=Tokens(report="r", review="v"), handlers=Handlers())
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))

    async def main() -> None:
        options: dict[str, Any] = {"spool": spool_path, "clock": clock, "http": http}
        sink = AsyncErrorSink(URL, source="warehouse", token="r", background=False, **options)
        body = {"kind": "stock.decrement", "action": "retry", "source": "warehouse"}
        first = await sink.report(body["kind"], "retry", payload={"sku": "A1"})
        # the same report id spooled and sent again, as after a lost answer
        sink.spool.put(first, {**body, "payload": {"sku": "A1"}}, now=clock.time())
        assert await sink.flush() == 0
        intruder = AsyncErrorSink(URL, source="w", token="nope", background=False, **options)
        with pytest.raises(ReportRejected) as caught:
            await intruder.report("stock.decrement", "retry")
        assert caught.value.status == 401
        assert caught.value.field == "authorization"
        await intruder.aclose()
        await sink.aclose()
        await http.aclose()

    asyncio.run(main())
    page = desk.find(Query())
    assert page.total == 1
    assert page.records[0].count == 1
