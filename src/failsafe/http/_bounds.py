"""The time and memory bounds of one request: its deadline, its body's reads, its discards.

Issue #12 found three unbounded paths, each closed here:

- an enclosing deadline (a `Timeout` around ``client.get``) was ignored: `_Deadline` holds
  whichever of the transport's ``deadline=`` and the enclosing one ends first, and shrinks
  every attempt's timeouts to it;
- a body trickling in (1 KB every 0.2 s) kept a request with ``deadline=5`` busy for 20 s:
  the time is checked at every chunk, whether the transport reads the body (`read`,
  `aread`) or the caller does (``buffer=False``: the deadline streams);
- a discarded 400 MB response was read whole into memory: `release` reads at most
  `DISCARD_READ_LIMIT` bytes of it (to reuse its connection), and otherwise closes it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final, cast

import httpx

from failsafe.clock import Clock
from failsafe.http.exceptions import DeadlineExceeded

DISCARD_READ_LIMIT: Final = 64 * 1024
"""The most bytes read of a response dropped for a retry or a failover (then it is closed)."""

_KINDS: Final = ("connect", "read", "write", "pool")
# which of an attempt's timeouts an httpx timeout error reports as fired
_KIND_OF: Final[tuple[tuple[type[httpx.TimeoutException], str], ...]] = (
    (httpx.ReadTimeout, "read"),
    (httpx.ConnectTimeout, "connect"),
    (httpx.WriteTimeout, "write"),
    (httpx.PoolTimeout, "pool"),
)


class _Deadline:
    """When one request must be over: the earlier of the transport's and an enclosing deadline.

    ``at`` is ``None`` when neither exists; the other fields are set only with ``at``. The
    transport's per-request state (`_Call`) extends it, so that a request allocates one
    object.
    """

    __slots__ = ("at", "clock", "enclosing", "seconds", "timeouts", "widest")

    at: float | None  # a clock.monotonic() instant, or None
    clock: Clock
    seconds: float  # the time the request was given, for DeadlineExceeded
    enclosing: bool  # whether the enclosing deadline is the earlier one
    timeouts: dict[str, Any] | None  # the request's own, before any shrinking
    widest: float  # the longest of them (inf if one is None or missing)

    def __init__(self) -> None:
        self.at = None

    def bound(self, request: httpx.Request, remaining: float) -> None:
        """Shrink the request's timeouts to ``remaining``, or raise if no time is left.

        The transport calls it only when some timeout is longer than the time left (or none
        is left): otherwise the request's own timeouts stand, untouched.
        """
        if remaining <= 0:
            raise self.exceeded(request)
        timeouts = self.timeouts or {}
        shrunk = dict(timeouts)
        for kind in _KINDS:
            value = timeouts.get(kind)
            if value is None or value > remaining:
                shrunk[kind] = remaining
        request.extensions["timeout"] = shrunk

    def exceeded(self, request: httpx.Request) -> DeadlineExceeded:
        """The error to raise once the deadline has passed."""
        return DeadlineExceeded(self.seconds, request, enclosing=self.enclosing)

    def cut(self, exc: BaseException, request: httpx.Request) -> bool:
        """Whether ``exc`` is an httpx timeout that fired because the deadline shortened it."""
        if self.at is None or isinstance(exc, DeadlineExceeded):
            return False
        for kind_of, kind in _KIND_OF:
            if isinstance(exc, kind_of):
                used = (request.extensions.get("timeout") or {}).get(kind)
                own = (self.timeouts or {}).get(kind)
                return used is not None and (own is None or used < own)
        return False


def widest(timeouts: dict[str, Any] | None) -> float:
    """The longest of an attempt's four timeouts: ``inf`` when one is ``None`` or missing."""
    if timeouts is None:
        return math.inf
    try:  # comparisons, not max(): a third of the time, on every request
        connect, read, write = timeouts["connect"], timeouts["read"], timeouts["write"]
        longest: float = timeouts["pool"]
        if connect > longest:
            longest = connect
        if read > longest:
            longest = read
        if write > longest:
            longest = write
    except (TypeError, KeyError):  # None (no timeout) compares with no number
        return math.inf
    return longest


# The transport reads a body it keeps (buffer=True) here rather than through a wrapper
# stream: the same work as httpx's Response.read(), with a look at the clock per chunk, and
# the content stored where Response.read() stores it. On this path, every request's with
# the default deadline, a wrapper cost about 2,000 CPU instructions a request sync and
# 14,000 async (an async generator more, measured with cachegrind); this costs about what
# Response.read() costs.


def read(response: httpx.Response, deadline: _Deadline, request: httpx.Request) -> None:
    """``response.read()``, raising `DeadlineExceeded` at the first chunk past the deadline."""
    if hasattr(response, "_content"):  # read already (built from bytes): as httpx does
        return
    at, monotonic = deadline.at, deadline.clock.monotonic
    assert at is not None
    parts = []
    try:
        for part in response.iter_bytes():
            if monotonic() >= at:
                raise deadline.exceeded(request)
            parts.append(part)
    except BaseException:
        response.close()
        raise
    response._content = b"".join(parts)


async def aread(response: httpx.Response, deadline: _Deadline, request: httpx.Request) -> None:
    """The asyncio twin of `read`."""
    if hasattr(response, "_content"):  # read already (built from bytes): as httpx does
        return
    at, monotonic = deadline.at, deadline.clock.monotonic
    assert at is not None
    parts = []
    try:
        async for part in response.aiter_bytes():
            if monotonic() >= at:
                raise deadline.exceeded(request)
            parts.append(part)
    except BaseException:
        await response.aclose()
        raise
    response._content = b"".join(parts)


class _DeadlineStream(httpx.SyncByteStream):
    """A response body that raises `DeadlineExceeded` at the first chunk past the deadline.

    Every chunk it yields arrived before the deadline. A read already waiting when the
    deadline passes ends within the attempt's read timeout, which the deadline had shrunk to
    the time left when the attempt started; a read timeout the deadline shortened is
    `DeadlineExceeded` too.
    """

    __slots__ = ("_deadline", "_request", "_stream")

    def __init__(
        self, stream: httpx.SyncByteStream, deadline: _Deadline, request: httpx.Request
    ) -> None:
        self._stream = stream
        self._deadline = deadline
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        deadline = self._deadline
        at, monotonic = deadline.at, deadline.clock.monotonic
        assert at is not None
        chunks = iter(self._stream)
        try:
            for chunk in chunks:
                if monotonic() >= at:
                    break
                yield chunk
            else:
                return
        except httpx.TimeoutException as exc:
            if not deadline.cut(exc, self._request):
                raise
            raise deadline.exceeded(self._request) from exc
        # past the deadline mid-body: drop the rest (and the connection)
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        self._stream.close()
        raise deadline.exceeded(self._request)

    def close(self) -> None:
        self._stream.close()


class _AsyncDeadlineStream(httpx.AsyncByteStream):
    """The asyncio twin of `_DeadlineStream`."""

    __slots__ = ("_deadline", "_request", "_stream")

    def __init__(
        self, stream: httpx.AsyncByteStream, deadline: _Deadline, request: httpx.Request
    ) -> None:
        self._stream = stream
        self._deadline = deadline
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        deadline = self._deadline
        at, monotonic = deadline.at, deadline.clock.monotonic
        assert at is not None
        chunks = aiter(self._stream)
        try:
            async for chunk in chunks:
                if monotonic() >= at:
                    break
                yield chunk
            else:
                return
        except httpx.TimeoutException as exc:
            if not deadline.cut(exc, self._request):
                raise
            raise deadline.exceeded(self._request) from exc
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._stream.aclose()
        raise deadline.exceeded(self._request)

    async def aclose(self) -> None:
        await self._stream.aclose()


def _worth_draining(response: httpx.Response) -> bool:
    """Whether to read a discarded body to its end: only if it is short (or says nothing)."""
    length = response.headers.get("content-length")
    if length is None:  # chunked: read up to the limit, then close if it goes on
        return True
    length = length.strip()
    return length.isascii() and length.isdigit() and int(length) <= DISCARD_READ_LIMIT


def release(response: object) -> None:
    """Free a response dropped for a retry or a failover, reading at most the limit.

    A body of at most `DISCARD_READ_LIMIT` bytes is read to its end, so that the connection
    goes back to the pool. A longer one is closed, which closes its connection: unread when
    its ``Content-Length`` says so, after the limit otherwise (chunked). Errors while
    reading (the deadline passing among them) are ignored: the response is dropped anyway.
    """
    if not isinstance(response, httpx.Response) or response.is_closed:
        return
    try:
        if not response.is_stream_consumed and _worth_draining(response):
            chunks = iter(cast(httpx.SyncByteStream, response.stream))
            try:
                taken = 0
                for chunk in chunks:
                    taken += len(chunk)
                    if taken > DISCARD_READ_LIMIT:
                        break
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
    except httpx.HTTPError:
        pass
    finally:
        response.close()


async def release_async(response: object) -> None:
    """The asyncio twin of `release`."""
    if not isinstance(response, httpx.Response) or response.is_closed:
        return
    try:
        if not response.is_stream_consumed and _worth_draining(response):
            chunks = aiter(cast(httpx.AsyncByteStream, response.stream))
            try:
                taken = 0
                async for chunk in chunks:
                    taken += len(chunk)
                    if taken > DISCARD_READ_LIMIT:
                        break
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()
