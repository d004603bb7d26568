"""Exceptions of failsafe's HTTP transports, within httpx's own tree.

``except httpx.HTTPError`` keeps catching everything a resilient client raises:

```text
httpx.TransportError
├── AllEndpointsFailed (also failsafe.FailsafeError)    .failures, one per endpoint
└── httpx.TimeoutException
    └── DeadlineExceeded (also failsafe.TimeoutExceeded) the request's deadline passed
```
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from failsafe.exceptions import FailsafeError, TimeoutExceeded

__all__ = ["AllEndpointsFailed", "DeadlineExceeded", "EndpointFailure"]


class EndpointFailure:
    """What happened on one endpoint: how many attempts, and the last error or status.

    Attributes:
        endpoint: The endpoint's base URL, as configured.
        attempts: Requests sent to it (0 when its circuit was open).
        error: The last exception (an httpx error, or `CircuitOpenError`), if it raised.
        status_code: The last response's status, if it answered.
    """

    __slots__ = ("attempts", "endpoint", "error", "status_code")

    def __init__(
        self,
        endpoint: str,
        attempts: int,
        error: BaseException | None,
        status_code: int | None,
    ) -> None:
        self.endpoint = endpoint
        self.attempts = attempts
        self.error = error
        self.status_code = status_code

    def describe(self) -> str:
        """Say in words what happened on this endpoint."""
        last = f"{self.error!r}" if self.error is not None else f"HTTP {self.status_code}"
        return f"{self.endpoint}: {self.attempts} attempt(s), last {last}"

    def __repr__(self) -> str:
        return f"EndpointFailure({self.describe()})"


class AllEndpointsFailed(httpx.TransportError, FailsafeError):
    """Every endpoint failed with an exception (or had its circuit open).

    A subclass of `httpx.TransportError`, so ``except httpx.HTTPError`` still catches it.
    The last endpoint's exception is the ``__cause__``.

    Attributes:
        failures: One [`EndpointFailure`][failsafe.http.EndpointFailure] per endpoint, in order.
    """

    def __init__(self, failures: Sequence[EndpointFailure], request: httpx.Request) -> None:
        self.failures = tuple(failures)
        parts = "; ".join(f.describe() for f in self.failures)
        super().__init__(f"all {len(self.failures)} endpoints failed: {parts}", request=request)


class DeadlineExceeded(TimeoutExceeded, httpx.TimeoutException):
    """The request's deadline passed before its response was complete.

    The deadline is the transport's own ``deadline=`` or, when it is earlier, an enclosing
    one (a [`Timeout`][failsafe.Timeout] around the call, whose deadline the
    [call context][failsafe.current_context] holds). Raised before an attempt
    when no time is left, when an attempt's connect, read, write or pool timeout that the
    deadline had shortened fires, and when the deadline passes while the body is read
    (by the transport, or by the caller with ``buffer=False``).

    Also a `TimeoutError`, a [`TimeoutExceeded`][failsafe.TimeoutExceeded] and an
    `httpx.TimeoutException`. The transport neither retries it nor counts it against the
    endpoint's circuit.

    Attributes:
        timeout: The seconds the request was given: the transport's ``deadline``, or the
            time an enclosing deadline had left when the request started.
        enclosing: ``True`` when the enclosing deadline was the earlier one.
    """

    def __init__(self, timeout: float, request: httpx.Request, *, enclosing: bool = False) -> None:
        TimeoutExceeded.__init__(self, timeout)
        self._request = request
        self.enclosing = enclosing
        if enclosing:
            message = (
                f"no complete response within the {timeout:.3g}s an enclosing deadline "
                "(a failsafe Timeout around the call) left the request"
            )
        else:
            message = f"no complete response within the total deadline of {timeout:g}s"
        self.args = (message,)
