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

A breaker on a shared storage (Redis) survives an outage of that storage: it goes on with a
state in process memory and resynchronises when the storage answers again (see
[`CircuitBreaker`][failsafe.CircuitBreaker] and
[`redis_storage`][failsafe.circuit_breaker.redis_storage]).
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypedDict

import attrs
from typing_extensions import Unpack

from failsafe import _registry
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
    import redis

    from failsafe._breaker_storage import GuardedStorage

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "ConsecutiveFailures",
    "FailureRate",
    "KeyedCircuitBreaker",
    "redis_client",
    "redis_storage",
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


def redis_client(url: str, *, timeout: float = 0.25) -> redis.Redis:
    """Build a redis-py client fit for a breaker's storage: it fails fast and never retries.

    redis-py (8) retries a failed connection with exponential backoff by default, sleeping
    on the caller's thread: with Redis down, one guarded call waited about 4.5 s. A
    breaker's storage must answer at once or be given up on, so this client has
    ``timeout``-second connect and socket timeouts and no client-side retries. Build one
    and share it between the storages of many keys (one connection pool);
    [`redis_storage`][failsafe.circuit_breaker.redis_storage] builds one from a URL.

    Args:
        url: A Redis URL (``"redis://127.0.0.1:6379/0"``).
        timeout: Seconds to wait for a connection, and for each answer.

    Raises:
        ConfigurationError: On a URL that is not a string or a bad ``timeout``.
        ImportError: When redis-py is not installed (``pip install 'failsafe-kit[redis]'``).
    """
    _v.check("timeout", timeout, number(above=0))
    if not isinstance(url, str):
        raise ConfigurationError("url", f"must be a Redis URL string, got {url!r}")
    from failsafe._breaker_storage import fail_fast_client

    return fail_fast_client(url, timeout=timeout)  # type: ignore[no-any-return]


def redis_storage(
    client: str | redis.Redis, *, namespace: str, timeout: float = 0.25
) -> pybreaker.CircuitRedisStorage:
    """Build a pybreaker Redis storage that never blocks or breaks the calls it protects.

    The result is a pybreaker ``CircuitRedisStorage`` (so it also works with pybreaker's own
    breaker) that, unlike pybreaker's, does not talk to Redis in its constructor: building a
    breaker while Redis is down does not raise. Given a URL, it talks to Redis through a
    [`redis_client`][failsafe.circuit_breaker.redis_client] (``timeout``-second timeouts, no
    client-side retries); given a client, through that client, whose timeouts and retries
    are yours.

    Whatever the storage, a [`CircuitBreaker`][failsafe.CircuitBreaker] keeps calls flowing
    when it fails: see its ``storage_retry`` option.

    Args:
        client: A Redis URL, or a ``redis.Redis`` client (keep ``decode_responses=False``,
            its default: pybreaker decodes the values itself).
        namespace: Prefix of the breaker's keys (``"{namespace}:pybreaker:state"`` and so
            on); breakers with the same namespace share one circuit.
        timeout: Seconds of connect and socket timeout of the client built from a URL.

    Raises:
        ConfigurationError: On an empty namespace, a bad timeout, or a ``client`` that is
            neither a URL nor a Redis client.
        ImportError: When redis-py is not installed (``pip install 'failsafe-kit[redis]'``).

    Example:
        ```python
        from failsafe import CircuitBreaker, KeyedCircuitBreaker
        from failsafe.circuit_breaker import redis_client, redis_storage

        url = "redis://127.0.0.1:6379/0"
        warehouse = CircuitBreaker(
            name="warehouse", storage=redis_storage(url, namespace="warehouse")
        )

        client = redis_client(url)  # one connection pool for every key
        per_target = KeyedCircuitBreaker(
            name="warehouse",
            storage_factory=lambda target: redis_storage(client, namespace=f"warehouse:{target}"),
        )
        ```
    """
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError("namespace", f"must be a non-empty string, got {namespace!r}")
    _v.check("timeout", timeout, number(above=0))
    if isinstance(client, str):
        client = redis_client(client, timeout=timeout)
    elif not callable(getattr(client, "transaction", None)):
        raise ConfigurationError(
            "client", f"must be a Redis URL or a redis.Redis client, got {client!r}"
        )
    from failsafe._breaker_storage import RedisStorage

    return RedisStorage(client, namespace=namespace)


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

    The comparison is exact: ``threshold`` is taken as the decimal it is written as
    (``0.14`` is 7/50), so 7 failures in 50 calls reach ``FailureRate(threshold=0.14)``.
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


def _exact(threshold: float) -> tuple[int, int]:
    """A failure-rate threshold as the integers of the decimal it is written as.

    ``Fraction(0.14)`` is the binary float, a hair above 7/50; ``0.14 * 50`` is
    ``7.000000000000001``, so 7 failures in 50 calls did not reach the threshold (issue 11).
    The shortest repr of the float is the decimal the user wrote.
    """
    exact = Fraction(repr(float(threshold)))
    return exact.numerator, exact.denominator


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

    def failing(self, now: float) -> bool:
        """Whether a failure falls in the window that ends at ``now``."""
        tick = int(now // self.width)
        return any(
            failures and tick - self.n < stamp <= tick
            for failures, stamp in zip(self.failures, self.stamps, strict=True)
        )

    def reset(self) -> None:
        # a stamp no tick can be near, so an emptied slice never counts (whatever the clock)
        self.stamps = [_NEVER] * self.n
        self.calls = [0] * self.n
        self.failures = [0] * self.n


def _is_memory(storage: pybreaker.CircuitBreakerStorage) -> bool:
    """Whether ``storage`` is pybreaker's own memory storage (nothing there can fail)."""
    return type(storage) is _pybreaker().CircuitMemoryStorage


def _readers(
    storage: pybreaker.CircuitBreakerStorage,
) -> tuple[Callable[[Any], str], Callable[[Any], int]]:
    """Read a storage's state and failure count, as the drivers do on every call.

    pybreaker's memory storage keeps them in plain fields behind properties: read the fields
    (no Python call) when they are there, else the properties.
    """
    if _is_memory(storage) and hasattr(storage, "_state") and hasattr(storage, "_fail_counter"):
        return _FIELDS
    return _PROPERTIES


# shared by every runner (a pair per runner was 200 bytes a key of a keyed breaker)
_FIELDS = attrgetter("_state"), attrgetter("_fail_counter")
_PROPERTIES = attrgetter("state"), attrgetter("counter")


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
        threshold: Short for ``trip=ConsecutiveFailures(threshold=threshold)`` (pybreaker's
            ``fail_max``): open after this many failures in a row. Give it or ``trip``,
            not both.
        trip: When to open: [`ConsecutiveFailures`][failsafe.ConsecutiveFailures] (default,
            5 in a row) or [`FailureRate`][failsafe.FailureRate].
        reset_timeout: Seconds the circuit stays open before it admits probes.
        max_reset_timeout: Let the open period grow: each time a probe fails and the circuit
            opens again, it rests twice as long as the time before, up to this many seconds
            (as Envoy's ejection time grows); a close starts again from ``reset_timeout``.
            ``None`` (default): every open period is ``reset_timeout``. A short first
            period with a cap (``reset_timeout=2, max_reset_timeout=30``) learns soon that
            a dependency is back, without probing a dead one every 2 s.
        half_open_max_calls: Probe calls admitted at once while half-open (per process).
        success_threshold: Successful probes needed to close the circuit.
        on: Which exceptions count as failures (default: every `Exception`). Other
            exceptions pass through and count neither way.
        on_result: A test on returned values; a true result counts as a failure (the value
            is still returned to the caller).
        storage: A pybreaker ``CircuitBreakerStorage``: ``None`` (default) for a new
            ``CircuitMemoryStorage`` of this breaker's own, in process memory, or a Redis
            storage ([`redis_storage`][failsafe.circuit_breaker.redis_storage], or
            pybreaker's ``CircuitRedisStorage``) to share the state between processes. The
            ``storage`` attribute holds the storage in use (the memory one when none was
            given).
        storage_retry: Seconds (monotonic) a breaker on a shared storage leaves the storage
            alone after it failed, before trying it again (default 5). Unused with the
            memory storage.
        clock: Time source. The open period is measured on ``clock.monotonic()`` in one
            process (memory storage); a shared storage holds the wall-clock opening time
            (``clock.time()``) so that processes agree on it.
        listeners: failsafe listeners (callables taking an event) and/or pybreaker
            ``CircuitBreakerListener`` instances (``state_change``, ``failure``,
            ``success`` are called).
        metrics_only: Run every call, whatever the circuit's state (default ``False``). The
            breaker keeps its states as usual, and where it would have refused a call it
            emits [`CircuitRejected`][failsafe.events.CircuitRejected] with
            ``enforced=False`` and runs the call instead; such a call's outcome is not
            counted (a breaker that enforced would not have made it), so the states move
            exactly as an enforcing breaker's would. For rolling out thresholds: watch what
            a breaker would do before it does it (resilience4j's ``METRICS_ONLY``).
        key: What this breaker is for, within a family of breakers of one ``name``, such as
            an endpoint. A [`KeyedCircuitBreaker`][failsafe.KeyedCircuitBreaker] sets it on
            each breaker it creates. It names the breaker ``name[key]`` in
            [`CircuitOpenError`][failsafe.CircuitOpenError] and reprs, and every circuit
            event carries it. ``None`` (default): a breaker of its own, named
            ``name``.

    Raises:
        ConfigurationError: At construction, on a bad option.

    When ``on`` or ``on_result`` raises, the call counts as a failure (a probe's failure:
    its slot is released and the circuit opens again) and the test's exception reaches the
    caller, chained to the call's own exception, if any.

    A shared storage never fails a call: when it raises (Redis down, or cut), the breaker
    goes on with a state in process memory, seeded from the last values it read, emits
    [`CircuitStorageUnavailable`][failsafe.events.CircuitStorageUnavailable], and tries the
    storage again ``storage_retry`` seconds later. When the storage answers, a circuit that
    opened here during the outage and is still open is written back (so the other
    processes learn it); otherwise the shared state is adopted as found, and a
    [`CircuitStorageRestored`][failsafe.events.CircuitStorageRestored] is emitted. An
    opening time read from a shared storage that lies in the future (another process's
    clock is ahead, or this one stepped back) counts from when this process first saw it,
    so such a circuit stays open at most ``reset_timeout`` more.

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
    threshold: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(integer(1))
    )
    trip: ConsecutiveFailures | FailureRate = ConsecutiveFailures(threshold=5)
    reset_timeout: float = attrs.field(default=30.0, validator=number(above=0))
    max_reset_timeout: float | None = attrs.field(
        default=None, validator=number(above=0, optional=True)
    )
    half_open_max_calls: int = attrs.field(default=1, validator=integer(1))
    success_threshold: int = attrs.field(default=1, validator=integer(1))
    on: Classifier = ANY_EXCEPTION
    on_result: ResultTest | None = None
    storage: pybreaker.CircuitBreakerStorage | None = None
    storage_retry: float = attrs.field(default=5.0, validator=number(above=0))
    clock: Clock = SYSTEM_CLOCK
    listeners: Sequence[Any] = attrs.field(default=(), converter=_v.objects)
    metrics_only: bool = attrs.field(default=False, validator=_v.boolean)
    key: object = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _probes: int = attrs.field(default=0, init=False)
    # Each closed/open/half-open period gets a number; a probe carries the number of the
    # half-open period that admitted it, so a probe that ends after the circuit moved on
    # (a "stale" probe) can neither close the circuit nor free a newer period's probe slot.
    _period: int = attrs.field(default=1, init=False)
    _predicate: Predicate = attrs.field(init=False)
    _window: _Window | None = attrs.field(default=None, init=False)
    _rate: tuple[int, int] = attrs.field(default=(1, 1), init=False)
    # The open period in force (it grows with max_reset_timeout), and how many openings in a
    # row (each after a failed probe) it is the period of
    _open_for: float = attrs.field(default=0.0, init=False)
    _openings: int = attrs.field(default=0, init=False)
    _events: tuple[Listener, ...] = attrs.field(default=(), init=False)
    _pb_listeners: tuple[pybreaker.CircuitBreakerListener, ...] = attrs.field(
        default=(), init=False
    )
    # What the breaker reads and writes: the storage itself when it is pybreaker's memory
    # storage (the hot path stays a field read), else a guard that survives its outages.
    _store: pybreaker.CircuitBreakerStorage = attrs.field(init=False)
    _guard: GuardedStorage | None = attrs.field(default=None, init=False)
    # The opening this breaker wrote, and when on the monotonic clock: while the storage
    # still holds that stamp (the same object in memory, the same second in Redis), the open
    # period is measured on the monotonic clock, so a wall-clock step neither prolongs nor
    # shortens it (issue 11). Another process's opening can only be timed on the wall clock.
    _stamp: datetime | None = attrs.field(default=None, init=False)
    _stamp_mono: float = attrs.field(default=0.0, init=False)
    # A stamp from the future read from a shared storage, and when it was first seen
    _future: tuple[float, float] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        pybreaker = _pybreaker()
        if self.threshold is not None:
            if self.trip is not _DEFAULT_TRIP:
                raise ConfigurationError(
                    "threshold",
                    f"give threshold= or trip=, not both (got trip={self.trip!r}); "
                    "threshold=n is short for trip=ConsecutiveFailures(threshold=n)",
                )
            self.trip = ConsecutiveFailures(threshold=self.threshold)
        if self.max_reset_timeout is not None and self.max_reset_timeout < self.reset_timeout:
            raise ConfigurationError(
                "max_reset_timeout",
                f"must be >= reset_timeout ({self.reset_timeout:g}), "
                f"got {self.max_reset_timeout!r}",
            )
        self._open_for = self.reset_timeout
        if not isinstance(self.trip, ConsecutiveFailures | FailureRate):
            raise ConfigurationError(
                "trip", f"must be ConsecutiveFailures or FailureRate, got {self.trip!r}"
            )
        if self.storage is None:
            self.storage = _memory_storage()
        storage = self.storage
        if not isinstance(storage, pybreaker.CircuitBreakerStorage):
            raise ConfigurationError(
                "storage", f"must be a pybreaker CircuitBreakerStorage, got {storage!r}"
            )
        self._predicate = classify(self.on, self.on_result)
        if isinstance(self.trip, FailureRate):
            self._window = _Window(self.trip)
            self._rate = _exact(self.trip.threshold)
        self._pb_listeners = tuple(
            x for x in self.listeners if isinstance(x, pybreaker.CircuitBreakerListener)
        )
        self._events = tuple(
            x for x in self.listeners if not isinstance(x, pybreaker.CircuitBreakerListener)
        )
        for x in self._events:
            if not callable(x):
                raise ConfigurationError("listeners", f"{x!r} is not callable")
        if _is_memory(storage):
            self._store = storage
        else:
            from failsafe._breaker_storage import GuardedStorage

            self._store = self._guard = GuardedStorage(
                storage,
                policy=self.name,
                key=self.key,
                retry_interval=self.storage_retry,
                clock=self.clock,
            )
        if self.key is None:  # a keyed breaker's own breakers are listed through it
            _registry.register(self)

    # -- inspection and manual control ------------------------------------------------------
    def _now_state(self) -> str:
        """The stored state, read outside the lock (a guarded storage may restore here)."""
        guard = self._guard
        if guard is None:
            return self._store.state
        state = guard.poll()
        if guard.pending:
            self._publish([])
        return state

    def _flush(self) -> None:
        """Publish what the storage guard noticed during a read outside the lock."""
        guard = self._guard
        if guard is not None and guard.pending:
            self._publish([])

    @property
    def state(self) -> CircuitState:
        """The stored state (an open circuit past its timeout half-opens on the next call)."""
        return CircuitState(self._now_state())

    @property
    def current_state(self) -> str:
        """The state's name, as pybreaker spells it (``"closed"``, ``"open"``, ``"half-open"``)."""
        return self._now_state()

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted so far (``ConsecutiveFailures`` mode)."""
        count = self._store.counter
        self._flush()
        return count

    @property
    def storage_available(self) -> bool:
        """Whether the storage is in use: ``False`` while a shared storage is unavailable."""
        return self._guard is None or self._guard.available

    @property
    def retry_after(self) -> float:
        """Seconds until an open circuit admits a probe (0 when not open)."""
        if self._now_state() != _OPEN:
            return 0.0
        remaining = self._remaining()
        self._flush()
        return remaining

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

    def half_open(self) -> bool:
        """Half-open an open circuit now, as if its open period had passed.

        The next calls are probes (up to ``half_open_max_calls``): a success closes the
        circuit, a failure opens it again (for a longer period with ``max_reset_timeout``).
        failsafe's HTTP transport does this when every endpoint's circuit is open, to probe
        the one that has rested longest rather than fail every request.

        Returns:
            Whether the circuit was open and is half-open now.
        """
        with self._lock:
            if self._store.state != _OPEN:
                return False
            events = self._to_half_open()
        self._publish(events)
        return True

    # -- what a keyed breaker asks before it drops this breaker ------------------------------
    def _at_rest(self) -> bool:
        """Whether dropping this breaker loses nothing that a new one would not have.

        True when its state lives in a shared storage (a new breaker of the key reads it
        there), or when its circuit is closed with no failure counted. Reads process memory
        only: a keyed breaker asks this with its own lock held.
        """
        if self._guard is not None:
            return True
        store = self._store
        if store.state != _CLOSED or store.counter:
            return False
        window = self._window
        return window is None or not window.failing(self.clock.monotonic())

    def _resting(self) -> bool:
        """Whether the circuit is open in process memory and its open period has not ended."""
        return self._guard is None and self._store.state == _OPEN and self._remaining() > 0

    # -- a reload of the configuration (failsafe.config) ----------------------------------
    def _take_over(self, old: CircuitBreaker) -> None:
        """Go on from ``old``'s state: a reload replaced ``old`` by this breaker (new options).

        Called by `failsafe.config` before this breaker serves its first call, with both
        breakers on the same clock. Kept: the state, the opening time (so an open circuit
        stays open, its period now measured with this breaker's ``reset_timeout`` from
        when it opened: a shorter one may half-open it at the next call), how many times
        in a row it opened (``max_reset_timeout`` growth), the successes of a half-open
        circuit, and the failures counted when both trips are of one kind (for
        ``FailureRate``, when ``window`` and ``buckets`` are unchanged too). A trip of
        another kind starts counting afresh, in the state it finds. Not kept: probes
        running on ``old``; they finish there, and this breaker admits its own. A breaker
        whose state lives in a shared storage (Redis) reads it there: nothing to copy.
        """
        if self._guard is not None or old._guard is not None:
            return
        with old._lock:
            source = old._store
            state, failures = source.state, source.counter
            successes, opened_at = source.success_counter, source.opened_at
            stamp, stamp_mono, future = old._stamp, old._stamp_mono, old._future
            openings = old._openings
            window = old._window
            slices = None
            if (
                window is not None
                and isinstance(old.trip, FailureRate)
                and isinstance(self.trip, FailureRate)
                and (old.trip.window, old.trip.buckets) == (self.trip.window, self.trip.buckets)
            ):
                slices = (list(window.stamps), list(window.calls), list(window.failures))
        with self._lock:
            store = self._store
            store.state = state
            store.reset_counter()
            store.reset_success_counter()
            if isinstance(old.trip, ConsecutiveFailures) and isinstance(
                self.trip, ConsecutiveFailures
            ):
                _set_count(store, "_fail_counter", store.increment_counter, failures)
            _set_count(store, "_success_counter", store.increment_success_counter, successes)
            if slices is not None and self._window is not None:
                self._window.stamps, self._window.calls, self._window.failures = slices
            if opened_at is not None:
                store.opened_at = opened_at
            # the same stamp object: _remaining measures the open period on the monotonic
            # clock from when old opened, as old did
            self._stamp, self._stamp_mono, self._future = stamp, stamp_mono, future
            self._openings = openings
            self._open_for = self.reset_timeout
            if self.max_reset_timeout is not None and openings:
                grown = self.reset_timeout * 2.0 ** min(openings - 1, 64)
                self._open_for = min(grown, self.max_reset_timeout)
            self._new_period()

    # -- transitions (called with the lock held; they return the events to publish) -------
    def _remaining(self) -> float:
        opened = self._store.opened_at
        if opened is None:
            return 0.0
        stamp = self._stamp
        if stamp is not None and (
            opened is stamp or int(opened.timestamp()) == int(stamp.timestamp())
        ):  # the storage holds this breaker's own opening (Redis: to the second)
            remaining = self._stamp_mono + self._open_for - self.clock.monotonic()
        else:
            remaining = self._remaining_shared(opened.timestamp())
        # the storage keeps microseconds (Redis: whole seconds); closer than that is "now"
        return remaining if remaining > 1e-6 else 0.0

    def _remaining_shared(self, opened: float) -> float:
        """Time left of an opening stamped by the wall clock (another process, or breaker)."""
        now = self.clock.time()
        if opened <= now:
            return opened + self._open_for - now
        # A stamp in the future: another process's clock is ahead, or this one stepped back.
        # Count the open period from when this breaker first saw the stamp (monotonic), so
        # the circuit stays open at most reset_timeout more, whatever the wall clocks say.
        mono = self.clock.monotonic()
        seen = self._future
        if seen is None or seen[0] != opened:
            self._future = seen = (opened, mono)
        return seen[1] + self._open_for - mono

    def _to_open(self, outcome: Outcome[Any] | None) -> list[Event | tuple[str, str]]:
        store = self._store
        old = store.state
        store.state = _OPEN
        stamp = datetime.fromtimestamp(self.clock.time(), UTC)
        store.opened_at = stamp
        self._stamp, self._stamp_mono, self._future = stamp, self.clock.monotonic(), None
        store.reset_success_counter()
        self._new_period()
        # a probe failed: open again, for longer (up to max_reset_timeout); else start over
        self._openings = self._openings + 1 if old == _HALF_OPEN else 1
        if self.max_reset_timeout is not None:
            grown = self.reset_timeout * 2.0 ** min(self._openings - 1, 64)
            self._open_for = min(grown, self.max_reset_timeout)
        return [
            CircuitOpened(
                policy=self.name, key=self.key, reset_timeout=self._open_for, outcome=outcome
            ),
            *self._changed(old, _OPEN),
        ]

    def _to_half_open(self) -> list[Event | tuple[str, str]]:
        store = self._store
        store.state = _HALF_OPEN
        store.reset_success_counter()
        self._new_period()
        half_opened = CircuitHalfOpened(policy=self.name, key=self.key)
        return [half_opened, *self._changed(_OPEN, _HALF_OPEN)]

    def _to_closed(self) -> list[Event | tuple[str, str]]:
        store = self._store
        old = store.state
        store.state = _CLOSED
        store.reset_counter()
        store.reset_success_counter()
        self._new_period()
        self._openings, self._open_for = 0, self.reset_timeout
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
        """Deliver transition events (and the storage's), after the lock is released."""
        guard = self._guard
        if guard is not None and guard.pending:
            events = [*guard.take(), *events]
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
            store = self._store
            state = store.state
            if state == _OPEN:
                retry_after = self._remaining()
                if retry_after <= 0:
                    events = self._to_half_open()
                    state = _HALF_OPEN
            admitted = state == _CLOSED
            probe = 0
            if state == _HALF_OPEN and self._probes < self.half_open_max_calls:
                self._probes += 1
                admitted, probe = True, self._period
        self._publish(events)
        if admitted:
            return probe
        _emit(
            self._events,
            CircuitRejected,
            policy=self.name,
            key=self.key,
            retry_after=retry_after,
            enforced=not self.metrics_only,
        )
        if self.metrics_only:
            return _UNCOUNTED
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
            store = self._store
            if probe:
                if self._end_probe(probe) and store.state == _HALF_OPEN:
                    store.increment_success_counter()
                    if store.success_counter >= self.success_threshold:
                        events = self._to_closed()
            elif self._window is not None:
                self._window.record(self.clock.monotonic(), False)
            elif store.counter:
                store.reset_counter()
        for listener in self._pb_listeners:
            _guarded(listener.success, self)
        if events or self._guard is not None:
            self._publish(events)

    def _failed(self, probe: int, outcome: Outcome[Any]) -> None:
        events: list[Event | tuple[str, str]] = []
        with self._lock:
            store = self._store
            state = store.state
            if probe:
                if self._end_probe(probe) and state == _HALF_OPEN:
                    events = self._to_open(outcome)
            elif state == _CLOSED:
                if self._window is not None:
                    assert isinstance(self.trip, FailureRate)
                    calls, failures = self._window.record(self.clock.monotonic(), True)
                    # exact: failures / calls >= num / den, in integers (see _exact)
                    num, den = self._rate
                    if calls >= self.trip.minimum_calls and failures * den >= num * calls:
                        events = self._to_open(outcome)
                else:
                    assert isinstance(self.trip, ConsecutiveFailures)
                    store.increment_counter()
                    if store.counter >= self.trip.threshold:
                        events = self._to_open(outcome)
        if outcome.exception is not None:
            for listener in self._pb_listeners:
                _guarded(listener.failure, self, outcome.exception)
        self._publish(events)

    def _ignored(self, probe: int) -> None:
        if probe:
            with self._lock:
                self._end_probe(probe)

    def _test_raised(self, probe: int, error: BaseException) -> None:
        """``on`` or ``on_result`` raised ``error``: count the call as failed, free the probe.

        Without this a raising test during a half-open probe kept the probe's slot forever,
        and the breaker rejected every call until ``close()`` (issue 11).
        """
        if isinstance(error, Exception):
            self._failed(probe, Outcome(exception=error))
        else:  # KeyboardInterrupt and the like judge nothing
            self._ignored(probe)

    def _driver_reads(self) -> tuple[Any, Callable[[Any], str], Callable[[Any], int]]:
        """What the drivers read on every call: the store, and its state and failure count."""
        guard = self._guard
        if guard is None:
            state, counter = _readers(self._store)
            return self._store, state, counter
        now_state, flush = self._now_state, self._flush

        def read_state(_: object) -> str:
            return now_state()

        def read_counter(_: object) -> int:
            count = guard.counter
            flush()
            return count

        return guard, read_state, read_counter

    # -- drivers ------------------------------------------------------------------------------
    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        storage, state, counter = self._driver_reads()
        # the breaker itself, not its five decision methods bound: off the success path, an
        # attribute read costs nothing that matters, and a keyed breaker keeps a runner per
        # key held (five bound methods and their cells were 500 bytes of each)
        breaker = self
        matches_exception, matches_result = self._predicate._raw_tests()
        fast = self._window is None and not self._pb_listeners

        def breaker_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            probe = 0 if state(storage) == _CLOSED else breaker._admit()
            try:
                value = nxt(fn, args, kwargs)
            except Exception as exc:
                try:
                    counted = matches_exception(exc)
                except BaseException as error:  # the test's own error reaches the caller
                    breaker._test_raised(probe, error)
                    raise
                if counted:
                    breaker._failed(probe, Outcome(exception=exc))
                else:
                    breaker._ignored(probe)
                raise
            except BaseException:
                breaker._ignored(probe)
                raise
            if matches_result is not None:
                try:
                    counted = matches_result(value)
                except BaseException as error:
                    breaker._test_raised(probe, error)
                    raise
                if counted:
                    breaker._failed(probe, Outcome(value))
                    return value
            if probe or not fast or counter(storage):
                breaker._succeeded(probe)
            return value

        return breaker_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        storage, state, counter = self._driver_reads()
        breaker = self  # see _bind_sync
        matches_exception, matches_result = self._predicate._raw_tests()
        fast = self._window is None and not self._pb_listeners

        async def breaker_async(fn: Any, args: Any, kwargs: Any) -> Any:
            probe = 0 if state(storage) == _CLOSED else breaker._admit()
            try:
                value = await nxt(fn, args, kwargs)
            except Exception as exc:
                try:
                    counted = matches_exception(exc)
                except BaseException as error:  # the test's own error reaches the caller
                    breaker._test_raised(probe, error)
                    raise
                if counted:
                    breaker._failed(probe, Outcome(exception=exc))
                else:
                    breaker._ignored(probe)
                raise
            except BaseException:  # cancelled: the dependency was not judged
                breaker._ignored(probe)
                raise
            if matches_result is not None:
                try:
                    counted = matches_result(value)
                except BaseException as error:
                    breaker._test_raised(probe, error)
                    raise
                if counted:
                    breaker._failed(probe, Outcome(value))
                    return value
            if probe or not fast or counter(storage):
                breaker._succeeded(probe)
            return value

        return breaker_async

    def describe(self) -> str:
        """Say in words what this breaker does."""
        return (
            f"circuit breaker {self._label()!r}: {self.trip.describe()}, "
            f"half-opens after {self.reset_timeout:g}s"
            + (
                f" (doubling after each failed probe, up to {self.max_reset_timeout:g}s)"
                if self.max_reset_timeout is not None
                else ""
            )
            + (", metrics only (never refuses a call)" if self.metrics_only else "")
        )


def _set_count(
    store: pybreaker.CircuitBreakerStorage, field: str, increment: Callable[[], None], count: int
) -> None:
    """Set a storage's counter (reset to zero before): the field of the memory storage."""
    if hasattr(store, field):
        setattr(store, field, count)
    else:  # pragma: no cover - another storage: count up to it
        for _ in range(count):
            increment()


# The probe number of a call a metrics-only breaker would have refused: it matches no
# half-open period, so its outcome changes nothing (see _end_probe).
_UNCOUNTED = -1

# What ``trip`` is when it is not given (the field's default object), told apart by identity
# so that ``threshold=`` can refuse an explicit ``trip=`` (even an equal one) and ``trip``
# keeps its plain type.
_DEFAULT_TRIP = attrs.fields(CircuitBreaker).trip.default


class BreakerOptions(TypedDict, total=False):
    """The options of [`CircuitBreaker`][failsafe.CircuitBreaker] that a keyed breaker repeats."""

    threshold: int
    trip: ConsecutiveFailures | FailureRate
    reset_timeout: float
    max_reset_timeout: float | None
    half_open_max_calls: int
    success_threshold: int
    on: Classifier
    on_result: ResultTest | None
    storage_retry: float
    clock: Clock
    listeners: Sequence[Any]
    metrics_only: bool


# -- keyed breakers -------------------------------------------------------------------------
# Until it was bounded, a keyed breaker kept, for every key it ever saw, a breaker, its storage
# and a bound runner per pipeline (1.9 KB a key), forever; and a call slowed from 0.41 us at
# one key to 2.4 us over 100k keys, because each call walked a dozen objects of its key's,
# scattered over hundreds of MB (a cache miss each). Now the map is bounded (``max_keys``,
# ``idle_ttl``), and a key whose calls have all succeeded is one dictionary entry whose value
# is a shared int (the generation of its last use): it gets a breaker only when a call fails
# or the breaker is asked for, since a closed breaker with no failure counted is all that a
# new one would be. A call of such a key reads the dict and nothing else of the key's.
# Recency is kept to a grain: idle_ttl / 60, at most a minute (memcached, likewise, bumps an
# item in its LRU at most once a minute). A key moves in the LRU order on its first call in a
# grain only: moving it on every call touches the order's links (more cache misses a call),
# and with a grain of a second, 100k keys called a few times a second each moved on one call
# in a few.
_GRAIN = 60.0
_SWEEP = 1024  # idle keys dropped at most when a grain begins (prune(): all)
_SWEEP_ON_USE = 2  # and whenever a key is added or moved (so that they go faster than come)


class _Kept:
    """A key's breaker in a keyed map, with the map's bookkeeping for it."""

    __slots__ = ("breaker", "gen", "held", "runners")

    def __init__(self, breaker: CircuitBreaker, gen: int) -> None:
        self.breaker = breaker
        self.gen = gen  # the generation of its last use (see KeyedCircuitBreaker._advance)
        # in the map's _held order: its next call moves it back (it may hold nothing since)
        self.held = False
        # the breaker's runner around each next stage it was bound to: dropped with the key
        self.runners: dict[Any, Any] | None = None

    def runner(self, nxt: Any, bind: Callable[[CircuitBreaker, Any], Any]) -> Any:
        runners = self.runners
        if runners is None:
            runners = self.runners = {}
        run = runners.get(nxt)
        if run is None:
            run = runners.setdefault(nxt, bind(self.breaker, nxt))
        return run


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
        storage_factory: Builds the pybreaker storage of a key's breaker (for example
            ``lambda key: redis_storage(client, namespace=f"orders:{key}")``, see
            [`redis_storage`][failsafe.circuit_breaker.redis_storage]); default: in memory.
            It is called when a key's breaker is built, so it should not talk to the
            storage: pybreaker's own ``CircuitRedisStorage`` does, and raises while Redis
            is down.
        max_keys: The most keys held at once (default 10,000). A new key beyond it drops
            the least recently used key whose circuit is closed with no failure counted;
            only when every key held has a failure counted or an open circuit does the
            least recently used of those go (with a warning logged, at most one a grain).
            ``None``: no maximum (for a fixed set of keys).
        idle_ttl: Seconds after its last call that a key is dropped (default 3600), unless
            its circuit is open and its open period has not ended: then it is kept until
            it has. Measured on the ``clock`` option. ``None``: keys are never dropped for
            being idle.
        **options: Any other [`CircuitBreaker`][failsafe.CircuitBreaker] option (see
            [`BreakerOptions`][failsafe.circuit_breaker.BreakerOptions]), given to each
            key's breaker; not ``storage``: each key needs one of its own, from
            ``storage_factory``.

    Raises:
        ConfigurationError: At construction, on a bad option; at call time, when no key
            can be found (no failover target and no ``key`` function).

    A dropped key loses what its breaker held in process memory: its next call gets a new
    breaker, closed. With a shared storage (``storage_factory``) the circuit's state stays
    in the storage and the new breaker reads it there, so such a key counts as holding
    nothing when room is made.

    Recency is kept to a grain: a minute, or ``idle_ttl / 60`` when that is shorter. Calls
    of keys closer together count as simultaneous, and a key counts as idle from
    ``idle_ttl`` to ``idle_ttl`` plus a grain after its last call. Idle keys are dropped as
    calls come (a few whenever a key is added, up to 1,024 as each grain begins), and all at
    once by [`prune`][failsafe.KeyedCircuitBreaker.prune];
    [`evicted`][failsafe.KeyedCircuitBreaker.evicted] counts the keys dropped.

    A key whose calls have all succeeded costs a dictionary entry, not a breaker object:
    with the default memory storage, ``ConsecutiveFailures`` and no pybreaker listeners,
    its breaker is built when a call fails or when it is asked for (``get``,
    ``breakers[key]``). Otherwise each key gets its breaker at its first call.

    Thread-safety: safe to share between threads and tasks. A call of a known key takes no
    lock; a lock guards adding, dropping and reordering keys (never a call or an ``await``).

    Example:
        ```python
        from failsafe import KeyedCircuitBreaker

        per_tenant = KeyedCircuitBreaker(
            name="billing", key=lambda: "tenant-a", max_keys=1_000, idle_ttl=600
        )
        ```
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_evicted",
        "_forced",
        "_gen",
        "_grain",
        "_held",
        "_idle_ttl",
        "_key",
        "_lean",
        "_lock",
        "_max_keys",
        "_options",
        "_order",
        "_proto",
        "_storage_factory",
        "_table",
        "_until",
        "_warned",
        "name",
    )

    def __init__(
        self,
        *,
        name: str = "circuit-breaker",
        key: Callable[[], Hashable] | None = None,
        storage_factory: Callable[[Hashable], pybreaker.CircuitBreakerStorage] | None = None,
        max_keys: int | None = 10_000,
        idle_ttl: float | None = 3600.0,
        **options: Unpack[BreakerOptions],
    ) -> None:
        if max_keys is not None:
            _v.check("max_keys", max_keys, integer(1))
        _v.check("idle_ttl", idle_ttl, number(above=0, optional=True))
        if "storage" in options:
            raise ConfigurationError(
                "storage", "each key needs a storage of its own: give storage_factory="
            )
        self.name = name
        self._max_keys = max_keys
        self._idle_ttl = idle_ttl
        self._key = key
        self._storage_factory = storage_factory
        self._options = options
        self._proto = proto = CircuitBreaker(name=name, **options)  # validates them now
        _registry.forget(proto)
        _registry.register(self)
        # whether a key without failures needs no breaker object (see the note at _GRAIN)
        self._lean = (
            storage_factory is None
            and isinstance(proto.trip, ConsecutiveFailures)
            and not proto._pb_listeners
        )
        self._clock = proto.clock
        self._grain = _GRAIN if idle_ttl is None else min(_GRAIN, idle_ttl / 60)
        self._lock = threading.Lock()
        # key -> the generation of its last use (a key without a breaker), or its _Kept;
        # read without the lock, written with it
        self._table: dict[Hashable, int | _Kept] = {}
        # every key is in one of these, least recently used first: _order, or _held when
        # its breaker had a state to keep the last time room was made (or an open circuit
        # outlived its idle time)
        self._order: OrderedDict[Hashable, None] = OrderedDict()
        self._held: OrderedDict[Hashable, None] = OrderedDict()
        # The current generation, an int object shared by the entries of the keys used in
        # it (so a call compares identities), until clock time _until
        self._gen = -1
        self._until = -math.inf
        self._evicted = 0
        # keys dropped for room although they held a state, and the generation of the last
        # warning about it
        self._forced = 0
        self._warned = -1

    # -- inspection ---------------------------------------------------------------------------
    @property
    def max_keys(self) -> int | None:
        """The most keys held at once (``None``: no maximum)."""
        return self._max_keys

    @property
    def idle_ttl(self) -> float | None:
        """Seconds after its last call that a key is dropped (``None``: never for that)."""
        return self._idle_ttl

    def get(self, key: Hashable) -> CircuitBreaker:
        """Return the breaker for ``key``, creating it on first use (a use of the key).

        Do not keep it: once the key is dropped (see ``max_keys`` and ``idle_ttl``), calls
        go through a new breaker; ask again.
        """
        now = self._clock.monotonic()
        entry = self._table.get(key)
        fresh = type(entry) is _Kept and entry.gen is self._gen and not entry.held
        if fresh and now < self._until:
            assert isinstance(entry, _Kept)
            return entry.breaker
        self._touch(key, now)
        return self._charge(key)

    @property
    def breakers(self) -> Mapping[Hashable, CircuitBreaker]:
        """The keys held now, each with its breaker (a read-only, live mapping).

        Reading a key's breaker (``breakers[key]``, ``.values()``, ``.items()``) builds it
        when the key has none yet, as `get` does; listing the keys (``list(breakers)``,
        ``len``, ``in``) does not.
        """
        return _BreakerMap(self)

    @property
    def evicted(self) -> int:
        """How many keys were dropped so far (idle, or to make room)."""
        return self._evicted

    def prune(self) -> int:
        """Drop every key idle for ``idle_ttl`` now; return how many were dropped.

        Calls drop idle keys as they come; this drops them all at once (in time
        proportional to the number of keys held). An open circuit whose open period has
        not ended is kept.
        """
        ttl = self.idle_ttl
        now = self._clock.monotonic()
        with self._lock:
            before = self._evicted
            if now >= self._until:
                self._advance(now)
            if ttl is None:
                return 0
            horizon, grain = now - ttl, self._grain
            table, order, held = self._table, self._order, self._held
            for key in [*order, *held]:
                entry = table[key]
                gen = entry.gen if isinstance(entry, _Kept) else entry
                if (gen + 1) * grain > horizon:
                    continue
                if isinstance(entry, _Kept) and entry.breaker._resting():
                    if not entry.held:
                        self._hold(key, entry)
                    continue
                self._drop(key)
            return self._evicted - before

    def _take_over(self, old: KeyedCircuitBreaker) -> None:
        """Go on from ``old``'s keys: a reload replaced ``old`` by this keyed breaker.

        Called by `failsafe.config` before this breaker serves its first call, with both on
        the same clock. Each key whose breaker holds a state (a failure counted, a circuit
        open or half-open) gets a breaker here that takes that state over (see
        `CircuitBreaker._take_over`), up to ``max_keys`` keys, the most recently used
        first; they count as used now. Keys holding nothing are not carried: a key's first
        call here finds what they held, a closed circuit with no failure counted.
        """
        with old._lock:
            keys = [*old._held, *old._order]  # held first: _order ends with the most recent
            carried = []
            for key in keys:
                entry = old._table[key]
                if isinstance(entry, _Kept) and not entry.breaker._at_rest():
                    carried.append((key, entry.breaker))
        if self.max_keys is not None:
            carried = carried[-self.max_keys :]
        now = self._clock.monotonic()
        for key, breaker in carried:
            self._touch(key, now)
            self._charge(key)._take_over(breaker)

    def _state_of(self, key: Hashable) -> CircuitState:
        """The state of ``key``'s circuit, building no breaker (a key without one is closed)."""
        entry = self._table.get(key)
        return entry.breaker.state if type(entry) is _Kept else CircuitState.CLOSED

    # -- the map (each method takes the lock) --------------------------------------------------
    def _touch(self, key: Hashable, now: float) -> int | _Kept:
        """Record a use of ``key`` at ``now`` (adding the key, making room); return its entry."""
        with self._lock:
            if now >= self._until:
                self._advance(now)
            elif self.idle_ttl is not None:
                self._sweep(now, _SWEEP_ON_USE)
            gen, table = self._gen, self._table
            entry = table.get(key)
            if entry is None:
                entry = gen if self._lean else _Kept(self._build(key), gen)
                self._make_room()
                table[key] = entry
                self._order[key] = None
            elif type(entry) is _Kept:
                if entry.gen is not gen or entry.held:
                    entry.gen = gen
                    self._promote(key, entry)
            elif entry is not gen:
                entry = table[key] = gen
                self._promote(key, entry)
            return entry

    def _charge(self, key: Hashable) -> CircuitBreaker:
        """The breaker of ``key``, built now if it has none (a call of it failed, or `get`)."""
        with self._lock:
            entry = self._table.get(key)
            if type(entry) is _Kept:
                return entry.breaker
            kept = _Kept(self._build(key), self._gen)  # first: the storage factory may raise
            if entry is None:  # dropped since the call started: it comes back
                self._make_room()
                self._order[key] = None
            self._table[key] = kept
            return kept.breaker

    def _build(self, key: Hashable) -> CircuitBreaker:
        extra: dict[str, Any] = {}
        if self._storage_factory is not None:
            extra["storage"] = self._storage_factory(key)
        return CircuitBreaker(name=self.name, key=key, **self._options, **extra)

    def _promote(self, key: Hashable, entry: int | _Kept) -> None:
        """Make ``key`` the most recently used (lock held)."""
        if isinstance(entry, _Kept) and entry.held:
            del self._held[key]
            self._order[key] = None
            entry.held = False
        else:
            self._order.move_to_end(key)

    def _hold(self, key: Hashable, kept: _Kept) -> None:
        """Move ``key`` from _order to the back of _held (lock held)."""
        del self._order[key]
        self._held[key] = None
        kept.held = True

    def _drop(self, key: Hashable) -> None:
        del self._table[key]
        if key in self._order:
            del self._order[key]
        else:
            del self._held[key]
        self._evicted += 1

    def _advance(self, now: float) -> None:
        """Start the generation ``now`` falls in; drop keys idle since (some of them)."""
        grain = self._grain
        gen = int(now // grain)
        if (gen + 1) * grain <= now:  # rounding
            gen += 1
        self._gen = gen
        self._until = (gen + 1) * grain
        if self.idle_ttl is not None:
            self._sweep(now, _SWEEP)

    def _sweep(self, now: float, limit: int) -> None:
        """Drop up to ``limit`` keys idle for ``idle_ttl``, the least recently used first."""
        assert self.idle_ttl is not None
        horizon, grain = now - self.idle_ttl, self._grain
        table, order, held = self._table, self._order, self._held
        # a key used in generation g was last used before (g + 1) * grain
        while order and limit > 0:
            key = next(iter(order))
            entry = table[key]
            gen = entry.gen if isinstance(entry, _Kept) else entry
            if (gen + 1) * grain > horizon:
                break
            limit -= 1
            if isinstance(entry, _Kept) and entry.breaker._resting():
                self._hold(key, entry)  # an open circuit outlives its idle time, held
            else:
                self._drop(key)
        for _ in range(min(limit, len(held))):
            key = next(iter(held))
            kept = table[key]
            assert type(kept) is _Kept
            if (kept.gen + 1) * grain > horizon:
                break
            if kept.breaker._resting():
                held.move_to_end(key)
            else:
                self._drop(key)

    def _make_room(self) -> None:
        """Drop keys until one more fits under ``max_keys`` (see the class documentation)."""
        table, order, held = self._table, self._order, self._held
        while self.max_keys is not None and len(table) >= self.max_keys:
            victim: Hashable = _NO_KEY
            while order:
                key = next(iter(order))
                entry = table[key]
                if isinstance(entry, _Kept) and not entry.breaker._at_rest():
                    self._hold(key, entry)  # it goes only when every key has a state
                    continue
                victim = key
                break
            if victim is _NO_KEY:
                victim = next(iter(held))
                kept = table[victim]
                assert type(kept) is _Kept
                self._forced += 1
                if self._warned != self._gen:  # once a grain: an outage drops many
                    self._warned = self._gen
                    _log.warning(
                        "%s: dropped the breaker of %r (%s) to stay within max_keys=%d: "
                        "every key held had a failure counted or an open circuit (%d such "
                        "keys dropped so far; this is logged at most once every %gs)",
                        self.name,
                        victim,
                        kept.breaker.current_state,
                        self.max_keys,
                        self._forced,
                        self._grain,
                    )
            self._drop(victim)

    # -- calls ----------------------------------------------------------------------------------
    def _current_key(self) -> Hashable:
        if self._key is not None:
            return self._key()
        target = _target.get()
        if target is None:
            raise ConfigurationError(
                "key", "no failover target to key the breaker on; give key= or use Failover"
            )
        return target

    def _lean_outcomes(
        self,
    ) -> tuple[
        Callable[[Hashable, BaseException], None],
        Callable[[Hashable, Any], None],
        Callable[[Any], object] | None,
    ]:
        """How both drivers book the outcome of a call of a key that has no breaker yet.

        A key without failures runs its call as a closed breaker with a zero count would;
        a failure gets the key its breaker, charged with it. Returns the booking of a raised
        exception, of a returned value, and the result test (``None``: values are not
        tested, so the success path books nothing).
        """
        matches_exception, matches_result = self._proto._predicate._raw_tests()
        charge = self._charge

        def raised(key: Hashable, exc: BaseException) -> None:
            try:
                counted = matches_exception(exc)
            except BaseException as error:  # the test's own error reaches the caller
                charge(key)._test_raised(0, error)
                raise
            if counted:
                charge(key)._failed(0, Outcome(exception=exc))

        def returned(key: Hashable, value: Any) -> None:
            assert matches_result is not None
            try:
                counted = matches_result(value)
            except BaseException as error:
                charge(key)._test_raised(0, error)
                raise
            if counted:
                charge(key)._failed(0, Outcome(value))

        return raised, returned, matches_result

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        table_get, clock, touch = self._table.get, self._clock, self._touch
        current_key = self._current_key
        by_target = self._key is None  # then the key is the failover target: read it inline
        raised, returned, matches_result = self._lean_outcomes()
        bind = CircuitBreaker._bind_sync
        state = self  # its _gen and _until, read on every call

        def keyed_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            key = _target.get() if by_target else current_key()
            entry, gen = table_get(key), state._gen
            stale = entry is not gen and (
                type(entry) is not _Kept or entry.gen is not gen or entry.held
            )
            if stale or clock.monotonic() >= state._until:
                if by_target and key is None:
                    current_key()  # raises: no key
                entry = touch(key, clock.monotonic())
            if type(entry) is _Kept:
                return entry.runner(nxt, bind)(fn, args, kwargs)
            # a key without failures: the call runs as a closed breaker with a zero count
            # would run it, and a failure gets the key its breaker
            try:
                value = nxt(fn, args, kwargs)
            except Exception as exc:
                raised(key, exc)
                raise
            if matches_result is not None:
                returned(key, value)
            return value

        return keyed_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        table_get, clock, touch = self._table.get, self._clock, self._touch
        current_key = self._current_key
        by_target = self._key is None
        raised, returned, matches_result = self._lean_outcomes()
        bind = CircuitBreaker._bind_async
        state = self

        async def keyed_async(fn: Any, args: Any, kwargs: Any) -> Any:
            key = _target.get() if by_target else current_key()
            entry, gen = table_get(key), state._gen
            stale = entry is not gen and (
                type(entry) is not _Kept or entry.gen is not gen or entry.held
            )
            if stale or clock.monotonic() >= state._until:
                if by_target and key is None:
                    current_key()  # raises: no key
                entry = touch(key, clock.monotonic())
            if type(entry) is _Kept:
                return await entry.runner(nxt, bind)(fn, args, kwargs)
            try:
                value = await nxt(fn, args, kwargs)
            except Exception as exc:
                raised(key, exc)
                raise
            if matches_result is not None:
                returned(key, value)
            return value

        return keyed_async

    def describe(self) -> str:
        """Say in words what these breakers do."""
        bounds = [
            f"at most {self.max_keys} keys" if self.max_keys is not None else "no key maximum",
            f"idle keys dropped after {self.idle_ttl:g}s"
            if self.idle_ttl is not None
            else "idle keys kept",
        ]
        return f"a circuit breaker per key ({', '.join(bounds)}), each {self._proto.describe()}"


_NO_KEY: Any = object()  # no key found yet (None is a key)


class _BreakerMap(Mapping[Hashable, CircuitBreaker]):
    """`KeyedCircuitBreaker.breakers`: the keys held, live; a key's breaker built on reading."""

    __slots__ = ("_keyed",)

    def __init__(self, keyed: KeyedCircuitBreaker) -> None:
        self._keyed = keyed

    def __getitem__(self, key: Hashable) -> CircuitBreaker:
        if key not in self._keyed._table:
            raise KeyError(key)
        return self._keyed.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._keyed._table

    def __iter__(self) -> Iterator[Hashable]:
        with self._keyed._lock:  # a copy: the keys may change while the caller iterates
            return iter(list(self._keyed._table))

    def __len__(self) -> int:
        return len(self._keyed._table)

    def __repr__(self) -> str:
        return f"<breakers of {self._keyed.name!r}: {len(self)} keys>"
