"""`ResilientTransport` and `AsyncResilientTransport`: retry, per-endpoint breakers, failover.

Both wrap an inner httpx transport (httpx's own by default) and run every request through
the core policies, outermost first:

```text
Failover(endpoints)                     # then the next endpoint
  └── Retry(attempts=4, ...)            # per endpoint: the first try plus three retries
        └── KeyedCircuitBreaker()       # one breaker per endpoint
              └── one request to the endpoint
```

With a single endpoint (or none: the request's own origin) the endpoint is known before the
request starts, so the failover layer is left out (the transport does what it would do).

With ``hedging=`` (issue 17), a request that may be resent runs under a `Hedging` policy
around all of that: attempt k (a hedge on a copy of the request) starts with the k-th
endpoint whose circuit is not open (one `Failover` per starting endpoint), and the first
acceptable answer wins.
Without endpoints the keyed breaker holds a breaker per origin called, within its bounds
(``max_keys``, ``idle_ttl``).

The two transports share all their decisions; only the sending and the releasing of
discarded responses differ (one blocks, one awaits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import uuid
from collections.abc import Callable, Hashable, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx

from failsafe import _tracing
from failsafe import events as _events
from failsafe._policy import AsyncRunner, Policy, SyncRunner, _invoke, _invoke_async
from failsafe._validators import check, number
from failsafe.backoff import Backoff
from failsafe.budget import RetryBudget
from failsafe.circuit_breaker import (
    CircuitBreaker,
    CircuitState,
    ConsecutiveFailures,
    KeyedCircuitBreaker,
)
from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.context import _deadline, _target
from failsafe.events import Listener, _emit, _listening
from failsafe.exceptions import (
    AllTargetsFailed,
    CircuitOpenError,
    ConfigurationError,
    PolicyRejected,
    TargetFailure,
)
from failsafe.failover import Failover
from failsafe.hedging import Hedging, _attempt_number, abandoned
from failsafe.http import _policies
from failsafe.http._bounds import (
    _AsyncDeadlineStream,
    _Deadline,
    _DeadlineStream,
    aread,
    read,
    release,
    release_async,
    widest,
)
from failsafe.http._endpoints import Endpoint, parse_endpoints
from failsafe.http._panic import FOLLOW_WAIT, InFlight, PanicProbes
from failsafe.http.classify import (
    _CONNECT,
    RETRYABLE,
    TRANSPORT_ERRORS,
    _gateway_result,
    retry_after,
)
from failsafe.http.events import HttpAttempt
from failsafe.http.exceptions import AllEndpointsFailed, DeadlineExceeded, EndpointFailure
from failsafe.outcome import Outcome
from failsafe.pipeline import Pipeline
from failsafe.predicates import Classifier, Predicate, as_predicate
from failsafe.retry import Retry

if TYPE_CHECKING:
    from failsafe.config import ConfiguredPipeline

__all__ = ["AsyncResilientTransport", "ResilientTransport", "endpoint_breakers"]

_log = logging.getLogger("failsafe.http")

# What the transports' own breakers count: transport errors but the request's own deadline
_BREAKER_ON: Final = TRANSPORT_ERRORS & (lambda e: not isinstance(e, DeadlineExceeded))


def endpoint_breakers(
    *,
    threshold: int = 5,
    reset_timeout: float = 30.0,
    max_reset_timeout: float | None = None,
    name: str = "http-breaker",
    storage_factory: Callable[[Hashable], Any] | None = None,
    max_keys: int | None = 10_000,
    idle_ttl: float | None = 3600.0,
    clock: Clock = SYSTEM_CLOCK,
    listeners: Sequence[Listener] = (),
) -> KeyedCircuitBreaker:
    """Per-endpoint circuit breakers with the transports' own rule, tuned.

    What the transports build when ``breakers=True``, with other numbers: a breaker per
    endpoint that opens after ``threshold`` consecutive failures (transport errors other
    than [`DeadlineExceeded`][failsafe.http.DeadlineExceeded], and 502, 503 and 504
    answers) and admits a probe after ``reset_timeout`` seconds. Pass the result as
    ``breakers=`` to one transport, or to several to share their state.

    Args:
        threshold: Consecutive failures that open an endpoint's circuit.
        reset_timeout: Seconds a circuit stays open before a probe.
        max_reset_timeout: Let the open period double after each failed probe, up to this
            many seconds (a close starts again from ``reset_timeout``): a short
            ``reset_timeout`` then finds a restarted endpoint soon without probing a dead
            one every few seconds. ``None``: constant.
        name: The breakers are named ``name[endpoint]``.
        storage_factory: Builds each endpoint's pybreaker storage
            ([`redis_storage`][failsafe.circuit_breaker.redis_storage] shares the state
            with other processes).
        max_keys: The most endpoints (origins, without ``endpoints``) whose breaker is held
            at once; a new one beyond it drops the least recently used whose circuit is
            closed with no failure counted (see
            [`KeyedCircuitBreaker`][failsafe.KeyedCircuitBreaker]). ``None``: no maximum.
        idle_ttl: Seconds after its last request that an endpoint's breaker is dropped,
            unless its circuit is open and its open period has not ended. ``None``: never.
        clock: Time for the open period and the idle time (a fake one in tests).
        listeners: Receive the breakers' events.

    Raises:
        ConfigurationError: On a bad threshold, open period or bound, naming it.

    Example:
        ```python
        from failsafe.http import ResilientTransport, endpoint_breakers

        quick = endpoint_breakers(threshold=3, reset_timeout=5.0)
        transport = ResilientTransport(
            endpoints=["http://127.0.0.1:8001", "http://127.0.0.1:8002"], breakers=quick
        )
        ```
    """
    return KeyedCircuitBreaker(
        name=name,
        trip=ConsecutiveFailures(threshold=threshold),
        reset_timeout=reset_timeout,
        max_reset_timeout=max_reset_timeout,
        on=_BREAKER_ON,
        on_result=_gateway_result,
        storage_factory=storage_factory,
        max_keys=max_keys,
        idle_ttl=idle_ttl,
        clock=clock,
        listeners=listeners,
    )


IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
DEFAULT_ATTEMPTS: Final = 4  # the order flow's first try plus three retries
# One request's default bound, all attempts, delays and its body included (issue #12: a 503
# with Retry-After: 100000 held a default GET for 3 x 60 s). failsafe's Timeout default, and
# Polly's standard HTTP pipeline's total timeout; four attempts of httpx's default 5 s fit.
DEFAULT_DEADLINE: Final = 30.0
_RESEND: Final = "failsafe.resend"  # request extension: why a request may not be resent


_NO_KWARGS: Final[dict[str, Any]] = {}  # the runners pass it along and never unpack it
# given as the kwargs of `_attempt` by its traced twin: the attempt runs untraced, in its span
_TRACED: Final[dict[str, Any]] = {}


def _public_url(url: httpx.URL) -> str:
    """``url`` for a span: without its userinfo, query and fragment (they may hold secrets)."""
    path = url.raw_path.partition(b"?")[0].decode("ascii")
    return f"{url.scheme}://{url.netloc.decode('ascii')}{path}"


def _public_endpoint(key: str) -> str:
    """An endpoint's key for a span: without userinfo (``http://user:pw@host`` -> ``http://host``)."""
    if "@" not in key:
        return key
    public = _public_url(httpx.URL(key))
    return public if key.endswith("/") else public.rstrip("/")


def _client_span(
    tracing: _tracing.Tracing, request: httpx.Request, call: _Call
) -> contextlib.AbstractContextManager[_tracing.Span]:
    """The CLIENT span of one attempt, about to send ``request`` (aimed at its endpoint)."""
    url = request.url
    method = request.method
    attributes: dict[str, _tracing.Value] = {
        "http.request.method": method,
        "server.address": url.host,
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "url.full": _public_url(url),
        "failsafe.endpoint": _public_endpoint(str(_target.get())),
    }
    if call.total > 1:
        attributes["http.request.resend_count"] = call.total - 1
    return tracing.span(method, kind="client", attributes=attributes)


def _with_context(tracing: _tracing.Tracing, request: httpx.Request) -> httpx.Request:
    """A copy of ``request`` with the current span's ``traceparent`` (the caller's unchanged)."""
    carrier: dict[str, str] = {}
    tracing.inject(carrier)
    if not carrier:
        return request
    sent = httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=request.stream,
        extensions=request.extensions,
    )
    sent.headers.update(carrier)
    return sent


class _Call(_Deadline):
    """The state of one logical request across its attempts (its deadline: `_Deadline`)."""

    __slots__ = (
        "counts",
        "deadline_token",
        "raw_path",
        "resilience",
        "target_token",
        "total",
    )

    def __init__(self, raw_path: bytes, resilience: _Resilience) -> None:
        self.at = None  # _Deadline's: set here rather than by a call of its __init__
        self.raw_path = raw_path
        # the options the request started under: a rebuild after a reload never reaches it
        self.resilience = resilience
        self.counts: dict[str, int] = {}
        self.total = 0
        # the context variables set for the request, reset when it ends
        self.target_token: Token[object] | None = None
        self.deadline_token: Token[tuple[float, Clock] | None] | None = None


def _copy(request: httpx.Request) -> httpx.Request:
    """A request of its own for a hedged attempt: concurrent attempts cannot share one.

    Each attempt points its request at its endpoint (URL, ``Host``) and may shrink its
    timeouts (from the request's own, kept in `_Call`), so a copy taken while another
    attempt runs is as good as one taken before. The body is shared: a hedged request's is
    bytes, read only.
    """
    return httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=request.stream,
        extensions=dict(request.extensions),
    )


class _Abandoned(Exception):
    """Raised in a hedged request's losing attempt, under ``call``, instead of resending it.

    No policy retries it, fails over on it or counts it: it ends the loser's retries.
    """


def _request_of(exc: BaseException) -> httpx.Request | None:
    return getattr(exc, "_request", None)


def _why_not_resent(request: httpx.Request | None) -> str | None:
    if request is None:
        return None
    reason = request.extensions.get(_RESEND)
    return reason if isinstance(reason, str) else None


@attrs.define(kw_only=True, eq=False, repr=False)
class _EndpointHedging(Hedging):
    """The transports' hedging: attempt k goes to the k-th endpoint whose circuit is not open.

    With one endpoint (or none: the request's origin) every attempt goes to it.
    """

    keys: tuple[str, ...] = ()
    breakers: KeyedCircuitBreaker | None = None

    def _target_for(self, number: int) -> object:
        keys = self.keys
        if len(keys) < 2:
            return _target.get()  # the one endpoint, set by `_Resilience.start`
        breakers = self.breakers
        healthy = keys
        if breakers is not None:
            # the state alone: no breaker object is built for an endpoint never failed
            healthy = tuple(k for k in keys if breakers._state_of(k) is not CircuitState.OPEN)
        if not healthy:  # every circuit open: the failover (and its last resort) decide
            healthy = keys
        return healthy[(number - 1) % len(healthy)]


class _Resilience:
    """Everything both transports decide: options, policies, aiming, accounting."""

    def __init__(
        self,
        *,
        endpoints: Sequence[str] | None,
        attempts: int,
        backoff: Backoff | None,
        retry_on: Classifier,
        max_retry_after: float,
        breakers: KeyedCircuitBreaker | None,
        deadline: float | None,
        last_resort: float | None,
        idempotency_key: bool,
        idempotency_header: str,
        clock: Clock,
        rng: random.Random | None,
        listeners: Sequence[Listener],
        name: str,
        discard: Any,
        hedging: Hedging | None = None,
        retry_deadline: float | None = None,
        budget: RetryBudget | None = None,
        retry_listeners: Sequence[Listener] = (),
        around: Sequence[Policy] = (),
        breaker_spec: _policies.BreakerSpec | None = None,
    ) -> None:
        check("max_retry_after", max_retry_after, number(at_least=0))
        check("deadline", deadline, number(above=0, optional=True))
        check("last_resort", last_resort, number(above=0, optional=True))
        self.endpoints = parse_endpoints(endpoints) if endpoints is not None else None
        self.by_key: dict[str, Endpoint] = {e.key: e for e in self.endpoints or ()}
        self.deadline = deadline
        self.idempotency_key = idempotency_key
        self.idempotency_header = idempotency_header
        self.clock = clock
        self.max_retry_after = float(max_retry_after)
        self.listeners = tuple(listeners)
        self.name = name

        wanted = as_predicate(retry_on)
        # Each policy gets one plain function per side, not a composition of predicates:
        # every response goes through all of them, and each composed layer is a call more.
        wanted_exception, wanted_result = wanted._raw_tests()

        def resendable_exception(e: BaseException) -> bool:
            return (
                not isinstance(e, DeadlineExceeded)
                and bool(wanted_exception(e))
                and (_why_not_resent(_request_of(e)) is None or isinstance(e, _CONNECT))
            )

        def resendable_result(r: Any) -> bool:
            assert wanted_result is not None
            return bool(wanted_result(r)) and _why_not_resent(r.request) is None

        def retried_exception(e: BaseException) -> bool:
            return resendable_exception(e) and not self._circuit_opened()

        def retried_result(r: Any) -> bool:  # resendable_result, inlined: a call less
            assert wanted_result is not None
            return (
                bool(wanted_result(r))
                and _why_not_resent(r.request) is None
                and not self._circuit_opened()
            )

        def failed_over(e: BaseException) -> bool:
            return resendable_exception(e) or isinstance(e, PolicyRejected)

        handles_results = wanted_result is not None
        # With buffer=True an attempt reads at once only the body of a response sure to be
        # kept: one that retry_on retries, when the request may be resent, may be dropped
        # for another attempt, and is read once kept (a dropped one is never read whole).
        # A classifier that reads the body cannot judge it unread: such a response is kept.
        self.result_test = wanted_result
        resendable = f"{wanted}, when the request may be resent"
        # retry on this endpoint only while its circuit is closed; fail over in any case
        retry_pred = Predicate(
            retried_exception,
            retried_result if handles_results else None,
            f"{resendable} and while the endpoint's circuit is closed",
        )
        failover_pred = Predicate(
            failed_over,
            resendable_result if handles_results else None,
            f"{resendable} or raises {PolicyRejected.__name__}",
        )
        self.fails_over = failed_over
        self.breakers = breakers
        # the numbers the transport built its breakers with (None: given, or none)
        self.breaker_spec = breaker_spec
        # the policies run around each request (from ``policies=``), outermost first
        self.around = Pipeline(*around, name=f"{name}-around") if around else None
        retry = Retry(
            attempts=attempts,
            backoff=backoff if backoff is not None else Backoff.exponential(),
            on=retry_pred,
            delay_from=self._retry_after,
            deadline=retry_deadline,
            on_discard=discard,
            budget=budget,
            clock=clock,
            rng=rng if rng is not None else random.Random(),
            listeners=(*retry_listeners, *self.listeners),
            name=f"{name}-retry",
        )
        per_endpoint = Pipeline(retry, self.breakers) if self.breakers is not None else retry
        # the one endpoint when there is a single one: the transport sets it as the target and
        # does what its failover would do (see `failed`), without the failover's layer
        self.single: str | None = None
        if self.endpoints is None:
            self.policy: Pipeline | Retry | Failover = per_endpoint
            self.run: Pipeline | Retry | Failover = per_endpoint
        else:
            self.policy = Failover(
                [e.key for e in self.endpoints],
                policy=per_endpoint,
                on=failover_pred,
                on_discard=discard,
                listeners=self.listeners,
                name=f"{name}-failover",
            )
            self.run = self.policy
            if len(self.endpoints) == 1:
                self.single = self.endpoints[0].key
                self.run = per_endpoint
        # Hedging (issue 17), for requests that may be resent: attempt k starts on the k-th
        # endpoint whose circuit is not open, and keeps the retries and the failover, in
        # the endpoints' order from there (one Failover per starting endpoint)
        self.hedging: _EndpointHedging | None = None
        self.rotations: list[Pipeline | Retry | Failover] = [self.run]
        self.rotation_of: dict[object, int] = {}
        if hedging is not None:
            if not isinstance(hedging, Hedging):
                raise ConfigurationError("hedging", f"must be a Hedging policy, got {hedging!r}")
            keys = tuple(e.key for e in self.endpoints or ())
            self.hedging = _EndpointHedging(
                delay=hedging.delay,
                max_hedges=hedging.max_hedges,
                on=Predicate(
                    lambda e: failed_over(e) or isinstance(e, AllTargetsFailed),
                    resendable_result if handles_results else None,
                    f"{failover_pred} or every endpoint failed",
                ),
                on_discard=discard,
                budget=hedging.budget,
                max_threads=hedging.max_threads,
                clock=hedging.clock,
                listeners=(*hedging.listeners, *self.listeners),
                name=f"{name}-hedging" if hedging.name == "hedging" else hedging.name,
                keys=keys,
                breakers=self.breakers,
            )
            if len(keys) > 1:
                self.rotations = [
                    Failover(
                        keys[i:] + keys[:i],
                        policy=per_endpoint,
                        on=failover_pred,
                        on_discard=discard,
                        listeners=self.listeners,
                        name=f"{name}-failover",
                    )
                    for i in range(len(keys))
                ]
                self.rotation_of = {key: i for i, key in enumerate(keys)}
        # One runner for every request: the keyed breaker finds the endpoint's breaker on each
        # attempt. (A runner per origin, with its breaker bound in, was kept here for every
        # origin ever called, unbounded: issue 15. The keyed breaker's look-up is a dict read.)

        # every endpoint's circuit open: the request still goes to the one that rested longest
        # (at most last_resort a second); only across endpoints (one endpoint's circuit keeps
        # its own open period) and with our own keying, by endpoint
        self.panic: PanicProbes | None = None
        self.keys = [e.key for e in self.endpoints or ()]
        if (
            last_resort is not None
            and len(self.keys) > 1
            and type(self.breakers) is KeyedCircuitBreaker
            and self.breakers._key is None
        ):
            self.panic = PanicProbes(last_resort, max(1, math.ceil(last_resort)), clock)

    def describe(self) -> str:
        described = self.policy.describe()
        if self.around is not None:
            described = f"{self.around.describe()}, around {described}"
        if self.hedging is None:
            return described
        return f"{described}; {self.hedging.describe()} (idempotent requests)"

    def _circuit_opened(self) -> bool:
        """Whether the current endpoint's circuit is open (this failure may have opened it).

        Then waiting a backoff delay to be rejected is pointless: fail over at once.
        """
        breakers = getattr(self, "breakers", None)
        if breakers is None:
            return False
        key = _target.get()
        # the state alone: an origin whose calls all succeeded has no breaker object to build
        return key is not None and breakers._state_of(key) is CircuitState.OPEN

    # -- around the whole request -----------------------------------------------------------
    def start(self, request: httpx.Request) -> _Call:
        """Prepare a request; return its state (with the context tokens to reset at its end)."""
        method = request.method
        header = self.idempotency_header
        if self.idempotency_key and method in ("POST", "PATCH") and header not in request.headers:
            # one key per logical request: the same on every retry and every endpoint
            request.headers[header] = uuid.uuid4().hex
        if not isinstance(request.stream, httpx.ByteStream):
            request.extensions[_RESEND] = "the request body is a stream that cannot be replayed"
        elif method not in IDEMPOTENT_METHODS and header not in request.headers:
            request.extensions[_RESEND] = (
                f"{method} is not idempotent and the request carries no {header} header"
            )
        url = request.url
        if self.endpoints is None:  # one implicit endpoint: the request's own origin
            key: str | None = f"{url.scheme}://{url.netloc.decode()}"
        else:
            key = self.single
        call = _Call(url.raw_path if self.by_key else b"", self)
        enclosing = _deadline.get()  # a Timeout's (or any policy's) around the call
        own = self.deadline
        if own is not None:
            clock = self.clock
            at = clock.monotonic() + own
            if enclosing is None:
                ours = True
            elif enclosing[1] is clock:
                ours = enclosing[0] >= at
            else:  # on another clock: compare the times left
                ours = enclosing[0] - enclosing[1].monotonic() >= own
            if ours:  # published, so that the retry starts no attempt past it either
                call.at, call.clock, call.seconds, call.enclosing = at, clock, own, False
                call.deadline_token = _deadline.set((at, clock))
        if call.at is None and enclosing is not None:  # the enclosing one ends first
            call.at, call.clock = enclosing
            call.enclosing = True
            call.seconds = max(0.0, enclosing[0] - enclosing[1].monotonic())  # left at the start
        if call.at is not None:
            call.timeouts = timeouts = request.extensions.get("timeout")
            call.widest = widest(timeouts)
        if key is not None:
            call.target_token = _target.set(key)
        return call

    def bind_sync(self, attempt: SyncRunner) -> SyncRunner:
        """The runner of every request, around ``attempt``."""
        return self.run._bind_sync(attempt)

    def bind_async(self, attempt: AsyncRunner) -> AsyncRunner:
        """The asyncio twin of `bind_sync`."""
        return self.run._bind_async(attempt)

    def hedges(self, request: httpx.Request) -> bool:
        """Whether to hedge a request (after `start`): hedging is on and it may be resent."""
        return self.hedging is not None and _why_not_resent(request) is None

    @staticmethod
    def adopt(request: httpx.Request, response: httpx.Response) -> None:
        """A hedged request's answer came from its own copy: point ``request`` where it went.

        As an attempt of a request that is not hedged does (httpx gives the caller's request
        to the response).
        """
        answered = response.request
        if answered is not request:
            request.url = answered.url
            request.headers["Host"] = answered.headers.get("Host", request.url.netloc.decode())

    def bind_hedged_sync(self, attempt: SyncRunner) -> SyncRunner | None:
        """The runner of hedged requests, around ``attempt``; ``None`` without hedging."""
        if self.hedging is None:
            return None

        def unless_abandoned(send: Any, args: Any, kwargs: Any) -> Any:
            if abandoned():  # a losing thread: no new attempt, so no retry of a loser
                raise _Abandoned("another attempt of this hedged request was taken")
            return attempt(send, args, kwargs)

        runners = [r._bind_sync(unless_abandoned) for r in self.rotations]
        rotation_of = self.rotation_of

        def dispatch(send: Any, args: Any, kwargs: Any) -> Any:
            request, call = args
            # a copy for every attempt, the first too: a loser's thread may still point its
            # request elsewhere when the caller's takes the URL of the one that answered
            return runners[rotation_of.get(_target.get(), 0)](send, (_copy(request), call), kwargs)

        return self.hedging._bind_sync(dispatch)

    def bind_hedged_async(self, attempt: AsyncRunner) -> AsyncRunner | None:
        """The asyncio twin of `bind_hedged_sync` (a loser is cancelled instead)."""
        if self.hedging is None:
            return None
        runners = [r._bind_async(attempt) for r in self.rotations]
        rotation_of = self.rotation_of

        async def dispatch(send: Any, args: Any, kwargs: Any) -> Any:
            request, call = args
            if _attempt_number() > 1:  # the first attempt sends the request itself
                request = _copy(request)
            return await runners[rotation_of.get(_target.get(), 0)](send, (request, call), kwargs)

        return self.hedging._bind_async(dispatch)

    def failed(
        self,
        exc: Exception,
        request: httpx.Request,
        call: _Call,
        last: tuple[str, Exception] | None = None,
    ) -> Any:
        """What a request whose policies raised ``exc`` gives the caller.

        The last response (every endpoint answered with a retryable status), an error to
        raise (whose ``__cause__`` is the one to chain), or ``exc`` itself to re-raise.
        ``last``: the endpoint the last resort sent the request to, and how that failed
        (noted on the error).
        """
        outcome = self._failed(exc, request, call)
        if last is not None and isinstance(outcome, BaseException):
            key, error = last
            outcome.add_note(
                f"failsafe.http: every endpoint's circuit was open; the request sent anyway "
                f"to {key} failed too: {type(error).__name__}: {error}"
            )
        return outcome

    def _failed(self, exc: Exception, request: httpx.Request, call: _Call) -> Any:
        if self.single is not None and self.fails_over(exc):
            # what Failover([the endpoint]) would have raised: its one target failed
            return self.all_failed(
                [TargetFailure(self.single, Outcome(exception=exc))], request, call
            )
        if isinstance(exc, AllTargetsFailed):
            return self.all_failed(exc.failures, request, call)
        if isinstance(exc, httpx.TransportError):
            self.explain(exc, request)
        elif isinstance(exc, PolicyRejected):
            return self.rejected(exc, request, call)
        return exc

    def last_resort(self, exc: Exception, call: _Call) -> list[str] | None:
        """The endpoints whose open circuit refused a request that raised ``exc``.

        ``None`` when the request may not take the last resort: it has none, no open circuit
        refused the request (its attempts opened the last one themselves), or no time is
        left. The transports then follow a circuit that has closed since, or
        `PanicProbes.join` the last resort.
        """
        if self.panic is None or not isinstance(exc, AllTargetsFailed):
            return None
        refused = [
            str(f.target) for f in exc.failures if isinstance(f.outcome.exception, CircuitOpenError)
        ]
        if not refused or (call.at is not None and call.clock.monotonic() >= call.at):
            return None
        return refused

    def resort(
        self, refused: Sequence[str], loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[str, CircuitBreaker, InFlight | None, bool] | None:
        """Where the last resort of a request that ``refused`` circuits failed goes.

        ``(key, breaker, None, False)``: a circuit that refused it has closed since (by
        another request's last resort?): send there. ``(key, breaker, in_flight, True)``:
        this request is the last resort (its circuit half-open now): send, then
        ``panic.finish(in_flight)``. ``(key, breaker, in_flight, False)``: another request
        is it: wait for ``in_flight``, then send there if its circuit closed. ``None``: no
        last resort.
        """
        breakers, panic = self.breakers, self.panic
        assert breakers is not None
        assert panic is not None
        for key in refused:
            breaker = breakers.get(key)
            if breaker.state is CircuitState.CLOSED:
                return key, breaker, None, False
        in_flight, sends = panic.join(breakers, self.keys, loop)
        if in_flight is None:
            return None
        breaker = breakers.get(in_flight.key)
        if sends:
            breaker.half_open()
        return in_flight.key, breaker, in_flight, sends

    def resorted(self, in_flight: InFlight) -> None:
        """The last resort this request sent has ended: wake the requests waiting for it."""
        assert self.panic is not None
        self.panic.finish(in_flight)

    @staticmethod
    def time_left(call: _Call) -> float:
        """How long a request may wait for the last resort in flight."""
        if call.at is None:
            return FOLLOW_WAIT
        return max(0.0, call.at - call.clock.monotonic())

    def all_failed(
        self, failures: Sequence[TargetFailure], request: httpx.Request, call: _Call
    ) -> Any:
        """Turn the core's failures into the last response, or AllEndpointsFailed."""
        last = failures[-1].outcome
        if last.exception is None:
            return last.result  # every endpoint answered with a retryable status: the last one
        errors = []
        for failure in failures:
            key = str(failure.target)
            response = failure.outcome.result
            errors.append(
                EndpointFailure(
                    key,
                    call.counts.get(key, 0),
                    failure.outcome.exception,
                    response.status_code if isinstance(response, httpx.Response) else None,
                )
            )
        error = AllEndpointsFailed(errors, request)
        error.__cause__ = last.exception
        self.explain(last.exception, request)
        return error

    def rejected(
        self, exc: PolicyRejected, request: httpx.Request, call: _Call
    ) -> AllEndpointsFailed:
        """With no endpoint list, an open circuit is the one endpoint failing: an httpx error."""
        key = str(_target.get())
        error = AllEndpointsFailed(
            [EndpointFailure(key, call.counts.get(key, 0), exc, None)], request
        )
        error.__cause__ = exc
        return error

    def explain(self, exc: BaseException, request: httpx.Request) -> None:
        """Note on an error that it was not resent, and why, when the request forbade it."""
        reason = _why_not_resent(request)
        # errors raised before sending were retried whatever the request
        if (
            reason is not None
            and isinstance(exc, httpx.TransportError)
            and not isinstance(exc, _CONNECT)
        ):
            exc.add_note(
                f"failsafe.http: not resent, since it may have reached the server: {reason}"
            )
            # nor by a Retry() around the client: its default (TRANSIENT) reads this mark
            exc._failsafe_not_resent = True  # type: ignore[attr-defined]

    # -- around each attempt ------------------------------------------------------------------
    def aim(self, request: httpx.Request, call: _Call) -> str:
        """Point the request at the current endpoint and bound its timeout; return the key."""
        key = _target.get()
        assert isinstance(key, str)
        endpoint = self.by_key.get(key)
        if endpoint is not None:
            endpoint.point(request, call.raw_path)
        at = call.at
        if at is not None:
            remaining = at - call.clock.monotonic()
            if remaining < call.widest or remaining <= 0:  # else the request's own stand
                call.bound(request, remaining)  # shrunk to the time left, or DeadlineExceeded
        counts = call.counts
        counts[key] = counts.get(key, 0) + 1
        call.total += 1
        return key

    def kept(self, response: httpx.Response, request: httpx.Request) -> bool:
        """With ``buffer=True``: whether to read ``response`` within its attempt.

        A response sure to be kept is: one ``retry_on`` does not retry, or whose request may
        not be resent. One that may be dropped for another attempt is read once kept (a
        dropped one is never read whole); a classifier that reads the body cannot judge it
        unread, so such a response is kept.
        """
        test = self.result_test
        try:
            return test is None or not test(response) or _why_not_resent(request) is not None
        except httpx.ResponseNotRead:
            return True

    def attempted(
        self,
        call: _Call,
        key: str,
        request: httpx.Request,
        response: httpx.Response | None,
        error: BaseException | None,
    ) -> None:
        """Record an attempt's outcome on the response, the error and the listeners."""
        if response is not None:
            response.request = request
            extensions = response.extensions
            extensions["failsafe.endpoint"] = key
            extensions["failsafe.attempts"] = call.total
        elif isinstance(error, httpx.RequestError):
            error.request = request
        if _listening(self.listeners):
            _emit(
                self.listeners,
                HttpAttempt,
                policy=self.name,
                endpoint=key,
                attempt=call.counts[key],
                method=request.method,
                url=str(request.url),
                status_code=response.status_code if response is not None else None,
                error=error,
            )

    def answered(self, span: _tracing.Span, response: httpx.Response) -> None:
        """Record an attempt's answer on its span: its status, failed when 5xx or retried."""
        status = response.status_code
        span.set("http.response.status_code", status)
        failed = status >= 500
        test = self.result_test
        if not failed and test is not None:
            with contextlib.suppress(httpx.ResponseNotRead):  # a classifier reading the body
                failed = bool(test(response))
        if failed:
            span.failed(str(status))

    def _retry_after(self, outcome: Outcome[Any]) -> float | None:
        response = outcome.result
        if isinstance(response, httpx.Response) and response.status_code in (429, 503):
            wait = retry_after(response, self.clock.time())
            if wait is not None:
                return min(wait, self.max_retry_after)
        return None


class _Setup:
    """A transport's options as given, and its `_Resilience` built from them and its policies.

    With ``policies=`` a `_Resilience` is built from the options the pipeline sets and the
    others as given; with a configured pipeline it is built again for each version of it
    (`rebuild`). Shared by both transports, which bind the result to their own attempt.
    """

    def __init__(
        self,
        *,
        policies: Pipeline | ConfiguredPipeline | None,
        endpoints: Sequence[str] | None,
        attempts: int,
        backoff: Backoff | None,
        retry_on: Classifier,
        max_retry_after: float,
        breakers: KeyedCircuitBreaker | bool,
        deadline: float | None,
        last_resort: float | None,
        idempotency_key: bool,
        idempotency_header: str,
        clock: Clock,
        rng: random.Random | None,
        listeners: Sequence[Listener],
        name: str,
        discard: Any,
        hedging: Hedging | None,
    ) -> None:
        if not (isinstance(breakers, bool | KeyedCircuitBreaker)):
            raise ConfigurationError(
                "breakers", f"must be True, False or a KeyedCircuitBreaker, got {breakers!r}"
            )
        if hedging is not None and not isinstance(hedging, Hedging):
            raise ConfigurationError("hedging", f"must be a Hedging policy, got {hedging!r}")
        self.endpoints = endpoints
        self.attempts = attempts
        self.backoff = backoff
        self.retry_on = retry_on
        self.max_retry_after = max_retry_after
        self.breakers = breakers
        self.deadline = deadline
        self.last_resort = last_resort
        self.idempotency_key = idempotency_key
        self.idempotency_header = idempotency_header
        self.clock = clock
        self.rng = rng
        self.listeners = tuple(listeners)
        self.name = name
        self.discard = discard
        self.hedging = hedging
        self.lock = threading.Lock()  # one rebuild at a time (no I/O and no await under it)
        # the configured pipeline followed, and its version the first build read
        self.source: ConfiguredPipeline | None = None
        self.version: object = None
        chosen: tuple[Policy, ...] = ()
        if isinstance(policies, Pipeline):
            chosen = policies.policies
        elif policies is not None:
            from failsafe.config import ConfiguredPipeline  # only for a transport given one

            if not isinstance(policies, ConfiguredPipeline):
                raise ConfigurationError(
                    "policies",
                    f"must be a Pipeline or a failsafe.config.ConfiguredPipeline, got {policies!r}",
                )
            self.source = policies
            # Reloads ask `vet` before they swap the pipeline: a version this transport cannot
            # run fails the reload, so file, configuration and transport agree. Registered
            # before the version is read, so that any reload that starts checking after that
            # read asks it; one already checking may still swap (`rebuild` logs that case).
            # Held weakly by the pipeline: a dropped transport is neither kept nor asked.
            policies._add_check(self.vet)
            try:
                # one read of the version: its pipeline is the one it numbers
                self.version = version = policies._version
                self.first = self.build(version.pipeline.policies, None)
            except BaseException:
                policies._remove_check(self.vet)  # a transport never built checks nothing
                raise
            return
        self.first = self.build(chosen, None)

    def _conflicts(self, plan: _policies.Plan) -> None:
        """Refuse an option given both as an argument and by the pipeline."""

        def both(option: str, given: object, policy: Policy) -> ConfigurationError:
            return ConfigurationError(
                option,
                f"given ({given!r}) and set by the pipeline's {_policies._named(policy)}: "
                "give one or the other",
            )

        if plan.retry is not None:
            if self.attempts != DEFAULT_ATTEMPTS:
                raise both("attempts", self.attempts, plan.retry)
            if self.backoff is not None:
                raise both("backoff", self.backoff, plan.retry)
        if plan.breaker is not None and self.breakers is not True:
            raise both("breakers", self.breakers, plan.breaker)
        if plan.timeout is not None and self.deadline != DEFAULT_DEADLINE:
            raise both("deadline", self.deadline, plan.timeout)
        if plan.hedging is not None and self.hedging is not None:
            raise both("hedging", self.hedging, plan.hedging)

    def plan(self, policies: Sequence[Policy]) -> _policies.Plan:
        """What ``policies`` set in this transport, given its own options (no side effect).

        Raises:
            ConfigurationError: A policy the transport cannot run, or an option given both
                as an argument and by the pipeline.
        """
        plan = _policies.plan(policies)
        self._conflicts(plan)
        return plan

    def vet(self, candidate: Pipeline) -> None:
        """A reload's check: refuse a new version of the configured pipeline `build` would.

        The same reading as `build` (`plan`), without building anything: the rest of a
        build takes options that are valid once planned.

        Raises:
            ConfigurationError: The option the transport refuses, naming the transport.
        """
        try:
            self.plan(candidate.policies)
        except ConfigurationError as exc:
            option, problem = exc.option, exc.problem
        else:
            return
        # raised outside the handler: no __context__ whose frames would hold this transport
        raise ConfigurationError(
            option, f"the HTTP transport {self.name!r} cannot run it: {problem}"
        )

    def build(self, policies: Sequence[Policy], old: _Resilience | None) -> _Resilience:
        """The resilience of ``policies`` and the options; ``old``: the one it replaces.

        The per-endpoint breakers built by the transport go on: kept when their numbers are
        unchanged, else new ones that take ``old``'s state over (open circuits stay open).

        Raises:
            ConfigurationError: A policy the transport cannot run, or an option given both
                as an argument and by the pipeline.
        """
        plan = self.plan(policies)
        retry = plan.retry
        spec: _policies.BreakerSpec | None = None
        keyed: KeyedCircuitBreaker | None
        if self.breakers is True:
            spec = plan.breaker_spec or _policies.BreakerSpec()
            if old is not None and old.breaker_spec == spec:
                keyed = old.breakers
            else:
                keyed = _policies.build_breakers(
                    spec,
                    name=f"{self.name}-breaker",
                    on=_BREAKER_ON,
                    on_result=_gateway_result,
                    clock=self.clock,
                    listeners=self.listeners,
                )
                if old is not None and old.breaker_spec is not None and old.breakers is not None:
                    keyed._take_over(old.breakers)
        elif self.breakers is False:
            keyed = None
        else:
            keyed = self.breakers
        resilience = _Resilience(
            endpoints=self.endpoints,
            attempts=retry.attempts if retry is not None else self.attempts,
            backoff=retry.backoff if retry is not None else self.backoff,
            retry_on=self.retry_on,
            max_retry_after=self.max_retry_after,
            breakers=keyed,
            deadline=plan.timeout.seconds if plan.timeout is not None else self.deadline,
            last_resort=self.last_resort,
            idempotency_key=self.idempotency_key,
            idempotency_header=self.idempotency_header,
            clock=self.clock,
            rng=self.rng,
            listeners=self.listeners,
            name=self.name,
            discard=self.discard,
            hedging=plan.hedging if plan.hedging is not None else self.hedging,
            retry_deadline=retry.deadline if retry is not None else None,
            budget=retry.budget if retry is not None else None,
            retry_listeners=retry.listeners if retry is not None else (),
            around=plan.around,
            breaker_spec=spec,
        )
        plan.taken()
        return resilience

    def rebuild(self, version: Any, old: _Resilience) -> _Resilience:
        """The resilience of a new version of the configured pipeline, or ``old``.

        A reload asks `vet` first, so a version the transport cannot run (a reload added a
        fallback, say) is refused before it is swapped. One can still get here when the
        reload was already checking its users as this transport registered (the transport
        read the version before it): such a version is logged as an error on the
        ``failsafe.http`` logger, once, and the transport goes on with ``old``.
        """
        try:
            return self.build(version.pipeline.policies, old)
        except ConfigurationError as exc:
            _log.error(
                "%s: version %s of the pipeline %r cannot run in this transport; it keeps "
                "its policies: %s",
                self.name,
                version.number,
                getattr(self.source, "name", "?"),
                exc,
            )
            return old


class _Bound:
    """A transport's resilience with its runners, and the pipeline version it was built from."""

    __slots__ = ("around", "hedged", "resilience", "run", "version")

    def __init__(
        self, resilience: _Resilience, run: Any, hedged: Any, around: Any, version: object
    ) -> None:
        self.resilience = resilience
        self.run = run
        self.hedged = hedged
        self.around = around
        self.version = version


class _Follows:
    """What both transports share to follow a configured pipeline's reloads.

    A transport holds its `_Bound` (the resilience built from the pipeline's version it read)
    and rebuilds it, once, when a request finds a newer version; no await and no I/O under
    the lock.
    """

    _setup: _Setup
    _source: ConfiguredPipeline | None
    _bound: _Bound

    def _bind(self, resilience: _Resilience, version: object) -> _Bound:
        raise NotImplementedError

    def _refresh(self) -> _Bound:
        """Rebuild for the configured pipeline's new version (once: under the lock)."""
        setup = self._setup
        with setup.lock:
            bound = self._bound
            assert self._source is not None
            version = self._source._version
            if bound.version is not version:
                bound = self._bound = self._bind(setup.rebuild(version, bound.resilience), version)
            return bound

    @property
    def _resilience(self) -> _Resilience:
        """The options requests start under now (a configured pipeline's current version)."""
        bound = self._bound
        if self._source is not None and self._source._version is not bound.version:
            bound = self._refresh()
        return bound.resilience

    @property
    def breakers(self) -> KeyedCircuitBreaker | None:
        """The per-endpoint circuit breakers (``None`` when disabled).

        With a configured pipeline: those of its current version.
        """
        return self._resilience.breakers


class ResilientTransport(_Follows, httpx.BaseTransport):
    """An httpx transport that retries, fails over across endpoints and skips open circuits.

    Use it as ``httpx.Client(transport=ResilientTransport(endpoints=[...]))``.

    Args:
        transport: The inner transport that sends each attempt (default: httpx's own).
        endpoints: Base URLs tried in order, such as ``["http://127.0.0.1:8001",
            "http://127.0.0.1:8002"]``. Each attempt replaces the request's scheme, host and
            port (and prefixes the endpoint's path) and keeps its path and query. ``None``:
            the request's own URL is the one endpoint.
        policies: A [`Pipeline`][failsafe.Pipeline], or a pipeline of a configuration file
            ([`ConfiguredPipeline`][failsafe.config.ConfiguredPipeline]), whose policies set
            the transport's: a `Retry` its ``attempts``, ``backoff``, ``deadline`` and
            ``budget`` (on each endpoint); a `CircuitBreaker` or `KeyedCircuitBreaker` the
            numbers of the per-endpoint breakers (its trip, open periods, probes and, keyed,
            its bounds); a `Timeout` the ``deadline``; a `Hedging` policy ``hedging``; a
            `Bulkhead`, `RateLimiter`, `AdaptiveConcurrency` or `Chaos` runs as it is around
            each request. What fails is the transport's business (``retry_on``, and the
            breakers' HTTP rule), not the retry's, breaker's or hedging's ``on``; the
            transport's ``clock`` and ``rng`` time and jitter them. An option the pipeline
            sets must be left at its default here.
            With a configured pipeline the transport follows its reloads: the first request
            after one runs under the new version (requests in flight finish under theirs),
            and the breakers keep their state. A new version the transport cannot run fails
            the reload itself ([`ConfigError`][failsafe.config.ConfigError]; nothing
            changes). See
            [Policies from a pipeline](../http.md#policies-from-a-pipeline-or-a-configuration-file).
        attempts: Attempts per endpoint, the first included (default 4: the order flow's
            first try plus three retries).
        backoff: Delays between attempts on one endpoint (default: exponential from 50 ms,
            full jitter, at most 1 s). A server's ``Retry-After`` (on 429 and 503) wins,
            capped by ``max_retry_after``.
        retry_on: Which outcomes are retried and fail over (default
            [`RETRYABLE`][failsafe.http.classify.RETRYABLE]: transport errors, 502, 503,
            504, 429 with Retry-After). Any other status is returned at once.
        max_retry_after: The longest ``Retry-After`` honoured, in seconds.
        breakers: ``True`` (default): a circuit breaker per endpoint (5 consecutive failures,
            30 s open), so an endpoint whose circuit is open is skipped without a network
            attempt; ``False``: none; or a `KeyedCircuitBreaker` to share with other clients
            (and, with a [`redis_storage`][failsafe.circuit_breaker.redis_storage] per key,
            other processes);
            [`endpoint_breakers`][failsafe.http.endpoint_breakers] builds one with the same
            rule and other numbers. Without ``endpoints``, every origin called gets a
            breaker: at most 10,000 are held, and one idle for an hour is dropped (an open
            circuit only once its open period has ended); ``endpoint_breakers(max_keys=...,
            idle_ttl=...)`` changes the bounds.
        deadline: Seconds for the whole request, all attempts, delays, endpoints and the
            reading of its body included (default 30; ``None``: no bound of the transport's
            own). An enclosing deadline (a [`Timeout`][failsafe.Timeout] around the call)
            bounds it too: the earlier one holds. Each attempt's connect, read, write and
            pool timeouts shrink to the time left, no retry starts that would end after it,
            and past it the request raises
            [`DeadlineExceeded`][failsafe.http.DeadlineExceeded] (also while the body is
            read, with ``buffer=False`` by the caller).
        last_resort: With two endpoints or more, when every endpoint's circuit is open
            and one of them refused the request, send it anyway to the endpoint whose open
            period ends first (the nearest to its probe), as that circuit's probe: a
            success closes the circuit and is the answer
            (``response.extensions["failsafe.last_resort"]`` is ``True``); a failure opens
            it again and the request fails as it would have, with a note. One at a time:
            requests refused meanwhile wait for it (within their deadline, else 30 s) and
            follow it if it closed its circuit. At most this many such requests a second
            per transport, in bursts of at most as many (at least one), so endpoints that
            are all down get bounded extra load (default 1;
            ``None``: never, a request fails at once while every circuit is open). Only
            with the transport's own breakers (``True``, or a `KeyedCircuitBreaker` keyed
            by endpoint).
        idempotency_key: Give POST and PATCH requests that have none an
            ``Idempotency-Key`` (one per logical request, the same on every attempt and
            endpoint), which makes them retryable.
        idempotency_header: The header's name.
        buffer: Read each response's body within its attempt (default), so that a
            connection dropped mid-response is retried like any transport error; a response
            that ``retry_on`` would retry is read only once it is kept (the transport's
            answer), so that a discarded one is never read whole. ``False`` for streamed
            downloads: the body is then read by the caller, outside the retries.
        hedging: A [`Hedging`][failsafe.Hedging] policy: a request that may be resent
            (GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or one with the idempotency header,
            with a body of bytes) that has no answer after its ``delay`` is sent again to
            the next endpoint whose circuit is not open, and the first acceptable answer
            wins (see [Hedging](../http.md#hedging)). The transport takes its ``delay``,
            ``max_hedges``, ``budget``, ``max_threads``, ``clock``, ``listeners`` and
            ``name``; what is acceptable is ``retry_on``'s business, and a losing response
            is closed. Each hedge keeps the retries and the failover, from its endpoint on.
            ``None`` (default): no hedging. Other requests are never hedged.
        clock: Time for backoff, deadlines and breakers (a fake one in tests).
        rng: Randomness for jitter.
        listeners: Receive [`HttpAttempt`][failsafe.http.HttpAttempt] for every attempt and
            the core policies' events (retries, breaker changes, failovers).
        name: Prefixes the policies' names in events.

    Safety: GET, HEAD, OPTIONS, PUT, DELETE and TRACE are retried; POST and PATCH only when
    they carry the idempotency header, and otherwise only after errors raised before the
    request was sent (connection refused, connect timeout). A request whose body is a stream
    that cannot be replayed is never resent after it may have been sent; the error's note
    says why. Of a response discarded for a retry or a failover at most 64 KiB are read: a
    shorter body is read to its end, so that its connection is reused; a longer one is
    closed (unread when its Content-Length says so), which closes its connection.

    When every endpoint has failed: after exceptions,
    [`AllEndpointsFailed`][failsafe.http.AllEndpointsFailed] (an `httpx.TransportError`);
    after retryable statuses, the last response is returned (``raise_for_status()`` stays
    the caller's choice). ``response.extensions["failsafe.endpoint"]`` names the endpoint
    that answered and ``response.extensions["failsafe.attempts"]`` counts the attempts.

    Tracing: once a tracing system is installed
    ([`instrument`][failsafe.opentelemetry.instrument]), each attempt is a CLIENT span under
    the caller's current span, and a copy of the request carrying the span's
    ``traceparent`` is sent (see [HTTP client spans](../observe/tracing.md#http-client-spans));
    the URL is recorded without its query string and userinfo.

    Raises:
        ConfigurationError: At construction, on a bad option (an empty endpoint list, a URL
            that is not absolute, zero attempts...); with ``policies``, on a policy the
            transport cannot run (a `Fallback`, a `Failover`, a `Timeout` inside the
            `Retry`, a metrics-only breaker...) or an option also given as an argument,
            naming the policy and why.
        UsageError: With a configured pipeline that 1024 live transports follow already.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        endpoints: Sequence[str] | None = None,
        policies: Pipeline | ConfiguredPipeline | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: Backoff | None = None,
        retry_on: Classifier = RETRYABLE,
        max_retry_after: float = 60.0,
        breakers: KeyedCircuitBreaker | bool = True,
        deadline: float | None = DEFAULT_DEADLINE,
        last_resort: float | None = 1.0,
        idempotency_key: bool = False,
        idempotency_header: str = "Idempotency-Key",
        buffer: bool = True,
        hedging: Hedging | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        listeners: Sequence[Listener] = (),
        name: str = "http",
    ) -> None:
        self._inner = transport if transport is not None else httpx.HTTPTransport()
        self._setup = setup = _Setup(
            policies=policies,
            endpoints=endpoints,
            attempts=attempts,
            backoff=backoff,
            retry_on=retry_on,
            max_retry_after=max_retry_after,
            breakers=breakers,
            deadline=deadline,
            last_resort=last_resort,
            idempotency_key=idempotency_key,
            idempotency_header=idempotency_header,
            clock=clock,
            rng=rng,
            listeners=listeners,
            name=name,
            discard=release,
            hedging=hedging,
        )
        self._buffer = buffer
        self._send = self._inner.handle_request
        # the configured pipeline whose reloads the transport follows (None: never rebuilt)
        self._source = setup.source
        self._bound = self._bind(setup.first, setup.version)

    def _bind(self, resilience: _Resilience, version: object) -> _Bound:
        around = resilience.around
        return _Bound(
            resilience,
            resilience.bind_sync(self._attempt),
            resilience.bind_hedged_sync(self._attempt),
            None if around is None else around._bind_sync(_invoke),
            version,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under the policies; see the class documentation."""
        bound = self._bound
        source = self._source
        if source is not None and source._version is not bound.version:
            bound = self._refresh()  # a reload changed the pipeline: from this request on
        if bound.around is not None:
            return bound.around(self._handle, (request, bound), _NO_KWARGS)  # type: ignore[no-any-return]
        return self._handle(request, bound)

    def _handle(self, request: httpx.Request, bound: _Bound) -> httpx.Response:
        """`handle_request` inside the policies around each request (if any)."""
        resilience = bound.resilience
        call = resilience.start(request)
        run = bound.run
        if bound.hedged is not None and resilience.hedges(request):
            run = bound.hedged
        try:
            response = run(self._send, (request, call), _NO_KWARGS)
        except Exception as exc:
            refused = resilience.last_resort(exc, call)
            tried = None if refused is None else self._last_resort(refused, request, call)
            if isinstance(tried, httpx.Response):
                response = tried
            else:
                outcome = resilience.failed(exc, request, call, tried)
                if outcome is exc:
                    raise
                if isinstance(outcome, BaseException):
                    raise outcome from outcome.__cause__
                response = outcome
        finally:
            if call.target_token is not None:
                _target.reset(call.target_token)
            if call.deadline_token is not None:
                _deadline.reset(call.deadline_token)
        if run is not bound.run:
            resilience.adopt(request, response)
        if self._buffer and not response.is_stream_consumed:
            # a response the attempt left unread, as it might have been discarded, is kept
            self._read(response)
        return response  # type: ignore[no-any-return]

    def _last_resort(
        self, refused: list[str], request: httpx.Request, call: _Call
    ) -> httpx.Response | tuple[str, Exception] | None:
        """Every circuit open: follow one that closed, send the last resort, or wait for it.

        The response, or the endpoint and the error of a failed try, or ``None`` (no last
        resort for this request). See `_Resilience.resort`.
        """
        resilience = call.resilience
        plan = resilience.resort(refused)
        if plan is None:
            return None
        key, breaker, in_flight, sends = plan
        if in_flight is not None:
            if sends:
                try:
                    return self._send_to(key, breaker, request, call)
                finally:
                    resilience.resorted(in_flight)
            in_flight.done.wait(resilience.time_left(call))
            if breaker.state is not CircuitState.CLOSED:
                return None
        return self._send_to(key, breaker, request, call)

    def _send_to(
        self, key: str, breaker: CircuitBreaker, request: httpx.Request, call: _Call
    ) -> httpx.Response | tuple[str, Exception]:
        token = _target.set(key)
        try:
            response = breaker._bind_sync(self._attempt)(self._send, (request, call), _NO_KWARGS)
        except Exception as error:
            return key, error
        finally:
            _target.reset(token)
        response.extensions["failsafe.last_resort"] = True
        return response  # type: ignore[no-any-return]

    @staticmethod
    def _read(response: httpx.Response) -> None:
        try:
            response.read()
        except BaseException:
            response.close()
            raise

    def _attempt(self, send: Any, args: Any, kwargs: object) -> httpx.Response:
        """One attempt, ``send(request)``: the runner innermost in the policies."""
        tracing = _tracing._installed
        if tracing is not None and kwargs is not _TRACED:
            return self._traced_attempt(tracing, send, args)
        request, call = args
        resilience = call.resilience  # the options the request started under
        key = resilience.aim(request, call)
        try:
            response = send(request)
            response.request = request
            keep = self._buffer and resilience.kept(response, request)
            if keep:  # the whole body (which releases the connection), under the deadline
                if call.at is None:
                    try:
                        response.read()
                    except BaseException:
                        response.close()
                        raise
                else:
                    read(response, call, request)
            elif call.at is not None and not response.is_closed:
                # read later, by `release`, by `handle_request` or by the caller: each chunk
                # checks the deadline
                response.stream = _DeadlineStream(response.stream, call, request)
        except Exception as exc:
            if call.at is not None and call.cut(exc, request):
                late = call.exceeded(request)  # the timeout the deadline shortened fired
                resilience.attempted(call, key, request, None, late)
                raise late from exc
            resilience.attempted(call, key, request, None, exc)
            raise
        # what `attempted` does, inlined for the common case
        extensions = response.extensions
        extensions["failsafe.endpoint"] = key
        extensions["failsafe.attempts"] = call.total
        if resilience.listeners or _events._global:
            resilience.attempted(call, key, request, response, None)
        return response  # type: ignore[no-any-return]

    def _traced_attempt(
        self, tracing: _tracing.Tracing, send: Any, args: tuple[httpx.Request, _Call]
    ) -> httpx.Response:
        """`_attempt` in a CLIENT span, from the sending to the body's end (tracing installed).

        The span starts once the request is aimed at its endpoint (an attempt that the
        deadline stops before sending has none) and its copy carries the span's
        ``traceparent``.
        """
        call = args[1]
        scope: contextlib.AbstractContextManager[_tracing.Span] | None = None
        span: _tracing.Span | None = None

        def traced_send(request: httpx.Request) -> httpx.Response:
            nonlocal scope, span
            scope = _client_span(tracing, request, call)
            span = scope.__enter__()
            return send(_with_context(tracing, request))  # type: ignore[no-any-return]

        try:
            response = self._attempt(traced_send, args, _TRACED)
        except BaseException as exc:
            if scope is not None:
                scope.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if scope is not None:
            assert span is not None
            call.resilience.answered(span, response)
            scope.__exit__(None, None, None)
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()

    def __repr__(self) -> str:
        return f"<ResilientTransport: {self._resilience.describe()}>"


class AsyncResilientTransport(_Follows, httpx.AsyncBaseTransport):
    """The asyncio twin of [`ResilientTransport`][failsafe.http.ResilientTransport].

    Use it as ``httpx.AsyncClient(transport=AsyncResilientTransport(endpoints=[...]))``. It
    takes the same options, with the same defaults and safety rules, as
    [`ResilientTransport`][failsafe.http.ResilientTransport]; ``transport`` is an
    `httpx.AsyncBaseTransport` (default: `httpx.AsyncHTTPTransport`).
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        endpoints: Sequence[str] | None = None,
        policies: Pipeline | ConfiguredPipeline | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: Backoff | None = None,
        retry_on: Classifier = RETRYABLE,
        max_retry_after: float = 60.0,
        breakers: KeyedCircuitBreaker | bool = True,
        deadline: float | None = DEFAULT_DEADLINE,
        last_resort: float | None = 1.0,
        idempotency_key: bool = False,
        idempotency_header: str = "Idempotency-Key",
        buffer: bool = True,
        hedging: Hedging | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        listeners: Sequence[Listener] = (),
        name: str = "http",
    ) -> None:
        self._inner = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._setup = setup = _Setup(
            policies=policies,
            endpoints=endpoints,
            attempts=attempts,
            backoff=backoff,
            retry_on=retry_on,
            max_retry_after=max_retry_after,
            breakers=breakers,
            deadline=deadline,
            last_resort=last_resort,
            idempotency_key=idempotency_key,
            idempotency_header=idempotency_header,
            clock=clock,
            rng=rng,
            listeners=listeners,
            name=name,
            discard=release_async,
            hedging=hedging,
        )
        self._buffer = buffer
        self._send = self._inner.handle_async_request
        # the configured pipeline whose reloads the transport follows (None: never rebuilt)
        self._source = setup.source
        self._bound = self._bind(setup.first, setup.version)

    def _bind(self, resilience: _Resilience, version: object) -> _Bound:
        around = resilience.around
        return _Bound(
            resilience,
            resilience.bind_async(self._attempt),
            resilience.bind_hedged_async(self._attempt),
            None if around is None else around._bind_async(_invoke_async),
            version,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under the policies; see the class documentation."""
        bound = self._bound
        source = self._source
        if source is not None and source._version is not bound.version:
            bound = self._refresh()  # a reload changed the pipeline: from this request on
        if bound.around is not None:
            return await bound.around(self._handle, (request, bound), _NO_KWARGS)  # type: ignore[no-any-return]
        return await self._handle(request, bound)

    async def _handle(self, request: httpx.Request, bound: _Bound) -> httpx.Response:
        """`handle_async_request` inside the policies around each request (if any)."""
        resilience = bound.resilience
        call = resilience.start(request)
        run = bound.run
        if bound.hedged is not None and resilience.hedges(request):
            run = bound.hedged
        try:
            response = await run(self._send, (request, call), _NO_KWARGS)
        except Exception as exc:
            refused = resilience.last_resort(exc, call)
            tried = None if refused is None else await self._last_resort(refused, request, call)
            if isinstance(tried, httpx.Response):
                response = tried
            else:
                outcome = resilience.failed(exc, request, call, tried)
                if outcome is exc:
                    raise
                if isinstance(outcome, BaseException):
                    raise outcome from outcome.__cause__
                response = outcome
        finally:
            if call.target_token is not None:
                _target.reset(call.target_token)
            if call.deadline_token is not None:
                _deadline.reset(call.deadline_token)
        if run is not bound.run:
            resilience.adopt(request, response)
        if self._buffer and not response.is_stream_consumed:
            # a response the attempt left unread, as it might have been discarded, is kept
            await self._read(response)
        return response  # type: ignore[no-any-return]

    async def _last_resort(
        self, refused: list[str], request: httpx.Request, call: _Call
    ) -> httpx.Response | tuple[str, Exception] | None:
        """The asyncio twin of `ResilientTransport._last_resort`."""
        resilience = call.resilience
        loop = asyncio.get_running_loop()
        plan = resilience.resort(refused, loop)
        if plan is None:
            return None
        key, breaker, in_flight, sends = plan
        if in_flight is not None:
            if sends:
                try:
                    return await self._send_to(key, breaker, request, call)
                finally:
                    resilience.resorted(in_flight)
            if in_flight.loop is not loop or in_flight.loop_done is None:
                return None  # sent from another event loop: nothing to wait on here
            try:
                await asyncio.wait_for(in_flight.loop_done.wait(), resilience.time_left(call))
            except TimeoutError:
                return None
            if breaker.state is not CircuitState.CLOSED:
                return None
        return await self._send_to(key, breaker, request, call)

    async def _send_to(
        self, key: str, breaker: CircuitBreaker, request: httpx.Request, call: _Call
    ) -> httpx.Response | tuple[str, Exception]:
        token = _target.set(key)
        try:
            response = await breaker._bind_async(self._attempt)(
                self._send, (request, call), _NO_KWARGS
            )
        except Exception as error:
            return key, error
        finally:
            _target.reset(token)
        response.extensions["failsafe.last_resort"] = True
        return response  # type: ignore[no-any-return]

    @staticmethod
    async def _read(response: httpx.Response) -> None:
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise

    async def _attempt(self, send: Any, args: Any, kwargs: object) -> httpx.Response:
        """One attempt, ``await send(request)``: the runner innermost in the policies."""
        tracing = _tracing._installed
        if tracing is not None and kwargs is not _TRACED:
            return await self._traced_attempt(tracing, send, args)
        request, call = args
        resilience = call.resilience  # the options the request started under
        key = resilience.aim(request, call)
        try:
            response = await send(request)
            response.request = request
            keep = self._buffer and resilience.kept(response, request)
            if keep:  # the whole body (which releases the connection), under the deadline
                if call.at is None:
                    try:
                        await response.aread()
                    except BaseException:
                        await response.aclose()
                        raise
                else:
                    await aread(response, call, request)
            elif call.at is not None and not response.is_closed:
                # read later, by `release`, by `handle_request` or by the caller: each chunk
                # checks the deadline
                response.stream = _AsyncDeadlineStream(response.stream, call, request)
        except Exception as exc:
            if call.at is not None and call.cut(exc, request):
                late = call.exceeded(request)  # the timeout the deadline shortened fired
                resilience.attempted(call, key, request, None, late)
                raise late from exc
            resilience.attempted(call, key, request, None, exc)
            raise
        # what `attempted` does, inlined for the common case
        extensions = response.extensions
        extensions["failsafe.endpoint"] = key
        extensions["failsafe.attempts"] = call.total
        if resilience.listeners or _events._global:
            resilience.attempted(call, key, request, response, None)
        return response  # type: ignore[no-any-return]

    async def _traced_attempt(
        self, tracing: _tracing.Tracing, send: Any, args: tuple[httpx.Request, _Call]
    ) -> httpx.Response:
        """The asyncio twin of `ResilientTransport._traced_attempt`."""
        call = args[1]
        scope: contextlib.AbstractContextManager[_tracing.Span] | None = None
        span: _tracing.Span | None = None

        async def traced_send(request: httpx.Request) -> httpx.Response:
            nonlocal scope, span
            scope = _client_span(tracing, request, call)
            span = scope.__enter__()
            return await send(_with_context(tracing, request))  # type: ignore[no-any-return]

        try:
            response = await self._attempt(traced_send, args, _TRACED)
        except BaseException as exc:
            if scope is not None:
                scope.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if scope is not None:
            assert span is not None
            call.resilience.answered(span, response)
            scope.__exit__(None, None, None)
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()

    def __repr__(self) -> str:
        return f"<AsyncResilientTransport: {self._resilience.describe()}>"
