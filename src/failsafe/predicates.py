"""The one vocabulary every policy uses to say which outcomes are failures.

A [`Predicate`][failsafe.predicates.Predicate] has an exception side and a result side;
either may be absent (it then matches nothing on that side). Predicates combine with
``|`` (either), ``&`` (both) and ``~`` (negate each side that is present):

```python
from failsafe.predicates import exception, result

transient = exception(ConnectionError, TimeoutError)
overloaded = result(lambda r: r.status_code in (429, 503))
Retry(on=transient | overloaded)
```

Every policy option named ``on`` accepts a predicate, an exception type, a tuple of types,
or a plain function of the exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeAlias

from failsafe._transient import is_transient

__all__ = [
    "ANY_EXCEPTION",
    "NOTHING",
    "TRANSIENT",
    "Classifier",
    "Predicate",
    "as_predicate",
    "classify",
    "exception",
    "result",
]

ExceptionTest: TypeAlias = Callable[[BaseException], bool]
ResultTest: TypeAlias = Callable[[Any], bool]


class Predicate:
    """Classifies outcomes: ``matches_exception(exc)`` and ``matches_result(value)``.

    Build one with [`exception`][failsafe.predicates.exception] and
    [`result`][failsafe.predicates.result], then combine. Immutable and thread-safe.
    """

    __slots__ = ("_desc", "_exc", "_guarded", "_res")

    def __init__(
        self,
        on_exception: ExceptionTest | None = None,
        on_result: ResultTest | None = None,
        description: str = "custom predicate",
    ) -> None:
        self._exc = on_exception
        self._res = on_result
        self._desc = description
        self._guarded = _never if on_exception is None else _not_misuse(on_exception)

    @property
    def handles_results(self) -> bool:
        """Whether any result can match (policies skip the result check when not)."""
        return self._res is not None

    @property
    def handles_exceptions(self) -> bool:
        """Whether any exception can match."""
        return self._exc is not None

    def matches_exception(self, exc: BaseException) -> bool:
        """Return whether ``exc`` is a failure for this predicate.

        A [`UsageError`][failsafe.UsageError] (failsafe called the wrong way) never matches:
        no policy counts a bug in the calling code as a failure of the dependency.
        """
        return bool(self._guarded(exc))

    def matches_result(self, value: object) -> bool:
        """Return whether the returned ``value`` is a failure for this predicate."""
        return self._res is not None and bool(self._res(value))

    def tests(self) -> tuple[ExceptionTest, ResultTest | None]:
        """Return the two tests a policy's driver binds once: on exceptions, and on results.

        The result test is ``None`` when no result can match, so that drivers skip the check
        on the success path.
        """
        return self.matches_exception, (self.matches_result if self._res is not None else None)

    def _raw_tests(
        self,
    ) -> tuple[Callable[[BaseException], object], Callable[[Any], object] | None]:
        """The two tests themselves, for drivers that only ask whether their answer is true.

        Like `tests`, minus the wrapper that turns the answer into a ``bool``: one call less
        per outcome on every policy's success path. The exception test is never ``None``, and
        never matches a [`UsageError`][failsafe.UsageError].
        """
        return self._guarded, self._res

    def __or__(self, other: Classifier) -> Predicate:
        o = as_predicate(other)
        return Predicate(
            _either(self._exc, o._exc), _either(self._res, o._res), f"{self._desc} or {o._desc}"
        )

    def __ror__(self, other: Classifier) -> Predicate:
        return as_predicate(other) | self

    def __and__(self, other: Classifier) -> Predicate:
        o = as_predicate(other)
        return Predicate(
            _both(self._exc, o._exc), _both(self._res, o._res), f"{self._desc} and {o._desc}"
        )

    def __rand__(self, other: Classifier) -> Predicate:
        return as_predicate(other) & self

    def __invert__(self) -> Predicate:
        return Predicate(_negate(self._exc), _negate(self._res), f"not ({self._desc})")

    def __repr__(self) -> str:
        return f"<Predicate: {self._desc}>"

    def __str__(self) -> str:
        return self._desc


def _never(_: object) -> bool:
    return False


def _not_misuse(test: ExceptionTest) -> Callable[[BaseException], object]:
    from failsafe.exceptions import UsageError

    def matches(exc: BaseException) -> object:
        return not isinstance(exc, UsageError) and test(exc)

    return matches


def _either(a: Callable[[Any], bool] | None, b: Callable[[Any], bool] | None) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return lambda x: a(x) or b(x)


def _both(a: Callable[[Any], bool] | None, b: Callable[[Any], bool] | None) -> Any:
    if a is None or b is None:
        return None
    return lambda x: a(x) and b(x)


def _negate(a: Callable[[Any], bool] | None) -> Any:
    if a is None:
        return None
    return lambda x: not a(x)


def exception(*types: type[BaseException], where: ExceptionTest | None = None) -> Predicate:
    """Match exceptions that are instances of ``types`` (all exceptions when none are given).

    Args:
        *types: Exception classes to match.
        where: An extra test on the exception; both must hold.

    Raises:
        ConfigurationError: If an item of ``types`` is not an exception class.
    """
    from failsafe.exceptions import ConfigurationError

    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise ConfigurationError("on", f"{t!r} is not an exception class")
    classes = types or (Exception,)
    names = ", ".join(t.__name__ for t in classes)
    if where is None:
        return Predicate(lambda e: isinstance(e, classes), None, f"raises {names}")
    test = where
    return Predicate(
        lambda e: isinstance(e, classes) and test(e),
        None,
        f"raises {names} where {getattr(test, '__name__', 'test')}",
    )


def result(test: ResultTest, description: str | None = None) -> Predicate:
    """Match returned values for which ``test(value)`` is true (for example an HTTP 503)."""
    return Predicate(None, test, description or f"returns {getattr(test, '__name__', 'value')}")


Classifier: TypeAlias = (
    Predicate | type[BaseException] | tuple[type[BaseException], ...] | ExceptionTest
)
"""What an ``on=`` option accepts: a predicate, exception class(es), or a test function."""


def as_predicate(value: Classifier) -> Predicate:
    """Normalise any accepted ``on=`` value into a [`Predicate`][failsafe.predicates.Predicate].

    Raises:
        ConfigurationError: If ``value`` is none of the accepted forms.
    """
    from failsafe.exceptions import ConfigurationError

    if isinstance(value, Predicate):
        return value
    if isinstance(value, type):
        return exception(value)
    if isinstance(value, tuple):
        return exception(*value)
    if callable(value):
        return Predicate(value, None, getattr(value, "__name__", "custom test"))
    raise ConfigurationError(
        "on", f"expected a Predicate, exception class(es) or a function, got {value!r}"
    )


def classify(on: Classifier, on_result: ResultTest | None) -> Predicate:
    """Join a policy's ``on`` and ``on_result`` options into one predicate."""
    pred = as_predicate(on)
    return pred if on_result is None else pred | result(on_result)


TRANSIENT: Final[Predicate] = Predicate(
    is_transient,
    None,
    "transient error (ConnectionError, TimeoutError, and those of httpx, requests, aiohttp,"
    " redis, psycopg, aio-pika and grpc)",
)
"""The default of `Retry` and `Failover`: connection errors and timeouts of common clients.

Matches the built-in `ConnectionError` and `TimeoutError` (so failsafe's own
[`TimeoutExceeded`][failsafe.TimeoutExceeded] too), and the connection errors and timeouts
of httpx/httpcore, requests/urllib3, aiohttp, redis-py, psycopg (connection-level only),
aio-pika/aiormq (not a refused login) and grpc (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``),
recognised by class name without importing any of them. The page
[Transient errors](../policies/transient-errors.md) lists every entry and when it is safe
to retry. Narrow or widen it with ``|``, ``&`` and ``~``.

Example:
    ```python
    from failsafe import Retry
    from failsafe.predicates import TRANSIENT, exception

    class ServiceBusy(Exception): ...

    retry = Retry(on=TRANSIENT | exception(ServiceBusy))
    ```
"""

ANY_EXCEPTION: Final[Predicate] = exception(Exception)
"""Every `Exception` (not `BaseException`: cancellation and Ctrl-C always pass through)."""

NOTHING: Final[Predicate] = Predicate(None, None, "nothing")
"""Matches no outcome."""
