"""Issue #12: time and memory stay bounded on every path, against misbehaving real servers.

The uvicorn servers of conftest.py answer slowly or with Retry-After; the raw server of
raw.py trickles bodies, sends 300 MB ones, and sends headers that are not UTF-8. The tests
assert on what the transport did (the timeouts each attempt carried, the exception, the
bytes that arrived, the connections opened, the peak memory), never on elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from failsafe import Backoff, ConfigurationError, Timeout, TimeoutExceeded, predicates
from failsafe.http import AsyncResilientTransport, DeadlineExceeded, ResilientTransport
from failsafe.http._bounds import DISCARD_READ_LIMIT, release, release_async
from failsafe.testing import FakeClock
from tests.http.conftest import Server
from tests.http.raw import big_body, in_turn, serve, small, trickle

ROOT = Path(__file__).resolve().parents[2]


class Recorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport that records the timeouts of each attempt, then sends it for real."""

    def __init__(self, kind: str) -> None:
        self.inner: Any = httpx.HTTPTransport() if kind == "sync" else httpx.AsyncHTTPTransport()
        self.timeouts: list[dict[str, float | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.append(dict(request.extensions["timeout"]))
        return self.inner.handle_request(request)  # type: ignore[no-any-return]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.append(dict(request.extensions["timeout"]))
        return await self.inner.handle_async_request(request)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


def get(
    kind: str,
    url: str,
    *,
    around: Timeout | None = None,
    first: Callable[[], object] | None = None,
    **options: Any,
) -> tuple[Recorder, httpx.Response | Exception]:
    """GET ``url`` through a resilient transport (inside ``around``, calling ``first`` first)."""
    recorder = Recorder(kind)
    result: httpx.Response | Exception
    if kind == "sync":
        with httpx.Client(transport=ResilientTransport(recorder, **options), timeout=5.0) as client:

            def call() -> httpx.Response:
                if first is not None:
                    first()
                return client.get(url)

            try:
                result = around.call(call) if around is not None else call()
            except Exception as exc:
                result = exc
        return recorder, result

    async def main() -> httpx.Response:
        transport = AsyncResilientTransport(recorder, **options)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:

            async def call() -> httpx.Response:
                if first is not None:
                    first()
                return await client.get(url)

            return await (around.call_async(call) if around is not None else call())

    try:
        result = asyncio.run(main())
    except Exception as exc:
        result = exc
    return recorder, result


def every(value: float) -> dict[str, float]:
    return dict.fromkeys(("connect", "read", "write", "pool"), value)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """The same scenario through ResilientTransport and AsyncResilientTransport."""
    return str(request.param)


# -- 1. an enclosing deadline bounds every attempt -----------------------------------------


def test_enclosing_timeout_shrinks_every_attempts_timeouts(
    kind: str, servers: tuple[Server, Server]
) -> None:
    """Inside Timeout(1), each attempt's four timeouts shrink to the time the Timeout has left."""
    w1, _ = servers
    clock = FakeClock()
    recorder, result = get(
        kind,
        f"{w1.url}/status/503",
        around=Timeout(1.0, clock=clock),
        first=lambda: clock.advance(0.25),
        attempts=3,
        backoff=Backoff.constant(0.125),
        clock=clock,
    )
    assert isinstance(result, httpx.Response)
    assert result.status_code == 503
    assert recorder.timeouts == [every(0.75), every(0.625), every(0.5)]  # not the client's 5 s


@pytest.mark.parametrize(
    ("deadline", "same_clock", "expected"),
    [
        (0.5, True, 0.5),  # the transport's own deadline ends first
        (2.0, True, 0.75),  # the enclosing Timeout ends first
        (2.0, False, 0.75),  # the same, the Timeout measured on another clock
        (None, True, 0.75),  # no deadline of its own: the enclosing one
    ],
)
def test_the_earlier_of_the_two_deadlines_wins(
    kind: str,
    servers: tuple[Server, Server],
    deadline: float | None,
    same_clock: bool,
    expected: float,
) -> None:
    """The transport's deadline= and an enclosing Timeout's combine: the earlier one bounds."""
    w1, _ = servers
    clock = FakeClock()
    timeout_clock = clock if same_clock else FakeClock(start=100.0)
    recorder, result = get(
        kind,
        f"{w1.url}/ok",
        around=Timeout(1.0, clock=timeout_clock),
        first=lambda: timeout_clock.advance(0.25),
        deadline=deadline,
        clock=clock,
    )
    assert isinstance(result, httpx.Response)
    assert result.status_code == 200
    assert recorder.timeouts == [every(expected)]


def test_no_time_left_fails_fast_without_sending(kind: str, servers: tuple[Server, Server]) -> None:
    """When the enclosing deadline has passed, no request is sent: DeadlineExceeded at once."""
    w1, _ = servers
    clock = FakeClock()
    recorder, result = get(
        kind,
        f"{w1.url}/ok",
        around=Timeout(1.0, clock=clock),
        first=lambda: clock.advance(1.0),
        clock=clock,
    )
    assert recorder.timeouts == []  # nothing sent
    if kind == "async":  # the pre-emptive Timeout expired too, and says so
        assert isinstance(result, TimeoutExceeded)
        result = result.__context__  # type: ignore[assignment]
    assert isinstance(result, DeadlineExceeded)
    assert result.enclosing
    assert isinstance(result, httpx.TimeoutException)
    assert "enclosing deadline" in str(result)


@pytest.mark.real_time
def test_enclosing_timeout_cuts_a_slow_answer(servers: tuple[Server, Server]) -> None:
    """Timeout(0.2) around a GET the server answers in 1 s: the shortened read timeout fires."""
    w1, _ = servers
    recorder, result = get("sync", f"{w1.url}/slow/1000", around=Timeout(0.2))
    assert isinstance(result, DeadlineExceeded)  # the read timeout the deadline shortened
    assert result.enclosing
    assert isinstance(result.__cause__, httpx.ReadTimeout)
    [timeouts] = recorder.timeouts
    assert all(0 < value <= 0.2 for value in timeouts.values() if value is not None)


# -- 2. the deadline holds while the body is read ------------------------------------------


def read_trickle(
    kind: str, url: str, buffer: bool, around: Timeout | None = None, **options: Any
) -> tuple[int, BaseException | None]:
    """GET a trickling body to its end; return the bytes that reached the caller and the error.

    With ``buffer=True`` the transport reads the body (client.get); with ``buffer=False`` the
    caller does (client.stream), chunk by chunk.
    """
    received = 0
    transport_options = {"attempts": 1, "backoff": Backoff.none(), "buffer": buffer, **options}
    if kind == "sync":
        with httpx.Client(transport=ResilientTransport(**transport_options), timeout=2.0) as client:

            def call() -> None:
                nonlocal received
                if buffer:
                    received += len(client.get(url).content)
                    return
                with client.stream("GET", url) as response:
                    for chunk in response.iter_raw():
                        received += len(chunk)

            try:
                around.call(call) if around is not None else call()
            except Exception as exc:
                return received, exc
        return received, None

    async def main() -> None:
        nonlocal received
        transport = AsyncResilientTransport(**transport_options)
        async with httpx.AsyncClient(transport=transport, timeout=2.0) as client:
            if buffer:
                received += len((await client.get(url)).content)
                return
            async with client.stream("GET", url) as response:
                async for chunk in response.aiter_raw():
                    received += len(chunk)

    try:
        asyncio.run(main())
    except Exception as exc:
        return received, exc
    return received, None


@pytest.mark.real_time
@pytest.mark.parametrize(
    ("status", "buffer"),
    [(503, True), (503, False), (200, True)],
    ids=["503-buffered", "503-streamed", "200-buffered"],
)
def test_deadline_holds_while_a_body_trickles_in(kind: str, status: int, buffer: bool) -> None:
    """A body whose 100 bytes come one per 20 ms: deadline=0.2 ends the read after ~10 bytes."""
    with serve({"/trickle": trickle("/trickle", status, 100, every=0.02)}) as server:
        received, error = read_trickle(kind, f"{server.url}/trickle", buffer, deadline=0.2)
        sent = server.sent["/trickle"]
    assert isinstance(error, DeadlineExceeded), repr(error)
    assert not error.enclosing
    assert received < 50  # today: all 100, two seconds later
    assert sent < 50


@pytest.mark.real_time
def test_deadline_holds_while_a_retried_503_trickles_in() -> None:
    """A trickling 503 about to be retried is drained only until the deadline; no retry follows."""
    with serve({"/trickle": trickle("/trickle", 503, 100, every=0.02)}) as server:
        _, error = read_trickle("sync", f"{server.url}/trickle", True, deadline=0.2, attempts=3)
        sent, connections = server.sent["/trickle"], server.connections
    assert isinstance(error, DeadlineExceeded), repr(error)
    assert sent < 50
    assert connections == 1  # no time was left for a second attempt


@pytest.mark.real_time
def test_enclosing_timeout_holds_while_a_body_trickles_in() -> None:
    """With no deadline of its own, the transport stops reading at an enclosing Timeout's."""
    with serve({"/trickle": trickle("/trickle", 200, 100, every=0.02)}) as server:
        received, error = read_trickle(
            "sync", f"{server.url}/trickle", False, around=Timeout(0.2), deadline=None
        )
    assert isinstance(error, DeadlineExceeded), repr(error)
    assert error.enclosing
    assert received < 50


# -- 3. a discarded response is never read whole --------------------------------------------

BIG = 300 * 2**20


@pytest.fixture(scope="module")
def big_server() -> Iterator[Any]:
    """A raw server: /warm answers 200; /big answers 503 with a 300 MB body, then 200 "ok"."""
    with serve(
        {"/warm": small(200), "/big": in_turn(big_body("/big", 503, BIG), small(200, b"ok"))}
    ) as server:
        yield server


@pytest.mark.parametrize("mode", ["buffered", "streamed"])
def test_a_discarded_300_mb_body_is_not_read_into_memory(
    kind: str, mode: str, big_server: Any
) -> None:
    """A retried 503 with a 300 MB body: its connection is closed unread; memory stays flat."""
    big_server.forget()
    connections = big_server.connections
    child = subprocess.run(
        [sys.executable, "-m", "tests.http.peak_memory", big_server.url, kind, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )  # no timeout= (its wait polls with real sleeps): the transport's default deadline bounds it
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert (report["status"], report["body"], report["attempts"]) == (200, "ok", 2)
    assert report["grew"] < 64 * 2**20, f"peak RSS grew by {report['grew'] / 2**20:.0f} MB"
    # /warm and /big shared a connection; the retry needed a new one: the first was closed
    assert big_server.connections - connections == 2


def test_a_short_discarded_body_is_drained_and_its_connection_reused(kind: str) -> None:
    """A retried 503 with a short body is read to its end, so the retry reuses the connection."""
    with serve({"/flaky": in_turn(small(503, b"x" * 1000), small(200, b"ok"))}) as server:
        _, result = get(kind, f"{server.url}/flaky", backoff=Backoff.none())
        connections = server.connections
    assert isinstance(result, httpx.Response)
    assert result.text == "ok"
    assert connections == 1


class Endless(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that never ends, 1 KiB at a time, counting what was taken from it."""

    def __init__(self) -> None:
        self.taken = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            self.taken += 1024
            yield bytes(1024)

    async def __aiter__(self) -> Any:
        while True:
            self.taken += 1024
            yield bytes(1024)

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def test_a_discarded_body_of_unknown_length_is_read_up_to_the_limit(kind: str) -> None:
    """Without Content-Length, at most DISCARD_READ_LIMIT bytes are read; then it is closed."""
    body = Endless()
    response = httpx.Response(503, stream=body)
    if kind == "sync":
        release(response)
    else:
        asyncio.run(release_async(response))
    assert DISCARD_READ_LIMIT < body.taken <= DISCARD_READ_LIMIT + 1024
    assert body.closed
    assert response.is_closed


def test_a_discarded_body_announced_long_is_closed_unread(kind: str) -> None:
    """A Content-Length over the limit: nothing is read, the response is closed."""
    body = Endless()
    response = httpx.Response(
        503, headers={"Content-Length": str(DISCARD_READ_LIMIT + 1)}, stream=body
    )
    if kind == "sync":
        release(response)
    else:
        asyncio.run(release_async(response))
    assert body.taken == 0
    assert body.closed


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body httpx has not read yet, as a real transport returns it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data

    async def __aiter__(self) -> Any:
        yield self.data


def test_a_classifier_that_reads_the_body_still_gets_it_read(kind: str) -> None:
    """retry_on reading r.json() works with buffer=True: such a response is read before it."""
    bodies = iter([b'{"retry": true}', b'{"retry": false}'])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Body(next(bodies)))

    options: dict[str, Any] = {
        "retry_on": predicates.result(lambda r: r.json()["retry"]),
        "backoff": Backoff.none(),
        "clock": FakeClock(),
    }
    if kind == "sync":
        with httpx.Client(
            transport=ResilientTransport(httpx.MockTransport(answer), **options)
        ) as client:
            response = client.get("http://svc/x")
    else:

        async def main() -> httpx.Response:
            transport = AsyncResilientTransport(httpx.MockTransport(answer), **options)
            async with httpx.AsyncClient(transport=transport) as client:
                return await client.get("http://svc/x")

        response = asyncio.run(main())
    assert response.json() == {"retry": False}
    assert response.extensions["failsafe.attempts"] == 2


# -- 4. Retry-After: ASCII digits and HTTP-dates only ---------------------------------------


@pytest.mark.parametrize(
    "value", [b"\xb2", "\u0661".encode(), "\u0663\u0660".encode(), b"1.5", b"+3"]
)
def test_a_retry_after_that_is_no_number_falls_back_to_the_backoff(kind: str, value: bytes) -> None:
    """A 503 whose Retry-After is superscript two, an Arabic-Indic digit, "1.5" or "+3": backoff."""
    with serve({"/busy": small(503, headers={"Retry-After": value})}) as server:
        clock = FakeClock()
        _, result = get(
            kind, f"{server.url}/busy", attempts=3, backoff=Backoff.constant(0.25), clock=clock
        )
    assert isinstance(result, httpx.Response), repr(result)  # today: ValueError for "²"
    assert result.status_code == 503
    assert result.extensions["failsafe.attempts"] == 3
    assert clock.sleeps == [0.25, 0.25]  # today: [1.0, 1.0] for Arabic-Indic one


# -- 5. the default bound on one request's total time ----------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "sleeps"),
    [
        (100000, []),  # capped at 60 s, which does not fit in 30 s: the 503, at once
        (30, []),  # ends at the deadline: late
        (29, [29.0]),
        (12, [12.0, 12.0]),  # the third wait would end at 36 s
    ],
)
def test_the_default_deadline_bounds_a_request_to_30_seconds(
    kind: str, servers: tuple[Server, Server], retry_after: int, sleeps: list[float]
) -> None:
    """A default transport waits for Retry-After only while the whole request fits in 30 s."""
    w1, _ = servers
    clock = FakeClock()
    _, result = get(kind, f"{w1.url}/busy/{retry_after}", clock=clock)
    assert isinstance(result, httpx.Response)
    assert result.status_code == 503
    assert clock.sleeps == sleeps  # today: [60.0, 60.0, 60.0] for 100000
    assert clock.monotonic() <= 30


@pytest.mark.parametrize("deadline", [None, 300.0])
def test_the_default_bound_can_be_raised_or_turned_off(
    kind: str, servers: tuple[Server, Server], deadline: float | None
) -> None:
    """deadline=300 or deadline=None lets the retries wait as long as Retry-After asks (capped)."""
    w1, _ = servers
    clock = FakeClock()
    _, result = get(kind, f"{w1.url}/busy/100000", clock=clock, deadline=deadline)
    assert isinstance(result, httpx.Response)
    assert clock.sleeps == [60.0, 60.0, 60.0]  # max_retry_after


@pytest.mark.parametrize("deadline", [0, -1.0, math.inf, math.nan, "30", True])
def test_a_bad_deadline_is_refused_naming_the_option(deadline: object) -> None:
    """The deadline is a finite number of seconds above 0, or None."""
    for cls in (ResilientTransport, AsyncResilientTransport):
        with pytest.raises(ConfigurationError) as info:
            cls(deadline=deadline)  # type: ignore[arg-type]
        assert info.value.option == "deadline"


def test_the_deadline_checked_read_stores_the_body_where_httpx_reads_it() -> None:
    """`read`/`aread` store a body as httpx's Response.read() does (a private attribute).

    Pins what the bounded read relies on: after it, ``content``, ``text`` and ``json()``
    work, and a second read returns the same bytes without iterating the stream again. If
    an httpx release moves where a read body is kept, this fails, not the users' requests.
    """
    from failsafe.http._bounds import _Deadline, aread, read

    clock = FakeClock()
    deadline = _Deadline()
    deadline.at, deadline.clock, deadline.seconds, deadline.enclosing = 10.0, clock, 10.0, False
    request = httpx.Request("GET", "http://svc/x")

    def chunks() -> Iterator[bytes]:
        yield b'{"a": '
        yield b"1}"

    response = httpx.Response(200, content=chunks(), request=request)  # a one-shot stream
    read(response, deadline, request)
    assert response.content == b'{"a": 1}'
    assert response.json() == {"a": 1}
    assert response.read() == b'{"a": 1}'  # httpx finds the body where read() put it
    read(response, deadline, request)  # read already: not iterated again (it could not be)
    assert response.content == b'{"a": 1}'

    async def achunks() -> Any:
        yield b"ok"

    async def main() -> None:
        response = httpx.Response(200, content=achunks(), request=request)
        await aread(response, deadline, request)
        assert response.content == b"ok"
        assert await response.aread() == b"ok"
        await aread(response, deadline, request)
        assert response.text == "ok"

    asyncio.run(main())
