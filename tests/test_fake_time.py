"""failsafe.testing.fake_time and the failsafe_fake_time fixture: one switch for a test suite."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from failsafe import (
    SYSTEM_CLOCK,
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConsecutiveFailures,
    Pipeline,
    Retry,
    Timeout,
    TimeoutExceeded,
)
from failsafe.clock import SystemClock
from failsafe.testing import FakeClock, fail_first, fake_time


def test_policies_built_before_the_switch_use_fake_time() -> None:
    """A Retry built with the default clock before fake_time sleeps on the fake clock."""
    retry = Retry(attempts=4, backoff=Backoff.exponential(initial=1, maximum=10, jitter="none"))
    retry.call(lambda: None)  # bound to its runner before the switch
    with fake_time() as clock:
        start = clock.monotonic()
        assert retry.call(fail_first(3, ConnectionError, returns="ok")) == "ok"
        assert clock.sleeps == [1, 2, 4]
        assert clock.monotonic() - start == 7


def test_policies_built_inside_the_switch_use_fake_time() -> None:
    """A breaker built inside fake_time rests on fake time: advancing the clock half-opens it."""
    with fake_time() as clock:
        breaker = CircuitBreaker(trip=ConsecutiveFailures(threshold=1), reset_timeout=60)
        with pytest.raises(ConnectionError):
            breaker.call(fail_first(1, ConnectionError))
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: "up")
        clock.advance(60)
        assert breaker.call(lambda: "up") == "up"
        assert breaker.state is CircuitState.CLOSED


def test_coroutine_timeouts_fire_on_fake_time() -> None:
    """Timeout(5) around a coroutine that sleeps an hour on the default clock ends at fake 5 s."""
    timeout = Timeout(5)

    async def slow() -> None:
        await SYSTEM_CLOCK.sleep_async(3600)

    with fake_time() as clock:
        start = clock.monotonic()
        with pytest.raises(TimeoutExceeded):
            asyncio.run(timeout.call_async(slow))
        assert clock.monotonic() - start == 5


def test_a_policy_with_its_own_clock_keeps_it() -> None:
    """fake_time changes the default clock only; an explicit clock= is left alone."""
    own = FakeClock()
    retry = Retry(backoff=Backoff.constant(1.0), clock=own)
    with fake_time() as clock:
        retry.call(fail_first(2, ConnectionError))
        assert clock.sleeps == []
    assert own.sleeps == [1.0, 1.0]


def test_the_real_clock_is_back_after_the_block_and_blocks_nest() -> None:
    """Nested blocks use the innermost clock; after the outermost, SystemClock is real again."""
    with fake_time() as outer:
        with fake_time(FakeClock(start=100.0)) as inner:
            assert SYSTEM_CLOCK.monotonic() == 100.0
            SYSTEM_CLOCK.sleep(2)
        assert inner.sleeps == [2]
        SYSTEM_CLOCK.sleep(3)
        assert outer.sleeps == [3]
    assert SystemClock.monotonic is time.monotonic  # type: ignore[comparison-overlap]
    assert SystemClock.time is time.time  # type: ignore[comparison-overlap]


def test_the_default_fake_clock_starts_at_the_real_readings() -> None:
    """The fake time continues from the real clocks, so state made before the block stays sane."""
    before_mono, before_wall = time.monotonic(), time.time()
    with fake_time() as clock:
        assert before_mono <= clock.monotonic() <= time.monotonic()
        assert before_wall <= clock.time() <= time.time()


def test_an_error_in_the_block_restores_the_real_clock() -> None:
    """The real clock is restored even when the block raises."""
    with pytest.raises(RuntimeError), fake_time():
        raise RuntimeError("boom")
    assert SystemClock.monotonic is time.monotonic  # type: ignore[comparison-overlap]


def test_the_fixture(failsafe_fake_time: FakeClock) -> None:
    """The pytest fixture switches fake time on for the test and gives its clock."""
    pipeline = Pipeline(Retry(backoff=Backoff.constant(30)), Timeout(1))
    assert pipeline.call(fail_first(3, TimeoutError, returns="ok")) == "ok"
    assert failsafe_fake_time.sleeps == [30, 30, 30]


@pytest.mark.real_time  # waits on a child pytest (subprocess polls with a real sleep)
def test_the_fixture_is_installed_as_a_pytest_plugin(tmp_path: Path) -> None:
    """A user's suite gets failsafe_fake_time with failsafe installed, and no real sleep."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            from failsafe import Backoff, Retry

            def test_retry(failsafe_fake_time):
                flaky = iter([ConnectionError(), ConnectionError(), "ok"])

                def call():
                    item = next(flaky)
                    if isinstance(item, Exception):
                        raise item
                    return item

                assert Retry(backoff=Backoff.constant(600)).call(call) == "ok"
                assert failsafe_fake_time.sleeps == [600, 600]  # recorded, not waited
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
