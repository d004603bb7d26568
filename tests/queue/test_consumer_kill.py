"""kill -9 of consumer processes in the middle of handling loses no message, doubles no effect.

On the SQLite broker and on the real RabbitMQ server: 40 messages are published; a first
consumer process is killed while handling one message before its effect committed, a second
one while handling another after its effect committed but before the ack; a third consumer
finishes the queue and is killed too. Every message's effect is applied exactly once; what the
broker still holds afterwards are copies of applied messages (at-least-once), nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import aio_pika
import pytest

from failsafe.queue import Broker, Envelope, ProcessedMessages, SQLiteBroker
from failsafe.queue.connect import open_broker
from tests.queue.kill_consumer import QUEUE

pytestmark = pytest.mark.real_time

ROOT = Path(__file__).resolve().parents[2]
RABBIT = "amqp://guest:guest@127.0.0.1:5672/"
N = 40


def wait_for(what: str, check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Run:
    def __init__(self, broker_url: str, folder: Path) -> None:
        self.url = broker_url
        self.folder = folder
        self.db = folder / "effects.db"
        with sqlite3.connect(self.db) as db:
            db.execute("CREATE TABLE applied (id TEXT NOT NULL)")
            ProcessedMessages().create_table(db)
        self.children: list[subprocess.Popen[bytes]] = []
        self.args = [str(self.db), str(folder)]

    def start(self) -> subprocess.Popen[bytes]:
        with (self.folder / f"consumer-{len(self.children)}.log").open("wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.queue.kill_consumer", self.url, *self.args],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,  # kept for a failing test's reader
            )
        self.children.append(child)
        return child

    def hanging(self, message: Envelope) -> bool:
        return (self.folder / f"hanging-{message.id}").exists()

    def applied(self) -> list[str]:
        with sqlite3.connect(self.db, timeout=30) as db:
            return [row[0] for row in db.execute("SELECT id FROM applied")]

    def kill_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()


def play(run: Run, publish: object) -> list[Envelope]:
    messages = [Envelope(body=f'{{"n": {i}}}'.encode()) for i in range(N)]
    messages[5] = Envelope(body=b'{"n": 5}', headers={"hang": "before"})
    messages[20] = Envelope(body=b'{"n": 20}', headers={"hang": "after"})
    for message in messages:
        publish(message)  # type: ignore[operator]
    try:
        for victim, committed in ((messages[5], False), (messages[20], True)):
            child = run.start()
            wait_for(f"a consumer to hang on {victim.id}", lambda v=victim: run.hanging(v))
            os.kill(child.pid, signal.SIGKILL)  # in the middle of handling
            child.wait()
            # killed before its effect committed (5), or after it, before the ack (20)
            assert (victim.id in run.applied()) is committed
        run.start()
        wait_for("every message to be applied", lambda: len(set(run.applied())) == N)
    finally:
        run.kill_all()
    return messages


def settle_copies(broker: Broker, run: Run) -> None:
    """Ack what is left once every effect is in: copies of applied messages, nothing else.

    At-least-once: the last consumer is killed too, and a message it held (or one applied
    by a consumer killed before its ack) comes back; each must be one already applied.
    """
    applied = set(run.applied())
    while copies := broker.receive(QUEUE, limit=N, wait=1.5):  # past the 1 s lease
        for delivery in copies:
            assert delivery.message.id in applied
            broker.ack(delivery)
    assert broker.receive(QUEUE, limit=N, wait=1.5) == []


def test_sqlite_consumer_killed_mid_handling(tmp_path: Path) -> None:
    """SQLite: the killed consumers' messages come back after the lease; applied once each."""
    path = tmp_path / "queue.db"
    broker = SQLiteBroker(path)
    run = Run(str(path), tmp_path)
    messages = play(run, lambda m: broker.publish(QUEUE, m))
    applied = run.applied()
    assert sorted(applied) == sorted(m.id for m in messages)  # each once: no loss, no double
    assert broker.dead_letters(QUEUE) == []
    settle_copies(broker, run)
    assert sorted(run.applied()) == sorted(m.id for m in messages)  # still once each
    broker.close()


@pytest.mark.rabbitmq
def test_rabbitmq_consumer_killed_mid_handling(tmp_path: Path) -> None:
    """RabbitMQ: a killed consumer's connection drops and its messages are requeued."""
    _delete_queues()  # the child's queue name is fixed: clear it before and after
    broker = open_broker(RABBIT)
    try:
        broker.declare(QUEUE)
        run = Run(RABBIT, tmp_path)
        messages = play(run, lambda m: broker.publish(QUEUE, m))
        applied = run.applied()
        assert sorted(applied) == sorted(m.id for m in messages)
        assert broker.dead_letters(QUEUE) == []
        settle_copies(broker, run)
        assert sorted(run.applied()) == sorted(m.id for m in messages)
    finally:
        broker.close()
        _delete_queues()


def _delete_queues() -> None:
    async def delete() -> None:
        connection = await aio_pika.connect(RABBIT)
        channel = await connection.channel()
        for name in (QUEUE, f"{QUEUE}.parked", f"{QUEUE}.delay.500", f"{QUEUE}.delays"):
            await channel.queue_delete(name)
        await connection.close()

    asyncio.run(delete())
