"""The store contract on SQLite, plus what only a file store can show."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from failsafe.errors import Query, RecordNotFound, SQLiteStore, Status, StoreUnavailable
from failsafe.exceptions import ConfigurationError
from tests.errors.store_contract import (
    SPAN,
    TRACE,
    GroupCommitContract,
    StoreContract,
    report,
)


class TestSQLiteStore(StoreContract):
    """The shared contract against a SQLite file."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> SQLiteStore:  # type: ignore[override]
        return SQLiteStore(tmp_path / "errors.db")


class TestSQLiteGroupCommit(GroupCommitContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> SQLiteStore:  # type: ignore[override]
        return SQLiteStore(tmp_path / "errors.db")


@pytest.mark.real_time
def test_reads_do_not_wait_for_a_write(tmp_path: Path) -> None:
    """A listing and a record are read while another thread holds the write transaction."""
    store = SQLiteStore(tmp_path / "errors.db")
    record, _ = store.add(report(), now=1.0, next_attempt_at=None, actor="w")
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store._transaction():
            held.set()
            release.wait(10)

    holding = threading.Thread(target=writer)
    holding.start()
    held.wait(10)
    seen: list[object] = []
    reader = threading.Thread(
        target=lambda: seen.extend([store.get(record.id), store.find(Query()), store.counts()])
    )
    reader.start()
    reader.join(5)
    finished = not reader.is_alive()
    release.set()
    holding.join(10)
    reader.join(10)
    assert finished  # it did not wait for the writer
    assert seen[0] == record
    store.close()


def test_a_record_not_found_keeps_its_read_connection(tmp_path: Path) -> None:
    """A caller's error inside a read hands the connection back instead of closing it."""
    store = SQLiteStore(tmp_path / "errors.db")
    for _ in range(20):
        with pytest.raises(RecordNotFound):
            store.get("missing")
    assert len(store._all_readers) == 1
    store.close()


@pytest.mark.real_time
def test_a_read_waits_for_a_busy_read_connection_only_so_long(tmp_path: Path) -> None:
    """Every read connection busy past busy_timeout: StoreUnavailable, not an endless wait."""
    store = SQLiteStore(tmp_path / "errors.db", readers=1, busy_timeout=0.05)
    with store._reading(), pytest.raises(StoreUnavailable, match="stayed busy"):
        store.counts()
    assert sum(store.counts().values()) == 0  # free again
    store.close()


def test_a_memory_store_reads_on_its_one_connection() -> None:
    """An in-memory store reads on its writer's connection (a second one would be empty)."""
    store = SQLiteStore(":memory:")
    record, _ = store.add(report(), now=1.0, next_attempt_at=None, actor="w")
    assert store.get(record.id) == record
    assert store.find(Query()).total == 1


@pytest.mark.parametrize("readers", [0, -1, True, 1.5])
def test_bad_readers_is_refused(tmp_path: Path, readers: object) -> None:
    """A readers count that is not a positive integer is refused, naming the option."""
    with pytest.raises(ConfigurationError, match="readers"):
        SQLiteStore(tmp_path / "e.db", readers=readers)  # type: ignore[arg-type]


def test_a_file_from_before_the_text_index_gets_it_built_on_open(tmp_path: Path) -> None:
    """Records stored before the search index existed are found once the file is reopened."""
    import sqlite3

    path = tmp_path / "errors.db"
    store = SQLiteStore(path)
    old, _ = store.add(
        report(error_message="legacy failure 4711"), now=1.0, next_attempt_at=None, actor="w"
    )
    store.close()
    db = sqlite3.connect(path)
    for trigger in ("insert", "delete", "update"):
        db.execute(f"DROP TRIGGER failsafe_errors_text_{trigger}")
    db.execute("DROP TABLE failsafe_errors_text")
    db.commit()
    db.close()
    reopened = SQLiteStore(path)
    assert [r.id for r in reopened.find(Query(text="failure 4711")).records] == [old.id]
    reopened.close()


def test_several_processes_share_one_file(tmp_path: Path) -> None:
    """A record written by another process is visible and movable here."""
    path = tmp_path / "errors.db"
    code = (
        "import sys\n"
        "from failsafe.errors import SQLiteStore, Report, Action\n"
        "s = SQLiteStore(sys.argv[1])\n"
        "r, _ = s.add(Report(kind='order.not_found', action=Action.REVIEW, source='orders',"
        " payload={'orderId': 'o-9'}), now=1.0, next_attempt_at=None, actor='orders')\n"
        "print(r.id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    store = SQLiteStore(path)
    record = store.get(out.stdout.strip())
    assert record.payload == {"orderId": "o-9"}
    assert store.move(record.id, Status.RESOLVED, now=2.0, actor="ops").status is Status.RESOLVED


def test_reopening_the_file_keeps_everything(tmp_path: Path) -> None:
    """Records, attempts and history survive closing and reopening the store."""
    path = tmp_path / "errors.db"
    store = SQLiteStore(path)
    record, _ = store.add(report(), now=1.0, next_attempt_at=1.0, actor="w")
    store.claim_due(now=1.0, lease=5.0, limit=1)
    store.record_attempt(
        record.id,
        ok=False,
        detail="x",
        now=2.0,
        to=Status.NEEDS_REVIEW,
        next_attempt_at=None,
        actor="worker",
    )
    before = store.get(record.id)
    store.close()
    assert SQLiteStore(path).get(record.id) == before


def test_a_file_from_before_the_counts_table_is_counted_when_opened(tmp_path: Path) -> None:
    """The counts of records stored before the counts existed are taken once, on opening."""
    path = tmp_path / "errors.db"
    store = SQLiteStore(path)
    for n in range(3):
        store.add(report(payload={"n": n}), now=float(n), next_attempt_at=None, actor="w")
    with store._transaction() as run:  # as a file written by an older version
        for name in ("insert", "update", "delete"):
            run(f"DROP TRIGGER failsafe_errors_count_{name}", ())
        run("DROP TABLE failsafe_error_counts", ())
    store.close()
    again = SQLiteStore(path)
    assert again.counts()["pending_retry"] == 3
    again.add(report(payload={"n": 9}), now=9.0, next_attempt_at=None, actor="w")
    assert again.counts()["pending_retry"] == 4
    again.close()


def test_a_prefix_of_two_ids_names_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ids that begin alike: their common prefix is refused, naming both; more is found."""
    import uuid

    from failsafe.errors import AmbiguousId, ErrorDesk

    ids = iter(["abcdef12" + "0" * 24, "abcdef12" + "f" * 24])
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(hex=next(ids)))
    desk = ErrorDesk(SQLiteStore(tmp_path / "errors.db"))
    first, _ = desk.report(report(payload={"n": 1}), actor="w")
    second, _ = desk.report(report(payload={"n": 2}), actor="w")
    with pytest.raises(AmbiguousId) as caught:
        desk.get("abcdef12")
    assert first.id in str(caught.value)
    assert second.id in str(caught.value)
    assert "give more of it" in str(caught.value)
    assert desk.get("abcdef120").id == first.id
    assert desk.resolve("abcdef12f", actor="ann").id == second.id


def test_a_file_from_before_traces_gets_the_trace_columns_when_opened(tmp_path: Path) -> None:
    """An older file's records read with no trace; new ones store theirs, found by index."""
    import sqlite3

    path = tmp_path / "errors.db"
    store = SQLiteStore(path)
    old, _ = store.add(report(payload={"n": 1}), now=1.0, next_attempt_at=None, actor="w")
    store.close()
    db = sqlite3.connect(path)  # as a file written by the version before traces
    db.execute("DROP INDEX failsafe_errors_trace")
    db.execute("ALTER TABLE failsafe_errors DROP COLUMN trace_id")
    db.execute("ALTER TABLE failsafe_errors DROP COLUMN span_id")
    db.commit()
    db.close()
    reopened = SQLiteStore(path)
    assert (reopened.get(old.id).trace_id, reopened.get(old.id).span_id) == (None, None)
    new, _ = reopened.add(
        report(payload={"n": 2}, trace_id=TRACE, span_id=SPAN),
        now=2.0,
        next_attempt_at=None,
        actor="w",
    )
    assert [r.id for r in reopened.find(Query(trace_id=TRACE)).records] == [new.id]
    with reopened._reading() as run:
        plan = " ".join(
            str(row[-1])
            for row in run(
                "EXPLAIN QUERY PLAN SELECT id FROM failsafe_errors WHERE trace_id = ?"
                " ORDER BY created_at DESC, id DESC",
                (TRACE,),
            ).fetchall()
        )
    assert "failsafe_errors_trace" in plan
    reopened.close()
    assert SQLiteStore(path).get(new.id).trace_id == TRACE  # opened again: nothing to add
