"""TRANSIENT, the default of Retry and Failover, on the real exceptions of real clients.

Each client's errors are built from its installed classes (and, where it is cheap, raised by
the client itself against a loopback port where nothing listens, or a server that hangs up).
Issue 11: before, only built-in ``ConnectionError`` and ``TimeoutError`` matched.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import aiormq.exceptions as amqp
import grpc
import grpc.aio
import httpcore
import httpx
import psycopg
import psycopg.errors
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg_pool
import pytest
import redis
import redis.asyncio
import redis.exceptions
import redis.sentinel
import requests
import urllib3
import urllib3.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry

import failsafe
from failsafe import Failover, Retry, TimeoutExceeded, UsageError
from failsafe import _transient as transient
from failsafe.http import AllEndpointsFailed
from failsafe.predicates import TRANSIENT, exception
from failsafe.testing import FakeClock
from tests.conftest import Driver

ROOT = Path(__file__).resolve().parent.parent
PG_DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

# What psycopg says when the server refuses a login: no SQLSTATE, only this text.
LOGIN_REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
    'FATAL:  password authentication failed for user "app"'
)


def matched(exc: BaseException) -> bool:
    return TRANSIENT.matches_exception(exc)


def check(transient: list[BaseException], other: list[BaseException]) -> None:
    """Assert the split, naming every exception that fell on the wrong side."""
    missed = [repr(e) for e in transient if not matched(e)]
    wrong = [repr(e) for e in other if matched(e)]
    assert (missed, wrong) == ([], [])


# -- real clients against loopback --------------------------------------------------------


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: every connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def hangup_port() -> Iterator[int]:
    """A loopback server that reads a request and closes the connection without answering."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # the listening socket was closed: the test is over
                return
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
    server.close()
    thread.join(timeout=5)


def raised(fn: Callable[[], object]) -> BaseException:
    """The exception ``fn`` raises (the test fails if it returns)."""
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError(f"{fn} did not raise")


def bare(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls`` made without its own ``__init__`` (whose arguments vary)."""
    instance = cls.__new__(cls)
    BaseException.__init__(instance, "x")
    return instance


def raised_async(fn: Callable[[], Any]) -> BaseException:
    """The exception the coroutine function ``fn`` raises under ``asyncio.run``."""

    async def run() -> BaseException:
        try:
            await fn()
        except Exception as exc:
            return exc
        raise AssertionError(f"{fn} did not raise")

    return asyncio.run(run())


# -- each client ---------------------------------------------------------------------------


def test_standard_library_connection_errors_and_timeouts_still_match() -> None:
    """Built-in connection errors and timeouts match, failsafe's own too; other OS errors do not."""
    check(
        transient=[
            ConnectionError(),
            ConnectionRefusedError(),
            ConnectionResetError(),
            ConnectionAbortedError(),
            BrokenPipeError(),
            TimeoutError(),  # socket.timeout and asyncio.TimeoutError are this class
            TimeoutExceeded(1.0),
        ],
        other=[
            OSError(),
            socket.gaierror(-2, "Name or service not known"),
            FileNotFoundError(),
            ValueError(),
            KeyError("k"),
            RuntimeError(),
            asyncio.CancelledError(),
            KeyboardInterrupt(),
            UsageError("use call_async"),
        ],
    )


def test_httpx_and_httpcore_network_errors_timeouts_and_hangups_match(
    refused_port: int, hangup_port: int
) -> None:
    """The timeouts, network errors and hang-ups of httpx and httpcore match; an answer does not."""
    with httpx.Client() as client:
        refused = raised(lambda: client.get(f"http://127.0.0.1:{refused_port}/"))
        hung_up = raised(lambda: client.get(f"http://127.0.0.1:{hangup_port}/"))
    assert type(refused) is httpx.ConnectError
    assert type(hung_up) is httpx.RemoteProtocolError
    assert "without sending a response" in str(hung_up)

    request = httpx.Request("GET", "http://example.test/")
    answer = httpx.Response(500, request=request)
    check(
        transient=[
            refused,
            hung_up,
            *(
                cls("boom")
                for module in (httpx, httpcore)
                for cls in (
                    module.ConnectError,
                    module.ConnectTimeout,
                    module.ReadTimeout,
                    module.WriteTimeout,
                    module.PoolTimeout,
                    module.ReadError,
                    module.WriteError,
                    module.RemoteProtocolError,
                )
            ),
            httpx.CloseError("boom"),
        ],
        other=[
            raised(answer.raise_for_status),  # httpx.HTTPStatusError
            httpx.ProxyError("boom"),
            httpx.UnsupportedProtocol("boom"),
            httpx.LocalProtocolError("boom"),
            httpx.DecodingError("boom"),
            httpx.TooManyRedirects("boom"),
            httpx.InvalidURL("boom"),
            httpx.StreamConsumed(),
            httpcore.LocalProtocolError("boom"),
            httpcore.UnsupportedProtocol("boom"),
            AllEndpointsFailed([], request),  # the resilient transport already retried
        ],
    )


def test_requests_and_urllib3_connection_errors_and_timeouts_match(
    refused_port: int, hangup_port: int
) -> None:
    """Connection errors and timeouts of requests and urllib3 match; HTTP or TLS errors do not."""
    refused = raised(lambda: requests.get(f"http://127.0.0.1:{refused_port}/", timeout=5))
    hung_up = raised(lambda: requests.get(f"http://127.0.0.1:{hangup_port}/", timeout=5))
    assert type(refused) is requests.exceptions.ConnectionError
    assert not isinstance(refused, ConnectionError)  # an OSError, not a built-in one
    with urllib3.PoolManager() as pool:
        url = f"http://127.0.0.1:{refused_port}/"
        gave_up = raised(lambda: pool.request("GET", url, retries=1))
        gave_up_status = raised(
            lambda: pool.request(
                "GET",
                f"http://127.0.0.1:{refused_port}/",
                retries=urllib3.Retry(total=0, connect=None),
            )
        )
        aborted = raised(
            lambda: pool.request("GET", f"http://127.0.0.1:{hangup_port}/", retries=False)
        )
    assert type(gave_up) is urllib3.exceptions.MaxRetryError
    assert type(aborted) is urllib3.exceptions.ProtocolError

    answer = requests.Response()
    answer.status_code = 500
    check(
        transient=[
            refused,
            hung_up,
            gave_up,
            gave_up_status,
            aborted,
            requests.exceptions.ConnectTimeout(),
            requests.exceptions.ReadTimeout(),
            requests.exceptions.ProxyError(),
            requests.exceptions.ChunkedEncodingError(),
            urllib3.exceptions.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
            urllib3.exceptions.NameResolutionError("h", None, socket.gaierror()),  # type: ignore[arg-type]
            urllib3.exceptions.ConnectTimeoutError(),
            urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        ],
        other=[
            raised(answer.raise_for_status),  # requests.HTTPError
            requests.exceptions.SSLError(),
            requests.exceptions.InvalidURL(),
            requests.exceptions.MissingSchema(),
            requests.exceptions.TooManyRedirects(),
            urllib3.exceptions.MaxRetryError(
                None,  # type: ignore[arg-type]
                "/",
                urllib3.exceptions.ResponseError("too many 500 error responses"),
            ),
            urllib3.exceptions.SSLError(),
            urllib3.exceptions.ResponseNotChunked(),
            urllib3.exceptions.LocationParseError("::"),
            urllib3.exceptions.DecodeError(),
        ],
    )


def test_aiohttp_client_connection_errors_match(refused_port: int, hangup_port: int) -> None:
    """The aiohttp connection errors and server timeouts match; response or TLS errors do not."""

    async def get(port: int) -> None:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/"):
            pass

    refused = raised_async(lambda: get(refused_port))
    hung_up = raised_async(lambda: get(hangup_port))
    assert type(refused) is aiohttp.ClientConnectorError
    assert type(hung_up) is aiohttp.ServerDisconnectedError

    check(
        transient=[
            refused,
            hung_up,
            aiohttp.ClientConnectionError(),
            aiohttp.ClientOSError(),
            aiohttp.ServerTimeoutError(),
            aiohttp.ConnectionTimeoutError(),
            aiohttp.SocketTimeoutError(),
            aiohttp.ClientConnectionResetError(),
            aiohttp.ClientConnectorDNSError(None, OSError()),  # type: ignore[arg-type]
        ],
        other=[
            aiohttp.ClientResponseError(None, (), status=500),  # type: ignore[arg-type]
            aiohttp.ClientConnectorCertificateError(None, Exception("bad cert")),  # type: ignore[arg-type]
            aiohttp.ClientConnectorSSLError(None, OSError()),
            aiohttp.ServerFingerprintMismatch(b"a", b"b", "h", 443),
            aiohttp.InvalidURL("nope"),
            aiohttp.ClientPayloadError("payload is not completed"),
        ],
    )


def test_redis_connection_errors_timeouts_and_busy_servers_match(refused_port: int) -> None:
    """Redis connection errors, timeouts and busy servers match; a refused login does not."""
    client = redis.Redis(port=refused_port, retry=RedisRetry(NoBackoff(), 0))
    refused = raised(client.ping)
    client.close()
    assert type(refused) is redis.exceptions.ConnectionError
    assert redis.asyncio.ConnectionError is redis.exceptions.ConnectionError  # one class

    check(
        transient=[
            refused,
            redis.exceptions.TimeoutError(),
            redis.exceptions.BusyLoadingError(),
            redis.exceptions.MaxConnectionsError(),
            redis.exceptions.TryAgainError(),
            redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
            redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
            redis.sentinel.MasterNotFoundError(),
        ],
        other=[
            redis.exceptions.AuthenticationError(),
            redis.exceptions.AuthorizationError(),
            redis.exceptions.ResponseError("WRONGTYPE"),
            redis.exceptions.NoPermissionError(),
            redis.exceptions.ReadOnlyError(),
            redis.exceptions.DataError(),
            redis.exceptions.WatchError(),
            redis.exceptions.NoScriptError(),
            redis.exceptions.LockError(),
        ],
    )


# SQLSTATEs of a lost connection (class 08) and of a server shutting down or starting up
CONNECTION_STATES = ["08000", "08001", "08003", "08004", "08006", "08007", "08P01"]
CONNECTION_STATES += ["57P01", "57P02", "57P03"]
# lock timeout, serialization failure, deadlock, statement timeout, too many connections,
# unique violation, undefined table, bad password, database being dropped
STATEMENT_STATES = ["55P03", "40001", "40P01", "57014", "53300", "23505", "42P01", "28P01"]
STATEMENT_STATES += ["57P04"]


def test_psycopg_connection_level_errors_match_and_statement_errors_do_not(
    refused_port: int,
) -> None:
    """Psycopg errors without an answer, or of class 08 or 57P01-3, match; lock timeouts do not."""
    refused = raised(lambda: psycopg.connect(host="127.0.0.1", port=refused_port))
    assert type(refused) is psycopg.OperationalError
    assert refused.sqlstate is None

    check(
        transient=[
            refused,
            psycopg.OperationalError("consuming input failed: server closed the connection"),
            *(psycopg.errors.lookup(code)("boom") for code in CONNECTION_STATES),
            psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec"),
        ],
        other=[
            *(psycopg.errors.lookup(code)("boom") for code in STATEMENT_STATES),
            psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
            psycopg.OperationalError(LOGIN_REFUSED),
            psycopg.IntegrityError("duplicate key"),
            psycopg.ProgrammingError("syntax error"),
            psycopg.InterfaceError("bad argument"),
            psycopg_pool.PoolClosed("the pool is closed"),
        ],
    )


def test_psycopg2_connection_level_errors_match_and_statement_errors_do_not(
    refused_port: int,
) -> None:
    """Psycopg2 errors without an answer, or of class 08 or 57P01-3, match; lock timeouts do not."""
    refused = raised(lambda: psycopg2.connect(host="127.0.0.1", port=refused_port))
    assert type(refused) is psycopg2.OperationalError
    assert refused.pgcode is None  # type: ignore[attr-defined]

    check(
        transient=[
            refused,
            psycopg2.OperationalError("server closed the connection unexpectedly"),
            *(psycopg2.errors.lookup(code)("boom") for code in CONNECTION_STATES),
        ],
        other=[
            *(psycopg2.errors.lookup(code)("boom") for code in STATEMENT_STATES),
            psycopg2.extensions.QueryCanceledError("canceling statement due to statement timeout"),
            psycopg2.extensions.TransactionRollbackError("could not serialize access"),
            psycopg2.OperationalError(LOGIN_REFUSED),
            psycopg2.IntegrityError("duplicate key"),
            psycopg2.InterfaceError("connection already closed"),
        ],
    )


@pytest.mark.postgres
def test_psycopg_errors_raised_by_the_real_server_are_judged_by_their_sqlstate() -> None:
    """From PostgreSQL itself: a killed session matches; a lock timeout or a bad login does not."""
    unknown = PG_DSN.replace("postgres@", "no_such_role_failsafe@", 1)
    refused_login = raised(lambda: psycopg.connect(unknown, connect_timeout=5))
    assert "no_such_role_failsafe" in str(refused_login)

    table = f"failsafe_transient_{uuid.uuid4().hex}"
    with (
        psycopg.connect(PG_DSN, autocommit=True) as holder,
        psycopg.connect(PG_DSN, autocommit=True) as waiter,
    ):
        holder.execute(f"CREATE TABLE {table} (x int)")
        try:
            with holder.transaction():
                holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                waiter.execute("SET lock_timeout = '1ms'")
                lock_timeout = raised(lambda: waiter.execute(f"SELECT * FROM {table}"))
        finally:
            holder.execute(f"DROP TABLE {table}")

        victim = psycopg.connect(PG_DSN, autocommit=True)
        holder.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        terminated = raised(lambda: victim.execute("SELECT 1"))
        victim.close()

    assert type(lock_timeout) is psycopg.errors.LockNotAvailable
    assert isinstance(terminated, psycopg.OperationalError)
    check(transient=[terminated], other=[refused_login, lock_timeout])


def test_aiormq_lost_connections_match_and_refused_logins_do_not(refused_port: int) -> None:
    """Lost AMQP connections match; a refused login or protocol, or a hard broker error, do not."""
    refused = raised_async(
        lambda: aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{refused_port}/")
    )
    assert isinstance(refused, amqp.AMQPConnectionError)

    check(
        transient=[
            refused,
            amqp.AMQPConnectionError("Server connection unexpectedly closed"),
            amqp.ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure"),
            amqp.ChannelInvalidStateError("<Channel: 1> closed"),
            aio_pika.exceptions.ChannelInvalidStateError("No active transport in channel"),
        ],
        other=[
            amqp.AuthenticationError(["AMQPLAIN"], ["PLAIN"]),
            amqp.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
            amqp.IncompatibleProtocolError(),
            amqp.ConnectionNotAllowed("vhost not found"),
            amqp.ConnectionSyntaxError("bad frame"),
            amqp.ConnectionFrameError("bad frame"),
            amqp.ConnectionCommandInvalid("bad command"),
            amqp.ConnectionChannelError("bad channel"),
            amqp.ConnectionUnexpectedFrame("bad frame"),
            amqp.ConnectionResourceError("too many channels"),
            amqp.ConnectionNotImplemented("nope"),
            amqp.ConnectionInternalError("broken"),
            amqp.ChannelClosed(406, "PRECONDITION_FAILED"),
            amqp.ChannelNotFoundEntity("no queue 'x'"),
            amqp.ChannelAccessRefused("no access"),
            amqp.ProtocolSyntaxError(),
        ],
    )


@pytest.mark.rabbitmq
def test_a_login_refused_by_the_real_broker_does_not_match() -> None:
    """RabbitMQ refusing a login (a built-in ConnectionError subclass in aiormq) does not match."""
    url = AMQP_URL.replace("guest:guest@", "no_such_user:wrong@", 1)
    refused_login = raised_async(lambda: aio_pika.connect(url))
    assert isinstance(refused_login, ConnectionError)  # what made it "transient" before
    assert isinstance(refused_login, amqp.ProbableAuthenticationError)
    assert not matched(refused_login)


def test_grpc_unavailable_and_deadline_exceeded_match_by_status_code(refused_port: int) -> None:
    """A gRPC call failing UNAVAILABLE or DEADLINE_EXCEEDED matches; no other status does."""
    with grpc.insecure_channel(f"127.0.0.1:{refused_port}") as channel:
        call = channel.unary_unary("/failsafe.Test/Ping")
        unavailable = raised(lambda: call(b"", timeout=10))
    assert isinstance(unavailable, grpc.RpcError)
    assert unavailable.code() is grpc.StatusCode.UNAVAILABLE

    def aio(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "boom")

    check(
        transient=[
            unavailable,
            aio(grpc.StatusCode.UNAVAILABLE),
            aio(grpc.StatusCode.DEADLINE_EXCEEDED),
        ],
        other=[
            grpc.RpcError(),  # no status code at all
            *(
                aio(code)
                for code in grpc.StatusCode
                if code.name not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
            ),
        ],
    )


# -- odd objects, the cache, the imports -------------------------------------------------


class _OddRpcError(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        raise RuntimeError("no code on this one")


class _OddOperationalError(psycopg.OperationalError):
    @property
    def sqlstate(self) -> str | None:  # type: ignore[override]
        raise RuntimeError("no sqlstate on this one")


class _Unhashable(type):
    __hash__ = None  # type: ignore[assignment]

    def __eq__(cls, other: object) -> bool:
        return cls is other


class _UnhashableTimeout(TimeoutError, metaclass=_Unhashable):
    pass


class _StringCodeRpcError(grpc.RpcError):
    def code(self) -> str:
        return "UNAVAILABLE"  # a string is not a grpc.StatusCode member


def test_objects_whose_instance_checks_raise_are_simply_not_transient() -> None:
    """An RpcError whose code() fails, or a psycopg error whose sqlstate fails, does not match."""
    check(
        transient=[_UnhashableTimeout()],  # an unhashable class is judged, just not cached
        other=[_OddRpcError(), _StringCodeRpcError(), bare(_OddOperationalError)],
    )


def test_the_verdict_cache_keeps_at_most_its_documented_number_of_classes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the cache's bound, new classes are still judged right, and the cache stops growing."""
    assert transient._CACHE_LIMIT == 1024
    monkeypatch.setattr(transient, "_cache", {})
    made = [type(f"Dyn{i}", (httpx.ReadTimeout if i % 2 else ValueError,), {}) for i in range(1100)]
    verdicts = [matched(cls("x")) for cls in made]
    assert verdicts == [i % 2 == 1 for i in range(1100)]
    assert len(transient._cache) == 1024
    assert [matched(cls("x")) for cls in made[-10:]] == verdicts[-10:]  # judged uncached
    assert len(transient._cache) == 1024


def test_matching_imports_none_of_the_client_libraries() -> None:
    """``import failsafe`` and matching look-alike exceptions import no client library."""
    libraries = (
        "httpx", "httpcore", "requests", "urllib3", "aiohttp", "redis", "psycopg",
        "psycopg2", "psycopg_pool", "aio_pika", "aiormq", "grpc",
    )  # fmt: skip
    code = f"""
import sys
import failsafe
from failsafe.predicates import TRANSIENT

class NetworkError(Exception):
    pass
NetworkError.__module__ = "httpx"

class ConnectError(NetworkError):
    pass
ConnectError.__module__ = "httpx"

class RpcError(Exception):
    def code(self):
        return Code()
RpcError.__module__ = "grpc"

class Code:
    name = "UNAVAILABLE"

class OperationalError(Exception):
    sqlstate = "57P01"
OperationalError.__module__ = "psycopg"

assert TRANSIENT.matches_exception(ConnectError())
assert TRANSIENT.matches_exception(RpcError())
assert TRANSIENT.matches_exception(OperationalError())
assert not TRANSIENT.matches_exception(ValueError())
print(",".join(sorted({{m.split(".")[0] for m in sys.modules}} & set({libraries!r}))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# -- properties ------------------------------------------------------------------------------

_UNRELATED_BASES: tuple[type[Exception], ...] = (
    Exception,
    ValueError,
    RuntimeError,
    LookupError,
    ArithmeticError,
    OSError,
    PermissionError,
    httpx.HTTPError,
    redis.exceptions.ResponseError,
    psycopg.DatabaseError,
)
_identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    module=st.lists(_identifiers, min_size=1, max_size=3).map(".".join),
    name=_identifiers,
    base=st.sampled_from(_UNRELATED_BASES),
)
def test_unrelated_exception_classes_are_never_transient(
    module: str, name: str, base: type[Exception]
) -> None:
    """A class of any name, in any module not in the table, on an unrelated base, never matches."""
    qualified = f"{module}.{name}"
    if qualified in transient._RULES or module in transient._PSYCOPG2_STATE_MODULES:
        return
    cls = type(name, (base,), {"__module__": module})
    assert not matched(bare(cls))


_TRANSIENT_BASES: tuple[type[Exception], ...] = (
    ConnectionResetError,
    httpx.ReadTimeout,
    requests.exceptions.ConnectionError,
    urllib3.exceptions.NewConnectionError,
    aiohttp.ServerDisconnectedError,
    redis.exceptions.BusyLoadingError,
    amqp.ConnectionClosed,
)


@settings(max_examples=200, deadline=None)
@given(
    module=st.lists(_identifiers, min_size=1, max_size=3).map(".".join),
    name=_identifiers,
    base=st.sampled_from(_TRANSIENT_BASES),
)
def test_subclasses_of_transient_errors_are_transient_whatever_their_name(
    module: str, name: str, base: type[Exception]
) -> None:
    """A subclass of a transient client error, named anything, still matches (the MRO is read)."""
    qualified = f"{module}.{name}"
    if qualified in transient._RULES or module in transient._PSYCOPG2_STATE_MODULES:
        return
    cls = type(name, (base,), {"__module__": module})
    assert matched(bare(cls))


# -- the policies' defaults -----------------------------------------------------------------


def test_retry_with_defaults_retries_a_real_httpx_connect_error(
    driver: Driver, refused_port: int
) -> None:
    """`Retry()` makes all four attempts when a real httpx client's connection is refused."""
    clock = FakeClock()
    attempts: list[int] = []

    def fetch() -> httpx.Response:
        attempts.append(1)
        with httpx.Client() as client:
            return client.get(f"http://127.0.0.1:{refused_port}/stock")

    with pytest.raises(httpx.ConnectError) as info:
        driver.call(Retry(clock=clock), fetch)
    assert len(attempts) == 4
    assert len(clock.sleeps) == 3
    assert any("gave up after 4 attempt(s)" in note for note in info.value.__notes__)


def test_failover_with_defaults_moves_on_after_a_refused_redis_connection(
    refused_port: int,
) -> None:
    """`Failover` moves to the next target when a real redis-py client is refused, by default."""
    ports = {"primary": refused_port}

    def ping() -> str:
        target = failsafe.current_context().target
        if target in ports:
            client = redis.Redis(port=ports[target], retry=RedisRetry(NoBackoff(), 0))
            try:
                client.ping()
            finally:
                client.close()
        return f"PONG from {target}"

    assert Failover(["primary", "replica"]).call(ping) == "PONG from replica"


def test_transient_combines_with_other_predicates() -> None:
    """``TRANSIENT | exception(...)`` widens the default and ``& ~`` narrows it."""

    class Busy(Exception):
        pass

    wider = TRANSIENT | exception(Busy)
    narrower = TRANSIENT & ~exception(httpx.ReadTimeout)
    assert wider.matches_exception(Busy())
    assert wider.matches_exception(httpx.ConnectError("x"))
    assert narrower.matches_exception(httpx.ConnectError("x"))
    assert not narrower.matches_exception(httpx.ReadTimeout("x"))


def test_every_rule_is_in_the_documented_table() -> None:
    """Each class that the rules name appears on the transient-errors page."""
    page = (ROOT / "docs" / "policies" / "transient-errors.md").read_text(encoding="utf-8")
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", page))
    assert sorted({name.rsplit(".", 1)[1] for name in transient._RULES} - words) == []
