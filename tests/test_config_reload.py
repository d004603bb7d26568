"""`failsafe.config` reloads: atomic swaps, state kept, all or nothing, and the watch."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failsafe import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigurationError,
    Hedging,
    KeyedCircuitBreaker,
    Pipeline,
    Retry,
    UsageError,
    _registry,
)
from failsafe.config import ConfigError, Configuration, from_dict, load
from failsafe.testing import FakeClock

KEY: contextvars.ContextVar[str] = contextvars.ContextVar("KEY", default="a")


def current_key() -> str:
    """The key of a keyed breaker in these tests (import string tests.test_config_reload:...)."""
    return KEY.get()


def down() -> None:
    raise ConnectionError("down")


def fail(pipeline: Any, times: int) -> None:
    """Make ``times`` calls that fail with ConnectionError (open circuits pass through)."""
    for _ in range(times):
        with pytest.raises((ConnectionError, CircuitOpenError)):
            pipeline.call(down)


class Files:
    """A configuration file in a temporary folder, rewritten by the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "failsafe.toml"
        self.clock = FakeClock()

    def write(self, text: str) -> None:
        self.path.write_text(text, encoding="utf-8")

    def load(self, text: str, **options: Any) -> Configuration:
        self.write(text)
        options.setdefault("environ", {})
        return load(self.path, clock=self.clock, **options)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


# -- circuit breakers keep their state -------------------------------------------------------------
BREAKER = """
[pipelines.w]
circuit_breaker = {{threshold = {threshold}, reset_timeout = {reset}}}
"""


def test_an_open_breaker_stays_open_when_reset_timeout_changes(files: Files) -> None:
    """The new breaker is open, its period measured from the old opening with the new timeout."""
    config = files.load(BREAKER.format(threshold=2, reset=10))
    w = config["w"]
    fail(w, 2)
    old = w.policies[0]
    assert isinstance(old, CircuitBreaker)
    assert old.state is CircuitState.OPEN
    files.clock.advance(4)
    files.write(BREAKER.format(threshold=2, reset=20))
    assert config.reload() == ("w",)
    new = w.policies[0]
    assert isinstance(new, CircuitBreaker)
    assert new is not old
    assert new.state is CircuitState.OPEN
    assert new.retry_after == pytest.approx(16)
    with pytest.raises(CircuitOpenError):
        w.call(lambda: "ok")
    files.clock.advance(16)
    assert w.call(lambda: "ok") == "ok"  # the probe closes it
    assert new.state is CircuitState.CLOSED


def test_the_failure_count_is_kept_when_the_threshold_changes(files: Files) -> None:
    """Failures counted go on counting towards the new threshold."""
    config = files.load(BREAKER.format(threshold=3, reset=10))
    w = config["w"]
    fail(w, 2)
    files.write(BREAKER.format(threshold=4, reset=10))
    config.reload()
    breaker = w.policies[0]
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.failure_count == 2
    assert breaker.state is CircuitState.CLOSED
    fail(w, 1)
    assert breaker.state is CircuitState.CLOSED
    fail(w, 1)
    assert breaker.state is CircuitState.OPEN


def test_a_lower_threshold_opens_at_the_next_failure(files: Files) -> None:
    """A count already past the new threshold stays closed until the next failure opens it."""
    config = files.load(BREAKER.format(threshold=5, reset=10))
    w = config["w"]
    fail(w, 3)
    files.write(BREAKER.format(threshold=2, reset=10))
    config.reload()
    breaker = w.policies[0]
    assert isinstance(breaker, CircuitBreaker)
    assert (breaker.state, breaker.failure_count) == (CircuitState.CLOSED, 3)
    fail(w, 1)
    assert breaker.state is CircuitState.OPEN


def test_a_new_trip_kind_keeps_the_state_and_counts_afresh(files: Files) -> None:
    """Consecutive failures to a failure rate: an open circuit stays open; counts start over."""
    config = files.load(BREAKER.format(threshold=2, reset=10))
    w = config["w"]
    fail(w, 2)
    files.write(
        '[pipelines.w]\ncircuit_breaker = {reset_timeout = 10, trip = {kind = "failure_rate", '
        "threshold = 0.5, minimum_calls = 2}}\n"
    )
    config.reload()
    breaker = w.policies[0]
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.state is CircuitState.OPEN
    files.clock.advance(10)
    assert w.call(lambda: 1) == 1
    assert breaker.state is CircuitState.CLOSED
    fail(w, 1)  # one failure in one call: below minimum_calls, whatever came before
    assert breaker.state is CircuitState.CLOSED


def test_a_failure_rate_window_is_kept_when_window_and_buckets_are_unchanged(
    files: Files,
) -> None:
    """The calls counted in the window go on counting under the new threshold."""
    text = (
        '[pipelines.w]\ncircuit_breaker = {{trip = {{kind = "failure_rate", threshold = {t}, '
        "minimum_calls = 4, window = 60}}}}\n"
    )
    config = files.load(text.format(t=0.9))
    w = config["w"]
    assert w.call(lambda: 1) == 1
    fail(w, 2)  # 2 of 3 failed
    files.write(text.format(t=0.5))
    config.reload()
    fail(w, 1)  # 3 of 4 failed: above 0.5 with the calls kept
    breaker = w.policies[0]
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.state is CircuitState.OPEN


def test_a_half_open_breaker_stays_half_open_and_admits_a_probe(files: Files) -> None:
    """Half-open is kept; the new breaker admits its own probe, whose success closes it."""
    config = files.load(BREAKER.format(threshold=1, reset=5))
    w = config["w"]
    fail(w, 1)
    old = w.policies[0]
    assert isinstance(old, CircuitBreaker)
    assert old.half_open()
    files.write(BREAKER.format(threshold=1, reset=6))
    config.reload()
    breaker = w.policies[0]
    assert isinstance(breaker, CircuitBreaker)
    assert breaker is not old
    assert breaker.state is CircuitState.HALF_OPEN
    assert w.call(lambda: "probe") == "probe"
    assert breaker.state is CircuitState.CLOSED


KEYED = """
[pipelines.w.keyed_circuit_breaker]
key = "tests.test_config_reload:current_key"
threshold = 2
reset_timeout = {reset}
max_keys = {keys}
"""


def test_a_keyed_breaker_carries_the_keys_that_hold_a_state(files: Files) -> None:
    """Open and failing keys keep their state in the new keyed breaker; quiet keys are not kept."""
    config = files.load(KEYED.format(reset=10, keys=100))
    w = config["w"]
    for key, failures in (("open", 2), ("counting", 1), ("quiet", 0)):
        token = KEY.set(key)
        try:
            fail(w, failures)
            if key == "quiet":
                assert w.call(lambda: 1) == 1
        finally:
            KEY.reset(token)
    files.write(KEYED.format(reset=30, keys=100))
    config.reload()
    keyed = w.policies[0]
    assert isinstance(keyed, KeyedCircuitBreaker)
    assert sorted(keyed.breakers) == ["counting", "open"]
    assert keyed.get("open").state is CircuitState.OPEN
    assert keyed.get("open").retry_after == pytest.approx(30)
    assert keyed.get("counting").failure_count == 1
    token = KEY.set("open")
    try:
        with pytest.raises(CircuitOpenError):
            w.call(lambda: 1)
    finally:
        KEY.reset(token)


def test_a_keyed_breaker_carries_at_most_max_keys_the_most_recent_first(files: Files) -> None:
    """A smaller max_keys keeps the most recently used keys that hold a state."""
    config = files.load(KEYED.format(reset=10, keys=10))
    w = config["w"]
    for key in ("k1", "k2", "k3"):
        token = KEY.set(key)
        try:
            fail(w, 2)
        finally:
            KEY.reset(token)
        files.clock.advance(61)  # a new grain: recency tells the keys apart
    files.write(KEYED.format(reset=10_000, keys=2))
    config.reload()
    keyed = w.policies[0]
    assert isinstance(keyed, KeyedCircuitBreaker)
    assert sorted(keyed.breakers) == ["k2", "k3"]


# -- what is kept, what is new ---------------------------------------------------------------------
TWO = """
[budgets.main]
ratio = {ratio}

[pipelines.a]
retry = {{attempts = {attempts}, budget = "main"}}
bulkhead = {{max_concurrent = {slots}}}

[pipelines.b]
timeout = {{seconds = 1}}
"""


def test_a_reload_without_changes_keeps_everything(files: Files) -> None:
    """Same file: no pipeline changes, the same objects serve, versions stay."""
    config = files.load(TWO.format(ratio=0.2, attempts=3, slots=4))
    a, b = config["a"], config["b"]
    before = (a.policies, b.policies, config.budgets["main"])
    assert config.reload() == ()
    assert (a.policies, b.policies, config.budgets["main"]) == before
    assert all(x is y for x, y in zip(a.policies, before[0], strict=True))
    assert (a.version, b.version) == (1, 1)
    assert config["a"] is a


def test_unchanged_policies_are_reused_and_changed_ones_built_new(files: Files) -> None:
    """Only the changed bulkhead is new; the retry, its budget and the other pipeline stay."""
    config = files.load(TWO.format(ratio=0.2, attempts=3, slots=4))
    a, b = config["a"], config["b"]
    retry, bulkhead = a.policies
    timeout = b.policies[0]
    files.write(TWO.format(ratio=0.2, attempts=3, slots=8))
    assert config.reload() == ("a",)
    new_retry, new_bulkhead = a.policies
    assert new_retry is retry
    assert b.policies[0] is timeout
    assert isinstance(new_bulkhead, Bulkhead)
    assert new_bulkhead is not bulkhead
    assert new_bulkhead.max_concurrent == 8
    assert (a.version, b.version) == (2, 1)
    live = _registry.registered()
    assert any(o is new_bulkhead for o in live)
    assert not any(o is bulkhead for o in live)  # health lists what serves


def test_a_changed_budget_is_new_and_so_are_the_policies_using_it(files: Files) -> None:
    """A budget whose options change is built new; a retry naming it is rebuilt to use it."""
    config = files.load(TWO.format(ratio=0.2, attempts=3, slots=4))
    old_budget = config.budgets["main"]
    old_retry, bulkhead = config["a"].policies
    files.write(TWO.format(ratio=0.5, attempts=3, slots=4))
    config.reload()
    budget = config.budgets["main"]
    retry, same_bulkhead = config["a"].policies
    assert budget is not old_budget
    assert budget.ratio == 0.5
    assert isinstance(retry, Retry)
    assert retry is not old_retry
    assert retry.budget is budget
    assert same_bulkhead is bulkhead


def test_hedging_keeps_its_latency_samples_when_its_delay_is_unchanged(files: Files) -> None:
    """Another max_hedges builds a new hedging policy around the same Percentile."""
    text = "[pipelines.h]\nhedging = {{delay = {{percentile = 90}}, max_hedges = {n}}}\n"
    config = files.load(text.format(n=1))
    old = config["h"].policies[0]
    assert isinstance(old, Hedging)
    files.write(text.format(n=2))
    config.reload()
    new = config["h"].policies[0]
    assert isinstance(new, Hedging)
    assert new is not old
    assert new.max_hedges == 2
    assert new.delay is old.delay


def test_an_added_pipeline_appears(files: Files) -> None:
    """A pipeline added to the file is in the mapping after the reload."""
    config = files.load("[pipelines.a]\ntimeout = {seconds = 1}\n")
    files.write("[pipelines.a]\ntimeout = {seconds = 1}\n\n[pipelines.z]\nbulkhead = {}\n")
    assert config.reload() == ("z",)
    assert list(config) == ["a", "z"]
    assert isinstance(config["z"].policies[0], Bulkhead)


# -- all or nothing --------------------------------------------------------------------------------
def test_a_removed_pipeline_is_an_error_and_the_old_one_keeps_working(
    files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    """Removing a held pipeline raises ConfigError naming it; nothing changes; it is logged."""
    config = files.load("[pipelines.a]\nfallback = {value = 1}\n\n[pipelines.b]\ntimeout = {}\n")
    a = config["a"]
    files.write("[pipelines.b]\ntimeout = {seconds = 5}\n")
    with (
        caplog.at_level(logging.ERROR, logger="failsafe.config"),
        pytest.raises(ConfigError) as caught,
    ):
        config.reload()
    assert caught.value.key == "pipelines.a"
    assert "is gone from the configuration" in str(caught.value)
    assert "reload failed, the running configuration is kept" in caplog.text
    assert config["a"] is a
    assert a.call(down) == 1
    assert config["b"].policies[0].seconds == 30  # type: ignore[attr-defined]


def test_a_failed_reload_changes_nothing_anywhere(files: Files) -> None:
    """A valid change to one pipeline is not applied when another is invalid."""
    config = files.load(TWO.format(ratio=0.2, attempts=3, slots=4))
    before = {name: p.policies for name, p in config.items()}
    files.write(TWO.format(ratio=0.2, attempts=0, slots=8))
    with pytest.raises(ConfigError, match="attempts = 0: must be an integer >= 1"):
        config.reload()
    assert {name: p.policies for name, p in config.items()} == before
    assert config["a"].version == 1


def test_a_successful_reload_logs_what_changed(
    files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    """One log line per reload names the pipelines that changed."""
    config = files.load(TWO.format(ratio=0.2, attempts=3, slots=4))
    files.write(TWO.format(ratio=0.2, attempts=5, slots=4))
    with caplog.at_level(logging.INFO, logger="failsafe.config"):
        config.reload()
        config.reload()
    messages = [r.getMessage() for r in caplog.records if r.name == "failsafe.config"]
    assert messages == [
        f"{files.path}: reloaded; pipelines changed: a",
        f"{files.path}: reloaded; no pipeline changed",
    ]


# -- calls in flight -------------------------------------------------------------------------------
VERSIONED = """
[pipelines.p]
fallback = {{value = "{value}"}}
retry = {{attempts = {attempts}, backoff = {{kind = "none"}}, on = "ConnectionError"}}
"""


def test_a_sync_call_in_flight_finishes_under_the_options_it_started_with(files: Files) -> None:
    """A call blocked across a reload ends under the old options; the next uses the new."""
    config = files.load(VERSIONED.format(value="old", attempts=1))
    pipeline = config["p"]
    started, release = threading.Event(), threading.Event()
    attempts: list[int] = []
    results: list[object] = []

    def blocked() -> None:
        attempts.append(1)
        started.set()
        assert release.wait(10)
        raise ConnectionError

    thread = threading.Thread(target=lambda: results.append(pipeline.call(blocked)))
    thread.start()
    assert started.wait(10)
    files.write(VERSIONED.format(value="new", attempts=3))
    assert config.reload() == ("p",)
    release.set()
    thread.join(10)
    assert (results, len(attempts)) == (["old"], 1)
    attempts.clear()
    assert pipeline.call(blocked) == "new"
    assert len(attempts) == 3


def test_an_async_call_in_flight_finishes_under_the_options_it_started_with(
    files: Files,
) -> None:
    """The same across an await: the task that started first ends under the old pipeline."""
    config = files.load(VERSIONED.format(value="old", attempts=1))
    pipeline = config["p"]
    attempts: list[int] = []

    async def scenario() -> tuple[object, object]:
        started, release = asyncio.Event(), asyncio.Event()

        async def blocked() -> None:
            attempts.append(1)
            started.set()
            await release.wait()
            raise ConnectionError

        first = asyncio.ensure_future(pipeline.call_async(blocked))
        await started.wait()
        files.write(VERSIONED.format(value="new", attempts=2))
        config.reload()
        release.set()
        old = await first
        count = len(attempts)
        attempts.clear()
        new = await pipeline.call_async(blocked)
        return (old, count), (new, len(attempts))

    assert asyncio.run(scenario()) == (("old", 1), ("new", 2))


def test_concurrent_calls_never_mix_two_versions() -> None:
    """Under reloads back and forth, every call sees one version's fallback and retry together."""
    data: dict[str, Any] = {"pipelines": {"p": {}}}

    def version(value: str, attempts: int) -> None:
        data["pipelines"]["p"] = {
            "fallback": {"value": value},
            "retry": {"attempts": attempts, "backoff": {"kind": "none"}, "on": "ConnectionError"},
        }

    version("one", 1)
    config = from_dict(data)
    pipeline = config["p"]
    local = threading.local()
    mixed: list[tuple[object, int]] = []
    stop = threading.Event()

    def failing() -> None:
        local.attempts += 1
        raise ConnectionError

    def caller() -> None:
        while not stop.is_set():
            local.attempts = 0
            got = pipeline.call(failing)
            if (got, local.attempts) not in (("one", 1), ("two", 2)):
                mixed.append((got, local.attempts))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(200):
            version(*(("two", 2) if n % 2 == 0 else ("one", 1)))
            config.reload()
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert mixed == []
    assert pipeline.version == 201


def test_decorated_functions_and_nested_uses_follow_reloads() -> None:
    """A decorated function and a pipeline nesting the configured one run the current version."""
    data: dict[str, Any] = {"pipelines": {"p": {"fallback": {"value": 1}}}}
    config = from_dict(data)
    configured = config["p"]

    @configured
    def fails() -> int:
        raise ValueError

    @configured
    async def fails_async() -> int:
        raise ValueError

    outer = Pipeline(configured)
    assert (fails(), asyncio.run(fails_async()), outer.call(fails.__wrapped__)) == (1, 1, 1)  # type: ignore[attr-defined]
    data["pipelines"]["p"]["fallback"]["value"] = 2
    config.reload()

    async def raising() -> int:
        raise ValueError

    assert fails() == 2
    assert asyncio.run(fails_async()) == 2
    assert outer.call(fails.__wrapped__) == 2  # type: ignore[attr-defined]
    assert asyncio.run(outer.call_async(raising)) == 2


def test_an_async_fallback_handler_fails_plain_calls_as_a_pipeline_does(
    files: Files,
) -> None:
    """A pipeline that cannot bind for ``call`` raises UsageError at each call, before and after."""
    files.write("")
    config = from_dict(
        {"pipelines": {"p": {"fallback": {"handler": "tests.test_config_reload:async_handler"}}}}
    )
    with pytest.raises(UsageError):
        config["p"].call(down)

    async def afn() -> None:
        raise ConnectionError

    assert asyncio.run(config["p"].call_async(afn)) == "async"


async def async_handler(outcome: object) -> str:
    """An async fallback handler (an import string of the test above)."""
    return "async"


# -- watching --------------------------------------------------------------------------------------
def test_check_for_changes_reloads_only_on_a_change(files: Files) -> None:
    """One poll: False when the file is the same, True after an edit, once per bad edit."""
    config = files.load("[pipelines.a]\ntimeout = {seconds = 1}\n")
    assert config.check_for_changes() is False
    files.write("[pipelines.a]\ntimeout = {seconds = 1}\n")  # rewritten, same bytes
    assert config.check_for_changes() is False
    files.write("[pipelines.a]\ntimeout = {seconds = 2}\n")
    assert config.check_for_changes() is True
    assert config["a"].policies[0].seconds == 2  # type: ignore[attr-defined]
    files.write("[pipelines.a]\ntimeout = {seconds = -2}\n")
    with pytest.raises(ConfigError):
        config.check_for_changes()
    assert config.check_for_changes() is False  # reported once, not at every poll
    assert config["a"].policies[0].seconds == 2  # type: ignore[attr-defined]
    files.path.unlink()
    with pytest.raises(ConfigError, match="cannot read the file"):
        config.check_for_changes()
    assert config.check_for_changes() is False
    files.write("[pipelines.a]\ntimeout = {seconds = 3}\n")
    assert config.check_for_changes() is True
    assert config["a"].policies[0].seconds == 3  # type: ignore[attr-defined]


def test_check_for_changes_sees_the_environment_and_a_dict(files: Files) -> None:
    """A changed FAILSAFE_* variable, or a changed dict, is a change too."""
    environ: dict[str, str] = {}
    config = files.load("[pipelines.a]\ntimeout = {seconds = 1}\n", environ=environ)
    environ["FAILSAFE_A_TIMEOUT_SECONDS"] = "7"
    assert config.check_for_changes() is True
    assert config["a"].policies[0].seconds == 7  # type: ignore[attr-defined]
    data: dict[str, Any] = {"pipelines": {"d": {"timeout": {"seconds": 1}}}}
    from_data = from_dict(data)
    assert from_data.check_for_changes() is False
    data["pipelines"]["d"]["timeout"]["seconds"] = 4
    assert from_data.check_for_changes() is True
    assert from_data["d"].policies[0].seconds == 4  # type: ignore[attr-defined]


class _Reloads(logging.Handler):
    """Sets an event when the configuration logs a reload (the watch thread's work is done)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.seen.set()


@pytest.fixture
def reloads() -> Iterator[_Reloads]:
    handler = _Reloads()
    logger = logging.getLogger("failsafe.config")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.real_time  # waits (bounded) for the watch thread to finish its poll
def test_a_watch_polls_each_time_fake_time_passes_the_interval(
    files: Files, reloads: _Reloads
) -> None:
    """With a FakeClock, the watch thread polls as the test moves time; a change is reloaded."""
    config = files.load("[pipelines.a]\ntimeout = {seconds = 1}\n")
    clock = FakeClock()
    with config.watch(interval=5, clock=clock) as watch:
        assert watch.running
        files.write("[pipelines.a]\ntimeout = {seconds = 2}\n")
        for _ in range(500):  # the thread arms its timer when it gets to it: move time until
            clock.advance(5)
            if reloads.seen.wait(0.01):
                break
        assert reloads.messages == [f"{files.path}: reloaded; pipelines changed: a"]
        assert config["a"].policies[0].seconds == 2  # type: ignore[attr-defined]
    assert not watch.running


@pytest.mark.real_time  # the thread is joined on close
def test_a_watch_on_the_real_clock_closes_at_once_and_only_one_runs(files: Files) -> None:
    """close() wakes the thread at once; a second watch while one runs is refused."""
    config = files.load("[pipelines.a]\ntimeout = {}\n")
    watch = config.watch(interval=3600)
    with pytest.raises(UsageError, match="already watched"):
        config.watch()
    watch.close()
    assert not watch.running
    assert "closed" in repr(watch)
    config.watch(interval=3600).close()  # a new one once the first is closed


@pytest.mark.parametrize("interval", [0, -1, float("inf"), "2", True])
def test_a_bad_interval_is_refused(files: Files, interval: Any) -> None:
    """The interval must be a finite number of seconds > 0."""
    config = files.load("[pipelines.a]\ntimeout = {}\n")
    with pytest.raises(ConfigurationError, match="interval"):
        config.watch(interval=interval)


# -- checks: a user of a pipeline refuses a new version -------------------------------------------
class _Owner:
    """A user of a configured pipeline whose check refuses (or accepts) each candidate."""

    def __init__(self, refuse: BaseException | None = None) -> None:
        self.refuse = refuse
        self.seen: list[Pipeline] = []

    def check(self, candidate: Pipeline) -> None:
        self.seen.append(candidate)
        if self.refuse is not None:
            raise self.refuse


CHECKED = "[pipelines.a]\nretry = {{attempts = {attempts}}}\n\n[pipelines.b]\ntimeout = {{}}\n"


def test_a_refusing_check_fails_the_reload_and_changes_nothing(
    files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    """A check that raises ConfigurationError fails reload(): pipeline, file and line named."""
    config = files.load(CHECKED.format(attempts=2))
    a, b = config["a"], config["b"]
    before = a.policies
    owner = _Owner(ConfigurationError("policies", "cannot run a retry of 3 attempts"))
    a._add_check(owner.check)
    files.write(CHECKED.format(attempts=3).replace("timeout = {}", "timeout = {seconds = 5}"))
    with (
        caplog.at_level(logging.ERROR, logger="failsafe.config"),
        pytest.raises(ConfigError) as caught,
    ):
        config.reload()
    error = caught.value
    assert (error.file, error.line, error.key) == (str(files.path), 1, "pipelines.a")
    assert str(error).endswith(
        "pipelines.a: a user of this pipeline cannot run the new version: "
        "policies: cannot run a retry of 3 attempts"
    )
    assert "reload failed, the running configuration is kept" in caplog.text
    assert [p.policies[0].attempts for p in owner.seen] == [3]  # type: ignore[attr-defined]
    assert (a.version, a.policies, b.version) == (1, before, 1)
    assert config["b"].policies[0].seconds == 30  # type: ignore[attr-defined]
    owner.refuse = None
    assert config.reload() == ("a", "b")
    assert a.pipeline is owner.seen[-1]  # the candidate checked is the pipeline swapped in


def test_a_check_that_fails_otherwise_fails_the_reload_naming_only_its_type(files: Files) -> None:
    """A check raising another exception fails the reload; its message is not repeated."""
    config = files.load(CHECKED.format(attempts=2))
    owner = _Owner(RuntimeError("token s3cret"))
    config["a"]._add_check(owner.check)
    files.write(CHECKED.format(attempts=3))
    with pytest.raises(ConfigError, match=r"raised builtins\.RuntimeError$") as caught:
        config.reload()
    assert "s3cret" not in str(caught.value)
    assert config["a"].version == 1


def test_checks_run_only_for_a_changed_pipeline(files: Files) -> None:
    """An unchanged pipeline's checks are not asked: its reload is not theirs to refuse."""
    config = files.load(CHECKED.format(attempts=2))
    owner = _Owner(ConfigurationError("policies", "no"))
    config["b"]._add_check(owner.check)
    files.write(CHECKED.format(attempts=3))
    assert config.reload() == ("a",)
    assert owner.seen == []


def test_a_refusal_seen_by_check_for_changes_is_logged_once_and_the_old_kept(
    files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    """check_for_changes (a watch's poll) raises and logs a refusal once; the old one runs."""
    config = files.load(CHECKED.format(attempts=2))
    owner = _Owner(ConfigurationError("policies", "refused"))
    config["a"]._add_check(owner.check)
    files.write(CHECKED.format(attempts=3))
    with caplog.at_level(logging.ERROR, logger="failsafe.config"):
        with pytest.raises(ConfigError, match="policies: refused"):
            config.check_for_changes()
        assert config.check_for_changes() is False  # the same file: not tried again
    [record] = [r for r in caplog.records if r.name == "failsafe.config"]
    assert "pipelines.a: a user of this pipeline cannot run the new version" in record.message
    assert config["a"].policies[0].attempts == 2  # type: ignore[attr-defined]
    assert len(owner.seen) == 1


def test_checks_are_held_weakly_and_bounded(files: Files) -> None:
    """A dropped owner's check is neither kept nor asked; at most 1024 live checks are held."""
    config = files.load(CHECKED.format(attempts=2))
    a = config["a"]
    owner = _Owner(ConfigurationError("policies", "no"))
    a._add_check(owner.check)
    del owner
    gc.collect()
    files.write(CHECKED.format(attempts=3))
    assert config.reload() == ("a",)
    owners = [_Owner() for _ in range(1024)]
    for each in owners:
        a._add_check(each.check)
    with pytest.raises(UsageError, match="1024 live checks"):
        a._add_check(_Owner().check)
    del owners[-1], each
    gc.collect()
    a._add_check(_Owner().check)  # room again: the dead one is dropped
    a._remove_check(owners[0].check)
    files.write(CHECKED.format(attempts=4))
    assert config.reload() == ("a",)
    assert [len(o.seen) for o in (owners[0], owners[1])] == [0, 1]
