"""`Fallback`: answer with a value (or a function's answer) when the operation fails."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner, _is_async_callable
from failsafe.events import FallbackUsed, Listener, _emit
from failsafe.exceptions import ConfigurationError, UsageError
from failsafe.outcome import Outcome
from failsafe.predicates import (
    ANY_EXCEPTION,
    Classifier,
    Predicate,
    ResultTest,
    classify,
)

__all__ = ["NO_VALUE", "Fallback"]


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Final = _NoValue()
"""``Fallback``'s ``value`` when none is given (a ``handler`` answers instead).

A marker of its own, since ``None`` is a fine replacement value."""


@attrs.frozen(repr=False)
class Fallback(Policy):
    """Replace a failed outcome by ``value``, or by what ``handler(outcome)`` returns.

    Exactly one of ``value`` and ``handler`` is given. Under ``call_async`` the handler may be
    a coroutine function; under ``call`` it must be a plain function (an ``async`` handler
    there raises [`UsageError`][failsafe.UsageError] before the operation runs, as does a
    handler that returns an awaitable). If the handler raises, its exception reaches the
    caller (with the original failure as its ``__context__``).

    Args:
        value: The value to return instead of the failure (`NO_VALUE`, the default: none;
            give ``handler`` then).
        handler: A function of the failed [`Outcome`][failsafe.Outcome] that returns the
            replacement.
        on: Which exceptions to replace (default: every `Exception`, including failsafe's
            own, such as an open circuit).
        on_result: A test on returned values; a true result is replaced too.
        listeners: Receive a [`FallbackUsed`][failsafe.events.FallbackUsed] event.
        name: Names this policy in events and reprs.

    Raises:
        ConfigurationError: If neither or both of ``value`` and ``handler`` are given.

    Example:
        ```python
        from failsafe import Fallback, Pipeline, Retry

        prices = Pipeline(Fallback({"price": None}), Retry())
        ```
    """

    value: Any = NO_VALUE
    handler: Callable[[Outcome[Any]], Any] | None = attrs.field(default=None, kw_only=True)
    on: Classifier = attrs.field(default=ANY_EXCEPTION, kw_only=True)
    on_result: ResultTest | None = attrs.field(default=None, kw_only=True)
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners, kw_only=True)
    name: str = attrs.field(default="fallback", kw_only=True)
    _predicate: Predicate = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if (self.value is NO_VALUE) == (self.handler is None):
            raise ConfigurationError("value", "give exactly one of value and handler")
        if self.handler is not None and not callable(self.handler):
            raise ConfigurationError("handler", f"must be callable, got {self.handler!r}")
        object.__setattr__(self, "_predicate", classify(self.on, self.on_result))

    def _replace(self, outcome: Outcome[Any]) -> Any:
        _emit(self.listeners, FallbackUsed, policy=self.name, outcome=outcome)
        if self.handler is None:
            return self.value
        return self.handler(outcome)

    def _replace_sync(self, outcome: Outcome[Any]) -> Any:
        value = self._replace(outcome)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited: close it so that Python does not warn later
            raise UsageError(self._async_handler())
        return value

    def _async_handler(self) -> str:
        return (
            f"handler: {self.handler!r} is asynchronous (it returns an awaitable), which "
            "call() cannot await: use `await policy.call_async(...)`, or a plain handler"
        )

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        if _is_async_callable(self.handler):
            raise UsageError(self._async_handler())
        matches_exception, matches_result = self._predicate.tests()
        replace = self._replace_sync

        def fallback_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            try:
                value = nxt(fn, args, kwargs)
            except Exception as exc:
                if not matches_exception(exc):
                    raise
                return replace(Outcome(exception=exc))
            if matches_result is not None and matches_result(value):
                return replace(Outcome(value))
            return value

        return fallback_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        matches_exception, matches_result = self._predicate.tests()
        replace = self._replace

        async def fallback_async(fn: Any, args: Any, kwargs: Any) -> Any:
            try:
                value = await nxt(fn, args, kwargs)
            except Exception as exc:
                if not matches_exception(exc):
                    raise
                # awaited inside the except block, so a failing handler chains the original
                return await _resolved(replace(Outcome(exception=exc)))
            if matches_result is not None and matches_result(value):
                return await _resolved(replace(Outcome(value)))
            return value

        return fallback_async

    def describe(self) -> str:
        """Say in words what this fallback does."""
        what = f"value {self.value!r}" if self.handler is None else "a handler"
        return f"fallback {self.name!r}: {what} when the call {self._predicate}"


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
