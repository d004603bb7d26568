"""A record's trace on the command line: ``failsafe errors show`` and ``list --trace-id``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from failsafe.cli import main
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import Action, Report
from failsafe.errors.service import create_app
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.worker import Handlers
from failsafe.testing import FakeClock
from tests.errors.test_trace import OTHER_TRACE, SPAN, TRACE, ThreadServer


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store file holding two records of one trace (one with its span), one of another."""
    path = tmp_path / "errors.db"
    store = SQLiteStore(path)
    clock = FakeClock(wall_start=1_700_000_000.0)
    desk = ErrorDesk(store, clock=clock)
    for n, (trace_id, span_id) in enumerate([(TRACE, SPAN), (TRACE, None), (OTHER_TRACE, None)]):
        report = Report(
            kind="stock.decrement",
            action=Action.REVIEW,
            source="warehouse",
            payload={"n": n},
            trace_id=trace_id,
            span_id=span_id,
        )
        desk.report(report, actor="warehouse")
        clock.advance(1.0)
    store.close()
    return path


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[int]:
    """The payloads' ``n`` of the records ``list --json`` prints, newest first."""
    assert main(["errors", "list", "--json", *args]) == 0
    return [r["payload"]["n"] for r in json.loads(capsys.readouterr().out)["records"]]


def test_list_filters_by_trace_id_in_any_case(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--trace-id`` lists that trace's records only; upper-case hex is the same id."""
    assert listed(capsys, "--db", str(db), "--trace-id", TRACE) == [1, 0]
    assert listed(capsys, "--db", str(db), "--trace-id", OTHER_TRACE.upper()) == [2]
    assert listed(capsys, "--db", str(db)) == [2, 1, 0]


def test_show_prints_the_trace_and_span_ids(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` prints the record's trace id and span id (``-`` when it has none)."""
    assert main(["errors", "list", "--db", str(db), "--json", "--trace-id", TRACE]) == 0
    newer, older = (r["id"] for r in json.loads(capsys.readouterr().out)["records"])
    assert main(["errors", "show", older, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"trace id:       {TRACE}\n" in out
    assert f"span id:        {SPAN}\n" in out
    assert main(["errors", "show", newer, "--db", str(db)]) == 0
    assert "span id:        -\n" in capsys.readouterr().out


def test_a_bad_trace_id_is_a_usage_error(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``--trace-id`` that is not 32 hex digits exits 2, naming the option."""
    assert main(["errors", "list", "--db", str(db), "--trace-id", "nope"]) == 2
    assert "--trace-id" in capsys.readouterr().err


@pytest.mark.real_time
def test_list_filters_by_trace_id_on_a_running_service(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``--url``, the filter goes to the service's ``GET /v1/records?trace_id=``."""
    store = SQLiteStore(db)
    server = ThreadServer(
        create_app(ErrorDesk(store), tokens=Tokens(report="rp", review="rv"), handlers=Handlers())
    )
    monkeypatch.setenv("FAILSAFE_ERRORS_REVIEW_TOKEN", "rv")
    try:
        assert listed(capsys, "--url", server.url, "--trace-id", TRACE) == [1, 0]
    finally:
        server.stop()
        store.close()
