"""One uvicorn process serving `bench.app` on loopback, and a loopback port that refuses.

The listening socket is bound here and handed to uvicorn with ``--fd``, as the HTTP tests do
(tests/http/conftest.py). It gets ``TCP_NODELAY`` before it is handed over: uvicorn wraps an
``--fd`` socket as an ``AF_UNIX`` one, so asyncio does not set ``TCP_NODELAY`` on the
connections it accepts, and a response's head and body (two writes) then meet the client's
delayed ACK: about 40 ms per request instead of well under one. Linux copies the option from
the listening socket to the accepted ones.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["RefusingPort", "Server", "server_flavour"]

ROOT = Path(__file__).resolve().parent.parent


def _http_impl() -> str:
    return "httptools" if find_spec("httptools") is not None else "h11"


def _loop_impl() -> str:
    return "uvloop" if find_spec("uvloop") is not None else "asyncio"


def server_flavour() -> str:
    """What serves the requests, such as ``uvicorn (h11, asyncio loop, 1 worker)``."""
    return f"uvicorn ({_http_impl()}, {_loop_impl()} loop, 1 worker)"


class Server:
    """``with Server() as server:`` a uvicorn process at ``server.url``, killed on exit."""

    def __init__(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see the module docstring
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.app:app",
            "--fd",
            str(sock.fileno()),
            "--http",
            _http_impl(),
            "--loop",
            _loop_impl(),
            "--log-level",
            "critical",
            "--no-access-log",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            pass_fds=[sock.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sock.close()  # the child holds the listening socket now
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        pause = threading.Event()
        for _ in range(500):
            try:
                httpx.get(self.url, timeout=1.0).raise_for_status()
                return
            except httpx.TransportError as exc:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"the bench server exited with {code}") from exc
                pause.wait(0.02)
        raise RuntimeError("the bench server did not start")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


class RefusingPort:
    """``with RefusingPort() as url:`` a loopback port that refuses every connection.

    The port is bound and never listened on, and stays bound until the block ends, so no
    other process can take it meanwhile: a connection gets an immediate RST (refused).
    """

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> str:
        return self.url

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sock.close()
