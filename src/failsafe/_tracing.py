"""The seam between failsafe's I/O edges and a tracing system (none unless one is installed).

The core imports no tracing library. ``failsafe.opentelemetry.instrument()`` installs a
`Tracing` here; the HTTP transports, the queue consumers and publishers, the error client,
service and worker ask `installed()` and, when it returns ``None`` (the default), do nothing
at all: no span, no header, no cost beyond one global read.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Protocol

__all__: list[str] = []

#: The span kinds failsafe starts.
SpanKind = str  # "client", "server", "producer", "consumer", "internal"

#: Attribute values a span accepts.
Value = str | bool | int | float


class Span(Protocol):
    """What failsafe does with a span it started."""

    def set(self, key: str, value: Value, /) -> None:
        """Set one attribute."""
        ...

    def failed(self, error: BaseException | str, /) -> None:
        """Mark the span as failed: ``error.type`` and an error status.

        An exception is recorded by its qualified type name (never its message, which may
        hold secrets); a string (``"500"``) is used as ``error.type`` as it is.
        """
        ...


class Tracing(Protocol):
    """A tracing system, as failsafe's I/O edges use it."""

    def span(
        self,
        name: str,
        *,
        kind: SpanKind,
        attributes: Mapping[str, Value],
        carrier: Mapping[str, str] | None = None,
    ) -> AbstractContextManager[Span]:
        """Start a span, current until the block ends.

        With ``carrier`` (message or request headers holding a W3C ``traceparent``), the span
        continues the trace the carrier names; without one, it is a child of the current span.
        An exception leaving the block marks the span as failed and passes through.
        """
        ...

    def inject(self, carrier: MutableMapping[str, str], /) -> None:
        """Write the current span's context (``traceparent``, ``tracestate``) into headers."""
        ...

    def current_ids(self) -> tuple[str, str] | None:
        """The current span's trace id and span id (hex), or ``None`` outside any span."""
        ...


_installed: Tracing | None = None


def installed() -> Tracing | None:
    """The installed tracing system, or ``None``."""
    return _installed


def install(tracing: Tracing | None) -> Tracing | None:
    """Install ``tracing`` (``None``: remove it); return the one it replaces."""
    global _installed
    previous, _installed = _installed, tracing
    return previous


def traceparent(trace_id: str, span_id: str) -> dict[str, str]:
    """A carrier naming a stored span as the parent (W3C ``traceparent``, sampled)."""
    return {"traceparent": f"00-{trace_id}-{span_id}-01"}
