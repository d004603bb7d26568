"""KeyedCircuitBreaker's bounds under Hypothesis: random calls, time and prunes (issue 15).

The machine calls a few keys (successes and failures), asks for breakers, moves a
`FakeClock` on a grid of quarter seconds and prunes; after each step it checks the map's
rules against what it knew before the step:

- the map never holds more than ``max_keys`` keys, and every key is in exactly one order;
- a key dropped although called within ``idle_ttl`` was dropped to make room for a new key;
- a key holding a state (a failure counted, an open circuit) is never dropped while a key
  holding none survives, and an open circuit still in its open period only when every key
  held has a state;
- among keys holding nothing, the one dropped for room was used no later (to the grain)
  than those kept;
- each key behaves as a breaker that started when its key was (last) added: a small model
  of a consecutive-failures breaker predicts every call's outcome.

``idle_ttl`` is 3.1 or 12.01 s, so that no idle time on the grid falls between ``idle_ttl``
and ``idle_ttl`` plus the grain (where the rules let either happen).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from failsafe import CircuitOpenError, KeyedCircuitBreaker
from failsafe.circuit_breaker import _Kept
from failsafe.testing import FakeClock

KEYS = st.sampled_from("abcdef")


class Down(ConnectionError):
    """What a failing call raises."""


class Model:
    """A consecutive-failures breaker, one call at a time."""

    def __init__(self) -> None:
        self.state, self.count, self.until = "closed", 0, 0.0

    def call(self, ok: bool, now: float, threshold: int, reset: float) -> str:
        if self.state == "open":
            if now < self.until:
                return "open"
            self.state = "half-open"
        if self.state == "half-open":
            if ok:
                self.state, self.count = "closed", 0
                return "ok"
            self.state, self.until = "open", now + reset
            return "down"
        if ok:
            self.count = 0
            return "ok"
        self.count += 1
        if self.count >= threshold:
            self.state, self.until = "open", now + reset
        return "down"

    def holds_state(self) -> bool:
        return self.state != "closed" or self.count > 0


class KeyedMachine(RuleBasedStateMachine):
    """A keyed breaker with small bounds, checked after every step."""

    @initialize(
        max_keys=st.sampled_from([1, 2, 3, 4, None]),
        idle_ttl=st.sampled_from([3.1, 12.01, None]),
        threshold=st.sampled_from([1, 2]),
        reset=st.sampled_from([2.0, 20.0]),
        start=st.sampled_from([0.0, 1000.25]),
    )
    def setup(
        self,
        max_keys: int | None,
        idle_ttl: float | None,
        threshold: int,
        reset: float,
        start: float,
    ) -> None:
        self.clock = FakeClock(start=start)
        self.key: str = "a"
        self.threshold, self.reset, self.ttl = threshold, reset, idle_ttl
        self.keyed = KeyedCircuitBreaker(
            key=lambda: self.key,
            threshold=threshold,
            reset_timeout=reset,
            max_keys=max_keys,
            idle_ttl=idle_ttl,
            clock=self.clock,
        )
        self.models: dict[str, Model] = {}
        self.used: dict[str, float] = {}  # each key's last call (or get)

    # -- what the rules look at -------------------------------------------------------------
    def _entries(self) -> dict[str, Any]:
        """Each key held, with its breaker object (None for a key without one)."""
        return {
            str(k): (e.breaker if isinstance(e, _Kept) else None)
            for k, e in self.keyed._table.items()
        }

    def _holds_state(self, key: str) -> bool:
        entry = self.keyed._table[key]
        return isinstance(entry, _Kept) and not entry.breaker._at_rest()

    def _resting(self, key: str) -> bool:
        entry = self.keyed._table[key]
        return isinstance(entry, _Kept) and entry.breaker._resting()

    def _step(self, key: str | None, action: Any) -> Any:
        """Run ``action`` (on ``key``, or none); check the map's rules around it."""
        now = self.clock.monotonic()
        before = self._entries()
        stateful = {k for k in before if self._holds_state(k)}
        resting = {k for k in before if self._resting(k)}
        result = action()
        after = self._entries()
        dropped = set(before) - set(after)
        grain = self.keyed._grain
        new_key = key is not None and key not in before
        for d in dropped:
            idle = now - self.used[d]
            if self.ttl is not None and idle >= self.ttl:
                # dropped for being idle: never an open circuit in its open period, unless
                # for room with every key holding a state
                assert d not in resting or (new_key and not set(before) - stateful - {d}), d
                continue
            assert self.ttl is None or idle < self.ttl
            # dropped for room, for the key this step added
            assert new_key, f"{d} dropped, not idle ({idle}s), and no key was added"
            assert self.keyed.max_keys is not None
            assert len(before) >= self.keyed.max_keys
            survivors = set(after) & set(before)
            if d in stateful:
                assert not survivors - stateful, f"{d} held a state; {survivors} survived"
            else:
                for s in survivors - stateful:
                    assert self.used[s] > self.used[d] - grain, (d, s, self.used)
        # keys dropped, or whose breaker object changed, start over in the model
        for k in set(before) | set(after):
            if k not in after or (k in before and before[k] is not after[k] and before[k]):
                self.models.pop(k, None)
        return result

    # -- rules ------------------------------------------------------------------------------
    def _call(self, key: str, ok: bool) -> None:
        self.key = key

        def fn() -> str:
            if not ok:
                raise Down(key)
            return "ok"

        def action() -> str:
            try:
                return self.keyed.call(fn)
            except Down:
                return "down"
            except CircuitOpenError:
                return "open"

        if key in self.models and key not in self.keyed._table:
            del self.models[key]  # dropped since: the key starts over
        outcome = self._step(key, action)
        now = self.clock.monotonic()
        expected = self.models.setdefault(key, Model()).call(ok, now, self.threshold, self.reset)
        assert outcome == expected, (key, ok, outcome, expected)
        self.used[key] = now

    @rule(key=KEYS)
    def succeed(self, key: str) -> None:
        self._call(key, True)

    @rule(key=KEYS)
    def fail(self, key: str) -> None:
        self._call(key, False)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        self._step(key, lambda: self.keyed.get(key))
        self.used[key] = self.clock.monotonic()

    @rule(seconds=st.sampled_from([0.25, 1.0, 2.5, 7.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def prune(self) -> None:
        self._step(None, self.keyed.prune)
        if self.ttl is not None:  # every key idle past idle_ttl plus the grain went, unless open
            now = self.clock.monotonic()
            for k in self.keyed._table:
                assert now - self.used[str(k)] < self.ttl + self.keyed._grain or self._resting(
                    str(k)
                ), k

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def bounded_and_consistent(self) -> None:
        table = set(self.keyed._table)
        order, held = set(self.keyed._order), set(self.keyed._held)
        assert table == order | held
        assert not order & held
        if self.keyed.max_keys is not None:
            assert len(table) <= self.keyed.max_keys

    @invariant()
    def breakers_match_the_model(self) -> None:
        for k, entry in self.keyed._table.items():
            model = self.models.get(str(k))
            if not isinstance(entry, _Kept):
                assert model is None or not model.holds_state(), (k, vars(model))
            elif model is not None and model.state != "half-open":
                assert entry.breaker.current_state == model.state, (k, vars(model))
                if model.state == "closed":
                    assert entry.breaker.failure_count == model.count


TestKeyedMachine = KeyedMachine.TestCase
TestKeyedMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestKeyedMachine.__doc__ = "The keyed breaker keeps its bounds and rules under random steps."


@pytest.mark.parametrize("idle_ttl", [3.1, 12.01])
def test_the_grid_never_falls_in_the_grain(idle_ttl: float) -> None:
    """No idle time on the quarter-second grid lies in [idle_ttl, idle_ttl + grain)."""
    grain = KeyedCircuitBreaker(idle_ttl=idle_ttl)._grain
    for quarter in range(400):
        idle = quarter / 4
        assert not idle_ttl <= idle < idle_ttl + grain
