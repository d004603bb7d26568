"""RateLimiter in process memory: token bucket (GCRA) and sliding window, wait or reject, keys."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from contextvars import ContextVar
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failsafe import (
    Backoff,
    ConfigurationError,
    Pipeline,
    PolicyRejected,
    RateLimited,
    RateLimiter,
    Retry,
    UsageError,
)
from failsafe.events import RateLimitDelayed, RateLimitRejected
from failsafe.testing import FakeClock, RecordingListener, fail_first
from tests.conftest import Driver

EPS = 1e-6  # the tolerance of the bounds below (the limiter's own is 1e-9 s a permit)


class FrozenClock(FakeClock):
    """A fake clock whose sleeps are recorded but do not move time (callers arriving at once)."""

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def sleep_async(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


class Hanging(FakeClock):
    """A fake clock whose async sleeps never end (until the task is cancelled)."""

    async def sleep_async(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.get_running_loop().create_future()


def limiters(clock: FakeClock, **options: Any) -> list[RateLimiter]:
    """A token bucket and a sliding window that both admit 5 at once and 10 a second after."""
    return [
        RateLimiter(rate=10, per=1.0, burst=5, clock=clock, **options),
        RateLimiter.sliding_window(limit=5, window=0.5, clock=clock, **options),
    ]


# -- construction ------------------------------------------------------------------------------
def test_no_rate_is_a_configuration_error_naming_it() -> None:
    """``RateLimiter()`` fails at construction, naming ``rate``: no default rate fits all."""
    with pytest.raises(ConfigurationError) as info:
        RateLimiter()
    assert info.value.option == "rate"
    with pytest.raises(ConfigurationError) as info:
        RateLimiter.sliding_window()
    assert info.value.option == "limit"


def test_the_defaults() -> None:
    """Given a rate only: per second, a bucket of one second's permits, reject at once, no keys."""
    limiter = RateLimiter(rate=2.5)
    assert (limiter.per, limiter.burst, limiter.max_wait) == (1.0, math.ceil(2.5), 0.0)
    assert (limiter.key, limiter.max_keys, limiter.idle_ttl) == (None, 10_000, None)
    assert limiter.algorithm == "token_bucket"
    assert "2.5 calls per 1s, bursts of 3" in repr(limiter)
    window = RateLimiter.sliding_window(limit=7)
    assert (window.rate, window.per, window.algorithm) == (7, 1.0, "sliding_window")


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": -1}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"rate": 1, "per": 0}, "per"),
        ({"rate": 1, "burst": 0}, "burst"),
        ({"rate": 1, "burst": 1.5}, "burst"),
        ({"rate": 1, "max_wait": -1}, "max_wait"),
        ({"rate": 1, "max_wait": float("inf")}, "max_wait"),
        ({"rate": 1, "max_keys": 0}, "max_keys"),
        ({"rate": 1, "idle_ttl": 0}, "idle_ttl"),
        ({"rate": 1, "algorithm": "leaky"}, "algorithm"),
        ({"rate": 1, "storage": "redis://x"}, "storage"),
        ({"rate": 1, "storage_retry": 0}, "storage_retry"),
        ({"rate": 1, "key": "tenant"}, "key"),
        ({"rate": 1.5, "algorithm": "sliding_window"}, "limit"),
        ({"rate": 2, "burst": 2, "algorithm": "sliding_window"}, "burst"),
    ],
)
def test_bad_options_fail_at_construction_naming_the_option(
    options: dict[str, Any], option: str
) -> None:
    """Each bad option raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as info:
        RateLimiter(**options)
    assert info.value.option == option


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 2.0}, "limit"),
        ({"limit": 2, "window": 0}, "window"),
        ({"limit": 2, "rate": 3}, "rate"),
        ({"limit": 2, "burst": 3}, "burst"),
    ],
)
def test_sliding_window_checks_its_options(options: dict[str, Any], option: str) -> None:
    """``sliding_window`` names its own bad options, and refuses the token bucket's."""
    with pytest.raises(ConfigurationError) as info:
        RateLimiter.sliding_window(**options)
    assert info.value.option == option


# -- admission and rejection -------------------------------------------------------------------
def test_a_burst_then_the_steady_rate(driver: Driver) -> None:
    """A full bucket admits ``burst`` at once, then one call per ``per / rate`` seconds."""
    clock, events = FakeClock(), RecordingListener()
    limiter = RateLimiter(rate=10, per=1.0, burst=5, clock=clock, listeners=[events])
    assert [driver.call(limiter, lambda i=i: i) for i in range(5)] == list(range(5))
    with pytest.raises(RateLimited) as info:
        driver.call(limiter, lambda: "sixth")
    assert info.value.retry_after == pytest.approx(0.1)
    assert isinstance(info.value, PolicyRejected)
    assert (info.value.limiter, info.value.key) == ("rate-limiter", None)
    admitted = 0
    for _ in range(20):  # two seconds at the steady rate: one call every 0.1 s
        clock.advance(0.1)
        admitted += driver.call(limiter, lambda: 1)
        with pytest.raises(RateLimited):
            driver.call(limiter, lambda: "a second one in the same tenth")
    assert admitted == 20
    assert events.kinds.count("RateLimitRejected") == 21
    assert clock.sleeps == []  # max_wait=0: nobody waited


def test_a_sliding_window_admits_limit_in_any_window(driver: Driver) -> None:
    """The window (t - window, t] never holds more than ``limit`` admitted calls."""
    clock = FakeClock()
    limiter = RateLimiter.sliding_window(limit=3, window=1.0, clock=clock)
    for at in (0.0, 0.2, 0.4):
        clock.advance(at - clock.monotonic())
        assert driver.call(limiter, lambda: "ok") == "ok"
    clock.advance(0.1)  # t = 0.5
    with pytest.raises(RateLimited) as info:
        driver.call(limiter, lambda: "fourth")
    assert info.value.retry_after == pytest.approx(0.5)  # when the call at 0.0 leaves
    clock.advance(0.5)  # t = 1.0: the call at 0.0 is out of (0.0, 1.0]
    assert driver.call(limiter, lambda: "ok") == "ok"
    with pytest.raises(RateLimited) as info:
        driver.call(limiter, lambda: "fifth")
    assert info.value.retry_after == pytest.approx(0.2)


@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_retry_after_is_when_a_permit_is_free(which: int) -> None:
    """Just before ``retry_after`` a call is still refused; at it, admitted."""
    clock = FakeClock()
    limiter = limiters(clock)[which]
    while limiter.try_acquire():
        clock.advance(0.01)
    with pytest.raises(RateLimited) as info:
        limiter.call(lambda: "refused")
    retry_after = info.value.retry_after
    assert retry_after > 0
    clock.advance(retry_after - 0.001)
    assert limiter.try_acquire() is False
    clock.advance(0.001)
    assert limiter.try_acquire() is True


def test_a_rejected_call_never_runs_and_takes_nothing(driver: Driver) -> None:
    """Rejected calls do not run and do not push the next free permit further."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1, per=1.0, burst=1, clock=clock)
    ran: list[int] = []
    driver.call(limiter, ran.append, 1)
    for _ in range(10):
        with pytest.raises(RateLimited) as info:
            driver.call(limiter, ran.append, 2)
        assert info.value.retry_after == pytest.approx(1.0)
    assert ran == [1]
    clock.advance(1.0)
    driver.call(limiter, ran.append, 3)
    assert ran == [1, 3]


# -- waiting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_waiting_callers_reserve_successive_permits_within_max_wait(which: int) -> None:
    """Callers arriving at once wait 0, then one interval more each, until max_wait is passed."""
    clock, events = FrozenClock(), RecordingListener()
    if which == 0:
        limiter = RateLimiter(rate=10, burst=1, max_wait=0.25, clock=clock, listeners=[events])
    else:
        limiter = RateLimiter.sliding_window(
            limit=1, window=0.1, max_wait=0.25, clock=clock, listeners=[events]
        )
    waits = [limiter.acquire() for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.1, 0.2])
    assert clock.sleeps == pytest.approx([0.1, 0.2])
    for _ in range(2):  # beyond max_wait: rejected at once, without waiting or taking a permit
        with pytest.raises(RateLimited) as info:
            limiter.acquire()
        assert info.value.retry_after == pytest.approx(0.3)
    assert len(clock.sleeps) == 2
    delays = [e.delay for e in events.of_type(RateLimitDelayed)]
    assert delays == pytest.approx([0.1, 0.2])
    assert [e.retry_after for e in events.of_type(RateLimitRejected)] == pytest.approx([0.3] * 2)


def test_calls_wait_for_their_permit_through_both_drivers(driver: Driver) -> None:
    """Under ``call``/``call_async`` a call without a free permit sleeps on the clock, then runs."""
    clock = FakeClock()
    limiter = RateLimiter(rate=4, per=1.0, burst=2, max_wait=1.0, clock=clock)
    results = [driver.call(limiter, lambda i=i: i) for i in range(6)]
    assert results == list(range(6))
    assert clock.sleeps == pytest.approx([0.25] * 4)  # each waited for the next refill
    assert clock.monotonic() == pytest.approx(1.0)


def test_a_wait_never_exceeds_max_wait(driver: Driver) -> None:
    """Whatever the queue of reservations, no call sleeps longer than max_wait."""
    clock = FrozenClock()
    limiter = RateLimiter(rate=100, burst=3, max_wait=0.05, clock=clock)
    admitted = rejected = 0
    for _ in range(50):
        try:
            driver.call(limiter, lambda: None)
            admitted += 1
        except RateLimited:
            rejected += 1
    assert max(clock.sleeps) <= 0.05 + 1e-9
    assert admitted == 3 + 5  # the bucket, then the permits due within 0.05 s
    assert rejected == 42


def test_try_acquire_never_waits_nor_reserves() -> None:
    """``try_acquire`` takes a free permit or nothing, even on a limiter that lets calls wait."""
    clock = FrozenClock()
    limiter = RateLimiter(rate=10, burst=1, max_wait=5, clock=clock)
    assert limiter.try_acquire() is True
    assert limiter.try_acquire() is False
    assert limiter.acquire() == pytest.approx(0.1)  # the next permit was not reserved
    assert clock.sleeps == pytest.approx([0.1])


def test_acquire_async_waits_and_rejects() -> None:
    """``acquire_async`` awaits its permit on the clock, and rejects beyond max_wait."""
    clock = FrozenClock()
    limiter = RateLimiter(rate=10, burst=1, max_wait=0.15, clock=clock)

    async def main() -> list[float]:
        waits = [await limiter.acquire_async(), await limiter.acquire_async()]
        with pytest.raises(RateLimited):
            await limiter.acquire_async()
        return waits

    assert asyncio.run(main()) == pytest.approx([0.0, 0.1])
    assert clock.sleeps == pytest.approx([0.1])


@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_a_task_cancelled_while_waiting_gives_its_permit_back(which: int) -> None:
    """The permit reserved by a cancelled waiter is free again for the next caller."""
    clock = Hanging()
    if which == 0:
        limiter = RateLimiter(rate=10, burst=1, max_wait=1.0, clock=clock)
    else:
        limiter = RateLimiter.sliding_window(limit=1, window=0.1, max_wait=1.0, clock=clock)

    async def main() -> None:
        assert limiter.try_acquire()
        waiter = asyncio.create_task(limiter.call_async(asyncio.sleep, 0))
        await asyncio.sleep(0)
        assert clock.sleeps == pytest.approx([0.1])
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        other = asyncio.create_task(limiter.acquire_async())
        await asyncio.sleep(0)
        assert clock.sleeps == pytest.approx([0.1, 0.1])  # not 0.2: the permit came back
        other.cancel()
        with pytest.raises(asyncio.CancelledError):
            await other

    asyncio.run(main())


# -- misuse ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_a_misuse_gives_its_permit_back(which: int) -> None:
    """A coroutine function given to ``call`` raises UsageError and spends no permit."""
    clock = FakeClock()
    limiter = [
        RateLimiter(rate=1, burst=1, clock=clock),
        RateLimiter.sliding_window(limit=1, window=1.0, clock=clock),
    ][which]

    async def fetch() -> str:
        return "never awaited"

    with pytest.raises(UsageError):
        limiter.call(fetch)  # type: ignore[unused-coroutine]
    assert limiter.call(lambda: "the permit is still there") == "the permit is still there"
    with pytest.raises(RateLimited):
        limiter.call(lambda: "and now it is spent")


def test_a_plain_function_under_call_async_gives_its_permit_back() -> None:
    """A plain function given to ``call_async`` raises UsageError and spends no permit."""
    limiter = RateLimiter(rate=1, burst=1, clock=FakeClock())

    async def main() -> None:
        with pytest.raises(UsageError):
            await limiter.call_async(lambda: "not awaitable")  # type: ignore[arg-type,return-value]
        assert limiter.try_acquire() is True
        assert limiter.try_acquire() is False

    asyncio.run(main())


def test_a_failing_call_spends_its_permit(driver: Driver) -> None:
    """The dependency's own exception passes unchanged, and its permit stays spent."""
    limiter = RateLimiter(rate=1, burst=1, clock=FakeClock())
    with pytest.raises(ConnectionError):
        driver.call(limiter, fail_first(1, ConnectionError, returns="ok"))
    with pytest.raises(RateLimited):
        driver.call(limiter, lambda: "no permit left")


# -- keys --------------------------------------------------------------------------------------
tenant: ContextVar[str] = ContextVar("tenant", default="anonymous")


def test_each_key_has_its_own_limit(driver: Driver) -> None:
    """Keys from the ``key`` function are limited independently, and named in the rejection."""
    clock, events = FakeClock(), RecordingListener()
    limiter = RateLimiter(
        rate=1, per=60, burst=2, key=tenant.get, clock=clock, listeners=[events], name="api"
    )

    def as_tenant(name: str) -> Any:
        token = tenant.set(name)
        try:
            return driver.call(limiter, lambda: name)
        finally:
            tenant.reset(token)

    assert [as_tenant("acme"), as_tenant("acme")] == ["acme", "acme"]
    with pytest.raises(RateLimited) as info:
        as_tenant("acme")
    assert (info.value.key, info.value.limiter) == ("acme", "api")
    assert "key 'acme'" in str(info.value)
    assert [as_tenant("globex"), as_tenant("globex")] == ["globex", "globex"]
    assert events.of_type(RateLimitRejected)[0].key == "acme"
    assert limiter.keys_held == 2


def test_explicit_keys_outside_a_call() -> None:
    """``try_acquire(key)`` and ``acquire(key)`` charge the key given; ``None`` the current one."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1, per=60, burst=1, key=lambda: "current", clock=clock)
    assert limiter.try_acquire("a") is True
    assert limiter.try_acquire("a") is False
    assert limiter.acquire("b") == 0.0
    assert limiter.try_acquire() is True  # the key function's "current"
    with pytest.raises(RateLimited) as info:
        limiter.acquire()
    assert info.value.key == "current"
    single = RateLimiter(rate=1, per=60, burst=1, clock=clock)
    assert single.try_acquire() is True
    assert single.try_acquire("x") is True  # any key may be charged explicitly
    assert single.try_acquire() is False


@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_a_key_that_holds_nothing_is_dropped(which: int) -> None:
    """Once its bucket is full again (its window empty), a key is swept from the map."""
    clock = FakeClock()
    limiter = limiters(clock)[which]
    for k in range(100):
        assert limiter.try_acquire(f"k{k}")
    assert limiter.keys_held == 100
    clock.advance(0.5)  # half a second: full buckets, empty windows
    assert limiter.prune() == 100
    assert (limiter.keys_held, limiter.evicted) == (0, 100)


def test_keys_are_swept_as_calls_come() -> None:
    """Without ``prune``, a call after the sweep period drops the keys that hold nothing."""
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=5, clock=clock)  # full again 0.5 s after a permit
    for k in range(50):
        limiter.try_acquire(k)
    clock.advance(1.0)  # the sweep period: at least a second
    limiter.try_acquire("new")
    assert limiter.keys_held == 1


def test_idle_ttl_drops_a_key_whose_bucket_is_not_yet_full() -> None:
    """With a slow refill, ``idle_ttl`` bounds how long an idle key is kept."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1, per=3600, burst=10, idle_ttl=60, clock=clock)
    limiter.try_acquire("slow")
    clock.advance(59)
    assert limiter.prune() == 0
    clock.advance(1)
    assert limiter.prune() == 1
    assert limiter.keys_held == 0


@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_max_keys_bounds_the_map(which: int, caplog: pytest.LogCaptureFixture) -> None:
    """However many busy keys arrive, at most ``max_keys`` are held; dropping busy ones warns."""
    clock = FakeClock()
    limiter = limiters(clock, max_keys=16)[which]
    most = 0
    with caplog.at_level(logging.WARNING, logger="failsafe.rate_limiter"):
        for k in range(1_000):
            assert limiter.try_acquire(k)
            most = max(most, limiter.keys_held)
    assert most == 16
    assert limiter.evicted == 1_000 - limiter.keys_held
    assert "to stay within max_keys=16" in caplog.text


def test_a_full_map_drops_idle_keys_before_busy_ones(caplog: pytest.LogCaptureFixture) -> None:
    """Room for a new key is made from keys that hold nothing first, without a warning."""
    clock = FakeClock()
    limiter = RateLimiter(rate=1, per=1.0, burst=1, max_keys=4, clock=clock)
    for k in "abc":
        limiter.try_acquire(k)
    clock.advance(0.5)
    limiter.try_acquire("busy")  # a, b, c are half-refilled, "busy" just spent its permit
    clock.advance(0.5)  # a, b, c are full again
    with caplog.at_level(logging.WARNING, logger="failsafe.rate_limiter"):
        limiter.try_acquire("new")
    assert caplog.text == ""
    assert limiter.try_acquire("busy") is False  # its state survived
    assert limiter.keys_held == 2


# -- concurrency -------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_threads_hammering_never_get_more_than_the_limit(which: int) -> None:
    """Eight threads racing for permits (and moving time) get what the limit allows, no more."""
    clock = FakeClock()
    limiter = [
        RateLimiter(rate=100, per=1.0, burst=50, clock=clock),
        RateLimiter.sliding_window(limit=50, window=0.5, clock=clock),
    ][which]
    admitted = [0] * 8
    start = threading.Barrier(8)

    def hammer(i: int) -> None:
        start.wait()
        for n in range(2_000):
            admitted[i] += limiter.try_acquire()
            if n % 10 == 9:
                clock.advance(0.0005)  # 20,000 tries a simulated second, 200x the rate

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = clock.monotonic()  # about 0.8 (FakeClock.advance may lose a racing step)
    assert elapsed > 0.5
    if which == 0:
        bound = 100 * elapsed + 50  # rate * T + burst
        assert 0.95 * bound <= sum(admitted) <= bound + EPS
    else:
        windows = elapsed / 0.5
        assert 50 * math.floor(windows) <= sum(admitted) <= 50 * math.ceil(windows + EPS)


@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_threads_at_one_instant_share_exactly_the_burst(which: int) -> None:
    """With time frozen, racing threads together take exactly ``burst`` permits."""
    clock = FakeClock()
    limiter = limiters(clock)[which]
    admitted = [0] * 8
    start = threading.Barrier(8)

    def hammer(i: int) -> None:
        start.wait()
        for _ in range(2_000):
            admitted[i] += limiter.try_acquire()

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 5


def test_tasks_waiting_at_once_keep_the_rate() -> None:
    """A hundred tasks arriving at once each wait for their own permit, one interval apart."""
    clock = FrozenClock()
    limiter = RateLimiter(rate=10, per=1.0, burst=1, max_wait=5.0, clock=clock)

    async def main() -> list[Any]:
        calls = [limiter.call_async(asyncio.sleep, 0, i) for i in range(100)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    admitted = [r for r in results if not isinstance(r, RateLimited)]
    assert len(admitted) == 51  # now, then one every 0.1 s up to max_wait
    assert sorted(clock.sleeps) == pytest.approx([0.1 * i for i in range(1, 51)])


# -- properties --------------------------------------------------------------------------------
gaps = st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=80)


def _admitted(limiter: RateLimiter, clock: FrozenClock, gaps: list[float]) -> list[float]:
    """The instants at which each admitted call runs (its arrival plus its wait)."""
    runs = []
    for gap in gaps:
        clock.advance(gap)
        try:
            wait = limiter.acquire()
        except RateLimited as exc:
            retry_after = exc.retry_after
        else:
            runs.append(clock.monotonic() + wait)
            continue
        assert retry_after > 0
    return runs


@settings(max_examples=200, deadline=None)
@given(
    gaps=gaps,
    rate=st.floats(min_value=0.5, max_value=50),
    per=st.sampled_from([0.1, 1.0, 3.0]),
    burst=st.integers(min_value=1, max_value=6),
    max_wait=st.sampled_from([0.0, 0.0, 0.05, 0.5]),
)
def test_token_bucket_never_admits_more_than_rate_times_t_plus_burst(
    gaps: list[float], rate: float, per: float, burst: int, max_wait: float
) -> None:
    """For any arrivals, any interval of length L holds at most rate * L / per + burst runs."""
    clock = FrozenClock()
    limiter = RateLimiter(rate=rate, per=per, burst=burst, max_wait=max_wait, clock=clock)
    runs = sorted(_admitted(limiter, clock, gaps))
    assert runs  # the first arrival always finds a full bucket
    for i in range(len(runs)):
        for j in range(i, len(runs)):
            length = runs[j] - runs[i]
            assert j - i + 1 <= rate * length / per + burst + EPS


@settings(max_examples=200, deadline=None)
@given(
    gaps=gaps,
    limit=st.integers(min_value=1, max_value=6),
    window=st.sampled_from([0.1, 0.5, 2.0]),
    max_wait=st.sampled_from([0.0, 0.0, 0.05, 0.5]),
)
def test_sliding_window_never_admits_more_than_limit_in_a_window(
    gaps: list[float], limit: int, window: float, max_wait: float
) -> None:
    """For any arrivals, no window (t - window, t] holds more than ``limit`` runs."""
    clock = FrozenClock()
    limiter = RateLimiter.sliding_window(limit=limit, window=window, max_wait=max_wait, clock=clock)
    runs = sorted(_admitted(limiter, clock, gaps))
    for j, end in enumerate(runs):
        inside = [t for t in runs[: j + 1] if t > end - window + EPS]
        assert len(inside) <= limit


@settings(max_examples=100, deadline=None)
@given(gaps=gaps, rate=st.floats(min_value=0.5, max_value=50), burst=st.integers(1, 6))
def test_a_rejected_caller_would_have_broken_the_bound(
    gaps: list[float], rate: float, burst: int
) -> None:
    """The token bucket rejects only calls that the bound forbids: it is exact, not cautious."""
    clock = FakeClock()
    limiter = RateLimiter(rate=rate, per=1.0, burst=burst, clock=clock)
    runs: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        now = clock.monotonic()
        if limiter.try_acquire():
            runs.append(now)
            continue
        # some interval ending now would hold more than rate * L + burst with this call
        assert any(
            len(runs) - i + 1 > rate * (now - runs[i]) + burst - EPS for i in range(len(runs))
        )


# -- accuracy ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1], ids=["token_bucket", "sliding_window"])
def test_ten_simulated_seconds_at_1000_per_second(which: int) -> None:
    """Callers arriving 5x faster than the rate for 10 s get 10,000 permits (+ burst), within 1%."""
    clock = FakeClock()
    limiter = [
        RateLimiter(rate=1_000, per=1.0, burst=100, clock=clock),
        RateLimiter.sliding_window(limit=1_000, window=1.0, clock=clock),
    ][which]
    admitted = 0
    for _ in range(50_000):  # one arrival every 0.2 ms
        admitted += limiter.try_acquire()
        clock.advance(0.0002)
    expected = 10_000 + (100 if which == 0 else 0)
    assert abs(admitted - expected) <= 0.01 * expected


# -- in a pipeline -----------------------------------------------------------------------------
def test_outside_a_retry_a_call_takes_one_permit_for_all_its_attempts(driver: Driver) -> None:
    """``Pipeline(limiter, Retry())``: three attempts, one permit."""
    limiter = RateLimiter(rate=1, per=60, burst=2, clock=FakeClock())
    retry = Retry(attempts=3, backoff=Backoff.none())
    pipeline = Pipeline(limiter, retry)
    assert driver.call(pipeline, fail_first(2, ConnectionError, returns="ok")) == "ok"
    assert limiter.try_acquire() is True  # one permit of two is left
    assert limiter.try_acquire() is False


def test_inside_a_retry_each_attempt_takes_a_permit(driver: Driver) -> None:
    """``Pipeline(Retry(), limiter)``: each attempt takes a permit; a rejection is not retried."""
    limiter = RateLimiter(rate=1, per=60, burst=2, clock=FakeClock())
    retry = Retry(attempts=3, backoff=Backoff.none())
    pipeline = Pipeline(retry, limiter)
    with pytest.raises(RateLimited):
        driver.call(pipeline, fail_first(2, ConnectionError, returns="ok"))
    assert limiter.try_acquire() is False


def test_the_decorator() -> None:
    """``@limiter`` limits a function and a coroutine function."""
    limiter = RateLimiter(rate=1, per=60, burst=1, clock=FakeClock())
    other = RateLimiter(rate=1, per=60, burst=1, clock=FakeClock())

    @limiter
    def lookup(code: str) -> str:
        return code.upper()

    @other
    async def alookup(code: str) -> str:
        return code.lower()

    assert lookup("fr") == "FR"
    with pytest.raises(RateLimited):
        lookup("de")
    assert asyncio.run(alookup("FR")) == "fr"
    with pytest.raises(RateLimited):
        asyncio.run(alookup("DE"))


def test_describe_says_what_it_does() -> None:
    """The repr names the algorithm, the wait and the keys."""
    keyed = RateLimiter(rate=5, per=2.0, burst=1, max_wait=0.5, key=lambda: "k", name="geo")
    assert repr(keyed) == (
        "<RateLimiter: rate limiter 'geo': 5 calls per 2s, bursts of 1, waiting at most 0.5s, "
        "per key (at most 10000 keys)>"
    )
    window = RateLimiter.sliding_window(limit=3, window=10)
    assert "at most 3 calls in any 10s (sliding window), rejecting at once" in repr(window)


def test_the_default_clock_follows_fake_time() -> None:
    """A limiter built with the real clock waits on fake time inside ``fake_time``."""
    from failsafe.testing import fake_time

    limiter = RateLimiter(rate=1, per=10.0, burst=1, max_wait=10.0)
    with fake_time() as clock:
        assert limiter.acquire() == 0.0
        assert limiter.acquire() == pytest.approx(10.0)  # slept on the fake clock, at once
        assert clock.sleeps == pytest.approx([10.0])


def test_a_key_function_that_answers_none_uses_the_single_limit() -> None:
    """``None`` from the key function is the limiter's single limit, shared by such calls."""
    answer: list[str | None] = [None]
    limiter = RateLimiter(rate=1, per=60, burst=1, key=lambda: answer[0], clock=FakeClock())
    assert limiter.try_acquire() is True
    assert limiter.try_acquire() is False
    answer[0] = "k"
    assert limiter.try_acquire() is True
    assert limiter.keys_held == 1
