"""The outcome of one attempt: a result or an exception."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Outcome"]

T_co = TypeVar("T_co", covariant=True)


class Outcome(Generic[T_co]):
    """The outcome of one attempt: either a ``result`` or an ``exception``.

    Handed to hooks (``Retry(delay_from=...)``, ``Fallback(handler=...)``) and carried by
    events. Immutable.

    Attributes:
        result: The value returned, when the attempt returned.
        exception: The exception raised, or ``None`` when the attempt returned.
    """

    __slots__ = ("exception", "result")

    result: T_co | None
    exception: BaseException | None

    def __init__(self, result: T_co | None = None, exception: BaseException | None = None) -> None:
        object.__setattr__(self, "result", result)
        object.__setattr__(self, "exception", exception)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Outcome is immutable; cannot set {name!r}")

    @property
    def failed_with_exception(self) -> bool:
        """Whether the attempt raised."""
        return self.exception is not None

    def describe(self) -> str:
        """Return a short human description: ``raised ConnectionError('x')`` or ``returned 503``."""
        if self.exception is not None:
            return f"raised {self.exception!r}"
        return f"returned {self.result!r}"

    def __repr__(self) -> str:
        if self.exception is not None:
            return f"Outcome(exception={self.exception!r})"
        return f"Outcome(result={self.result!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return self.result == other.result and self.exception is other.exception

    def __hash__(self) -> int:
        return hash((id(self.exception), repr(self.result)))
