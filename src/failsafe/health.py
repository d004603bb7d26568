"""The health snapshot and the gauge readings: what every live policy holds, right now.

Circuit breakers (plain and keyed), bulkheads, rate limiters, adaptive concurrency limits,
retry budgets and queue consumers list themselves when they are built, and leave the list
when the program drops them. [`health`][failsafe.health.health] reads them all into a
[`HealthSnapshot`][failsafe.health.HealthSnapshot] (a status, one entry per policy, a
JSON-able ``to_dict()``); [`gauges`][failsafe.health.gauges] reads the same state as
[`GaugeReading`][failsafe.health.GaugeReading]s, the numbers that failsafe's OpenTelemetry
and Prometheus integrations export as gauges; [`HealthApp`][failsafe.health.HealthApp]
serves the snapshot over HTTP for readiness probes and dashboards.

```python
from failsafe import Bulkhead, CircuitBreaker
from failsafe.health import health

orders = CircuitBreaker(name="orders")
pool = Bulkhead(name="pool", max_concurrent=4)
orders.open()

snapshot = health()
assert snapshot.status == "degraded"  # an enforcing breaker is open
entry = next(e for e in snapshot.entries if e.name == "orders")
assert (entry.kind, entry.state) == ("circuit_breaker", "open")
```

Reading never does I/O: a breaker or a rate limiter shared through Redis is reported as
this process last saw it (Redis is not asked), and a queue consumer's dead-letter depth is
the one it last learnt. Each policy's lock is held only while its few numbers are copied.
This module imports no web framework.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from inspect import getattr_static
from typing import Any, Final, Literal

import attrs

from failsafe import _registry
from failsafe import _validators as _v
from failsafe.adaptive_concurrency import AdaptiveConcurrency
from failsafe.budget import RetryBudget
from failsafe.bulkhead import Bulkhead
from failsafe.circuit_breaker import CircuitBreaker, KeyedCircuitBreaker
from failsafe.rate_limiter import RateLimiter

__all__ = [
    "GAUGES",
    "DEFAULT_LIMIT",
    "MAX_KEYS_LISTED",
    "GaugeReading",
    "HealthApp",
    "HealthEntry",
    "HealthSnapshot",
    "gauges",
    "health",
    "health_route",
]

_log = logging.getLogger("failsafe.health")

DEFAULT_LIMIT: Final = 1000
"""The most entries a snapshot lists by default (the rest are counted in ``omitted``)."""

MAX_KEYS_LISTED: Final = 100
"""The most open or half-open keys listed (and gauged) per keyed circuit breaker."""

_KEY_CHARS = 100  # a key is shown as str(key), cut to this many characters

# a value of a health entry: what json.dumps takes once tuples are lists
_JSON = str | int | float | bool | None | tuple["_JSON", ...] | Mapping[str, "_JSON"]

GAUGES: Final[Mapping[str, tuple[str, str]]] = types.MappingProxyType(
    {
        "failsafe.circuit.state": (
            "{state}",
            "State of a circuit breaker: 0 closed, 1 half-open, 2 open",
        ),
        "failsafe.circuit.keys": ("{key}", "Keys held by a keyed circuit breaker, per state"),
        "failsafe.bulkhead.in_flight": ("{call}", "Calls running in a bulkhead"),
        "failsafe.bulkhead.queued": ("{call}", "Calls waiting for a bulkhead's slot"),
        "failsafe.concurrency.limit": ("{call}", "Current limit of an adaptive concurrency limit"),
        "failsafe.concurrency.in_flight": (
            "{call}",
            "Calls running under an adaptive concurrency limit",
        ),
        "failsafe.retry_budget.available": ("{retry}", "Retries a retry budget would grant now"),
        "failsafe.rate_limit.available": (
            "{permit}",
            "Permits a rate limiter without keys would grant now",
        ),
        "failsafe.rate_limit.keys": ("{key}", "Keys a rate limiter holds in process memory"),
        "failsafe.queue.consumer.in_flight": ("{message}", "Messages a queue consumer is handling"),
        "failsafe.queue.dlq.depth": (
            "{message}",
            "Messages parked in a queue's dead-letter store, last known",
        ),
    }
)
"""Every gauge name, with its unit and description (names in the OpenTelemetry style)."""

_STATE_VALUE: Final = {"closed": 0, "half-open": 1, "open": 2}


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy (a frozen value's mapping cannot be changed behind its back)."""
    return types.MappingProxyType(dict(mapping))


# -- values --------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class GaugeReading:
    """One gauge's value now, as [`gauges`][failsafe.health.gauges] reads it.

    Attributes:
        name: The gauge's name, OpenTelemetry style (``failsafe.bulkhead.in_flight``);
            Prometheus spells it with underscores.
        unit: The unit, as UCUM annotations (``{call}``, ``{state}``).
        description: What the gauge measures (one line).
        value: The value now.
        attributes: Always ``failsafe.policy`` (the policy's name), and per gauge the
            attributes listed in the [health guide](../observe/health.md#gauges).
    """

    name: str
    unit: str
    description: str
    value: float
    attributes: Mapping[str, str | bool | int | float] = attrs.field(hash=False, converter=_frozen)


@attrs.frozen(kw_only=True)
class HealthEntry:
    """What one policy holds now: one entry of a [`HealthSnapshot`][failsafe.health.HealthSnapshot].

    Attributes:
        kind: ``circuit_breaker``, ``keyed_circuit_breaker``, ``bulkhead``,
            ``rate_limiter``, ``adaptive_concurrency``, ``retry_budget`` or
            ``queue_consumer``.
        name: The policy's ``name`` (names need not be unique: give each policy its own).
        state: A breaker's state (``closed``, ``half-open``, ``open``; a keyed breaker's
            worst key), ``ok``/``full`` for a bulkhead or an adaptive limit, ``ok``/``limited``
            for a rate limiter without keys, ``ok``/``exhausted`` for a retry budget,
            ``running``/``stopped``/``not-started`` for a queue consumer; ``None`` when
            there is no single state (a keyed rate limiter) or the reading failed.
        degraded: Whether this entry makes the snapshot degraded.
        details: The policy's numbers (see the health guide for each kind).
        error: The exception's type name when reading the policy raised (``details`` is
            then empty), else ``None``.
    """

    kind: str
    name: str
    state: str | None = None
    degraded: bool = False
    details: Mapping[str, Any] = attrs.field(factory=dict, hash=False, converter=_frozen)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """This entry as plain JSON-able data: ``kind``, ``name``, ``state``, then the numbers."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.state is not None:
            out["state"] = self.state
        out["degraded"] = self.degraded
        if self.error is not None:
            out["error"] = self.error
        for key, value in self.details.items():
            out[key] = _plain(value)
        return out


@attrs.frozen(kw_only=True)
class HealthSnapshot:
    """Every live policy's state at one moment: what [`health`][failsafe.health.health] returns.

    Attributes:
        status: ``"degraded"`` when an enforcing circuit breaker (or a key of a keyed one)
            is open or half-open, or a queue consumer that was started is no longer
            running; else ``"ok"``. Counts every policy, listed or omitted.
        entries: One entry per policy, oldest policy first, at most the ``limit`` asked
            for. Two policies with the same name are both listed.
        omitted: Policies left out of ``entries`` by the limit.
        taken_at: When the snapshot was taken: wall-clock ISO-8601 UTC
            (``2025-01-31T12:00:00.000Z``).
    """

    status: Literal["ok", "degraded"]
    entries: tuple[HealthEntry, ...]
    omitted: int
    taken_at: str

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain data that ``json.dumps`` takes (no NaN, no infinity)."""
        return {
            "status": self.status,
            "taken_at": self.taken_at,
            "omitted": self.omitted,
            "entries": [entry.to_dict() for entry in self.entries],
        }


def _plain(value: _JSON) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _number(value: float) -> float | None:
    """A finite float for JSON (``None`` for NaN or an infinity)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _key_text(key: object) -> str:
    try:
        text = str(key)
    except Exception:  # a key whose __str__ raises is still a key
        text = f"<{type(key).__name__}>"
    return text[:_KEY_CHARS]


# -- reading each kind (no I/O; each policy's lock held only to copy its numbers) -------------
class _Reading:
    """What one policy said: its entry and its gauge readings."""

    __slots__ = ("entry", "gauges")

    def __init__(self, entry: HealthEntry, gauges: list[GaugeReading]) -> None:
        self.entry = entry
        self.gauges = gauges


def _gauge(name: str, value: float, policy: str, **extra: str | bool | int | float) -> GaugeReading:
    unit, description = GAUGES[name]
    attributes: dict[str, str | bool | int | float] = {"failsafe.policy": policy}
    for key, item in extra.items():
        attributes[key.replace("__", ".")] = item
    return GaugeReading(
        name=name, unit=unit, description=description, value=float(value), attributes=attributes
    )


def _breaker_view(breaker: CircuitBreaker) -> tuple[str, int, float]:
    """A breaker's (state, consecutive failures, retry_after) from process memory only.

    A breaker in memory is read through its public properties. One shared through a storage
    (Redis) would ask the storage there: it is read from what the breaker last saw instead
    (its local state during an outage), and nothing is sent.
    """
    guard = breaker._guard
    if guard is None:
        state = breaker.current_state
        retry_after = breaker.retry_after if state == "open" else 0.0
        return state, breaker.failure_count, retry_after
    local = guard._local
    if local is not None:
        state, counter, opened = local.state, local.counter, local.opened_at
    else:
        state, counter = guard._known_state, guard._known_counter
        opened = guard._known_opened
    retry_after = 0.0
    if state == "open" and opened is not None:
        stamp = breaker._stamp
        if stamp is not None and int(opened.timestamp()) == int(stamp.timestamp()):
            left = breaker._stamp_mono + breaker._open_for - breaker.clock.monotonic()
        else:  # opened by another process: its wall clock
            left = opened.timestamp() + breaker._open_for - breaker.clock.time()
        retry_after = max(0.0, left)
    return str(state), int(counter), retry_after


def _read_breaker(breaker: CircuitBreaker) -> _Reading:
    state, failures, retry_after = _breaker_view(breaker)
    enforced = not breaker.metrics_only
    shared = breaker._guard is not None
    details: dict[str, _JSON] = {"failure_count": failures, "enforced": enforced, "shared": shared}
    if state == "open":
        details["retry_after"] = _number(retry_after)
    if shared:
        details["storage_available"] = breaker.storage_available
    extra: dict[str, bool] = {} if enforced else {"failsafe__enforced": False}
    return _Reading(
        HealthEntry(
            kind="circuit_breaker",
            name=breaker.name,
            state=state,
            degraded=enforced and state != "closed",
            details=details,
        ),
        [_gauge("failsafe.circuit.state", _STATE_VALUE.get(state, 2), breaker.name, **extra)],
    )


def _read_keyed(keyed: KeyedCircuitBreaker) -> _Reading:
    with keyed._lock:  # a copy of the key map: calls change it under this lock
        entries = list(keyed._table.items())
    counts = {"closed": 0, "half-open": 0, "open": 0}
    listed: list[tuple[Any, str, float]] = []
    for key, held in entries:
        breaker = getattr(held, "breaker", None)
        if breaker is None:  # a key whose calls all succeeded has no breaker: closed
            counts["closed"] += 1
            continue
        state, _, retry_after = _breaker_view(breaker)
        counts[state] = counts.get(state, 0) + 1
        if state != "closed" and len(listed) < MAX_KEYS_LISTED:
            listed.append((key, state, retry_after))
    enforced = not keyed._proto.metrics_only
    worst = "open" if counts["open"] else "half-open" if counts["half-open"] else "closed"
    open_keys: list[_JSON] = []
    for key, state, retry_after in listed:
        item: dict[str, _JSON] = {"key": _key_text(key), "state": state}
        if state == "open":
            item["retry_after"] = _number(retry_after)
        open_keys.append(types.MappingProxyType(item))
    not_closed = len(entries) - counts["closed"]
    details: dict[str, _JSON] = {
        "keys": len(entries),
        "max_keys": keyed.max_keys,
        "keys_by_state": types.MappingProxyType(dict(counts)),
        "open_keys": tuple(open_keys),
        "more_open_keys": not_closed - len(listed),
        "enforced": enforced,
    }
    name = keyed.name
    readings = [
        _gauge("failsafe.circuit.keys", count, name, failsafe__circuit__state=state)
        for state, count in counts.items()
    ]
    extra: dict[str, bool] = {} if enforced else {"failsafe__enforced": False}
    for key, state, _ in listed:
        readings.append(
            _gauge(
                "failsafe.circuit.state",
                _STATE_VALUE.get(state, 2),
                name,
                failsafe__circuit__key=_key_text(key),
                **extra,
            )
        )
    entry = HealthEntry(
        kind="keyed_circuit_breaker",
        name=name,
        state=worst,
        degraded=enforced and worst != "closed",
        details=details,
    )
    return _Reading(entry, readings)


def _read_bulkhead(bulkhead: Bulkhead) -> _Reading:
    with bulkhead._lock:
        in_flight, queued = bulkhead.active, bulkhead.queued
    full = in_flight >= bulkhead.max_concurrent and queued >= bulkhead.max_queued
    details: dict[str, _JSON] = {
        "in_flight": in_flight,
        "queued": queued,
        "max_concurrent": bulkhead.max_concurrent,
        "max_queued": bulkhead.max_queued,
    }
    name = bulkhead.name
    return _Reading(
        HealthEntry(kind="bulkhead", name=name, state="full" if full else "ok", details=details),
        [
            _gauge("failsafe.bulkhead.in_flight", in_flight, name),
            _gauge("failsafe.bulkhead.queued", queued, name),
        ],
    )


def _read_limiter(limiter: RateLimiter) -> _Reading:
    shared = limiter.storage is not None
    storage_available = limiter.storage_available
    # a shared limiter counts in process memory only while its storage is unavailable
    counted_here = not shared or not storage_available
    details: dict[str, _JSON] = {"algorithm": limiter.algorithm}
    if limiter.algorithm == "sliding_window":
        details["limit"] = int(limiter.rate or 0)
        details["window"] = limiter.per
    else:
        details["rate"] = limiter.rate
        details["per"] = limiter.per
        details["burst"] = limiter.burst
    details["keyed"] = limiter.key is not None
    details["shared"] = shared
    if shared:
        details["storage_available"] = storage_available
        details["counted_in"] = "process" if counted_here else "storage"
    state: str | None = None
    readings: list[GaugeReading] = []
    name = limiter.name
    if counted_here:
        if limiter.key is None:
            available = limiter.available or 0
            details["available"] = available
            state = "ok" if available else "limited"
            if not shared:
                readings.append(_gauge("failsafe.rate_limit.available", available, name))
        else:
            keys = limiter.keys_held
            details["keys_held"] = keys
            details["max_keys"] = limiter.max_keys
            if not shared:
                readings.append(_gauge("failsafe.rate_limit.keys", keys, name))
    return _Reading(
        HealthEntry(kind="rate_limiter", name=name, state=state, details=details), readings
    )


def _read_adaptive(limiter: AdaptiveConcurrency) -> _Reading:
    with limiter._lock:
        limit, in_flight = limiter.limit, limiter.in_flight
    details: dict[str, _JSON] = {
        "limit": limit,
        "in_flight": in_flight,
        "min_limit": limiter.min_limit,
        "max_limit": limiter.max_limit,
        "algorithm": "aimd" if type(limiter.algorithm).__name__ == "AIMD" else "gradient",
    }
    name = limiter.name
    return _Reading(
        HealthEntry(
            kind="adaptive_concurrency",
            name=name,
            state="full" if in_flight >= limit else "ok",
            details=details,
        ),
        [
            _gauge("failsafe.concurrency.limit", limit, name),
            _gauge("failsafe.concurrency.in_flight", in_flight, name),
        ],
    )


def _read_budget(budget: RetryBudget) -> _Reading:
    available = budget.available
    details: dict[str, _JSON] = {
        "available": _number(available),
        "ratio": budget.ratio,
        "min_per_second": budget.min_per_second,
        "window": budget.window,
    }
    name = budget.name
    return _Reading(
        HealthEntry(
            kind="retry_budget",
            name=name,
            state="ok" if available >= 1 else "exhausted",
            details=details,
        ),
        [_gauge("failsafe.retry_budget.available", available, name)],
    )


# Consumers seen running, by id (a weak reference drops the id with the consumer): a consumer
# that stops is degraded only if it was started. Bounded by the live consumers.
_seen_lock = threading.Lock()
_seen_running: dict[int, weakref.ref[Any]] = {}


def _was_started(consumer: Any, running: bool) -> bool:
    ident = id(consumer)
    with _seen_lock:
        ref = _seen_running.get(ident)
        seen = ref is not None and ref() is consumer
        if running and not seen:

            def gone(_: object, ident: int = ident) -> None:
                with _seen_lock:
                    _seen_running.pop(ident, None)

            _seen_running[ident] = weakref.ref(consumer, gone)
    started = getattr(consumer, "started", None)
    return bool(started) if isinstance(started, bool) else (running or seen)


def _read_consumer(consumer: Any) -> _Reading:
    name, queue = str(consumer.name), str(consumer.queue)
    in_flight, depth = int(consumer.in_flight), consumer.dlq_depth
    running = bool(consumer.running)
    started = _was_started(consumer, running)
    state = "running" if running else "stopped" if started else "not-started"
    details: dict[str, _JSON] = {
        "queue": queue,
        "in_flight": in_flight,
        "dlq_depth": None if depth is None else int(depth),
        "running": running,
    }
    readings = [
        _gauge(
            "failsafe.queue.consumer.in_flight",
            in_flight,
            name,
            messaging__destination__name=queue,
        )
    ]
    if depth is not None:
        readings.append(
            _gauge("failsafe.queue.dlq.depth", depth, name, messaging__destination__name=queue)
        )
    entry = HealthEntry(
        kind="queue_consumer", name=name, state=state, degraded=state == "stopped", details=details
    )
    return _Reading(entry, readings)


_MISSING: Final = object()
_CONSUMER: Final = ("in_flight", "dlq_depth")


def _kind(obj: object) -> tuple[str, Callable[[Any], _Reading]] | None:
    if isinstance(obj, CircuitBreaker):
        return "circuit_breaker", _read_breaker
    if isinstance(obj, KeyedCircuitBreaker):
        return "keyed_circuit_breaker", _read_keyed
    if isinstance(obj, Bulkhead):
        return "bulkhead", _read_bulkhead
    if isinstance(obj, RateLimiter):
        return "rate_limiter", _read_limiter
    if isinstance(obj, AdaptiveConcurrency):
        return "adaptive_concurrency", _read_adaptive
    if isinstance(obj, RetryBudget):
        return "retry_budget", _read_budget
    # duck typed (this module imports no queue code); looked up without running a property
    if all(getattr_static(obj, attr, _MISSING) is not _MISSING for attr in _CONSUMER):
        return "queue_consumer", _read_consumer
    return None


# Readings that raised, logged once each (kind, name, error type); bounded: when full, the
# memory is cleared, so a new failure is still logged
_MAX_LOGGED = 1024
_logged: set[tuple[str, str, str]] = set()
_logged_lock = threading.Lock()


def _failed(kind: str, name: str, exc: Exception) -> HealthEntry:
    error = type(exc).__qualname__
    mark = (kind, name, error)
    with _logged_lock:
        first = mark not in _logged
        if first:
            if len(_logged) >= _MAX_LOGGED:
                _logged.clear()
            _logged.add(mark)
    if first:
        # the type only: an exception's message may carry a secret
        _log.warning("health: reading %s %r raised %s; it is reported as an error", *mark)
    return HealthEntry(kind=kind, name=name, error=error)


def _name(obj: object) -> str:
    try:
        return str(obj.name)  # type: ignore[attr-defined]
    except Exception:
        return f"<{type(obj).__name__}>"


def _readings(objects: Iterable[object]) -> Iterable[_Reading]:
    for obj in objects:
        found = _kind(obj)
        if found is None:
            continue
        kind, read = found
        try:
            yield read(obj)
        except Exception as exc:
            yield _Reading(_failed(kind, _name(obj), exc), [])


# -- the public functions ------------------------------------------------------------------------
def health(*, limit: int = DEFAULT_LIMIT) -> HealthSnapshot:
    """Read every live policy into a [`HealthSnapshot`][failsafe.health.HealthSnapshot].

    Every policy the program holds is read (its lock held only while its numbers are
    copied, and no I/O: see the module documentation); the first ``limit`` of them, oldest
    first, are listed and the rest counted in ``omitted``. The status counts them all. A
    policy whose reading raises is listed with ``error`` (the exception's type name, logged
    once) and never breaks the snapshot.

    Args:
        limit: The most entries listed (>= 1; default 1,000).

    Raises:
        ConfigurationError: On a ``limit`` that is not an integer >= 1.

    Returns:
        The snapshot.
    """
    _v.check("limit", limit, _v.integer(1))
    taken_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    entries: list[HealthEntry] = []
    omitted = 0
    degraded = False
    for reading in _readings(_registry.registered()):
        entry = reading.entry
        degraded = degraded or entry.degraded
        if len(entries) < limit:
            entries.append(entry)
        else:
            omitted += 1
    return HealthSnapshot(
        status="degraded" if degraded else "ok",
        entries=tuple(entries),
        omitted=omitted,
        taken_at=taken_at.replace("+00:00", "Z"),
    )


def gauges() -> list[GaugeReading]:
    """Read every live policy's gauges now (see [Gauges](../observe/health.md#gauges)).

    The numbers of [`health`][failsafe.health.health], as readings an exporter turns into
    gauges: every reading carries ``failsafe.policy``, the policy's name. Bounded: a few
    readings per policy, and per keyed circuit breaker three key counts plus at most
    [`MAX_KEYS_LISTED`][failsafe.health.MAX_KEYS_LISTED] keys that are not closed. A
    policy whose reading raises gives no readings (and is logged once). No I/O.

    Returns:
        The readings, the oldest policy's first.
    """
    out: list[GaugeReading] = []
    for reading in _readings(_registry.registered()):
        out.extend(reading.gauges)
    return out


# -- the ASGI app ----------------------------------------------------------------------------------
_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


class HealthApp:
    """An ASGI app answering ``GET``/``HEAD`` with the health snapshot as JSON.

    The body is ``health(limit=limit).to_dict()``. The status code is 200, or 503 when the
    snapshot is degraded and ``ready_when_degraded`` is false; any other method gets 405.
    It needs no web framework: mount it in Starlette (``Mount("/health", app=HealthApp())``)
    or serve it alone (``uvicorn module:app``). It answers the same on every path below
    where it is mounted.

    Degraded stays 200 by default because a readiness probe decides whether a replica gets
    traffic at all: an open breaker on one dependency is the same on every replica, so a 503
    would take every replica out of the load balancer at once and turn one failing
    dependency into a full outage, while the breaker was already failing those calls fast.
    Set ``ready_when_degraded=False`` when a replica truly cannot serve without what its
    breakers guard.

    Args:
        ready_when_degraded: Answer 200 (True, default) or 503 (False) when degraded.
        limit: The most entries listed (>= 1; default 1,000).

    Raises:
        ConfigurationError: At construction, on a bad option.
    """

    def __init__(self, *, ready_when_degraded: bool = True, limit: int = DEFAULT_LIMIT) -> None:
        _v.check("ready_when_degraded", ready_when_degraded, _v.boolean)
        _v.check("limit", limit, _v.integer(1))
        self.ready_when_degraded = ready_when_degraded
        self.limit = limit

    def __repr__(self) -> str:
        return f"HealthApp(ready_when_degraded={self.ready_when_degraded}, limit={self.limit})"

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Serve one ASGI connection (HTTP; a lifespan is acknowledged, nothing else)."""
        kind = scope.get("type")
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            raise RuntimeError(f"HealthApp serves HTTP only, not {kind!r}")
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            body = b'{"error":"method not allowed"}'
            await _answer(send, 405, body, head=False, extra=[(b"allow", b"GET, HEAD")])
            return
        snapshot = health(limit=self.limit)
        status = 503 if snapshot.status == "degraded" and not self.ready_when_degraded else 200
        body = json.dumps(snapshot.to_dict(), separators=(",", ":"), allow_nan=False).encode()
        await _answer(send, status, body, head=method == "HEAD")


async def _answer(
    send: _Send,
    status: int,
    body: bytes,
    *,
    head: bool,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: _Receive, send: _Send) -> None:
    """Acknowledge startup and shutdown, so that ``uvicorn`` can serve the app alone."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def health_route(path: str = "/health", **options: Any) -> Any:
    """A Starlette ``Route`` serving a [`HealthApp`][failsafe.health.HealthApp] at ``path``.

    Starlette is imported when this is called, not when this module is.

    Args:
        path: Where to mount it (default ``/health``).
        **options: The options of [`HealthApp`][failsafe.health.HealthApp].

    Raises:
        ConfigurationError: On a bad option.
        ImportError: When Starlette is not installed.

    Returns:
        A ``starlette.routing.Route``, for ``Starlette(routes=[...])``.
    """
    from starlette.routing import Route

    return Route(path, HealthApp(**options))
