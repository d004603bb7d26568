"""A consumer process for the kill -9 tests: ``python -m tests.queue.kill_consumer BROKER DB DIR``.

It consumes ``QUEUE`` with a `Consumer`; its handler applies each message once with
`ProcessedMessages` (the effect: a row in ``applied``, which has no key, so a doubled effect
shows as two rows). A message whose ``hang`` header is ``before`` or ``after`` hangs the first
time it is handled (``before``: ahead of its transaction; ``after``: once it committed, before
the ack), after writing ``DIR/hanging-<id>``: the test kills the process there.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path

from failsafe import Backoff
from failsafe.queue import Consumer, Envelope, ProcessedMessages, Redelivery, SQLiteBroker
from failsafe.queue.connect import open_broker

QUEUE = "kill.orders"


def main() -> None:
    url, db_path, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    broker = open_broker(url) if url.startswith("amqp") else SQLiteBroker(url, lease=1.0)
    db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
    processed = ProcessedMessages()
    lock = threading.Lock()

    def hang(message: Envelope) -> None:
        marker = folder / f"hanging-{message.id}"
        if marker.exists():
            return
        marker.write_text("")
        threading.Event().wait()  # until killed

    def handle(message: Envelope) -> None:
        if message.headers.get("hang") == "before":
            hang(message)
        with lock, db:
            if processed.claim(db, message.id):
                db.execute("INSERT INTO applied (id) VALUES (?)", (message.id,))
        if message.headers.get("hang") == "after":
            hang(message)

    policy = Redelivery(immediate=2, delayed=2, delay=0.5, immediate_backoff=Backoff.none())
    print("ready", flush=True)
    Consumer(broker, QUEUE, handle, redelivery=policy, poll=0.1, concurrency=2).run()


if __name__ == "__main__":
    main()
