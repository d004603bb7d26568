"""Shared breaker storage that fails open (internal): the guard, and a lazy Redis storage.

A breaker whose state lives in a shared storage (Redis) must not turn an outage of that
storage into an outage of the service it guards (issue 11: with Redis down, a call waited
~4.5 s in redis-py's retries and then raised ``redis.exceptions.ConnectionError``; with Redis
cut under a running breaker, calls took 7 to 16 s each). `GuardedStorage` stands between a
breaker and its shared storage: when the storage fails, the breaker goes on with a state in
process memory, seeded from the last values it read, and the storage is left alone for
``storage_retry`` seconds before it is tried again.

Imported on first use of a storage other than pybreaker's memory one, never by
``import failsafe``: it imports pybreaker, which imports redis whenever it is installed.
"""

from __future__ import annotations

import calendar
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import pybreaker

from failsafe._extras import missing_extra
from failsafe.clock import Clock
from failsafe.events import CircuitStorageRestored, CircuitStorageUnavailable, Event

_log = logging.getLogger("failsafe.circuit_breaker")
_CLOSED, _OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN
_Snapshot = tuple[str, int, int, datetime | None]


class _Ops(Protocol):
    """A shared storage's operations, raising the storage's errors instead of hiding them."""

    def state(self) -> str: ...
    def set_state(self, state: str) -> None: ...
    def counter(self) -> int: ...
    def increment_counter(self) -> int | None: ...
    def reset_counter(self) -> None: ...
    def success_counter(self) -> int: ...
    def increment_success_counter(self) -> int | None: ...
    def reset_success_counter(self) -> None: ...
    def opened_at(self) -> datetime | None: ...
    def set_opened_at(self, when: datetime) -> None: ...
    def snapshot(self) -> _Snapshot: ...


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: object) -> int:
    text = _text(value)
    return int(text) if text else 0


def _stamp(value: object) -> datetime | None:
    text = _text(value)
    return datetime.fromtimestamp(int(text), UTC) if text else None


class _RedisOps:
    """pybreaker's ``CircuitRedisStorage`` operations on the same keys, minus its ``except``.

    pybreaker's storage logs a ``RedisError`` and answers with a fallback, so a breaker cannot
    tell an outage from a closed circuit; this talks to the storage's client directly.
    """

    def __init__(self, storage: pybreaker.CircuitRedisStorage) -> None:
        self._redis: Any = storage._redis
        name = storage._namespace
        self._state = name("state")
        self._fails = name("fail_counter")
        self._successes = name("success_counter")
        self._opened = name("opened_at")
        self._fallback = str(getattr(storage, "_fallback_circuit_state", _CLOSED))
        self._cluster = bool(getattr(storage, "_cluster_mode", False))

    def state(self) -> str:
        return _text(self._redis.get(self._state)) or self._fallback

    def set_state(self, state: str) -> None:
        self._redis.set(self._state, state)

    def counter(self) -> int:
        return _number(self._redis.get(self._fails))

    def increment_counter(self) -> int | None:
        return int(self._redis.incr(self._fails))

    def reset_counter(self) -> None:
        self._redis.set(self._fails, 0)

    def success_counter(self) -> int:
        return _number(self._redis.get(self._successes))

    def increment_success_counter(self) -> int | None:
        return int(self._redis.incr(self._successes))

    def reset_success_counter(self) -> None:
        self._redis.set(self._successes, 0)

    def opened_at(self) -> datetime | None:
        return _stamp(self._redis.get(self._opened))

    def set_opened_at(self, when: datetime) -> None:
        # as pybreaker does: whole seconds, and only ever forwards (several processes write it)
        key, stamp = self._opened, calendar.timegm(when.timetuple())
        if self._cluster:
            current = self._redis.get(key)
            if not current or stamp > int(current):
                self._redis.set(key, stamp)
            return

        def set_if_greater(pipe: Any) -> None:
            current = pipe.get(key)
            pipe.multi()
            if not current or stamp > int(current):
                pipe.set(key, stamp)

        self._redis.transaction(set_if_greater, key)

    def snapshot(self) -> _Snapshot:
        keys = (self._state, self._fails, self._successes, self._opened)
        # in a cluster the keys may live on different nodes: one GET each
        values = [self._redis.get(k) for k in keys] if self._cluster else self._redis.mget(keys)
        return (
            _text(values[0]) or self._fallback,
            _number(values[1]),
            _number(values[2]),
            _stamp(values[3]),
        )


class _StorageOps:
    """Any other pybreaker storage, through its public interface (its errors pass through)."""

    def __init__(self, storage: pybreaker.CircuitBreakerStorage) -> None:
        self._storage = storage

    def state(self) -> str:
        return self._storage.state

    def set_state(self, state: str) -> None:
        self._storage.state = state

    def counter(self) -> int:
        return self._storage.counter

    def increment_counter(self) -> int | None:
        self._storage.increment_counter()
        return None

    def reset_counter(self) -> None:
        self._storage.reset_counter()

    def success_counter(self) -> int:
        return self._storage.success_counter

    def increment_success_counter(self) -> int | None:
        self._storage.increment_success_counter()
        return None

    def reset_success_counter(self) -> None:
        self._storage.reset_success_counter()

    def opened_at(self) -> datetime | None:
        return self._storage.opened_at

    def set_opened_at(self, when: datetime) -> None:
        self._storage.opened_at = when

    def snapshot(self) -> _Snapshot:
        s = self._storage
        return s.state, s.counter, s.success_counter, s.opened_at


def _ops(storage: pybreaker.CircuitBreakerStorage) -> _Ops:
    if isinstance(storage, pybreaker.CircuitRedisStorage) and hasattr(storage, "_redis"):
        return _RedisOps(storage)
    return _StorageOps(storage)


def _describe(exc: BaseException) -> tuple[str, str]:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return name, str(exc)[:200]


class GuardedStorage(pybreaker.CircuitBreakerStorage):
    """What a breaker reads and writes in front of a shared storage (internal).

    While the storage answers, every operation goes to it, and the values read or written
    are remembered. When an operation raises, the storage is *unavailable*: the operation is
    done on a `pybreaker.CircuitMemoryStorage` seeded from the remembered values, a
    `CircuitStorageUnavailable` event is queued, and every operation stays local until
    ``retry_interval`` seconds (monotonic) have passed. Then `poll` (called by the breaker
    outside its lock) tries the storage once; if it answers, the breaker resynchronises:

    - a circuit that opened in this process during the outage and is still open is written
      to the storage (state, opening time, success count), so the other processes learn it;
    - otherwise the shared state is adopted as found, and what was counted locally during
      the outage (consecutive failures, probe successes) is dropped;

    and a `CircuitStorageRestored` event is queued. Queued events are taken with `take` by
    the breaker, which publishes them once its lock is released.
    """

    def __init__(
        self,
        storage: pybreaker.CircuitBreakerStorage,
        *,
        policy: str,
        key: object,
        retry_interval: float,
        clock: Clock,
    ) -> None:
        super().__init__(storage.name)
        self.shared = storage
        self._ops = _ops(storage)
        self._policy = policy
        self._key = key
        self._interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._local: pybreaker.CircuitMemoryStorage | None = None
        self._retry_at = 0.0
        self._lost_at = 0.0
        self._restoring = False
        self._opened_here = False  # the circuit opened in this process during the outage
        # the last values read from or written to the storage, to seed the local state
        self._known_state: str = _CLOSED
        self._known_counter = 0
        self._known_successes = 0
        self._known_opened: datetime | None = None
        self.pending: list[Event] = []

    @property
    def available(self) -> bool:
        """Whether the shared storage is in use (``False`` during an outage)."""
        return self._local is None

    def take(self) -> list[Event]:
        """Return the queued events and forget them."""
        with self._lock:
            events, self.pending = self.pending, []
        return events

    # -- outage and restoration ---------------------------------------------------------------
    def _lost(self, exc: Exception) -> pybreaker.CircuitMemoryStorage:
        """Switch to (or stay on) the local state after the storage raised ``exc``."""
        with self._lock:
            now = self._clock.monotonic()
            self._retry_at = now + self._interval
            local = self._local
            if local is not None:
                return local
            local = pybreaker.CircuitMemoryStorage(self._known_state)
            local._fail_counter = self._known_counter
            local._success_counter = self._known_successes
            local._opened_at = self._known_opened
            self._local, self._lost_at, self._opened_here = local, now, False
            error, message = _describe(exc)
            self.pending.append(
                CircuitStorageUnavailable(
                    policy=self._policy, key=self._key, error=error, message=message
                )
            )
        _log.warning(
            "circuit breaker %r: storage unavailable (%s: %s); keeping a local state, "
            "trying the storage again in %gs",
            self._label(),
            error,
            message,
            self._interval,
        )
        return local

    def poll(self) -> str:
        """Read the state; first, if the storage is down and its retry time came, try it again.

        The breaker calls this outside its lock, so that the I/O of a restoration never holds
        the lock; only one thread at a time tries, the others go on with the local state.
        """
        local = self._local
        if local is not None and self._clock.monotonic() >= self._retry_at:
            self._try_restore()
        return self.state

    def _try_restore(self) -> None:
        with self._lock:
            local = self._local
            if local is None or self._restoring or self._clock.monotonic() < self._retry_at:
                return
            self._restoring = True
        opened = local.opened_at
        wrote_back = self._opened_here and local.state == _OPEN and opened is not None
        try:
            if wrote_back:
                assert opened is not None
                self._ops.set_state(_OPEN)
                self._ops.set_opened_at(opened)
                self._ops.reset_success_counter()
            state, counter, successes, opened_at = self._ops.snapshot()
        except Exception as exc:
            with self._lock:
                self._retry_at = self._clock.monotonic() + self._interval
                self._restoring = False
            _log.debug("circuit breaker %r: storage still unavailable: %r", self._label(), exc)
            return
        with self._lock:
            self._remember(state, counter, successes, opened_at)
            outage = self._clock.monotonic() - self._lost_at
            self._local, self._restoring, self._opened_here = None, False, False
            self.pending.append(
                CircuitStorageRestored(
                    policy=self._policy, key=self._key, wrote_back=wrote_back, outage=outage
                )
            )
        _log.info(
            "circuit breaker %r: storage restored after %.3gs (%s)",
            self._label(),
            outage,
            "wrote the local opening back" if wrote_back else "adopted the shared state",
        )

    def _remember(
        self, state: str, counter: int, successes: int, opened_at: datetime | None
    ) -> None:
        self._known_state, self._known_counter = state, counter
        self._known_successes, self._known_opened = successes, opened_at

    def _label(self) -> str:
        return self._policy if self._key is None else f"{self._policy}[{self._key}]"

    def _remote(self, op: Callable[[], Any]) -> tuple[bool, Any]:
        """Run ``op`` on the storage: ``(True, its result)``, or ``(False, local storage)``."""
        try:
            return True, op()
        except Exception as exc:
            return False, self._lost(exc)

    # -- the pybreaker storage interface ------------------------------------------------------
    @property
    def state(self) -> str:
        """The circuit's state, from the storage or, during an outage, the local state."""
        local = self._local
        if local is None:
            ok, value = self._remote(self._ops.state)
            if ok:
                self._known_state = value
                return str(value)
            local = value
        return local.state

    @state.setter
    def state(self, state: str) -> None:
        local = self._local
        if local is None:
            ok, local = self._remote(lambda: self._ops.set_state(state))
            if ok:
                self._known_state = state
                return
        if state == _OPEN:
            self._opened_here = True
        local.state = state

    @property
    def counter(self) -> int:
        """The consecutive failure count."""
        local = self._local
        if local is None:
            ok, value = self._remote(self._ops.counter)
            if ok:
                self._known_counter = value
                return int(value)
            local = value
        return local.counter

    def increment_counter(self) -> None:
        """Count one more failure."""
        local = self._local
        if local is None:
            ok, value = self._remote(self._ops.increment_counter)
            if ok:
                self._known_counter = self._known_counter + 1 if value is None else value
                return
            local = value
        local.increment_counter()

    def reset_counter(self) -> None:
        """Forget the failures counted."""
        local = self._local
        if local is None:
            ok, local = self._remote(self._ops.reset_counter)
            if ok:
                self._known_counter = 0
                return
        local.reset_counter()

    @property
    def success_counter(self) -> int:
        """The probe successes counted while half-open."""
        local = self._local
        if local is None:
            ok, value = self._remote(self._ops.success_counter)
            if ok:
                self._known_successes = value
                return int(value)
            local = value
        return local.success_counter

    def increment_success_counter(self) -> None:
        """Count one more probe success."""
        local = self._local
        if local is None:
            ok, value = self._remote(self._ops.increment_success_counter)
            if ok:
                self._known_successes = self._known_successes + 1 if value is None else value
                return
            local = value
        local.increment_success_counter()

    def reset_success_counter(self) -> None:
        """Forget the probe successes counted."""
        local = self._local
        if local is None:
            ok, local = self._remote(self._ops.reset_success_counter)
            if ok:
                self._known_successes = 0
                return
        local.reset_success_counter()

    @property
    def opened_at(self) -> datetime | None:
        """When the circuit last opened (wall-clock time, UTC)."""
        local = self._local
        if local is None:
            ok, value = self._remote(self._ops.opened_at)
            if ok:
                self._known_opened = value
                return value  # type: ignore[no-any-return]
            local = value
        return local.opened_at

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        local = self._local
        if local is None:
            ok, local = self._remote(lambda: self._ops.set_opened_at(when))
            if ok:
                self._known_opened = when
                return
        self._opened_here = True
        local.opened_at = when


class RedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's ``CircuitRedisStorage``, minus the Redis round trips in its constructor.

    pybreaker's constructor writes the initial keys (``SETNX``), so building a breaker while
    Redis is down raised. Here nothing talks to Redis before the first operation; a missing
    state reads as closed, and pybreaker's own state getter writes the keys when it finds
    them missing.
    """

    _built = False

    def __init__(self, client: Any, *, namespace: str) -> None:
        super().__init__(pybreaker.STATE_CLOSED, client, namespace=namespace)
        self._built = True

    def _initialize_redis_state(self, state: str) -> None:
        if self._built:  # not from the constructor
            super()._initialize_redis_state(state)


def fail_fast_client(url: str, *, timeout: float) -> Any:
    """A redis-py client that gives up on a dead server within ``timeout``, without retrying.

    redis-py 8 retries a failed connection with exponential backoff by default (seconds of
    ``time.sleep`` on the caller's thread); a breaker's storage must answer quickly or not at
    all, so the client has short socket timeouts and no retries.
    """
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:
        raise missing_extra("redis", "a circuit breaker shared through Redis", exc) from exc

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )
