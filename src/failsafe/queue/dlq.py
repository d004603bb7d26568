"""What the DLQ tools share: ages, the rate limit, and acting on a selection batch by batch.

``failsafe queue dlq`` (the command line) and the console's dead-letter pages (in the
Error-handling service) both replay and purge through these, so that a rate, an age or a
batch means the same in both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from failsafe.clock import Clock
from failsafe.queue.broker import DeadLetterBatch, DeadLetterCursor, DeadLetterFilter

__all__ = ["BURST_SECONDS", "Pacer", "parse_age", "walk"]

_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

BURST_SECONDS: Final = 0.25
"""How far ahead a `Pacer` lets batches catch up after a slow one: this many seconds' worth."""


def parse_age(text: str) -> float:
    """``30s``, ``15m``, ``2h``, ``3d``, ``1w`` or a sum like ``1h30m``, in seconds.

    Raises:
        ValueError: Naming the text and the units, for anything else.
    """
    value = text.strip().lower()
    parts = _AGE.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(
            f"{text!r} is not an age: give a number and a unit s, m, h, d or w "
            "(30s, 15m, 2h, 3d, 1h30m)"
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


class Pacer:
    """A token bucket on ``clock``: ``rate`` messages a second, a batch paid for as it starts.

    ``take(n)`` waits until the bucket is out of debt, then charges the batch's ``n``
    messages, running it into debt again; the bucket refills at ``rate`` meanwhile, the
    broker call's own time included, so batches that take less than ``n / rate`` go at
    ``rate`` exactly. The bucket starts empty and holds at most ``burst`` tokens (a quarter
    of a second's worth, `BURST_SECONDS`, and at least one batch): after a slow batch the
    next ones catch up by that much and no more. Over any stretch of ``t`` seconds at most
    ``rate * t + burst`` plus one batch are sent.
    """

    def __init__(self, rate: float, batch: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = max(float(batch), rate * BURST_SECONDS)
        self.clock = clock
        self.tokens = 0.0  # < 0: what the batches started so far still owe
        self.at: float | None = None  # when ``tokens`` was last brought up to date

    def _refill(self) -> None:
        now = self.clock.monotonic()
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, n: int) -> None:
        """Wait until the batches before are paid for, then charge ``n`` messages."""
        self._refill()
        if self.tokens < 0:
            self.clock.sleep(-self.tokens / self.rate)
            self._refill()
        self.tokens -= n


Act = Callable[..., DeadLetterBatch]
"""A broker's ``replay_batch`` or ``purge_batch``."""


def walk(
    act: Act,
    queue: str,
    where: DeadLetterFilter,
    *,
    wanted: int | None,
    batch: int,
    pacer: Pacer | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, bool]:
    """Run ``act`` on ``queue``'s selection batch by batch: how many it took, and if truncated.

    Each batch is one broker call on the next ``batch`` of the selection (after the cursor
    of the one before), paced by ``pacer`` when given. Stops after ``wanted`` (``None``:
    walk to the end) or when the broker has no more. ``progress`` hears the count so far
    after each batch that took some. Truncated: the broker stopped at its own bound on how
    far it looks (RabbitMQ's).
    """
    cursor: DeadLetterCursor | None = None
    truncated = False
    done = 0
    while wanted is None or done < wanted:
        size = batch if wanted is None else min(batch, wanted - done)
        if pacer is not None:
            pacer.take(size)
        taken = act(queue, where=where, after=cursor, limit=size)
        done += len(taken.ids)
        truncated = truncated or taken.truncated
        if taken.ids and progress is not None:
            progress(done)
        cursor = taken.cursor
        if cursor is None:
            break
    return done, truncated
