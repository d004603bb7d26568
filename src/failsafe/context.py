"""What an operation can learn about the call it runs in: its failover target and deadline.

Policies publish this through a `contextvars.ContextVar`, so it follows the call into
threads started with `contextvars.copy_context` and into asyncio tasks:

```python
import failsafe

def fetch(path):
    ctx = failsafe.current_context()
    return http_get(ctx.target + path, timeout=ctx.remaining())

failsafe.Pipeline(failsafe.Failover(["http://a", "http://b"]), failsafe.Timeout(2)).call(
    fetch, "/v1/x"
)
```
"""

from __future__ import annotations

from contextvars import ContextVar

from failsafe.clock import SYSTEM_CLOCK, Clock

__all__ = ["CallContext", "current_context"]


class CallContext:
    """The current call's failover target and deadline. Immutable.

    Attributes:
        target: The failover target being called, or ``None`` outside a `Failover`.
        deadline: The ``clock.monotonic()`` instant by which the call must finish, or
            ``None`` when no `Timeout` encloses it.
        clock: The clock the deadline is measured on.
    """

    __slots__ = ("clock", "deadline", "target")

    def __init__(
        self, target: object = None, deadline: float | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.target = target
        self.deadline = deadline
        self.clock = clock

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or ``None`` with no deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock.monotonic())

    def __repr__(self) -> str:
        return f"CallContext(target={self.target!r}, deadline={self.deadline!r})"


# Two variables rather than one CallContext, so that the hot paths allocate nothing:
# Failover sets the target, Timeout the (deadline, clock) pair; current_context() joins them.
_target: ContextVar[object] = ContextVar("failsafe_target", default=None)
_deadline: ContextVar[tuple[float, Clock] | None] = ContextVar("failsafe_deadline", default=None)


def current_context() -> CallContext:
    """Return the context of the call running now (an empty one outside any policy)."""
    deadline = _deadline.get()
    if deadline is None:
        return CallContext(_target.get())
    return CallContext(_target.get(), deadline[0], deadline[1])
