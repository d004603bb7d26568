"""kill -9 of a reporting process loses no report and duplicates none: real processes.

A child process reports through an `ErrorSink`, prints ``reported`` and is killed with
SIGKILL; then a sink on the same spool file delivers to a fake service running in a real
uvicorn process, which counts every report id it receives.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe.errors.client import ErrorSink

pytestmark = pytest.mark.real_time

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys, threading
from failsafe import CircuitBreaker, ConsecutiveFailures
from failsafe.errors.client import ErrorSink

url, spool = sys.argv[1], sys.argv[2]
sink = ErrorSink(
    url, source="child", spool=spool, timeout=0.2, deliver_timeout=5.0,
    breaker=CircuitBreaker(trip=ConsecutiveFailures(threshold=3), reset_timeout=0.3),
)
for i in range(50):
    print(sink.report("stock.decrement", "retry", payload={"n": i}), flush=True)
print("reported", flush=True)
threading.Event().wait()
"""


def pause(seconds: float) -> None:
    threading.Event().wait(seconds)


class FakeServiceProcess:
    """tests.errors.fake_service under uvicorn, on a loopback socket bound here."""

    def __init__(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.errors.fake_service", str(sock.fileno())],
            pass_fds=[sock.fileno()],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sock.close()
        for _ in range(500):
            try:
                self.state()
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError("the fake service exited") from None
                pause(0.02)
        raise RuntimeError("the fake service did not start")

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/_state", timeout=2.0).json()
        return data

    def configure(self, **options: Any) -> None:
        httpx.post(f"{self.url}/_config", json=options, timeout=2.0).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def fake_service() -> Iterator[FakeServiceProcess]:
    server = FakeServiceProcess()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def start_child(url: str, spool: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(spool)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )


def read_ids(child: subprocess.Popen[str]) -> list[str]:
    """The report ids the child printed, up to its ``reported`` line."""
    assert child.stdout is not None
    ids: list[str] = []
    for line in child.stdout:
        if line.strip() == "reported":
            return ids
        ids.append(line.strip())
    raise AssertionError(f"the child exited with {child.wait()} before reporting")


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    assert child.stdout is not None
    child.stdout.close()


def deliver(url: str, spool: Path) -> None:
    """Open a new sink on the spool (a restarted service) and flush it."""
    with ErrorSink(url, source="restarted", spool=spool, background=False) as sink:
        assert sink.flush(timeout=30) == 0
        assert len(sink.spool) == 0


def test_reports_survive_kill_9_right_after_report_returns(
    tmp_path: Path, closed_port: str, fake_service: FakeServiceProcess
) -> None:
    """50 reports made while the service is down, then kill -9: all 50 arrive, once each."""
    spool = tmp_path / "spool.db"
    child = start_child(closed_port, spool)
    ids = read_ids(child)
    kill(child)
    assert len(set(ids)) == 50
    deliver(fake_service.url, spool)
    state = fake_service.state()
    assert sorted(state["stored"]) == sorted(ids)
    assert sorted(state["requests"]) == sorted(ids)  # nothing was sent twice


def test_kill_9_in_the_middle_of_a_delivery_loses_and_duplicates_nothing(
    tmp_path: Path, fake_service: FakeServiceProcess
) -> None:
    """Killed while its deliverer waits on a slow service, a child's reports all arrive once."""
    spool = tmp_path / "spool.db"
    fake_service.configure(delay=0.5)  # stores each report, then answers late
    child = start_child(fake_service.url, spool)
    ids = read_ids(child)
    for _ in range(1000):  # until the deliverer has sent some and waits on another answer
        state = fake_service.state()
        if len(state["requests"]) >= 5 and state["in_flight"] >= 1:
            break
        pause(0.01)
    kill(child)
    assert state["in_flight"] >= 1
    fake_service.configure(delay=0.0)
    deliver(fake_service.url, spool)
    state = fake_service.state()
    assert sorted(state["stored"]) == sorted(ids)  # none lost, none under a new id
    assert set(state["requests"]) == set(ids)
    assert len(state["requests"]) > len(ids)  # some were sent twice, stored once
