"""Delays between attempts: constant, linear, exponential, with jitter, capped.

A [`Backoff`][failsafe.backoff.Backoff] is a frozen value; ``delay(attempt, previous, rng)``
is a pure function of its arguments (the randomness comes from the injected ``rng``):

```python
Backoff.exponential(initial=0.1, maximum=2.0, jitter="full")
Backoff.constant(60)               # the payment flow's "redeliver every minute"
Backoff.none()                     # retry at once: no sleep call at all
```

Jitter, from the AWS architecture blog's "Exponential Backoff and Jitter":

- ``"none"``: the computed delay.
- ``"full"``: uniform in ``[0, delay]``.
- ``"equal"``: uniform in ``[delay / 2, delay]``.
- ``"decorrelated"``: uniform in ``[initial, previous * 3]``, capped.
"""

from __future__ import annotations

import math
import random
from typing import Literal, TypeAlias

import attrs

from failsafe._validators import number
from failsafe.exceptions import ConfigurationError

__all__ = ["Backoff", "Jitter"]

Jitter: TypeAlias = Literal["none", "full", "equal", "decorrelated"]
"""How a computed delay is randomised (``Backoff(jitter=...)``).

``"none"``, ``"full"``, ``"equal"`` or ``"decorrelated"``, as the module's description says.
"""

_JITTERS = ("none", "full", "equal", "decorrelated")
_KINDS = ("constant", "linear", "exponential")


@attrs.frozen(kw_only=True)
class Backoff:
    """How long to wait before attempt ``n + 1`` after attempt ``n`` failed.

    Prefer the constructors [`constant`][failsafe.backoff.Backoff.constant],
    [`linear`][failsafe.backoff.Backoff.linear] and
    [`exponential`][failsafe.backoff.Backoff.exponential].

    Attributes:
        kind: ``"constant"``, ``"linear"`` or ``"exponential"``.
        initial: The delay after the first failed attempt, in seconds.
        step: For linear backoff, seconds added per attempt.
        multiplier: For exponential backoff, the growth factor per attempt.
        maximum: The cap on every delay, in seconds.
        jitter: How each delay is randomised: a [`Jitter`][failsafe.backoff.Jitter].

    Raises:
        ConfigurationError: On a negative delay, ``maximum < initial``, a multiplier below
            1, or an unknown kind or jitter.
    """

    kind: str = "exponential"
    initial: float = attrs.field(default=0.05, validator=number(at_least=0))
    step: float = attrs.field(default=0.0, validator=number(at_least=0))
    multiplier: float = attrs.field(default=2.0, validator=number(at_least=1))
    maximum: float = attrs.field(default=1.0, validator=number(at_least=0))
    jitter: Jitter = "full"

    def __attrs_post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigurationError("kind", f"must be one of {_KINDS}, got {self.kind!r}")
        if self.jitter not in _JITTERS:
            raise ConfigurationError("jitter", f"must be one of {_JITTERS}, got {self.jitter!r}")
        if self.maximum < self.initial:
            raise ConfigurationError(
                "maximum", f"must be >= initial ({self.initial}), got {self.maximum}"
            )

    @classmethod
    def none(cls) -> Backoff:
        """Retry at once. Policies make no sleep call at all for a zero delay."""
        return cls(kind="constant", initial=0.0, maximum=0.0, jitter="none")

    @classmethod
    def constant(cls, delay: float, *, jitter: Jitter = "none") -> Backoff:
        """Wait ``delay`` seconds before every retry."""
        return cls(kind="constant", initial=delay, maximum=delay, jitter=jitter)

    @classmethod
    def linear(
        cls, initial: float, step: float, *, maximum: float = math.inf, jitter: Jitter = "none"
    ) -> Backoff:
        """Wait ``initial``, then ``initial + step``, ``initial + 2 * step``, ... capped."""
        return cls(
            kind="linear",
            initial=initial,
            step=step,
            maximum=_finite_cap(maximum),
            jitter=jitter,
        )

    @classmethod
    def exponential(
        cls,
        initial: float = 0.05,
        *,
        multiplier: float = 2.0,
        maximum: float = 1.0,
        jitter: Jitter = "full",
    ) -> Backoff:
        """Wait ``initial * multiplier ** (n - 1)`` after the n-th failure, capped, with jitter."""
        return cls(
            kind="exponential",
            initial=initial,
            multiplier=multiplier,
            maximum=maximum,
            jitter=jitter,
        )

    @property
    def is_zero(self) -> bool:
        """Whether every delay is zero (then policies never sleep)."""
        return self.maximum == 0

    def base_delay(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` (1-based) before jitter, capped.

        Never overflows: large attempts give ``maximum``.
        """
        n = max(attempt, 1) - 1
        if self.kind == "constant":
            d = self.initial
        elif self.kind == "linear":
            d = self.initial + self.step * n
        else:
            if self.initial == 0 or self.multiplier == 1:
                d = self.initial
            else:
                # compare in log space so attempt 10,000 (or a denormal initial) cannot overflow
                growth = n * math.log(self.multiplier)
                if growth >= math.log(self.maximum) - math.log(self.initial):
                    d = self.maximum
                elif growth < 700:
                    d = self.initial * self.multiplier**n
                else:
                    d = math.exp(math.log(self.initial) + growth)
        return min(d, self.maximum)

    def delay(self, attempt: int, previous: float, rng: random.Random) -> float:
        """The delay, with jitter, after failed attempt ``attempt`` (1-based).

        Args:
            attempt: The number of the attempt that just failed, from 1.
            previous: The delay used before this attempt (0 for the first); only
                decorrelated jitter uses it.
            rng: The source of randomness (inject a seeded one in tests).
        """
        jitter = self.jitter
        if jitter == "decorrelated":
            upper = min(self.maximum, max(self.initial, previous * 3))
            return min(self.maximum, rng.uniform(self.initial, upper))
        d = self.base_delay(attempt)
        if jitter == "none" or d == 0:
            return d
        if jitter == "full":
            return rng.uniform(0, d)
        return rng.uniform(d / 2, d)

    def describe(self) -> str:
        """A short description in words, used by policy reprs."""
        if self.is_zero:
            return "no delay"
        j = "" if self.jitter == "none" else f", {self.jitter} jitter"
        if self.kind == "constant":
            return f"{self.initial:g}s between attempts{j}"
        if self.kind == "linear":
            return f"linear backoff {self.initial:g}s +{self.step:g}s, max {self.maximum:g}s{j}"
        return (
            f"exponential backoff {self.initial:g}s x{self.multiplier:g}, max {self.maximum:g}s{j}"
        )


def _finite_cap(maximum: float) -> float:
    return maximum if math.isfinite(maximum) else 1e9
