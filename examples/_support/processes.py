"""Process supervision: every service of an example as a real uvicorn process on loopback.

The `Supervisor` binds a listening socket for each service on a free port (port 0), writes
the ports into ``settings.json`` in the run folder, and starts each service as
``python -m examples.EXAMPLE serve NAME --settings PATH --fd N``, handing it the socket.
Each process logs to ``NAME.log`` in the run folder. A service can be killed (``SIGKILL``,
as a crash), stopped (``SIGTERM``) and started again on the same port. `Supervisor.serve`
is the child's side: it runs one app under uvicorn on the socket it was handed, traced
first when the settings' ``traces`` is on (`examples._support.telemetry.start`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import httpx

from examples._support.settings import RunSettings

__all__ = ["ROOT", "Supervisor"]

ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the ``examples`` package (the child processes' import root)."""

SettingsT = TypeVar("SettingsT", bound=RunSettings)


def _listen(host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it on Linux: no 40 ms Nagle/delayed-ACK stalls
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


class Supervisor(Generic[SettingsT]):
    """Starts, kills and restarts an example's service processes.

    Each example subclasses it in its ``runner`` module, giving its services in the order
    they start (each needs the ones before it; they stop in the reverse order) and its
    settings class, and saying which app each service runs (`create_app`)::

        class Supervisor(processes.Supervisor[Settings], services=SERVICES, settings=Settings):
            @staticmethod
            def create_app(name: str, settings: Settings) -> object: ...

    The services run as ``python -m PACKAGE serve NAME ...``, PACKAGE being the one of that
    ``runner``. Use it as a context manager: on exit every process it started is stopped.

    Args:
        settings: The run's settings; their ports are chosen here (``ports`` is ignored).
    """

    package: ClassVar[str]
    """The example's package: the one of the module that subclasses this (its ``runner``)."""
    services: ClassVar[tuple[str, ...]]
    settings_type: ClassVar[type[RunSettings]]

    def __init_subclass__(
        cls, *, services: Sequence[str], settings: type[RunSettings], **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.package = cls.__module__.rpartition(".")[0]
        cls.services = tuple(services)
        cls.settings_type = settings

    @staticmethod
    def create_app(name: str, settings: Any) -> object:
        """The ASGI app of service ``name`` (the example's; imported only in its process)."""
        raise NotImplementedError

    @classmethod
    def serve(cls, name: str, settings_path: str, fd: int) -> None:
        """Run service ``name`` on the listening socket ``fd`` (the child's side: ``python
        -m PACKAGE serve NAME --settings PATH --fd N``)."""
        settings = cls.settings_type.load(settings_path)

        def create_app() -> object:
            if settings.traces:  # spans to traces/NAME.jsonl, before anything is built
                from examples._support import telemetry

                telemetry.start(settings, name)
            return cls.create_app(name, settings)

        _run_app(name, fd, url=settings.url(name), create_app=create_app)

    def __init__(self, settings: SettingsT) -> None:
        self._sockets = {name: _listen(settings.host) for name in self.services}
        ports = {name: sock.getsockname()[1] for name, sock in self._sockets.items()}
        self.settings: SettingsT = settings.replace(ports=ports)
        self.settings_path = self.settings.save()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        """The log file of service ``name``."""
        return self.settings.path / f"{name}.log"

    def start(self, names: Iterable[str] | None = None, *, wait: bool = True) -> None:
        """Start the services ``names`` (all by default) on their ports, and wait for them."""
        names = list(self.services if names is None else names)
        for name in names:
            if self.alive(name):
                continue
            sock = self._sockets.pop(name, None) or _listen(
                self.settings.host, self.settings.ports[name]
            )
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            }
            with self.log_path(name).open("ab") as log:
                self.processes[name] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        self.package,
                        "serve",
                        name,
                        "--settings",
                        str(self.settings_path),
                        "--fd",
                        str(sock.fileno()),
                    ],
                    pass_fds=[sock.fileno()],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them
                )
            sock.close()  # the child holds it: connections queue until it serves
        if wait:
            for name in names:
                self.wait_ready(name)

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        """Wait until service ``name`` answers ``/healthz``.

        Raises:
            RuntimeError: If it exits or does not answer within ``timeout`` seconds.
        """
        pause = threading.Event()
        deadline = time.monotonic() + timeout
        url = f"{self.settings.url(name)}/healthz"
        while True:
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}: see {self.log_path(name)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not start in {timeout} s: see {self.log_path(name)}"
                )
            pause.wait(0.05)

    def alive(self, name: str) -> bool:
        """Whether service ``name``'s process runs."""
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def kill(self, name: str) -> None:
        """``kill -9`` service ``name``: no shutdown, connections reset, the port refuses."""
        process = self.processes.get(name)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """Stop service ``name`` gracefully (``SIGTERM``), or kill it after ``timeout``."""
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(name)

    def restart(self, name: str) -> None:
        """Start service ``name`` again on its port (after `kill` or `stop`)."""
        self.stop(name)
        self.start([name])

    def stop_all(self) -> None:
        """Stop every service, the last one started first."""
        for name in reversed(self.services):
            self.stop(name)
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _run_app(name: str, fd: int, *, url: str, create_app: Callable[[], object]) -> None:
    """Run service ``name`` under uvicorn on the listening socket ``fd``.

    Logging is set up first (the app's construction may log); ``url`` is only logged. On
    shutdown, the callables in ``app.state.closers`` (if any) are called, errors ignored.
    """
    import uvicorn

    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app = create_app()
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    logging.getLogger(name).info("listening on %s", url)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    for close in getattr(getattr(app, "state", None), "closers", ()):
        with contextlib.suppress(Exception):
            close()
