"""The Error-handling service as a real process: uvicorn on loopback, a SQLite file, kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from failsafe.errors.auth import Tokens
from failsafe.errors.service import serve
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import Query
from failsafe.exceptions import ConfigurationError

REPORT = {"kind": "stock.decrement", "action": "retry", "source": "warehouse"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceProcess:
    """``serve(...)`` in a child process, on a free port, logging to a file.

    The store is the SQLite file ``db``, or PostgreSQL at ``dsn`` (the log is then still
    written beside ``db``).
    """

    def __init__(
        self,
        db: Path,
        *,
        dsn: str | None = None,
        host: str = "127.0.0.1",
        report_token: str | None = None,
        review_token: str | None = None,
        wait: bool = True,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = db.with_suffix(f".{self.port}.log")
        code = (
            "from failsafe.errors.auth import Tokens\n"
            "from failsafe.errors.service import serve\n"
            f"serve(db={None if dsn else str(db)!r}, dsn={dsn!r}, host={host!r},"
            f" port={self.port},"
            f" tokens=Tokens(report={report_token!r}, review={review_token!r}),"
            " callbacks={}, poll_interval=0.2)\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAILSAFE_ERRORS_")}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        if wait:
            self._wait_ready()

    def _wait_ready(self) -> None:
        pause = threading.Event()
        for _ in range(500):
            try:
                httpx.get(f"{self.url}/healthz", timeout=1.0)
                return
            except httpx.TransportError as exc:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the service exited: {self.output()}") from exc
                pause.wait(0.02)
        raise RuntimeError(f"the service did not start: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """``kill -9`` the service."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "errors.db"


@pytest.mark.real_time
def test_a_report_over_real_http_is_stored_in_the_file(db: Path) -> None:
    """A report POSTed to the running service is in its SQLite file, and it logs its address."""
    service = ServiceProcess(db)
    try:
        response = httpx.post(f"{service.url}/v1/reports", json=REPORT, timeout=5)
        assert response.status_code == 201
        record_id = response.json()["record"]["id"]
        store = SQLiteStore(db)
        assert store.get(record_id).kind == "stock.decrement"
        store.close()
        assert f"listening on http://127.0.0.1:{service.port}" in service.output()
    finally:
        service.kill()


@pytest.mark.real_time
def test_kill_9_right_after_201_loses_nothing(db: Path) -> None:
    """Every report answered 201 is in the file after kill -9 and a restart on it."""
    service = ServiceProcess(db)
    ids = []
    try:
        with httpx.Client(base_url=service.url, timeout=5) as client:
            for n in range(20):
                response = client.post(
                    "/v1/reports",
                    json={**REPORT, "payload": {"n": n}},
                    headers={"Idempotency-Key": f"r{n}"},
                )
                assert response.status_code == 201
                ids.append(response.json()["record"]["id"])
    finally:
        service.kill()  # at once after the last 201
    assert service.process.returncode == -signal.SIGKILL
    again = ServiceProcess(db)
    try:
        with httpx.Client(base_url=again.url, timeout=5) as client:
            for record_id in ids:
                assert client.get(f"/v1/records/{record_id}").status_code == 200
            listing = client.get("/v1/records", params={"limit": 500}).json()
            assert listing["total"] == 20
            redelivered = client.post(
                "/v1/reports",
                json={**REPORT, "payload": {"n": 19}},
                headers={"Idempotency-Key": "r19"},
            )
            assert redelivered.status_code == 200  # the receipt survived too: counted once
    finally:
        again.kill()
    store = SQLiteStore(db)
    assert store.find(Query(limit=500)).total == 20
    assert store.get(ids[-1]).count == 1
    store.close()


@pytest.mark.real_time
def test_a_public_host_without_tokens_refuses_to_start(db: Path) -> None:
    """Serving 0.0.0.0 without tokens exits at once naming the missing token, listening nowhere."""
    service = ServiceProcess(db, host="0.0.0.0", wait=False)
    try:
        assert service.process.wait(30) != 0
    finally:
        service.kill()
    output = service.output()
    assert "ConfigurationError" in output
    assert "FAILSAFE_ERRORS_REPORT_TOKEN" in output
    assert "0.0.0.0 is not a loopback address" in output
    assert not db.exists()  # refused before the store was opened
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{service.url}/healthz", timeout=1)


@pytest.mark.real_time
def test_a_public_host_with_both_tokens_serves_and_checks_them(db: Path) -> None:
    """With both tokens the service listens on 0.0.0.0 and every door wants its token."""
    service = ServiceProcess(db, host="0.0.0.0", report_token="rep", review_token="rev")
    try:
        with httpx.Client(base_url=service.url, timeout=5) as client:
            refused = client.post("/v1/reports", json=REPORT)
            accepted = client.post(
                "/v1/reports", json=REPORT, headers={"Authorization": "Bearer rep"}
            )
            listing = client.get("/v1/records", headers={"Authorization": "Bearer rep"})
            reviewed = client.get("/v1/records", headers={"Authorization": "Bearer rev"})
        assert (refused.status_code, accepted.status_code) == (401, 201)
        assert (listing.status_code, reviewed.status_code) == (401, 200)
        assert reviewed.json()["total"] == 1
        assert "rep" not in service.output().replace("report", "")  # tokens are never logged
    finally:
        service.kill()


@pytest.mark.real_time
def test_sigterm_stops_the_service_cleanly(db: Path) -> None:
    """SIGTERM shuts the service down gracefully: the app's shutdown runs, with no traceback."""
    service = ServiceProcess(db)
    try:
        assert httpx.post(f"{service.url}/v1/reports", json=REPORT, timeout=5).status_code == 201
        service.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown (the shell convention)
        assert service.process.wait(15) in (0, -signal.SIGTERM)
    finally:
        service.kill()
    output = service.output()
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("tokens", "missing"),
    [
        (Tokens(), "FAILSAFE_ERRORS_REPORT_TOKEN"),
        (Tokens(review="rev"), "FAILSAFE_ERRORS_REPORT_TOKEN"),
        (Tokens(report="rep"), "FAILSAFE_ERRORS_REVIEW_TOKEN"),
    ],
)
def test_serve_checks_the_tokens_before_opening_anything(
    db: Path, tokens: Tokens, missing: str
) -> None:
    """serve() on a public address without a token raises naming it, before creating the store."""
    with pytest.raises(ConfigurationError, match=missing):
        serve(db=str(db), dsn=None, host="10.1.2.3", port=1, tokens=tokens, callbacks={})
    assert not db.exists()


@pytest.mark.parametrize(
    ("db_arg", "dsn", "callbacks", "match"),
    [
        (None, None, {}, "either a SQLite file"),
        (None, None, {}, "PostgreSQL dsn$"),
        ("x.db", "postgresql://x", {}, "not both"),
        ("x.db", None, {"stock.decrement": "ftp://nope"}, "http://"),
        ("x.db", None, {"bad kind": "http://127.0.0.1:1/"}, "kind"),
    ],
)
def test_serve_refuses_a_bad_configuration_before_listening(
    tmp_path: Path, db_arg: str | None, dsn: str | None, callbacks: dict[str, str], match: str
) -> None:
    """Neither or both of db and dsn, or a bad callback, is a ConfigurationError naming it."""
    db_path = None if db_arg is None else str(tmp_path / db_arg)
    with pytest.raises(ConfigurationError, match=match):
        serve(db=db_path, dsn=dsn, host="127.0.0.1", port=1, tokens=Tokens(), callbacks=callbacks)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.real_time
def test_a_served_service_without_tokens_refuses_a_rebound_host(db: Path) -> None:
    """Over a real socket: Host: rebind.attacker.example reads nothing; loopback still does."""
    service = ServiceProcess(db)
    try:
        with httpx.Client(base_url=service.url, timeout=5) as client:
            created = client.post("/v1/reports", json=REPORT)
            assert created.status_code == 201
            rebound = client.get("/v1/records", headers={"Host": "rebind.attacker.example"})
            assert rebound.status_code == 403
            assert rebound.json()["field"] == "host"
            assert created.json()["record"]["id"] not in rebound.text
            foreign = client.post(
                f"/v1/records/{created.json()['record']['id']}/discard",
                json={},
                headers={"Origin": "http://evil.example"},
            )
            assert (foreign.status_code, foreign.json()["field"]) == (403, "origin")
            assert client.get("/v1/records").json()["total"] == 1
    finally:
        service.kill()


@pytest.mark.real_time
def test_a_spool_left_while_the_service_was_down_arrives_in_one_batch(
    db: Path, tmp_path: Path
) -> None:
    """Reports spooled while nothing listened are delivered by the batch endpoint, once each."""
    from failsafe.errors import ErrorSink

    spool = tmp_path / "spool.db"
    down = ErrorSink(
        f"http://127.0.0.1:{free_port()}", source="warehouse", spool=spool, background=False
    )
    ids = [down.report("stock.decrement", "retry", payload={"n": n}) for n in range(30)]
    down.close()
    service = ServiceProcess(db)
    try:
        sink = ErrorSink(service.url, source="warehouse", spool=spool, background=False)
        assert sink.flush() == 0
        sink.close()
        with httpx.Client(base_url=service.url, timeout=5) as client:
            listing = client.get("/v1/records", params={"limit": "100"}).json()
        assert listing["total"] == 30
        assert sorted(r["payload"]["n"] for r in listing["records"]) == list(range(30))
        assert len(ids) == 30
    finally:
        service.kill()
