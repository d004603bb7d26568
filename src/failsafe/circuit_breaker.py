"""`CircuitBreaker`: stop calling a dependency that keeps failing, then probe it.

Built on pybreaker's storage (``CircuitMemoryStorage``; ``CircuitRedisStorage`` for one
breaker shared by several processes) and its listener protocol, but the guarded call never
runs inside ``pybreaker.CircuitBreaker.call()``: that method holds a lock for the whole call,
so threads queue behind each other (pybreaker #3, #55), and it cannot await a coroutine
(#7). Here the lock guards only the state transitions, and the call runs outside it.

States: **closed** (calls flow; failures are counted), **open** (calls are rejected with
[`CircuitOpenError`][failsafe.CircuitOpenError] for ``reset_timeout`` seconds),
**half-open** (up to ``half_open_max_calls`` probe calls are admitted; a probe's success
closes the circuit after ``success_threshold`` successes, a failure opens it again).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypedDict

import attrs
from typing_extensions import Unpack

from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe._validators import integer, number
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.context import _target
from failsafe.events import (
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    CircuitRejected,
    Event,
    Listener,
    _deliver,
    _emit,
)
from failsafe.exceptions import CircuitOpenError, ConfigurationError
from failsafe.outcome import Outcome
from failsafe.predicates import (
    ANY_EXCEPTION,
    Classifier,
    Predicate,
    ResultTest,
    classify,
)

if TYPE_CHECKING:
    import pybreaker

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "ConsecutiveFailures",
    "FailureRate",
    "KeyedCircuitBreaker",
]

# pybreaker's state names. pybreaker is imported on first use, not with failsafe: it imports
# the redis client (and redis imports OpenTelemetry) whenever they are installed.
_CLOSED, _OPEN, _HALF_OPEN = "closed", "open", "half-open"
_log = logging.getLogger("failsafe.circuit_breaker")


def _pybreaker() -> Any:
    import pybreaker

    return pybreaker


def _memory_storage() -> pybreaker.CircuitBreakerStorage:
    return _pybreaker().CircuitMemoryStorage(_CLOSED)  # type: ignore[no-any-return]


class CircuitState(enum.Enum):
    """The state of a circuit breaker (the values are pybreaker's state names)."""

    CLOSED = _CLOSED
    OPEN = _OPEN
    HALF_OPEN = _HALF_OPEN


@attrs.frozen(kw_only=True)
class ConsecutiveFailures:
    """Open after ``threshold`` failures in a row (a success resets the count).

    The count lives in the breaker's storage, so a Redis-backed breaker counts across
    processes.
    """

    threshold: int = attrs.field(default=5, validator=integer(1))

    def describe(self) -> str:
        """Say in words when this trips."""
        return f"opens after {self.threshold} consecutive failures"


@attrs.frozen(kw_only=True)
class FailureRate:
    """Open when failures reach ``threshold`` of the calls in the last ``window`` seconds.

    Only once at least ``minimum_calls`` calls were made in the window, so that one failure
    out of one call does not open the circuit. The window is kept in process memory (in
    ``buckets`` slices) even when the state is shared through Redis.
    """

    threshold: float = attrs.field(default=0.5, validator=number(above=0, at_most=1))
    window: float = attrs.field(default=60.0, validator=number(above=0))
    minimum_calls: int = attrs.field(default=10, validator=integer(1))
    buckets: int = attrs.field(default=10, validator=integer(1))

    def describe(self) -> str:
        """Say in words when this trips."""
        return (
            f"opens when {self.threshold:.0%} of at least {self.minimum_calls} calls "
            f"in {self.window:g}s fail"
        )


_NEVER = -(2**62)


class _Window:
    """Calls and failures over a sliding window, in fixed slices (pure counting)."""

    __slots__ = ("calls", "failures", "n", "stamps", "width")

    def __init__(self, rate: FailureRate) -> None:
        self.n = rate.buckets
        self.width = rate.window / rate.buckets
        self.reset()

    def record(self, now: float, failed: bool) -> tuple[int, int]:
        tick = int(now // self.width)
        slot = tick % self.n
        if self.stamps[slot] != tick:
            self.stamps[slot] = tick
            self.calls[slot] = 0
            self.failures[slot] = 0
        self.calls[slot] += 1
        self.failures[slot] += failed
        calls = failures = 0
        for i in range(self.n):
            if tick - self.n < self.stamps[i] <= tick:
                calls += self.calls[i]
                failures += self.failures[i]
        return calls, failures

    def reset(self) -> None:
        # a stamp no tick can be near, so an emptied slice never counts (whatever the clock)
        self.stamps = [_NEVER] * self.n
        self.calls = [0] * self.n
        self.failures = [0] * self.n


def _readers(
    storage: pybreaker.CircuitBreakerStorage,
) -> tuple[Callable[[Any], str], Callable[[Any], int]]:
    """Read a storage's state and failure count, as the drivers do on every call.

    pybreaker's memory storage keeps them in plain fields behind properties: read the fields
    (no Python call) when they are there, else the properties.
    """
    memory = type(storage) is _pybreaker().CircuitMemoryStorage
    if memory and hasattr(storage, "_state") and hasattr(storage, "_fail_counter"):
        return attrgetter("_state"), attrgetter("_fail_counter")
    return attrgetter("state"), attrgetter("counter")


def _guarded(method: Callable[..., object], *args: object) -> None:
    """Call a pybreaker listener method; its failure is logged, never raised into the call."""
    try:
        method(*args)
    except Exception:
        _log.exception("pybreaker listener %r failed", method)


class _StateName:
    """What pybreaker listeners receive as ``old_state`` / ``new_state`` (they read ``.name``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<state {self.name}>"


@attrs.define(kw_only=True, eq=False, repr=False)
class CircuitBreaker(Policy):
    """Reject calls to a dependency that keeps failing, until a probe shows it is back.

    Args:
        name: Names the breaker in events, errors and reprs.
        trip: When to open: [`ConsecutiveFailures`][failsafe.ConsecutiveFailures] (default,
            5 in a row) or [`FailureRate`][failsafe.FailureRate].
        reset_timeout: Seconds the circuit stays open before it admits probes.
        half_open_max_calls: Probe calls admitted at once while half-open (per process).
        success_threshold: Successful probes needed to close the circuit.
        on: Which exceptions count as failures (default: every `Exception`). Other
            exceptions pass through and count neither way.
        on_result: A test on returned values; a true result counts as a failure (the value
            is still returned to the caller).
        storage: A pybreaker ``CircuitBreakerStorage``: ``CircuitMemoryStorage`` (default)
            or ``CircuitRedisStorage`` to share the state between processes.
        clock: Time source; the opening time is wall-clock time so that processes sharing
            a Redis storage agree on it.
        listeners: failsafe listeners (callables taking an event) and/or pybreaker
            ``CircuitBreakerListener`` instances (``state_change``, ``failure``,
            ``success`` are called).

    Raises:
        ConfigurationError: At construction, on a bad option.

    Thread-safety: safe to share between threads and tasks. The lock guards state
    transitions only; the guarded call runs outside it, so concurrent calls never queue
    behind each other.

    Example:
        ```python
        from failsafe import CircuitBreaker, FailureRate

        breaker = CircuitBreaker(name="products", trip=FailureRate(threshold=0.5), reset_timeout=10)

        @breaker
        def components(product_id: str) -> list[str]: ...
        ```
    """

    name: str = "circuit-breaker"
    trip: ConsecutiveFailures | FailureRate = attrs.field(factory=ConsecutiveFailures)
    reset_timeout: float = attrs.field(default=30.0, validator=number(above=0))
    half_open_max_calls: int = attrs.field(default=1, validator=integer(1))
    success_threshold: int = attrs.field(default=1, validator=integer(1))
    on: Classifier = ANY_EXCEPTION
    on_result: ResultTest | None = None
    storage: pybreaker.CircuitBreakerStorage = attrs.field(factory=_memory_storage)
    clock: Clock = SYSTEM_CLOCK
    listeners: Sequence[Any] = attrs.field(default=(), converter=_v.objects)
    key: object = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _probes: int = attrs.field(default=0, init=False)
    # Each closed/open/half-open period gets a number; a probe carries the number of the
    # half-open period that admitted it, so a probe that ends after the circuit moved on
    # (a "stale" probe) can neither close the circuit nor free a newer period's probe slot.
    _period: int = attrs.field(default=1, init=False)
    _predicate: Predicate = attrs.field(init=False)
    _window: _Window | None = attrs.field(default=None, init=False)
    _events: tuple[Listener, ...] = attrs.field(default=(), init=False)
    _pb_listeners: tuple[pybreaker.CircuitBreakerListener, ...] = attrs.field(
        default=(), init=False
    )

    def __attrs_post_init__(self) -> None:
        pybreaker = _pybreaker()
        if not isinstance(self.trip, ConsecutiveFailures | FailureRate):
            raise ConfigurationError(
                "trip", f"must be ConsecutiveFailures or FailureRate, got {self.trip!r}"
            )
        if not isinstance(self.storage, pybreaker.CircuitBreakerStorage):
            raise ConfigurationError(
                "storage", f"must be a pybreaker CircuitBreakerStorage, got {self.storage!r}"
            )
        self._predicate = classify(self.on, self.on_result)
        if isinstance(self.trip, FailureRate):
            self._window = _Window(self.trip)
        self._pb_listeners = tuple(
            x for x in self.listeners if isinstance(x, pybreaker.CircuitBreakerListener)
        )
        self._events = tuple(
            x for x in self.listeners if not isinstance(x, pybreaker.CircuitBreakerListener)
        )
        for x in self._events:
            if not callable(x):
                raise ConfigurationError("listeners", f"{x!r} is not callable")

    # -- inspection and manual control ------------------------------------------------------
    @property
    def state(self) -> CircuitState:
        """The stored state (an open circuit past its timeout half-opens on the next call)."""
        return CircuitState(self.storage.state)

    @property
    def current_state(self) -> str:
        """The state's name, as pybreaker spells it (``"closed"``, ``"open"``, ``"half-open"``)."""
        return self.storage.state

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted so far (``ConsecutiveFailures`` mode)."""
        return self.storage.counter

    @property
    def retry_after(self) -> float:
        """Seconds until an open circuit admits a probe (0 when not open)."""
        if self.storage.state != _OPEN:
            return 0.0
        return self._remaining(self.clock.time())

    def open(self) -> None:
        """Open the circuit now; it admits probes after ``reset_timeout``."""
        with self._lock:
            events = self._to_open(None)
        self._publish(events)

    def close(self) -> None:
        """Close the circuit now and forget the failures counted."""
        with self._lock:
            events = self._to_closed()
        self._publish(events)

    # -- transitions (called with the lock held; they return the events to publish) -------
    def _remaining(self, now: float) -> float:
        opened = self.storage.opened_at
        if opened is None:
            return 0.0
        remaining = opened.timestamp() + self.reset_timeout - now
        # the storage keeps microseconds (Redis: whole seconds); closer than that is "now"
        return remaining if remaining > 1e-6 else 0.0

    def _to_open(self, outcome: Outcome[Any] | None) -> list[Event | tuple[str, str]]:
        old = self.storage.state
        self.storage.state = _OPEN
        self.storage.opened_at = datetime.fromtimestamp(self.clock.time(), UTC)
        self.storage.reset_success_counter()
        self._new_period()
        return [
            CircuitOpened(
                policy=self.name, key=self.key, reset_timeout=self.reset_timeout, outcome=outcome
            ),
            *self._changed(old, _OPEN),
        ]

    def _to_closed(self) -> list[Event | tuple[str, str]]:
        old = self.storage.state
        self.storage.state = _CLOSED
        self.storage.reset_counter()
        self.storage.reset_success_counter()
        self._new_period()
        if self._window is not None:
            self._window.reset()
        if old == _CLOSED:
            return []
        return [CircuitClosed(policy=self.name, key=self.key), *self._changed(old, _CLOSED)]

    def _new_period(self) -> None:
        self._period += 1
        self._probes = 0

    def _changed(self, old: str, new: str) -> list[Event | tuple[str, str]]:
        return [(old, new)] if self._pb_listeners and old != new else []

    def _publish(self, events: list[Event | tuple[str, str]]) -> None:
        """Deliver transition events, after the lock is released."""
        for event in events:
            if isinstance(event, tuple):
                for listener in self._pb_listeners:
                    _guarded(
                        listener.state_change, self, _StateName(event[0]), _StateName(event[1])
                    )
            else:
                _deliver(self._events, event)

    # -- decisions shared by both drivers ---------------------------------------------------
    def _admit(self) -> int:
        """Admit a call or raise `CircuitOpenError`.

        Returns 0 for an ordinary call, or the half-open period's number for a probe.
        """
        retry_after = 0.0
        events: list[Event | tuple[str, str]] = []
        with self._lock:
            state = self.storage.state
            if state == _OPEN:
                retry_after = self._remaining(self.clock.time())
                if retry_after <= 0:
                    self.storage.state = state = _HALF_OPEN
                    self.storage.reset_success_counter()
                    self._new_period()
                    events.append(CircuitHalfOpened(policy=self.name, key=self.key))
                    events.extend(self._changed(_OPEN, _HALF_OPEN))
            admitted = state == _CLOSED
            probe = 0
            if state == _HALF_OPEN and self._probes < self.half_open_max_calls:
                self._probes += 1
                admitted, probe = True, self._period
        self._publish(events)
        if admitted:
            return probe
        _emit(
            self._events, CircuitRejected, policy=self.name, key=self.key, retry_after=retry_after
        )
        raise CircuitOpenError(self._label(), retry_after)

    def _label(self) -> str:
        return self.name if self.key is None else f"{self.name}[{self.key}]"

    def _end_probe(self, probe: int) -> bool:
        """Release a probe's slot (lock held); return whether it belongs to this period."""
        if probe != self._period:
            return False
        self._probes -= 1
        return True

    def _succeeded(self, probe: int) -> None:
        events: list[Event | tuple[str, str]] = []
        with self._lock:
            if probe:
                if self._end_probe(probe) and self.storage.state == _HALF_OPEN:
                    self.storage.increment_success_counter()
                    if self.storage.success_counter >= self.success_threshold:
                        events = self._to_closed()
            elif self._window is not None:
                self._window.record(self.clock.monotonic(), False)
            elif self.storage.counter:
                self.storage.reset_counter()
        for listener in self._pb_listeners:
            _guarded(listener.success, self)
        self._publish(events)

    def _failed(self, probe: int, outcome: Outcome[Any]) -> None:
        events: list[Event | tuple[str, str]] = []
        with self._lock:
            state = self.storage.state
            if probe:
                if self._end_probe(probe) and state == _HALF_OPEN:
                    events = self._to_open(outcome)
            elif state == _CLOSED:
                if self._window is not None:
                    assert isinstance(self.trip, FailureRate)
                    calls, failures = self._window.record(self.clock.monotonic(), True)
                    if calls >= self.trip.minimum_calls and failures >= self.trip.threshold * calls:
                        events = self._to_open(outcome)
                else:
                    assert isinstance(self.trip, ConsecutiveFailures)
                    self.storage.increment_counter()
                    if self.storage.counter >= self.trip.threshold:
                        events = self._to_open(outcome)
        if outcome.exception is not None:
            for listener in self._pb_listeners:
                _guarded(listener.failure, self, outcome.exception)
        self._publish(events)

    def _ignored(self, probe: int) -> None:
        if probe:
            with self._lock:
                self._end_probe(probe)

    # -- drivers ------------------------------------------------------------------------------
    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        storage = self.storage
        admit, succeeded, failed, ignored = (
            self._admit,
            self._succeeded,
            self._failed,
            self._ignored,
        )
        matches_exception, matches_result = self._predicate._raw_tests()
        fast = self._window is None and not self._pb_listeners
        state, counter = _readers(storage)

        def breaker_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            probe = 0 if state(storage) == _CLOSED else admit()
            try:
                value = nxt(fn, args, kwargs)
            except Exception as exc:
                if matches_exception(exc):
                    failed(probe, Outcome(exception=exc))
                else:
                    ignored(probe)
                raise
            except BaseException:
                ignored(probe)
                raise
            if matches_result is not None and matches_result(value):
                failed(probe, Outcome(value))
            elif probe or not fast or counter(storage):
                succeeded(probe)
            return value

        return breaker_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        storage = self.storage
        admit, succeeded, failed, ignored = (
            self._admit,
            self._succeeded,
            self._failed,
            self._ignored,
        )
        matches_exception, matches_result = self._predicate._raw_tests()
        fast = self._window is None and not self._pb_listeners
        state, counter = _readers(storage)

        async def breaker_async(fn: Any, args: Any, kwargs: Any) -> Any:
            probe = 0 if state(storage) == _CLOSED else admit()
            try:
                value = await nxt(fn, args, kwargs)
            except Exception as exc:
                if matches_exception(exc):
                    failed(probe, Outcome(exception=exc))
                else:
                    ignored(probe)
                raise
            except BaseException:  # cancelled: the dependency was not judged
                ignored(probe)
                raise
            if matches_result is not None and matches_result(value):
                failed(probe, Outcome(value))
            elif probe or not fast or counter(storage):
                succeeded(probe)
            return value

        return breaker_async

    def describe(self) -> str:
        """Say in words what this breaker does."""
        return (
            f"circuit breaker {self._label()!r}: {self.trip.describe()}, "
            f"half-opens after {self.reset_timeout:g}s"
        )


class BreakerOptions(TypedDict, total=False):
    """The options of [`CircuitBreaker`][failsafe.CircuitBreaker] that a keyed breaker repeats."""

    trip: ConsecutiveFailures | FailureRate
    reset_timeout: float
    half_open_max_calls: int
    success_threshold: int
    on: Classifier
    on_result: ResultTest | None
    clock: Clock
    listeners: Sequence[Any]


class KeyedCircuitBreaker(Policy):
    """One circuit breaker per key (per endpoint, per tenant), all from one definition.

    In a pipeline the key is, by default, the current failover target
    (``failsafe.current_context().target``), so
    ``Failover(urls, policy=Pipeline(Retry(), KeyedCircuitBreaker()))`` keeps a breaker per
    URL and skips a URL whose circuit is open without calling it.

    Args:
        name: The breakers are named ``name[key]``.
        key: A function returning the key of the call running now (default: the failover
            target).
        storage_factory: Builds the pybreaker storage of a key's breaker (for example a
            ``CircuitRedisStorage`` with a namespace per key); default: in memory.
        **options: Any other [`CircuitBreaker`][failsafe.CircuitBreaker] option.

    Raises:
        ConfigurationError: At construction, on a bad option; at call time, when no key
            can be found (no failover target and no ``key`` function).
    """

    __slots__ = ("_breakers", "_key", "_lock", "_options", "_storage_factory", "name")

    def __init__(
        self,
        *,
        name: str = "circuit-breaker",
        key: Callable[[], Hashable] | None = None,
        storage_factory: Callable[[Hashable], pybreaker.CircuitBreakerStorage] | None = None,
        **options: Unpack[BreakerOptions],
    ) -> None:
        self.name = name
        self._key = key
        self._storage_factory = storage_factory
        self._options = options
        self._lock = threading.Lock()
        self._breakers: dict[Hashable, CircuitBreaker] = {}
        CircuitBreaker(name=name, **options)  # validate the definition now

    def get(self, key: Hashable) -> CircuitBreaker:
        """Return the breaker for ``key``, creating it on first use."""
        breaker = self._breakers.get(key)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                extra: dict[str, Any] = {}
                if self._storage_factory is not None:
                    extra["storage"] = self._storage_factory(key)
                breaker = CircuitBreaker(name=self.name, key=key, **self._options, **extra)
                self._breakers[key] = breaker
            return breaker

    @property
    def breakers(self) -> dict[Hashable, CircuitBreaker]:
        """A snapshot of the breakers created so far, by key."""
        return dict(self._breakers)

    def _current_key(self) -> Hashable:
        if self._key is not None:
            return self._key()
        target = _target.get()
        if target is None:
            raise ConfigurationError(
                "key", "no failover target to key the breaker on; give key= or use Failover"
            )
        return target

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        runners: dict[Hashable, SyncRunner] = {}
        current_key, get = self._current_key, self.get
        by_target = self._key is None  # then the key is the failover target: read it inline

        def keyed_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            key = _target.get() if by_target else current_key()
            run = runners.get(key)
            if run is None:
                if by_target and key is None:
                    current_key()  # raises: no key
                run = runners.setdefault(key, get(key)._bind_sync(nxt))
            return run(fn, args, kwargs)

        return keyed_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        runners: dict[Hashable, AsyncRunner] = {}
        current_key, get = self._current_key, self.get
        by_target = self._key is None  # then the key is the failover target: read it inline

        async def keyed_async(fn: Any, args: Any, kwargs: Any) -> Any:
            key = _target.get() if by_target else current_key()
            run = runners.get(key)
            if run is None:
                if by_target and key is None:
                    current_key()  # raises: no key
                run = runners.setdefault(key, get(key)._bind_async(nxt))
            return await run(fn, args, kwargs)

        return keyed_async

    def describe(self) -> str:
        """Say in words what these breakers do."""
        proto = CircuitBreaker(name=self.name, **self._options)
        return f"a circuit breaker per key, each {proto.describe()}"
