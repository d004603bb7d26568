"""``python -m bench.dlq_bench [--quick]``: the DLQ command line on a large backlog (issue #15).

Three measures, each run by ``failsafe queue dlq`` in a child process of its own (so that its
peak RSS, the high-water mark of its own memory (``VmHWM``), is the command's and nothing else's):

1. **Listing**: ``dlq list --limit 100`` with 10,000 and 100,000 parked messages in a SQLite
   file: the command's time (in the child, from before ``main()`` to its return: interpreter
   start-up excluded) and its peak RSS, next to the same process's RSS just before the
   command ran. Target: memory flat, the same at 10k and 100k.
2. **Replay rate**: ``dlq replay --rate 20000`` of 100,000 parked messages (20,000 with
   ``--quick``): the achieved rate (messages / the command's time) and its ratio to the asked
   rate. Target: >= 0.8 of it.
3. **Cost per message, early and late**: in the same replay, the time each batch took
   besides the rate limiter's pauses (the CLI's clock is wrapped to sum its sleeps), per
   message, over the first and the last tenth of the messages. Target: flat (late / early
   near 1), whatever the backlog.

The same, smaller, on the real RabbitMQ (``FAILSAFE_BENCH_AMQP``, default a local server):
``dlq list --limit 100`` with 2,000 parked and a replay at ``--rate 20000`` (1,000 with
``--quick``). RabbitMQ cannot browse a queue: each pass consumes the parking queue from its
head, and a replay publishes every message to the quorum work queue with a publisher
confirm, so its rate is bounded by those confirms, not by the ``--rate`` asked (reported,
not judged).

The SQLite files are filled by SQL straight into the broker's table (one transaction),
after ``SQLiteBroker`` created its schema: rows as ``park()`` writes them.

``run(quick)`` returns the lines to print (a header, then a Markdown table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["RATE", "run"]

QUEUE = "orders"
RATE = 20_000
"""The replay rate asked for (``--rate``), messages per second."""
TARGET_RATIO = 0.8
"""The least achieved rate, as a share of the asked one."""
LIST_LIMIT = 100
RABBIT = os.environ.get("FAILSAFE_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parent.parent
_ERROR = "app.errors.OrderNotFound"
_WALL_START = 1_700_000_000.0


def _envelope_json(i: int) -> bytes:
    from failsafe.queue import Envelope, ErrorInfo, encode

    return encode(
        Envelope(
            body=f'{{"orderId": "o-{i}", "status": "paid"}}'.encode(),
            id=f"m{i:07d}",
            headers={"tenant": "shop"},
            immediate_attempts=3,
            delayed_attempts=5,
            first_seen=_WALL_START + i * 0.001,
            last_error=ErrorInfo(type=_ERROR, message=f"order o-{i} not found", at=_WALL_START),
        )
    )


def seed_sqlite(path: Path, n: int) -> None:
    """A queue file with ``n`` parked messages of ``orders``, 1 ms apart, oldest first."""
    from failsafe.queue.sqlite import SQLiteBroker

    broker = SQLiteBroker(path)  # creates the schema (with its indexes)
    broker.declare(QUEUE)
    broker.close()
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany(
                "INSERT INTO failsafe_messages "
                "(queue, message_id, place, visible_at, since, envelope) "
                "VALUES (?, ?, 'parked', ?, ?, ?)",
                (
                    (QUEUE, f"m{i:07d}", _WALL_START + i * 0.001, _WALL_START + i * 0.001, e)
                    for i in range(n)
                    for e in (_envelope_json(i),)
                ),
            )
    finally:
        db.close()


async def seed_rabbitmq(queue: str, n: int) -> None:
    """Publish ``n`` parked messages to ``queue``'s parking queue, as `park` writes them."""
    import aio_pika

    from failsafe.queue.rabbitmq import RabbitMQBroker

    broker = RabbitMQBroker(RABBIT)
    await broker.declare(queue)
    await broker.aclose()
    connection = await aio_pika.connect(RABBIT)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange

        def message(i: int) -> aio_pika.Message:
            return aio_pika.Message(
                f'{{"orderId": "o-{i}", "status": "paid"}}'.encode(),
                message_id=f"m{i:07d}",
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={
                    "x-failsafe-immediate-attempts": 3,
                    "x-failsafe-delayed-attempts": 5,
                    "x-failsafe-error-type": _ERROR,
                    "x-failsafe-error-message": f"order o-{i} not found",
                    "x-failsafe-error-at": repr(_WALL_START),
                    "x-failsafe-parked-at": repr(_WALL_START + i * 0.001),
                },
            )

        for start in range(0, n, 500):
            await asyncio.gather(
                *(
                    exchange.publish(message(i), routing_key=f"{queue}.parked")
                    for i in range(start, min(n, start + 500))
                )
            )
    finally:
        await connection.close()


async def delete_rabbitmq(queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(RABBIT)
    try:
        channel = await connection.channel()
        for name in (queue, f"{queue}.parked"):
            await channel.queue_delete(name)
    finally:
        await connection.close()


# -- the child: one command, measured ---------------------------------------------------------
class _SleepCounter:
    """The system clock, summing the seconds the CLI's rate limiter slept."""

    def __init__(self) -> None:
        from failsafe.clock import SYSTEM_CLOCK

        self.real = SYSTEM_CLOCK
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.real.monotonic()

    def time(self) -> float:
        return self.real.time()

    def sleep(self, seconds: float) -> None:
        started = time.perf_counter()
        self.real.sleep(seconds)
        self.slept += time.perf_counter() - started

    async def sleep_async(self, seconds: float) -> None:
        await self.real.sleep_async(seconds)

    def timeout_async(self, seconds: float) -> Any:
        return self.real.timeout_async(seconds)


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out
    finally:
        sys.stdout, sys.stderr = saved


def _rss_mb() -> float:
    """This process's peak RSS so far (MB): its own pages only.

    Not getrusage: on Linux a process's ``ru_maxrss`` starts at its parent's peak when it
    is spawned (the kernel carries the old memory's high-water mark across exec), so a
    child of a large bench process reported the parent's 414 MB. ``VmHWM`` counts the
    memory of this program alone.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(kind: str, broker: str, queue: str) -> dict[str, Any]:
    import failsafe.queue.cli as qcli
    import failsafe.queue.connect
    import failsafe.queue.sqlite
    from failsafe.cli import main

    if broker.startswith("amqp"):
        import failsafe.queue.bridge
        import failsafe.queue.rabbitmq
    where = ["--broker", broker, "--queue", queue]
    marks: list[tuple[float, float, int]] = []  # (perf_counter, slept so far, messages)
    counter = _SleepCounter()
    if kind == "replay":
        qcli.clock = counter  # type: ignore[assignment]
        real_open = failsafe.queue.connect.open_broker

        def open_broker(url: str, **options: Any) -> Any:
            opened = real_open(url, **options)
            # time each broker call of the replay: replay_batch (one per --batch), or
            # replay(ids) on a failsafe from before issue #15 (for the "before" figures)
            name = "replay_batch" if hasattr(opened, "replay_batch") else "replay"
            call = getattr(opened, name)

            def timed(*args: Any, **kwargs: Any) -> Any:
                done = call(*args, **kwargs)
                count = len(done.ids) if name == "replay_batch" else len(args[1])
                marks.append((time.perf_counter(), counter.slept, count))
                return done

            setattr(opened, name, timed)
            return opened

        failsafe.queue.connect.open_broker = open_broker
        argv = ["queue", "dlq", "replay", *where, "--all", "--rate", str(RATE)]
    else:
        argv = ["queue", "dlq", "list", *where, "--limit", str(LIST_LIMIT)]
    floor = _rss_mb()
    with _captured() as out:
        started = time.perf_counter()
        code = main(argv)
        seconds = time.perf_counter() - started
    lines = out.getvalue().splitlines()
    return {
        "code": code,
        "seconds": seconds,
        "floor_mb": floor,
        "peak_mb": _rss_mb(),
        "started": started,
        "marks": marks,
        "last_line": lines[-1] if lines else "",
        "lines": len(lines),
    }


def _spawn(kind: str, broker: str, queue: str = QUEUE) -> dict[str, Any]:
    """Run one measured command in a child process; add its peak RSS (MB)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.dlq_bench", "--child", kind, broker, queue],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"dlq bench: the {kind} child failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(output)
    if result["code"] != 0:
        raise SystemExit(f"dlq bench: {kind} exited {result['code']}: {result['last_line']}")
    return result


def _per_message_us(result: dict[str, Any], n: int) -> tuple[float, float]:
    """Work per message (µs, the limiter's pauses left out) over the first and last tenth."""
    previous_t, previous_slept = result["started"], 0.0
    costs: list[tuple[int, float]] = []  # (messages, seconds of work)
    for t, slept, count in result["marks"]:
        costs.append((count, (t - previous_t) - (slept - previous_slept)))
        previous_t, previous_slept = t, slept
    tenth = max(1, n // 10)

    def over(batches: list[tuple[int, float]]) -> float:
        taken, seconds = 0, 0.0
        for count, work in batches:
            if taken >= tenth:
                break
            taken += count
            seconds += work
        return seconds / max(taken, 1) * 1e6

    return over(costs), over(costs[::-1])


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _list_row(label: str, result: dict[str, Any]) -> str:
    return (
        f"| {label} | {result['seconds'] * 1000:,.0f} ms | {result['peak_mb']:.1f} MB"
        f" (before the command: {result['floor_mb']:.1f} MB) |"
    )


def _replay_rows(label: str, result: dict[str, Any], n: int, judged: bool) -> list[str]:
    rate = n / result["seconds"]
    ratio = rate / RATE
    early, late = _per_message_us(result, n)
    verdict = f" {_verdict(ratio >= TARGET_RATIO)} (target >= {TARGET_RATIO})" if judged else ""
    return [
        f"| {label}: replay {n:,} at --rate {RATE:,} | {result['seconds']:.2f} s |"
        f" {rate:,.0f} msg/s = {ratio:.2f} of the asked rate{verdict} |",
        f"| {label}: work per message, first / last tenth | {early:.1f} / {late:.1f} µs |"
        f" late / early = {late / early:.2f} |",
    ]


def _bench_sqlite(folder: Path, sizes: tuple[int, ...], n_replay: int) -> list[str]:
    rows = []
    for n in sizes:
        path = folder / f"list{n}.db"
        seed_sqlite(path, n)
        result = _spawn("list", str(path))
        rows.append(_list_row(f"SQLite: list --limit {LIST_LIMIT}, {n:,} parked", result))
        path.unlink()
    path = folder / "replay.db"
    seed_sqlite(path, n_replay)
    result = _spawn("replay", str(path))
    if result["last_line"] != f"replayed {n_replay}, not found 0":
        raise SystemExit(f"dlq bench: replay said {result['last_line']!r}")
    rows += _replay_rows("SQLite", result, n_replay, judged=True)
    return rows


def _bench_rabbitmq(n_list: int, n_replay: int) -> list[str]:
    rows = []
    queue = f"bench.dlq.{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(seed_rabbitmq(queue, n_list))
        result = _spawn("list", RABBIT, queue)
        rows.append(_list_row(f"RabbitMQ: list --limit {LIST_LIMIT}, {n_list:,} parked", result))
    finally:
        asyncio.run(delete_rabbitmq(queue))
    queue = f"bench.dlq.{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(seed_rabbitmq(queue, n_replay))
        result = _spawn("replay", RABBIT, queue)
        rows += _replay_rows("RabbitMQ", result, n_replay, judged=False)
    finally:
        asyncio.run(delete_rabbitmq(queue))
    return rows


def run(quick: bool, rabbitmq: bool = True) -> list[str]:
    """Run every measure; return a header line and a Markdown table."""
    sizes = (10_000, 100_000)
    n_replay = 20_000 if quick else 100_000
    n_rabbit_list, n_rabbit_replay = (1_000, 1_000) if quick else (2_000, 2_000)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rows = _bench_sqlite(Path(folder), sizes, n_replay)
    if rabbitmq:
        rows += _bench_rabbitmq(n_rabbit_list, n_rabbit_replay)
    elapsed = time.perf_counter() - started
    return [
        "### failsafe queue dlq",
        "",
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}; each command in a"
        " child process (time from main() to its return; peak RSS: the high-water mark of its"
        " own memory); replay with"
        f" the default --batch; RabbitMQ on loopback. Ran in {elapsed:.0f} s.",
        "",
        "| measure | time | result |",
        "| --- | --- | --- |",
        *rows,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dlq_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller replay (20,000)")
    parser.add_argument("--no-rabbitmq", action="store_true", help="SQLite only")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "BROKER", "QUEUE"), help="internal")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0
    print("\n".join(run(args.quick, rabbitmq=not args.no_rabbitmq)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
