"""A raw HTTP/1.1 server on loopback, for the misbehaviours uvicorn will not produce.

Each answer is a function that writes bytes to the client's socket as it likes: a body that
trickles in a byte at a time, a 300 MB body generated as it is sent, a header that is not
valid UTF-8. The server keeps connections alive, counts the connections it accepted, and
counts the body bytes each answer sent before it ended or the client hung up::

    with serve({"/big": big_body("/big", 503, 300 * 2**20)}) as server:
        httpx.get(server.url + "/big")
        server.connections, server.sent["/big"]
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress

# answer(server, connection, hit): write one response; hit counts the path's earlier requests
Answer = Callable[["RawServer", socket.socket, int], None]


def head(status: int, headers: Mapping[str, bytes | str] = {}) -> bytes:
    """A response's status line and headers, ending with the blank line."""
    lines = [f"HTTP/1.1 {status} Status".encode()]
    for name, value in headers.items():
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class RawServer:
    """Serves ``answers`` (path to answer) on 127.0.0.1; any other path gets a 404."""

    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = dict(answers)
        self.stop = threading.Event()  # set on close: answers that wait stop waiting
        self.connections = 0
        self.sent: dict[str, int] = defaultdict(int)  # body bytes sent, per path
        self._hits: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, path: str, sent: int) -> None:
        """Record ``sent`` more body bytes sent for ``path`` (answers call it as they go)."""
        with self._lock:
            self.sent[path] += sent

    def forget(self) -> None:
        """Forget the requests so far: the next one to a path is its first again."""
        with self._lock:
            self._hits.clear()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(10.0)  # a test that forgot its client does not hang the server
        buffered = b""
        try:
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buffered:
                    data = connection.recv(65536)
                    if not data:
                        return
                    buffered += data
                request, _, buffered = buffered.partition(b"\r\n\r\n")
                path = request.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                with self._lock:
                    hit = self._hits[path]
                    self._hits[path] += 1
                answer = self.answers.get(path)
                if answer is None:
                    connection.sendall(head(404, {"Content-Length": "0"}))
                else:
                    answer(self, connection, hit)
        except OSError:  # the client hung up: the answer ends there
            pass
        finally:
            connection.close()

    def close(self) -> None:
        """Stop serving: close the listening socket and every connection."""
        self.stop.set()
        self._listener.close()
        with self._lock:
            for connection in self._open:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()


@contextmanager
def serve(answers: Mapping[str, Answer]) -> Iterator[RawServer]:
    """A `RawServer` for the block."""
    server = RawServer(answers)
    try:
        yield server
    finally:
        server.close()


def small(status: int, body: bytes = b"ok", headers: Mapping[str, bytes | str] = {}) -> Answer:
    """Answer ``status`` with a short body, at once."""

    def answer(server: RawServer, connection: socket.socket, hit: int) -> None:
        connection.sendall(head(status, {**headers, "Content-Length": str(len(body))}) + body)

    return answer


def trickle(path: str, status: int, size: int, every: float) -> Answer:
    """Announce ``size`` bytes, then send one every ``every`` seconds (really waited)."""

    def answer(server: RawServer, connection: socket.socket, hit: int) -> None:
        connection.sendall(head(status, {"Content-Length": str(size)}))
        for _ in range(size):
            if server.stop.wait(every):
                return
            connection.sendall(b"x")
            server.count(path, 1)

    return answer


def big_body(path: str, status: int, size: int) -> Answer:
    """Answer ``status`` with ``size`` zero bytes, made as they are sent (1 MiB at a time)."""
    block = bytes(1 << 20)

    def answer(server: RawServer, connection: socket.socket, hit: int) -> None:
        connection.sendall(head(status, {"Content-Length": str(size)}))
        left = size
        while left > 0 and not server.stop.is_set():
            part = block if left >= len(block) else block[:left]
            connection.sendall(part)
            server.count(path, len(part))
            left -= len(part)

    return answer


def in_turn(*answers: Answer) -> Answer:
    """The first answer to a path's first request, the second to its second...; then the last."""

    def answer(server: RawServer, connection: socket.socket, hit: int) -> None:
        answers[min(hit, len(answers) - 1)](server, connection, hit)

    return answer
