"""ErrorDesk: redaction, scheduling, a person's actions and the worker's bookkeeping."""

from __future__ import annotations

import random
from typing import Any

import pytest

from failsafe import Backoff
from failsafe.errors import (
    Action,
    ErrorDesk,
    InvalidMove,
    Redactor,
    Report,
    RetrySchedule,
    SQLiteStore,
    Status,
)
from failsafe.errors.redact import REDACTED
from failsafe.errors.store import StoreUnavailable
from failsafe.testing import FakeClock


def desk(**kwargs: object) -> ErrorDesk:
    return ErrorDesk(SQLiteStore(":memory:"), clock=FakeClock(wall_start=1000.0), **kwargs)  # type: ignore[arg-type]


def stock(**payload: object) -> Report:
    return Report(kind="stock.decrement", action=Action.RETRY, source="warehouse", payload=payload)


def test_secrets_are_redacted_before_they_are_stored() -> None:
    """Secret keys at any depth, card numbers and key=value secrets never reach the store."""
    d = desk()
    record, _ = d.report(
        Report(
            kind="payment.failed",
            action=Action.REVIEW,
            source="payments",
            payload={
                "headers": {"Authorization": "Bearer abc", "Cookie": "s=1", "Accept": "json"},
                "user": {"password": "hunter2", "name": "Ann"},
                "card": "4111 1111 1111 1111",
                "order": "12345678901234",  # 14 digits, fails the Luhn check: kept
                "items": [{"api_key": "k"}],
            },
            error_message="login failed for token=abc123 with card 4012888888881881",
            traceback="password: 'x'",
        ),
        actor="payments",
    )
    p = record.payload
    assert p["headers"] == {"Authorization": REDACTED, "Cookie": REDACTED, "Accept": "json"}
    assert p["user"] == {"password": REDACTED, "name": "Ann"}
    assert p["card"] == REDACTED
    assert p["order"] == "12345678901234"
    assert p["items"] == [{"api_key": REDACTED}]
    assert record.error_message == f"login failed for token={REDACTED} with card {REDACTED}"
    assert "x" not in (record.traceback or "").replace("password", "")


def test_redaction_is_configurable() -> None:
    """Extra secret keys are redacted; a disabled redactor stores reports as they are."""
    record, _ = desk(redactor=Redactor.with_keys(["pin"])).report(stock(pin="1234"), actor="w")
    assert record.payload == {"pin": REDACTED}
    record, _ = desk(redactor=Redactor(enabled=False)).report(stock(password="p"), actor="w")
    assert record.payload == {"password": "p"}


def test_first_attempt_is_scheduled_with_the_kinds_backoff() -> None:
    """A retry report is due after the first delay of its kind's schedule."""
    d = desk(schedules={"stock.decrement": RetrySchedule(backoff=Backoff.constant(5))})
    record, _ = d.report(stock(n=1), actor="w")
    assert record.next_attempt_at == 1005.0


def test_attempts_then_escalation_to_review() -> None:
    """Failed attempts are rescheduled with backoff; the last one sends the record to review."""
    clock = FakeClock(wall_start=0.0)
    schedule = RetrySchedule(
        attempts=3, backoff=Backoff.exponential(10, maximum=100, jitter="none")
    )
    d = ErrorDesk(SQLiteStore(":memory:"), clock=clock, default_schedule=schedule)
    record, _ = d.report(stock(n=1), actor="w")
    assert record.next_attempt_at == 10.0
    dues = []
    for _ in range(3):
        clock.advance(record.next_attempt_at - clock.time())  # type: ignore[operator]
        [claimed] = d.claim_due()
        record = d.attempted(claimed, ok=False, detail="db locked")
        dues.append(record.next_attempt_at)
    assert dues == [10.0 + 20.0, 30.0 + 40.0, None]
    assert record.status is Status.NEEDS_REVIEW
    assert len(record.attempts) == 3


def test_success_resolves() -> None:
    """A good attempt resolves the record."""
    d = desk(default_schedule=RetrySchedule(backoff=Backoff.none()))
    d.report(stock(n=1), actor="w")
    [claimed] = d.claim_due()
    assert d.attempted(claimed, ok=True, detail="HTTP 200").status is Status.RESOLVED


def test_person_actions_and_bulk() -> None:
    """Resolve, retry and discard are audited; bulk reports what it refused and why."""
    d = desk(rng=random.Random(1))
    a, _ = d.report(stock(n=1), actor="w")
    b, _ = d.report(stock(n=2), actor="w")
    c, _ = d.report(stock(n=3), actor="w")
    d.discard(c.id, actor="anna", note="duplicate order")
    result = d.bulk("resolve", [a.id, b.id, c.id, "missing"], actor="anna", note="fixed")
    assert {r.id for r in result.changed} == {a.id, b.id}
    assert set(result.refused) == {c.id, "missing"}
    assert "discarded" in result.refused[c.id]
    with pytest.raises(InvalidMove):
        d.retry(a.id, actor="anna")
    review, _ = d.report(
        Report(kind="order.not_found", action=Action.REVIEW, source="orders"), actor="orders"
    )
    again = d.retry(review.id, actor="anna", note="order restored")
    assert again.status is Status.PENDING_RETRY
    assert again.next_attempt_at == d.clock.time()
    with pytest.raises(ValueError, match="action"):
        d.bulk("explode", [a.id], actor="anna")


def test_bulk_when_the_store_goes_away() -> None:
    """Down from the start: StoreUnavailable (503). Down midway: the rest refused, untried."""
    d = desk()
    ids = [d.report(stock(n=n), actor="w")[0].id for n in range(4)]
    real = d.store.move
    calls: list[str] = []

    def move_until(limit: int) -> Any:
        def move(record_id: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(record_id)
            if len(calls) > limit:
                raise StoreUnavailable("connection refused", retry_after=2.0)
            return real(record_id, *args, **kwargs)

        return move

    d.store.move = move_until(0)  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        d.bulk("resolve", ids, actor="anna")
    calls.clear()
    d.store.move = move_until(2)  # type: ignore[method-assign]
    result = d.bulk("resolve", ids, actor="anna")
    assert [r.id for r in result.changed] == ids[:2]
    assert result.refused == dict.fromkeys(ids[2:], "connection refused")
    assert calls == ids[:3]  # the fourth was not tried


def test_a_persons_retry_starts_a_fresh_series() -> None:
    """After review, a person's retry gets the kind's full number of attempts again."""
    clock = FakeClock(wall_start=0.0)
    schedule = RetrySchedule(attempts=2, backoff=Backoff.none())
    d = ErrorDesk(SQLiteStore(":memory:"), clock=clock, default_schedule=schedule)
    record, _ = d.report(stock(n=1), actor="w")
    for _ in range(2):
        clock.advance(1)
        [claimed] = d.claim_due()
        record = d.attempted(claimed, ok=False, detail="down")
    assert record.status is Status.NEEDS_REVIEW
    d.retry(record.id, actor="anna")  # at the very instant of the last attempt
    [claimed] = d.claim_due()
    record = d.attempted(claimed, ok=False, detail="password=hunter2 still down")
    assert record.status is Status.PENDING_RETRY  # one of two fresh attempts used
    assert "hunter2" not in record.attempts[-1].detail


def test_report_accepts_the_action_as_text() -> None:
    """``Report(action="review")`` is converted, so the desk stores it as the enum."""
    record, _ = desk().report(Report(kind="k", action="review", source="s"), actor="s")  # type: ignore[arg-type]
    assert record.status is Status.NEEDS_REVIEW


@pytest.mark.parametrize(
    ("options", "option"), [({"attempts": 0}, "attempts"), ({"lease": 0}, "lease")]
)
def test_bad_schedule_names_the_option(options: dict[str, float], option: str) -> None:
    """A schedule with no attempts or no lease fails at construction, naming the option."""
    from failsafe import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        RetrySchedule(**options)  # type: ignore[arg-type]
    assert info.value.option == option
