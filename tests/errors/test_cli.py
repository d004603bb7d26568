"""The ``failsafe errors`` command on a local store, end to end through ``main``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import failsafe.errors.service
from failsafe.cli import errors_main, main
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import Action, Report, Status
from failsafe.errors.sqlite import SQLiteStore


class Seeded:
    """A store file with two open records and a resolved one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        store = SQLiteStore(path)
        desk = ErrorDesk(store)

        def add(kind: str, action: Action, payload: dict[str, Any], error: str) -> str:
            record, _ = desk.report(
                Report(
                    kind=kind,
                    action=action,
                    source="warehouse" if kind.startswith("stock") else "orders",
                    payload=payload,
                    error_type=error,
                    error_message=f"{error}: {payload}",
                    traceback="Traceback (most recent call last):\n  boom",
                ),
                actor="test",
            )
            return record.id

        self.stock = add("stock.decrement", Action.RETRY, {"sku": "A-1"}, "OperationalError")
        self.lost = add("order.not_found", Action.REVIEW, {"orderId": "o-42"}, "OrderNotFound")
        self.closed = add("order.not_found", Action.REVIEW, {"orderId": "o-1"}, "OrderNotFound")
        desk.resolve(self.closed, actor="ann", note="found")
        store.close()

    def record(self, record_id: str) -> Any:
        store = SQLiteStore(self.path)
        try:
            return store.get(record_id)
        finally:
            store.close()

    def run(self, *args: str) -> int:
        command, rest = args[0], args[1:]
        return main(["errors", command, "--db", str(self.path), *rest])


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return Seeded(tmp_path / "errors.db")


def test_list_shows_open_records_as_a_table(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list`` prints the open records (not the resolved one) with a header and a total."""
    assert seeded.run("list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "id",
        "status",
        "kind",
        "source",
        "count",
        "created",
        "(UTC)",
        "error",
    ]
    assert seeded.stock in out
    assert seeded.lost in out
    assert seeded.closed not in out
    assert "2 of 2 records" in out


def test_list_json_parses_and_filters(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``list --json`` prints the API's page shape, and each filter narrows it."""

    def listed(*args: str) -> list[str]:
        assert seeded.run("list", "--json", *args) == 0
        page = json.loads(capsys.readouterr().out)
        assert set(page) == {"records", "total", "total_exact", "limit", "offset"}
        return sorted(r["id"] for r in page["records"])

    assert listed() == sorted([seeded.stock, seeded.lost])
    assert listed("--status", "resolved") == [seeded.closed]
    assert listed("--status", "all") == sorted([seeded.stock, seeded.lost, seeded.closed])
    assert listed("--status", "needs_review,resolved") == sorted([seeded.lost, seeded.closed])
    assert listed("--kind", "stock.decrement") == [seeded.stock]
    assert listed("--source", "orders") == [seeded.lost]
    assert listed("--text", "o-42") == [seeded.lost]
    assert len(listed("--status", "all", "--limit", "1")) == 1


def test_show_prints_the_record(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` prints the payload and history; ``show --json`` is the record's JSON."""
    assert seeded.run("show", seeded.closed) == 0
    out = capsys.readouterr().out
    assert '"orderId": "o-1"' in out
    assert "ann: resolved — found" in out
    assert "Traceback (most recent call last)" in out
    assert seeded.run("show", seeded.lost, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == seeded.lost
    assert data["payload"] == {"orderId": "o-42"}
    assert data["status"] == "needs_review"


@pytest.mark.parametrize(
    ("action", "status"),
    [("resolve", Status.RESOLVED), ("retry", Status.PENDING_RETRY), ("discard", Status.DISCARDED)],
)
def test_actions_change_the_store_with_actor_and_note(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], action: str, status: Status
) -> None:
    """Each action moves the record in the store, audited with the actor and note."""
    code = seeded.run(action, seeded.lost, "--note", "called the shop", "--actor", "maria")
    assert code == 0
    assert capsys.readouterr().out == f"record {seeded.lost} is now {status.value}\n"
    record = seeded.record(seeded.lost)
    assert record.status is status
    assert (record.history[-1].actor, record.history[-1].note) == ("maria", "called the shop")


def test_an_action_with_json_prints_the_record(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json`` on an action prints the changed record, default actor ``reviewer``."""
    assert seeded.run("discard", seeded.stock, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "discarded"
    assert data["history"][-1]["actor"] == "reviewer"
    assert data["history"][-1]["note"] is None


def test_a_refused_move_exits_1_with_the_reason(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resolving a resolved record exits 1, says why on stderr, and changes nothing."""
    before = seeded.record(seeded.closed)
    assert seeded.run("resolve", seeded.closed, "--note", "again") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"record {seeded.closed} is resolved; it cannot become resolved" in captured.err
    assert seeded.record(seeded.closed) == before


def test_an_unknown_id_exits_1(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` and actions on an id that does not exist exit 1 naming the id."""
    assert seeded.run("show", "nope") == 1
    assert "no error record with id 'nope'" in capsys.readouterr().err
    assert seeded.run("retry", "nope") == 1
    assert "no error record with id 'nope'" in capsys.readouterr().err


def test_a_missing_store_file_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listing a store file that does not exist exits 1 and does not create it."""
    path = tmp_path / "typo.db"
    assert main(["errors", "list", "--db", str(path)]) == 1
    assert "no error store at" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["errors"],
        ["errors", "explode"],
        ["errors", "list", "--status", "lost"],
        ["errors", "list", "--limit", "0"],
        ["errors", "list", "--limit", "ten"],
        ["errors", "show"],
        ["errors", "resolve", "x", "--actor", " "],
        ["errors", "list", "--db", "a.db", "--url", "http://127.0.0.1:1"],
        ["errors", "serve", "--callback", "no-equals-sign"],
        ["errors", "serve", "--callback", "stock.decrement=ftp://x"],
        ["errors", "serve", "--poll-interval", "0"],
    ],
)
def test_bad_usage_exits_2(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """Bad arguments exit 2 with a message on stderr and nothing on stdout."""
    if args[:2] == ["errors", "list"] and "--db" not in args:
        args = [*args, "--db", str(seeded.path)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip()


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` prints the commands and exits 0."""
    assert main(["errors", "--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve", "list", "show", "resolve", "retry", "discard"):
        assert command in out


def test_serve_passes_its_options_to_the_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``serve`` calls the service's ``serve`` with the store, address, callbacks and tokens."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(failsafe.errors.service, "serve", lambda **kw: calls.append(kw))
    monkeypatch.setenv("FAILSAFE_ERRORS_REVIEW_TOKEN", "rv")
    monkeypatch.delenv("FAILSAFE_ERRORS_REPORT_TOKEN", raising=False)
    db = str(tmp_path / "e.db")
    code = main(
        [
            "errors",
            "serve",
            "--db",
            db,
            "--port",
            "9001",
            "--callback",
            "stock.decrement=http://127.0.0.1:9/retry",
            "--callback",
            "order.paid=http://127.0.0.1:9/paid",
            "--poll-interval",
            "0.5",
        ]
    )
    assert code == 0
    assert calls == [
        {
            "db": db,
            "dsn": None,
            "host": "127.0.0.1",
            "port": 9001,
            "tokens": Tokens(review="rv"),
            "callbacks": {
                "stock.decrement": "http://127.0.0.1:9/retry",
                "order.paid": "http://127.0.0.1:9/paid",
            },
            "callback_hosts": ("127.0.0.1", "::1", "localhost"),
            "poll_interval": 0.5,
            "schedules": {},
            "retention_days": 14.0,
            "require_handlers": False,
            "allow_edits": False,
        }
    ]
    calls.clear()
    flags = ["--retention-days", "0", "--require-handlers", "--allow-edits"]
    assert main(["errors", "serve", "--db", db, *flags]) == 0
    chosen = (calls[0]["retention_days"], calls[0]["require_handlers"], calls[0]["allow_edits"])
    assert chosen == (None, True, True)
    calls.clear()
    alert = ["--alert-url", "https://hooks.example/a", "--alert-at", "50", "--alert-at", "500"]
    assert main(["errors", "serve", "--db", db, *alert]) == 0
    assert (calls[0]["alert_url"], calls[0]["alert_thresholds"]) == (
        "https://hooks.example/a",
        (50, 500),
    )
    assert main(["errors", "serve", "--db", db, "--alert-at", "5"]) == 2
    calls.clear()
    dlq = ["--dlq-broker", "sqlite:///q.db", "--dlq-queue", "orders", "--dlq-queue", "payments"]
    assert main(["errors", "serve", "--db", db, *dlq]) == 0
    assert (calls[0]["dlq_broker"], calls[0]["dlq_queues"]) == (
        "sqlite:///q.db",
        ("orders", "payments"),
    )
    assert main(["errors", "serve", "--db", db, "--dlq-queue", "orders"]) == 2
    calls.clear()
    assert main(["errors", "serve", "--dsn", "postgresql://x/y"]) == 0
    assert (calls[0]["db"], calls[0]["dsn"]) == (None, "postgresql://x/y")
    calls.clear()
    hosts = ["--callback-host", "orders.internal", "--callback-host", "10.0.0.7"]
    assert main(["errors", "serve", *hosts]) == 0
    assert calls[0]["callback_hosts"] == ["orders.internal", "10.0.0.7"]


def test_serve_schedules_reach_the_desk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--schedule KIND=ATTEMPTS:FIRST:MAX`` sets that kind's retries; ``*`` the default."""
    import uvicorn

    desks: list[Any] = []
    real_desk = failsafe.errors.service.ErrorDesk

    def spy(*args: Any, **kwargs: Any) -> Any:
        desks.append(real_desk(*args, **kwargs))
        return desks[-1]

    monkeypatch.setattr(failsafe.errors.service, "ErrorDesk", spy)
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: None)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    code = main(
        [
            "errors",
            "serve",
            "--db",
            str(tmp_path / "e.db"),
            "--port",
            str(port),
            "--schedule",
            "order.status=10:0.5:2",
            "--schedule",
            "*=3:1",
        ]
    )
    assert code == 0
    [desk] = desks
    status = desk.schedule_for("order.status")
    assert status.attempts == 10
    assert (status.backoff.initial, status.backoff.maximum) == (0.5, 2.0)
    other = desk.schedule_for("stock.decrement")
    assert (other.attempts, other.backoff.initial, other.backoff.maximum) == (3, 1.0, 3600.0)


@pytest.mark.parametrize("spec", ["order.status", "x=1", "x=a:1", "x=0:1", "x=2:-1", "=2:1"])
def test_bad_schedules_are_usage_errors(
    spec: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A malformed ``--schedule`` exits 2 naming the option, before anything starts."""
    code = main(["errors", "serve", "--db", str(tmp_path / "e.db"), "--schedule", spec])
    assert code == 2
    assert "--schedule" in capsys.readouterr().err


def test_serve_refusal_of_a_public_host_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The service's refusal to listen publicly without tokens exits 2 with its message."""
    import uvicorn

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the service started listening")

    monkeypatch.setattr(uvicorn.Server, "run", never)
    monkeypatch.delenv("FAILSAFE_ERRORS_REVIEW_TOKEN", raising=False)
    monkeypatch.delenv("FAILSAFE_ERRORS_REPORT_TOKEN", raising=False)
    code = main(["errors", "serve", "--db", str(tmp_path / "e.db"), "--host", "0.0.0.0"])
    assert code == 2
    assert "is not a loopback address" in capsys.readouterr().err


def test_errors_main_is_failsafe_errors(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """``errors_main`` (behind ``python -m failsafe.errors``) runs the same commands."""
    assert errors_main(["show", seeded.lost, "--db", str(seeded.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == seeded.lost


@pytest.mark.real_time
def test_python_dash_m_failsafe_errors(seeded: Seeded) -> None:
    """``python -m failsafe.errors resolve`` works as a process, exit codes included."""
    base = [sys.executable, "-m", "failsafe.errors"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILSAFE_ERRORS_")}
    done = subprocess.run(
        [*base, "resolve", seeded.lost, "--db", str(seeded.path), "--note", "ok"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"record {seeded.lost} is now resolved\n")
    again = subprocess.run(
        [*base, "resolve", seeded.lost, "--db", str(seeded.path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1
    assert "cannot become resolved" in again.stderr


def service_app() -> Any:
    """The whole service over the file in ``CLI_TEST_DB`` (uvicorn ``--factory``)."""
    from failsafe.errors.service import create_app
    from failsafe.errors.worker import Handlers

    desk = ErrorDesk(SQLiteStore(os.environ["CLI_TEST_DB"]))
    return create_app(desk, tokens=Tokens.from_env(), handlers=Handlers())


@pytest.fixture
def service(seeded: Seeded) -> Iterator[str]:
    """A real uvicorn serving the service over the seeded file, with a review token."""
    import httpx

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILSAFE_ERRORS_")}
    env |= {"CLI_TEST_DB": str(seeded.path), "FAILSAFE_ERRORS_REVIEW_TOKEN": "rv-token"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.errors.test_cli:service_app",
            "--factory",
            "--fd",
            str(sock.fileno()),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        pass_fds=[sock.fileno()],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    sock.close()
    pause = threading.Event()
    try:
        for _ in range(500):
            try:
                httpx.get(f"{url}/healthz", timeout=1.0)
                break
            except httpx.TransportError:
                assert process.poll() is None, "the service exited"
                pause.wait(0.02)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


@pytest.mark.real_time
def test_the_commands_act_on_a_running_service(
    seeded: Seeded,
    service: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With ``--url`` the commands go through the JSON API with the review token."""
    monkeypatch.setenv("FAILSAFE_ERRORS_REVIEW_TOKEN", "rv-token")
    remote = ["--url", service]
    assert main(["errors", "list", *remote, "--json", "--kind", "order.not_found"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in page["records"]] == [seeded.lost]
    assert main(["errors", "show", seeded.lost, *remote]) == 0
    assert '"orderId": "o-42"' in capsys.readouterr().out
    code = main(["errors", "resolve", seeded.lost, *remote, "--note", "found", "--actor", "m"])
    assert code == 0
    assert capsys.readouterr().out == f"record {seeded.lost} is now resolved\n"
    record = seeded.record(seeded.lost)
    assert record.status is Status.RESOLVED
    assert (record.history[-1].actor, record.history[-1].note) == ("m", "found")

    assert main(["errors", "discard", seeded.lost, *remote]) == 1
    assert "HTTP 409" in (err := capsys.readouterr().err)
    assert "cannot become discarded" in err
    assert main(["errors", "show", "nope", *remote]) == 1
    assert "no error record with id" in capsys.readouterr().err

    fingerprint = seeded.record(seeded.stock).fingerprint
    assert main(["errors", "groups", *remote, "--json"]) == 0
    assert [g["fingerprint"] for g in json.loads(capsys.readouterr().out)["groups"]] == [
        fingerprint
    ]
    assert main(["errors", "group", "resolve", fingerprint, *remote, "--dry-run"]) == 0
    assert "resolve would change 1 records" in capsys.readouterr().out
    assert main(["errors", "group", "show", fingerprint, *remote, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["open"] == 1
    assert main(["errors", "group", "resolve", fingerprint, *remote]) == 0
    assert capsys.readouterr().out == f"resolve: 1 of 1 records of {fingerprint} changed\n"
    assert seeded.record(seeded.stock).status is Status.RESOLVED

    monkeypatch.setenv("FAILSAFE_ERRORS_REVIEW_TOKEN", "wrong")
    assert main(["errors", "list", *remote]) == 1
    assert "HTTP 401" in (err := capsys.readouterr().err)
    assert "FAILSAFE_ERRORS_REVIEW_TOKEN" in err


def test_an_unreachable_service_exits_1(
    closed_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``--url`` where nothing listens exits 1 saying the service cannot be reached."""
    assert main(["errors", "list", "--url", closed_url]) == 1
    assert "cannot reach the service" in capsys.readouterr().err


@pytest.fixture
def closed_url() -> str:
    """A loopback URL where nothing listens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# -- failure groups ---------------------------------------------------------------------------
def _fingerprint(seeded: Seeded, record_id: str) -> str:
    return str(seeded.record(record_id).fingerprint)


def test_groups_lists_the_groups_with_open_records(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """`errors groups` lists the groups, filters them by status and text, and bounds --limit."""
    assert seeded.run("groups") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["fingerprint", "open", "records", "reports"]
    assert _fingerprint(seeded, seeded.stock) in out
    assert "2 of 2 groups" in out
    assert seeded.run("groups", "--status", "resolved", "--json") == 0
    page = json.loads(capsys.readouterr().out)
    assert [g["kind"] for g in page["groups"]] == ["order.not_found"]
    assert page["groups"][0]["statuses"]["resolved"] == 1
    assert seeded.run("groups", "--text", "nothing like this") == 0
    assert capsys.readouterr().out == "no groups match\n"
    assert seeded.run("groups", "--limit", "0") == 2
    assert "--limit must be from 1 to 500" in capsys.readouterr().err


def test_group_show_and_a_dry_run_then_the_action(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """`errors group show` describes a group; `--dry-run` counts, then the action moves them."""
    fingerprint = _fingerprint(seeded, seeded.lost)
    db = ["--db", str(seeded.path)]
    assert main(["errors", "group", "show", fingerprint, *db]) == 0
    out = capsys.readouterr().out
    assert f"fingerprint:    {fingerprint}" in out
    assert "records:        2 (1 open)" in out
    assert main(["errors", "group", "discard", fingerprint, *db, "--dry-run"]) == 0
    assert capsys.readouterr().out == (
        f"discard would change 1 records of {fingerprint} (dry run: nothing changed)\n"
    )
    assert seeded.record(seeded.lost).status is Status.NEEDS_REVIEW
    code = main(
        ["errors", "group", "discard", fingerprint, *db, "--note", "a test order", "--actor", "m"]
    )
    assert code == 0
    assert capsys.readouterr().out == f"discard: 1 of 1 records of {fingerprint} changed\n"
    record = seeded.record(seeded.lost)
    assert record.status is Status.DISCARDED
    assert (record.history[-1].actor, record.history[-1].note) == ("m", "a test order")
    assert main(["errors", "list", *db, "--group", fingerprint, "--status", "all", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["records"]) == 2
    assert main(["errors", "group", "show", "v1-0000000000000000", *db]) == 1
    assert "no failure group" in capsys.readouterr().err


def test_a_record_is_named_by_a_prefix_of_its_id_or_by_its_report_id(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 12 characters the review pages show, or the id ``report()`` returned, find it."""
    assert seeded.run("show", seeded.lost[:12]) == 0
    assert f"id:             {seeded.lost}" in capsys.readouterr().out
    store = SQLiteStore(seeded.path)
    record, _ = ErrorDesk(store).report(
        Report(kind="price.lookup", action=Action.REVIEW, source="shop"),
        actor="shop",
        report_id="9f2c4b0e7d8a4c51b7e3a1f0c2d4e6f8",
    )
    store.close()
    assert seeded.run("show", "9f2c4b0e7d8a4c51b7e3a1f0c2d4e6f8", "--json") == 0
    assert json.loads(capsys.readouterr().out)["id"] == record.id
    assert seeded.run("resolve", seeded.lost[:8].upper(), "--note", "found") == 0
    assert capsys.readouterr().out == f"record {seeded.lost} is now resolved\n"
    assert seeded.run("show", seeded.lost[:7]) == 1
    assert "no error record with id" in capsys.readouterr().err


# -- ordinary mistakes: one line naming the problem and the fix, no traceback -----------------
def test_a_store_in_a_missing_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store in a directory that does not exist is one line naming it, exit 2."""
    missing = tmp_path / "no" / "such" / "dir" / "errors.db"
    assert main(["errors", "serve", "--db", str(missing), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"failsafe: error: --db: cannot create {missing}: the directory {missing.parent}"
        " does not exist\n"
    )
    assert not missing.parent.exists()


def test_a_file_that_is_not_a_database_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a database is one line naming it, exit 2."""
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 50)
    before = text.read_bytes()
    assert main(["errors", "list", "--db", str(text)]) == 2
    assert capsys.readouterr().err == (
        f"failsafe: error: --db: {text} is not a SQLite database (is it the right file?)\n"
    )
    assert text.read_bytes() == before  # nothing written to it


def test_a_port_in_use_is_one_line_before_the_store_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port in use is one line, said before the store is opened, exit 2."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    db = tmp_path / "errors.db"
    try:
        assert main(["errors", "serve", "--db", str(db), "--port", str(port)]) == 2
    finally:
        taken.close()
    assert capsys.readouterr().err == (
        f"failsafe: error: --port: {port} is in use on 127.0.0.1 (another process listens"
        " there): stop it, or give another port\n"
    )
    assert not db.exists()  # refused before the store was made


def test_a_command_whose_extra_is_missing_says_how_to_install_it() -> None:
    """Without the extra, a command says in one line which extra to install, exit 2."""
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from failsafe.cli import main\n"
        "sys.exit(main(['errors', 'serve', '--db', 'x.db']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr == (
        "failsafe: error: failsafe.errors.service needs the 'errors' extra (starlette is not"
        " installed): pip install 'failsafe-kit[errors]'\n"
    )
