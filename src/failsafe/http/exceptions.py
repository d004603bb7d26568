"""Exceptions of failsafe's HTTP transports, within httpx's own tree.

``except httpx.HTTPError`` keeps catching everything a resilient client raises::

    httpx.TransportError
    ├── AllEndpointsFailed (also failsafe.FailsafeError)    .failures, one per endpoint
    └── httpx.TimeoutException
        └── DeadlineExceeded (also failsafe.TimeoutExceeded) the transport's total deadline
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
    """The transport's total deadline passed before a response arrived.

    Also a `TimeoutError` and an `httpx.TimeoutException`.
    """

    def __init__(self, timeout: float, request: httpx.Request) -> None:
        TimeoutExceeded.__init__(self, timeout)
        self._request = request
        self.args = (f"no response within the total deadline of {timeout:g}s",)
