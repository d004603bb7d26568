"""The transports' last resort when every endpoint's circuit is open (Envoy's "panic" mode).

A circuit that opened when its endpoint died stays open for its whole ``reset_timeout``,
even when the endpoint is back sooner. While another endpoint serves, that costs nothing;
once every endpoint's circuit is open, it is an outage of the client although an endpoint
may be healthy (in a chaos run, 78 % of orders answered "try later" while an instance was up).
So when every circuit is open, the transport still sends the request to the endpoint that
has rested longest (the nearest to its probe), bypassing its breaker; a success closes that
circuit. A token bucket bounds these requests, so that a client whose endpoints are really
all down adds at most ``burst`` requests at once and ``rate`` a second to their load.

Pure decisions over the breakers' state and an injected clock; the transports send.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from failsafe.circuit_breaker import CircuitState, KeyedCircuitBreaker
from failsafe.clock import Clock

__all__ = ["PanicProbes"]


class PanicProbes:
    """Which endpoint to try when every circuit is open, at most ``rate`` a second.

    Thread-safe: one lock guards the bucket's two numbers.
    """

    __slots__ = ("_level", "_lock", "_stamp", "burst", "clock", "rate")

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._level = float(burst)
        self._stamp = clock.monotonic()
        self._lock = threading.Lock()

    def _take(self) -> bool:
        now = self.clock.monotonic()
        with self._lock:
            self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._level < 1:
                return False
            self._level -= 1
            return True

    def choose(self, breakers: KeyedCircuitBreaker, keys: Sequence[str]) -> str | None:
        """The endpoint to send to although its circuit is open, or ``None``.

        ``None`` when some endpoint's circuit is not open (the failure was something else),
        or when the bucket is empty.
        """
        waits: list[tuple[float, int, str]] = []
        for index, key in enumerate(keys):
            breaker = breakers.get(key)
            if breaker.state is CircuitState.CLOSED:
                return None
            waits.append((breaker.retry_after, index, key))
        if not waits or not self._take():
            return None
        return min(waits)[2]
