"""The ``failsafe queue dlq`` commands, end to end through ``main``, on a real SQLite file."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import attrs
import pytest

import failsafe.queue.cli
import failsafe.queue.sqlite
from failsafe.cli import main
from failsafe.exceptions import ConfigurationError
from failsafe.queue import BlockingView, Envelope, ErrorInfo, InMemoryBroker, Place, decode
from failsafe.queue.broker import DeadLetterBatch
from failsafe.queue.connect import open_broker
from failsafe.queue.dlq import Pacer
from failsafe.queue.sqlite import SQLiteBroker
from failsafe.testing import FakeClock

HOUR = 3600.0
NOT_FOUND = "app.errors.OrderNotFound"


class Seeded:
    """A queue file for ``orders``: three parked, one delayed and one ready message.

    Ages at the end of seeding (the CLI reads the same fake clock):
    ``old`` parked 3h ago (OrderNotFound), ``mid`` parked 2h ago (ValueError),
    ``late`` delayed 1h ago (OrderNotFound, due in a day), ``new`` parked 10m ago
    (app.db.OperationalError, a binary body), ``fresh`` in the work queue.
    """

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.path = path
        self.clock = clock
        broker = SQLiteBroker(path, clock=clock)
        try:
            self.old = self._dead(broker, b'{"orderId": "o-1"}', NOT_FOUND, "park", HOUR)
            self.mid = self._dead(broker, b"plain text", "ValueError", "park", HOUR)
            self.late = self._dead(broker, b'{"orderId": "o-3"}', NOT_FOUND, "defer", 50 * 60)
            self.new = self._dead(
                broker, b"\xff\x00binary", "app.db.OperationalError", "park", 10 * 60
            )
            self.fresh = "fresh"
            broker.publish("orders", Envelope(body=b"{}", id=self.fresh))
        finally:
            broker.close()

    def _dead(self, broker: SQLiteBroker, body: bytes, error: str, how: str, then: float) -> str:
        message_id = uuid.uuid4().hex
        broker.publish("orders", Envelope(body=body, id=message_id, headers={"tenant": "acme"}))
        [delivery] = broker.receive("orders")
        failed = attrs.evolve(
            delivery.message,
            immediate_attempts=3,
            delayed_attempts=2,
            first_seen=self.clock.time() - 60,
            last_error=ErrorInfo(type=error, message=f"{error} for {message_id}", at=0.0),
        )
        if how == "park":
            broker.park(delivery, failed)
        else:
            broker.defer(delivery, failed, 24 * HOUR)
        self.clock.advance(then)
        return message_id

    def broker(self) -> SQLiteBroker:
        return SQLiteBroker(self.path, clock=self.clock)

    def places(self) -> dict[str, str]:
        """Every dead letter's id and place."""
        broker = self.broker()
        try:
            return {d.message.id: d.place.value for d in broker.dead_letters("orders")}
        finally:
            broker.close()

    def run(self, command: str, *args: str) -> int:
        return main(
            ["queue", "dlq", command, "--broker", str(self.path), "--queue", "orders", *args]
        )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The fake clock the commands read (and sleep on)."""
    fake = FakeClock()
    monkeypatch.setattr(failsafe.queue.cli, "clock", fake)
    return fake


@pytest.fixture
def seeded(tmp_path: Path, clock: FakeClock) -> Seeded:
    return Seeded(tmp_path / "queue.db", clock)


def many_parked(path: Path, clock: FakeClock, count: int) -> list[str]:
    """Park ``count`` messages of ``orders`` in a new file; return their ids in order."""
    broker = SQLiteBroker(path, clock=clock)
    try:
        ids = [f"m{i:04d}" for i in range(count)]
        broker.publish_many("orders", [Envelope(body=b"{}", id=i) for i in ids])
        for delivery in broker.receive("orders", limit=count):
            error = ErrorInfo(type=NOT_FOUND, message="gone", at=clock.time())
            failed = attrs.evolve(delivery.message, delayed_attempts=4, last_error=error)
            broker.park(delivery, failed)
            clock.advance(1)
    finally:
        broker.close()
    return ids


def _rows(path: Path, sql: str) -> list[Any]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


class TtyIO(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


# -- list ---------------------------------------------------------------------------------------
def test_list_prints_a_table_oldest_first(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list`` shows both places with ISO time, age, rounds and the clipped last error."""
    assert seeded.run("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "place", "since", "(UTC)", "age", "rounds", "last", "error"]
    rows = [line.split() for line in lines[1:-1]]
    assert [r[0] for r in rows] == [seeded.old, seeded.mid, seeded.late, seeded.new]
    assert [r[1] for r in rows] == ["parked", "parked", "delayed", "parked"]
    assert rows[0][2] == "2023-11-14T22:13:20Z"  # FakeClock's wall start
    assert [r[3] for r in rows] == ["3h", "2h", "1h", "10m"]
    assert {r[4] for r in rows} == {"2"}
    assert rows[0][5:] == [f"{NOT_FOUND}:", "app.errors.OrderNotFound", "for", f"{seeded.old[:4]}…"]
    assert lines[-1] == "4 dead letters of 'orders' (delayed: 1, parked: 3)"


def test_list_filters(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """Each filter narrows the listing: place, age, error type (short or full), id, limit."""

    def listed(*args: str) -> list[str]:
        assert seeded.run("list", "--json", *args) == 0
        return [d["message"]["id"] for d in json.loads(capsys.readouterr().out)]

    assert listed() == [seeded.old, seeded.mid, seeded.late, seeded.new]
    assert listed("--place", "delayed") == [seeded.late]
    assert listed("--place", "parked") == [seeded.old, seeded.mid, seeded.new]
    assert listed("--place", "all") == listed()
    assert listed("--older-than", "90m") == [seeded.old, seeded.mid]
    assert listed("--older-than", "1h") == [seeded.old, seeded.mid, seeded.late]
    assert listed("--older-than", "2h30m") == [seeded.old]
    assert listed("--older-than", "1d") == []
    assert listed("--error-type", "OrderNotFound") == [seeded.old, seeded.late]
    assert listed("--error-type", NOT_FOUND) == [seeded.old, seeded.late]
    assert listed("--error-type", "errors.OrderNotFound") == []  # full name or last part only
    assert listed("--error-type", "ValueError") == [seeded.mid]
    assert listed("--error-type", "ValueError", "--error-type", "OperationalError") == [
        seeded.mid,
        seeded.new,
    ]
    assert listed("--id", seeded.new, "--id", seeded.old) == [seeded.old, seeded.new]
    assert listed("--id", seeded.fresh) == []  # in the work queue: not a dead letter
    assert listed("--limit", "2") == [seeded.old, seeded.mid]
    assert listed("--place", "parked", "--error-type", "OrderNotFound") == [seeded.old]


def test_list_json_shape(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``list --json`` is a list of {queue, place, since, due_at, message=envelope JSON}."""
    assert seeded.run("list", "--json", "--id", seeded.late, "--id", seeded.new) == 0
    late, new = json.loads(capsys.readouterr().out)
    assert set(late) == {"queue", "place", "since", "due_at", "message"}
    assert (late["queue"], late["place"]) == ("orders", "delayed")
    assert late["due_at"] == pytest.approx(late["since"] + 24 * HOUR)
    assert seeded.clock.time() - late["since"] == pytest.approx(HOUR)
    assert late["message"]["body"] == '{"orderId": "o-3"}'
    assert late["message"]["headers"] == {"tenant": "acme"}
    assert late["message"]["last_error"]["type"] == NOT_FOUND
    assert (new["place"], new["due_at"]) == ("parked", None)
    assert Envelope.from_json(new["message"]).body == b"\xff\x00binary"


def test_list_with_a_limit_says_there_are_more(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """When ``--limit`` leaves some out, the footer says how many match in all."""
    assert seeded.run("list", "--limit", "1") == 0
    out = capsys.readouterr().out
    assert seeded.old in out
    assert seeded.mid not in out
    assert "the oldest 1 of 4 dead letters" in out
    assert "raise --limit" in out


def test_list_with_nothing_matching(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty selection is not an error."""
    assert seeded.run("list", "--error-type", "KeyError") == 0
    assert capsys.readouterr().out == "no dead letters of 'orders' match\n"


# -- show ---------------------------------------------------------------------------------------
def test_show_prints_one_dead_letter_in_full(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show`` prints counts, times, the error, headers and the body pretty-printed."""
    assert seeded.run("show", seeded.late) == 0
    out = capsys.readouterr().out
    assert f"id:                 {seeded.late}\n" in out
    assert "place:              delayed\n" in out
    assert "(1h ago)" in out
    assert "due at:" in out
    assert "(in 23h)" in out
    assert "immediate attempts: 3\n" in out
    assert "delayed rounds:     2\n" in out
    assert f"last error:         {NOT_FOUND}\n" in out
    assert f"  {NOT_FOUND} for {seeded.late}\n" in out
    assert "headers:\n  tenant: acme\n" in out
    assert 'body (JSON):\n  {\n    "orderId": "o-3"\n  }\n' in out


def test_show_text_and_binary_bodies(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """A body that is not JSON is shown as text, one that is not UTF-8 as base64."""
    assert seeded.run("show", seeded.mid) == 0
    assert "body (text):\n  plain text\n" in capsys.readouterr().out
    assert seeded.run("show", seeded.new) == 0
    assert "body (base64):\n  /wBiaW5hcnk=\n" in capsys.readouterr().out


def test_show_json(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``show --json`` is the same object as one item of ``list --json``."""
    assert seeded.run("show", seeded.old, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["place"] == "parked"
    assert data["message"]["id"] == seeded.old
    assert data["message"]["immediate_attempts"] == 3


def park_secret(seeded: Seeded) -> str:
    """Park a dead letter of ``orders`` holding a password and a bearer token; its id."""
    broker = seeded.broker()
    try:
        headers = {"Authorization": "Bearer s3cr3t-token", "tenant": "acme"}
        body = b'{"orderId": "o-9", "password": "hunter2"}'
        broker.publish("orders", Envelope(body=body, id="secret-1", headers=headers))
        [delivery] = broker.receive("orders", limit=1)
        while delivery.message.id != "secret-1":  # the seeded ready message comes first
            broker.ack(delivery)
            [delivery] = broker.receive("orders", limit=1)
        error = ErrorInfo(type="PermissionError", message="login password=hunter2", at=0.0)
        broker.park(delivery, attrs.evolve(delivery.message, last_error=error))
    finally:
        broker.close()
    return "secret-1"


def test_show_redacts_secrets_by_default(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show`` hides secret headers, body fields and error text; the rest stays readable."""
    message_id = park_secret(seeded)
    assert seeded.run("show", message_id) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "s3cr3t-token" not in out
    assert "  Authorization: [REDACTED]\n" in out
    assert '"password": "[REDACTED]"' in out
    assert '"orderId": "o-9"' in out
    assert "  tenant: acme\n" in out


def test_show_json_redacts_secrets_by_default(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show --json`` redacts the same fields as the text output."""
    message_id = park_secret(seeded)
    assert seeded.run("show", message_id, "--json") == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "s3cr3t-token" not in out
    message = json.loads(out)["message"]
    assert message["headers"] == {"Authorization": "[REDACTED]", "tenant": "acme"}
    assert json.loads(message["body"]) == {"orderId": "o-9", "password": "[REDACTED]"}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_show_reveal_prints_secrets_whole(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    """``show --reveal`` prints headers, body and error message as they are."""
    message_id = park_secret(seeded)
    extra = ["--json"] if as_json else []
    assert seeded.run("show", message_id, "--reveal", *extra) == 0
    out = capsys.readouterr().out
    assert "Bearer s3cr3t-token" in out
    assert out.count("hunter2") == 2  # the body's and the error message's
    assert "[REDACTED]" not in out


def test_list_redacts_secrets_by_default(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list`` (table and JSON) hides secret headers, body fields and error text."""
    park_secret(seeded)
    assert seeded.run("list") == 0
    table = capsys.readouterr().out
    assert "hunter2" not in table
    assert "PermissionError: login password=[REDACTED]" in table
    assert seeded.run("list", "--json") == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "s3cr3t-token" not in out
    [item] = [i for i in json.loads(out) if i["message"]["id"] == "secret-1"]
    assert item["message"]["headers"] == {"Authorization": "[REDACTED]", "tenant": "acme"}
    assert json.loads(item["message"]["body"]) == {"orderId": "o-9", "password": "[REDACTED]"}


def test_list_reveal_prints_secrets_whole(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list --json --reveal`` prints headers, bodies and error messages as they are."""
    park_secret(seeded)
    assert seeded.run("list", "--json", "--reveal") == 0
    out = capsys.readouterr().out
    assert "Bearer s3cr3t-token" in out
    assert out.count("hunter2") == 2  # the body's and the error message's


def test_show_without_the_redactor_refuses_instead_of_leaking(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the errors extra, ``show`` exits 1 naming it and prints no secret."""
    message_id = park_secret(seeded)
    monkeypatch.setitem(sys.modules, "failsafe.errors.redact", None)  # import fails
    assert seeded.run("show", message_id) == 1
    captured = capsys.readouterr()
    assert "hunter2" not in captured.out + captured.err
    assert "'errors' extra" in captured.err


def test_show_unknown_id_exits_1(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """An id that is not a dead letter (here: one in the work queue) exits 1, saying so."""
    for missing in ("nope", seeded.fresh):
        assert seeded.run("show", missing) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert f"no dead letter with id {missing!r} in 'orders'" in captured.err


def test_an_id_prefix_of_8_or_more_names_its_dead_letter(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show`` and ``--id`` take the first 8+ characters of a unique id; 7 are exact-only."""
    assert seeded.run("show", seeded.late[:8]) == 0
    assert f"id:                 {seeded.late}\n" in capsys.readouterr().out
    assert seeded.run("show", seeded.new[:12], "--json") == 0
    assert json.loads(capsys.readouterr().out)["message"]["id"] == seeded.new
    assert seeded.run("list", "--json", "--id", seeded.mid[:8], "--id", seeded.old[:10]) == 0
    assert [d["message"]["id"] for d in json.loads(capsys.readouterr().out)] == [
        seeded.old,
        seeded.mid,
    ]
    assert seeded.run("show", seeded.old[:7]) == 1  # too short to be a prefix
    assert f"no dead letter with id {seeded.old[:7]!r}" in capsys.readouterr().err
    assert seeded.run("replay", "--id", seeded.mid[:8], "--id", seeded.old[:7]) == 0
    assert capsys.readouterr().out == "replayed 1, not found 1\n"
    assert seeded.mid not in seeded.places()
    assert seeded.run("purge", "--id", seeded.new[:9], "--yes") == 0
    assert capsys.readouterr().out == "purged 1, not found 0\n"
    assert set(seeded.places()) == {seeded.old, seeded.late}


def park_ids(path: Path, clock: FakeClock, ids: list[str]) -> None:
    """Park one message of ``orders`` per id, in order, a second apart."""
    broker = SQLiteBroker(path, clock=clock)
    try:
        for message_id in ids:
            broker.publish("orders", Envelope(body=b"{}", id=message_id))
            [delivery] = broker.receive("orders")
            broker.park(delivery, delivery.message)
            clock.advance(1)
    finally:
        broker.close()


def test_an_ambiguous_prefix_is_refused_naming_two(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prefix that begins two ids exits 1 naming them, before anything moves."""
    path = tmp_path / "q.db"
    ids = ["3f2a9c1b-0001", "3f2a9c1b-0002", "3f2a9c1b-0003", "77aa0000-0001"]
    park_ids(path, clock, ids)
    where = ["--broker", str(path), "--queue", "orders"]
    for command in (
        ["show", "3f2a9c1b"],
        ["replay", "--id", "3f2a9c1b-"],
        ["list", "--id", "3f2a9c1b"],
    ):
        assert main(["queue", "dlq", *command, *where]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        prefix = command[-1]
        assert captured.err.endswith(
            f": id {prefix!r} begins more than one dead letter's id in 'orders' "
            "(3f2a9c1b-0001, 3f2a9c1b-0002, ...): give more of it\n"
        )
    assert (
        main(["queue", "dlq", "replay", "--id", "3f2a9c1b-0002", "--id", "77aa0000", *where]) == 0
    )
    assert capsys.readouterr().out == "replayed 2, not found 0\n"
    broker = SQLiteBroker(path, clock=clock)
    try:
        assert [d.message.id for d in broker.dead_letters("orders")] == [ids[0], ids[2]]
    finally:
        broker.close()


def test_the_exact_id_wins_over_a_prefix(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id that is a dead letter's whole id names it, though it begins others too."""
    path = tmp_path / "q.db"
    park_ids(path, clock, ["3f2a9c1b-1", "3f2a9c1b", "3f2a9c1b-2"])
    where = ["--broker", str(path), "--queue", "orders"]
    assert main(["queue", "dlq", "show", "3f2a9c1b", *where, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["message"]["id"] == "3f2a9c1b"
    assert main(["queue", "dlq", "purge", "--id", "3f2a9c1b", "--yes", *where]) == 0
    assert capsys.readouterr().out == "purged 1, not found 0\n"


def test_a_prefix_is_looked_up_in_the_index_not_the_backlog(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str], decodes: list[object]
) -> None:
    """``show`` by a prefix among 20,000 parked decodes the one letter it names."""
    path = tmp_path / "q.db"
    broker = SQLiteBroker(path, clock=clock)
    try:
        broker.publish_many(
            "orders", [Envelope(body=b"{}", id=f"{i:06d}.order") for i in range(20_000)]
        )
    finally:
        broker.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE failsafe_messages SET place = 'parked', since = seq")
    db.close()
    decodes.clear()
    where = ["--broker", str(path), "--queue", "orders"]
    assert main(["queue", "dlq", "show", "012345.o", *where, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["message"]["id"] == "012345.order"
    assert len(decodes) == 1
    assert main(["queue", "dlq", "list", "--id", "01234", *where]) == 0  # 5: exact only
    assert capsys.readouterr().out == "no dead letters of 'orders' match\n"
    assert len(decodes) == 1


# -- replay -------------------------------------------------------------------------------------
def test_replay_dry_run_changes_nothing(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``--dry-run`` lists what would be replayed (parked ones by default) and moves none."""
    before = seeded.places()
    assert seeded.run("replay", "--dry-run") == 0
    out = capsys.readouterr().out
    for message_id in (seeded.old, seeded.mid, seeded.new):
        assert message_id in out
    assert seeded.late not in out
    assert "dry run: would replay 3 of 'orders'" in out
    assert seeded.places() == before


def test_replay_moves_them_back_with_fresh_counts(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replayed messages are in the work queue again, counts reset, last error kept."""
    code = seeded.run("replay", "--error-type", "OrderNotFound", "--place", "all")
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == "replayed 2, not found 0\n"
    assert captured.err == "replayed 2/2\n"
    assert seeded.places() == {seeded.mid: "parked", seeded.new: "parked"}
    broker = seeded.broker()
    try:
        got = {d.message.id: d.message for d in broker.receive("orders", limit=10)}
    finally:
        broker.close()
    assert set(got) == {seeded.fresh, seeded.old, seeded.late}
    old = got[seeded.old]
    assert (old.immediate_attempts, old.delayed_attempts) == (0, 0)
    assert old.last_error is not None
    assert old.last_error.type == NOT_FOUND


def test_replay_by_id_counts_the_ones_not_found(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ids that are not dead letters are reported as not found."""
    assert seeded.run("replay", "--id", seeded.mid, "--id", "nope", "--id", seeded.fresh) == 0
    assert capsys.readouterr().out == "replayed 1, not found 2\n"
    assert seeded.mid not in seeded.places()


def test_replay_without_a_filter_is_refused(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay`` with no filter exits 2 naming the filters and ``--all``; nothing moves."""
    before = seeded.places()
    for args in ([], ["--place", "all"], ["--limit", "2"], ["--batch", "1", "--rate", "5"]):
        assert seeded.run("replay", *args) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            "failsafe queue dlq replay: error: replay needs a filter (--older-than, "
            "--error-type or --id), or --all to replay every dead letter of the place "
            "(poison messages too: they fail and are parked again)\n"
        )
    assert seeded.places() == before
    assert seeded.run("replay", "--all") == 0
    assert capsys.readouterr().out == "replayed 3, not found 0\n"
    assert seeded.places() == {seeded.late: "delayed"}


def test_a_dry_run_needs_no_filter(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``--dry-run`` alone shows the whole place (and says ``--all`` is needed); no change."""
    before = seeded.places()
    for verb in ("replay", "purge"):
        assert seeded.run(verb, "--dry-run") == 0
        out = capsys.readouterr().out
        assert [seeded.old in out, seeded.mid in out, seeded.new in out] == [True] * 3
        assert out.endswith(
            f"dry run: would {verb} 3 of 'orders', not found 0 "
            f"(nothing changed; to {verb} them, give --all)\n"
        )
        assert seeded.run(verb, "--dry-run", "--all") == 0
        assert capsys.readouterr().out.endswith("not found 0 (nothing changed)\n")
    assert seeded.places() == before


def test_replay_in_batches_with_progress_lines(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not on a terminal, progress is one line per batch on stderr; the summary on stdout."""
    path = tmp_path / "q.db"
    ids = many_parked(path, clock, 250)
    base = ["queue", "dlq", "replay", "--broker", f"sqlite:{path}", "--queue", "orders"]
    assert main([*base, "--all", "--batch", "100"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "replayed 100/250\nreplayed 200/250\nreplayed 250/250\n"
    assert captured.out == "replayed 250, not found 0\n"
    assert clock.sleeps == []
    broker = SQLiteBroker(path, clock=clock)
    try:
        assert broker.dead_letters("orders") == []
        received = broker.receive("orders", limit=300)
    finally:
        broker.close()
    assert sorted(d.message.id for d in received) == ids


def test_replay_progress_on_a_terminal_rewrites_one_line(
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal the progress line is rewritten in place (a carriage return first)."""
    path = tmp_path / "q.db"
    many_parked(path, clock, 5)
    err = TtyIO()
    monkeypatch.setattr(sys, "stderr", err)
    base = ["queue", "dlq", "replay", "--broker", str(path), "--queue", "orders"]
    code = main([*base, "--all", "--batch", "2"])
    assert code == 0
    assert err.getvalue() == "\rreplayed 2/5\rreplayed 4/5\rreplayed 5/5\n"
    assert capsys.readouterr().out == "replayed 5, not found 0\n"


def test_replay_rate_limit_pauses_between_batches(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--rate 50`` with batches of 100 waits 2 s before each later batch (on the clock)."""
    path = tmp_path / "q.db"
    many_parked(path, clock, 250)
    start = clock.monotonic()
    base = ["queue", "dlq", "replay", "--broker", str(path), "--queue", "orders"]
    assert main([*base, "--all", "--batch", "100", "--rate", "50"]) == 0
    assert clock.sleeps == pytest.approx([2.0, 2.0])
    assert clock.monotonic() - start == pytest.approx(4.0)
    assert capsys.readouterr().out == "replayed 250, not found 0\n"


def test_replay_rate_limit_with_a_limit_and_small_batches(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--limit`` caps the count; a rate of 4/s in batches of 2 pauses 0.5 s each time."""
    path = tmp_path / "q.db"
    ids = many_parked(path, clock, 10)
    base = ["queue", "dlq", "replay", "--broker", str(path), "--queue", "orders"]
    assert main([*base, "--all", "--limit", "6", "--batch", "2", "--rate", "4"]) == 0
    assert clock.sleeps == pytest.approx([0.5, 0.5])
    assert capsys.readouterr().out == "replayed 6, not found 0\n"
    broker = SQLiteBroker(path, clock=clock)
    try:
        assert [d.message.id for d in broker.dead_letters("orders")] == ids[6:]
    finally:
        broker.close()


# -- purge --------------------------------------------------------------------------------------
def test_purge_without_a_filter_is_refused(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``purge`` with no filter exits 2 pointing at the filters and ``--all``; nothing goes."""
    before = seeded.places()
    assert seeded.run("purge", "--yes") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--all" in captured.err
    assert "--older-than" in captured.err
    assert seeded.places() == before


def test_purge_all_deletes_every_parked_one(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--all`` purges the whole place (parked by default), not the delayed ones."""
    assert seeded.run("purge", "--all") == 0
    captured = capsys.readouterr()
    assert captured.out == "purged 3, not found 0\n"
    assert captured.err == "purged 3/3\n"
    assert seeded.places() == {seeded.late: "delayed"}


def test_purge_dry_run_and_filters(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``--dry-run`` changes nothing; then the same filters purge exactly those."""
    before = seeded.places()
    assert seeded.run("purge", "--older-than", "90m", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "dry run: would purge 2 of 'orders'" in out
    assert seeded.old in out
    assert seeded.mid in out
    assert seeded.places() == before

    assert seeded.run("purge", "--older-than", "90m") == 0
    assert capsys.readouterr().out == "purged 2, not found 0\n"
    assert set(seeded.places()) == {seeded.late, seeded.new}

    assert seeded.run("purge", "--place", "delayed", "--error-type", NOT_FOUND) == 0
    assert capsys.readouterr().out == "purged 1, not found 0\n"
    assert seeded.run("purge", "--id", seeded.new, "--id", "nope") == 0
    assert capsys.readouterr().out == "purged 1, not found 1\n"
    assert seeded.places() == {}


def test_purge_asks_on_a_terminal(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal ``purge`` asks first: no keeps them (exit 1), yes purges."""
    monkeypatch.setattr(sys, "stdin", TtyIO("n\n"))
    assert seeded.run("purge", "--error-type", "ValueError") == 1
    captured = capsys.readouterr()
    assert "purge 1 dead letter of 'orders' for good? [y/N]" in captured.err
    assert "nothing purged" in captured.err
    assert seeded.mid in seeded.places()

    monkeypatch.setattr(sys, "stdin", TtyIO("y\n"))
    assert seeded.run("purge", "--error-type", "ValueError") == 0
    assert capsys.readouterr().out == "purged 1, not found 0\n"
    assert seeded.mid not in seeded.places()

    def never() -> str:
        raise AssertionError("asked despite --yes")

    stdin = TtyIO()
    monkeypatch.setattr(stdin, "readline", never)
    monkeypatch.setattr(sys, "stdin", stdin)
    assert seeded.run("purge", "--id", seeded.new, "--yes") == 0
    assert capsys.readouterr().out == "purged 1, not found 0\n"


# -- usage and refusals ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["list", "--place", "lost"], "--place"),
        (["list", "--older-than", "5x"], "--older-than"),
        (["list", "--older-than", "5"], "--older-than"),
        (["list", "--limit", "0"], "--limit"),
        (["replay", "--batch", "0"], "--batch"),
        (["replay", "--rate", "-1"], "--rate"),
        (["replay", "--rate", "0"], "--rate"),
        (["replay", "--rate", "nan"], "--rate"),
        (["purge", "--batch", "x", "--all"], "--batch"),
        (["purge"], "--all"),
        (["show"], "ID"),
        (["explode"], "explode"),
    ],
)
def test_bad_usage_exits_2_naming_the_option(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    """Bad options exit 2 with the option named on stderr and nothing on stdout."""
    before = seeded.places()
    assert seeded.run(*args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert named in captured.err
    assert seeded.places() == before


def test_queue_option_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    """``--queue`` is required."""
    assert main(["queue", "dlq", "list", "--broker", "x.db"]) == 2
    assert "--queue" in capsys.readouterr().err


def test_a_bad_broker_url_exits_2_listing_the_forms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A URL of an unknown scheme exits 2, naming ``broker`` and the accepted forms."""
    assert main(["queue", "dlq", "list", "--broker", "redis://x", "--queue", "q"]) == 2
    err = capsys.readouterr().err
    assert "broker: unknown broker URL scheme 'redis://'" in err
    assert "sqlite:///" in err
    assert "amqp://" in err


def test_a_missing_queue_file_exits_1_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default ``queue.db`` (or a typo) that does not exist exits 1; no file appears."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FAILSAFE_QUEUE_BROKER", raising=False)
    assert main(["queue", "dlq", "list", "--queue", "orders"]) == 1
    err = capsys.readouterr().err
    assert "no queue file at queue.db" in err
    assert "FAILSAFE_QUEUE_BROKER" in err
    assert list(tmp_path.iterdir()) == []


def test_the_broker_comes_from_the_environment(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--broker``, ``FAILSAFE_QUEUE_BROKER`` names it."""
    monkeypatch.setenv("FAILSAFE_QUEUE_BROKER", f"sqlite://{seeded.path}")
    assert main(["queue", "dlq", "list", "--queue", "orders", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4


def test_an_unknown_queue_exits_2_listing_the_known_ones(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """A queue name the file does not know (a typo) exits 2 and lists the file's queues."""
    for command in (["list"], ["show", seeded.old], ["replay", "--all"], ["purge", "--all"]):
        where = ["--broker", str(seeded.path), "--queue", "ordrs"]
        assert main(["queue", "dlq", *command, *where]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert f"error: no such queue 'ordrs' on {seeded.path} (its queues: orders)\n" in (
            captured.err
        )
    assert _rows(seeded.path, "SELECT name FROM failsafe_queues") == [("orders",)]


def test_an_unreachable_rabbitmq_exits_1(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ``amqp://`` broker where nothing listens exits 1 with the reason."""
    url = f"amqp://guest:guest@127.0.0.1:{closed_port}/"
    assert main(["queue", "dlq", "list", "--broker", url, "--queue", "orders"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach RabbitMQ" in err
    assert "guest:guest" not in err  # the password is not printed


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def test_a_failing_broker_mid_replay_exits_1_with_what_was_done(
    clock: FakeClock, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-memory broker, injected: a failure in the second batch reports the first."""
    from failsafe.queue.broker import BrokerUnavailable

    broker = InMemoryBroker(clock=clock)
    for i in range(4):
        broker.publish("orders", Envelope(body=b"{}", id=f"m{i}"))
    for delivery in broker.receive("orders", limit=4):
        broker.park(delivery, delivery.message)
    calls = []
    real_replay = broker.replay_batch

    def flaky(queue: str, **batch: Any) -> DeadLetterBatch:
        calls.append(batch)
        if len(calls) == 2:
            raise BrokerUnavailable("the disk went away")
        return real_replay(queue, **batch)

    monkeypatch.setattr(broker, "replay_batch", flaky)
    monkeypatch.setattr(failsafe.queue.connect, "open_broker", lambda url, **kw: broker)
    assert (
        main(
            [
                "queue",
                "dlq",
                "replay",
                "--broker",
                "mem",
                "--queue",
                "orders",
                "--all",
                "--batch",
                "2",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "replayed 2 of 4, then the broker failed: the disk went away" in err
    assert [d.message.id for d in broker.dead_letters("orders")] == ["m2", "m3"]


# -- open_broker --------------------------------------------------------------------------------
def test_open_broker_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite by absolute URL, relative URL and plain path; other schemes are refused."""
    monkeypatch.chdir(tmp_path)
    for url, made in [
        (f"sqlite://{tmp_path / 'a.db'}", tmp_path / "a.db"),
        ("sqlite:b.db", tmp_path / "b.db"),
        ("c.db", tmp_path / "c.db"),
    ]:
        broker = open_broker(url)
        try:
            assert isinstance(broker, SQLiteBroker)
            assert Path(broker.path).resolve() == made
        finally:
            broker.close()
        assert made.is_file()
    for bad in ("redis://x", "http://x", "", "sqlite:", "sqlite://host/x.db"):
        with pytest.raises(ConfigurationError, match="broker"):
            open_broker(bad)


def test_open_broker_passes_options(tmp_path: Path) -> None:
    """Broker options reach the constructor; an unknown one is refused, named."""
    broker = open_broker(str(tmp_path / "q.db"), lease=5.0, poll_interval=0.5)
    try:
        assert isinstance(broker, SQLiteBroker)
        assert (broker.lease, broker.poll_interval) == (5.0, 0.5)
    finally:
        broker.close()
    with pytest.raises(ConfigurationError, match="prefetch"):
        open_broker(str(tmp_path / "q.db"), prefetch=4)
    with pytest.raises(ConfigurationError, match="lease"):
        open_broker("amqp://guest:guest@127.0.0.1:5672/", lease=5.0)
    with pytest.raises(ConfigurationError, match="prefetch"):
        open_broker("amqp://guest:guest@127.0.0.1:5672/", prefetch=0)


# -- the console command and the real RabbitMQ -------------------------------------------------
@pytest.mark.real_time
def test_the_failsafe_command_as_a_process(seeded: Seeded) -> None:
    """``python -m failsafe.cli queue dlq ...`` works as a process, exit codes included."""
    env = {k: v for k, v in os.environ.items() if k != "FAILSAFE_QUEUE_BROKER"}
    base = [sys.executable, "-m", "failsafe.cli", "queue", "dlq"]
    where = ["--broker", str(seeded.path), "--queue", "orders"]
    done = subprocess.run(
        [*base, "list", *where, "--json", "--place", "parked"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [d["message"]["id"] for d in json.loads(done.stdout)] == [
        seeded.old,
        seeded.mid,
        seeded.new,
    ]
    missing = subprocess.run(
        [*base, "show", "nope", *where], capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 1
    assert "no dead letter with id 'nope'" in missing.stderr
    script = Path(sys.executable).parent / "failsafe"
    refused = subprocess.run(
        [str(script), "queue", "dlq", "purge", *where],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--all" in refused.stderr


RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def rabbit_queue() -> Iterator[str]:
    """A fresh queue name on the real RabbitMQ; its queues are deleted afterwards."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ is not reachable at 127.0.0.1:5672 ({exc})", pytrace=False)
    name = f"cli.{uuid.uuid4().hex[:12]}"
    yield name

    async def delete() -> None:
        connection = await aio_pika.connect(RABBITMQ)
        try:
            channel = await connection.channel()
            for queue in (name, f"{name}.parked", f"{name}.delays", *delay_queues(name)):
                await channel.queue_delete(queue)
        finally:
            await connection.close()

    asyncio.run(delete())


def delay_queues(name: str) -> list[str]:
    """The delay queues the RabbitMQ tests here may make (60 s and 120 s)."""
    return [f"{name}.delay.60000", f"{name}.delay.120000"]


def rabbit_exists(*names: str) -> list[bool]:
    """Whether each queue exists on the server (passive declares, each on its own channel)."""

    async def check() -> list[bool]:
        connection = await aio_pika.connect(RABBITMQ)
        found = []
        try:
            for name in names:
                channel = await connection.channel()
                try:
                    await channel.declare_queue(name, passive=True)
                    found.append(True)
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    found.append(False)
                finally:
                    if not channel.is_closed:
                        await channel.close()
        finally:
            await connection.close()
        return found

    return asyncio.run(check())


@pytest.mark.rabbitmq
@pytest.mark.real_time
def test_a_misspelt_queue_on_rabbitmq_exits_2_and_creates_nothing(
    rabbit_queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command on a queue RabbitMQ does not have exits 2 and declares nothing."""
    where = ["--broker", RABBITMQ, "--queue", rabbit_queue]
    for command in (
        ["list"],
        ["list", "--place", "delayed", "--json"],
        ["show", "3f2a9c1b"],
        ["replay", "--all"],
        ["replay", "--dry-run"],
        ["purge", "--id", "3f2a9c1b", "--yes"],
    ):
        assert main(["queue", "dlq", *command, *where]) == 2, command
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.endswith(
            f": error: no such queue {rabbit_queue!r} on RabbitMQ at "
            "amqp://guest:***@127.0.0.1:5672/\n"
        ), command
    assert rabbit_exists(rabbit_queue, f"{rabbit_queue}.parked") == [False, False]


@pytest.mark.rabbitmq
@pytest.mark.real_time
def test_rabbitmq_says_how_many_wait_in_the_delay_queues(
    rabbit_queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list`` counts the messages it cannot list in the delay queues; ``show`` takes prefixes."""
    for _ in range(2):  # two consumers' brokers: each writes its delays in the index
        broker = open_broker(RABBITMQ)
        try:
            broker.publish(rabbit_queue, Envelope(body=b"{}"), delay=60.0)
            broker.publish(rabbit_queue, Envelope(body=b"{}"), delay=120.0)
        finally:
            broker.close()
    broker = open_broker(RABBITMQ)
    try:
        for message_id in ("3f2a9c1b-0001", "3f2a9c1b-0002", "77aa0000-0001"):
            broker.publish(rabbit_queue, Envelope(body=b"{}", id=message_id))
            [delivery] = broker.receive(rabbit_queue, wait=10.0)
            broker.park(delivery, delivery.message)
    finally:
        broker.close()
    where = ["--broker", RABBITMQ, "--queue", rabbit_queue]
    why = (
        "(they cannot be listed on RabbitMQ: a delay queue is read only by taking its "
        "messages, which would disturb their timers)"
    )

    assert main(["queue", "dlq", "list", "--place", "delayed", *where]) == 0
    assert capsys.readouterr().out == (
        "no dead letters can be listed here; "
        f"4 messages wait in the delay queues of {rabbit_queue!r} {why}\n"
    )
    assert main(["queue", "dlq", "list", *where]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [
        f"3 dead letters of {rabbit_queue!r} (delayed: 0, parked: 3)",
        f"not listed: 4 messages wait in the delay queues of {rabbit_queue!r} {why}",
    ]
    assert main(["queue", "dlq", "list", "--json", "--error-type", "KeyError", *where]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert captured.err == (
        f"note: not listed: 4 messages wait in the delay queues of {rabbit_queue!r}, "
        f"matching the filters or not {why}\n"
    )
    assert main(["queue", "dlq", "list", "--place", "parked", "--json", *where]) == 0
    assert capsys.readouterr().err == ""  # the parking queue alone: nothing to say
    # the index holds each delay once: the second broker's entries were dropped
    assert rabbit_exists(*delay_queues(rabbit_queue)) == [True, True]
    assert _ready_on_rabbitmq(f"{rabbit_queue}.delays") == 2

    assert main(["queue", "dlq", "show", "77aa0000", *where, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["message"]["id"] == "77aa0000-0001"
    assert main(["queue", "dlq", "show", "3f2a9c1b", *where]) == 1
    assert capsys.readouterr().err.endswith(
        f"id '3f2a9c1b' begins more than one dead letter's id in {rabbit_queue!r} "
        "(3f2a9c1b-0001, 3f2a9c1b-0002, ...): give more of it\n"
    )
    assert main(["queue", "dlq", "show", "3f2a9c1b-0009", *where]) == 1
    assert capsys.readouterr().err.endswith(
        f"no dead letter with id '3f2a9c1b-0009' in {rabbit_queue!r}: not parked, and "
        f"4 messages wait in the delay queues of {rabbit_queue!r} {why}\n"
    )
    assert main(["queue", "dlq", "purge", "--id", "3f2a9c1b-0002", "--yes", *where]) == 0
    assert capsys.readouterr().out == "purged 1, not found 0\n"


def _ready_on_rabbitmq(name: str) -> int:
    async def count() -> int:
        connection = await aio_pika.connect(RABBITMQ)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(name, passive=True)
            return declared.declaration_result.message_count or 0
        finally:
            await connection.close()

    return asyncio.run(count())


@pytest.mark.rabbitmq
@pytest.mark.real_time
def test_the_commands_on_the_real_rabbitmq(
    rabbit_queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """list, show, replay and purge through ``amqp://`` against the real server."""
    broker = open_broker(RABBITMQ)
    assert isinstance(broker, BlockingView)
    try:
        for message_id, error in (("r1", NOT_FOUND), ("r2", "ValueError"), ("r3", NOT_FOUND)):
            broker.publish(rabbit_queue, Envelope(body=b'{"n": 1}', id=message_id))
            [delivery] = broker.receive(rabbit_queue, wait=10.0)
            failed = attrs.evolve(
                delivery.message,
                delayed_attempts=3,
                last_error=ErrorInfo(type=error, message="boom", at=1.0),
            )
            broker.park(delivery, failed)
    finally:
        broker.close()
    where = ["--broker", RABBITMQ, "--queue", rabbit_queue]

    assert main(["queue", "dlq", "list", *where, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(d["message"]["id"] for d in listed) == ["r1", "r2", "r3"]
    assert {d["place"] for d in listed} == {Place.PARKED.value}
    assert main(["queue", "dlq", "show", "r2", *where]) == 0
    assert "last error:         ValueError" in capsys.readouterr().out

    assert main(["queue", "dlq", "replay", *where, "--error-type", "OrderNotFound"]) == 0
    assert capsys.readouterr().out == "replayed 2, not found 0\n"
    assert main(["queue", "dlq", "purge", *where, "--id", "r2", "--yes"]) == 0
    assert capsys.readouterr().out == "purged 1, not found 0\n"
    assert main(["queue", "dlq", "list", *where, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    broker = open_broker(RABBITMQ)
    try:
        got: list[Envelope] = []
        while len(got) < 2:
            batch = broker.receive(rabbit_queue, limit=10, wait=10.0)
            assert batch, "the replayed messages did not come back"
            got += [d.message for d in batch]
            for delivery in batch:
                broker.ack(delivery)
    finally:
        broker.close()
    assert sorted(m.id for m in got) == ["r1", "r3"]
    assert all(m.delayed_attempts == 0 for m in got)


# -- a large backlog (issue #15) ------------------------------------------------------------
def bulk_parked(path: Path, clock: FakeClock, count: int) -> None:
    """Park ``count`` messages of ``orders``, ``m00000`` and on, straight in the table.

    Odd numbers failed with KeyError, even ones with ValueError; message ``k`` got there
    ``count - k`` seconds ago (oldest first).
    """
    broker = SQLiteBroker(path, clock=clock)
    try:
        broker.publish_many(
            "orders",
            [
                Envelope(
                    body=b"{}",
                    id=f"m{i:05d}",
                    delayed_attempts=5,
                    last_error=ErrorInfo(
                        type="KeyError" if i % 2 else "ValueError", message="x", at=1.0
                    ),
                )
                for i in range(count)
            ],
        )
    finally:
        broker.close()
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "UPDATE failsafe_messages SET place = 'parked', since = ? + seq",
            (clock.time() - count - 1,),
        )
    db.close()


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every envelope the SQLite broker decodes, from now on."""
    seen: list[object] = []

    def counting(raw: bytes | str) -> Envelope:
        seen.append(raw)
        return decode(raw)

    monkeypatch.setattr(failsafe.queue.sqlite, "decode", counting)
    return seen


def test_listing_100_of_20000_decodes_100(
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    decodes: list[object],
) -> None:
    """``list`` reads a page, not the backlog: 100 of 20,000 decodes 100 and counts the rest."""
    path = tmp_path / "q.db"
    bulk_parked(path, clock, 20_000)
    decodes.clear()
    assert main(["queue", "dlq", "list", "--broker", str(path), "--queue", "orders"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(decodes) == 100
    assert len(lines) == 102
    assert lines[1].startswith("m00000 ")
    assert lines[-1] == (
        "the oldest 100 of 20000 dead letters of 'orders' (delayed: 0, parked: 20000); "
        "raise --limit for more"
    )
    assert main(["queue", "dlq", "show", "m12345", "--broker", str(path), "--queue", "orders"]) == 0
    assert len(decodes) == 101  # show reads the one letter, by its id


def test_list_json_is_what_json_dump_writes(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The streamed ``--json`` output is byte for byte what ``json.dump(indent=2)`` writes."""
    for args in ([], ["--limit", "1"], ["--error-type", "KeyError"]):
        assert seeded.run("list", "--json", *args) == 0
        out = capsys.readouterr().out
        assert out == json.dumps(json.loads(out), indent=2) + "\n"


def test_replay_of_a_large_selection_touches_only_it(
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    decodes: list[object],
) -> None:
    """Replaying one error type of 5,000 moves those 2,500 in batches, decoding none."""
    path = tmp_path / "q.db"
    bulk_parked(path, clock, 5000)
    rows = "SELECT * FROM failsafe_messages WHERE envelope LIKE '%ValueError%' ORDER BY seq"
    untouched = _rows(path, rows)
    decodes.clear()
    base = ["queue", "dlq", "replay", "--broker", str(path), "--queue", "orders"]
    assert main([*base, "--error-type", "KeyError", "--batch", "500"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "replayed 2500, not found 0\n"
    assert captured.err.splitlines() == [f"replayed {n}/2500" for n in range(500, 2501, 500)]
    assert decodes == []
    assert _rows(path, rows) == untouched
    assert _rows(path, "SELECT place, COUNT(*) FROM failsafe_messages GROUP BY place") == [
        ("parked", 2500),
        ("ready", 2500),
    ]


def test_purge_older_than_on_a_large_selection(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--older-than`` purges exactly the older ones, in batches, the rest left alone."""
    path = tmp_path / "q.db"
    bulk_parked(path, clock, 5000)
    base = ["queue", "dlq", "purge", "--broker", str(path), "--queue", "orders"]
    assert main([*base, "--older-than", "2001s", "--batch", "1000", "--yes"]) == 0
    assert capsys.readouterr().out == "purged 3000, not found 0\n"
    left = _rows(path, "SELECT message_id FROM failsafe_messages ORDER BY seq")
    assert [i for (i,) in left] == [f"m{i:05d}" for i in range(3000, 5000)]


def test_replay_at_a_rate_takes_n_over_r_on_the_clock(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,000 messages at 200/s in batches of 50 take 5 s on the fake clock, within a batch."""
    path = tmp_path / "q.db"
    bulk_parked(path, clock, 1000)
    start = clock.monotonic()
    base = ["queue", "dlq", "replay", "--broker", str(path), "--queue", "orders"]
    assert main([*base, "--all", "--rate", "200", "--batch", "50"]) == 0
    assert capsys.readouterr().out == "replayed 1000, not found 0\n"
    took = clock.monotonic() - start
    assert 1000 / 200 - 50 / 200 <= took <= 1000 / 200
    assert clock.sleeps == pytest.approx([50 / 200] * 19)


def test_the_rate_limiter_catches_up_by_a_burst_at_most() -> None:
    """After a stall the bucket lets a quarter second's worth through at once, then paces."""
    clock = FakeClock()
    pacer = Pacer(100.0, 10, clock)  # burst: max(10, 100 * 0.25) = 25 messages
    pacer.take(10)
    pacer.take(10)
    assert clock.sleeps == pytest.approx([0.1])
    clock.advance(60.0)  # the broker was slow: a minute's worth is not saved up
    clock.sleeps.clear()
    for _ in range(6):
        pacer.take(10)
    # 25 saved: three batches start at once (the third runs the bucket into debt), then
    # one every 0.1 s
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.1])


@pytest.mark.parametrize("redactor", [True, False], ids=["errors-extra", "no-errors-extra"])
def test_a_dry_run_never_shows_a_secret_of_an_error(
    seeded: Seeded,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    redactor: bool,
) -> None:
    """A dry run's table redacts error messages, or shows their types alone without the extra."""
    park_secret(seeded)
    if not redactor:
        monkeypatch.setitem(sys.modules, "failsafe.errors.redact", None)  # import fails
    assert seeded.run("purge", "--id", "secret-1", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "PermissionError" in out
    assert ("password=[REDACTED]" in out) is redactor
