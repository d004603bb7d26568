"""`LoopbackOnly` remembers its Host decisions and still answers exactly as before.

Whether a ``Host`` value names loopback is decided once per value (at most 256 kept); the
middleware before it (`_reference` below, copied whole) parsed every request's. Generated
hosts and origins, many more than 256 distinct ones, get the same answer from both.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failsafe.errors.auth import _MAX_HOSTS, _UNSAFE, LoopbackOnly, _host_name, is_loopback


def _reference(scope: Any) -> tuple[int, bytes]:
    """The answer before the cache: 200 passed on, or 403 with its body."""
    host = origin = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1").strip().lower()
        elif name == b"origin":
            origin = value.decode("latin-1").strip().lower()
    problem = field = None
    if host is None or not is_loopback(_host_name(host)):
        field = "host"
        problem = (
            f"Host: {host!r} is not this machine; without both tokens the service"
            " answers only requests addressed to 127.0.0.1, ::1 or localhost"
        )
    elif origin is not None and scope["method"] in _UNSAFE:
        _, _, authority = origin.partition("://")
        if authority != host:
            field = "origin"
            problem = (
                f"Origin: {origin[:200]!r} is another site; without both tokens the"
                " service refuses writes from other origins"
            )
    if problem is None:
        return 200, b""
    return 403, json.dumps({"error": problem, "field": field}).encode()


async def _answer(middleware: LoopbackOnly, scope: Any) -> tuple[int, bytes]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await middleware(scope, None, send)
    if not sent:
        return 200, b""
    return sent[0]["status"], sent[1]["body"]


async def _app(scope: Any, receive: Any, send: Any) -> None:
    pass


_HOSTS = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1", "127.0.0.1:8090", "127.1.2.3", " LOCALHOST ", "localhost:1", "[::1]",
            "[::1]:8090", "::1", "0:0:0:0:0:0:0:1", "[::ffff:127.0.0.1]", "::ffff:127.0.0.1",
            "10.0.0.1", "attacker.example", "127.0.0.1.nip.io", "[::1", "", "127.0.0.1:",
            "localhost.", "127.0.0.1:80:80", "\u0130", "\xe9",
        ]
    ),
    st.integers(0, 2**32 - 1).map(lambda n: f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"),
    st.text(max_size=12),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    requests=st.lists(
        st.tuples(
            st.none() | _HOSTS,
            st.none() | st.sampled_from(["http://127.0.0.1:8090", "http://evil", "null"]),
            st.sampled_from(["GET", "POST", "DELETE"]),
        ),
        min_size=1,
        max_size=30,
    ),
    filler=st.integers(0, 2 * _MAX_HOSTS),
)
def test_hosts_are_answered_as_before(
    requests: list[tuple[str | None, str | None, str]], filler: int
) -> None:
    """Every request gets the reference's answer, however full the cache is."""
    middleware = LoopbackOnly(_app)

    async def run() -> None:
        for n in range(filler):  # distinct made-up hosts fill the cache, or overflow it
            await _answer(middleware, _scope(f"h{n}.example", None, "GET"))
        for host, origin, method in [*requests, *requests]:  # again: from the cache
            scope = _scope(host, origin, method)
            assert await _answer(middleware, scope) == _reference(scope)
            assert len(middleware._loopback) <= _MAX_HOSTS

    asyncio.run(run())


def _scope(host: str | None, origin: str | None, method: str) -> dict[str, Any]:
    headers = []
    if host is not None:
        headers.append((b"host", host.encode("latin-1", "replace")))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "http", "method": method, "headers": headers}
