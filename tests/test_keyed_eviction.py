"""KeyedCircuitBreaker's bounds: idle keys dropped, a maximum, open circuits kept (issue 15).

Time is a `FakeClock`: nothing sleeps. A key's recency is kept to a grain (``idle_ttl / 60``,
at most a minute), so the tests move the clock by more than a grain between calls whose
order matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import sys
import threading
import tracemalloc
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import pybreaker
import pytest

from failsafe import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigurationError,
    ConsecutiveFailures,
    Failover,
    FailureRate,
    KeyedCircuitBreaker,
    Pipeline,
)
from failsafe.circuit_breaker import _Kept
from failsafe.testing import FakeClock
from tests.conftest import Driver


class Down(ConnectionError):
    """What a failing call raises."""


class Keyed:
    """A keyed breaker whose key is set before each call, driven sync or async."""

    def __init__(self, driver: Driver | None = None, **options: Any) -> None:
        self.key: Hashable = None
        self.clock = options.setdefault("clock", FakeClock())
        self.breakers = KeyedCircuitBreaker(key=lambda: self.key, **options)
        self.driver = driver or Driver("sync")

    def ok(self, key: Hashable) -> Any:
        self.key = key
        return self.driver.call(self.breakers, lambda: "ok")

    def fail(self, key: Hashable) -> BaseException:
        self.key = key

        def down() -> None:
            raise Down(f"{key} is down")

        with pytest.raises((Down, CircuitOpenError)) as info:
            self.driver.call(self.breakers, down)
        return info.value

    def held(self) -> set[Hashable]:
        return set(self.breakers.breakers)


def check_invariants(keyed: KeyedCircuitBreaker) -> None:
    """Every key is in the table and in exactly one of the two orders; the maximum holds."""
    table, order, held = set(keyed._table), set(keyed._order), set(keyed._held)
    assert table == order | held, (table, order, held)
    assert not order & held
    if keyed.max_keys is not None:
        assert len(table) <= keyed.max_keys


# -- options ---------------------------------------------------------------------------------
def test_the_defaults_bound_the_map() -> None:
    """By default at most 10,000 keys are held, and a key idle for an hour is dropped."""
    keyed = KeyedCircuitBreaker()
    assert (keyed.max_keys, keyed.idle_ttl) == (10_000, 3600.0)
    assert "at most 10000 keys" in keyed.describe()
    assert "idle keys dropped after 3600s" in keyed.describe()


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10", float("inf")])
def test_a_bad_max_keys_names_the_option(value: object) -> None:
    """max_keys must be an integer >= 1 (or None)."""
    with pytest.raises(ConfigurationError, match="max_keys"):
        KeyedCircuitBreaker(max_keys=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "60", True])
def test_a_bad_idle_ttl_names_the_option(value: object) -> None:
    """idle_ttl must be a finite number > 0 (or None)."""
    with pytest.raises(ConfigurationError, match="idle_ttl"):
        KeyedCircuitBreaker(idle_ttl=value)  # type: ignore[arg-type]


def test_none_turns_each_bound_off() -> None:
    """max_keys=None and idle_ttl=None hold every key, however many and however idle."""
    k = Keyed(max_keys=None, idle_ttl=None)
    for i in range(50):
        k.ok(i)
    k.clock.advance(10**7)
    assert k.breakers.prune() == 0
    k.ok("last")
    assert len(k.breakers.breakers) == 51
    assert "no key maximum" in k.breakers.describe()
    assert "idle keys kept" in k.breakers.describe()


def test_a_shared_storage_option_is_refused() -> None:
    """``storage=`` would give every key the same circuit: storage_factory is the way."""
    with pytest.raises(ConfigurationError, match="storage_factory"):
        KeyedCircuitBreaker(storage=pybreaker.CircuitMemoryStorage("closed"))  # type: ignore[call-arg]


# -- idle keys -------------------------------------------------------------------------------
def test_a_key_idle_past_the_ttl_is_dropped(driver: Driver) -> None:
    """Keys not called for idle_ttl (plus the grain, here 1 s) go; a key called since stays."""
    k = Keyed(driver, idle_ttl=60)
    k.ok("a")
    k.ok("b")
    k.clock.advance(30)
    k.ok("a")  # a's last call is now at 30
    k.clock.advance(31.5)  # b idle 61.5 s, a 31.5 s
    k.ok("c")  # calls drop idle keys as they come
    assert k.held() == {"a", "c"}
    assert k.breakers.evicted == 1


def test_a_key_is_not_dropped_before_its_ttl() -> None:
    """A key idle for a hair less than idle_ttl stays, whatever the grain says."""
    k = Keyed(idle_ttl=60)
    k.clock.advance(0.9)  # within the first grain (0-1 s)
    k.ok("a")
    k.clock.advance(59.05)  # a idle 59.05 s
    assert k.breakers.prune() == 0
    assert k.held() == {"a"}
    k.clock.advance(1.1)  # idle 60.15 s: past idle_ttl plus the grain
    assert k.breakers.prune() == 1
    assert k.held() == set()


def test_prune_drops_every_idle_key_at_once() -> None:
    """prune() drops all idle keys without waiting for calls, and says how many."""
    k = Keyed(idle_ttl=10)
    for i in range(2000):
        k.ok(i)
    k.clock.advance(5)
    k.ok("fresh")
    k.clock.advance(6)
    assert k.breakers.prune() == 2000
    assert k.held() == {"fresh"}
    check_invariants(k.breakers)


def test_calls_drop_idle_keys_faster_than_new_keys_come() -> None:
    """A stream of new keys sweeps the idle ones out as it goes, without prune()."""
    k = Keyed(idle_ttl=10, max_keys=None)
    for i in range(500):
        k.ok(("old", i))
    k.clock.advance(11)
    for i in range(300):
        k.ok(("new", i))
    assert all(key[0] == "new" for key in k.held())  # type: ignore[index]
    assert k.breakers.evicted == 500


def test_an_open_circuit_outlives_its_idle_time_until_its_open_period_ends(
    driver: Driver,
) -> None:
    """An idle key whose circuit is still open is kept (and still rejects), then dropped."""
    k = Keyed(driver, threshold=1, reset_timeout=600, idle_ttl=60)
    k.fail("a")
    k.clock.advance(120)
    k.ok("b")
    assert k.breakers.prune() == 0
    assert "a" in k.breakers.breakers
    assert k.breakers.get("a").state is CircuitState.OPEN
    k.clock.advance(481)  # open period over, and a idle (get() counted as its last use)
    k.breakers.prune()
    assert "a" not in k.breakers.breakers
    assert k.ok("a") == "ok"  # a new breaker, closed: no probe needed


def test_a_key_with_failures_counted_is_dropped_when_idle() -> None:
    """A closed circuit with failures counted is not protected from its idle time."""
    k = Keyed(threshold=3, idle_ttl=60)
    k.fail("a")
    k.clock.advance(62)
    assert k.breakers.prune() == 1
    k.fail("a")
    k.fail("a")
    assert k.breakers.get("a").state is CircuitState.CLOSED  # the old failure was forgotten


# -- the maximum -----------------------------------------------------------------------------
def test_the_least_recently_used_key_goes_first() -> None:
    """At the maximum, the key whose last call is oldest is dropped for a new one."""
    k = Keyed(max_keys=3)
    for key in "abc":
        k.ok(key)
    k.clock.advance(61)  # more than a grain (a minute without idle_ttl under an hour)
    k.ok("a")
    k.clock.advance(61)
    k.ok("c")
    k.ok("d")  # b is the least recently used
    assert k.held() == {"a", "c", "d"}
    k.ok("e")  # then a
    assert k.held() == {"c", "d", "e"}
    assert k.breakers.evicted == 2


def test_calls_within_one_grain_count_as_simultaneous() -> None:
    """Inside a grain the order of first use decides: a call does not reorder keys."""
    k = Keyed(max_keys=2)
    k.ok("a")
    k.ok("b")
    k.ok("a")  # same grain: a stays older than b
    k.ok("c")
    assert k.held() == {"b", "c"}


def test_keys_with_a_state_outlast_keys_without(driver: Driver) -> None:
    """A key with a failure counted is passed over while a key without a state can go."""
    k = Keyed(driver, threshold=5, max_keys=3)
    k.fail("a")  # one failure counted: a's breaker holds something
    k.clock.advance(61)
    k.ok("b")
    k.ok("c")
    k.ok("d")  # a is the least recently used, but b goes
    assert k.held() == {"a", "c", "d"}
    assert k.breakers.get("a").failure_count == 1


def test_an_open_circuit_is_dropped_last_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When every key held has an open circuit, the least recently used goes, logged."""
    k = Keyed(threshold=1, max_keys=2, reset_timeout=600)
    k.fail("a")
    k.clock.advance(61)
    k.fail("b")
    with caplog.at_level(logging.WARNING, logger="failsafe.circuit_breaker"):
        k.ok("c")
    assert k.held() == {"b", "c"}
    assert "dropped the breaker of 'a' (open)" in caplog.text
    assert "max_keys=2" in caplog.text
    assert isinstance(k.fail("b"), CircuitOpenError)  # b is still protected


def test_a_circuit_closed_again_holds_nothing() -> None:
    """A breaker whose circuit closed again after a probe counts as holding no state."""
    k = Keyed(threshold=1, max_keys=2, reset_timeout=10)
    k.fail("a")
    k.clock.advance(61)
    k.ok("b")
    k.clock.advance(61)
    assert k.ok("a") == "ok"  # the probe closes a's circuit (and a is the most recent)
    k.ok("c")
    assert k.held() == {"a", "c"}


def test_a_call_on_a_dropped_key_gets_a_fresh_breaker(driver: Driver) -> None:
    """After its key was dropped, a call goes through a new breaker with nothing counted."""
    k = Keyed(driver, threshold=2, max_keys=1)
    k.fail("a")
    first = k.breakers.get("a")
    assert first.failure_count == 1
    k.ok("b")  # a had a state, but it is the only other key: it goes
    assert k.held() == {"b"}
    k.fail("a")
    second = k.breakers.get("a")
    assert second is not first
    assert (second.failure_count, second.state) == (1, CircuitState.CLOSED)


def test_a_shared_storage_keeps_the_state_of_a_dropped_key() -> None:
    """With a storage shared beyond the breaker, a dropped key's open circuit is still open."""
    shared: dict[Hashable, pybreaker.CircuitBreakerStorage] = {}

    class Shared(pybreaker.CircuitMemoryStorage):
        """Stands for a Redis storage: it outlives the breakers that use it."""

    def storage(key: Hashable) -> pybreaker.CircuitBreakerStorage:
        return shared.setdefault(key, Shared("closed"))

    k = Keyed(threshold=1, max_keys=1, storage_factory=storage, reset_timeout=60)
    k.fail("a")
    k.ok("b")  # a's state is in its storage: a goes first, with no warning needed
    assert k.held() == {"b"}
    assert isinstance(k.fail("a"), CircuitOpenError)


# -- keys without a breaker object -------------------------------------------------------------
def test_a_key_whose_calls_succeed_has_no_breaker_object() -> None:
    """Successful calls leave a key as a bare entry; listing keys builds no breaker."""
    k = Keyed()
    k.ok("a")
    assert list(k.breakers.breakers) == ["a"]
    assert "a" in k.breakers.breakers
    assert len(k.breakers.breakers) == 1
    assert type(k.breakers._table["a"]) is int
    breaker = k.breakers.breakers["a"]  # reading it builds it
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.key == "a"
    assert k.breakers.get("a") is breaker
    assert isinstance(k.breakers._table["a"], _Kept)
    with pytest.raises(KeyError):
        k.breakers.breakers["never"]


def test_a_failure_gives_the_key_its_breaker_with_the_failure_counted(driver: Driver) -> None:
    """The first counted failure builds the key's breaker, which counts and opens as usual."""
    k = Keyed(driver, threshold=2)
    k.ok("a")
    k.fail("a")
    assert k.breakers.get("a").failure_count == 1
    assert k.ok("a") == "ok"
    assert k.breakers.get("a").failure_count == 0  # a success resets the count
    k.fail("a")
    k.fail("a")
    assert k.breakers.get("a").state is CircuitState.OPEN
    assert isinstance(k.fail("a"), CircuitOpenError)


def test_exceptions_not_counted_build_no_breaker(driver: Driver) -> None:
    """An exception outside ``on`` passes through and leaves the key without a breaker."""
    k = Keyed(driver, on=KeyError)
    k.fail("a")
    assert type(k.breakers._table["a"]) is int


def test_a_result_counted_as_a_failure_builds_the_breaker(driver: Driver) -> None:
    """``on_result`` judges a key's results before it has a breaker too."""
    k = Keyed(driver, threshold=1, on_result=lambda value: value == "ok")
    assert k.ok("a") == "ok"  # returned, and counted
    assert k.breakers.get("a").state is CircuitState.OPEN


def test_a_raising_test_counts_as_a_failure_before_the_breaker_exists(driver: Driver) -> None:
    """When ``on`` raises on a key without a breaker, its error reaches the caller and counts."""

    def bad_test(exc: BaseException) -> bool:
        raise LookupError("the test is broken")

    k = Keyed(driver, threshold=1, on=bad_test)
    with pytest.raises(LookupError) as info:
        k.fail("a")
    assert isinstance(info.value.__context__, Down)
    assert k.breakers.get("a").state is CircuitState.OPEN


def test_failure_rate_keys_get_their_breaker_at_once() -> None:
    """With FailureRate every call counts, so each key's breaker is built at its first call."""
    k = Keyed(trip=FailureRate(threshold=0.5, minimum_calls=2), max_keys=2)
    k.ok("a")
    assert isinstance(k.breakers._table["a"], _Kept)
    k.fail("a")
    assert k.breakers.get("a").state is CircuitState.OPEN
    k.clock.advance(61)
    k.ok("b")
    k.ok("c")  # a's window holds a failure: b goes
    assert k.held() == {"a", "c"}


def test_keys_follow_the_failover_target(driver: Driver) -> None:
    """Inside a Failover the targets are the keys, bounded like any."""
    clock = FakeClock()
    keyed = KeyedCircuitBreaker(trip=ConsecutiveFailures(threshold=1), clock=clock, max_keys=2)
    failover = Failover(["w1", "w2", "w3"], policy=Pipeline(keyed))

    def call() -> str:
        from failsafe import current_context

        target = current_context().target
        if target != "w3":
            raise Down(str(target))
        return str(target)

    assert driver.call(failover, call) == "w3"
    assert len(keyed.breakers) == 2
    check_invariants(keyed)


# -- the runners a key's breaker is bound into ------------------------------------------------
def test_the_runners_of_dropped_keys_are_freed() -> None:
    """A key's bound runners live on its entry: once dropped, its breaker is garbage."""
    k = Keyed(trip=FailureRate(), max_keys=10)  # every key gets a breaker and runners
    refs: list[weakref.ref[CircuitBreaker]] = []
    for i in range(200):
        k.ok(i)
        refs.append(weakref.ref(k.breakers._table[i].breaker))  # type: ignore[union-attr]
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert len(alive) == 10
    runners = [e.runners for e in k.breakers._table.values() if isinstance(e, _Kept)]
    assert all(r is not None and len(r) == 1 for r in runners)


def test_each_bound_pipeline_keeps_one_runner_per_key_held() -> None:
    """Two pipelines over one keyed breaker: two runners a key, for the keys held only."""
    key = ["a"]
    keyed = KeyedCircuitBreaker(key=lambda: key[0], trip=FailureRate(), max_keys=5)
    one, two = Pipeline(keyed), Pipeline(keyed, Bulkhead())  # two different next stages
    for i in range(40):
        key[0] = f"k{i}"
        one.call(lambda: 1)
        two.call(lambda: 2)
    entries = [e for e in keyed._table.values() if isinstance(e, _Kept)]
    assert len(entries) == 5
    assert all(e.runners is not None and len(e.runners) == 2 for e in entries)


# -- memory ------------------------------------------------------------------------------------
def _held_bytes(touch: Callable[[int], None], n: int, warm: int) -> int:
    """Bytes still allocated after touching keys warm..n, over the state after 0..warm."""
    tracemalloc.start()
    try:
        for i in range(warm):
            touch(i)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(warm, n):
            touch(i)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def test_touching_100k_keys_holds_no_more_than_the_maximum() -> None:
    """100k distinct keys through max_keys=1000 hold what 2,000 keys did, within 100 KB."""
    keys = [f"https://host-{i}.example:443" for i in range(100_000)]
    box = [keys[0]]
    keyed = KeyedCircuitBreaker(key=lambda: box[0], max_keys=1000)

    def touch(i: int) -> None:
        box[0] = keys[i]
        keyed.call(int)

    grown = _held_bytes(touch, 100_000, 2000)
    assert grown < 100_000, f"{grown} bytes more after 98,000 more keys"
    assert len(keyed.breakers) == 1000
    assert keyed.evicted == 99_000


def test_failing_keys_hold_no_more_than_the_maximum() -> None:
    """Keys that each failed (a breaker object each) are bounded the same way."""
    keys = [f"https://host-{i}.example:443" for i in range(10_000)]
    box = [keys[0]]
    keyed = KeyedCircuitBreaker(key=lambda: box[0], max_keys=200)

    def down() -> None:
        raise Down

    def touch(i: int) -> None:
        box[0] = keys[i]
        with pytest.raises(Down):
            keyed.call(down)

    grown = _held_bytes(touch, 10_000, 400)
    assert grown < 100_000, f"{grown} bytes more after 9,600 more keys"
    assert len(keyed.breakers) == 200


# -- threads and tasks -------------------------------------------------------------------------
@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads every microsecond, so that they interleave inside the map's code."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("busy_switching")
def test_threads_never_grow_the_map_past_its_maximum() -> None:
    """Eight threads calling 400 keys (a third failing) through max_keys=32, time moving."""
    clock = FakeClock()
    local = threading.local()
    keyed = KeyedCircuitBreaker(
        key=lambda: local.key, threshold=2, reset_timeout=5, idle_ttl=30, max_keys=32, clock=clock
    )
    barrier = threading.Barrier(9)
    errors: list[BaseException] = []
    sizes: list[int] = []
    done = threading.Event()

    def down() -> None:
        raise Down

    def worker(seed: int) -> None:
        barrier.wait()
        try:
            for i in range(1500):
                local.key = (i * 7 + seed * 13) % 400
                with contextlib.suppress(Down, CircuitOpenError):
                    keyed.call(down if local.key % 3 == 0 else int)
                if seed == 0 and i % 50 == 0:
                    clock.advance(1.5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watcher() -> None:
        barrier.wait()
        while not done.is_set():
            sizes.append(len(keyed._table))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    watch = threading.Thread(target=watcher)
    for t in [*threads, watch]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watch.join()
    assert not errors
    assert sizes
    assert max(sizes) <= 32
    check_invariants(keyed)
    assert keyed.evicted > 0


def test_tasks_never_grow_the_map_past_its_maximum() -> None:
    """Many tasks interleaving calls of many keys keep the map within its maximum."""
    clock = FakeClock()
    current: contextvars.ContextVar[int] = contextvars.ContextVar("key")
    keyed = KeyedCircuitBreaker(key=current.get, threshold=1, max_keys=16, idle_ttl=20, clock=clock)
    sizes: list[int] = []

    async def one(key: int) -> None:
        current.set(key)

        async def work() -> int:
            await asyncio.sleep(0)
            sizes.append(len(keyed._table))
            if key % 5 == 0:
                raise Down
            return key

        for _ in range(3):
            with contextlib.suppress(Down, CircuitOpenError):
                await keyed.call_async(work)
            clock.advance(0.1)

    async def main() -> None:
        await asyncio.gather(*(one(k) for k in range(300)))

    asyncio.run(main())
    assert max(sizes) <= 16
    assert keyed.evicted >= 300 - 16
    check_invariants(keyed)
