"""What a transport takes from a pipeline of policies: the ``policies=`` option.

The transports run the core policies in an order of their own (around each request, then
the deadline, hedging, the failover across ``endpoints``, the retry on each endpoint, and a
circuit breaker per endpoint around each attempt), with HTTP's own rule for what a failure
is. A pipeline given as ``policies=`` sets their options: `plan` reads it, checks that the
transport can do what it says, and returns a `Plan`, or raises
[`ConfigurationError`][failsafe.ConfigurationError] (option ``policies``) naming the policy
it cannot honour and why. Refused rather than bent: a fallback (the transport returns a
response or raises an httpx error), a failover (the endpoints are the transport's own
``endpoints``), a policy out of the transport's order (a timeout inside the retry would
bound each attempt, not the request), two of one kind.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final

import attrs

from failsafe import _registry
from failsafe.adaptive_concurrency import AdaptiveConcurrency
from failsafe.backoff import Backoff
from failsafe.budget import RetryBudget
from failsafe.bulkhead import Bulkhead
from failsafe.chaos import Chaos, _Result
from failsafe.circuit_breaker import (
    CircuitBreaker,
    ConsecutiveFailures,
    FailureRate,
    KeyedCircuitBreaker,
)
from failsafe.clock import Clock
from failsafe.events import Listener
from failsafe.exceptions import ConfigurationError
from failsafe.failover import Failover
from failsafe.fallback import Fallback
from failsafe.hedging import Hedging
from failsafe.pipeline import Pipeline
from failsafe.rate_limiter import RateLimiter
from failsafe.retry import Retry
from failsafe.timeout import Timeout

__all__: list[str] = []

# The transport's order, outermost first: a policy may follow those of its rank or a lower one.
_AROUND: Final = 0  # bulkhead, rate limiter, adaptive concurrency, chaos: around each request
_RANKS: Final[dict[type, int]] = {
    Bulkhead: _AROUND,
    RateLimiter: _AROUND,
    AdaptiveConcurrency: _AROUND,
    Chaos: _AROUND,
    Timeout: 1,
    Hedging: 2,
    Retry: 3,
    CircuitBreaker: 4,
    KeyedCircuitBreaker: 4,
}
_KINDS: Final[dict[type, str]] = {
    Bulkhead: "bulkhead",
    RateLimiter: "rate_limiter",
    AdaptiveConcurrency: "adaptive_concurrency",
    Chaos: "chaos",
    Timeout: "timeout",
    Hedging: "hedging",
    Retry: "retry",
    CircuitBreaker: "circuit_breaker",
    KeyedCircuitBreaker: "keyed_circuit_breaker",
    Fallback: "fallback",
    Failover: "failover",
}
ORDER: Final = (
    "bulkhead, rate_limiter, adaptive_concurrency and chaos (around each request, in any "
    "order), then timeout (the whole request), hedging, retry (on each endpoint), "
    "circuit_breaker or keyed_circuit_breaker (per endpoint, around each attempt)"
)


_FIVE_IN_A_ROW: Final = ConsecutiveFailures(threshold=5)  # endpoint_breakers' default trip


def _lookup(table: dict[type, Any], policy: object) -> Any:
    """``table``'s entry for ``policy``'s class or its nearest base (``None``: none)."""
    for cls in type(policy).__mro__:
        if cls in table:
            return table[cls]
    return None


def _named(policy: object) -> str:
    """``retry 'warehouse.retry'``: a policy as a message names it."""
    kind = _lookup(_KINDS, policy) or type(policy).__name__
    name = getattr(policy, "name", None)
    return f"{kind} {name!r}" if isinstance(name, str) else kind


def _refuse(problem: str) -> ConfigurationError:
    return ConfigurationError("policies", problem)


@attrs.frozen
class BreakerSpec:
    """The numbers of a transport's per-endpoint breakers: equal specs, equal breakers.

    A rebuild whose spec equals the running one's keeps the running breakers (their state
    goes on untouched); another builds new ones that take the old ones' state over.
    """

    trip: ConsecutiveFailures | FailureRate = _FIVE_IN_A_ROW
    reset_timeout: float = 30.0
    max_reset_timeout: float | None = None
    half_open_max_calls: int = 1
    success_threshold: int = 1
    storage_factory: Callable[[Hashable], Any] | None = None
    max_keys: int | None = 10_000
    idle_ttl: float | None = 3600.0
    listeners: tuple[Listener, ...] = ()

    @classmethod
    def of(cls, breaker: CircuitBreaker | KeyedCircuitBreaker) -> BreakerSpec:
        """The spec of a pipeline's breaker (its numbers; not its ``on``: the transport's)."""
        if isinstance(breaker, KeyedCircuitBreaker):
            proto = breaker._proto
            return cls(
                trip=proto.trip,
                reset_timeout=proto.reset_timeout,
                max_reset_timeout=proto.max_reset_timeout,
                half_open_max_calls=proto.half_open_max_calls,
                success_threshold=proto.success_threshold,
                storage_factory=breaker._storage_factory,
                max_keys=breaker.max_keys,
                idle_ttl=breaker.idle_ttl,
                listeners=tuple(proto.listeners),
            )
        return cls(
            trip=breaker.trip,
            reset_timeout=breaker.reset_timeout,
            max_reset_timeout=breaker.max_reset_timeout,
            half_open_max_calls=breaker.half_open_max_calls,
            success_threshold=breaker.success_threshold,
            listeners=tuple(breaker.listeners),
        )


def _check_breaker(breaker: CircuitBreaker | KeyedCircuitBreaker) -> None:
    """Refuse a breaker whose per-endpoint copies could not do what it says."""
    named = _named(breaker)
    proto = breaker._proto if isinstance(breaker, KeyedCircuitBreaker) else breaker
    if proto.metrics_only:
        raise _refuse(
            f"{named} is metrics_only, which the transports do not support: they skip an "
            "endpoint by its circuit's state"
        )
    if isinstance(breaker, KeyedCircuitBreaker):
        if breaker._key is not None:
            raise _refuse(
                f"{named} has a key function; the transport keys its breakers by endpoint"
            )
    elif breaker._guard is not None:  # a storage of its own, not the memory one
        raise _refuse(
            f"{named} has a storage, which holds one circuit; the transport needs one per "
            "endpoint: use a keyed_circuit_breaker with a storage_factory, or pass "
            "breakers=endpoint_breakers(storage_factory=...)"
        )


@attrs.frozen
class Plan:
    """What a pipeline sets in a transport; ``None`` (or nothing) where it sets nothing.

    Attributes:
        retry: The pipeline's retry: attempts, backoff, deadline, budget and listeners.
        breaker: The pipeline's circuit breaker (plain or keyed): the numbers of the
            per-endpoint breakers.
        timeout: The pipeline's timeout: the transport's deadline.
        hedging: The pipeline's hedging policy.
        around: The policies run around each request, outermost first.
    """

    retry: Retry | None = None
    breaker: CircuitBreaker | KeyedCircuitBreaker | None = None
    timeout: Timeout | None = None
    hedging: Hedging | None = None
    around: tuple[Bulkhead | RateLimiter | AdaptiveConcurrency | Chaos, ...] = ()

    @property
    def breaker_spec(self) -> BreakerSpec | None:
        return None if self.breaker is None else BreakerSpec.of(self.breaker)

    @property
    def budget(self) -> RetryBudget | None:
        return None if self.retry is None else self.retry.budget

    @property
    def backoff(self) -> Backoff | None:
        return None if self.retry is None else self.retry.backoff

    def taken(self) -> None:
        """The transport took the plan: its breaker, a template, leaves the health snapshot.

        The transport never calls that breaker (its per-endpoint breakers, built from its
        numbers, are the live ones), so the snapshot would show a circuit that is always
        closed. A keyed breaker forgets its own prototype the same way.
        """
        if self.breaker is not None:
            _registry.forget(self.breaker)


def _flatten(policies: Sequence[object]) -> list[object]:
    flat: list[object] = []
    for policy in policies:
        if type(policy) is Pipeline:
            flat.extend(_flatten(policy.policies))
        else:
            flat.append(policy)
    return flat


def plan(policies: Sequence[object]) -> Plan:
    """Read a pipeline's policies (outermost first) into a `Plan`; refuse what cannot be.

    Raises:
        ConfigurationError: Option ``policies``: a kind the transport cannot run, a policy
            out of the transport's order, two of one kind, or a breaker or chaos policy
            whose options the transport cannot honour; the message names the policy.
    """
    seen: dict[int, object] = {}
    rank = _AROUND
    previous: object = None
    around: list[Any] = []
    for policy in _flatten(policies):
        named = _named(policy)
        if isinstance(policy, Fallback):
            raise _refuse(
                f"{named}: a transport cannot fall back: it returns a response or raises an "
                "httpx error; run the fallback around your call of the client"
            )
        if isinstance(policy, Failover):
            raise _refuse(
                f"{named}: a transport fails over across its own endpoints=; give the "
                "targets there, and the failover's policy (retry, breaker) as the pipeline"
            )
        mine: int | None = _lookup(_RANKS, policy)
        if mine is None:
            if hasattr(policy, "policies") and hasattr(policy, "version"):
                raise _refuse(
                    f"a configured pipeline inside the pipeline ({policy!r}): give it as "
                    "policies= itself, so that the transport follows its reloads"
                )
            raise _refuse(f"{named} is not a policy a transport can run (it runs: {ORDER})")
        if mine != _AROUND and mine in seen:
            raise _refuse(f"{named} and {_named(seen[mine])}: a transport runs one of each")
        if mine < rank:
            problem = f"{named} comes after {_named(previous)}"
            if isinstance(policy, Timeout):
                problem += (
                    ": a timeout inside the retry bounds each attempt, which is the client's "
                    "timeout= (httpx.Timeout); before the retry it bounds the whole request "
                    "(the transport's deadline)"
                )
            raise _refuse(f"{problem}. A transport runs, outermost first: {ORDER}")
        if isinstance(policy, CircuitBreaker | KeyedCircuitBreaker):
            _check_breaker(policy)
        if isinstance(policy, Chaos) and isinstance(policy._injection, _Result):
            raise _refuse(
                f"{named} returns a value instead of the request's response; a transport "
                "returns an httpx.Response: inject a fault or latency"
            )
        if mine == _AROUND:
            around.append(policy)
        seen[mine] = policy
        rank, previous = mine, policy
    retry = seen.get(_RANKS[Retry])
    breaker = seen.get(_RANKS[CircuitBreaker])
    timeout = seen.get(_RANKS[Timeout])
    hedging = seen.get(_RANKS[Hedging])
    assert retry is None or isinstance(retry, Retry)
    assert breaker is None or isinstance(breaker, CircuitBreaker | KeyedCircuitBreaker)
    assert timeout is None or isinstance(timeout, Timeout)
    assert hedging is None or isinstance(hedging, Hedging)
    return Plan(
        retry=retry, breaker=breaker, timeout=timeout, hedging=hedging, around=tuple(around)
    )


def build_breakers(
    spec: BreakerSpec,
    *,
    name: str,
    on: Any,
    on_result: Any,
    clock: Clock,
    listeners: Sequence[Listener],
) -> KeyedCircuitBreaker:
    """Per-endpoint breakers of ``spec``, with the transport's rule (``on``, ``on_result``)."""
    return KeyedCircuitBreaker(
        name=name,
        trip=spec.trip,
        reset_timeout=spec.reset_timeout,
        max_reset_timeout=spec.max_reset_timeout,
        half_open_max_calls=spec.half_open_max_calls,
        success_threshold=spec.success_threshold,
        on=on,
        on_result=on_result,
        storage_factory=spec.storage_factory,
        max_keys=spec.max_keys,
        idle_ttl=spec.idle_ttl,
        clock=clock,
        listeners=(*spec.listeners, *listeners),
    )
