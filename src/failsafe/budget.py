"""`RetryBudget`: cap retries at a share of calls, so retries cannot multiply an outage's load."""

from __future__ import annotations

import threading

import attrs

from failsafe import _registry
from failsafe._validators import number
from failsafe.clock import SYSTEM_CLOCK, Clock

__all__ = ["RetryBudget"]

_BUCKETS = 10


@attrs.define(kw_only=True, eq=False)
class RetryBudget:
    """A budget of retries shared by many calls, as Finagle, Envoy and gRPC throttle retries.

    Over a sliding ``window`` of seconds, retries may be at most ``ratio`` of the calls
    made, plus a floor of ``min_per_second`` retries per second so that a quiet service can
    still retry. Give one budget to every `Retry` that calls the same dependency
    (``Retry(budget=budget)``): when the dependency is down, the budget runs out and calls
    fail fast instead of multiplying the load by the number of attempts.

    Args:
        ratio: Retries allowed per call (0.2: at most one retry per five calls).
        min_per_second: Retries always allowed per second, whatever the traffic.
        window: Seconds over which calls and retries are counted.
        clock: Measures the window (a fake one in tests).
        name: Names this budget in the health snapshot and in metrics.

    Raises:
        ConfigurationError: On a ratio outside [0, 1], a negative floor or a window <= 0.

    Thread-safety: safe to share between threads and tasks; every update holds a lock that
    guards only the counters.
    """

    ratio: float = attrs.field(default=0.2, validator=number(at_least=0, at_most=1))
    min_per_second: float = attrs.field(default=10.0, validator=number(at_least=0))
    window: float = attrs.field(default=10.0, validator=number(above=0))
    clock: Clock = SYSTEM_CLOCK
    name: str = "retry-budget"
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _width: float = attrs.field(init=False, repr=False)
    _stamps: list[int] = attrs.field(init=False, repr=False)
    _calls: list[int] = attrs.field(init=False, repr=False)
    _retries: list[int] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._width = self.window / _BUCKETS
        self._stamps = [-(2**62)] * _BUCKETS  # never counted, whatever the clock
        self._calls = [0] * _BUCKETS
        self._retries = [0] * _BUCKETS
        _registry.register(self)

    def _slot(self, now: float) -> int:
        tick = int(now // self._width)
        slot = tick % _BUCKETS
        if self._stamps[slot] != tick:
            self._stamps[slot] = tick
            self._calls[slot] = 0
            self._retries[slot] = 0
        return slot

    def _balance(self, now: float) -> float:
        tick = int(now // self._width)
        calls = retries = 0
        for stamp, c, r in zip(self._stamps, self._calls, self._retries, strict=True):
            if tick - _BUCKETS < stamp <= tick:
                calls += c
                retries += r
        return self.min_per_second * self.window + self.ratio * calls - retries

    def record_call(self) -> None:
        """Count one call (a `Retry` using this budget does it once per call)."""
        now = self.clock.monotonic()
        with self._lock:
            self._calls[self._slot(now)] += 1

    def _forget_call(self) -> None:
        """Take back one `record_call` (the call turned out to be a misuse of the API)."""
        now = self.clock.monotonic()
        with self._lock:
            slot = self._slot(now)
            if self._calls[slot]:
                self._calls[slot] -= 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; return ``False`` (taking nothing) when it is spent."""
        now = self.clock.monotonic()
        with self._lock:
            if self._balance(now) < 1:
                return False
            self._retries[self._slot(now)] += 1
            return True

    @property
    def available(self) -> float:
        """Retries that could be made now (may be fractional)."""
        now = self.clock.monotonic()
        with self._lock:
            return max(0.0, self._balance(now))
