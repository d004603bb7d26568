"""Which exceptions are transient: the test behind `failsafe.predicates.TRANSIENT`.

`TRANSIENT` is the default ``on=`` of `Retry` and `Failover`. Matching only the built-in
`ConnectionError` and `TimeoutError` retried nothing for the most common clients: an
``httpx.ConnectError`` or a ``requests.exceptions.ConnectionError`` is neither (issue 11).
So an exception is judged by the fully qualified names (``module.qualname``) of the classes
in its MRO, looked up in `_RULES`, and no client library is imported: a service that never
imports aiohttp pays nothing for it, and ``import failsafe`` stays light.

The MRO is walked from the exception's own class to ``object`` and the **first** class
with a rule decides, so a specific rule beats a general one: ``aiormq``'s
``AuthenticationError`` is a built-in `ConnectionError` too, but its own rule (not
transient) comes first in its MRO. A rule is ``True``, ``False``, or a test of the
instance for the few clients whose class does not say it all (a psycopg ``sqlstate``, a
gRPC status code). A test that raises, on an odd object, means "not transient".

The verdict for a class is cached (`_CACHE_LIMIT` classes at most, 1,024): the common
failure path is one dictionary look-up. Beyond the limit, a new class is judged on every
call without being cached, so a program that makes exception classes on the fly keeps a
flat memory. The cache is a plain dictionary: two threads that judge the same new class at
once both compute the same verdict, and the limit can be passed by at most one entry per
such racing thread.

Update `_RULES` (and the table in ``docs/policies/transient-errors.md``) together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

__all__ = ["is_transient"]

InstanceTest: TypeAlias = Callable[[BaseException], bool]
Verdict: TypeAlias = bool | InstanceTest

_CACHE_LIMIT: Final = 1024
"""The most exception classes whose verdict is kept (each one keeps its class alive)."""

# PostgreSQL SQLSTATEs that say the connection, not the statement, failed: class 08
# (connection exception) and the server shutting down or starting up.
_SHUTDOWN_STATES: Final = frozenset({"57P01", "57P02", "57P03"})

# A refused login has no SQLSTATE in psycopg: libpq reports it as text, like a network
# failure. These phrases of the server's (English) messages and of libpq's own tell it
# apart, so a wrong password is not retried (repeated failed logins can lock an account).
# A server that answers in another language falls back to the SQLSTATE rule: retried.
_LOGIN_REFUSED: Final = (
    "authentication failed",  # password, md5, scram, peer, ident, ldap, cert ...
    "does not exist",  # role "x" does not exist, database "x" does not exist
    "pg_hba.conf",  # no pg_hba.conf entry for host ..., pg_hba.conf rejects connection
    "not permitted to log in",
    "permission denied",  # permission denied for database
    "no password supplied",  # libpq: fe_sendauth
    "certificate verify failed",
)

# psycopg2's per-SQLSTATE classes carry their code on the instance only when the server
# raised them, so they are judged by class name: those of class 08 and 57P01-57P03.
_PSYCOPG2_STATE_MODULES: Final = frozenset({"psycopg2.errors", "psycopg2.extensions"})
_PSYCOPG2_CONNECTION_CLASSES: Final = frozenset(
    {
        "ConnectionException",  # 08000
        "SqlclientUnableToEstablishSqlconnection",  # 08001
        "ConnectionDoesNotExist",  # 08003
        "SqlserverRejectedEstablishmentOfSqlconnection",  # 08004
        "ConnectionFailure",  # 08006
        "TransactionResolutionUnknown",  # 08007
        "ProtocolViolation",  # 08P01
        "AdminShutdown",  # 57P01
        "CrashShutdown",  # 57P02
        "CannotConnectNow",  # 57P03
    }
)

_GRPC_CODES: Final = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


def _connection_level(state: object, exc: BaseException) -> bool:
    """Whether a PostgreSQL error with SQLSTATE ``state`` lost or never had a connection."""
    if state is None:  # no answer from the server, or a refused login (see _LOGIN_REFUSED)
        message = str(exc)
        return not any(phrase in message for phrase in _LOGIN_REFUSED)
    return isinstance(state, str) and (state.startswith("08") or state in _SHUTDOWN_STATES)


def _psycopg(exc: BaseException) -> bool:
    return _connection_level(exc.sqlstate, exc)  # type: ignore[attr-defined]


def _psycopg2(exc: BaseException) -> bool:
    return _connection_level(exc.pgcode, exc)  # type: ignore[attr-defined]


def _grpc(exc: BaseException) -> bool:
    # a grpc.StatusCode member: compared by its name, so grpc is never imported
    name = getattr(exc.code(), "name", None)  # type: ignore[attr-defined]
    return isinstance(name, str) and name in _GRPC_CODES


def _urllib3_gave_up(exc: BaseException) -> bool:
    # urllib3's own retries ran out: transient when the last failure was
    reason = exc.reason  # type: ignore[attr-defined]
    return isinstance(reason, BaseException) and _verdict(type(reason)) is True


def _names(module: str, *classes: str) -> dict[str, bool]:
    return {f"{module}.{c}": True for c in classes}


def _not(module: str, *classes: str) -> dict[str, bool]:
    return {f"{module}.{c}": False for c in classes}


_HTTPX = ("TimeoutException", "NetworkError", "RemoteProtocolError")

_RULES: Final[dict[str, Verdict]] = {
    # the standard library: BrokenPipeError, ConnectionRefusedError, ConnectionResetError,
    # ConnectionAbortedError; socket.timeout and asyncio.TimeoutError are TimeoutError
    **_names("builtins", "ConnectionError", "TimeoutError"),
    # httpx and httpcore set __module__ to the package on their public names; the private
    # module's names are there in case a release stops doing so
    **_names("httpx", *_HTTPX),
    **_names("httpx._exceptions", *_HTTPX),
    **_names("httpcore", *_HTTPX),
    **_names("httpcore._exceptions", *_HTTPX),
    # requests: its ConnectionError and Timeout are OSErrors, not built-in ConnectionErrors
    **_names("requests.exceptions", "ConnectionError", "Timeout", "ChunkedEncodingError"),
    **_not("requests.exceptions", "SSLError"),
    # urllib3: TimeoutError covers ConnectTimeoutError, ReadTimeoutError, NewConnectionError
    # and NameResolutionError; ProtocolError is urllib3's ConnectionError
    **_names("urllib3.exceptions", "TimeoutError", "ProtocolError"),
    **_not("urllib3.exceptions", "ResponseNotChunked"),
    "urllib3.exceptions.MaxRetryError": _urllib3_gave_up,
    # aiohttp: ClientConnectionError covers ClientOSError, ClientConnectorError,
    # ServerDisconnectedError, ServerTimeoutError ...; TLS failures are configuration
    **_names("aiohttp.client_exceptions", "ClientConnectionError"),
    **_not("aiohttp.client_exceptions", "ClientSSLError", "ServerFingerprintMismatch"),
    # redis-py (redis.asyncio raises the same classes): ConnectionError covers
    # BusyLoadingError, MaxConnectionsError and sentinel's MasterNotFoundError
    **_names(
        "redis.exceptions", "ConnectionError", "TimeoutError", "TryAgainError", "ClusterDownError"
    ),
    **_not(
        "redis.exceptions", "AuthenticationError", "AuthorizationError", "ExternalAuthProviderError"
    ),
    # psycopg 3 and psycopg2: connection-level OperationalErrors only
    "psycopg.OperationalError": _psycopg,
    **_not("psycopg_pool", "PoolClosed"),
    **_not("psycopg_pool.errors", "PoolClosed"),
    "psycopg2.OperationalError": _psycopg2,
    # aiormq (and aio-pika, which re-exports it): a lost or forced-closed connection, and a
    # channel left closed by it; not a refused login, an incompatible server, or a hard
    # connection error (reply codes 501-541) that the broker would send again
    **_names(
        "aiormq.exceptions", "AMQPConnectionError", "ConnectionClosed", "ChannelInvalidStateError"
    ),
    **_not(
        "aiormq.exceptions",
        "AuthenticationError",
        "ProbableAuthenticationError",
        "IncompatibleProtocolError",
        "ConnectionFrameError",
        "ConnectionSyntaxError",
        "ConnectionCommandInvalid",
        "ConnectionChannelError",
        "ConnectionUnexpectedFrame",
        "ConnectionResourceError",
        "ConnectionNotAllowed",
        "ConnectionNotImplemented",
        "ConnectionInternalError",
    ),
    # grpc, sync and grpc.aio (AioRpcError): by the call's status code
    "grpc.RpcError": _grpc,
}

_cache: dict[type, Verdict] = {}


def _judge(cls: type) -> Verdict:
    """The verdict for exceptions of class ``cls``: the first rule in its MRO, else False."""
    try:
        for c in cls.__mro__:
            module = c.__module__
            rule = _RULES.get(f"{module}.{c.__qualname__}")
            if rule is not None:
                return rule
            if module in _PSYCOPG2_STATE_MODULES:
                return c.__qualname__ in _PSYCOPG2_CONNECTION_CLASSES
    except Exception:  # a class too odd to name is not one of the clients' classes
        return False
    return False


def _verdict(cls: type) -> Verdict:
    """The verdict for ``cls``, from the cache while it has room for it."""
    try:
        found = _cache.get(cls)
    except TypeError:  # a metaclass that made its classes unhashable
        return _judge(cls)
    if found is None:
        found = _judge(cls)
        if len(_cache) < _CACHE_LIMIT:
            _cache[cls] = found
    return found


def is_transient(exc: BaseException) -> bool:
    """Return whether ``exc`` is a connection error or timeout that a retry may outlive.

    Thread-safe; never raises (an instance test that raises means "not transient").
    """
    # failsafe's HTTP transport declined to resend this error's request (not idempotent,
    # and it may have reached the server): an outer Retry() must not resend it either
    if getattr(exc, "_failsafe_not_resent", False):
        return False
    # the cache look-up inlined: this runs on every failure of every default policy
    try:
        found = _cache.get(type(exc))
    except TypeError:  # an unhashable class: _verdict judges it uncached
        found = None
    if found is None:
        found = _verdict(type(exc))
    if found is True or found is False:
        return found
    try:
        return found(exc) is True
    except Exception:  # an odd object whose .code() or .sqlstate fails
        return False
