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
from types import CoroutineType
from typing import Any, ParamSpec, TypeAlias, TypeVar, overload

from failsafe.exceptions import UsageError

__all__ = ["Policy"]

P = ParamSpec("P")
R = TypeVar("R")

SyncRunner: TypeAlias = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
AsyncRunner: TypeAlias = Callable[
    [Callable[..., Any], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class _AwaitableTypes(dict[type, bool]):
    """Whether instances of a type can be awaited (define ``__await__``), by type.

    A subscript is one dictionary look-up on the success path (``hasattr`` on a type that
    lacks the attribute costs ~200 ns: it raises and clears an AttributeError). At most
    ``_MAX_TYPES`` types are kept; beyond that a new type is checked on every call.
    """

    def __missing__(self, cls: type) -> bool:
        verdict = any("__await__" in vars(c) for c in cls.__mro__)
        if len(self) < _MAX_TYPES:
            self[cls] = verdict
        return verdict


_MAX_TYPES = 1024
_AWAITABLE = _AwaitableTypes()


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The innermost stage of every plain call: run ``fn``, refusing an awaitable it returns.

    A coroutine function given to ``call`` would otherwise "succeed" at once with an
    un-awaited coroutine, and the work would run (if ever) outside every policy.
    """
    value = fn(*args, **kwargs)
    if _AWAITABLE[type(value)]:
        _refuse_awaitable(fn, value)
    return value


def _refuse_awaitable(fn: object, value: Any) -> None:
    close = getattr(value, "close", None)
    if type(value) is CoroutineType and close is not None:
        close()  # never awaited: close it so that Python does not warn about it later
    raise UsageError(
        f"{_name(fn)} returned {type(value).__name__} (an awaitable) under call(), which "
        "cannot await it: use `await policy.call_async(...)` for a coroutine function"
    )


def _invoke_async(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The innermost stage of every async call: run ``fn``, refusing a result it cannot await.

    The policies await what this returns. A plain function given to ``call_async`` has run
    to its end by then (it cannot be stopped), but its result is refused before any policy
    sees it as a failure of the dependency.
    """
    value = fn(*args, **kwargs)
    if type(value) is not CoroutineType and not inspect.isawaitable(value):
        raise UsageError(
            f"{_name(fn)} returned {type(value).__name__}, not an awaitable, under "
            "call_async(): use `policy.call(...)` for a plain function"
        )
    return value


def _is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine.

    True for an ``async def`` function or method, an object whose ``__call__`` is
    ``async def``, and a ``functools.partial`` of one of these.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        return False
    # the class's own __call__ (any class has one: type.__call__, when it defines none)
    return inspect.iscoroutinefunction(type(fn).__call__)


class Policy:
    """A resilience policy: run a function under it, or decorate a function with it.

    Every policy (and every [`Pipeline`][failsafe.Pipeline]) offers the same three entry
    points, for plain functions and for coroutine functions:

    - ``policy.call(fn, *args, **kwargs)``
    - ``await policy.call_async(afn, *args, **kwargs)``
    - ``@policy`` on a ``def`` or an ``async def`` (the signature is kept for type checkers).
    """

    __slots__ = ("_failsafe_async", "_failsafe_sync")

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # ``@Retry`` without parentheses calls ``Retry(fn)``: say so, instead of the unrelated
        # error the options would raise ("seconds must be a finite number, got <function>")
        bare = len(args) == 1 and not kwargs
        if bare and (inspect.isfunction(args[0]) or inspect.ismethod(args[0])):
            raise UsageError(
                f"{cls.__name__} was given the function {_name(args[0])} to build itself: "
                f"to decorate, call it first: @{cls.__name__}(...)"
            )
        return super().__new__(cls)

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
            runner = self._bind_async(_invoke_async)
            object.__setattr__(self, "_failsafe_async", runner)
            return runner

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` under this policy and return its result.

        Raises:
            Exception: Whatever ``fn`` raised, unchanged, when the policy does not handle
                it or gives up; or a [`FailsafeError`][failsafe.FailsafeError] for the
                policy's own decisions (an open circuit, a timeout, a full bulkhead).
            UsageError: When ``fn`` returns an awaitable (a coroutine function belongs in
                ``call_async``); the coroutine is closed and no policy counts the call.
        """
        try:  # inline, not self._runner_sync(): one call frame less on every call
            run = self._failsafe_sync
        except AttributeError:
            run = self._runner_sync()
        return run(fn, args, kwargs)  # type: ignore[no-any-return]

    def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        """Await ``fn(*args, **kwargs)`` under this policy: ``await policy.call_async(fn)``.

        Raises:
            Exception: As [`call`][failsafe.Policy.call].
            UsageError: When ``fn`` returns something that cannot be awaited (a plain
                function belongs in ``call``); no policy counts the call.
        """
        try:
            run = self._failsafe_async
        except AttributeError:
            run = self._runner_async()
        # every async runner is a coroutine function, so this is a coroutine: no extra layer
        return run(fn, args, kwargs)  # type: ignore[return-value]

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, Any]:
        """Decorate a plain or ``async`` function so that every call runs under this policy.

        ``async def`` functions and methods, objects whose ``__call__`` is ``async def`` and
        ``functools.partial`` objects of these are decorated as coroutine functions.
        """
        if _is_async_callable(fn):
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
