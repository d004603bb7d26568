"""A loopback TCP proxy that can be cut and restored: servers that die and come back."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlsplit


def dsn_through(dsn: str, proxy: Proxy, schema: str) -> str:
    """A PostgreSQL ``dsn`` reached through ``proxy``, with ``schema`` first on the search path."""
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    user = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return (
        f"{parts.scheme}://{user}127.0.0.1:{proxy.port}{parts.path}"
        f"?options=-csearch_path%3D{schema}"
    )


class Proxy:
    """A loopback TCP proxy to a server that can be cut and restored, on one port throughout.

    ``cut()`` drops every connection and closes the listening socket, so new connections are
    refused, as with a dead server; ``cut(blackhole=True)`` drops the connections but keeps
    accepting new ones and never answers, as with a network partition (a client then waits
    for its socket timeout). ``accepted`` counts the connections made, answered or not.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self._blackhole = False
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                self.accepted += 1
                self._sockets.add(conn)
                if self._blackhole:
                    continue  # hold it open, never answer
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._sockets.add(upstream)
            self._spawn(self._pump, conn, upstream)
            self._spawn(self._pump, upstream, conn)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)

    def cut(self, *, blackhole: bool = False) -> None:
        """Drop every connection; refuse new ones (or, ``blackhole``, accept them silently)."""
        with self._lock:
            self._blackhole = blackhole
            sockets, self._sockets = list(self._sockets), set()
        for s in sockets:
            _close(s)
        if not blackhole and self._listener is not None:
            _close(self._listener)
            self._listener = None

    def restore(self) -> None:
        """Forward again, on the same port."""
        with self._lock:
            self._blackhole = False
            sockets, self._sockets = list(self._sockets), set()
        for s in sockets:  # the silent connections of a blackhole
            _close(s)
        if self._listener is None:
            self.start()

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(timeout=2)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
