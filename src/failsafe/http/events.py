"""Events of failsafe's HTTP transports (the core policies' events are emitted too)."""

from __future__ import annotations

import attrs

from failsafe.events import Event

__all__ = ["HttpAttempt"]


@attrs.frozen(kw_only=True)
class HttpAttempt(Event):
    """One request was sent to one endpoint (emitted for every attempt, failed or not).

    Attributes:
        endpoint: The endpoint's base URL (the request's origin when no endpoints are set).
        attempt: The attempt's number on this endpoint, from 1.
        method: The request method.
        url: The URL actually requested.
        status_code: The response status, or ``None`` when the attempt raised.
        error: The exception raised, or ``None`` when a response arrived.
    """

    endpoint: str
    attempt: int
    method: str
    url: str
    status_code: int | None
    error: BaseException | None
