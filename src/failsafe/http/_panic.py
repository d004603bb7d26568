"""The transports' last resort when every endpoint's circuit is open (Envoy's "panic" mode).

A circuit that opened when its endpoint died stays open for its whole open period, even
when the endpoint is back sooner. While another endpoint serves, that costs nothing; once
every endpoint's circuit is open, it is an outage of the client although an endpoint may be
healthy (in a chaos run, 78 % of orders answered "try later" while an instance was up).
So when every circuit is open, the transport still sends the request to the endpoint
nearest to its probe, as that circuit's probe; a success closes the circuit.

One such request at a time per transport, and at most ``rate`` a second (a token bucket of
``burst``): endpoints that are really all down get bounded extra load. Requests that find
every circuit open while one is in flight wait for it (within their deadline) and, if it
closed its circuit, follow it there; so a burst of concurrent requests costs one request
to a dead endpoint, and none of them fails when the endpoint is back.

Pure decisions over the breakers' state and an injected clock; the transports send.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from failsafe.circuit_breaker import CircuitState, KeyedCircuitBreaker
from failsafe.clock import Clock

__all__ = ["InFlight", "PanicProbes"]

FOLLOW_WAIT = 30.0
"""Seconds a request waits for the last resort in flight when it has no deadline."""


class InFlight:
    """The last-resort request being sent now: its endpoint, and how to wait for its end."""

    __slots__ = ("done", "key", "loop", "loop_done")

    def __init__(self, key: str, loop: asyncio.AbstractEventLoop | None) -> None:
        self.key = key
        self.done = threading.Event()  # for threads
        self.loop = loop  # for tasks: the loop of the request that sends it
        self.loop_done = asyncio.Event() if loop is not None else None


class PanicProbes:
    """Which endpoint to try when every circuit is open, one at a time, ``rate`` a second.

    Thread-safe: one lock guards the bucket and the request in flight.
    """

    __slots__ = ("_level", "_lock", "_stamp", "burst", "clock", "in_flight", "rate")

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._level = float(burst)
        self._stamp = clock.monotonic()
        self._lock = threading.Lock()
        self.in_flight: InFlight | None = None

    def _take(self) -> bool:
        now = self.clock.monotonic()
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._level < 1:
            return False
        self._level -= 1
        return True

    @staticmethod
    def nearest(breakers: KeyedCircuitBreaker, keys: Sequence[str]) -> str | None:
        """The endpoint whose open period ends first; ``None`` when some circuit is closed."""
        waits: list[tuple[float, int, str]] = []
        for index, key in enumerate(keys):
            breaker = breakers.get(key)
            if breaker.state is CircuitState.CLOSED:
                return None
            waits.append((breaker.retry_after, index, key))
        return min(waits)[2] if waits else None

    def join(
        self,
        breakers: KeyedCircuitBreaker,
        keys: Sequence[str],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> tuple[InFlight | None, bool]:
        """The last resort for a request that every circuit refused, and whether it sends it.

        ``(in_flight, True)``: the caller sends to ``in_flight.key`` and then calls `finish`.
        ``(in_flight, False)``: another request is sending; wait for it, then follow it if
        its circuit closed. ``(None, False)``: no last resort (some circuit is closed, or
        the rate is spent).
        """
        key = self.nearest(breakers, keys)
        if key is None:
            return None, False
        with self._lock:
            current = self.in_flight
            if current is not None:
                return current, False
            if not self._take():
                return None, False
            self.in_flight = current = InFlight(key, loop)
            return current, True

    def finish(self, in_flight: InFlight) -> None:
        """The last resort ``in_flight`` has ended: wake the requests waiting for it."""
        with self._lock:
            if self.in_flight is in_flight:
                self.in_flight = None
        in_flight.done.set()
        if in_flight.loop_done is not None:
            in_flight.loop_done.set()
