"""RetryWorker and Handlers: claims, attempts, schedules, escalation, leases, HTTP callbacks."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe import Backoff
from failsafe.errors.desk import ErrorDesk, RetrySchedule
from failsafe.errors.record import Action, ErrorRecord, InvalidReport, Report, Status
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import Query
from failsafe.errors.worker import HandlerPinned, Handlers, RetryWorker
from failsafe.exceptions import ConfigurationError
from failsafe.testing import FakeClock

START = 1000.0


def make_desk(
    *, schedules: dict[str, RetrySchedule] | None = None, default: RetrySchedule | None = None
) -> ErrorDesk:
    """A desk on an in-memory SQLite store and a fake clock at wall time 1000."""
    return ErrorDesk(
        SQLiteStore(":memory:"),
        clock=FakeClock(wall_start=START),
        schedules=schedules,
        default_schedule=default
        or RetrySchedule(attempts=3, backoff=Backoff.constant(10.0), lease=30.0),
    )


def clock_of(desk: ErrorDesk) -> FakeClock:
    assert isinstance(desk.clock, FakeClock)
    return desk.clock


def advance_to(desk: ErrorDesk, when: float | None) -> None:
    """Move the desk's fake clock to wall time ``when``."""
    assert when is not None
    clock_of(desk).advance(when - desk.clock.time())


def report(desk: ErrorDesk, kind: str = "stock.decrement", **payload: object) -> ErrorRecord:
    record, created = desk.report(
        Report(kind=kind, action=Action.RETRY, source="warehouse", payload=payload or {"n": 1}),
        actor="warehouse",
    )
    assert created
    return record


class Flaky:
    """An in-process handler that fails its first ``failures`` calls, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[ErrorRecord] = []

    def __call__(self, record: ErrorRecord) -> str:
        self.calls.append(record)
        if len(self.calls) <= self.failures:
            raise ConnectionError(f"database locked (call {len(self.calls)})")
        return "decremented"


# -- schedules, attempts and escalation ---------------------------------------------------------


def test_a_handler_that_succeeds_on_the_third_try_resolves_after_two_failed_attempts() -> None:
    """Two failures are recorded and rescheduled by the kind's backoff; the third try resolves."""
    backoff = Backoff.exponential(10.0, multiplier=2.0, maximum=1000.0, jitter="none")
    desk = make_desk(schedules={"stock.decrement": RetrySchedule(attempts=5, backoff=backoff)})
    handler = Flaky(failures=2)
    handlers = Handlers()
    handlers.register("stock.decrement", handler)
    worker = RetryWorker(desk, handlers)
    record = report(desk)
    assert record.next_attempt_at == START + 10  # the first delay: backoff(1)

    advance_to(desk, START + 9.9)
    assert worker.run_once() == 0  # not due yet
    advance_to(desk, START + 10)
    assert worker.run_once() == 1
    record = desk.get(record.id)
    assert record.status is Status.PENDING_RETRY
    assert record.next_attempt_at == START + 10 + 20  # backoff(2) after the first failure

    advance_to(desk, record.next_attempt_at)
    assert worker.run_once() == 1
    record = desk.get(record.id)
    assert record.next_attempt_at == START + 30 + 40  # backoff(3) after the second failure

    advance_to(desk, record.next_attempt_at)
    assert worker.run_once() == 1
    record = desk.get(record.id)
    assert record.status is Status.RESOLVED
    assert record.next_attempt_at is None
    assert [(a.at, a.ok) for a in record.attempts] == [
        (START + 10, False),
        (START + 30, False),
        (START + 70, True),
    ]
    assert record.attempts[0].detail == "ConnectionError: database locked (call 1)"
    assert record.attempts[2].detail == "decremented"
    assert len(handler.calls) == 3


def test_a_record_goes_to_review_after_its_kinds_attempts() -> None:
    """After the kind's last failed attempt the record needs review and is not claimed again."""
    desk = make_desk()  # default: 3 attempts, 10 s apart
    handler = Flaky(failures=100)
    handlers = Handlers()
    handlers.register("stock.decrement", handler)
    worker = RetryWorker(desk, handlers)
    record = report(desk)
    for _ in range(3):
        advance_to(desk, desk.get(record.id).next_attempt_at)
        assert worker.run_once() == 1
    record = desk.get(record.id)
    assert record.status is Status.NEEDS_REVIEW
    assert record.next_attempt_at is None
    assert [a.ok for a in record.attempts] == [False, False, False]
    clock_of(desk).advance(10_000)
    assert worker.run_once() == 0
    assert len(handler.calls) == 3


def test_each_kind_follows_its_own_schedule() -> None:
    """Two kinds are retried at their own intervals and escalate after their own counts."""
    desk = make_desk(
        schedules={
            "order.status": RetrySchedule(attempts=2, backoff=Backoff.constant(5.0)),
            "stock.decrement": RetrySchedule(attempts=4, backoff=Backoff.constant(60.0)),
        }
    )
    handlers = Handlers()
    handlers.register("order.status", Flaky(failures=100))
    handlers.register("stock.decrement", Flaky(failures=100))
    worker = RetryWorker(desk, handlers)
    order = report(desk, "order.status")
    stock = report(desk, "stock.decrement")
    assert order.next_attempt_at == START + 5
    assert stock.next_attempt_at == START + 60

    advance_to(desk, START + 5)
    assert worker.run_once() == 1
    assert desk.get(order.id).next_attempt_at == START + 10
    advance_to(desk, START + 10)
    assert worker.run_once() == 1
    assert desk.get(order.id).status is Status.NEEDS_REVIEW  # 2 attempts: done
    assert desk.get(stock.id).attempts == ()

    for n in range(1, 5):
        advance_to(desk, START + 60 * n)
        assert worker.run_once() == 1
        assert len(desk.get(stock.id).attempts) == n
    stock = desk.get(stock.id)
    assert stock.status is Status.NEEDS_REVIEW
    assert [a.at for a in stock.attempts] == [START + 60, START + 120, START + 180, START + 240]


def test_a_kind_without_a_handler_fails_each_attempt_then_goes_to_review() -> None:
    """No handler: every attempt fails with 'no handler registered', then a person reviews it."""
    desk = make_desk()
    worker = RetryWorker(desk, Handlers())
    record = report(desk, "order.status")
    for _ in range(3):
        advance_to(desk, desk.get(record.id).next_attempt_at)
        worker.run_once()
    record = desk.get(record.id)
    assert record.status is Status.NEEDS_REVIEW
    assert [a.detail for a in record.attempts] == [
        "no handler registered for kind 'order.status'"
    ] * 3


def test_a_handler_exception_is_the_attempts_detail_and_the_next_record_still_runs() -> None:
    """One record's handler raising is recorded on it; the other record of the round resolves."""
    desk = make_desk()
    seen: list[int] = []

    def handler(record: ErrorRecord) -> None:
        seen.append(record.payload["n"])
        if record.payload["n"] == 1:
            raise KeyError("sku-42")

    handlers = Handlers()
    handlers.register("stock.decrement", handler)
    worker = RetryWorker(desk, handlers)
    bad = report(desk, n=1)
    clock_of(desk).advance(1)
    good = report(desk, n=2)
    advance_to(desk, good.next_attempt_at)
    assert worker.run_once() == 2
    assert seen == [1, 2]  # the bad one came first and did not stop the round
    bad = desk.get(bad.id)
    assert bad.status is Status.PENDING_RETRY
    assert [(a.ok, a.detail) for a in bad.attempts] == [(False, "KeyError: 'sku-42'")]
    good = desk.get(good.id)
    assert good.status is Status.RESOLVED
    assert [(a.ok, a.detail) for a in good.attempts] == [(True, "ok")]


def test_secrets_in_an_attempts_detail_are_redacted() -> None:
    """An exception message carrying a password is stored with the secret replaced."""
    desk = make_desk()

    def handler(record: ErrorRecord) -> None:
        raise RuntimeError("could not connect: password=hunter2 host=db")

    handlers = Handlers()
    handlers.register("stock.decrement", handler)
    worker = RetryWorker(desk, handlers)
    record = report(desk)
    advance_to(desk, record.next_attempt_at)
    worker.run_once()
    [attempt] = desk.get(record.id).attempts
    assert "hunter2" not in attempt.detail
    assert attempt.detail.startswith("RuntimeError: could not connect: password=")


def test_a_round_claims_at_most_batch_records() -> None:
    """With five due records and batch=2, a round attempts two and leaves the rest due."""
    desk = make_desk()
    handlers = Handlers()
    handlers.register("stock.decrement", lambda record: None)
    worker = RetryWorker(desk, handlers, batch=2)
    records = [report(desk, n=n) for n in range(5)]
    advance_to(desk, records[-1].next_attempt_at)
    assert worker.run_once() == 2
    assert desk.store.counts()["resolved"] == 2
    assert worker.run_once() == 2
    assert worker.run_once() == 1
    assert worker.run_once() == 0
    assert desk.store.counts()["resolved"] == 5


def test_a_record_whose_lease_ran_out_is_claimed_again() -> None:
    """A record claimed by a worker that died is claimed again when its lease ends, not before."""
    desk = make_desk()  # lease: 30 s
    handler = Flaky(failures=0)
    handlers = Handlers()
    handlers.register("stock.decrement", handler)
    worker = RetryWorker(desk, handlers)
    record = report(desk)
    advance_to(desk, record.next_attempt_at)
    [claimed] = desk.claim_due()  # the worker that dies right after claiming
    assert claimed.status is Status.RETRYING
    assert claimed.next_attempt_at == desk.clock.time() + 30

    clock_of(desk).advance(29)
    assert worker.run_once() == 0  # the lease still runs
    assert handler.calls == []
    clock_of(desk).advance(1)
    assert worker.run_once() == 1
    record = desk.get(record.id)
    assert record.status is Status.RESOLVED
    assert [a.ok for a in record.attempts] == [True]
    assert [c.id for c in handler.calls] == [record.id]


def test_a_failure_to_record_an_attempt_does_not_stop_the_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the store fails while recording one attempt, the round's other records are handled."""
    desk = make_desk()
    handlers = Handlers()
    handlers.register("stock.decrement", lambda record: None)
    worker = RetryWorker(desk, handlers)
    first = report(desk, n=1)
    clock_of(desk).advance(1)
    second = report(desk, n=2)
    real = desk.attempted

    def attempted(record: ErrorRecord, *, ok: bool, detail: str) -> ErrorRecord:
        if record.id == first.id:
            raise OSError("disk full")
        return real(record, ok=ok, detail=detail)

    monkeypatch.setattr(desk, "attempted", attempted)
    advance_to(desk, second.next_attempt_at)
    assert worker.run_once() == 2
    assert desk.get(first.id).status is Status.RETRYING  # its lease brings it back
    assert desk.get(second.id).status is Status.RESOLVED


# -- the registry and the options -----------------------------------------------------------


def test_handlers_registry_lists_urls_and_replaces_a_kinds_handler() -> None:
    """A kind has one handler; urls() lists only callback URLs; get() returns what was set."""
    handlers = Handlers()

    def fn(record: ErrorRecord) -> None:
        return None

    handlers.register("order.status", fn)
    handlers.register_url("stock.decrement", "http://127.0.0.1:8001/warehouse/v1/retry/x")
    assert handlers.get("order.status") is fn
    assert handlers.get("stock.decrement") == "http://127.0.0.1:8001/warehouse/v1/retry/x"
    assert handlers.get("other") is None
    assert handlers.urls() == {"stock.decrement": "http://127.0.0.1:8001/warehouse/v1/retry/x"}
    handlers.register_url("order.status", "https://orders.example/retry")
    assert handlers.urls() == {
        "order.status": "https://orders.example/retry",
        "stock.decrement": "http://127.0.0.1:8001/warehouse/v1/retry/x",
    }


@pytest.mark.parametrize(
    ("kind", "url", "field"),
    [
        ("stock.decrement", "ftp://host/x", "url"),
        ("stock.decrement", "/relative/path", "url"),
        ("stock.decrement", "http://", "url"),
        ("stock.decrement", "http://host:notaport/x", "url"),
        ("stock.decrement", 42, "url"),
        ("stock.decrement", "http://host/a b", "url"),
        ("has space", "http://host/x", "kind"),
        ("", "http://host/x", "kind"),
    ],
)
def test_register_url_refuses_bad_input_naming_the_field(kind: str, url: str, field: str) -> None:
    """A bad kind or URL raises InvalidReport naming the field, and registers nothing."""
    handlers = Handlers()
    with pytest.raises(InvalidReport) as info:
        handlers.register_url(kind, url)
    assert info.value.field == field
    assert handlers.urls() == {}


def test_offer_url_keeps_to_the_callback_hosts_given_at_start() -> None:
    """An operator allows orders.internal: it is accepted over HTTP, loopback no longer is."""
    handlers = Handlers(callback_hosts=["orders.internal", "ORDERS-2.internal."])
    handlers.offer_url("order.status", "https://orders.internal/retry")
    handlers.offer_url("order.paid", "http://orders-2.internal:8080/retry")
    with pytest.raises(InvalidReport, match=r"'127\.0\.0\.1' is not one of") as info:
        handlers.offer_url("order.status", "http://127.0.0.1:1/x")
    assert info.value.field == "url"
    assert handlers.urls() == {
        "order.paid": "http://orders-2.internal:8080/retry",
        "order.status": "https://orders.internal/retry",
    }


def test_offer_url_never_replaces_a_handler_set_in_code() -> None:
    """register()/register_url() pin their kind; offer_url() may replace only its own."""
    handlers = Handlers()
    handlers.register_url("stock.decrement", "http://127.0.0.1:8001/retry")
    with pytest.raises(HandlerPinned, match=r"'stock\.decrement'"):
        handlers.offer_url("stock.decrement", "http://127.0.0.1:6666/mine")
    handlers.offer_url("order.status", "http://127.0.0.1:2/a")
    handlers.offer_url("order.status", "http://127.0.0.1:2/b")  # an HTTP one, replaceable
    assert handlers.urls() == {
        "order.status": "http://127.0.0.1:2/b",
        "stock.decrement": "http://127.0.0.1:8001/retry",
    }


@pytest.mark.parametrize("host", ["", " ", "host:8080", "a/b", "user@host", 5, "h?x"])
def test_a_bad_callback_host_is_refused_at_construction(host: Any) -> None:
    with pytest.raises(ConfigurationError, match="callback_hosts"):
        Handlers(callback_hosts=[host])


def test_worker_options_are_validated() -> None:
    """A batch outside 1-500 or a non-positive poll interval is refused at construction."""
    desk = make_desk()
    for options in ({"batch": 0}, {"batch": 501}, {"poll_interval": 0}, {"poll_interval": -1}):
        with pytest.raises(ConfigurationError):
            RetryWorker(desk, Handlers(), **options)  # type: ignore[arg-type]


# -- HTTP callbacks against a real server ---------------------------------------------------


class CallbackServer:
    """A uvicorn process serving tests/errors/callback_app.py on a loopback socket."""

    def __init__(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.errors.callback_app:app",
                "--fd",
                str(sock.fileno()),
                "--log-level",
                "critical",
                "--no-access-log",
            ],
            pass_fds=[sock.fileno()],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sock.close()
        pause = threading.Event()
        for _ in range(500):
            try:
                httpx.get(f"{self.url}/ok", timeout=1.0)
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError("the callback server exited") from None
                pause.wait(0.02)
        raise RuntimeError("the callback server did not start")

    def calls(self, name: str) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = httpx.get(f"{self.url}/calls/{name}").json()
        return calls

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="module")
def callback_server() -> Iterator[CallbackServer]:
    """One callback server for the module's HTTP tests (each test uses its own name)."""
    server = CallbackServer()
    yield server
    server.stop()


@pytest.mark.real_time
def test_an_http_callback_gets_the_record_id_as_idempotency_key_on_every_attempt(
    callback_server: CallbackServer,
) -> None:
    """503 twice is two failed attempts naming the status; the third call's 2xx resolves."""
    desk = make_desk()
    handlers = Handlers()
    handlers.register_url("stock.decrement", f"{callback_server.url}/retry/flaky?fail=2")
    with httpx.Client(timeout=5.0) as client:
        worker = RetryWorker(desk, handlers, http=client)
        record = report(desk, sku="sku-42", quantity=3)
        for _ in range(3):
            advance_to(desk, desk.get(record.id).next_attempt_at)
            assert worker.run_once() == 1
    record = desk.get(record.id)
    assert record.status is Status.RESOLVED
    assert [(a.ok, a.detail) for a in record.attempts] == [
        (False, "HTTP 503: stock database unavailable"),
        (False, "HTTP 503: stock database unavailable"),
        (True, "HTTP 200"),
    ]
    calls = callback_server.calls("flaky")
    assert [c["key"] for c in calls] == [record.id] * 3
    assert all(c["body"]["record"]["id"] == record.id for c in calls)
    assert calls[0]["body"]["record"]["payload"] == {"sku": "sku-42", "quantity": 3}
    assert calls[0]["body"]["record"]["kind"] == "stock.decrement"


@pytest.mark.real_time
def test_an_http_callback_that_keeps_failing_sends_the_record_to_review(
    callback_server: CallbackServer,
) -> None:
    """A callback answering 503 on every attempt escalates the record after the kind's attempts."""
    desk = make_desk()
    handlers = Handlers()
    handlers.register_url("stock.decrement", f"{callback_server.url}/retry/down?fail=1000")
    worker = RetryWorker(desk, handlers)  # its own default client
    try:
        record = report(desk)
        for _ in range(3):
            advance_to(desk, desk.get(record.id).next_attempt_at)
            worker.run_once()
    finally:
        worker.close()
    record = desk.get(record.id)
    assert record.status is Status.NEEDS_REVIEW
    assert all(a.detail.startswith("HTTP 503") for a in record.attempts)
    assert len(callback_server.calls("down")) == 3


@pytest.mark.real_time
def test_a_refused_connection_is_a_failed_attempt() -> None:
    """A callback URL where nothing listens is a failed attempt with the transport error."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    desk = make_desk()
    handlers = Handlers()
    handlers.register_url("stock.decrement", f"http://127.0.0.1:{port}/retry")
    with httpx.Client(timeout=5.0) as client:
        worker = RetryWorker(desk, handlers, http=client)
        record = report(desk)
        advance_to(desk, record.next_attempt_at)
        assert worker.run_once() == 1
    record = desk.get(record.id)
    assert record.status is Status.PENDING_RETRY
    [attempt] = record.attempts
    assert not attempt.ok
    assert attempt.detail.startswith("ConnectError")


# -- run_forever and the thread ---------------------------------------------------------------


def test_run_forever_retries_on_the_fake_clock_and_stops_when_told() -> None:
    """Rounds wait poll_interval on the desk's clock; once stop is set no round starts."""
    desk = make_desk()
    handler = Flaky(failures=1)
    handlers = Handlers()
    handlers.register("stock.decrement", handler)
    worker = RetryWorker(desk, handlers, poll_interval=2.0)
    record = report(desk)  # due at +10, then (after one failure) at +20 or so
    rounds = 0
    real_run_once = worker.run_once

    def counting_run_once() -> int:
        nonlocal rounds
        rounds += 1
        return real_run_once()

    worker.run_once = counting_run_once  # type: ignore[method-assign]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))
        while desk.get(record.id).status is not Status.RESOLVED:
            assert desk.clock.time() < START + 100, "the worker did not resolve the record"
            assert not task.done(), task.result()
            await asyncio.sleep(0)
        stop.set()
        rounds_at_stop = rounds
        await asyncio.wait_for(task, timeout=10)
        assert rounds == rounds_at_stop  # no round starts after stop is set

    asyncio.run(main())
    record = desk.get(record.id)
    assert [a.ok for a in record.attempts] == [False, True]
    assert record.attempts[0].at == START + 10  # fake time advanced only by the worker's waits
    assert set(clock_of(desk).sleeps) == {2.0}


class HangingClock(FakeClock):
    """A fake clock whose async sleeps never end (a very long poll interval, never reached)."""

    def __init__(self, wall_start: float) -> None:
        super().__init__(wall_start=wall_start)
        self.waiting = asyncio.Event()

    async def sleep_async(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.waiting.set()
        await asyncio.Event().wait()


def test_setting_stop_ends_the_wait_between_rounds_at_once() -> None:
    """A worker waiting an hour between rounds returns as soon as stop is set."""
    clock = HangingClock(wall_start=START)
    desk = ErrorDesk(SQLiteStore(":memory:"), clock=clock)
    worker = RetryWorker(desk, Handlers(), poll_interval=3600.0)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))
        await asyncio.wait_for(clock.waiting.wait(), timeout=10)
        assert not task.done()  # it waits between rounds
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(main())
    assert clock.sleeps == [3600.0]
    assert clock.time() == START  # the hour never passed


def test_a_failing_round_does_not_stop_run_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    """If claiming fails once (the store is down), the next round still resolves the record."""
    desk = make_desk()
    handlers = Handlers()
    handlers.register("stock.decrement", lambda record: "done")
    worker = RetryWorker(desk, handlers)
    record = report(desk)
    advance_to(desk, record.next_attempt_at)
    real_claim = desk.claim_due
    failures = [OSError("database is locked")]

    def claim_due(*, limit: int = 10) -> list[ErrorRecord]:
        if failures:
            raise failures.pop()
        return real_claim(limit=limit)

    monkeypatch.setattr(desk, "claim_due", claim_due)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))
        while desk.get(record.id).status is not Status.RESOLVED:
            assert desk.clock.time() < START + 100, "the worker gave up after a failed round"
            assert not task.done(), task.result()
            await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())
    assert failures == []
    assert desk.get(record.id).attempts[0].detail == "done"


@pytest.mark.real_time
def test_start_thread_runs_the_worker_until_stop() -> None:
    """The worker's daemon thread resolves a due record; stop() ends the thread."""
    desk = make_desk()
    handled = threading.Event()

    def handler(record: ErrorRecord) -> None:
        handled.set()

    handlers = Handlers()
    handlers.register("stock.decrement", handler)
    worker = RetryWorker(desk, handlers)
    record = report(desk)
    thread = worker.start_thread()
    try:
        assert thread.daemon
        with pytest.raises(RuntimeError, match="already running"):
            worker.start_thread()
        assert handled.wait(10)
    finally:
        worker.stop()
    assert not thread.is_alive()
    worker.stop()  # a second stop does nothing
    # stop() lets the running round finish, so the attempt is recorded by now
    assert desk.get(record.id).status is Status.RESOLVED


# -- retention --------------------------------------------------------------------------------
DAY = 86400.0


def test_clean_up_deletes_closed_records_past_the_retention_and_says_how_many(
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk = make_desk()
    worker = RetryWorker(desk, Handlers(), retention_days=14)
    old = report(desk, n=1)
    kept_open = report(desk, n=2)
    desk.resolve(old.id, actor="ops")
    advance_to(desk, START + 13 * DAY)
    recent = report(desk, n=3)
    desk.discard(recent.id, actor="ops")
    assert worker.clean_up() == 0  # 13 days: not yet
    advance_to(desk, START + 14 * DAY + 1)
    with caplog.at_level("INFO", logger="failsafe.errors.worker"):
        assert worker.clean_up() == 1
    assert "retention: deleted 1 resolved or discarded records unchanged for 14 days" in (
        caplog.text
    )
    assert [r.id for r in desk.find(Query(statuses=())).records] == [recent.id, kept_open.id]
    advance_to(desk, START + 60 * DAY)
    assert worker.clean_up() == 1  # the discarded one; the open one stays, however old
    assert desk.get(kept_open.id).status is Status.PENDING_RETRY


def test_a_pass_deletes_at_most_its_batches_and_the_next_pass_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import failsafe.errors.worker as worker_module

    monkeypatch.setattr(worker_module, "RETENTION_BATCH", 2)
    monkeypatch.setattr(worker_module, "RETENTION_PER_PASS", 2)
    desk = make_desk()
    worker = RetryWorker(desk, Handlers(), retention_days=1)
    for n in range(7):
        desk.discard(report(desk, n=n).id, actor="ops")
    advance_to(desk, START + 2 * DAY)
    assert [worker.clean_up() for _ in range(3)] == [4, 3, 0]


def test_retention_none_keeps_closed_records_and_bad_values_are_refused() -> None:
    desk = make_desk()
    worker = RetryWorker(desk, Handlers(), retention_days=None)
    desk.resolve(report(desk).id, actor="ops")
    advance_to(desk, START + 1000 * DAY)
    assert worker.clean_up() == 0
    assert desk.find(Query(statuses=())).total == 1
    for bad in (0, -1, float("inf"), float("nan"), "14", True):
        with pytest.raises(ConfigurationError, match="retention_days"):
            RetryWorker(desk, Handlers(), retention_days=bad)  # type: ignore[arg-type]


def test_run_forever_cleans_up_at_once_then_every_retention_pass() -> None:
    desk = make_desk()
    worker = RetryWorker(desk, Handlers(), poll_interval=30.0, retention_days=1)
    passes: list[float] = []
    real = worker.clean_up

    def counting() -> int:
        passes.append(desk.clock.time())
        return real()

    worker.clean_up = counting  # type: ignore[method-assign]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))
        while desk.clock.time() < START + 200:
            assert not task.done(), task.result()
            await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())
    # rounds every 30 s; a retention pass at the first round and then once a minute
    assert passes[:4] == [START, START + 60, START + 120, START + 180]


# -- kinds without a handler ---------------------------------------------------------------------
def test_a_kind_without_a_handler_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    desk = make_desk()
    worker = RetryWorker(desk, Handlers())
    for n in range(3):
        report(desk, kind="price.lookup", n=n)
    advance_to(desk, START + 100)
    with caplog.at_level("WARNING", logger="failsafe.errors.worker"):
        assert worker.run_once() == 3
        advance_to(desk, START + 200)
        worker.run_once()
    warnings = [r.getMessage() for r in caplog.records if "no handler" in r.getMessage()]
    assert len(warnings) == 1
    assert "no handler for kind 'price.lookup'" in warnings[0]
    assert "PUT /v1/handlers/price.lookup" in warnings[0]
