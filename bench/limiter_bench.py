"""``python -m bench.limiter_bench [--quick]``: failsafe's RateLimiter against its peers.

Three measures, each with its target:

1. **Acquire cost in process memory** (ns per permit), sync and async: failsafe's
   `RateLimiter` (``try_acquire`` / ``await acquire_async``, token bucket and sliding
   window) against aiolimiter (``await acquire()``; it has no sync acquire), pyrate-limiter
   (``Limiter.try_acquire(blocking=False)`` over a GCRA ``StateBucket``), limits
   (``hit`` with the fixed window and the sliding window counter) and throttled-py
   (``Throttled.limit`` with GCRA and the token bucket). Every limit is high enough that
   every acquire is admitted: the admit path is measured. Timed by `bench.harness` (the
   best loop of several, GC off while timing). Target: failsafe at most 0.5x the fastest
   peer's cost, sync and async.
2. **Acquire cost with the state in Redis** (the local server), sync and async: failsafe
   (``redis_rate_limit``) against the Redis backends of pyrate-limiter
   (``RedisStateStore``), limits (``RedisStorage``) and throttled-py (``RedisStore``), and
   the **round trips per acquire**, counted by wrapping redis-py's
   ``send_packed_command`` (one call per round trip: a pipeline sends all its commands
   at once). Targets: one round trip per acquire, and at most 1.2x the fastest
   Redis-backed peer's cost.
3. **Accuracy in real time**: callers as fast as one thread goes, for 10 s (quick: 2 s),
   against a limit of 1,000/s (a token bucket with its default ``burst``, one second of
   permits, and a sliding window of 1,000 per second); the admitted count is compared with
   ``rate * T`` (+ ``burst``). The bucket's default burst lets a thread paused by the OS
   (this machine runs other work) catch up on the permits of its pause, as it should:
   with ``burst=10`` a 76 ms pause lost 12% of a run's permits, which measures the
   scheduler, not the limiter. The longest gap between two tries is shown. Target:
   within 1%.

limits' moving window is left out: it keeps one entry per admitted call, inserted at the
head of a list, so with a limit high enough to admit a whole timing loop it grows (and
slows) without bound. failsafe's sliding window is measured with a 10 ms window (10^7
per window) for the same reason: its log holds the last window's permits.

``run(quick)`` returns a header line, then Markdown tables and one line per target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import version
from typing import Any

from bench.harness import Settings, time_async, time_sync
from failsafe import RateLimiter
from failsafe.rate_limiter import redis_rate_limit

REDIS_URL = "redis://127.0.0.1:6379/0"
HUGE = 10**9  # permits per second: every acquire of a timing loop is admitted
LOCAL_TARGET = 0.5  # failsafe's acquire cost over the fastest peer's, local
REDIS_TARGET = 1.2  # failsafe's acquire cost over the fastest Redis-backed peer's
ACCURACY = 0.01

PEERS = ("aiolimiter", "pyrate-limiter", "limits", "throttled-py", "redis")

SyncCase = Callable[[], Callable[[int], Any]]
AsyncCase = Callable[[], Callable[[int], Awaitable[Any]]]


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _admitted(result: Any) -> bool:
    """Normalise each library's answer: True when the permit was granted."""
    if result is None:  # aiolimiter's acquire returns nothing once it has the capacity
        return True
    limited = getattr(result, "limited", None)  # throttled-py's RateLimitResult
    if limited is not None:
        return not limited
    if isinstance(result, float):  # failsafe's acquire: the seconds waited
        return result == 0.0
    return bool(result)


# -- local cases ---------------------------------------------------------------------------
def _failsafe_bucket() -> RateLimiter:
    return RateLimiter(rate=HUGE, per=1.0, burst=HUGE)


def _failsafe_window() -> RateLimiter:
    return RateLimiter.sliding_window(limit=10**7, window=0.01)


def _pyrate(store: Any = None) -> Any:
    from pyrate_limiter import GCRA, Duration, Limiter, Rate, StateBucket

    bucket = StateBucket([Rate(HUGE, Duration.SECOND)], algorithm=GCRA(), store=store)
    return Limiter(bucket)


def _limits(kind: str, storage: Any, aio: bool) -> Any:
    if aio:
        from limits.aio import strategies
    else:
        from limits import strategies  # type: ignore[no-redef]
    cls = {
        "fixed window": strategies.FixedWindowRateLimiter,
        "sliding window counter": strategies.SlidingWindowCounterRateLimiter,
    }[kind]
    return cls(storage)


def _limit_item() -> Any:
    from limits import RateLimitItemPerSecond

    return RateLimitItemPerSecond(HUGE)


def _throttled(using: str, store: Any, aio: bool) -> Any:
    if aio:
        from throttled.asyncio import Throttled, rate_limiter
    else:
        from throttled import Throttled, rate_limiter  # type: ignore[assignment]
    return Throttled(key="bench", using=using, quota=rate_limiter.per_sec(HUGE), store=store)


def _local_sync_cases() -> dict[str, SyncCase]:
    from limits.storage import MemoryStorage

    def failsafe(build: Callable[[], RateLimiter]) -> SyncCase:
        def make() -> Callable[[int], Any]:
            take = build().try_acquire
            return lambda _: take()

        return make

    def pyrate() -> Callable[[int], Any]:
        take = _pyrate().try_acquire
        return lambda _: take("bench", blocking=False)

    def limits(kind: str) -> SyncCase:
        def make() -> Callable[[int], Any]:
            hit, item = _limits(kind, MemoryStorage(), aio=False).hit, _limit_item()
            return lambda _: hit(item, "bench")

        return make

    def throttled(using: str) -> SyncCase:
        def make() -> Callable[[int], Any]:
            from throttled import store

            limit = _throttled(using, store.MemoryStore(), aio=False).limit
            return lambda _: limit("bench")

        return make

    return {
        "failsafe token bucket (GCRA)": failsafe(_failsafe_bucket),
        "failsafe sliding window (exact log)": failsafe(_failsafe_window),
        "pyrate-limiter GCRA": pyrate,
        "limits fixed window": limits("fixed window"),
        "limits sliding window counter": limits("sliding window counter"),
        "throttled-py GCRA": throttled("gcra"),
        "throttled-py token bucket": throttled("token_bucket"),
    }


def _local_async_cases() -> dict[str, AsyncCase]:
    from limits.aio.storage import MemoryStorage

    def failsafe(build: Callable[[], RateLimiter]) -> AsyncCase:
        def make() -> Callable[[int], Awaitable[Any]]:
            take = build().acquire_async
            return lambda _: take()

        return make

    def aiolimiter() -> Callable[[int], Awaitable[Any]]:
        from aiolimiter import AsyncLimiter

        acquire = AsyncLimiter(HUGE, 1).acquire
        return lambda _: acquire()

    def pyrate() -> Callable[[int], Awaitable[Any]]:
        take = _pyrate().try_acquire_async
        return lambda _: take("bench", blocking=False)

    def limits(kind: str) -> AsyncCase:
        def make() -> Callable[[int], Awaitable[Any]]:
            hit, item = _limits(kind, MemoryStorage(), aio=True).hit, _limit_item()
            return lambda _: hit(item, "bench")

        return make

    def throttled(using: str) -> AsyncCase:
        def make() -> Callable[[int], Awaitable[Any]]:
            from throttled.asyncio import store

            limit = _throttled(using, store.MemoryStore(), aio=True).limit
            return lambda _: limit("bench")

        return make

    return {
        "failsafe token bucket (GCRA)": failsafe(_failsafe_bucket),
        "failsafe sliding window (exact log)": failsafe(_failsafe_window),
        "aiolimiter (leaky bucket)": aiolimiter,
        "pyrate-limiter GCRA": pyrate,
        "limits fixed window": limits("fixed window"),
        "limits sliding window counter": limits("sliding window counter"),
        "throttled-py GCRA": throttled("gcra"),
        "throttled-py token bucket": throttled("token_bucket"),
    }


# -- Redis cases ---------------------------------------------------------------------------
def _namespace() -> str:
    return f"bench-limiter-{uuid.uuid4().hex[:12]}"


def _redis_sync_cases() -> dict[str, SyncCase]:
    import redis

    def failsafe(sliding: bool) -> SyncCase:
        def make() -> Callable[[int], Any]:
            storage = redis_rate_limit(REDIS_URL, namespace=_namespace())
            if sliding:
                limiter = RateLimiter.sliding_window(limit=10**7, window=0.01, storage=storage)
            else:
                limiter = RateLimiter(rate=HUGE, burst=HUGE, storage=storage)
            take = limiter.try_acquire
            return lambda _: take()

        return make

    def pyrate() -> Callable[[int], Any]:
        from pyrate_limiter import RedisStateStore

        store = RedisStateStore(redis.Redis.from_url(REDIS_URL), key=_namespace())
        take = _pyrate(store).try_acquire
        return lambda _: take("bench", blocking=False)

    def limits(kind: str) -> SyncCase:
        def make() -> Callable[[int], Any]:
            from limits.storage import RedisStorage

            storage = RedisStorage(REDIS_URL, key_prefix=_namespace())
            hit, item = _limits(kind, storage, aio=False).hit, _limit_item()
            return lambda _: hit(item, "bench")

        return make

    def throttled(using: str) -> SyncCase:
        def make() -> Callable[[int], Any]:
            from throttled import store

            throttle = _throttled(using, store.RedisStore(server=REDIS_URL), aio=False)
            key = _namespace()
            return lambda _: throttle.limit(key)

        return make

    return {
        "failsafe token bucket (GCRA)": failsafe(False),
        "failsafe sliding window (exact log)": failsafe(True),
        "pyrate-limiter GCRA (RedisStateStore)": pyrate,
        "limits fixed window (RedisStorage)": limits("fixed window"),
        "limits sliding window counter (RedisStorage)": limits("sliding window counter"),
        "throttled-py GCRA (RedisStore)": throttled("gcra"),
        "throttled-py token bucket (RedisStore)": throttled("token_bucket"),
    }


def _redis_async_cases() -> dict[str, AsyncCase]:
    import redis.asyncio

    def failsafe(sliding: bool) -> AsyncCase:
        def make() -> Callable[[int], Awaitable[Any]]:
            storage = redis_rate_limit(REDIS_URL, namespace=_namespace())
            if sliding:
                limiter = RateLimiter.sliding_window(limit=10**7, window=0.01, storage=storage)
            else:
                limiter = RateLimiter(rate=HUGE, burst=HUGE, storage=storage)
            take = limiter.acquire_async
            return lambda _: take()

        return make

    def pyrate() -> Callable[[int], Awaitable[Any]]:
        from pyrate_limiter import RedisStateStore

        store = RedisStateStore(redis.asyncio.Redis.from_url(REDIS_URL), key=_namespace())
        take = _pyrate(store).try_acquire_async
        return lambda _: take("bench", blocking=False)

    def limits(kind: str) -> AsyncCase:
        def make() -> Callable[[int], Awaitable[Any]]:
            from limits.aio.storage import RedisStorage

            storage = RedisStorage(
                f"async+{REDIS_URL}", implementation="redispy", key_prefix=_namespace()
            )
            hit, item = _limits(kind, storage, aio=True).hit, _limit_item()
            return lambda _: hit(item, "bench")

        return make

    def throttled(using: str) -> AsyncCase:
        def make() -> Callable[[int], Awaitable[Any]]:
            from throttled.asyncio import store

            throttle = _throttled(using, store.RedisStore(server=REDIS_URL), aio=True)
            key = _namespace()
            return lambda _: throttle.limit(key)

        return make

    return {
        "failsafe token bucket (GCRA)": failsafe(False),
        "failsafe sliding window (exact log)": failsafe(True),
        "pyrate-limiter GCRA (RedisStateStore)": pyrate,
        "limits fixed window (RedisStorage)": limits("fixed window"),
        "limits sliding window counter (RedisStorage)": limits("sliding window counter"),
        "throttled-py GCRA (RedisStore)": throttled("gcra"),
        "throttled-py token bucket (RedisStore)": throttled("token_bucket"),
    }


# -- round trips ---------------------------------------------------------------------------
@contextlib.contextmanager
def _counting_sends() -> Iterator[list[int]]:
    """Count redis-py's ``send_packed_command`` calls (one per round trip), sync and async."""
    import redis.asyncio.connection as aconn
    import redis.connection as conn

    counter = [0]
    sync_send = conn.AbstractConnection.send_packed_command
    async_send = aconn.AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return sync_send(self, *args, **kwargs)

    async def acounted(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await async_send(self, *args, **kwargs)

    conn.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    aconn.AbstractConnection.send_packed_command = acounted  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        conn.AbstractConnection.send_packed_command = sync_send  # type: ignore[method-assign]
        aconn.AbstractConnection.send_packed_command = async_send  # type: ignore[method-assign]


_TRIPS_N = 200


def _trips_sync(call: Callable[[int], Any]) -> float:
    for _ in range(10):  # connect, load scripts
        call(0)
    with _counting_sends() as counter:
        for _ in range(_TRIPS_N):
            call(0)
    return counter[0] / _TRIPS_N


async def _trips_async(call: Callable[[int], Awaitable[Any]]) -> float:
    for _ in range(10):
        await call(0)
    with _counting_sends() as counter:
        for _ in range(_TRIPS_N):
            await call(0)
    return counter[0] / _TRIPS_N


# -- timing --------------------------------------------------------------------------------
def _check_sync(label: str, call: Callable[[int], Any]) -> None:
    refused = sum(not _admitted(call(0)) for _ in range(1_000))
    if refused:
        raise AssertionError(f"{label}: {refused} of 1,000 acquires refused: not the admit path")


async def _check_async(label: str, call: Callable[[int], Awaitable[Any]]) -> None:
    refused = 0
    for _ in range(1_000):
        refused += not _admitted(await call(0))
    if refused:
        raise AssertionError(f"{label}: {refused} of 1,000 acquires refused: not the admit path")


def _time_cases(
    sync_cases: dict[str, SyncCase],
    async_cases: dict[str, AsyncCase],
    settings: Settings,
    trips: bool,
) -> dict[str, dict[str, float]]:
    """{label: {"sync": ns, "async": ns, "sync trips": n, "async trips": n}}, best of rounds."""
    results: dict[str, dict[str, float]] = {}
    one_round = Settings(rounds=1, repeats=settings.repeats, repeat_ns=settings.repeat_ns)
    for _ in range(settings.rounds):
        for label, make in sync_cases.items():
            call = make()
            _check_sync(label, call)
            row = results.setdefault(label, {})
            ns = time_sync(call, one_round).ns_per_call
            row["sync"] = min(row.get("sync", ns), ns)
            if trips and "sync trips" not in row:
                row["sync trips"] = _trips_sync(call)
        for label, amake in async_cases.items():

            async def measure(amake: AsyncCase = amake, label: str = label) -> None:
                acall = amake()
                await _check_async(label, acall)
                row = results.setdefault(label, {})
                ns = (await time_async(acall, one_round)).ns_per_call
                row["async"] = min(row.get("async", ns), ns)
                if trips and "async trips" not in row:
                    row["async trips"] = await _trips_async(acall)

            asyncio.run(measure())
    return results


def _fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1000:,.1f} us" if ns >= 10_000 else f"{ns:,.0f} ns"


def _table(results: dict[str, dict[str, float]], trips: bool) -> list[str]:
    if trips:
        lines = [
            "| limiter | sync acquire | round trips | async acquire | round trips |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
    else:
        lines = ["| limiter | sync acquire | async acquire |", "| --- | ---: | ---: |"]
    for label, row in results.items():
        cells = [label, _fmt_ns(row.get("sync"))]
        if trips:
            cells.append(f"{row['sync trips']:g}" if "sync trips" in row else "-")
        cells.append(_fmt_ns(row.get("async")))
        if trips:
            cells.append(f"{row['async trips']:g}" if "async trips" in row else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fastest(results: dict[str, dict[str, float]], kind: str) -> tuple[str, float]:
    peers = {
        label: row[kind]
        for label, row in results.items()
        if kind in row and not label.startswith("failsafe")
    }
    label = min(peers, key=peers.__getitem__)
    return label, peers[label]


def _ratio_lines(results: dict[str, dict[str, float]], target: float, where: str) -> list[str]:
    lines = []
    for kind in ("sync", "async"):
        ours = results["failsafe token bucket (GCRA)"][kind]
        peer, theirs = _fastest(results, kind)
        ratio = ours / theirs
        lines.append(
            f"- {_verdict(ratio <= target)}: {where} {kind} acquire: failsafe "
            f"{_fmt_ns(ours)} = {ratio:.2f}x the fastest peer ({peer}, {_fmt_ns(theirs)}); "
            f"target <= {target:g}x"
        )
    return lines


# -- accuracy ------------------------------------------------------------------------------
def _accuracy(seconds: float) -> list[str]:
    rows, verdicts = [], []
    for label, limiter, first in (
        ("token bucket, rate=1000/s, burst=1000 (the default)", RateLimiter(rate=1000), 1000),
        ("sliding window, 1000 per 1 s", RateLimiter.sliding_window(limit=1000, window=1.0), 0),
    ):
        take = limiter.try_acquire
        admitted = tries = 0
        clock = time.monotonic
        start = last = clock()
        end = start + seconds
        gap = 0.0
        while (now := clock()) < end:
            gap = max(gap, now - last)
            last = now
            tries += 1
            admitted += take()
        expected = 1000 * seconds + first
        error = (admitted - expected) / (1000 * seconds)  # of the permits due to the rate
        rows.append(
            f"| {label} | {seconds:g} s | {tries:,} | {gap * 1000:.1f} ms | {admitted:,} | "
            f"{expected:,.0f} | {error:+.3%} |"
        )
        verdicts.append(
            f"- {_verdict(abs(error) <= ACCURACY)}: accuracy, {label}: {admitted:,} admitted "
            f"in {seconds:g} s of real time against {expected:,.0f} expected ({error:+.3%}); "
            f"target within {ACCURACY:.0%}"
        )
    table = [
        "| limit | time | tries | longest gap between tries | admitted "
        "| expected (rate x T + burst) | error (of rate x T) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    return table + verdicts


# -- report --------------------------------------------------------------------------------
def _versions() -> str:
    found = []
    for name in PEERS:
        try:
            found.append(f"{name} {version(name)}")
        except Exception:  # pragma: no cover - a peer missing from the environment
            found.append(f"{name} (missing)")
    return ", ".join(found)


def run(quick: bool) -> list[str]:
    settings = (
        Settings(rounds=1, repeats=3, repeat_ns=20_000_000)
        if quick
        else Settings(rounds=3, repeats=3, repeat_ns=50_000_000)
    )
    redis_settings = (
        Settings(rounds=1, repeats=2, repeat_ns=50_000_000)
        if quick
        else Settings(rounds=2, repeats=3, repeat_ns=200_000_000)
    )
    seconds = 2.0 if quick else 10.0
    header = (
        f"Rate limiters: acquire cost on the admit path (best of {settings.rounds} rounds x "
        f"{settings.repeats} loops of ~{settings.repeat_ns // 1_000_000} ms, GC off), in "
        f"process memory and in Redis ({REDIS_URL}, round trips counted in redis-py), and "
        f"accuracy over {seconds:g} s of real time; failsafe-kit {version('failsafe-kit')}, "
        f"{_versions()}; Python {platform.python_version()} on {platform.machine()}"
    )
    local = _time_cases(_local_sync_cases(), _local_async_cases(), settings, trips=False)
    shared = _time_cases(_redis_sync_cases(), _redis_async_cases(), redis_settings, trips=True)
    lines = [header, "", "**In process memory** (ns per acquire)", ""]
    lines += _table(local, trips=False)
    lines += ["", "**State in Redis** (per acquire, and round trips per acquire)", ""]
    lines += _table(shared, trips=True)
    lines += [
        "",
        "**Accuracy** (one thread calling `try_acquire` as fast as it goes, real time)",
        "",
    ]
    accuracy = _accuracy(seconds)
    lines += [line for line in accuracy if line.startswith("|")]
    lines += [""]
    lines += _ratio_lines(local, LOCAL_TARGET, "local")
    failsafe_trips = [
        shared[label][kind]
        for label in ("failsafe token bucket (GCRA)", "failsafe sliding window (exact log)")
        for kind in ("sync trips", "async trips")
    ]
    lines.append(
        f"- {_verdict(all(t == 1 for t in failsafe_trips))}: Redis round trips per acquire "
        f"(failsafe, both algorithms, sync and async): {sorted(set(failsafe_trips))}; "
        "target: 1 (one EVALSHA)"
    )
    lines += _ratio_lines(shared, REDIS_TARGET, "Redis")
    lines += [line for line in accuracy if line.startswith("- ")]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limiter_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter loops, 2 s of accuracy")
    args = parser.parse_args(argv)
    for line in run(args.quick):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
