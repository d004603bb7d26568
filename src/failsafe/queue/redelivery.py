"""`Redelivery`: what happens to a message whose handler failed. Pure decisions, no I/O.

The model is NServiceBus' recoverability:

1. **Immediate retries**: the handler runs again at once, in process (a core
   [`Retry`][failsafe.Retry]), ``immediate`` more times.
2. **Delayed redelivery**: the message goes to the DLQ and comes back after ``delay``
   (60 s by default), at most ``delayed`` times; each round starts with immediate retries.
3. **Review**: after the last round, or at once for an unrecoverable failure, the message is
   reported to the error sink for a person and moved to the parking queue. Never dropped.

The counts travel in the message (`Envelope.delayed_attempts`); the broker's own delivery
counter is a floor under them, so a message that kills its consumer every time it is handled
still moves on through the rounds instead of looping forever.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from failsafe._validators import integer, random_source
from failsafe.backoff import Backoff
from failsafe.exceptions import ConfigurationError, FailsafeError
from failsafe.queue.envelope import Envelope, ErrorInfo, MalformedMessage

__all__ = [
    "ConsumerDied",
    "Decision",
    "DeliveryLimitWarning",
    "Redelivery",
    "Unrecoverable",
]

_RNG = random.Random()


def _random(policy: Redelivery) -> random.Random:
    """The random source of ``policy``: its own ``rng``, else the shared one."""
    return policy.rng if policy.rng is not None else _RNG


class Unrecoverable(Exception):
    """Raise (or subclass) in a handler for a failure no retry can mend.

    The message goes straight to review: no immediate retry, no delayed redelivery.
    """


class ConsumerDied(FailsafeError):
    """Recorded as a message's last error when its consumers died handling it too often.

    The broker handed the message out more times than a round allows without it ever being
    settled (the process was killed, or crashed, while handling it each time).
    """


class DeliveryLimitWarning(UserWarning):
    """The broker's own delivery limit is lower than the redelivery policy needs."""


def _unrecoverable(value: Any) -> tuple[type[BaseException], ...]:
    items = (value,) if isinstance(value, type) else tuple(value)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError("unrecoverable", f"must be exception classes, got {item!r}")
    return items


def _delay(value: Any) -> float | Backoff:
    if isinstance(value, Backoff):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError("delay", f"must be seconds >= 0 or a Backoff, got {value!r}")
    if value == float("inf"):
        raise ConfigurationError("delay", "must be finite")
    return float(value)


@attrs.frozen(kw_only=True)
class Decision:
    """What to do with a message after a failed round.

    Attributes:
        action: ``"defer"`` (to the DLQ, back after ``delay``) or ``"review"`` (to the error
            sink and the parking queue).
        message: The envelope to store, with its counts and last error updated.
        delay: Seconds until it is due again (``"defer"`` only).
        reason: Why, in words (``"unrecoverable"``, ``"rounds exhausted"``, ...).
    """

    action: str
    message: Envelope
    delay: float | None = None
    reason: str = ""


@attrs.frozen(kw_only=True)
class Redelivery:
    """The recoverability policy of one queue.

    Args:
        immediate: Immediate retries in process after the first attempt (so each round
            makes ``immediate + 1`` attempts).
        immediate_backoff: The pause between immediate retries.
        delayed: Delayed redeliveries at most (rounds through the DLQ).
        delay: Seconds each message waits in the DLQ (a number), or a
            [`Backoff`][failsafe.Backoff] over the round number (1 for the first round).
        unrecoverable: Exception types that go straight to review (besides
            `Unrecoverable` and `MalformedMessage`, which always do).
        rng: Randomness for a backoff's jitter (the immediate retries' and the DLQ
            delay's); ``None`` (default): a generator shared by every `Redelivery` built
            without one.

    Raises:
        ConfigurationError: At construction, naming a bad option.

    Example:
        ```python
        from failsafe import Backoff
        from failsafe.queue import Redelivery

        default = Redelivery()  # 3 immediate retries, then every 60 s, 5 times, then review
        quick = Redelivery(immediate=1, delayed=3, delay=Backoff.exponential(5, maximum=60))
        ```
    """

    immediate: int = attrs.field(default=3, validator=integer(0))
    immediate_backoff: Backoff = attrs.field(
        factory=lambda: Backoff.exponential(0.05, maximum=1.0),
        validator=attrs.validators.instance_of(Backoff),
    )
    delayed: int = attrs.field(default=5, validator=integer(0))
    delay: float | Backoff = attrs.field(default=60.0, converter=_delay)
    unrecoverable: tuple[type[BaseException], ...] = attrs.field(
        default=(), converter=_unrecoverable
    )
    rng: random.Random | None = attrs.field(
        default=None, validator=random_source, eq=False, repr=False
    )

    @property
    def attempts_per_round(self) -> int:
        """Handler attempts in one round: the first plus the immediate retries."""
        return self.immediate + 1

    @property
    def max_attempts(self) -> int:
        """Handler attempts a message gets at most, over all its rounds."""
        return self.attempts_per_round * (self.delayed + 1)

    def is_unrecoverable(self, error: BaseException) -> bool:
        """Whether ``error`` skips every retry and goes straight to review."""
        return isinstance(error, Unrecoverable | MalformedMessage) or (
            bool(self.unrecoverable) and isinstance(error, self.unrecoverable)
        )

    def attempts_left(self, message: Envelope, deliveries: int) -> int:
        """Attempts this delivery may make: the round's, less those already spent.

        Spent: the envelope's count, or (the floor) one per earlier delivery of this copy
        that was never settled because its consumer died.
        """
        spent = max(message.immediate_attempts, deliveries - 1)
        return max(self.attempts_per_round - spent, 0)

    def delay_for(self, round_: int) -> float:
        """Seconds in the DLQ before delayed round ``round_`` (1 for the first)."""
        if isinstance(self.delay, Backoff):
            return self.delay.delay(round_, 0.0, _random(self))
        return self.delay

    def after_failure(
        self, message: Envelope, error: BaseException, *, attempts: int, now: float
    ) -> Decision:
        """Decide what follows a failed round.

        Args:
            message: The envelope as delivered.
            error: The last exception of the round.
            attempts: Attempts the round made (crashed deliveries included).
            now: Wall-clock time (for the error's stamp and ``first_seen``).
        """
        info = ErrorInfo.of(error, now)
        first_seen = message.first_seen if message.first_seen is not None else now
        if self.is_unrecoverable(error):
            return Decision(
                action="review",
                message=attrs.evolve(
                    message, immediate_attempts=attempts, first_seen=first_seen, last_error=info
                ),
                reason="unrecoverable",
            )
        if message.delayed_attempts >= self.delayed:
            return Decision(
                action="review",
                message=attrs.evolve(
                    message, immediate_attempts=attempts, first_seen=first_seen, last_error=info
                ),
                reason=f"gave up after {message.delayed_attempts} delayed redelivery(ies)",
            )
        round_ = message.delayed_attempts + 1
        return Decision(
            action="defer",
            message=attrs.evolve(
                message,
                immediate_attempts=0,
                delayed_attempts=round_,
                first_seen=first_seen,
                last_error=info,
            ),
            delay=self.delay_for(round_),
            reason=f"delayed redelivery {round_} of {self.delayed}",
        )
