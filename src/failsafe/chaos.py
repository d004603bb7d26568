"""`Chaos`: inject faults, latency or substitute results into calls, behind a switch.

Polly's chaos strategies (Simmy), for failsafe: a policy that, on a chosen fraction of
calls, raises an exception instead of calling, waits before calling, or returns a value
instead of calling, so that a team can rehearse a dependency's failures in staging or in
production and watch every other policy (and the people on call) react. It is switched off
unless you switch it on, and a policy switched off for good costs nothing: it binds to the
next stage itself. The guide is [Chaos](../policies/chaos.md).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Final

import attrs

from failsafe import _validators as _v
from failsafe._policy import (
    AsyncRunner,
    Policy,
    SyncRunner,
    _invoke_async,
    _is_async_callable,
    _name,
)
from failsafe._validators import number
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.events import ChaosInjected, Listener, _deliver, _listening
from failsafe.exceptions import ConfigurationError, UsageError

__all__ = ["Chaos"]

_log = logging.getLogger("failsafe.chaos")

# The random source of every Chaos built without ``rng=``
_RNG = random.Random()

_ON: Final = frozenset({"1", "true", "yes", "on"})
_OFF: Final = frozenset({"", "0", "false", "no", "off"})


# -- the injections -------------------------------------------------------------------------
# The injections and the runners that put one in place of a call when a decision says so
# (`_injecting_sync`, `_injecting_async`) are shared with the fault helpers of
# failsafe.testing (issue 17): a `Faulty` callable is the same injector, deciding by call
# number instead of by a random draw, and `with_latency` is the latency injection on
# every call.
class _Injection:
    """What is put in place of a call: ``make`` draws the payload, ``sync``/``async_`` apply it.

    The payload is what one injection injects (an exception instance, seconds, a value); it
    is made once per injection, so that the event can say what was injected.
    """

    __slots__ = ()
    kind: ClassVar[str]

    def make(self) -> Any:
        raise NotImplementedError

    def detail(self, payload: Any) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def sync(
        self, payload: Any, clock: Clock, nxt: SyncRunner, fn: Any, args: Any, kwargs: Any
    ) -> Any:
        raise NotImplementedError

    async def async_(
        self, payload: Any, clock: Clock, nxt: AsyncRunner, fn: Any, args: Any, kwargs: Any
    ) -> Any:
        raise NotImplementedError


class _Fault(_Injection):
    """Raise instead of calling.

    The exception is a class (a new instance each time), an instance (the same one each
    time) or a zero-argument callable that returns one.
    """

    __slots__ = ("exception",)
    kind = "fault"

    def __init__(self, exception: object, option: str = "exception") -> None:
        if isinstance(exception, type):
            if not issubclass(exception, BaseException):
                raise ConfigurationError(
                    option, f"must be an exception class or instance, got the class {exception!r}"
                )
        elif not isinstance(exception, BaseException) and not callable(exception):
            raise ConfigurationError(
                option,
                "must be an exception class, an exception instance or a zero-argument "
                f"callable returning one, got {exception!r}",
            )
        self.exception = exception

    def make(self) -> BaseException:
        spec = self.exception
        if isinstance(spec, BaseException):
            return spec
        made = spec()
        if not isinstance(made, BaseException):
            raise UsageError(
                f"exception: {_name(spec)}() returned {made!r}, not an exception: the factory "
                "given to Chaos.fault must return an exception to raise"
            )
        return made

    def detail(self, payload: BaseException) -> str:
        return type(payload).__name__

    def describe(self) -> str:
        spec = self.exception
        if isinstance(spec, type):
            return f"raises {spec.__name__}"
        if isinstance(spec, BaseException):
            return f"raises {type(spec).__name__}"
        return f"raises what {_name(spec)}() returns"

    def sync(
        self,
        payload: BaseException,
        clock: Clock,
        nxt: SyncRunner,
        fn: Any,
        args: Any,
        kwargs: Any,
    ) -> Any:
        raise payload

    async def async_(
        self,
        payload: BaseException,
        clock: Clock,
        nxt: AsyncRunner,
        fn: Any,
        args: Any,
        kwargs: Any,
    ) -> Any:
        raise payload


class _Latency(_Injection):
    """Wait ``seconds`` on the clock, then call."""

    __slots__ = ("seconds",)
    kind = "latency"

    def __init__(self, seconds: object) -> None:
        _v.check("seconds", seconds, number(at_least=0))
        self.seconds: float = seconds  # type: ignore[assignment]

    def make(self) -> float:
        return self.seconds

    def detail(self, payload: float) -> str:
        return f"{payload:g}s"

    def describe(self) -> str:
        return f"adds {self.seconds:g}s of latency"

    def sync(
        self, payload: float, clock: Clock, nxt: SyncRunner, fn: Any, args: Any, kwargs: Any
    ) -> Any:
        clock.sleep(payload)
        return nxt(fn, args, kwargs)

    async def async_(
        self, payload: float, clock: Clock, nxt: AsyncRunner, fn: Any, args: Any, kwargs: Any
    ) -> Any:
        await clock.sleep_async(payload)
        return await nxt(fn, args, kwargs)


class _Result(_Injection):
    """Return a value (or what a zero-argument callable returns) instead of calling."""

    __slots__ = ("value",)
    kind = "result"

    def __init__(self, value: object) -> None:
        self.value = value

    def make(self) -> Any:
        value = self.value
        return value() if callable(value) else value

    def detail(self, payload: Any) -> str:
        return type(payload).__name__

    def describe(self) -> str:
        value = self.value
        if callable(value):
            return f"returns what {_name(value)}() returns"
        return f"returns {value!r}"

    def sync(
        self, payload: Any, clock: Clock, nxt: SyncRunner, fn: Any, args: Any, kwargs: Any
    ) -> Any:
        return payload

    async def async_(
        self, payload: Any, clock: Clock, nxt: AsyncRunner, fn: Any, args: Any, kwargs: Any
    ) -> Any:
        return payload


Decide = Callable[[Any], object]  # given the function about to be called: inject or not
Announce = Callable[[_Injection, Any], None]  # told of each injection and its payload


def _injecting_sync(
    decide: Decide,
    injection: _Injection,
    clock: Clock,
    nxt: SyncRunner,
    announce: Announce | None = None,
) -> SyncRunner:
    """A runner that puts ``injection`` in place of the call whenever ``decide(fn)`` is true.

    Used by `Chaos` (a random draw decides) and by ``failsafe.testing`` (the call number
    decides).
    """
    make, apply = injection.make, injection.sync

    def inject_sync(fn: Any, args: Any, kwargs: Any) -> Any:
        if decide(fn):
            payload = make()
            if announce is not None:
                announce(injection, payload)
            return apply(payload, clock, nxt, fn, args, kwargs)
        return nxt(fn, args, kwargs)

    return inject_sync


def _injecting_async(
    decide: Decide,
    injection: _Injection,
    clock: Clock,
    nxt: AsyncRunner,
    announce: Announce | None = None,
) -> AsyncRunner:
    """As `_injecting_sync`, for the async driver.

    The runner is a plain function that returns an awaitable: the next stage's own when
    nothing is injected (no coroutine frame of its own on that path: a feature-flag switch
    answering "off" then costs ~80 ns less per call), a coroutine that injects otherwise.
    Every caller awaits what a runner returns; alone, a `Chaos` binds to a coroutine
    function, so that ``call_async`` still returns a coroutine.
    """
    make, apply = injection.make, injection.async_

    def inject_async(fn: Any, args: Any, kwargs: Any) -> Awaitable[Any]:
        if decide(fn):
            payload = make()
            if announce is not None:
                announce(injection, payload)
            return apply(payload, clock, nxt, fn, args, kwargs)
        return nxt(fn, args, kwargs)

    return inject_async


# -- the switch -----------------------------------------------------------------------------
class _EnvSwitch:
    """``Chaos.env(name)``: an environment variable, read once, when this is built."""

    __slots__ = ("on", "raw", "variable")

    def __init__(self, variable: object) -> None:
        if not isinstance(variable, str) or not variable:
            raise ConfigurationError(
                "enabled", f"Chaos.env needs an environment variable's name, got {variable!r}"
            )
        raw = os.environ.get(variable)
        word = "" if raw is None else raw.strip().lower()
        if word not in _ON and word not in _OFF:
            raise ConfigurationError(
                "enabled",
                f"${variable} is {raw!r}: set it to 1, true, yes or on to switch chaos on, "
                "or to 0, false, no, off or nothing (or unset it) to switch it off",
            )
        self.variable = variable
        self.raw = raw
        self.on = word in _ON

    def __call__(self) -> bool:
        """Whether the variable switched chaos on (as read when the switch was built)."""
        return self.on

    def describe(self) -> str:
        if self.raw is None:
            return f"switched off (${self.variable} unset)"
        state = "on" if self.on else "off"
        return f"switched {state} by ${self.variable}={self.raw}"

    def __repr__(self) -> str:
        return f"Chaos.env({self.variable!r})"


def _switch(value: object) -> Callable[[], object] | bool:
    """What the runners test: a constant (``True``/``False``) or a callable to call each time."""
    if isinstance(value, bool):
        return value
    if isinstance(value, _EnvSwitch):
        return value.on
    if callable(value):
        return value
    raise ConfigurationError(
        "enabled",
        "must be True, False, a zero-argument callable (a feature flag, called on each "
        f'call) or Chaos.env("VARIABLE"), got {value!r}',
    )


def _check_enabled(inst: object, attr: Any, value: object) -> None:
    _switch(value)


def _percent(rate: float) -> str:
    return f"{rate * 100:.4g}%"


@attrs.frozen(kw_only=True, eq=False, repr=False)
class Chaos(Policy):
    """On a fraction ``rate`` of calls, inject a fault, latency or a result: when switched on.

    Build one with [`Chaos.fault`][failsafe.chaos.Chaos.fault] (raise instead of calling),
    [`Chaos.latency`][failsafe.chaos.Chaos.latency] (wait, then call) or
    [`Chaos.result`][failsafe.chaos.Chaos.result] (return a value instead of calling).
    ``Chaos()`` alone is ``Chaos.fault(0.001, ConnectionError)``: switched off.

    Each call, while the policy is switched on, draws one number from ``rng``; below
    ``rate``, the injection replaces the call and a
    [`ChaosInjected`][failsafe.events.ChaosInjected] event is emitted. An injected fault is
    raised as the call's own exception would be, so every policy around it reacts as to a
    real failure: put `Chaos` innermost in a pipeline, right around the call.

    Args:
        rate: The fraction of calls injected, from 0 (none) to 1 (every one).
        enabled: The switch; off unless you switch it on. ``False`` (default) or ``True``,
            fixed; a zero-argument callable (a feature flag), called on each call, whose
            truth switches chaos on for that call (one that raises counts as off, and is
            logged on the ``failsafe.chaos`` logger); or
            [`Chaos.env("VARIABLE")`][failsafe.chaos.Chaos.env], an environment variable
            read once, when the policy is built. Switched off for good (``False``, or an
            environment variable that says off), the policy binds to the next stage itself
            and costs nothing per call.
        clock: Where injected latency waits: ``clock.sleep`` under ``call`` (with the real
            clock, a real sleep of the calling thread), ``await clock.sleep_async`` under
            ``call_async``. A [`FakeClock`][failsafe.testing.FakeClock] in tests.
        rng: The random source; ``None`` (default): one generator shared by every `Chaos`
            built without one. Pass a seeded `random.Random` for repeatable runs.
        listeners: Receive a [`ChaosInjected`][failsafe.events.ChaosInjected] event per
            injection.
        name: Names this policy in events and reprs.

    Raises:
        ConfigurationError: At construction, on a ``rate`` outside [0, 1], a switch that is
            none of the above, or an ``rng`` that is not a `random.Random`.

    Under ``call``, a coroutine function is refused with [`UsageError`][failsafe.UsageError]
    even on a call chosen for injection (nothing is injected, no event). Under
    ``call_async``, an injected fault or result replaces the call without calling the
    function, so a plain function given to ``call_async`` is refused on the calls that run.

    Thread-safety: a `Chaos` is immutable and may be shared by any number of threads and
    tasks; each call draws once from ``rng`` (a `random.Random` is safe to share).

    Example:
        ```python
        from failsafe import Chaos

        chaos = Chaos.fault(0.1, ConnectionError, enabled=Chaos.env("FAILSAFE_CHAOS"))
        ```
    """

    rate: float = attrs.field(default=0.001, validator=number(at_least=0, at_most=1))
    enabled: bool | Callable[[], object] = attrs.field(default=False, validator=_check_enabled)
    clock: Clock = SYSTEM_CLOCK
    rng: random.Random | None = attrs.field(default=None, validator=_v.random_source)
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners)
    name: str = "chaos"
    _injection: _Injection = attrs.field(factory=lambda: _Fault(ConnectionError), init=False)
    _switch: Callable[[], object] | bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_switch", _switch(self.enabled))

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def _with(cls, injection: _Injection, rate: float, options: dict[str, Any]) -> Chaos:
        chaos = cls(rate=rate, **options)
        object.__setattr__(chaos, "_injection", injection)  # before anything binds it
        return chaos

    @classmethod
    def fault(
        cls,
        rate: float,
        exception: BaseException | type[BaseException] | Callable[[], BaseException],
        *,
        enabled: bool | Callable[[], object] = False,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        listeners: Sequence[Listener] = (),
        name: str = "chaos",
    ) -> Chaos:
        """On a fraction ``rate`` of calls, raise ``exception`` instead of calling.

        Args:
            rate: The fraction of calls that raise, from 0 to 1.
            exception: An exception class (a new instance each time), an instance (the same
                one each time) or a zero-argument callable that returns one.
            enabled: The switch (see [`Chaos`][failsafe.chaos.Chaos]); off by default.
            clock: Unused by faults; accepted so that every chaos policy is built alike.
            rng: The random source (``None``: the shared one).
            listeners: Receive a [`ChaosInjected`][failsafe.events.ChaosInjected] event
                (``kind="fault"``, ``detail`` the exception's type) per injection.
            name: Names this policy in events and reprs.

        Raises:
            ConfigurationError: On a bad option, or an ``exception`` that is neither an
                exception class, nor an exception, nor a callable.
        """
        options = {"enabled": enabled, "clock": clock, "rng": rng}
        return cls._with(_Fault(exception), rate, {**options, "listeners": listeners, "name": name})

    @classmethod
    def latency(
        cls,
        rate: float,
        seconds: float,
        *,
        enabled: bool | Callable[[], object] = False,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        listeners: Sequence[Listener] = (),
        name: str = "chaos",
    ) -> Chaos:
        """On a fraction ``rate`` of calls, wait ``seconds`` on ``clock``, then call.

        Under ``call`` the calling thread sleeps (``clock.sleep``: for real with the real
        clock); under ``call_async`` the task awaits ``clock.sleep_async``, so an enclosing
        [`Timeout`][failsafe.Timeout] cancels the wait as it would a slow answer.

        Args:
            rate: The fraction of calls delayed, from 0 to 1.
            seconds: How long each injected wait lasts (a finite number >= 0).
            enabled: The switch (see [`Chaos`][failsafe.chaos.Chaos]); off by default.
            clock: Where the wait happens (a [`FakeClock`][failsafe.testing.FakeClock] in
                tests).
            rng: The random source (``None``: the shared one).
            listeners: Receive a [`ChaosInjected`][failsafe.events.ChaosInjected] event
                (``kind="latency"``, ``detail`` such as ``"2s"``) per injection.
            name: Names this policy in events and reprs.

        Raises:
            ConfigurationError: On a bad option, or ``seconds`` negative or not finite.
        """
        options = {"enabled": enabled, "clock": clock, "rng": rng}
        return cls._with(_Latency(seconds), rate, {**options, "listeners": listeners, "name": name})

    @classmethod
    def result(
        cls,
        rate: float,
        value: Any,
        *,
        enabled: bool | Callable[[], object] = False,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        listeners: Sequence[Listener] = (),
        name: str = "chaos",
    ) -> Chaos:
        """On a fraction ``rate`` of calls, return ``value`` instead of calling.

        Args:
            rate: The fraction of calls answered with ``value``, from 0 to 1.
            value: What to return; a callable is called with no argument on each injection
                and its answer returned (to return a callable itself, wrap it:
                ``lambda: handler``).
            enabled: The switch (see [`Chaos`][failsafe.chaos.Chaos]); off by default.
            clock: Unused by results; accepted so that every chaos policy is built alike.
            rng: The random source (``None``: the shared one).
            listeners: Receive a [`ChaosInjected`][failsafe.events.ChaosInjected] event
                (``kind="result"``, ``detail`` the value's type) per injection.
            name: Names this policy in events and reprs.

        Raises:
            ConfigurationError: On a bad option.
        """
        options = {"enabled": enabled, "clock": clock, "rng": rng}
        return cls._with(_Result(value), rate, {**options, "listeners": listeners, "name": name})

    @staticmethod
    def env(variable: str) -> Callable[[], bool]:
        """A switch read from the environment variable ``variable``, once, now.

        ``1``, ``true``, ``yes`` and ``on`` (any case, spaces around ignored) switch chaos
        on; ``0``, ``false``, ``no``, ``off``, an empty value or no variable at all switch
        it off. The variable is read when this is called, that is when the policy is built:
        a policy switched off this way costs nothing per call. To switch chaos at run time,
        pass a callable as ``enabled`` instead (it is called on each call).

        Raises:
            ConfigurationError: Naming ``enabled``, when the variable holds anything else
                (a typo must not leave a rehearsal silently off, nor switch one on).
        """
        return _EnvSwitch(variable)

    # -- what the drivers share ---------------------------------------------------------------
    def _decider(self, *, refuse_coroutines: bool) -> Decide:
        """Whether to inject into this call: the switch, then one draw from the RNG.

        Under ``call``, a coroutine function chosen for injection is run instead (the
        innermost stage refuses it with `UsageError`): a misuse is never injected into.
        """
        switch, rate = self._switch, self.rate
        draw = (self.rng if self.rng is not None else _RNG).random
        misused = _is_async_callable if refuse_coroutines else _never

        if switch is True:

            def decide_on(fn: Any) -> bool:
                return draw() < rate and not misused(fn)

            return decide_on
        assert callable(switch)

        def decide(fn: Any) -> bool:
            try:
                on = switch()
            except Exception:  # a broken feature flag must not fail the call
                _log.warning(
                    "chaos switch %s raised: chaos is off for this call",
                    _name(switch),
                    exc_info=True,
                )
                return False
            return bool(on) and draw() < rate and not misused(fn)

        return decide

    def _announce(self, injection: _Injection, payload: Any) -> None:
        if _listening(self.listeners):  # (``_emit`` takes ``kind`` for the event's class)
            event = ChaosInjected(
                policy=self.name, kind=injection.kind, detail=injection.detail(payload)
            )
            _deliver(self.listeners, event)

    def _off(self) -> bool:
        return self._switch is False

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        if self._off():
            return nxt  # switched off for good: not even a frame on the call's path
        decide = self._decider(refuse_coroutines=True)
        return _injecting_sync(decide, self._injection, self.clock, nxt, self._announce)

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        if self._off():
            return nxt
        decide = self._decider(refuse_coroutines=False)
        return _injecting_async(decide, self._injection, self.clock, nxt, self._announce)

    def _runner_async(self) -> AsyncRunner:
        try:
            return self._failsafe_async
        except AttributeError:
            # call_async hands on what the runner returns, which must be a coroutine: alone,
            # switched off, a chaos policy IS the stage it binds to, and switched on, it
            # returns that stage's awaitable when it injects nothing: give it a coroutine
            # function
            runner = self._bind_async(_as_coroutine)
            object.__setattr__(self, "_failsafe_async", runner)
            return runner

    def describe(self) -> str:
        """Say in words what this chaos policy does, and whether it is switched on."""
        what = self._injection.describe()
        enabled = self.enabled
        if isinstance(enabled, _EnvSwitch):
            switch = enabled.describe()
        elif enabled is True:
            switch = "switched on"
        elif enabled is False:
            switch = "switched off"
        else:
            switch = f"switched by {_name(enabled)}, asked on each call"
        if self._injection.kind == "latency":
            return f"chaos {self.name!r}: {what} to {_percent(self.rate)} of calls, {switch}"
        return f"chaos {self.name!r}: {what} on {_percent(self.rate)} of calls, {switch}"


def _never(fn: object) -> bool:
    return False


async def _as_coroutine(fn: Any, args: Any, kwargs: Any) -> Any:
    """The innermost async stage of a `Chaos` used alone: a coroutine function."""
    return await _invoke_async(fn, args, kwargs)
