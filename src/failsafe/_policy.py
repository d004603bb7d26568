"""The base of every policy: ``call``, ``call_async`` and the decorator, over bound runners.

A policy binds itself around the next stage once (``_bind_sync`` / ``_bind_async``) and gets
back a *runner*: a function ``(fn, args, kwargs) -> result``. Pipelines bind their policies
innermost first, so a call walks through pre-built closures and allocates nothing but the
outcome of a failed attempt. Each policy keeps its decisions in plain methods shared by its
two drivers; only the drivers differ (one sleeps, one awaits).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeAlias, TypeVar, overload

__all__ = ["Policy"]

P = ParamSpec("P")
R = TypeVar("R")

SyncRunner: TypeAlias = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
AsyncRunner: TypeAlias = Callable[
    [Callable[..., Any], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class Policy:
    """A resilience policy: run a function under it, or decorate a function with it.

    Every policy (and every [`Pipeline`][failsafe.Pipeline]) offers the same three entry
    points, for plain functions and for coroutine functions:

    - ``policy.call(fn, *args, **kwargs)``
    - ``await policy.call_async(afn, *args, **kwargs)``
    - ``@policy`` on a ``def`` or an ``async def`` (the signature is kept for type checkers).
    """

    __slots__ = ("_failsafe_async", "_failsafe_sync")

    # -- what subclasses provide -------------------------------------------------------
    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        raise NotImplementedError

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        raise NotImplementedError

    def describe(self) -> str:
        """Say in words what this policy does (pipelines join these in their repr)."""
        raise NotImplementedError

    # -- the entry points --------------------------------------------------------------
    _failsafe_sync: SyncRunner
    _failsafe_async: AsyncRunner

    def _runner_sync(self) -> SyncRunner:
        try:
            return self._failsafe_sync
        except AttributeError:
            runner = self._bind_sync(_invoke)
            object.__setattr__(self, "_failsafe_sync", runner)
            return runner

    def _runner_async(self) -> AsyncRunner:
        try:
            return self._failsafe_async
        except AttributeError:
            runner = self._bind_async(_invoke)
            object.__setattr__(self, "_failsafe_async", runner)
            return runner

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` under this policy and return its result.

        Raises:
            Exception: Whatever ``fn`` raised, unchanged, when the policy does not handle
                it or gives up; or a [`FailsafeError`][failsafe.FailsafeError] for the
                policy's own decisions (an open circuit, a timeout, a full bulkhead).
        """
        return self._runner_sync()(fn, args, kwargs)  # type: ignore[no-any-return]

    def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        """Await ``fn(*args, **kwargs)`` under this policy: ``await policy.call_async(fn)``."""
        # every async runner is a coroutine function, so this is a coroutine: no extra layer
        return self._runner_async()(fn, args, kwargs)  # type: ignore[return-value]

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, Any]:
        """Decorate a plain or ``async`` function so that every call runs under this policy."""
        if inspect.iscoroutinefunction(fn):
            arun = self._runner_async()

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await arun(fn, args, kwargs)

            return async_wrapper
        run = self._runner_sync()

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run(fn, args, kwargs)

        return wrapper

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"
