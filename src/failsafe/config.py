"""Named pipelines from a TOML file, a dict or environment variables, reloaded while running.

A configuration describes pipelines by name, each a table of policies, **outermost first**:

```toml
[budgets.warehouse]
ratio = 0.2

[pipelines.warehouse]
retry = {attempts = 4, backoff = {initial = 0.05, maximum = 1.0}, budget = "warehouse"}
circuit_breaker = {threshold = 5, reset_timeout = 30}
timeout = {seconds = 2.0}
```

[`load`][failsafe.config.load] reads a file (and ``FAILSAFE_<PIPELINE>_<KIND>_<OPTION>``
environment variables), checks every key and value, and returns a
[`Configuration`][failsafe.config.Configuration]: a read-only mapping of
[`ConfiguredPipeline`][failsafe.config.ConfiguredPipeline] objects by name. Keep them: each
is a policy (``call``, ``call_async``, decorator) whose options follow the file.
[`reload`][failsafe.config.Configuration.reload] (or a
[`watch`][failsafe.config.Configuration.watch] of the file) swaps the options of the live
pipelines atomically between calls: a call in flight finishes under the options it started
with, a circuit breaker keeps its state, and a policy whose options did not change is kept
as it is. Any problem raises [`ConfigError`][failsafe.config.ConfigError], which names the
file, the line, the key and its value; a reload that fails changes nothing.

The guide is [Policies from configuration](../configuration.md); ``failsafe config check
FILE`` prints each pipeline in words, or the first problem.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import re
import threading
import tomllib
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final, ParamSpec, TypeVar, overload

from failsafe import _config_build as _build
from failsafe._config_toml import line_of, locate, parse_value, render
from failsafe._policy import (
    AsyncRunner,
    Policy,
    SyncRunner,
    _invoke,
    _invoke_async,
    _is_async_callable,
)
from failsafe.budget import RetryBudget
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.events import Listener
from failsafe.exceptions import ConfigurationError, UsageError
from failsafe.pipeline import Pipeline

__all__ = [
    "KINDS",
    "MAX_FILE_BYTES",
    "ConfigError",
    "Configuration",
    "ConfiguredPipeline",
    "Watch",
    "from_dict",
    "load",
]

P = ParamSpec("P")
R = TypeVar("R")

_log = logging.getLogger("failsafe.config")

KINDS: Final[tuple[str, ...]] = tuple(_build.KINDS)
"""The policy kinds a pipeline may name, each the key of its table of options."""

MAX_FILE_BYTES: Final = 1_048_576
"""The largest configuration file read (1 MiB); a larger one is a `ConfigError`. A poll of a
watched file reads at most this much."""

_ENV_PREFIX: Final = "FAILSAFE_"
# Variables of failsafe's other tools: never an override, even when a pipeline has that name
_OTHER_TOOLS: Final = ("FAILSAFE_ERRORS_", "FAILSAFE_QUEUE_")
_OTHER_VARIABLES: Final = frozenset({"FAILSAFE_CHAOS", "FAILSAFE_ERRORS", "FAILSAFE_QUEUE"})
_MAX_RUNNERS: Final = 64  # bound runners kept per version of a pipeline, per next stage
# bound on the live checks of one pipeline (a check each transport that follows it): dead
# ones are dropped at each add and each reload; past it `_add_check` raises UsageError
_MAX_CHECKS: Final = 1024
_NO_ENVIRONMENT: Final[Mapping[str, str]] = MappingProxyType({})
_NO_VALUE: Final = _build.UNSET


class ConfigError(ConfigurationError):
    """A configuration is wrong: where (file, line), which key, its value, and why.

    The message reads ``failsafe.toml:7: pipelines.warehouse.retry.attempts = 0: must be
    an integer >= 1``. It is also a [`ConfigurationError`][failsafe.ConfigurationError]
    (and a `ValueError`).

    Attributes:
        file: The file as it was given; ``"<dict>"`` for a dict; an environment variable's
            name for a problem in its value.
        line: The line in ``file`` (1-based), or ``None`` (a dict, a variable, an unreadable
            file).
        key: The dotted key (``pipelines.warehouse.retry.attempts``), or ``None`` when the
            problem is the file itself (unreadable, not TOML).
        value: The value as written, or ``None`` when none was (a missing option).
        problem: What is wrong, in words.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str,
        line: int | None = None,
        key: str | None = None,
        value: object = None,
    ) -> None:
        super().__init__(key or file, problem)
        self.file = file
        self.line = line
        self.key = key
        self.value = value
        where = file if line is None else f"{file}:{line}"
        parts = [where]
        if key is not None:
            # a long value (a whole table) is cut: the key says where the rest is
            parts.append(key if value is None else f"{key} = {render(value, limit=200)}")
        parts.append(problem)
        self.args = (": ".join(parts),)


# -- sources -----------------------------------------------------------------------------------
class _Read:
    """One reading of the sources: the data with the overrides applied, and where each key is."""

    def __init__(
        self,
        data: dict[str, Any],
        label: str,
        text: str | None,
        variables: Mapping[_build.Path, str],
        stamp: bytes,
    ) -> None:
        self.data = data
        self.label = label
        self.text = text
        self.variables = variables
        self.stamp = stamp

    def line(self, path: _build.Path) -> int | None:
        """The line ``path`` is written on (the text is scanned only when an error needs it)."""
        return None if self.text is None else line_of(locate(self.text), path)

    def error(self, invalid: _build.Invalid) -> ConfigError:
        """The `ConfigError` of a problem at a key path: its file (or variable) and line."""
        path = invalid.path
        value = None if invalid.value is _NO_VALUE else invalid.value
        key = _build.dotted(path) if path else None
        for end in range(len(path), 0, -1):
            variable = self.variables.get(path[:end])
            if variable is not None:
                return ConfigError(invalid.problem, file=variable, key=key, value=value)
        return ConfigError(
            invalid.problem, file=self.label, line=self.line(path), key=key, value=value
        )


class _Source:
    """Where a configuration comes from; read again by every reload."""

    label: str

    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self._environ = environ

    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def read(self) -> _Read:
        raise NotImplementedError

    def stamp(self) -> bytes:
        """A digest of what a read would see now (the thing `check_for_changes` compares)."""
        raise NotImplementedError

    def _environment_stamp(self) -> bytes:
        pairs = sorted((k, v) for k, v in self.environ().items() if k.startswith(_ENV_PREFIX))
        return json.dumps(pairs).encode()

    def _finish(self, data: dict[str, Any], text: str | None, raw: bytes) -> _Read:
        environ = self.environ()
        variables = _apply_environment(data, environ)
        stamp = hashlib.sha256(raw + b"\0" + self._environment_stamp()).digest()
        return _Read(data, self.label, text, variables, stamp)


class _File(_Source):
    def __init__(self, path: Path, environ: Mapping[str, str] | None) -> None:
        super().__init__(environ)
        self.path = path.absolute()  # read where it was, whatever the working directory becomes
        self.label = str(path)

    def _head(self) -> bytes:
        """The file's bytes, at most one more than `MAX_FILE_BYTES` (a poll reads no more)."""
        with self.path.open("rb") as file:
            return file.read(MAX_FILE_BYTES + 1)

    def _bytes(self) -> bytes:
        try:
            raw = self._head()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the file: {exc.strerror or type(exc).__name__}", file=self.label
            ) from None
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(
                f"is larger than {MAX_FILE_BYTES:,} bytes: not a configuration file",
                file=self.label,
            )
        return raw

    def read(self) -> _Read:
        raw = self._bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"is not UTF-8 text (byte {exc.start})", file=self.label) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            found = re.search(r"\(at line (\d+), column \d+\)", message)
            line = int(found.group(1)) if found else None
            problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
            problem = re.sub(r"\s*\(at end of document\)", " (at the end)", problem)
            raise ConfigError(f"not valid TOML: {problem}", file=self.label, line=line) from None
        return self._finish(data, text, raw)

    def stamp(self) -> bytes:
        try:
            raw = self._head()
        except OSError:
            raw = b"\xff(unreadable)"
        return hashlib.sha256(raw + b"\0" + self._environment_stamp()).digest()


class _Dict(_Source):
    label = "<dict>"

    def __init__(self, data: Mapping[str, Any], environ: Mapping[str, str] | None) -> None:
        super().__init__(environ)
        self.data = data

    def _snapshot(self) -> tuple[dict[str, Any], bytes]:
        data = copy.deepcopy(dict(self.data))
        return data, json.dumps(data, sort_keys=True, default=repr).encode()

    def read(self) -> _Read:
        data, raw = self._snapshot()
        return self._finish(data, None, raw)

    def stamp(self) -> bytes:
        _, raw = self._snapshot()
        return hashlib.sha256(raw + b"\0" + self._environment_stamp()).digest()


def _env_name(name: str) -> str:
    """A pipeline's name as it appears in a variable: upper case, other characters ``_``."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[_build.Path, str]:
    """Apply ``FAILSAFE_<PIPELINE>_<KIND>_<OPTION>`` overrides to ``data``, in place.

    Returns the key path each variable set, by path. Names are matched longest first: with
    pipelines ``orders`` and ``orders_eu``, ``FAILSAFE_ORDERS_EU_RETRY_ATTEMPTS`` is the
    latter's (a variable is taken by the first pipeline whose kind and option it then names).
    """
    pipelines = data.get("pipelines")
    if not isinstance(pipelines, dict) or not pipelines:
        return {}
    by_env: dict[str, list[str]] = {}
    for name in pipelines:
        by_env.setdefault(_env_name(name), []).append(name)
    names = sorted(by_env, key=len, reverse=True)
    kinds = sorted(_build.KINDS, key=len, reverse=True)
    variables: dict[_build.Path, str] = {}
    for variable in sorted(environ):
        if not variable.startswith(_ENV_PREFIX):
            continue
        rest = variable[len(_ENV_PREFIX) :]
        candidates = [n for n in names if rest == n or rest.startswith(n + "_")]
        if not candidates:
            continue
        found: tuple[str, str, str] | None = None
        problem = ""
        for env_name in candidates:
            owners = by_env[env_name]
            tail = rest[len(env_name) + 1 :]
            outcome = _kind_option(tail, pipelines[owners[0]], kinds, owners[0])
            if isinstance(outcome, tuple):
                if len(owners) > 1:
                    problem = f"names {len(owners)} pipelines ({', '.join(owners)})"
                    break
                found = (owners[0], *outcome)
                break
            problem = problem or outcome
        if found is None:
            if variable.startswith(_OTHER_TOOLS) or variable in _OTHER_VARIABLES:
                continue  # another failsafe tool's variable
            raise ConfigError(problem, file=variable, value=environ[variable])
        pipeline, kind, option = found
        options = pipelines[pipeline][kind]
        if isinstance(options, dict):  # else the build says what the table should be
            options[option] = parse_value(environ[variable])
            variables["pipelines", pipeline, kind, option] = variable
    return variables


def _kind_option(
    tail: str, table: object, kinds: Sequence[str], pipeline: str
) -> tuple[str, str] | str:
    """The (kind, option) a variable's tail names in one pipeline, or why it names none."""
    if not tail:
        return (
            f"names the pipeline {pipeline!r} but no policy and option: "
            f"FAILSAFE_{_env_name(pipeline)}_<KIND>_<OPTION>, such as "
            f"FAILSAFE_{_env_name(pipeline)}_RETRY_ATTEMPTS"
        )
    policies = table if isinstance(table, dict) else {}
    present = [k.upper() for k in policies if k in _build.KINDS]
    for kind in kinds:
        upper = kind.upper()
        if tail == upper or tail.startswith(upper + "_"):
            if kind not in policies:
                return (
                    f"pipeline {pipeline!r} has no {kind} (an override sets an option of a "
                    f"policy the file has; its policies: {', '.join(present) or 'none'})"
                )
            option_part = tail[len(upper) + 1 :]
            options = list(_build.KINDS[kind].options)
            if option_part.lower() in options:
                return kind, option_part.lower()
            if not option_part:
                return f"names {kind} of pipeline {pipeline!r} but no option"
            upper_options = [o.upper() for o in options]
            return (
                f"{kind} has no option {option_part}{_build.suggest(option_part, upper_options)}"
                f"; its options: {', '.join(upper_options)}"
            )
    first = tail.split("_", 1)[0]
    return (
        f"no policy of pipeline {pipeline!r} in {tail}"
        f"{_build.suggest(first, present)} (its policies: {', '.join(present) or 'none'})"
    )


# -- the reloadable pipeline -----------------------------------------------------------------------
class _Version:
    """One version of a configured pipeline: the pipeline, and its runners as they are bound."""

    __slots__ = ("async_runners", "number", "pipeline", "sync_runners")

    def __init__(self, number: int, pipeline: Pipeline) -> None:
        self.number = number
        self.pipeline = pipeline
        self.sync_runners: dict[SyncRunner, SyncRunner] = {}
        self.async_runners: dict[AsyncRunner, AsyncRunner] = {}

    def sync(self, nxt: SyncRunner) -> SyncRunner:
        run = self.sync_runners.get(nxt)
        if run is None:
            run = self.pipeline._bind_sync(nxt)
            if len(self.sync_runners) < _MAX_RUNNERS:
                run = self.sync_runners.setdefault(nxt, run)
        return run

    def async_(self, nxt: AsyncRunner) -> AsyncRunner:
        run = self.async_runners.get(nxt)
        if run is None:
            run = self.pipeline._bind_async(nxt)
            if len(self.async_runners) < _MAX_RUNNERS:
                run = self.async_runners.setdefault(nxt, run)
        return run


class ConfiguredPipeline(Policy):
    """A pipeline of a [`Configuration`][failsafe.config.Configuration], by name: keep it.

    It is a policy like any other (``call``, ``call_async``, ``@pipeline``) and its repr is
    that of the [`Pipeline`][failsafe.Pipeline] it runs now. A reload that changes its
    policies swaps that pipeline for a new one in a single reference assignment:

    - a call reads the pipeline once, when it starts, and runs to its end under it (its
      retries, its breaker, its timeout): a call never mixes the old and the new policies;
    - the next call runs under the new pipeline;
    - a function decorated with it follows the reloads too.

    A call costs what the same [`Pipeline`][failsafe.Pipeline] built in code costs: the
    entry points read the current pipeline's bound runner, and nothing else.

    Thread-safety: safe to share between threads and asyncio tasks; a lock is taken only
    to bind the runners after a reload, never during a call.
    """

    __slots__ = ("__weakref__", "_checks", "_lock", "_version", "name")

    def __init__(self, name: str, pipeline: Pipeline) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._version = _Version(1, pipeline)
        # what a reload asks before it swaps this pipeline (see _add_check), held weakly
        self._checks: list[weakref.ref[Callable[[Pipeline], None]]] = []

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline that calls starting now run under."""
        return self._version.pipeline

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The policies of the current pipeline, outermost first."""
        return self._version.pipeline.policies

    @property
    def version(self) -> int:
        """1 when loaded, plus one for each reload that changed this pipeline."""
        return self._version.number

    # -- checks a reload runs before it swaps the pipeline ------------------------------------
    def _add_check(self, check: Callable[[Pipeline], None]) -> None:
        """Have every reload ask ``check`` before it swaps this pipeline for a new one.

        ``check(candidate)`` raises [`ConfigurationError`][failsafe.ConfigurationError]
        when its owner (a transport that follows this pipeline) cannot run ``candidate``;
        the reload then fails, changing nothing. A transport registers one so that a reload
        it would refuse is refused for everyone.

        The check is held by weak reference (a bound method by ``weakref.WeakMethod``): it
        neither keeps its owner alive nor runs once its owner is gone. Bounded: dead checks
        are dropped at each add and each reload, and at most 1024 live ones are held.

        Raises:
            UsageError: When 1024 live checks are held already (that many transports follow
                one pipeline: share one client).
        """
        ref: weakref.ref[Callable[[Pipeline], None]] = (
            weakref.WeakMethod(check) if inspect.ismethod(check) else weakref.ref(check)
        )
        with self._lock:
            live = [r for r in self._checks if r() is not None]
            if len(live) >= _MAX_CHECKS:
                raise UsageError(
                    f"pipeline {self.name!r} has {len(live)} live checks (a check each "
                    f"transport that follows it), the most it holds: share a client"
                )
            live.append(ref)
            self._checks = live

    def _remove_check(self, check: Callable[[Pipeline], None]) -> None:
        """Forget ``check`` (added by `_add_check`); nothing when it is not held."""
        with self._lock:
            self._checks = [r for r in self._checks if r() is not None and r() != check]

    def _run_checks(self, candidate: Pipeline) -> None:
        """Ask every live check whether ``candidate`` may replace the pipeline (oldest first).

        Raises:
            ConfigurationError: The first check's refusal (the others are not asked).
        """
        with self._lock:  # the list is replaced, never changed in place: a snapshot
            self._checks = [r for r in self._checks if r() is not None]
            refs = self._checks
        for ref in refs:
            check = ref()
            if check is not None:  # its owner may have gone since the snapshot
                check(candidate)

    def _swap(self, pipeline: Pipeline) -> None:
        """Make ``pipeline`` the one calls starting from now on run under."""
        with self._lock:
            version = _Version(self._version.number + 1, pipeline)
            self._version = version
            # bound now, so that the first calls after a reload find their runner ready
            try:
                object.__setattr__(self, "_failsafe_sync", version.sync(_invoke))
            except Exception:  # such as an async fallback handler: call() raises at each call
                _unset(self, "_failsafe_sync")
            try:
                object.__setattr__(self, "_failsafe_async", version.async_(_invoke_async))
            except Exception:
                _unset(self, "_failsafe_async")

    # -- binding ----------------------------------------------------------------------------
    def _runner_sync(self) -> SyncRunner:
        with self._lock:  # a reload swaps the version and the runners under this lock
            try:
                return self._failsafe_sync
            except AttributeError:
                run = self._version.sync(_invoke)
                object.__setattr__(self, "_failsafe_sync", run)
                return run

    def _runner_async(self) -> AsyncRunner:
        with self._lock:
            try:
                return self._failsafe_async
            except AttributeError:
                run = self._version.async_(_invoke_async)
                object.__setattr__(self, "_failsafe_async", run)
                return run

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        # inside another policy: each call reads the current version once
        holder = self

        def configured_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            return holder._version.sync(nxt)(fn, args, kwargs)

        return configured_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        holder = self

        async def configured_async(fn: Any, args: Any, kwargs: Any) -> Any:
            return await holder._version.async_(nxt)(fn, args, kwargs)

        return configured_async

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, Any]:
        """Decorate a plain or ``async`` function; every call runs under the current pipeline."""
        holder = self
        if _is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                try:
                    run = holder._failsafe_async
                except AttributeError:
                    run = holder._runner_async()
                return await run(fn, args, kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                run = holder._failsafe_sync
            except AttributeError:
                run = holder._runner_sync()
            return run(fn, args, kwargs)

        return wrapper

    def describe(self) -> str:
        """Say in words what the current pipeline does."""
        return self._version.pipeline.describe()

    def __repr__(self) -> str:
        return repr(self._version.pipeline)


def _unset(obj: object, attr: str) -> None:
    with contextlib.suppress(AttributeError):
        object.__delattr__(obj, attr)


# -- the configuration ---------------------------------------------------------------------------
class Configuration(Mapping[str, ConfiguredPipeline]):
    """The pipelines of a configuration, by name, in the order they are written.

    Build one with [`load`][failsafe.config.load] or
    [`from_dict`][failsafe.config.from_dict]. Each value is a
    [`ConfiguredPipeline`][failsafe.config.ConfiguredPipeline] that stays the same object
    for the life of the configuration: keep it, and reloads change what it does.

    **Reload.** [`reload`][failsafe.config.Configuration.reload] reads the sources again
    (the file and the environment variables), builds the new configuration beside the
    running one, and, only if all of it is valid, swaps each changed pipeline. For each
    policy, by kind and name:

    - options unchanged: the running object is kept as it is (a bulkhead's slots, a rate
      limiter's buckets, a budget's counts, a breaker's state all go on);
    - a circuit breaker (plain or keyed) whose options changed is built new and takes over
      the old one's state (see the guide for what is kept);
    - any other policy whose options changed is built new and starts afresh (a new bulkhead
      counts from zero while the calls in the old one finish, so for a moment up to both
      limits run).

    A pipeline gone from the file is an error (the program holds it): the reload changes
    nothing. So is any invalid key or value, and so is a new version that a user of the
    pipeline refuses: an HTTP transport given a pipeline as ``policies=`` checks each new
    version before anything is swapped (a ``fallback`` added to its pipeline, say, is
    refused). A failed reload is raised and logged on the ``failsafe.config`` logger; a
    successful one logs which pipelines changed.

    Thread-safety: reads are safe from any thread or task; reloads are serialised by a
    lock, and a pipeline's swap is one reference assignment.
    """

    def __init__(
        self,
        source: _Source,
        *,
        clock: Clock = SYSTEM_CLOCK,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self._source = source
        self._clock = clock
        self._listeners = tuple(listeners)
        self._reload_lock = threading.RLock()
        self._pipelines: dict[str, ConfiguredPipeline] = {}
        self._index: dict[tuple[str, str], _build.Built] = {}
        self._budgets: dict[str, _build.Built] = {}
        self._stamp = b""
        self._watch: Watch | None = None
        read = source.read()
        self._stamp = read.stamp
        plan = self._plan(read)
        for name, policies in plan.pipelines.items():
            self._pipelines[name] = ConfiguredPipeline(name, Pipeline(*policies, name=name))
        self._index = plan.context.built
        self._budgets = plan.context.budgets

    # -- the mapping -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> ConfiguredPipeline:
        return self._pipelines[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pipelines)

    def __len__(self) -> int:
        return len(self._pipelines)

    def __repr__(self) -> str:
        names = ", ".join(self._pipelines) or "no pipeline"
        return f"<Configuration from {self._source.label}: {names}>"

    @property
    def source(self) -> str:
        """Where the configuration is read from: the file as given, or ``"<dict>"``."""
        return self._source.label

    @property
    def budgets(self) -> Mapping[str, RetryBudget]:
        """The retry budgets of ``[budgets]``, by name (as of the last successful load)."""
        return MappingProxyType({name: b.obj for name, b in self._budgets.items()})

    # -- building and reloading ------------------------------------------------------------------
    def _plan(self, read: _Read) -> _build.Plan:
        ctx = _build.Context(
            clock=self._clock,
            listeners=self._listeners,
            old=self._index,
            old_budgets=self._budgets,
        )
        try:
            plan = _build.build(read.data, ctx)
        except _build.Invalid as invalid:
            _build.forget(ctx.created)  # nothing built for this attempt will serve
            raise read.error(invalid) from None
        except BaseException:
            _build.forget(ctx.created)
            raise
        gone = [name for name in self._pipelines if name not in plan.pipelines]
        if gone:
            _build.forget(ctx.created)
            raise ConfigError(
                "is gone from the configuration, but the program holds this pipeline: put it "
                "back (a running pipeline cannot be removed; restart the program to drop it)",
                file=read.label,
                key=_build.dotted(("pipelines", gone[0])),
            )
        return plan

    def reload(self) -> tuple[str, ...]:
        """Read the sources again and swap the pipelines that changed, all or nothing.

        Returns:
            The names of the pipelines that changed or were added, in file order (empty
            when nothing changed).

        Raises:
            ConfigError: When anything is wrong (an invalid key or value, a pipeline
                removed, an unreadable file, a new version that a transport following
                that pipeline cannot run); nothing changes, and the error is also logged
                on the ``failsafe.config`` logger.
        """
        with self._reload_lock:
            try:
                read = self._source.read()
            except ConfigError as exc:
                self._stamp = self._source.stamp()
                _log.error("reload failed, the running configuration is kept: %s", exc)
                raise
            self._stamp = read.stamp
            try:
                plan = self._plan(read)
                candidates = self._vet(plan, read)
            except ConfigError as exc:
                _log.error("reload failed, the running configuration is kept: %s", exc)
                raise
            changed = self._commit(plan, candidates)
        if changed:
            _log.info("%s: reloaded; pipelines changed: %s", self.source, ", ".join(changed))
        else:
            _log.info("%s: reloaded; no pipeline changed", self.source)
        return changed

    def _vet(self, plan: _build.Plan, read: _Read) -> dict[str, Pipeline]:
        """The new pipeline of each changed one, once the checks of its users accept it.

        Each running pipeline whose policies change gets its candidate built and shown to
        the checks registered on it (`ConfiguredPipeline._add_check`: the transports that
        follow it), in file order, before anything is swapped.

        Raises:
            ConfigError: A check refused a candidate (or failed): its pipeline's key and
                table line, and the refusal; nothing built for this reload is kept.
        """
        candidates: dict[str, Pipeline] = {}
        for name, policies in plan.pipelines.items():
            holder = self._pipelines.get(name)
            if holder is None or _same(holder.policies, policies):
                continue  # a new pipeline has no users yet; an unchanged one is not swapped
            candidate = candidates[name] = Pipeline(*policies, name=name)
            problem = None
            try:
                holder._run_checks(candidate)
            except ConfigurationError as exc:
                problem = f"a user of this pipeline cannot run the new version: {exc}"
            except Exception as exc:  # a failing check: its type only (a message may hold anything)
                problem = (
                    "checking the new version with a user of this pipeline raised "
                    f"{type(exc).__module__}.{type(exc).__qualname__}"
                )
            if problem is not None:
                # raised here, not in the handler: the refusal's frames hold the transport,
                # which a kept ConfigError (its __context__) would keep alive
                _build.forget(plan.context.created)  # nothing built for this reload serves
                path = ("pipelines", name)
                raise ConfigError(
                    problem, file=read.label, line=read.line(path), key=_build.dotted(path)
                )
        return candidates

    def _commit(self, plan: _build.Plan, candidates: Mapping[str, Pipeline]) -> tuple[str, ...]:
        """Make a built (and vetted) configuration the running one (it cannot fail)."""
        ctx = plan.context
        # breakers first: a call that meets a new breaker finds the old one's state in it
        for new, old in ctx.takeovers:
            new._take_over(old)
        changed = []
        pipelines: dict[str, ConfiguredPipeline] = {}
        for name, policies in plan.pipelines.items():
            holder = self._pipelines.get(name)
            if holder is None:
                holder = ConfiguredPipeline(name, Pipeline(*policies, name=name))
                changed.append(name)
            elif name in candidates:
                holder._swap(candidates[name])
                changed.append(name)
            pipelines[name] = holder
        serving = {id(b.obj) for b in ctx.built.values()} | {
            id(b.obj) for b in ctx.budgets.values()
        }
        retired = [
            b.obj
            for b in [*self._index.values(), *self._budgets.values()]
            if id(b.obj) not in serving
        ]
        _build.forget(retired)  # health and metrics list only what serves
        self._pipelines = pipelines
        self._index = ctx.built
        self._budgets = ctx.budgets
        return tuple(changed)

    def check_for_changes(self) -> bool:
        """Reload if the sources changed since they were last read; what a watch calls.

        One poll: the file is read and its SHA-256 (with the ``FAILSAFE_*`` environment
        variables) compared with the last reading, whether that reading loaded or failed,
        so a bad file is reported once, not at every poll.

        Returns:
            Whether the sources had changed and the reload succeeded.

        Raises:
            ConfigError: When the sources changed and the new configuration is wrong
                (nothing changes; the error is logged too).
        """
        with self._reload_lock:
            if self._source.stamp() == self._stamp:
                return False
            self.reload()
            return True

    def watch(self, interval: float = 2.0, *, clock: Clock = SYSTEM_CLOCK) -> Watch:
        """Poll the sources every ``interval`` seconds on a daemon thread; reload on a change.

        A change that does not load is logged on the ``failsafe.config`` logger and the
        running configuration is kept; the next change is tried again. Close the watch
        (``close()``, or use it as a context manager) to stop the thread.

        Args:
            interval: Seconds between two polls (> 0). Each poll reads the file once.
            clock: Measures the interval. With a [`FakeClock`][failsafe.testing.FakeClock]
                the thread polls each time the fake time passes another interval.

        Raises:
            ConfigurationError: On a bad ``interval``.
            UsageError: When a watch of this configuration is already running.
        """
        if not (
            isinstance(interval, int | float)
            and not isinstance(interval, bool)
            and math.isfinite(interval)
            and interval > 0
        ):
            raise ConfigurationError("interval", f"must be a finite number > 0, got {interval!r}")
        with self._reload_lock:
            if self._watch is not None and self._watch.running:
                raise UsageError(
                    f"{self.source} is already watched: close that watch before another"
                )
            self._watch = Watch(self, interval, clock)
        return self._watch


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class Watch:
    """A daemon thread that polls a configuration's sources and reloads on a change.

    Returned by [`Configuration.watch`][failsafe.config.Configuration.watch]. It holds one
    thread and one timer; ``close()`` stops both and waits for the thread to end (at most
    the time a poll takes).
    """

    def __init__(self, config: Configuration, interval: float, clock: Clock) -> None:
        self._config = config
        self._interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"failsafe-config-watch {config.source}", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the thread is polling."""
        return self._thread.is_alive() and not self._stop.is_set()

    def _wait(self) -> None:
        call_at = getattr(self._clock, "call_at", None)
        if call_at is None:  # real time: an Event so that close() wakes the thread at once
            self._stop.wait(self._interval)
            return
        # a fake clock: wait until its time passes the interval (or close() wakes us)
        self._wake.clear()
        if self._stop.is_set():
            return
        timer = call_at(self._clock.monotonic() + self._interval, self._wake.set)
        try:
            self._wake.wait()
        finally:
            timer.cancel()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wait()
            if self._stop.is_set():
                return
            try:
                self._config.check_for_changes()
            except ConfigError:
                pass  # logged by reload; the running configuration goes on
            except Exception:  # never let the thread die: the next poll tries again
                _log.exception("%s: polling the configuration failed", self._config.source)

    def close(self) -> None:
        """Stop polling and wait for the thread to end."""
        self._stop.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "closed"
        return f"<Watch of {self._config.source} every {self._interval:g}s, {state}>"


# -- entry points ---------------------------------------------------------------------------------
def load(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    listeners: Sequence[Listener] = (),
) -> Configuration:
    """Load the pipelines of a TOML file (with environment overrides); check everything.

    Args:
        path: The TOML file.
        environ: Where ``FAILSAFE_<PIPELINE>_<KIND>_<OPTION>`` overrides are read: ``None``
            (default) for ``os.environ`` (read again at each reload), a mapping of your
            own, or ``{}`` for none.
        clock: The clock of every policy and budget built (a
            [`FakeClock`][failsafe.testing.FakeClock] in tests).
        listeners: Given to every policy built (receive their
            [`events`][failsafe.events]).

    Returns:
        The configuration: a mapping of pipelines by name.

    Raises:
        ConfigError: At the first problem: an unreadable file, bad TOML, an unknown table,
            kind or option, a value of the wrong type or out of range, an import string
            that does not import, two policies of a kind with one name, a bad override.
    """
    return Configuration(_File(Path(path), environ), clock=clock, listeners=listeners)


def from_dict(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = _NO_ENVIRONMENT,
    clock: Clock = SYSTEM_CLOCK,
    listeners: Sequence[Listener] = (),
) -> Configuration:
    """Load the pipelines of a dict shaped as the TOML file is (``{"pipelines": {...}}``).

    The dict is copied at each (re)load: change it, then call ``reload()``. Errors name
    ``<dict>`` as their file, with no line.

    Args:
        data: The configuration, as ``tomllib`` would return the file.
        environ: Where overrides are read: ``{}`` (default) for none, ``None`` for
            ``os.environ``, or a mapping of your own.
        clock: The clock of every policy and budget built.
        listeners: Given to every policy built.

    Raises:
        ConfigError: As [`load`][failsafe.config.load].
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a mapping, got {type(data).__name__}", file="<dict>")
    return Configuration(_Dict(data, environ), clock=clock, listeners=listeners)
