"""Real HTTP servers on loopback for the transport tests: uvicorn processes of tests.http.app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest


class Server:
    """One uvicorn process serving an ASGI app (tests/http/app.py) on a socket the test binds.

    Args:
        name: The server's ``SERVER_NAME`` (the app says it in its answers).
        app: The app, as uvicorn names it.
        env: More environment for the app.
        ready_path: A path answered once the app is up.
    """

    def __init__(
        self,
        name: str,
        *,
        app: str = "tests.http.app:app",
        env: dict[str, str] | None = None,
        ready_path: str = "/ok",
    ) -> None:
        self.name = name
        self.ready_path = ready_path
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # uvicorn treats an --fd socket as a Unix one and never sets TCP_NODELAY on what it
        # accepts; Linux copies the option from the listening socket (else ~40 ms a request)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--fd",
                str(sock.fileno()),
                "--log-level",
                "critical",
                "--no-access-log",
            ],
            pass_fds=[sock.fileno()],
            env={**os.environ, "SERVER_NAME": name, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sock.close()  # the child holds the listening socket now: connections queue until it serves
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Wait until uvicorn answers (the socket accepts at once; the app may not yet)."""
        import httpx

        pause = threading.Event()
        for _ in range(500):
            try:
                httpx.get(f"{self.url}{self.ready_path}", timeout=1.0)
                return
            except httpx.TransportError as exc:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"server {self.name} exited with {code}") from exc
                pause.wait(0.02)
        raise RuntimeError(f"server {self.name} did not start")

    def kill(self) -> None:
        """``kill -9`` the server."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[Server, Server]]:
    """Two servers, "w1" and "w2", up for the whole session."""
    started = [Server("w1"), Server("w2")]
    yield started[0], started[1]
    for server in started:
        server.kill()


@pytest.fixture
def fresh_server() -> Iterator[Server]:
    """A server of the test's own, which the test may kill."""
    server = Server("w3")
    yield server
    server.kill()


@pytest.fixture
def closed_port() -> str:
    """The URL of a loopback port where nothing listens (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
