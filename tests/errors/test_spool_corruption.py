"""A spool file that was truncated or overwritten: moved aside, what reads salvaged, no outage.

Before, ``ErrorSink(...)`` raised ``DatabaseError`` on such a file (nothing could be reported
any more), or half the reports stuck while the deliverer logged an error every poll.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import httpx
import pytest

from failsafe.errors import ErrorSink
from failsafe.errors.spool import Spool
from failsafe.testing import FakeClock
from tests.errors.fake_service import FakeService


def _filled(path: Path, count: int) -> None:
    """A spool of ``count`` reports, each ~2 KB (so they span many pages), closed."""
    spool = Spool(path)
    for n in range(count):
        spool.put(
            f"r{n:04d}",
            {
                "kind": "stock.decrement",
                "action": "review",
                "source": "w",
                "payload": {"n": n, "pad": "x" * 2000},
            },
            now=100.0,
        )
    spool.close()


def _aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def test_a_file_that_is_not_a_database_is_moved_aside_and_reporting_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not an SQLite file at all" * 100)
    with caplog.at_level(logging.ERROR, logger="failsafe.errors.spool"):
        spool = Spool(path)
    [moved] = [p for p in _aside(path) if not p.name.endswith(("-wal", "-shm"))]
    assert moved.read_bytes().startswith(b"this is not an SQLite file")
    assert spool.recovered == [(str(moved), 0)]
    assert str(path) in caplog.text
    assert str(moved) in caplog.text
    assert spool.put("new", {"kind": "k"}, now=1.0)
    assert len(spool) == 1
    spool.close()


def test_a_truncated_spool_keeps_the_reports_that_still_read(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    _filled(path, 100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut mid-file
    spool = Spool(path)
    [(_, salvaged)] = spool.recovered
    assert 10 <= salvaged < 100
    assert len(spool) == salvaged
    ids = [item.report_id for item in spool.due(200.0, 1000)]
    assert ids == sorted(ids)  # the oldest reports, in order
    assert all(item.body["payload"]["pad"] == "x" * 2000 for item in spool.due(300.0, 1000))
    spool.close()


def test_garbage_written_into_the_spool_loses_only_the_damaged_rows(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    _filled(path, 100)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = b"\xde\xad\xbe\xef" * 2048  # two pages of garbage
    path.write_bytes(bytes(data))
    spool = Spool(path)
    [(_, salvaged)] = spool.recovered
    assert 80 <= salvaged < 100
    assert len(spool) == salvaged
    spool.close()


def test_a_sink_on_a_corrupt_spool_starts_and_delivers_what_was_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    _filled(path, 40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    service = FakeService()
    sink = ErrorSink(
        "http://errors.test",
        source="warehouse",
        http=service.client(),
        spool=path,
        background=False,
        clock=FakeClock(),
    )
    try:
        salvaged = sink.spool.recovered[0][1]
        assert salvaged > 0
        assert sink.flush() == 0  # every salvaged report delivered
        assert len(service.stored) == salvaged
        sink.report("stock.decrement", "review")  # and reporting goes on
        assert len(service.stored) == salvaged + 1
    finally:
        sink.close()


def test_damage_found_while_running_recovers_once_and_the_call_succeeds(tmp_path: Path) -> None:
    """An operation that meets a damaged file recovers and is run again, not failed."""
    path = tmp_path / "spool.db"
    spool = Spool(path)
    spool.put("a", {"kind": "k"}, now=1.0)
    calls = []

    def damaged_once() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return 7

    assert spool._healing(damaged_once) == 7
    assert len(calls) == 2
    assert len(spool.recovered) == 1
    assert len(spool) == 1  # the readable report was salvaged into the fresh file
    locked = sqlite3.OperationalError("database is locked")

    def busy() -> int:
        raise locked

    with pytest.raises(sqlite3.OperationalError):
        spool._healing(busy)  # not damage: raised, no recovery
    assert len(spool.recovered) == 1
    spool.close()
    httpx.Client().close()
