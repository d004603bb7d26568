"""The broker contract on the SQLite broker (on a fake clock), and what only it promises."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import failsafe.queue.sqlite
from failsafe.exceptions import ConfigurationError
from failsafe.queue import (
    AsyncBroker,
    Broker,
    BrokerError,
    Delivery,
    Envelope,
    ErrorInfo,
    NoSuchQueue,
    Place,
    SettleConflict,
    decode,
    encode,
)
from failsafe.queue.broker import DeadLetterCount, DeadLetterFilter
from failsafe.queue.sqlite import AsyncSQLiteBroker, SQLiteBroker
from failsafe.testing import FakeClock
from tests.queue.broker_contract import BrokerContract

LEASE = 30.0
ROOT = Path(__file__).resolve().parents[2]


class TestSQLiteBroker(BrokerContract):
    """The shared contract, in a SQLite file."""

    @pytest.fixture
    def broker(self, tmp_path: Path) -> Iterator[Broker]:
        self.path = tmp_path / "queue.db"
        self.opened: list[SQLiteBroker] = [SQLiteBroker(self.path, clock=FakeClock(), lease=LEASE)]
        yield self.opened[0]
        for broker in self.opened:
            broker.close()

    def elapse(self, broker: Broker, seconds: float) -> None:
        assert isinstance(broker, SQLiteBroker)
        clock = broker.clock
        assert isinstance(clock, FakeClock)
        clock.advance(seconds)

    def lose_consumer(self, broker: Broker) -> Broker:
        """Another process opens the file; the dead consumer's lease runs out."""
        assert isinstance(broker, SQLiteBroker)
        other = SQLiteBroker(self.path, clock=broker.clock, lease=LEASE)
        self.opened.append(other)
        self.elapse(other, LEASE)
        return other


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(tmp_path: Path, clock: FakeClock) -> Iterator[SQLiteBroker]:
    broker = SQLiteBroker(tmp_path / "queue.db", clock=clock, lease=LEASE)
    yield broker
    broker.close()


def _rows(path: Path | str, sql: str, *params: Any) -> list[Any]:
    db = sqlite3.connect(path)
    try:
        with db:
            return db.execute(sql, params).fetchall()
    finally:
        db.close()


# -- leases and several brokers on one file -------------------------------------------------
def test_lease_hands_a_message_out_again(broker: SQLiteBroker, clock: FakeClock) -> None:
    """A message held past its lease is delivered again; the old delivery is stale."""
    broker.publish("q", Envelope(body=b"x"))
    [first] = broker.receive("q")
    clock.advance(LEASE - 1)
    assert broker.receive("q") == []
    clock.advance(1)
    [second] = broker.receive("q")
    assert second.deliveries == 2
    for settle in (broker.ack, broker.release):
        with pytest.raises(SettleConflict):
            settle(first)
    with pytest.raises(SettleConflict):
        broker.park(first, first.message)
    broker.ack(second)
    assert broker.receive("q") == []


def test_release_does_not_count_the_delivery(broker: SQLiteBroker) -> None:
    """A released message comes back with the same delivery count, first in line."""
    broker.publish_many("q", [Envelope(body=b"a"), Envelope(body=b"b")])
    [a] = broker.receive("q")
    broker.release(a)
    [again] = broker.receive("q")
    assert (again.message.body, again.deliveries) == (b"a", 1)


def test_two_brokers_on_one_file_share_the_queue(tmp_path: Path, clock: FakeClock) -> None:
    """What one broker publishes, another receives and settles; no message twice."""
    path = tmp_path / "shared.db"
    one = SQLiteBroker(path, clock=clock)
    two = SQLiteBroker(path, clock=clock)
    try:
        one.publish_many("q", [Envelope(body=str(i).encode()) for i in range(4)])
        got = one.receive("q", limit=2) + two.receive("q", limit=10)
        assert sorted(d.message.body for d in got) == [b"0", b"1", b"2", b"3"]
        for delivery in got:
            two.ack(delivery)  # a delivery may be settled through any broker on the file
        assert one.receive("q") == []
    finally:
        one.close()
        two.close()


def test_defer_is_one_move_with_fresh_delivery_count(
    broker: SQLiteBroker, clock: FakeClock
) -> None:
    """A deferred message is listed with its due time and comes back counted from 1."""
    broker.publish("q", Envelope(body=b"x"))
    [d] = broker.receive("q")
    clock.advance(LEASE)  # lease ran out: the next receive counts a second delivery
    [d2] = broker.receive("q")
    assert d2.deliveries == 2
    later = attrs.evolve(d2.message, delayed_attempts=1)
    broker.defer(d2, later, 10.0)
    [letter] = broker.dead_letters("q")
    assert (letter.place, letter.since, letter.due_at) == (
        Place.DELAYED,
        clock.time(),
        clock.time() + 10.0,
    )
    with pytest.raises(SettleConflict):
        broker.ack(d)
    clock.advance(10.0)
    [back] = broker.receive("q")
    assert (back.message, back.deliveries) == (later, 1)


def test_settling_with_another_id_is_refused(broker: SQLiteBroker) -> None:
    """``park`` / ``defer`` must keep the delivered message's id."""
    broker.publish("q", Envelope(body=b"x"))
    [d] = broker.receive("q")
    with pytest.raises(ConfigurationError, match="message"):
        broker.park(d, Envelope(body=b"x"))
    broker.ack(d)  # still held: the refused call changed nothing


def test_replay_keeps_first_seen_and_error(broker: SQLiteBroker) -> None:
    """Replay resets only the attempt counts."""
    error = ErrorInfo(type="OSError", message="disk full", at=1_700_000_000.0)
    broker.publish("q", Envelope(body=b"x"))
    [d] = broker.receive("q")
    parked = attrs.evolve(
        d.message, immediate_attempts=3, delayed_attempts=2, first_seen=1.5, last_error=error
    )
    broker.park(d, parked)
    assert broker.replay("q", [d.message.id, d.message.id]) == 1
    [back] = broker.receive("q")
    assert back.message == attrs.evolve(parked, immediate_attempts=0, delayed_attempts=0)
    assert back.deliveries == 1


def test_replay_and_purge_many_ids(broker: SQLiteBroker) -> None:
    """Long id lists are handled (in chunks) and only the queue's dead letters match."""
    sent = [Envelope(body=str(i).encode()) for i in range(1200)]
    broker.publish_many("q", sent, delay=5.0)
    broker.publish("other", sent[0], delay=5.0)
    ids = [m.id for m in sent]
    assert broker.replay("q", ids[:700]) == 700
    assert broker.purge("q", ids) == 500
    assert len(broker.receive("q", limit=1000)) == 700
    assert len(broker.dead_letters("other")) == 1


def test_messages_survive_reopening(tmp_path: Path, clock: FakeClock) -> None:
    """Everything is in the file: a new broker finds ready, delayed and parked messages."""
    path = tmp_path / "q.db"
    first = SQLiteBroker(path, clock=clock)
    first.publish("q", Envelope(body=b"ready"))
    first.publish("q", Envelope(body=b"later"), delay=5.0)
    first.publish("q", Envelope(body=b"park"))
    [ready, park] = first.receive("q", limit=2)
    first.park(park, park.message)
    first.release(ready)
    first.close()
    second = SQLiteBroker(path, clock=clock)
    try:
        assert [x.message.body for x in second.dead_letters("q")] == [b"later", b"park"]
        assert [d.message.body for d in second.receive("q", limit=5)] == [b"ready"]
        assert second.queues() == ["q"]
    finally:
        second.close()


def test_closed_broker_refuses_calls(tmp_path: Path) -> None:
    """After ``close`` every call raises `BrokerError`; closing again is harmless."""
    broker = SQLiteBroker(tmp_path / "q.db", clock=FakeClock())
    broker.close()
    broker.close()
    assert broker.closed
    with pytest.raises(BrokerError, match="closed"):
        broker.publish("q", Envelope(body=b"x"))
    with pytest.raises(BrokerError, match="closed"):
        broker.receive("q")


def test_delivery_limit_is_none(broker: SQLiteBroker) -> None:
    """The SQLite broker has no cap of its own."""
    assert broker.delivery_limit("q") is None


# -- publish_many ---------------------------------------------------------------------------
def test_publish_many_keeps_order_and_counts(broker: SQLiteBroker, clock: FakeClock) -> None:
    """All messages go in, in order; with a delay they wait in the DLQ."""
    sent = [Envelope(body=str(i).encode()) for i in range(50)]
    assert broker.publish_many("q", iter(sent)) == 50
    assert broker.publish_many("q", []) == 0
    assert broker.publish_many("q", sent[:2], delay=3.0) == 2
    got = broker.receive("q", limit=100)
    assert [d.message for d in got] == sent
    assert [x.place for x in broker.dead_letters("q")] == [Place.DELAYED] * 2
    clock.advance(3.0)
    assert len(broker.receive("q", limit=100)) == 2


def test_publish_many_is_all_or_nothing(broker: SQLiteBroker) -> None:
    """A bad item is refused before anything is stored."""
    with pytest.raises(ConfigurationError, match="message"):
        broker.publish_many("q", [Envelope(body=b"ok"), "not an envelope"])  # type: ignore[list-item]
    assert broker.receive("q") == []


# -- bad options and input ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lease", 0),
        ("lease", -1.0),
        ("lease", float("nan")),
        ("lease", "300"),
        ("poll_interval", 0.0),
        ("poll_interval", float("inf")),
        ("synchronous", "OFF"),
        ("busy_timeout", -1),
        ("clock", object()),
    ],
)
def test_bad_option_is_refused_by_name(tmp_path: Path, option: str, value: object) -> None:
    """A bad option fails at construction, naming the option."""
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigurationError, match=option):
        SQLiteBroker(tmp_path / "q.db", **options)


@pytest.mark.parametrize("path", ["", 42])
def test_bad_path_is_refused(path: Any) -> None:
    """The path must be a file path."""
    with pytest.raises(ConfigurationError, match="path"):
        SQLiteBroker(path)


@pytest.mark.parametrize(
    ("call", "option"),
    [
        (lambda b: b.receive("q", limit=0), "limit"),
        (lambda b: b.receive("q", wait=-1), "wait"),
        (lambda b: b.receive(""), "queue"),
        (lambda b: b.publish("q", Envelope(body=b"x"), delay=-1), "delay"),
        (lambda b: b.publish("", Envelope(body=b"x")), "queue"),
        (lambda b: b.dead_letters("q", limit=0), "limit"),
    ],
)
def test_bad_arguments_are_refused(broker: SQLiteBroker, call: Any, option: str) -> None:
    """Bad arguments raise `ConfigurationError` naming them."""
    with pytest.raises(ConfigurationError, match=option):
        call(broker)


def test_foreign_delivery_is_refused(broker: SQLiteBroker) -> None:
    """A delivery from another broker type is a configuration error, not a conflict."""
    with pytest.raises(ConfigurationError, match="delivery"):
        broker.ack(Delivery(queue="q", message=Envelope(body=b"x"), token=7))


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    """Opening a file that is not SQLite raises `BrokerError`, not a bare sqlite3 error."""
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(BrokerError):
        SQLiteBroker(path)


def test_corrupted_envelope_is_parked_and_others_flow(
    broker: SQLiteBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """An unreadable stored envelope is parked with why; the other messages are received."""
    sent = [Envelope(body=str(i).encode()) for i in range(3)]
    broker.publish_many("q", sent)
    [(bad_seq,)] = _rows(
        broker.path, "SELECT seq FROM failsafe_messages WHERE message_id = ?", sent[1].id
    )
    _rows(broker.path, "UPDATE failsafe_messages SET envelope = ? WHERE seq = ?", b"{oops", bad_seq)
    got = broker.receive("q", limit=10)
    assert [d.message for d in got] == [sent[0], sent[2]]
    assert f"row {bad_seq}" in caplog.text
    [letter] = broker.dead_letters("q")
    assert letter.place is Place.PARKED
    assert letter.message.id == sent[1].id
    assert letter.message.body == b"{oops"  # the stored bytes, kept for a person to read
    assert letter.message.last_error is not None
    assert letter.message.last_error.type == "failsafe.queue.envelope.MalformedMessage"
    assert f"row {bad_seq}" in letter.message.last_error.message
    assert broker.receive("q") == []
    assert broker.purge("q", [sent[1].id]) == 1


def test_corrupted_dead_letter_is_still_listed(broker: SQLiteBroker) -> None:
    """Listing and replaying the DLQ survive a row edited into garbage."""
    sent = Envelope(body=b"x")
    broker.publish("q", sent, delay=5.0)
    _rows(broker.path, "UPDATE failsafe_messages SET envelope = ?", '{"v": 99}')
    [letter] = broker.dead_letters("q")
    assert letter.message.id == sent.id
    assert letter.message.last_error is not None
    assert "version" in letter.message.last_error.message
    assert broker.replay("q", [sent.id]) == 1
    [back] = broker.receive("q")
    assert back.message.body == b'{"v": 99}'


# -- the asyncio view -----------------------------------------------------------------------
def test_async_broker_round_trip(tmp_path: Path) -> None:
    """`AsyncSQLiteBroker` is an `AsyncBroker` over the same file."""

    async def main() -> None:
        broker = AsyncSQLiteBroker(tmp_path / "q.db", clock=FakeClock())
        assert isinstance(broker, AsyncBroker)
        try:
            await broker.declare("q")
            assert await broker.publish_many("q", [Envelope(body=b"a"), Envelope(body=b"b")]) == 2
            first, second = await broker.receive("q", limit=5)
            await broker.ack(first)
            await broker.park(second, second.message)
            [letter] = await broker.dead_letters("q")
            assert letter.message.body == b"b"
            assert await broker.delivery_limit("q") is None
        finally:
            await broker.aclose()
        assert broker.sqlite.closed

    asyncio.run(main())


# -- real time and real processes -----------------------------------------------------------
@pytest.mark.real_time
def test_receive_waits_for_a_delayed_message(tmp_path: Path) -> None:
    """``receive(wait=...)`` picks a delayed message up once it is due."""
    broker = SQLiteBroker(tmp_path / "q.db")
    try:
        broker.publish("q", Envelope(body=b"x"), delay=0.05)
        assert broker.receive("q") == []
        [d] = broker.receive("q", wait=2.0)
        assert d.message.body == b"x"
        assert broker.receive("q", wait=0.05) == []
    finally:
        broker.close()


_CONSUMER = """
import sys
from failsafe.queue.sqlite import SQLiteBroker
broker = SQLiteBroker(sys.argv[1], lease=60.0)
print("ready", flush=True)
sys.stdin.readline()
handled = []
while True:
    got = broker.receive("jobs", limit=int(sys.argv[2]), wait=0.2)
    if not got:
        break
    for delivery in got:
        handled.append(delivery.message.body.decode())
        broker.ack(delivery)
broker.close()
print(" ".join(handled), flush=True)
"""


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.real_time
def test_several_processes_handle_each_message_once(tmp_path: Path) -> None:
    """Consumers in three processes share one file: every message handled exactly once."""
    path = tmp_path / "shared.db"
    broker = SQLiteBroker(path)
    total = 600
    broker.publish_many("jobs", [Envelope(body=str(i).encode()) for i in range(total)])
    children = [_child(_CONSUMER, str(path), str(limit)) for limit in (1, 1, 3)]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:  # start them together, so they contend
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        handled: list[str] = []
        for child in children:
            out, _ = child.communicate(timeout=30)
            assert child.returncode == 0
            handled.extend(out.split())
        assert sorted(handled, key=int) == [str(i) for i in range(total)]
        assert broker.receive("jobs") == []
        assert _rows(path, "SELECT COUNT(*) FROM failsafe_messages") == [(0,)]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        broker.close()


_KILLED = """
import json, sys, time
from failsafe.queue import Envelope
from failsafe.queue.sqlite import SQLiteBroker
from failsafe.testing import FakeClock
broker = SQLiteBroker(sys.argv[1], clock=FakeClock(), lease=60.0)
sent = [Envelope(body=str(i).encode()) for i in range(20)]
for message in sent[:10]:
    broker.publish("jobs", message)
broker.publish_many("jobs", sent[10:])
held = broker.receive("jobs", limit=5)
print(json.dumps([m.id for m in sent]), flush=True)
time.sleep(60)
"""


@pytest.mark.real_time
def test_messages_survive_kill_9(tmp_path: Path) -> None:
    """A killed process loses nothing: its reserved messages come back after the lease."""
    path = tmp_path / "killed.db"
    child = _child(_KILLED, str(path))
    try:
        assert child.stdout is not None
        ids = json.loads(child.stdout.readline())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    clock = FakeClock()
    broker = SQLiteBroker(path, clock=clock, lease=60.0)
    try:
        rest = broker.receive("jobs", limit=100)
        assert [d.deliveries for d in rest] == [1] * 15
        assert broker.receive("jobs") == []
        for delivery in rest:
            broker.ack(delivery)
        clock.advance(60.0)
        held = broker.receive("jobs", limit=100)
        assert [d.deliveries for d in held] == [2] * 5
        assert [d.message.id for d in held + rest] == ids
    finally:
        broker.close()


def test_threads_share_one_broker(tmp_path: Path) -> None:
    """Threads receiving through two brokers on one file handle each message once."""
    path = tmp_path / "threads.db"
    clock = FakeClock()
    brokers = [SQLiteBroker(path, clock=clock), SQLiteBroker(path, clock=clock)]
    total = 400
    brokers[0].publish_many("jobs", [Envelope(body=str(i).encode()) for i in range(total)])
    handled: list[bytes] = []

    def consume(broker: SQLiteBroker, limit: int) -> None:
        while got := broker.receive("jobs", limit=limit):
            for delivery in got:
                handled.append(delivery.message.body)  # list.append is atomic
                broker.ack(delivery)

    threads = [threading.Thread(target=consume, args=(brokers[i % 2], 1 + i % 3)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for broker in brokers:
            broker.close()
    assert sorted(handled, key=int) == [str(i).encode() for i in range(total)]


def test_full_synchronous_works(tmp_path: Path) -> None:
    """``synchronous="FULL"`` is accepted and behaves the same."""
    broker = SQLiteBroker(tmp_path / "q.db", clock=FakeClock(), synchronous="FULL")
    try:
        broker.publish("q", Envelope(body=b"x"))
        [d] = broker.receive("q")
        broker.ack(d)
    finally:
        broker.close()


def test_memory_path_is_a_private_broker() -> None:
    """``":memory:"`` works (one connection), for tests."""
    broker = SQLiteBroker(":memory:", clock=FakeClock())
    try:
        broker.publish("q", Envelope(body=b"x"))
        assert len(broker.receive("q")) == 1
    finally:
        broker.close()


def test_dead_letters_refuse_a_bad_place(broker: SQLiteBroker) -> None:
    """``place`` must be a `Place` (or its value) or ``None``."""
    broker.declare("q")
    assert broker.dead_letters("q", place="parked") == []  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="place"):
        broker.dead_letters("q", place="ready")  # type: ignore[arg-type]


# -- the DLQ at scale (issue #15) -----------------------------------------------------------
# The schema of a file made before issue #15: no message-id index, a DLQ index without place.
_OLD_SCHEMA = (
    """
    CREATE TABLE failsafe_messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        place TEXT NOT NULL,
        visible_at REAL NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 0,
        token INTEGER,
        since REAL NOT NULL,
        envelope BLOB NOT NULL
    )
    """,
    "CREATE INDEX failsafe_messages_receive "
    "ON failsafe_messages (queue, visible_at, seq) WHERE place <> 'parked'",
    "CREATE INDEX failsafe_messages_dead "
    "ON failsafe_messages (queue, since, seq) WHERE place <> 'ready'",
    "CREATE TABLE failsafe_queues (name TEXT PRIMARY KEY)",
)


def _plan(path: Path, sql: str, *params: Any) -> str:
    return " / ".join(row[3] for row in _rows(path, f"EXPLAIN QUERY PLAN {sql}", *params))


def test_an_old_file_gets_the_dlq_indexes_on_open(tmp_path: Path, clock: FakeClock) -> None:
    """A file without the message-id index gets it (and the new DLQ index) when opened."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in _OLD_SCHEMA:
        db.execute(statement)
    sent = [Envelope(body=str(i).encode()) for i in range(3)]
    with db:
        db.execute("INSERT INTO failsafe_queues VALUES ('q')")
        db.executemany(
            "INSERT INTO failsafe_messages (queue, message_id, place, visible_at, since, envelope)"
            " VALUES ('q', ?, 'parked', ?, ?, ?)",
            [(m.id, float(i), float(i), encode(m)) for i, m in enumerate(sent)],
        )
    db.close()
    lookup = (
        "SELECT seq FROM failsafe_messages WHERE queue = 'q' AND place <> 'ready' "
        "AND place IN ('delayed', 'parked') AND message_id IN ('a', 'b')"
    )
    assert "failsafe_messages_dead_id" not in _plan(path, lookup)

    broker = SQLiteBroker(path, clock=clock)
    try:
        indexes = {name for (name,) in _rows(path, "SELECT name FROM sqlite_master")}
        assert {"failsafe_messages_dead_id", "failsafe_messages_dead_since"} <= indexes
        assert "failsafe_messages_dead" not in indexes
        assert "USING INDEX failsafe_messages_dead_id" in _plan(path, lookup)
        assert [x.message.id for x in broker.dead_letters("q")] == [m.id for m in sent]
        assert broker.replay("q", [sent[1].id]) == 1
        assert [d.message.id for d in broker.receive("q")] == [sent[1].id]
    finally:
        broker.close()
    SQLiteBroker(path, clock=clock).close()  # opening again changes nothing


def test_dlq_queries_use_their_indexes(broker: SQLiteBroker) -> None:
    """Pages, counts and id lookups are index searches, never a scan of the table."""
    from failsafe.queue.sqlite import _conditions

    path = Path(broker.path)
    for where in (
        None,
        DeadLetterFilter(place=Place.PARKED, until=5.0),
        DeadLetterFilter(ids=["a", "b"]),
        DeadLetterFilter(error_types=["OrderNotFound", "app.Other"]),
        DeadLetterFilter(id_prefixes=["3f2a9c1b"]),
    ):
        conditions, params, indexed = _conditions(where)
        page = _plan(
            path,
            f"SELECT seq FROM failsafe_messages {indexed} WHERE {' AND '.join(conditions)} "
            "AND (since, seq) > (?, ?) ORDER BY since, seq LIMIT 10",
            "q",
            *params,
            0.0,
            0,
        )
        assert "INDEX failsafe_messages_dead" in page, page
        assert "SCAN failsafe_messages" not in page, page
        if not where or not (where.ids or where.id_prefixes):
            assert "TEMP B-TREE" not in page, page  # in index order: no sort of the selection
        if where and where.id_prefixes:  # a range of the id index, not a scan of it
            assert "failsafe_messages_dead_id (queue=? AND message_id>? AND message_id<?)" in page
    count = _plan(
        path,
        "SELECT place, COUNT(*) FROM (SELECT place FROM failsafe_messages WHERE queue = ? "
        "AND place <> 'ready' AND place IN (?, ?) LIMIT ?) GROUP BY place",
        "q",
        "parked",
        "parked",
        10,
    )
    assert "USING COVERING INDEX failsafe_messages_dead_since" in count, count


def test_replay_batch_resets_the_counts_in_sql_and_keeps_the_rest(
    broker: SQLiteBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counts are reset by SQLite (no decoding): the envelope comes back exactly."""
    error = ErrorInfo(type="app.Über", message="naïve \u2028 line", at=0.1 + 0.2)
    sent = Envelope(
        body=b"\xff\xfebinary",
        headers={"tenant": "café", "n": "1"},
        immediate_attempts=3,
        delayed_attempts=4,
        first_seen=1e-7,
        last_error=error,
    )
    broker.publish("q", sent)
    [d] = broker.receive("q")
    broker.park(d, sent)
    decoded: list[object] = []

    def counting(raw: bytes | str) -> Envelope:
        decoded.append(raw)
        return decode(raw)

    monkeypatch.setattr(failsafe.queue.sqlite, "decode", counting)
    batch = broker.replay_batch("q", where=DeadLetterFilter(error_types=["Über"]))
    assert (batch.ids, batch.cursor) == ((sent.id,), None)
    assert decoded == []
    [back] = broker.receive("q")
    assert back.message == attrs.evolve(sent, immediate_attempts=0, delayed_attempts=0)


def test_replay_batch_of_unreadable_rows(
    broker: SQLiteBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A row SQLite cannot reset gets a stand-in; one that only looks valid is parked again.

    The second kind is JSON of the envelope's version with integer counts: SQLite resets
    them, the row goes back to the work queue as stored, and receive parks it as malformed.
    """
    broker.publish_many("q", [Envelope(body=b"a"), Envelope(body=b"b")], delay=5.0)
    (a_seq,), (b_seq,) = _rows(broker.path, "SELECT seq FROM failsafe_messages ORDER BY seq")
    _rows(broker.path, "UPDATE failsafe_messages SET envelope = ? WHERE seq = ?", b"{oops", a_seq)
    looks_ok = b'{"v": 1, "immediate_attempts": 2, "delayed_attempts": 2}'
    _rows(broker.path, "UPDATE failsafe_messages SET envelope = ? WHERE seq = ?", looks_ok, b_seq)
    assert len(broker.replay_batch("q").ids) == 2
    [stand_in] = broker.receive("q", limit=5)
    assert stand_in.message.body == b"{oops"
    assert stand_in.message.delayed_attempts == 0
    [parked] = broker.dead_letters("q")
    assert parked.message.last_error is not None
    assert parked.message.last_error.type.endswith("MalformedMessage")
    assert b'"delayed_attempts":0' in parked.message.body.replace(b" ", b"")


def test_a_large_selection_is_walked_by_id_index_and_batches(
    broker: SQLiteBroker, clock: FakeClock
) -> None:
    """Replaying every other one of 3,000 parked touches exactly those, batch by batch."""
    sent = [
        Envelope(
            body=str(i).encode(),
            last_error=ErrorInfo(type="KeyError" if i % 2 else "ValueError", message="", at=1.0),
        )
        for i in range(3000)
    ]
    broker.publish_many("q", sent)
    _rows(broker.path, "UPDATE failsafe_messages SET place = 'parked', since = seq")
    before = _rows(broker.path, "SELECT * FROM failsafe_messages ORDER BY seq")
    where = DeadLetterFilter(error_types=["KeyError"])
    moved, cursor, calls = 0, None, 0
    while True:
        batch = broker.replay_batch("q", where=where, after=cursor, limit=400)
        moved, cursor, calls = moved + len(batch.ids), batch.cursor, calls + 1
        if cursor is None:
            break
    assert (moved, calls) == (1500, 4)
    after = {row[0]: row for row in _rows(broker.path, "SELECT * FROM failsafe_messages")}
    for row in before:
        if row[0] % 2:  # ValueError rows (seq is 1-based): untouched
            assert after[row[0]] == row
        else:
            assert after[row[0]][3] == "ready"
    assert broker.count_dead_letters("q") == DeadLetterCount(parked=1500)


def test_prefix_end_bounds_exactly_the_ids_that_begin_with_the_prefix() -> None:
    """The range end of a prefix: its last character + 1, stepping over surrogates and the top."""
    from failsafe.queue.sqlite import _prefix_end

    assert _prefix_end("3f2a9c1b") == "3f2a9c1c"
    assert _prefix_end("ab\ud7ff") == "ab\ue000"  # no surrogate: the next character
    assert _prefix_end("ab\U0010ffff") == "ac"  # the last character cannot grow
    assert _prefix_end("\U0010ffff") is None
    for prefix in ("order-", "ab\U0010ffff", "é"):
        end = _prefix_end(prefix)
        assert end is not None
        for text in (prefix, prefix + "\U0010ffff" * 3, prefix + "z"):
            assert prefix <= text < end


def test_a_top_prefix_still_selects_by_prefix(broker: SQLiteBroker) -> None:
    """A prefix ending in the last code point (no range end) still takes only its ids."""
    broker.publish_many(
        "q", [Envelope(body=b"{}", id=i) for i in ("x\U0010ffff1", "x\U0010ffff2", "y")]
    )
    _rows(broker.path, "UPDATE failsafe_messages SET place = 'parked', since = seq")
    page = broker.dead_letter_page("q", where=DeadLetterFilter(id_prefixes=["x\U0010ffff"]))
    assert [x.message.id for x in page.letters] == ["x\U0010ffff1", "x\U0010ffff2"]


def test_a_queue_known_only_by_its_rows_exists(tmp_path: Path, clock: FakeClock) -> None:
    """Rows of a queue the file has no record of (an older file) make it a known queue."""
    path = tmp_path / "queue.db"
    broker = SQLiteBroker(path, clock=clock)
    try:
        broker.publish("q", Envelope(body=b"{}", id="m-1"))
        _rows(path, "DELETE FROM failsafe_queues")
        _rows(path, "UPDATE failsafe_messages SET place = 'parked'")
    finally:
        broker.close()
    broker = SQLiteBroker(path, clock=clock)  # a fresh broker: it has recorded nothing
    try:
        assert [x.message.id for x in broker.dead_letters("q")] == ["m-1"]
        with pytest.raises(NoSuchQueue, match=f"no such queue 'other' on {path}"):
            broker.count_dead_letters("other")
    finally:
        broker.close()
