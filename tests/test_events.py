"""Listeners: global and per-policy, the logging listener, and failing listeners."""

from __future__ import annotations

import logging

import pytest

import failsafe
from failsafe import Backoff, Retry
from failsafe.events import AttemptFailed, RetryScheduled
from failsafe.logging import LoggingListener
from failsafe.testing import RecordingListener, fail_first


def test_global_listener_receives_every_policys_events() -> None:
    """``add_listener`` sees events of policies built without listeners, until removed."""
    events = RecordingListener()
    failsafe.add_listener(events)
    try:
        Retry(backoff=Backoff.none()).call(fail_first(1, ConnectionError, returns=1))
    finally:
        failsafe.remove_listener(events)
    assert events.kinds == ["AttemptFailed", "RetryScheduled"]
    Retry(backoff=Backoff.none()).call(fail_first(1, ConnectionError, returns=1))
    assert len(events.events) == 2


def test_failing_listener_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises is logged and the call goes on."""

    def broken(event: failsafe.Event) -> None:
        raise RuntimeError("listener bug")

    retry = Retry(backoff=Backoff.none(), listeners=[broken])
    with caplog.at_level(logging.ERROR, logger="failsafe.events"):
        assert retry.call(fail_first(1, ConnectionError, returns="ok")) == "ok"
    assert "listener" in caplog.text
    assert "listener bug" in caplog.text


def test_logging_listener_levels(caplog: pytest.LogCaptureFixture) -> None:
    """Give-ups log as warnings, scheduled retries as info, failed attempts as debug."""
    retry = Retry(attempts=2, backoff=Backoff.none(), listeners=[LoggingListener()])
    with caplog.at_level(logging.DEBUG, logger="failsafe"), pytest.raises(ConnectionError):
        retry.call(fail_first(5, ConnectionError))
    levels = [(r.levelname, type(r.failsafe_event).__name__) for r in caplog.records]
    assert levels == [
        ("DEBUG", "AttemptFailed"),
        ("INFO", "RetryScheduled"),
        ("DEBUG", "AttemptFailed"),
        ("WARNING", "RetriesExhausted"),
    ]


def test_events_are_frozen() -> None:
    """Events cannot be changed by a listener."""
    event = RetryScheduled(policy="p", attempt=1, delay=0.5, outcome=failsafe.Outcome(1))
    with pytest.raises(AttributeError):
        event.delay = 2  # type: ignore[misc]
    assert isinstance(event, failsafe.Event)
    assert not isinstance(event, AttemptFailed)


def test_a_lost_breaker_storage_logs_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """CircuitStorageUnavailable is a warning: the breaker is no longer sharing its state."""
    from failsafe.events import CircuitStorageRestored, CircuitStorageUnavailable

    listener = LoggingListener()
    with caplog.at_level(logging.DEBUG, logger="failsafe"):
        listener(CircuitStorageUnavailable(policy="b", key=None, error="E", message="down"))
        listener(CircuitStorageRestored(policy="b", key=None, wrote_back=False, outage=1.0))
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
