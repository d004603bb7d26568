"""The policies a configuration describes: each kind's options, checked, then built.

`build` turns the data of a configuration (a dict, as ``tomllib`` returns it) into policy
objects, reusing the running configuration's objects whose kind, name and options are
unchanged. Every problem raises `Invalid` with the key path, the value as written and what
is wrong; `failsafe.config` adds the file and the line. The options of a kind are the plain
data options of its constructor; the constructor itself validates their values, and its
`ConfigurationError` is mapped back onto the key that was written.
"""

from __future__ import annotations

import builtins
import difflib
import importlib
import os
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final

import attrs

from failsafe import _registry
from failsafe._policy import Policy
from failsafe.adaptive_concurrency import AIMD, AdaptiveConcurrency, Gradient
from failsafe.backoff import Backoff
from failsafe.budget import RetryBudget
from failsafe.bulkhead import Bulkhead
from failsafe.chaos import Chaos
from failsafe.circuit_breaker import (
    CircuitBreaker,
    ConsecutiveFailures,
    FailureRate,
    KeyedCircuitBreaker,
)
from failsafe.clock import Clock
from failsafe.events import Listener
from failsafe.exceptions import ConfigurationError
from failsafe.failover import Failover
from failsafe.fallback import NO_VALUE, Fallback
from failsafe.hedging import Hedging, Percentile
from failsafe.pipeline import Pipeline
from failsafe.predicates import Predicate, as_predicate
from failsafe.rate_limiter import RateLimiter
from failsafe.retry import Retry
from failsafe.timeout import Timeout

Path = tuple[str | int, ...]

NONE: Final = "none"  # TOML has no null: this string stands for None where an option takes it


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()  # no value was written (a missing option)


class Invalid(Exception):
    """A configuration problem at ``path``: ``value`` (as written, or `UNSET`) and why."""

    def __init__(self, path: Path, problem: str, value: object = UNSET) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem
        self.value = value


def dotted(path: Path) -> str:
    """A key path as written in TOML (``pipelines.warehouse.retry.attempts``)."""
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            parts.append(part)
        else:
            parts.append('"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return ".".join(parts)


def suggest(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean x?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close and len(word) >= 3:  # an abbreviation: "expo" for "exponential"
        close = [c for c in choices if c.startswith(word)][:1]
    return f" (did you mean {close[0]}?)" if close else ""


class Same:
    """Compares by identity: an object's place in a fingerprint (policies are often ``==``)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def freeze(value: object) -> Hashable:
    """A hashable, comparable form of a TOML value (for fingerprints)."""
    if isinstance(value, Mapping):
        return ("table", tuple((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("array", tuple(freeze(v) for v in value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, Hashable):
        return value
    return repr(value)  # pragma: no cover - TOML values are hashable


# -- what a build produces ---------------------------------------------------------------------
@attrs.define
class Built:
    """One policy (or budget) of a build: what it was built from, and the object."""

    kind: str
    name: str
    path: Path
    parts: dict[str, Hashable]  # the fingerprint of each option as written
    obj: Any

    @property
    def fingerprint(self) -> tuple[str, tuple[tuple[str, Hashable], ...]]:
        return self.kind, tuple(sorted(self.parts.items()))


@attrs.define
class Context:
    """What a build uses and what it produces besides the policies."""

    clock: Clock
    listeners: tuple[Listener, ...]
    old: Mapping[tuple[str, str], Built] = attrs.field(factory=dict)
    old_budgets: Mapping[str, Built] = attrs.field(factory=dict)
    budgets: dict[str, Built] = attrs.field(factory=dict)
    built: dict[tuple[str, str], Built] = attrs.field(factory=dict)
    created: list[object] = attrs.field(factory=list)
    takeovers: list[tuple[Any, Any]] = attrs.field(factory=list)


@attrs.define
class Plan:
    """A configuration built: its pipelines' policies, outermost first, and its budgets."""

    pipelines: dict[str, tuple[Policy, ...]]
    context: Context


# -- option types: each checks a value as written, and returns (Python value, fingerprint) ----
Resolver = Callable[[Any, Path, Context, str], tuple[Any, Hashable]]
Parts = Mapping[str, Hashable]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(test: Callable[[object], bool], wanted: str) -> Resolver:
    def resolve(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
        if not test(value):
            raise Invalid(path, f"must be {wanted}", value)
        return value, freeze(value)

    return resolve


INT = _plain(_is_int, "an integer")
NUMBER = _plain(_is_number, "a number")
BOOL = _plain(lambda v: isinstance(v, bool), "true or false")
STRING = _plain(lambda v: isinstance(v, str) and bool(v), "a non-empty string")
ANY = _plain(lambda v: True, "a value")


def nullable(resolver: Resolver) -> Resolver:
    """Also accept ``"none"`` (TOML has no null) for ``None``."""

    def resolve(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
        if value == NONE:
            return None, NONE
        try:
            return resolver(value, path, ctx, prefix)
        except Invalid as exc:
            raise Invalid(path, f'{exc.problem} (or "{NONE}")', value) from None

    return resolve


def import_object(text: object, path: Path) -> Any:
    """Resolve an import string ``"package.module:name"`` (a bare name: a built-in)."""
    if not isinstance(text, str) or not text:
        raise Invalid(path, 'must be an import string "package.module:name"', text)
    module_name, colon, attribute = text.partition(":")
    if not colon:
        if text.isidentifier() and hasattr(builtins, text):
            return getattr(builtins, text)
        raise Invalid(
            path,
            'must be an import string "package.module:name" (only a built-in, such as '
            "ConnectionError, is named without its module)",
            text,
        )
    if not module_name or not attribute:
        raise Invalid(path, 'must be an import string "package.module:name"', text)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise Invalid(path, f"cannot import {module_name}: {exc}", text) from None
    except Exception as exc:  # the module's own code failed: its type, not its message
        raise Invalid(path, f"importing {module_name} raised {type(exc).__name__}", text) from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise Invalid(
                path, f"{module_name} has no {attribute}{suggest(part, names)}", text
            ) from None
    return obj


def _callable(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    obj = import_object(value, path)
    if not callable(obj):
        raise Invalid(path, f"names a {type(obj).__name__}, not a function", value)
    return obj, value


def _object(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    return import_object(value, path), value


def _classifier(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    """``on``: one import string or an array of them (exception classes, predicates, tests)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise Invalid(path, "must name at least one exception class", value)
    resolved = []
    for index, item in enumerate(items):
        where = (*path, index) if isinstance(value, list) else path
        obj = import_object(item, where)
        is_class = isinstance(obj, type) and issubclass(obj, BaseException)
        if not (is_class or isinstance(obj, Predicate) or callable(obj)):
            raise Invalid(
                where,
                f"names a {type(obj).__name__}, not an exception class, a predicate or a function",
                item,
            )
        resolved.append(obj)
    if all(isinstance(o, type) for o in resolved):
        on: Any = resolved[0] if len(resolved) == 1 else tuple(resolved)
    else:
        on = as_predicate(resolved[0])
        for obj in resolved[1:]:
            on = on | as_predicate(obj)
    return on, freeze(value)


def _budget(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    if not isinstance(value, str):
        raise Invalid(path, "must be the name of a budget of [budgets]", value)
    built = ctx.budgets.get(value)
    if built is None:
        known = ", ".join(sorted(ctx.budgets)) or "none"
        raise Invalid(
            path,
            f"no budget of that name in [budgets]{suggest(value, list(ctx.budgets))} "
            f"(budgets: {known})",
            value,
        )
    return built.obj, Same(built.obj)


def _targets(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    if not isinstance(value, list):
        raise Invalid(path, "must be an array of targets", value)
    return value, freeze(value)


# -- nested tables: a "kind" key, or a number for the common case ------------------------------
def _table(value: Any, path: Path, wanted: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(path, f"must be {wanted}", value)
    return value


def _options(
    table: Mapping[str, Any],
    path: Path,
    allowed: Mapping[str, Resolver],
    ctx: Context,
    what: str,
    prefix: str = "",
) -> tuple[dict[str, Any], dict[str, Hashable]]:
    """Check a table's keys against ``allowed`` and resolve each value."""
    values: dict[str, Any] = {}
    parts: dict[str, Hashable] = {}
    for key, raw in table.items():
        resolver = allowed.get(key)
        if resolver is None:
            names = ", ".join(allowed)
            raise Invalid(
                (*path, key),
                f"unknown option of {what}{suggest(key, list(allowed))}; its options: {names}",
                raw,
            )
        values[key], parts[key] = resolver(raw, (*path, key), ctx, prefix)
    return values, parts


def construct(
    path: Path,
    given: Mapping[str, Any],
    build: Callable[[], Any],
    aliases: Mapping[str, str] | None = None,
) -> Any:
    """Call a constructor; map its `ConfigurationError` onto the key that was written."""
    try:
        return build()
    except ConfigurationError as exc:
        option = exc.option
        if aliases and option not in given:
            option = aliases.get(option, option)
        value = given.get(option, UNSET)
        problem = exc.problem if value is UNSET else _without_got(exc.problem, value)
        raise Invalid((*path, option), problem, value) from None
    except Exception as exc:
        raise Invalid(path, f"cannot be built: {type(exc).__name__}: {exc}", UNSET) from None


def _without_got(problem: str, value: object) -> str:
    """Drop a constructor's ``, got <value>``: the message shows the value already."""
    shown_as = {repr(value)}
    if isinstance(value, int | float) and not isinstance(value, bool):
        shown_as.add(repr(float(value)))  # a constructor may have made the int a float
    for shown in shown_as:
        if problem.endswith(f", got {shown}"):
            return problem[: -len(f", got {shown}")]
    return problem


_BACKOFF_KINDS: Final[dict[str, dict[str, Resolver]]] = {
    "none": {},
    "constant": {"delay": NUMBER, "jitter": STRING},
    "linear": {"initial": NUMBER, "step": NUMBER, "maximum": NUMBER, "jitter": STRING},
    "exponential": {"initial": NUMBER, "multiplier": NUMBER, "maximum": NUMBER, "jitter": STRING},
}


def _kind_of(table: Mapping[str, Any], path: Path, kinds: Sequence[str], default: str) -> str:
    kind = table.get("kind", default)
    if kind not in kinds:
        raise Invalid(
            (*path, "kind"),
            f"must be one of {', '.join(kinds)}{suggest(str(kind), kinds)}",
            kind,
        )
    return str(kind)


def _backoff(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    """``backoff``: a number (a constant delay) or a table with a ``kind``."""
    if _is_number(value):
        try:
            return construct(path, {}, lambda: Backoff.constant(value)), freeze(value)
        except Invalid as exc:  # the number is the delay: the error is the backoff's
            raise Invalid(path, _without_got(exc.problem, value), value) from None
    table = _table(value, path, 'a number of seconds or a table such as {kind = "exponential"}')
    kind = _kind_of(table, path, list(_BACKOFF_KINDS), "exponential")
    rest = {k: v for k, v in table.items() if k != "kind"}
    values, _ = _options(rest, path, _BACKOFF_KINDS[kind], ctx, f"a {kind} backoff")
    makers: dict[str, Callable[[], Backoff]] = {
        "none": Backoff.none,
        "constant": lambda: Backoff.constant(values.get("delay", 0.0), **_jitter(values)),
        "linear": lambda: Backoff.linear(
            values.get("initial", 0.0),
            values.get("step", 0.0),
            **_subset(values, "maximum"),
            **_jitter(values),
        ),
        "exponential": lambda: Backoff.exponential(**values),
    }
    aliases = {"initial": "delay", "maximum": "delay"} if kind == "constant" else None
    return construct(path, rest, makers[kind], aliases), freeze(value)


def _jitter(values: Mapping[str, Any]) -> dict[str, Any]:
    return _subset(values, "jitter")


def _subset(values: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {k: values[k] for k in names if k in values}


_TRIP_KINDS: Final[dict[str, dict[str, Resolver]]] = {
    "consecutive_failures": {"threshold": INT},
    "failure_rate": {"threshold": NUMBER, "window": NUMBER, "minimum_calls": INT, "buckets": INT},
}


def _trip(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    table = _table(value, path, 'a table such as {kind = "failure_rate", threshold = 0.5}')
    kind = _kind_of(table, path, list(_TRIP_KINDS), "consecutive_failures")
    rest = {k: v for k, v in table.items() if k != "kind"}
    values, _ = _options(rest, path, _TRIP_KINDS[kind], ctx, f"a {kind} trip")
    cls = ConsecutiveFailures if kind == "consecutive_failures" else FailureRate
    return construct(path, rest, lambda: cls(**values)), freeze(value)


_ALGORITHMS: Final[dict[str, dict[str, Resolver]]] = {
    "gradient": {
        "tolerance": NUMBER,
        "smoothing": NUMBER,
        "queue": INT,
        "baseline_window": INT,
        "probe_every": INT,
        "backoff": NUMBER,
    },
    "aimd": {"increase": INT, "backoff": NUMBER, "target_latency": nullable(NUMBER)},
}


def _algorithm(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    table = _table(value, path, 'a table such as {kind = "aimd", target_latency = 0.2}')
    kind = _kind_of(table, path, list(_ALGORITHMS), "gradient")
    rest = {k: v for k, v in table.items() if k != "kind"}
    values, _ = _options(rest, path, _ALGORITHMS[kind], ctx, f"the {kind} algorithm")
    cls: Callable[..., Any] = Gradient if kind == "gradient" else AIMD
    return construct(path, rest, lambda: cls(**values)), freeze(value)


_PERCENTILE: Final[dict[str, Resolver]] = {
    "percentile": NUMBER,
    "window": INT,
    "min_samples": nullable(INT),
    "fallback": NUMBER,
    "minimum": NUMBER,
}


def _delay(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    """Hedging's ``delay``: seconds, or ``{percentile = 95, ...}`` of recent latencies."""
    if _is_number(value):
        return value, freeze(value)
    table = _table(value, path, "a number of seconds or a table such as {percentile = 95}")
    values, _ = _options(table, path, _PERCENTILE, ctx, "a percentile delay")
    options = {k: v for k, v in values.items() if k != "percentile"}
    made = construct(
        path,
        table,
        lambda: Percentile(values.get("percentile", 95.0), **options),
        {"percent": "percentile"},
    )
    return made, freeze(value)


def _enabled(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    """Chaos's switch: true, false, or ``{env = "VARIABLE"}`` (read when it is built)."""
    if isinstance(value, bool):
        return value, value
    table = _table(value, path, 'true, false or a table {env = "VARIABLE"}')
    values, _ = _options(table, path, {"env": STRING}, ctx, "a switch")
    if "env" not in values:
        raise Invalid((*path, "env"), "is required: the environment variable's name")
    variable = values["env"]
    # read from the process environment, as Chaos.env does: its value is in the fingerprint,
    # so that a reload after it changed builds the policy again
    switch = construct(path, table, lambda: Chaos.env(variable), {"enabled": "env"})
    return switch, ("env", variable, os.environ.get(variable))


def _chain_resolver(value: Any, path: Path, ctx: Context, prefix: str) -> tuple[Any, Hashable]:
    """Failover's ``policy``: a table of policy kinds (outermost first), run per target."""
    table = _table(value, path, "a table of policies, such as {retry = {attempts = 3}}")
    policies = chain(table, path, ctx, prefix)
    return policies, tuple(Same(p) for p in policies)


# -- the kinds ---------------------------------------------------------------------------------
@attrs.frozen
class Kind:
    """A policy kind: its options and how to build it from them."""

    name: str
    options: Mapping[str, Resolver]
    build: Callable[[dict[str, Any], Context, Built | None, Mapping[str, Hashable]], Any]
    aliases: Mapping[str, str] = attrs.field(factory=dict)


def _common(ctx: Context, *, clock: bool = True) -> dict[str, Any]:
    extra: dict[str, Any] = {"listeners": ctx.listeners}
    if clock:
        extra["clock"] = ctx.clock
    return extra


def _retry(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    return Retry(**values, **_common(ctx))


def _breaker(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    return CircuitBreaker(**values, **_common(ctx))


def _keyed(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    return KeyedCircuitBreaker(**values, **_common(ctx))


def _timeout(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    return Timeout(**values, **_common(ctx))


def _bulkhead(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    return Bulkhead(**values, **_common(ctx))


def _limiter(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    return RateLimiter(**values, **_common(ctx))


def _adaptive(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    return AdaptiveConcurrency(**values, **_common(ctx))


def _fallback(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    value = values.pop("value", NO_VALUE)
    return Fallback(value, **values, **_common(ctx, clock=False))


def _failover(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    policies = values.pop("policy", ())
    if "targets" not in values:
        raise ConfigurationError("targets", "is required: the targets, in order of preference")
    policy = _one(policies, values.get("name", "failover"))
    return Failover(policy=policy, **values, **_common(ctx, clock=False))


def _one(policies: Sequence[Policy], name: str) -> Policy | None:
    if not policies:
        return None
    if len(policies) == 1:
        return policies[0]
    return Pipeline(*policies, name=f"{name}.policy")


def _chaos(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    chosen = [k for k in ("fault", "latency", "result") if k in values]
    if len(chosen) > 1:
        raise ConfigurationError(chosen[1], "give one of fault, latency and result")
    rate = values.pop("rate", 0.001)
    common = _common(ctx)
    if not chosen:
        return Chaos(rate=rate, **values, **common)
    what = chosen[0]
    payload = values.pop(what)
    makers: dict[str, Callable[..., Chaos]] = {
        "fault": Chaos.fault,
        "latency": Chaos.latency,
        "result": Chaos.result,
    }
    maker = makers[what]
    return maker(rate, payload, **values, **common)


def _hedging(values: dict[str, Any], ctx: Context, old: Built | None, parts: Parts) -> Any:
    """A hedging policy; it keeps the old one's latency samples when its delay is unchanged."""
    delay = values.get("delay")
    if (
        isinstance(delay, Percentile)
        and old is not None
        and old.parts.get("delay") == parts.get("delay")
        and isinstance(old.obj, Hedging)
        and isinstance(old.obj.delay, Percentile)
    ):
        values["delay"] = old.obj.delay
    return Hedging(**values, **_common(ctx))


_CLASSIFY: Final[dict[str, Resolver]] = {"on": _classifier, "on_result": _callable}
_BREAKER: Final[dict[str, Resolver]] = {
    "name": STRING,
    "threshold": INT,
    "trip": _trip,
    "reset_timeout": NUMBER,
    "max_reset_timeout": nullable(NUMBER),
    "half_open_max_calls": INT,
    "success_threshold": INT,
    **_CLASSIFY,
    "metrics_only": BOOL,
}

KINDS: Final[dict[str, Kind]] = {
    kind.name: kind
    for kind in (
        Kind(
            "retry",
            {
                "name": STRING,
                "attempts": INT,
                "backoff": _backoff,
                **_CLASSIFY,
                "delay_from": _callable,
                "deadline": nullable(NUMBER),
                "on_discard": _callable,
                "budget": _budget,
            },
            _retry,
        ),
        Kind("circuit_breaker", _BREAKER, _breaker),
        Kind(
            "keyed_circuit_breaker",
            {**_BREAKER, "key": _callable, "max_keys": nullable(INT), "idle_ttl": nullable(NUMBER)},
            _keyed,
        ),
        Kind("timeout", {"name": STRING, "seconds": NUMBER}, _timeout),
        Kind(
            "bulkhead",
            {
                "name": STRING,
                "max_concurrent": INT,
                "max_queued": INT,
                "max_wait": nullable(NUMBER),
            },
            _bulkhead,
        ),
        Kind(
            "rate_limiter",
            {
                "name": STRING,
                "rate": NUMBER,
                "per": NUMBER,
                "burst": INT,
                "algorithm": STRING,
                "max_wait": NUMBER,
                "key": _callable,
                "max_keys": nullable(INT),
                "idle_ttl": nullable(NUMBER),
            },
            _limiter,
            {"limit": "rate", "window": "per"},
        ),
        Kind(
            "adaptive_concurrency",
            {
                "name": STRING,
                "algorithm": _algorithm,
                "initial_limit": INT,
                "min_limit": INT,
                "max_limit": INT,
                **_CLASSIFY,
            },
            _adaptive,
        ),
        Kind(
            "fallback",
            {"name": STRING, "value": ANY, "handler": _callable, **_CLASSIFY},
            _fallback,
        ),
        Kind(
            "failover",
            {
                "name": STRING,
                "targets": _targets,
                "policy": _chain_resolver,
                **_CLASSIFY,
                "on_discard": _callable,
            },
            _failover,
        ),
        Kind(
            "hedging",
            {
                "name": STRING,
                "delay": _delay,
                "max_hedges": INT,
                "targets": _targets,
                **_CLASSIFY,
                "on_discard": _callable,
                "budget": _budget,
                "max_threads": INT,
            },
            _hedging,
        ),
        Kind(
            "chaos",
            {
                "name": STRING,
                "rate": NUMBER,
                "enabled": _enabled,
                "fault": _object,
                "latency": NUMBER,
                "result": ANY,
            },
            _chaos,
            {"exception": "fault", "seconds": "latency"},
        ),
    )
}
"""Every policy kind a pipeline may name, by the key it is written under."""

BREAKERS: Final = frozenset({"circuit_breaker", "keyed_circuit_breaker"})

BUDGET_OPTIONS: Final[dict[str, Resolver]] = {
    "name": STRING,
    "ratio": NUMBER,
    "min_per_second": NUMBER,
    "window": NUMBER,
}
TOP_LEVEL: Final = ("pipelines", "budgets")


# -- building ------------------------------------------------------------------------------------
def build(data: Mapping[str, Any], ctx: Context) -> Plan:
    """Check and build a whole configuration; raise `Invalid` at the first problem."""
    for key, value in data.items():
        if key not in TOP_LEVEL:
            raise Invalid(
                (key,),
                f"unknown table{suggest(key, TOP_LEVEL)}; a configuration has [pipelines.<name>] "
                "and [budgets.<name>] tables",
                value,
            )
    budgets = data.get("budgets", {})
    if not isinstance(budgets, dict):
        raise Invalid(("budgets",), "must be a table of [budgets.<name>] tables", budgets)
    for name, table in budgets.items():
        _budget_of(name, table, ("budgets", name), ctx)
    if "pipelines" not in data:
        raise Invalid(("pipelines",), "is missing: describe each pipeline in [pipelines.<name>]")
    pipelines = data["pipelines"]
    if not isinstance(pipelines, dict):
        raise Invalid(("pipelines",), "must be a table of [pipelines.<name>] tables", pipelines)
    built: dict[str, tuple[Policy, ...]] = {}
    for name, table in pipelines.items():
        path: Path = ("pipelines", name)
        if not isinstance(table, dict):
            raise Invalid(path, "must be a table of policies, outermost first", table)
        built[name] = chain(table, path, ctx, name)
    return Plan(built, ctx)


def _budget_of(name: str, table: Any, path: Path, ctx: Context) -> None:
    table = _table(table, path, "a table of options, such as {ratio = 0.2}")
    values, parts = _options(table, path, BUDGET_OPTIONS, ctx, "a retry budget")
    values.setdefault("name", name)
    parts["name"] = values["name"]
    entry = Built("budget", name, path, parts, None)
    old = ctx.old_budgets.get(name)
    if old is not None and old.fingerprint == entry.fingerprint:
        entry.obj = old.obj
    else:
        entry.obj = construct(path, table, lambda: RetryBudget(**values, clock=ctx.clock))
        ctx.created.append(entry.obj)
    ctx.budgets[name] = entry


def chain(table: Mapping[str, Any], path: Path, ctx: Context, prefix: str) -> tuple[Policy, ...]:
    """Build the policies of a table of kinds, outermost first."""
    policies = []
    for kind_name, options in table.items():
        kind = KINDS.get(kind_name)
        where = (*path, kind_name)
        if kind is None:
            raise Invalid(
                where,
                f"unknown policy kind{suggest(kind_name, list(KINDS))}; the kinds: "
                + ", ".join(KINDS),
                options,
            )
        policies.append(policy(kind, options, where, ctx, f"{prefix}.{kind_name}"))
    return tuple(policies)


def policy(kind: Kind, table: Any, path: Path, ctx: Context, default_name: str) -> Any:
    """Build one policy, or reuse the running one when its kind, name and options are unchanged.

    A circuit breaker (plain or keyed) of the same name whose options changed is built new
    and noted in ``ctx.takeovers``: it takes over the old one's state when the new
    configuration goes live.
    """
    example = "{}" if kind.name != "timeout" else "{seconds = 2.0}"
    table = _table(table, path, f"a table of options, such as {kind.name} = {example}")
    values, parts = _options(table, path, kind.options, ctx, kind.name, default_name)
    name = values.setdefault("name", default_name)
    parts["name"] = name
    entry = Built(kind.name, name, path, parts, None)
    identity = (kind.name, name)
    clash = ctx.built.get(identity)
    if clash is not None:
        raise Invalid(
            (*path, "name") if "name" in table else path,
            f"another {kind.name} is named {name!r} ({dotted(clash.path)}): give each its own "
            "name (health, metrics and events tell policies apart by name)",
            table.get("name", UNSET),
        )
    old = ctx.old.get(identity)
    if old is not None and old.fingerprint == entry.fingerprint:
        entry.obj = old.obj
    else:
        entry.obj = construct(
            path, table, lambda: kind.build(values, ctx, old, parts), kind.aliases
        )
        ctx.created.append(entry.obj)
        if old is not None and kind.name in BREAKERS:
            ctx.takeovers.append((entry.obj, old.obj))
    ctx.built[identity] = entry
    return entry.obj


def forget(objects: Sequence[object]) -> None:
    """Take objects that will not serve out of the health registry."""
    for obj in objects:
        _registry.forget(obj)
