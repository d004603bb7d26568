"""`RateLimiter`: at most so many calls per period, per key, in one process or across many.

Two algorithms, both exact (no approximation error) and bounded in memory:

- **token bucket** (the default): ``rate`` permits per ``per`` seconds, and a bucket of
  ``burst`` permits that fills at that rate. Implemented as GCRA (the generic cell rate
  algorithm): one number per key, the *theoretical arrival time* of the next permit. Over
  any interval of ``L`` seconds at most ``rate * L / per + burst`` calls are admitted.
- **sliding window** (`RateLimiter.sliding_window`): at most ``limit`` calls in any
  ``window`` seconds, as an exact log of the admitted calls' times, pruned as they leave
  the window (at most ``limit`` entries per key without ``max_wait``).

A limiter may reject a call at once ([`RateLimited`][failsafe.RateLimited], with a
``retry_after``) or let it wait for its permit up to ``max_wait`` seconds; its state may live
in process memory or, through [`redis_rate_limit`][failsafe.rate_limiter.redis_rate_limit],
in Redis, shared by every process that names the same namespace.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs

from failsafe import _registry
from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe._validators import integer, number
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.events import (
    Listener,
    RateLimitDelayed,
    RateLimiterStorageRestored,
    RateLimiterStorageUnavailable,
    RateLimitRejected,
    _emit,
)
from failsafe.exceptions import ConfigurationError, RateLimited, UsageError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RateLimiter", "RedisRateLimit", "redis_rate_limit"]

_log = logging.getLogger("failsafe.rate_limiter")

# A permit due within a nanosecond of now counts as free now: GCRA's sums of float intervals
# otherwise leave a call at exactly the rate a few 1e-16 s short of its permit.
_EPS = 1e-9
_SWEEP_MIN, _SWEEP_MAX = 1.0, 60.0  # seconds between sweeps of the per-key map
_ROOM = 8  # a full map of busy keys drops 1/_ROOM of them at once (amortised O(_ROOM) a key)

Algorithm = Literal["token_bucket", "sliding_window"]


# -- the local algorithms ----------------------------------------------------------------------
class _Local(Protocol):
    """A limit counted in process memory, per key (``None``: the limiter's single limit)."""

    hold: float

    def take(self, key: Hashable, now: float, max_wait: float) -> float: ...
    def free(self, now: float) -> int: ...
    def give_back(self, key: Hashable, at: float) -> None: ...
    def __len__(self) -> int: ...
    def sweep(self, now: float) -> int: ...


class _Keys:
    """The per-key map's bookkeeping shared by both algorithms (lock held by the caller)."""

    __slots__ = ("evicted", "forced", "idle_ttl", "lock", "max_keys", "next_sweep", "period")

    def __init__(self, max_keys: int | None, idle_ttl: float | None, hold: float) -> None:
        self.lock = threading.Lock()
        self.max_keys = max_keys
        self.idle_ttl = idle_ttl
        # keys are swept every `period`: a key is dropped at most `period` seconds after it
        # started to hold nothing (its bucket full again, its window empty)
        period = hold if idle_ttl is None else min(hold, idle_ttl)
        self.period = min(_SWEEP_MAX, max(_SWEEP_MIN, period))
        self.next_sweep = -math.inf
        self.evicted = 0
        self.forced = 0


class _PerKey:
    """The per-key map of an algorithm: sweeping the keys that hold nothing, making room.

    An algorithm says, per key, when its latest permit was (``_last``) and below what time
    that means the key holds nothing worth keeping (``_idle``); the rest is shared.
    """

    __slots__ = ("keys", "lock", "states")

    keys: _Keys
    lock: threading.Lock
    states: dict[Hashable, Any]

    def __len__(self) -> int:
        return len(self.states)

    def _last(self, state: Any) -> float:
        raise NotImplementedError

    def _idle(self, now: float) -> float:
        raise NotImplementedError

    def sweep(self, now: float) -> int:
        """Drop every key that holds nothing now; return how many were dropped."""
        with self.lock:
            return self._sweep(now)

    def _sweep(self, now: float) -> int:
        keys, states, last = self.keys, self.states, self._last
        keys.next_sweep = now + keys.period
        idle = self._idle(now)
        gone = [k for k, state in states.items() if last(state) <= idle]
        for k in gone:
            del states[k]
        keys.evicted += len(gone)
        return len(gone)

    def _make_room(self, now: float) -> None:
        keys, states, last = self.keys, self.states, self._last
        assert keys.max_keys is not None
        if self._sweep(now) and len(states) < keys.max_keys:
            return
        # every key holds permits: drop those whose latest permit is oldest (they lose least)
        count = max(1, keys.max_keys // _ROOM, len(states) - keys.max_keys + 1)
        for k in heapq.nsmallest(count, states, key=lambda k: last(states[k])):
            del states[k]
        _forced(keys, count)


class _TokenBucket(_PerKey):
    """GCRA: per key, the theoretical arrival time (``tat``) of the next permit.

    A permit asked at ``now`` is due at ``max(tat, now) + interval - ahead`` (``ahead`` is
    ``burst * interval``): now or earlier, it is free; later by at most ``max_wait``, it is
    reserved and the caller waits; later still, nothing is taken. A key whose ``tat`` is
    past holds nothing (its bucket is full) and is dropped by the sweep.
    """

    __slots__ = ("ahead", "hold", "interval", "slack", "tat")

    def __init__(
        self,
        rate: float,
        per: float,
        burst: int,
        max_wait: float,
        max_keys: int | None,
        idle_ttl: float | None,
    ) -> None:
        self.interval = per / rate
        self.ahead = burst * self.interval
        # a permit is free now when max(tat, now) + interval - ahead <= now (+ _EPS), that
        # is when tat <= now + slack
        self.slack = self.ahead - self.interval + _EPS
        # a key holds state at most this long after its last permit was asked
        self.hold = self.ahead + max_wait
        self.tat = -math.inf  # the single limit's state (key None)
        self.states: dict[Hashable, float] = {}
        self.keys = _Keys(max_keys, idle_ttl, self.hold)
        self.lock = self.keys.lock

    def take(self, key: Hashable, now: float, max_wait: float) -> float:
        """Take a permit due within ``max_wait``; return its wait (> max_wait: none taken)."""
        if key is not None:
            return self._take_keyed(key, now, max_wait)
        lock = self.lock
        lock.acquire()  # not `with`: about 70 ns less a permit
        try:
            tat = self.tat
            if tat <= now + self.slack:  # free now
                self.tat = (tat if tat > now else now) + self.interval
                return 0.0
            tat += self.interval  # tat > now here
            wait = tat - self.ahead - now
            if wait <= max_wait:
                self.tat = tat
            return wait
        finally:
            lock.release()

    def _take_keyed(self, key: Hashable, now: float, max_wait: float) -> float:
        with self.lock:
            keys, states = self.keys, self.states
            if now >= keys.next_sweep:
                self._sweep(now)
            old = states.get(key)
            if old is None:
                if keys.max_keys is not None and len(states) >= keys.max_keys:
                    self._make_room(now)
                tat = now
            else:
                tat = old if old > now else now
            tat += self.interval
            wait = tat - self.ahead - now
            if wait <= _EPS:
                states[key] = tat
                return 0.0
            if wait <= max_wait:
                states[key] = tat
            return wait

    def free_now(self, now: float) -> bool:
        """Take the single limit's permit if it is free now; return whether it was taken.

        The hot path of a limiter without keys (``take`` with less to pass and decide).
        """
        lock = self.lock
        lock.acquire()  # not `with`: about 70 ns less a permit
        try:
            tat = self.tat
            if tat <= now + self.slack:
                self.tat = (tat if tat > now else now) + self.interval
                return True
            return False
        finally:
            lock.release()

    def free(self, now: float) -> int:
        """Permits of the single limit that could be taken at ``now`` without waiting."""
        with self.lock:
            tat = self.tat
        start = tat if tat > now else now
        # the n-th permit taken now is free while start + (n - 1) * interval <= now + slack
        free = math.floor((now + self.slack - start) / self.interval) + 1
        return max(0, min(free, round(self.ahead / self.interval)))

    def give_back(self, key: Hashable, at: float) -> None:
        """Return one permit taken and not used (the bucket gains one permit back)."""
        with self.lock:
            if key is None:
                self.tat -= self.interval
            elif key in self.states:
                self.states[key] -= self.interval

    def _last(self, state: Any) -> float:
        return float(state)  # the tat: the smallest is the nearest to a full bucket

    def _idle(self, now: float) -> float:
        """A ``tat`` at or below this holds nothing worth keeping at ``now``."""
        ttl = self.keys.idle_ttl
        # the last permit asked was due at tat - interval or earlier: idle since then
        return now if ttl is None else max(now, now - ttl + self.interval)


class _SlidingLog(_PerKey):
    """An exact sliding window: per key, the times of the permits taken in the last window.

    A permit asked at ``now`` is due when fewer than ``limit`` permits fall in the window
    ending then: at ``log[-limit] + window`` when the log holds ``limit`` or more (and not
    before the last permit reserved, so that waiting callers keep their order). Entries that
    left the window are pruned as permits are asked; without ``max_wait`` a log holds at most
    ``limit`` entries, with it at most ``limit * (1 + ceil(max_wait / window))``.
    """

    __slots__ = ("hold", "limit", "log", "window")

    def __init__(
        self,
        limit: int,
        window: float,
        max_wait: float,
        max_keys: int | None,
        idle_ttl: float | None,
    ) -> None:
        self.limit = limit
        self.window = window
        self.hold = window + max_wait
        self.log: deque[float] = deque()  # the single limit's log (key None)
        self.states: dict[Hashable, deque[float]] = {}
        self.keys = _Keys(max_keys, idle_ttl, self.hold)
        self.lock = self.keys.lock

    def _due(self, log: deque[float], now: float) -> float:
        horizon = now - self.window
        while log and log[0] <= horizon:
            log.popleft()
        n = len(log)
        if not n:
            return now
        due = log[-1] if log[-1] > now else now
        if n >= self.limit:
            free = log[n - self.limit] + self.window
            if free > due:
                due = free
        return due

    def take(self, key: Hashable, now: float, max_wait: float) -> float:
        """Take a permit due within ``max_wait``; return its wait (> max_wait: none taken)."""
        with self.lock:
            if key is None:
                log = self.log
            else:
                keys = self.keys
                if now >= keys.next_sweep:
                    self._sweep(now)
                found = self.states.get(key)
                if found is None:
                    if keys.max_keys is not None and len(self.states) >= keys.max_keys:
                        self._make_room(now)
                    log = self.states[key] = deque()
                else:
                    log = found
            due = self._due(log, now)
            wait = due - now
            if wait <= _EPS:
                log.append(due)
                return 0.0
            if wait <= max_wait:
                log.append(due)
            return wait

    def free(self, now: float) -> int:
        """Permits of the single limit that could be taken at ``now`` without waiting.

        Reads the log without pruning it; counts from its newest entry, so at most the
        entries inside the window are looked at.
        """
        horizon = now - self.window
        with self.lock:
            log = self.log
            if log and log[-1] > now + _EPS:  # a permit is reserved ahead: callers wait
                return 0
            held = 0
            for at in reversed(log):
                if at <= horizon or held >= self.limit:
                    break
                held += 1
        return self.limit - held

    def give_back(self, key: Hashable, at: float) -> None:
        """Remove the permit taken for ``at`` (the latest entry at or before it)."""
        with self.lock:
            log = self.log if key is None else self.states.get(key)
            if not log:
                return
            for i in range(len(log) - 1, -1, -1):
                if log[i] <= at + _EPS:
                    del log[i]
                    return

    def _last(self, state: Any) -> float:
        return float(state[-1]) if state else -math.inf  # an empty log holds nothing

    def _idle(self, now: float) -> float:
        """A log whose last permit is at or below this holds nothing worth keeping."""
        ttl = self.keys.idle_ttl
        return now - self.window if ttl is None else max(now - self.window, now - ttl)


def _forced(keys: _Keys, count: int) -> None:
    """Count (and log) keys dropped while they still held permits, to make room."""
    keys.evicted += count
    keys.forced += count
    _log.warning(
        "rate limiter: dropped %d keys that still held permits to stay within max_keys=%d "
        "(their limits start again full; %d such keys so far)",
        count,
        keys.max_keys,
        keys.forced,
    )


# -- shared storage ----------------------------------------------------------------------------
class _Backend(Protocol):
    """A limit counted in a shared storage, for one limiter's settings."""

    def take(self, key: Hashable, max_wait: float) -> tuple[float, object]: ...
    async def take_async(self, key: Hashable, max_wait: float) -> tuple[float, object]: ...
    def give_back(self, key: Hashable, token: object) -> None: ...
    async def give_back_async(self, key: Hashable, token: object) -> None: ...


class RedisRateLimit:
    """Where a [`RateLimiter`][failsafe.rate_limiter.RateLimiter] keeps its counts in Redis.

    Built by [`redis_rate_limit`][failsafe.rate_limiter.redis_rate_limit]; give it to a
    limiter as ``storage=`` (to several limiters, if they share its namespace and settings).

    Attributes:
        namespace: The prefix of the limiter's Redis keys.
    """

    __slots__ = ("_clients", "namespace")

    def __init__(self, *, namespace: str, clients: Any) -> None:
        self.namespace = namespace
        self._clients = clients

    def _bind(self, settings: _Settings) -> _Backend:
        from failsafe._limiter_redis import RedisBackend

        return RedisBackend(
            self._clients,
            namespace=self.namespace,
            algorithm=settings.algorithm,
            rate=settings.rate,
            per=settings.per,
            burst=settings.burst,
        )

    def close(self) -> None:
        """Close the synchronous client built from the URL (clients you gave stay yours)."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close the running event loop's client built from the URL, before the loop ends.

        A ``redis.asyncio`` connection belongs to its event loop: a program that runs
        several loops one after another (``asyncio.run`` twice) closes each loop's client
        this way, or Python warns about unclosed connections when the loop is gone.
        """
        await self._clients.aclose()

    def __repr__(self) -> str:
        return f"RedisRateLimit(namespace={self.namespace!r})"


@attrs.frozen
class _Settings:
    algorithm: Algorithm
    rate: float
    per: float
    burst: int


def redis_rate_limit(
    client: str | redis.Redis | redis.asyncio.Redis | tuple[redis.Redis, redis.asyncio.Redis],
    *,
    namespace: str,
    timeout: float = 0.25,
) -> RedisRateLimit:
    """Keep a rate limiter's counts in Redis, shared by every limiter with this namespace.

    Each permit is one atomic Lua script (``EVALSHA``: one round trip) running the same
    algorithm as the local limiter, on the Redis server's clock (``TIME``), so that
    processes on machines whose clocks differ still share one limit. A limit's Redis key
    is ``namespace`` (a limiter without keys) or ``f"{namespace}:{key}"`` (the sliding
    window adds a sorted set and a counter under ``{...}:log`` and ``{...}:seq``, one hash
    slot); keys expire once they hold nothing (a full bucket, an empty window). Times are
    doubles of seconds since 2023-11-14 (a few tens of nanoseconds of resolution): rates up
    to about 100,000 per second keep their accuracy within 0.1%.

    Given a URL, the limiter talks to Redis through clients built for it (``timeout``-second
    connect and socket timeouts, no client-side retries: a limit must answer at once or be
    given up on): a ``redis.Redis`` for ``call`` and ``try_acquire``, and one
    ``redis.asyncio.Redis`` per event loop for ``call_async``. Given clients, through those
    (their timeouts and retries are yours); a single sync or async client serves only its
    side, the other side then counts locally.

    When Redis fails, the limiter counts in process memory with the same settings (each
    process then enforces the whole limit on its own) and tries Redis again after its
    ``storage_retry`` seconds: see [`RateLimiter`][failsafe.rate_limiter.RateLimiter].

    Args:
        client: A Redis URL, a ``redis.Redis``, a ``redis.asyncio.Redis``, or a pair of them
            (keep ``decode_responses=False``, the default).
        namespace: The prefix of the limiter's keys; limiters with the same namespace share
            their limits, and must be built with the same settings.
        timeout: Seconds of connect and socket timeout of the clients built from a URL.

    Raises:
        ConfigurationError: On an empty namespace, a bad timeout, or a ``client`` that is
            not a URL or a Redis client.
        ImportError: When redis-py is not installed (``pip install 'failsafe-kit[redis]'``).

    Example:
        ```python
        from failsafe import RateLimiter
        from failsafe.rate_limiter import redis_rate_limit

        shared = redis_rate_limit("redis://127.0.0.1:6379/0", namespace="geocoder")
        limiter = RateLimiter(rate=50, per=1.0, storage=shared)
        ```
    """
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError("namespace", f"must be a non-empty string, got {namespace!r}")
    _v.check("timeout", timeout, number(above=0))
    from failsafe._limiter_redis import Clients, require_redis

    require_redis()
    if isinstance(client, str):
        clients = Clients(client=None, async_client=None, url=client, timeout=timeout)
        return RedisRateLimit(namespace=namespace, clients=clients)
    given: tuple[Any, ...] = client if isinstance(client, tuple) else (client,)
    sync_client: Any = None
    async_client: Any = None
    for c in given:
        if not callable(getattr(c, "evalsha", None)):
            raise ConfigurationError(
                "client", f"must be a Redis URL or a Redis client (or a pair), got {c!r}"
            )
        if _is_async_client(c):
            async_client = c
        else:
            sync_client = c
    clients = Clients(client=sync_client, async_client=async_client, url=None, timeout=timeout)
    return RedisRateLimit(namespace=namespace, clients=clients)


def _is_async_client(client: object) -> bool:
    module = type(client).__module__
    return module.startswith("redis.asyncio")


def _describe_error(exc: BaseException) -> tuple[str, str]:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return name, str(exc)[:200]


class _Shared:
    """A shared storage that fails open: counts locally while it is down (internal).

    While the storage answers, every permit is taken there. When it raises, the limiter
    counts on ``local`` (the same settings, in process memory), one
    `RateLimiterStorageUnavailable` is emitted, and the storage is left alone for
    ``retry_interval`` seconds (monotonic); then one caller tries it again while the others
    go on locally, and when it answers a `RateLimiterStorageRestored` is emitted.
    """

    __slots__ = (
        "_backend",
        "_clock",
        "_down",
        "_interval",
        "_listeners",
        "_local",
        "_lock",
        "_lost_at",
        "_policy",
        "_retry_at",
        "_trying",
    )

    def __init__(
        self,
        backend: _Backend,
        local: _Local,
        *,
        clock: Clock,
        retry_interval: float,
        listeners: Sequence[Listener],
        policy: str,
    ) -> None:
        self._backend = backend
        self._local = local
        self._clock = clock
        self._interval = retry_interval
        self._listeners = listeners
        self._policy = policy
        self._lock = threading.Lock()
        self._down = False
        self._trying = False
        self._retry_at = 0.0
        self._lost_at = 0.0

    @property
    def available(self) -> bool:
        return not self._down

    def _try_remote(self) -> bool:
        """Whether this caller should ask the storage (always, unless it is down)."""
        if not self._down:
            return True
        with self._lock:
            if not self._down:
                return True
            if self._trying or self._clock.monotonic() < self._retry_at:
                return False
            self._trying = True
            return True

    def _lost(self, exc: Exception) -> None:
        with self._lock:
            self._trying = False
            now = self._clock.monotonic()
            self._retry_at = now + self._interval
            if self._down:
                _log.debug("rate limiter %r: storage still unavailable: %r", self._policy, exc)
                return
            self._down, self._lost_at = True, now
        error, message = _describe_error(exc)
        _log.warning(
            "rate limiter %r: storage unavailable (%s: %s); counting in process memory, "
            "trying the storage again in %gs",
            self._policy,
            error,
            message,
            self._interval,
        )
        _emit(
            self._listeners,
            RateLimiterStorageUnavailable,
            policy=self._policy,
            error=error,
            message=message,
        )

    def _answered(self) -> None:
        if not self._down:
            return
        with self._lock:
            if not self._down:
                return
            self._down = self._trying = False
            outage = self._clock.monotonic() - self._lost_at
        _log.info("rate limiter %r: storage restored after %.3gs", self._policy, outage)
        _emit(self._listeners, RateLimiterStorageRestored, policy=self._policy, outage=outage)

    def take(self, key: Hashable, max_wait: float) -> tuple[float, object]:
        if self._try_remote():
            try:
                answer = self._backend.take(key, max_wait)
            except Exception as exc:
                self._lost(exc)
            else:
                self._answered()
                return answer
        return self._local.take(key, self._clock.monotonic(), max_wait), None

    async def take_async(self, key: Hashable, max_wait: float) -> tuple[float, object]:
        if self._try_remote():
            try:
                answer = await self._backend.take_async(key, max_wait)
            except Exception as exc:
                self._lost(exc)
            else:
                self._answered()
                return answer
        return self._local.take(key, self._clock.monotonic(), max_wait), None

    def give_back(self, key: Hashable, token: object, at: float) -> None:
        if token is None:
            self._local.give_back(key, at)
            return
        try:
            self._backend.give_back(key, token)
        except Exception as exc:  # a permit not given back is one call counted too many
            _log.debug("rate limiter %r: could not give a permit back: %r", self._policy, exc)

    async def give_back_async(self, key: Hashable, token: object, at: float) -> None:
        if token is None:
            self._local.give_back(key, at)
            return
        try:
            await self._backend.give_back_async(key, token)
        except Exception as exc:
            _log.debug("rate limiter %r: could not give a permit back: %r", self._policy, exc)


# -- the policy --------------------------------------------------------------------------------
def _required(inst: object, attr: Any, value: object) -> None:
    if value is None:
        raise ConfigurationError(
            attr.name,
            "is required: how many calls per `per` seconds (RateLimiter(rate=100, per=1.0)); "
            "no default fits every dependency",
        )
    number(above=0)(inst, attr, value)


def _algorithm(inst: object, attr: Any, value: object) -> None:
    if value not in ("token_bucket", "sliding_window"):
        raise ConfigurationError(
            attr.name, f"must be 'token_bucket' or 'sliding_window', got {value!r}"
        )


def _storage(inst: object, attr: Any, value: object) -> None:
    if value is not None and not isinstance(value, RedisRateLimit):
        raise ConfigurationError(
            attr.name, f"must be built by redis_rate_limit(...) (or None), got {value!r}"
        )


def _optional_count(inst: object, attr: Any, value: object) -> None:
    if value is not None:
        integer(1)(inst, attr, value)


def _key_function(inst: object, attr: Any, value: object) -> None:
    if value is not None and not callable(value):
        raise ConfigurationError(
            attr.name, f"must be a function of no arguments returning a key, got {value!r}"
        )


@attrs.define(kw_only=True, eq=False, repr=False)
class RateLimiter(Policy):
    """Admit at most ``rate`` calls per ``per`` seconds (per key); wait or reject the rest.

    A token bucket by default (``burst`` permits at once, refilled at ``rate`` per ``per``
    seconds; GCRA, one number per key), or an exact sliding window with
    [`sliding_window`][failsafe.rate_limiter.RateLimiter.sliding_window] (at most ``limit``
    calls in any ``window`` seconds). A call without a free permit is rejected at once with
    [`RateLimited`][failsafe.RateLimited] (``retry_after``: seconds until a permit is free),
    or, with ``max_wait``, waits for the permit it reserved if that is due within
    ``max_wait`` seconds (waiting calls never push the rate over its limit; a call whose
    permit is further off is rejected at once, without waiting and without taking one).
    Outside a call, [`try_acquire`][failsafe.rate_limiter.RateLimiter.try_acquire],
    [`acquire`][failsafe.rate_limiter.RateLimiter.acquire] and
    [`acquire_async`][failsafe.rate_limiter.RateLimiter.acquire_async] take permits.

    Args:
        rate: Permits per ``per`` seconds (> 0). Required: no default fits every dependency.
        per: The period of ``rate``, in seconds (default 1).
        burst: Token bucket only: permits that may be taken at once, the bucket's size
            (default: ``rate`` rounded up, one period's worth; 1: no bursts at all).
        algorithm: ``"token_bucket"`` (default) or ``"sliding_window"``; prefer the
            `sliding_window` constructor for the latter.
        max_wait: Seconds a call may wait for its permit (default 0: reject at once).
            Bounded: no call waits longer. Waits are measured and slept on ``clock``.
        key: A function of no arguments returning the key of the call running now (a
            tenant, an endpoint: read ``failsafe.current_context()`` or your own context
            variable); each key gets its own limit with these settings. ``None`` (default):
            one limit for every call.
        max_keys: The most keys held in process memory (default 10,000). A new key beyond
            it first drops every key that holds nothing; if all hold permits, the eighth of
            them nearest to a full bucket is dropped (their limits start again full), with a
            warning logged. ``None``: no maximum (for a known, small set of keys).
        idle_ttl: Seconds without a permit after which a key is dropped even if its bucket
            is not full again (default ``None``: kept until it holds nothing, at most
            ``burst * per / rate + max_wait`` seconds, or ``window + max_wait`` seconds for a
            sliding window, after its last permit). Keys are swept every such period (at
            least every second, at most every minute).
        storage: Where the counts live: ``None`` (default) in process memory, or a
            [`redis_rate_limit`][failsafe.rate_limiter.redis_rate_limit] to share the limit
            with every process using the same namespace.
        storage_retry: Seconds (monotonic) after a storage failure before the storage is
            tried again (default 5); meanwhile permits are counted in process memory.
        clock: Reads time and sleeps (a [`FakeClock`][failsafe.testing.FakeClock] in tests).
        listeners: Receive [`RateLimitRejected`][failsafe.events.RateLimitRejected],
            [`RateLimitDelayed`][failsafe.events.RateLimitDelayed] and the storage events.
        name: Names this policy in events, errors and reprs.

    Raises:
        ConfigurationError: At construction, on a missing ``rate`` or any bad option; each
            message names the option.

    A call refused with [`UsageError`][failsafe.UsageError] (a coroutine function given to
    ``call``) gives its permit back: it is a bug in the calling code, not a call of the
    dependency. So does a call interrupted (cancelled) while it waits for its permit.

    Thread-safety: safe to share between threads and asyncio tasks. A lock guards the
    arithmetic of a permit (a few operations), never a wait, a call or a round trip.

    Example:
        ```python
        from failsafe import RateLimited, RateLimiter
        from failsafe.testing import FakeClock

        clock = FakeClock()
        limiter = RateLimiter(rate=10, per=1.0, burst=2, clock=clock)
        assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
        clock.advance(0.1)  # one permit refilled
        assert limiter.call(lambda: "geocoded") == "geocoded"
        try:
            limiter.call(lambda: "too soon")
        except RateLimited as exc:
            assert round(exc.retry_after, 3) == 0.1
        ```
    """

    rate: float | None = attrs.field(default=None, validator=_required)
    per: float = attrs.field(default=1.0, validator=number(above=0))
    burst: int | None = attrs.field(default=None, validator=_optional_count)
    algorithm: Algorithm = attrs.field(default="token_bucket", validator=_algorithm)
    max_wait: float = attrs.field(default=0.0, validator=number(at_least=0))
    key: Callable[[], Hashable] | None = attrs.field(default=None, validator=_key_function)
    max_keys: int | None = attrs.field(default=10_000)
    idle_ttl: float | None = attrs.field(default=None, validator=number(above=0, optional=True))
    storage: RedisRateLimit | None = attrs.field(default=None, validator=_storage)
    storage_retry: float = attrs.field(default=5.0, validator=number(above=0))
    clock: Clock = SYSTEM_CLOCK
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners)
    name: str = "rate-limiter"
    _local: _TokenBucket | _SlidingLog = attrs.field(init=False)
    _take: Callable[[Hashable, float, float], float] = attrs.field(init=False)
    # the single bucket of a local token bucket without keys: its free permit is taken inline
    _bucket: _TokenBucket | None = attrs.field(init=False, default=None)
    _shared: _Shared | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        assert self.rate is not None
        if self.max_keys is not None:
            _v.check("max_keys", self.max_keys, integer(1))
        if self.algorithm == "sliding_window":
            if self.burst is not None:
                raise ConfigurationError(
                    "burst", "a sliding window has no burst: at most `limit` per window"
                )
            if self.rate != int(self.rate) or self.rate < 1:
                raise ConfigurationError("limit", f"must be an integer >= 1, got {self.rate!r}")
            self.rate = int(self.rate)
            self._local = _SlidingLog(
                int(self.rate), self.per, self.max_wait, self.max_keys, self.idle_ttl
            )
            burst = int(self.rate)
        else:
            if self.burst is None:
                self.burst = max(1, math.ceil(self.rate))
            _v.check("burst", self.burst, integer(1))
            burst = self.burst
            self._local = _TokenBucket(
                self.rate, self.per, burst, self.max_wait, self.max_keys, self.idle_ttl
            )
        self._take = self._local.take
        if self.storage is None and self.key is None and isinstance(self._local, _TokenBucket):
            self._bucket = self._local
        if self.storage is not None:
            settings = _Settings(self.algorithm, self.rate, self.per, burst)
            self._shared = _Shared(
                self.storage._bind(settings),
                self._local,
                clock=self.clock,
                retry_interval=self.storage_retry,
                listeners=self.listeners,
                policy=self.name,
            )
        _registry.register(self)

    @classmethod
    def sliding_window(
        cls,
        *,
        limit: int | None = None,
        window: float = 1.0,
        **options: Any,
    ) -> RateLimiter:
        """A limiter admitting at most ``limit`` calls in any ``window`` seconds, exactly.

        The limiter keeps, per key, the times of the permits taken in the last window (at
        most ``limit`` of them, ``limit * (1 + ceil(max_wait / window))`` with ``max_wait``):
        no approximation, so no window of ``window`` seconds ever holds more than
        ``limit`` admitted calls. ``limit`` is required.

        Args:
            limit: Calls allowed in any window (an integer >= 1).
            window: The window's length in seconds (default 1).
            **options: Any other option of `RateLimiter` (not ``rate``, ``per`` or
                ``burst``).

        Raises:
            ConfigurationError: On a missing or bad ``limit`` or any bad option.
        """
        for taken in ("rate", "per", "burst", "algorithm"):
            if taken in options:
                raise ConfigurationError(
                    taken, "not an option of a sliding window: give limit= and window="
                )
        if limit is None:
            raise ConfigurationError(
                "limit", "is required: how many calls per window (sliding_window(limit=100))"
            )
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigurationError("limit", f"must be an integer >= 1, got {limit!r}")
        _v.check("window", window, number(above=0))
        return cls(rate=limit, per=window, algorithm="sliding_window", **options)

    # -- state ---------------------------------------------------------------------------------
    @property
    def keys_held(self) -> int:
        """Keys whose state is held in process memory now (the single limit not counted)."""
        return len(self._local)

    @property
    def evicted(self) -> int:
        """Keys dropped so far (they held nothing, were idle, or made room)."""
        return self._local.keys.evicted

    @property
    def available(self) -> int | None:
        """Permits a call could take now without waiting, for a limiter without keys.

        Counted in process memory: for a limiter shared through Redis, this is the count it
        falls back on while the storage is unavailable (Redis is never asked here).
        ``None`` for a limiter with keys (each key has its own limit: see ``keys_held``).
        """
        if self.key is not None:
            return None
        return self._local.free(self.clock.monotonic())

    @property
    def storage_available(self) -> bool:
        """Whether the shared storage is in use (``False`` during an outage, or without one)."""
        return self._shared is not None and self._shared.available

    def prune(self) -> int:
        """Drop every key that holds nothing now (or idle for ``idle_ttl``); return how many.

        Calls drop such keys as they come (a sweep every period, see ``idle_ttl``); this
        drops them at once.
        """
        return self._local.sweep(self.clock.monotonic())

    # -- decisions shared by the drivers -------------------------------------------------------
    def _current(self, key: Hashable) -> Hashable:
        if key is None and self.key is not None:
            return self.key()
        return key

    def _rejected(self, key: Hashable, retry_after: float) -> RateLimited:
        _emit(self.listeners, RateLimitRejected, policy=self.name, key=key, retry_after=retry_after)
        return RateLimited(self.name, retry_after, key)

    def _delayed(self, key: Hashable, delay: float) -> None:
        _emit(self.listeners, RateLimitDelayed, policy=self.name, key=key, delay=delay)

    # -- acquiring outside a call --------------------------------------------------------------
    def try_acquire(self, key: Hashable = None) -> bool:
        """Take a permit if one is free now; return whether one was taken (never waits).

        Args:
            key: The key to charge; ``None``: the key of the call running now (the ``key``
                function's answer), or the single limit of a limiter without keys.

        A refusal emits [`RateLimitRejected`][failsafe.events.RateLimitRejected].
        """
        bucket = self._bucket
        if bucket is not None and key is None and bucket.free_now(self.clock.monotonic()):
            return True
        if key is None and self.key is not None:
            key = self.key()
        shared = self._shared
        if shared is None:
            wait = self._take(key, self.clock.monotonic(), 0.0)
        else:
            wait = shared.take(key, 0.0)[0]
        if not wait:
            return True
        _emit(self.listeners, RateLimitRejected, policy=self.name, key=key, retry_after=wait)
        return False

    def acquire(self, key: Hashable = None) -> float:
        """Take a permit, waiting for it up to ``max_wait`` seconds; return the seconds waited.

        Args:
            key: As for [`try_acquire`][failsafe.rate_limiter.RateLimiter.try_acquire].

        Raises:
            RateLimited: When no permit is due within ``max_wait`` (nothing is taken).
        """
        key = self._current(key)
        clock, max_wait, shared = self.clock, self.max_wait, self._shared
        if shared is None:
            now = clock.monotonic()
            wait, token = self._local.take(key, now, max_wait), None
        else:
            now = clock.monotonic()
            wait, token = shared.take(key, max_wait)
        if wait:
            if wait > max_wait:
                raise self._rejected(key, wait)
            self._delayed(key, wait)
            try:
                clock.sleep(wait)
            except BaseException:
                self._give_back(key, token, now + wait)
                raise
        return wait

    async def acquire_async(self, key: Hashable = None) -> float:
        """Take a permit, awaiting it up to ``max_wait`` seconds; return the seconds waited.

        Args:
            key: As for [`try_acquire`][failsafe.rate_limiter.RateLimiter.try_acquire].

        Raises:
            RateLimited: When no permit is due within ``max_wait`` (nothing is taken).
        """
        bucket = self._bucket
        if bucket is not None and key is None:
            # bucket.free_now inlined: one call less on the path of every permit
            now = self.clock.monotonic()
            lock = bucket.lock
            lock.acquire()
            try:
                tat = bucket.tat
                if tat <= now + bucket.slack:
                    bucket.tat = (tat if tat > now else now) + bucket.interval
                    return 0.0
            finally:
                lock.release()
        if key is None and self.key is not None:
            key = self.key()
        clock, max_wait, shared = self.clock, self.max_wait, self._shared
        now = clock.monotonic()
        if shared is None:
            wait = self._take(key, now, max_wait)
            if not wait:
                return 0.0
            token: object = None
        else:
            wait, token = await shared.take_async(key, max_wait)
            if not wait:
                return 0.0
        if wait > max_wait:
            raise self._rejected(key, wait)
        self._delayed(key, wait)
        try:
            await clock.sleep_async(wait)
        except BaseException:
            await self._give_back_async(key, token, now + wait)
            raise
        return wait

    def _give_back(self, key: Hashable, token: object, at: float) -> None:
        if self._shared is None:
            self._local.give_back(key, at)
        else:
            self._shared.give_back(key, token, at)

    async def _give_back_async(self, key: Hashable, token: object, at: float) -> None:
        if self._shared is None:
            self._local.give_back(key, at)
        else:
            await self._shared.give_back_async(key, token, at)

    # -- drivers -------------------------------------------------------------------------------
    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        clock, key_fn, max_wait = self.clock, self.key, self.max_wait
        shared = self._shared
        take = self._local.take
        give_back = self._local.give_back
        if shared is None:

            def limiter_sync(fn: Any, args: Any, kwargs: Any) -> Any:
                key = None if key_fn is None else key_fn()
                now = clock.monotonic()
                wait = take(key, now, max_wait)
                if wait:
                    if wait > max_wait:
                        raise self._rejected(key, wait)
                    self._delayed(key, wait)
                    try:
                        clock.sleep(wait)
                    except BaseException:  # interrupted while waiting: the permit goes back
                        give_back(key, now + wait)
                        raise
                try:
                    return nxt(fn, args, kwargs)
                except UsageError:  # a misuse, not a call of the dependency: no permit spent
                    give_back(key, now + wait)
                    raise

            return limiter_sync

        def shared_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            key = None if key_fn is None else key_fn()
            now = clock.monotonic()
            wait, token = shared.take(key, max_wait)
            if wait:
                if wait > max_wait:
                    raise self._rejected(key, wait)
                self._delayed(key, wait)
                try:
                    clock.sleep(wait)
                except BaseException:
                    shared.give_back(key, token, now + wait)
                    raise
            try:
                return nxt(fn, args, kwargs)
            except UsageError:
                shared.give_back(key, token, now + wait)
                raise

        return shared_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        clock, key_fn, max_wait = self.clock, self.key, self.max_wait
        shared = self._shared
        take = self._local.take
        give_back = self._local.give_back

        if shared is None:

            async def limiter_async(fn: Any, args: Any, kwargs: Any) -> Any:
                key = None if key_fn is None else key_fn()
                now = clock.monotonic()
                wait = take(key, now, max_wait)
                if wait:
                    if wait > max_wait:
                        raise self._rejected(key, wait)
                    self._delayed(key, wait)
                    try:
                        await clock.sleep_async(wait)
                    except BaseException:  # cancelled while waiting: the permit goes back
                        give_back(key, now + wait)
                        raise
                try:
                    return await nxt(fn, args, kwargs)
                except UsageError:  # a misuse, not a call of the dependency: no permit spent
                    give_back(key, now + wait)
                    raise

            return limiter_async

        async def shared_async(fn: Any, args: Any, kwargs: Any) -> Any:
            key = None if key_fn is None else key_fn()
            now = clock.monotonic()
            wait, token = await shared.take_async(key, max_wait)
            if wait:
                if wait > max_wait:
                    raise self._rejected(key, wait)
                self._delayed(key, wait)
                try:
                    await clock.sleep_async(wait)
                except BaseException:
                    await shared.give_back_async(key, token, now + wait)
                    raise
            try:
                return await nxt(fn, args, kwargs)
            except UsageError:
                await shared.give_back_async(key, token, now + wait)
                raise

        return shared_async

    def describe(self) -> str:
        """Say in words what this rate limiter does."""
        if self.algorithm == "sliding_window":
            what = f"at most {self.rate} calls in any {self.per:g}s (sliding window)"
        else:
            what = f"{self.rate:g} calls per {self.per:g}s, bursts of {self.burst}"
        parts = [f"rate limiter {self.name!r}: {what}"]
        parts.append(
            f"waiting at most {self.max_wait:g}s" if self.max_wait else "rejecting at once"
        )
        if self.key is not None:
            parts.append(
                "per key"
                + (f" (at most {self.max_keys} keys)" if self.max_keys is not None else "")
            )
        if self.storage is not None:
            parts.append(f"shared in Redis ({self.storage.namespace!r})")
        return ", ".join(parts)
