"""`failsafe.config`: loading named pipelines from TOML, a dict and the environment."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import failsafe
from failsafe import (
    AdaptiveConcurrency,
    Backoff,
    Bulkhead,
    Chaos,
    CircuitBreaker,
    ConfigurationError,
    Failover,
    FailureRate,
    Fallback,
    Hedging,
    KeyedCircuitBreaker,
    Pipeline,
    RateLimiter,
    Retry,
    RetryBudget,
    Timeout,
    _registry,
)
from failsafe._config_toml import locate, render
from failsafe.adaptive_concurrency import AIMD, Gradient
from failsafe.cli import main
from failsafe.config import KINDS, ConfigError, Configuration, ConfiguredPipeline, from_dict, load
from failsafe.hedging import Percentile
from failsafe.outcome import Outcome
from failsafe.predicates import Predicate, exception
from failsafe.testing import FakeClock, RecordingListener


# -- objects the import strings of these tests name ------------------------------------------------
class Busy(Exception):
    """An exception a configuration names by import string."""


BUSY_OR_LATE = exception(Busy, TimeoutError)
NOT_CALLABLE = 42


def is_503(value: object) -> bool:
    """A result test a configuration names by import string."""
    return value == 503


def cached(outcome: Outcome[Any]) -> str:
    """A fallback handler a configuration names by import string."""
    return "cached"


def tenant() -> str:
    """A key function a configuration names by import string."""
    return "tenant-a"


class Holder:
    """Holds a function reached through a dotted attribute."""

    @staticmethod
    def key() -> str:
        return "held"


HERE = __name__  # "tests.test_config": import strings below name this module


def write(tmp_path: Path, text: str, name: str = "failsafe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def toml_of(data: dict[str, Any]) -> str:
    """A TOML file of ``{"pipelines": {name: {kind: options}}}``, one inline table per kind."""
    lines = []
    for top, tables in data.items():
        for name, table in tables.items():
            lines.append(f"[{top}.{render(name) if ' ' in name else name}]")
            for key, value in table.items():
                lines.append(f"{key} = {render(value)}")
            lines.append("")
    return "\n".join(lines)


def load_both(tmp_path: Path, data: dict[str, Any], **options: Any) -> list[Configuration]:
    """The same configuration from a dict and from a TOML file."""
    return [
        from_dict(data, **options),
        load(write(tmp_path, toml_of(data)), environ={}, **options),
    ]


# -- the TOML locator ------------------------------------------------------------------------------
LOCATED = """\
# a comment on line 1
[budgets.main]
ratio = 0.2

[pipelines.warehouse]   # a comment after a header
retry = {attempts = 4, backoff = {kind = "constant", delay = 0.5}}
timeout.seconds = 2.0
failover = {targets = [
  "a",   # a comment in an array
  "b",
], policy = {retry = {attempts = 2}}}

[pipelines."with spaces".bulkhead]
max_concurrent = 10
text = \"\"\"two
lines\"\"\"
literal = 'x'
[pipelines]
other.retry.attempts = 3
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("budgets", "main"), 2),
        (("budgets", "main", "ratio"), 3),
        (("pipelines", "warehouse"), 5),
        (("pipelines", "warehouse", "retry", "attempts"), 6),
        (("pipelines", "warehouse", "retry", "backoff", "delay"), 6),
        (("pipelines", "warehouse", "timeout"), 7),
        (("pipelines", "warehouse", "timeout", "seconds"), 7),
        (("pipelines", "warehouse", "failover", "targets", 1), 10),
        (("pipelines", "warehouse", "failover", "policy", "retry", "attempts"), 11),
        (("pipelines", "with spaces", "bulkhead"), 13),
        (("pipelines", "with spaces", "bulkhead", "max_concurrent"), 14),
        (("pipelines", "with spaces", "bulkhead", "literal"), 17),
        (("pipelines", "other", "retry", "attempts"), 19),
    ],
)
def test_locator_finds_the_line_of_each_key_form(path: tuple[str | int, ...], line: int) -> None:
    """Headers, inline tables, dotted and quoted keys, arrays, strings: each key's line."""
    assert locate(LOCATED)[path] == line


def test_locator_keeps_what_it_found_on_text_it_does_not_follow() -> None:
    """Unexpected text ends the scan quietly, keeping the lines found before it."""
    found = locate("[pipelines.a]\nretry = {attempts = 1}\n= oops\n")
    assert found[("pipelines", "a", "retry", "attempts")] == 2


# -- each kind, from TOML and from a dict ----------------------------------------------------------
def _check_retry(p: Any) -> None:
    assert isinstance(p, Retry)
    assert p.attempts == 3
    assert p.backoff == Backoff.constant(0.5)
    assert p.deadline == 10
    assert p._predicate.matches_exception(Busy())
    assert not p._predicate.matches_exception(ConnectionError())
    assert p._predicate.matches_result(503)


def _check_breaker(p: Any) -> None:
    assert isinstance(p, CircuitBreaker)
    assert p.trip == FailureRate(threshold=0.25, window=30, minimum_calls=4, buckets=6)
    assert (p.reset_timeout, p.max_reset_timeout, p.half_open_max_calls) == (5, 40, 2)
    assert (p.success_threshold, p.metrics_only) == (3, True)


def _check_keyed(p: Any) -> None:
    assert isinstance(p, KeyedCircuitBreaker)
    assert (p.max_keys, p.idle_ttl) == (None, 60)
    assert p._current_key() == "tenant-a"
    assert p._proto.reset_timeout == 7
    assert p._proto.trip.threshold == 2


def _check_timeout(p: Any) -> None:
    assert isinstance(p, Timeout)
    assert p.seconds == 1.5


def _check_bulkhead(p: Any) -> None:
    assert isinstance(p, Bulkhead)
    assert (p.max_concurrent, p.max_queued, p.max_wait) == (4, 2, None)


def _check_limiter(p: Any) -> None:
    assert isinstance(p, RateLimiter)
    assert (p.rate, p.per, p.algorithm, p.max_wait, p.max_keys) == (
        10,
        2.0,
        "sliding_window",
        0.5,
        100,
    )
    assert p.key is not None
    assert p.key() == "held"


def _check_adaptive(p: Any) -> None:
    assert isinstance(p, AdaptiveConcurrency)
    assert p.algorithm == AIMD(increase=2, backoff=0.8, target_latency=0.2)
    assert (p.initial_limit, p.min_limit, p.max_limit) == (8, 2, 50)


def _check_fallback(p: Any) -> None:
    assert isinstance(p, Fallback)
    assert p.value == {"stock": 0, "known": False}
    assert p._predicate.matches_exception(Busy())


def _check_failover(p: Any) -> None:
    assert isinstance(p, Failover)
    assert list(p.targets) == ["http://w1", "http://w2"]
    assert isinstance(p.policy, Pipeline)
    retry, keyed = p.policy.policies
    assert isinstance(retry, Retry)
    assert retry.attempts == 2
    assert retry.name == "p.failover.retry"
    assert isinstance(keyed, KeyedCircuitBreaker)


def _check_hedging(p: Any) -> None:
    assert isinstance(p, Hedging)
    assert isinstance(p.delay, Percentile)
    assert (p.delay.percent, p.delay.window, p.delay.fallback) == (90, 500, 0.2)
    assert (p.max_hedges, p.max_threads, list(p.targets or ())) == (2, 8, ["a", "b"])


def _check_chaos(p: Any) -> None:
    assert isinstance(p, Chaos)
    assert (p.rate, p.enabled) == (0.25, True)
    assert p.describe().startswith("chaos 'p.chaos': raises Busy on 25% of calls")


KIND_CASES: list[tuple[str, dict[str, Any], Callable[[Any], None]]] = [
    (
        "retry",
        {
            "attempts": 3,
            "backoff": {"kind": "constant", "delay": 0.5},
            "on": f"{HERE}:Busy",
            "on_result": f"{HERE}:is_503",
            "deadline": 10,
        },
        _check_retry,
    ),
    (
        "circuit_breaker",
        {
            "trip": {
                "kind": "failure_rate",
                "threshold": 0.25,
                "window": 30,
                "minimum_calls": 4,
                "buckets": 6,
            },
            "reset_timeout": 5,
            "max_reset_timeout": 40,
            "half_open_max_calls": 2,
            "success_threshold": 3,
            "metrics_only": True,
        },
        _check_breaker,
    ),
    (
        "keyed_circuit_breaker",
        {
            "key": f"{HERE}:tenant",
            "max_keys": "none",
            "idle_ttl": 60,
            "threshold": 2,
            "reset_timeout": 7,
        },
        _check_keyed,
    ),
    ("timeout", {"seconds": 1.5}, _check_timeout),
    ("bulkhead", {"max_concurrent": 4, "max_queued": 2, "max_wait": "none"}, _check_bulkhead),
    (
        "rate_limiter",
        {
            "rate": 10,
            "per": 2.0,
            "algorithm": "sliding_window",
            "max_wait": 0.5,
            "key": f"{HERE}:Holder.key",
            "max_keys": 100,
        },
        _check_limiter,
    ),
    (
        "adaptive_concurrency",
        {
            "algorithm": {"kind": "aimd", "increase": 2, "backoff": 0.8, "target_latency": 0.2},
            "initial_limit": 8,
            "min_limit": 2,
            "max_limit": 50,
        },
        _check_adaptive,
    ),
    ("fallback", {"value": {"stock": 0, "known": False}, "on": f"{HERE}:Busy"}, _check_fallback),
    (
        "failover",
        {
            "targets": ["http://w1", "http://w2"],
            "policy": {"retry": {"attempts": 2}, "keyed_circuit_breaker": {}},
        },
        _check_failover,
    ),
    (
        "hedging",
        {
            "delay": {"percentile": 90, "window": 500, "fallback": 0.2},
            "max_hedges": 2,
            "targets": ["a", "b"],
            "max_threads": 8,
        },
        _check_hedging,
    ),
    ("chaos", {"rate": 0.25, "fault": f"{HERE}:Busy", "enabled": True}, _check_chaos),
]


def test_every_kind_has_a_case() -> None:
    """The table below covers every policy kind a configuration accepts."""
    assert sorted(kind for kind, _, _ in KIND_CASES) == sorted(KINDS)


@pytest.mark.parametrize(("kind", "options", "check"), KIND_CASES, ids=[c[0] for c in KIND_CASES])
def test_each_kind_is_built_with_its_options_from_toml_and_from_a_dict(
    tmp_path: Path, kind: str, options: dict[str, Any], check: Callable[[Any], None]
) -> None:
    """A kind's options reach its constructor, the same from a TOML file and from a dict."""
    for config in load_both(tmp_path, {"pipelines": {"p": {kind: options}}}):
        (policy,) = config["p"].policies
        check(policy)
        assert policy.name == f"p.{kind}"


def test_policies_run_outermost_first_and_the_repr_is_the_pipelines(tmp_path: Path) -> None:
    """Kinds are composed in the order written; the pipeline's repr is that of a Pipeline."""
    path = write(
        tmp_path,
        """
[pipelines.warehouse]
fallback = {value = "unknown"}
retry = {attempts = 2, backoff = {kind = "none"}}
timeout = {seconds = 2}
""",
    )
    config = load(path, environ={})
    pipeline = config["warehouse"]
    assert [type(p) for p in pipeline.policies] == [Fallback, Retry, Timeout]
    assert isinstance(pipeline, ConfiguredPipeline)
    assert isinstance(pipeline, failsafe.Policy)
    assert repr(pipeline) == repr(pipeline.pipeline)
    assert repr(pipeline).startswith("<Pipeline 'warehouse': fallback 'warehouse.fallback'")
    assert pipeline.call(lambda: 5) == 5

    def down() -> int:
        raise ConnectionError("down")

    assert pipeline.call(down) == "unknown"


def test_a_configuration_is_a_read_only_mapping_in_file_order() -> None:
    """Pipelines are listed by name in the order written; unknown names raise KeyError."""
    config = from_dict({"pipelines": {"b": {}, "a": {"timeout": {}}}})
    assert list(config) == ["b", "a"]
    assert len(config) == 2
    assert config["b"].describe() == "no policy"
    assert "a" in config
    assert config.get("zzz") is None
    with pytest.raises(KeyError):
        config["zzz"]
    assert repr(config) == "<Configuration from <dict>: b, a>"
    assert config.source == "<dict>"


def test_the_pipeline_serves_call_call_async_and_decorators() -> None:
    """A configured pipeline runs plain calls, awaited calls and decorated functions."""
    pipeline = from_dict({"pipelines": {"p": {"fallback": {"value": -1}}}})["p"]

    @pipeline
    def fails() -> int:
        raise ValueError("no")

    @pipeline
    async def fails_async() -> int:
        raise ValueError("no")

    async def seven() -> int:
        return 7

    assert fails() == -1
    assert asyncio.run(fails_async()) == -1
    assert asyncio.run(pipeline.call_async(seven)) == 7
    assert fails.__name__ == "fails"


def test_a_name_option_names_the_policy() -> None:
    """``name`` replaces the default ``<pipeline>.<kind>``."""
    config = from_dict({"pipelines": {"p": {"circuit_breaker": {"name": "warehouse"}}}})
    (breaker,) = config["p"].policies
    assert breaker.name == "warehouse"


def test_budgets_are_built_once_and_shared_by_name(tmp_path: Path) -> None:
    """Two retries naming one budget share the same RetryBudget, named after its table."""
    path = write(
        tmp_path,
        """
[budgets.warehouse]
ratio = 0.1
min_per_second = 2
window = 5

[pipelines.a]
retry = {budget = "warehouse"}

[pipelines.b]
hedging = {delay = 0.05, budget = "warehouse"}
""",
    )
    config = load(path, environ={})
    budget = config.budgets["warehouse"]
    assert isinstance(budget, RetryBudget)
    assert (budget.name, budget.ratio, budget.min_per_second, budget.window) == (
        "warehouse",
        0.1,
        2,
        5,
    )
    assert config["a"].policies[0].budget is budget  # type: ignore[attr-defined]
    assert config["b"].policies[0].budget is budget  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("on", "matches", "misses"),
    [
        ("ConnectionError", ConnectionError(), ValueError()),
        (["ConnectionError", f"{HERE}:Busy"], Busy(), ValueError()),
        (f"{HERE}:BUSY_OR_LATE", TimeoutError(), ConnectionError()),
        ([f"{HERE}:BUSY_OR_LATE", "KeyError"], KeyError(), ConnectionError()),
        ("failsafe.predicates:TRANSIENT", ConnectionError(), ValueError()),
    ],
)
def test_on_takes_classes_predicates_and_arrays_of_them(
    on: Any, matches: Exception, misses: Exception
) -> None:
    """``on`` resolves built-ins, classes, predicates and arrays of them into one test."""
    (retry,) = from_dict({"pipelines": {"p": {"retry": {"on": on}}}})["p"].policies
    assert isinstance(retry, Retry)
    assert retry._predicate.matches_exception(matches)
    assert not retry._predicate.matches_exception(misses)


def test_callables_come_from_import_strings() -> None:
    """A fallback's handler and a breaker's key function are resolved from import strings."""
    config = from_dict(
        {
            "pipelines": {
                "p": {
                    "fallback": {"handler": f"{HERE}:cached"},
                    "keyed_circuit_breaker": {"key": f"{HERE}:tenant"},
                }
            }
        }
    )

    def down() -> None:
        raise ConnectionError

    assert config["p"].call(down) == "cached"
    keyed = config["p"].policies[1]
    assert isinstance(keyed, KeyedCircuitBreaker)
    assert "tenant-a" in keyed.breakers


def test_clock_and_listeners_reach_every_policy() -> None:
    """The clock and the listeners given to the loader are those of every policy built."""
    clock, events = FakeClock(), RecordingListener()
    config = from_dict(
        {
            "pipelines": {
                "p": {
                    "retry": {"attempts": 3, "backoff": 2.0, "on": "ConnectionError"},
                    "circuit_breaker": {},
                }
            }
        },
        clock=clock,
        listeners=[events],
    )
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    assert config["p"].call(flaky) == "ok"
    assert clock.sleeps == [2.0, 2.0]
    assert events.kinds.count("RetryScheduled") == 2
    assert config["p"].policies[1].clock is clock  # type: ignore[attr-defined]


def test_none_stands_for_python_none_where_an_option_takes_it() -> None:
    """``"none"`` gives ``None`` (TOML has no null), only to options that accept it."""
    config = from_dict(
        {"pipelines": {"p": {"keyed_circuit_breaker": {"max_keys": "none", "idle_ttl": "none"}}}}
    )
    keyed = config["p"].policies[0]
    assert isinstance(keyed, KeyedCircuitBreaker)
    assert (keyed.max_keys, keyed.idle_ttl) == (None, None)
    with pytest.raises(ConfigError, match=r'attempts = "none": must be an integer$'):
        from_dict({"pipelines": {"p": {"retry": {"attempts": "none"}}}})


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (0.25, Backoff.constant(0.25)),
        ({"kind": "none"}, Backoff.none()),
        ({"kind": "constant", "delay": 1, "jitter": "full"}, Backoff.constant(1, jitter="full")),
        (
            {"kind": "linear", "initial": 1, "step": 2, "maximum": 9},
            Backoff.linear(1, 2, maximum=9),
        ),
        (
            {"initial": 0.1, "multiplier": 3, "maximum": 5},
            Backoff.exponential(0.1, multiplier=3, maximum=5),
        ),
    ],
)
def test_backoff_forms(backoff: Any, expected: Backoff) -> None:
    """A number is a constant delay; a table picks its kind (exponential by default)."""
    (retry,) = from_dict({"pipelines": {"p": {"retry": {"backoff": backoff}}}})["p"].policies
    assert isinstance(retry, Retry)
    assert retry.backoff == expected


def test_algorithm_trip_and_delay_defaults() -> None:
    """Sub-tables without ``kind`` are the constructors' defaults; a delay may be seconds."""
    config = from_dict(
        {
            "pipelines": {
                "p": {
                    "adaptive_concurrency": {"algorithm": {"queue": 6}},
                    "circuit_breaker": {"trip": {"threshold": 3}},
                    "hedging": {"delay": 0.05},
                }
            }
        }
    )
    adaptive, breaker, hedging = config["p"].policies
    assert isinstance(adaptive, AdaptiveConcurrency)
    assert adaptive.algorithm == Gradient(queue=6)
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.trip.threshold == 3
    assert isinstance(hedging, Hedging)
    assert hedging.delay == 0.05


def test_chaos_switch_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``enabled = {env = "VAR"}`` switches chaos as ``Chaos.env`` does; result and latency too."""
    monkeypatch.setenv("REHEARSAL", "on")
    config = from_dict(
        {
            "pipelines": {
                "p": {"chaos": {"rate": 1, "result": "canned", "enabled": {"env": "REHEARSAL"}}},
                "q": {"chaos": {"rate": 0.5, "latency": 2}},
            }
        }
    )
    assert config["p"].call(lambda: "real") == "canned"
    assert "adds 2s of latency to 50% of calls, switched off" in repr(config["q"])


# -- errors: file, line, key, value ----------------------------------------------------------------
BAD_FILES: list[tuple[str, str, int | None, str | None, object, str]] = [
    (
        "wrong type",
        '[pipelines.w]\nretry = {attempts = "four"}\n',
        2,
        "pipelines.w.retry.attempts",
        "four",
        "must be an integer",
    ),
    (
        "out of range",
        "[pipelines.w]\nretry = {attempts = 4}\ntimeout = {seconds = 0}\n",
        3,
        "pipelines.w.timeout.seconds",
        0,
        "must be a finite number > 0",
    ),
    (
        "unknown kind",
        "[pipelines.w]\nretyr = {}\n",
        2,
        "pipelines.w.retyr",
        {},
        "unknown policy kind (did you mean retry?)",
    ),
    (
        "unknown option with a suggestion",
        "[pipelines.w.circuit_breaker]\nthreshold = 5\nreset_timout = 3\n",
        3,
        "pipelines.w.circuit_breaker.reset_timout",
        3,
        "unknown option of circuit_breaker (did you mean reset_timeout?)",
    ),
    (
        "bad import string",
        '[pipelines.w]\nretry = {on = "no_such_module_x:Error"}\n',
        2,
        "pipelines.w.retry.on",
        "no_such_module_x:Error",
        "cannot import no_such_module_x: No module named 'no_such_module_x'",
    ),
    (
        "import string without a module",
        '[pipelines.w]\nretry = {on = "NotABuiltin"}\n',
        2,
        "pipelines.w.retry.on",
        "NotABuiltin",
        'must be an import string "package.module:name"',
    ),
    (
        "missing attribute, with a suggestion",
        '[pipelines.w]\nfallback = {handler = "tests.test_config:cahced"}\n',
        2,
        "pipelines.w.fallback.handler",
        "tests.test_config:cahced",
        "tests.test_config has no cahced (did you mean cached?)",
    ),
    (
        "import string naming a non-function",
        '[pipelines.w]\nfallback = {handler = "tests.test_config:NOT_CALLABLE"}\n',
        2,
        "pipelines.w.fallback.handler",
        "tests.test_config:NOT_CALLABLE",
        "names a int, not a function",
    ),
    (
        "duplicate name",
        '[pipelines.a]\nbulkhead = {name = "db"}\n\n[pipelines.b]\nbulkhead = {name = "db"}\n',
        5,
        "pipelines.b.bulkhead.name",
        "db",
        "another bulkhead is named 'db' (pipelines.a.bulkhead)",
    ),
    (
        "error in a nested table, dotted keys",
        '[pipelines.w]\nretry.backoff = {kind = "exponential", initial = 2, maximum = 1}\n',
        2,
        "pipelines.w.retry.backoff.maximum",
        1,
        "must be >= initial (2)",
    ),
    (
        "a backoff given as a number",
        "[pipelines.w]\nretry = {backoff = -1}\n",
        2,
        "pipelines.w.retry.backoff",
        -1,
        "must be a finite number >= 0",
    ),
    (
        "two options that do not agree",
        "[pipelines.w.circuit_breaker]\nreset_timeout = 10\nmax_reset_timeout = 5\n",
        3,
        "pipelines.w.circuit_breaker.max_reset_timeout",
        5,
        "must be >= reset_timeout (10)",
    ),
    (
        "a required option",
        "[pipelines.w]\n\n[pipelines.w.rate_limiter]\nper = 1\n",
        3,
        "pipelines.w.rate_limiter.rate",
        None,
        "is required",
    ),
    (
        "unknown budget",
        '[budgets.main]\n[pipelines.w]\nretry = {budget = "mian"}\n',
        3,
        "pipelines.w.retry.budget",
        "mian",
        "no budget of that name in [budgets] (did you mean main?) (budgets: main)",
    ),
    (
        "unknown top-level table",
        "[pipeline.w]\nretry = {}\n",
        1,
        "pipeline",
        {"w": {"retry": {}}},
        "unknown table (did you mean pipelines?)",
    ),
    (
        "no pipelines",
        "[budgets.main]\n",
        None,
        "pipelines",
        None,
        "is missing",
    ),
    (
        "an element of a multi-line array",
        '[pipelines.w]\nretry = {on = [\n  "ConnectionError",\n  "nope:X",\n]}\n',
        4,
        "pipelines.w.retry.on[1]",
        "nope:X",
        "cannot import nope",
    ),
    (
        "not TOML",
        "[pipelines.w]\nretry = {attempts = }\n",
        2,
        None,
        None,
        "not valid TOML: Invalid value",
    ),
    (
        "a kind that is not a table",
        "[pipelines.w]\ntimeout = 2\n",
        2,
        "pipelines.w.timeout",
        2,
        "must be a table of options, such as timeout = {seconds = 2.0}",
    ),
    (
        "a sub-table kind",
        '[pipelines.w]\nretry = {backoff = {kind = "expo"}}\n',
        2,
        "pipelines.w.retry.backoff.kind",
        "expo",
        "must be one of none, constant, linear, exponential (did you mean exponential?)",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "value", "problem"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_every_error_names_file_line_key_and_value(
    tmp_path: Path, text: str, line: int | None, key: str | None, value: object, problem: str
) -> None:
    """A bad file raises ConfigError naming the file, the line, the key, its value and why."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    error = caught.value
    assert (error.file, error.line, error.key, error.value) == (str(path), line, key, value)
    assert problem in error.problem
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ValueError)
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(error).startswith(where + ": ")


def test_the_message_reads_file_line_key_value_problem(tmp_path: Path) -> None:
    """The message is ``file:line: key = value: problem``, the constructor's "got" dropped."""
    path = write(tmp_path, "[pipelines.warehouse]\n\nretry = {attempts = 0}\n")
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert str(caught.value) == (
        f"{path}:3: pipelines.warehouse.retry.attempts = 0: must be an integer >= 1"
    )


def test_a_dict_source_names_dict_and_no_line() -> None:
    """Errors in a dict name ``<dict>`` as their file, with no line."""
    with pytest.raises(ConfigError) as caught:
        from_dict({"pipelines": {"w": {"bulkhead": {"max_concurrent": 0}}}})
    error = caught.value
    assert (error.file, error.line) == ("<dict>", None)
    assert str(error) == "<dict>: pipelines.w.bulkhead.max_concurrent = 0: must be an integer >= 1"


def test_an_unreadable_file_is_one_error(tmp_path: Path) -> None:
    """A missing file raises ConfigError naming it (no key, no line)."""
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load(missing, environ={})
    assert (caught.value.file, caught.value.key, caught.value.line) == (str(missing), None, None)
    assert "cannot read the file" in str(caught.value)


def test_a_file_larger_than_the_bound_is_refused(tmp_path: Path) -> None:
    """A file over MAX_FILE_BYTES is a ConfigError, read no further than the bound."""
    from failsafe.config import MAX_FILE_BYTES

    path = tmp_path / "huge.toml"
    path.write_text("# " + "x" * MAX_FILE_BYTES + "\n[pipelines.a]\nretry = {}\n")
    with pytest.raises(ConfigError, match="larger than 1,048,576 bytes") as caught:
        load(path, environ={})
    assert caught.value.file == str(path)


def test_an_import_that_raises_is_reported_by_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module failing at import is named with its exception's type, never its message."""
    (tmp_path / "broken_mod_for_config.py").write_text("raise RuntimeError('secret-token')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        from_dict({"pipelines": {"w": {"retry": {"on": "broken_mod_for_config:X"}}}})
    assert "importing broken_mod_for_config raised RuntimeError" in str(caught.value)
    assert "secret-token" not in str(caught.value)


def test_a_failed_load_leaves_nothing_in_the_health_registry() -> None:
    """Policies built before the error are not listed as live (they never serve)."""
    before = {id(o) for o in _registry.registered()}
    with pytest.raises(ConfigError):
        from_dict(
            {"pipelines": {"w": {"bulkhead": {"name": "b-never"}, "timeout": {"seconds": -1}}}}
        )
    names = [getattr(o, "name", None) for o in _registry.registered() if id(o) not in before]
    assert "b-never" not in names


# -- environment overrides -------------------------------------------------------------------------
def test_environment_overrides_set_options_of_existing_pipelines(tmp_path: Path) -> None:
    """``FAILSAFE_<PIPELINE>_<KIND>_<OPTION>`` values, parsed as TOML, override the file."""
    path = write(
        tmp_path,
        "[pipelines.orders]\nretry = {attempts = 2}\n\n"
        "[pipelines.orders_eu]\nretry = {}\ncircuit_breaker = {}\n",
    )
    environ = {
        "FAILSAFE_ORDERS_RETRY_ATTEMPTS": "5",
        "FAILSAFE_ORDERS_RETRY_BACKOFF": '{kind = "constant", delay = 1}',
        "FAILSAFE_ORDERS_EU_CIRCUIT_BREAKER_RESET_TIMEOUT": "7.5",
        "FAILSAFE_ORDERS_EU_CIRCUIT_BREAKER_NAME": "eu-breaker",
        "FAILSAFE_SOMETHING_ELSE": "ignored",
        "FAILSAFE_QUEUE_BROKER": "amqp://x",
        "FAILSAFE_CHAOS": "1",
        "UNRELATED": "x",
    }
    config = load(path, environ=environ)
    retry = config["orders"].policies[0]
    assert isinstance(retry, Retry)
    assert (retry.attempts, retry.backoff) == (5, Backoff.constant(1))
    breaker = config["orders_eu"].policies[1]
    assert isinstance(breaker, CircuitBreaker)
    assert (breaker.reset_timeout, breaker.name) == (7.5, "eu-breaker")


def test_other_tools_variables_are_never_errors_even_for_a_pipeline_of_that_name() -> None:
    """A pipeline named ``queue`` still leaves FAILSAFE_QUEUE_BROKER alone, and is overridable."""
    environ = {"FAILSAFE_QUEUE_BROKER": "sqlite:///q.db", "FAILSAFE_QUEUE_TIMEOUT_SECONDS": "3"}
    config = from_dict({"pipelines": {"queue": {"timeout": {}}}}, environ=environ)
    assert config["queue"].policies[0].seconds == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("FAILSAFE_W_RETRY_ATEMPTS", "3", "retry has no option ATEMPTS (did you mean ATTEMPTS?)"),
        ("FAILSAFE_W_BULKHEAD_MAX_CONCURRENT", "3", "pipeline 'w' has no bulkhead"),
        ("FAILSAFE_W", "3", "names the pipeline 'w' but no policy and option"),
        ("FAILSAFE_W_RETRY", "3", "names retry of pipeline 'w' but no option"),
        ("FAILSAFE_W_RETRI_ATTEMPTS", "3", "no policy of pipeline 'w' in RETRI_ATTEMPTS"),
    ],
)
def test_a_variable_naming_a_pipeline_but_no_option_is_an_error(
    variable: str, value: str, problem: str
) -> None:
    """Such a variable raises ConfigError whose file is the variable's name."""
    with pytest.raises(ConfigError) as caught:
        from_dict({"pipelines": {"w": {"retry": {}}}}, environ={variable: value})
    assert caught.value.file == variable
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{variable}: ")


def test_a_bad_override_value_names_the_variable_and_the_key() -> None:
    """A value out of range names the variable as its file, and the key it set."""
    with pytest.raises(ConfigError) as caught:
        from_dict({"pipelines": {"w": {"retry": {}}}}, environ={"FAILSAFE_W_RETRY_ATTEMPTS": "0"})
    assert str(caught.value) == (
        "FAILSAFE_W_RETRY_ATTEMPTS: pipelines.w.retry.attempts = 0: must be an integer >= 1"
    )


def test_an_override_that_is_not_toml_is_a_string() -> None:
    """A value that does not parse as TOML is taken as the string it is."""
    config = from_dict(
        {"pipelines": {"w": {"timeout": {}}}}, environ={"FAILSAFE_W_TIMEOUT_NAME": "w-timeout"}
    )
    assert config["w"].policies[0].name == "w-timeout"  # type: ignore[attr-defined]


def test_load_reads_os_environ_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``environ=None`` (default) reads os.environ; ``{}`` disables overrides."""
    path = write(tmp_path, "[pipelines.w]\ntimeout = {seconds = 1}\n")
    monkeypatch.setenv("FAILSAFE_W_TIMEOUT_SECONDS", "4")
    assert load(path)["w"].policies[0].seconds == 4  # type: ignore[attr-defined]
    assert load(path, environ={})["w"].policies[0].seconds == 1  # type: ignore[attr-defined]
    config = from_dict({"pipelines": {"w": {"timeout": {"seconds": 1}}}})
    assert config["w"].policies[0].seconds == 1  # type: ignore[attr-defined]


# -- a generated configuration loads, and its repr says its numbers --------------------------------
def _g(x: float) -> str:
    return f"{x:g}"


small = st.integers(min_value=1, max_value=50)
seconds = st.integers(min_value=1, max_value=9000).map(lambda n: n / 100)
KIND_STRATEGIES: dict[str, st.SearchStrategy[tuple[dict[str, Any], list[str]]]] = {
    "retry": st.builds(
        lambda a, d: ({"attempts": a, "backoff": d}, [f"up to {a} attempts", f"{_g(d)}s between"]),
        small,
        seconds,
    ),
    "circuit_breaker": st.builds(
        lambda t, r: (
            {"threshold": t, "reset_timeout": r},
            [f"opens after {t} consecutive", f"half-opens after {_g(r)}s"],
        ),
        small,
        seconds,
    ),
    "timeout": st.builds(lambda s: ({"seconds": s}, [f": {_g(s)}s"]), seconds),
    "bulkhead": st.builds(
        lambda c, q: ({"max_concurrent": c, "max_queued": q}, [f"{c} at once, {q} queued"]),
        small,
        st.integers(min_value=0, max_value=50),
    ),
    "rate_limiter": st.builds(
        lambda r, p: ({"rate": r, "per": p}, [f"{r} calls per {_g(p)}s"]), small, seconds
    ),
    "hedging": st.builds(
        lambda d, h: ({"delay": d, "max_hedges": h}, [f"up to {h} more", f"after {_g(d)}s"]),
        seconds,
        st.integers(min_value=1, max_value=4),
    ),
    "adaptive_concurrency": st.builds(
        lambda lo, extra: (
            {"min_limit": lo, "initial_limit": lo, "max_limit": lo + extra},
            [f"within {lo}..{lo + extra}"],
        ),
        small,
        st.integers(min_value=0, max_value=100),
    ),
}


@st.composite
def configurations(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, list[str]]]:
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
            min_size=1,
            max_size=3,
            unique_by=lambda n: n.replace("-", "_"),
        )
    )
    pipelines: dict[str, Any] = {}
    expected: dict[str, list[str]] = {}
    for name in names:
        kinds = draw(st.lists(st.sampled_from(sorted(KIND_STRATEGIES)), unique=True, max_size=4))
        pipelines[name] = {}
        expected[name] = []
        for kind in kinds:
            options, words = draw(KIND_STRATEGIES[kind])
            pipelines[name][kind] = options
            expected[name] += words
    return {"pipelines": pipelines}, expected


@settings(max_examples=60, deadline=None)
@given(configurations())
def test_any_valid_configuration_loads_and_its_repr_says_its_numbers(
    generated: tuple[dict[str, Any], dict[str, list[str]]],
) -> None:
    """Generated valid configurations load from a dict and TOML alike; reprs carry the numbers."""
    import tempfile

    data, expected = generated
    config = from_dict(data)
    with tempfile.TemporaryDirectory() as folder:
        again = load(write(Path(folder), toml_of(data)), environ={})
    assert list(config) == list(again) == list(data["pipelines"])
    for name, words in expected.items():
        text = repr(config[name])
        assert text == repr(again[name])
        assert text.startswith(f"<Pipeline {name!r}")
        for word in words:
            assert word in text, (word, text)
        assert [p.name for p in config[name].policies] == [
            f"{name}.{kind}" for kind in data["pipelines"][name]
        ]


def test_numbers_in_reprs_use_the_shortest_form() -> None:
    """A sanity check of the property's formatting: ``:g`` writes 0.5 as 0.5 and 2.0 as 2."""
    assert (_g(0.5), _g(2.0), _g(math.pi)) == ("0.5", "2", "3.14159")


# -- the CLI ---------------------------------------------------------------------------------------
GOOD = """
[pipelines.warehouse]
retry = {attempts = 4}
circuit_breaker = {threshold = 5, reset_timeout = 30}

[pipelines.payments]
timeout = {seconds = 2}
"""


def test_config_check_prints_each_pipeline_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``failsafe config check FILE`` prints ``name: <repr>`` per pipeline and exits 0."""
    path = write(tmp_path, GOOD)
    assert main(["config", "check", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == ["warehouse", "payments"]
    assert lines[0].startswith("warehouse: <Pipeline 'warehouse': retry 'warehouse.retry'")
    assert (
        lines[1]
        == "payments: <Pipeline 'payments': timeout 'payments.timeout': 2s, around the call>"
    )


def test_config_check_exits_2_with_the_error_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad file: the ConfigError message on stderr, nothing on stdout, exit 2."""
    path = write(tmp_path, "[pipelines.w]\n\nbulkhead = {max_queued = -1}\n")
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{path}:3: pipelines.w.bulkhead.max_queued = -1: must be an integer >= 0\n"
    )


def test_config_check_of_a_missing_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file: one line naming it on stderr, exit 2."""
    missing = tmp_path / "nope.toml"
    assert main(["config", "check", str(missing)]) == 2
    assert capsys.readouterr().err == f"failsafe config check: no such file: {missing}\n"


def test_config_check_applies_the_environment_only_with_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--env`` applies the FAILSAFE_* overrides; without it the file alone is checked."""
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("FAILSAFE_PAYMENTS_TIMEOUT_SECONDS", "9")
    assert main(["config", "check", str(path)]) == 0
    assert "timeout 'payments.timeout': 2s" in capsys.readouterr().out
    assert main(["config", "check", str(path), "--env"]) == 0
    assert "timeout 'payments.timeout': 9s" in capsys.readouterr().out
    monkeypatch.setenv("FAILSAFE_PAYMENTS_TIMEOUT_SECONDS", "-1")
    assert main(["config", "check", str(path), "--env"]) == 2
    assert capsys.readouterr().err.startswith("FAILSAFE_PAYMENTS_TIMEOUT_SECONDS: ")


def test_config_without_a_command_prints_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """``failsafe config`` alone prints the config command's help and exits 2."""
    assert main(["config"]) == 2
    assert "check" in capsys.readouterr().err


def test_config_check_finds_modules_from_the_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Import strings naming the application's modules resolve from where the command runs."""
    (tmp_path / "myapp_config_errors.py").write_text("class Busy(Exception): ...\n")
    path = write(tmp_path, '[pipelines.w]\nretry = {on = "myapp_config_errors:Busy"}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".")])
    assert main(["config", "check", str(path)]) == 0
    assert "raises Busy" in capsys.readouterr().out


def test_failover_inner_pipeline_is_a_pipeline_of_its_kinds() -> None:
    """A failover's ``policy`` of one kind is that policy; of several, a pipeline of them."""
    config = from_dict(
        {"pipelines": {"p": {"failover": {"targets": ["a"], "policy": {"retry": {}}}}}}
    )
    failover = config["p"].policies[0]
    assert isinstance(failover, Failover)
    assert isinstance(failover.policy, Retry)
    assert isinstance(BUSY_OR_LATE, Predicate)
