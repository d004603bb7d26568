"""Alerts: tell a webhook when a failure group appears, grows past a size, or needs a person.

The service watches its own store (it never slows a report down): each round of the retry
worker, `Alerts.run_once` looks for

- a **new failure group** (a fingerprint first seen after the alerts started),
- a group whose open records **cross a threshold** (100, 1,000 and 10,000 by default),
- a record the retry worker **escalated to review** (its automatic attempts ran out),

and queues one alert for each in the store (an outbox: an alert is queued once, by its key,
and survives a restart or a ``kill -9``), then POSTs the queued alerts to the webhook as
JSON. A delivery that fails (no answer in 5 s, or not 2xx) is tried again with exponential
backoff (5 s, doubling, at most an hour), as long as it takes; the review pages say when
alerts are failing. The webhook's URL is given when the service starts, never over HTTP.

```json
{"event": "group_grew", "text": "stock.decrement · OperationalError: 1,000 open records",
 "threshold": 1000, "group": {"fingerprint": "v1-953b1dacf7eee3db", "open": 1012, ...}}
```
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from failsafe.backoff import Backoff
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import ErrorRecord
from failsafe.errors.store import Group, GroupQuery
from failsafe.exceptions import ConfigurationError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ALERT_BACKOFF",
    "ALERT_THRESHOLDS",
    "ALERT_TIMEOUT",
    "ALERTS_PER_ROUND",
    "AlertStatus",
    "Alerts",
]

_log = logging.getLogger("failsafe.errors.alerts")

ALERT_THRESHOLDS: Final = (100, 1_000, 10_000)
"""Open records of a group at which an alert says the group grew (each crossed once)."""

ALERT_BACKOFF: Final = Backoff.exponential(5.0, maximum=3600.0, jitter="full")
"""How long a failed alert waits before it is sent again (5 s, doubling, at most 1 h)."""

ALERT_TIMEOUT: Final = 5.0
"""Seconds a delivery may take before it counts as failed."""

ALERTS_PER_ROUND: Final = 50
"""Alerts one round sends at most, and groups it looks at for each kind of event."""


class AlertStatus:
    """Alerts not delivered yet: how many, how many failed, and the last error."""

    def __init__(self, waiting: int, failing: int, last_error: str | None) -> None:
        self.waiting = waiting
        self.failing = failing
        self.last_error = last_error

    def __repr__(self) -> str:
        return f"AlertStatus(waiting={self.waiting}, failing={self.failing})"


class Alerts:
    """Queues alerts for what a person should hear about, and sends them to a webhook.

    Args:
        desk: Whose store is watched (and holds the alerts queued).
        url: The webhook: an absolute ``http://`` or ``https://`` URL, given at start.
        thresholds: Open records of a group at which it is said to have grown.
        http: The client to send with (default: one of its own, `ALERT_TIMEOUT`).
        rng: Randomness for the backoff's jitter.

    Raises:
        ConfigurationError: If ``url`` is not an absolute http(s) URL, a threshold is not
            a positive integer, or the store cannot hold alerts (the stores of this
            package can).
    """

    def __init__(
        self,
        desk: ErrorDesk,
        url: str,
        *,
        thresholds: Sequence[int] = ALERT_THRESHOLDS,
        http: httpx.Client | None = None,
        rng: random.Random | None = None,
    ) -> None:
        from failsafe.errors.record import InvalidReport
        from failsafe.errors.worker import _check_url

        try:
            _check_url(url)
        except InvalidReport as exc:
            raise ConfigurationError("alert_url", exc.problem) from None
        chosen = sorted(set(thresholds))
        if not chosen or any(
            not isinstance(t, int) or isinstance(t, bool) or t < 1 for t in chosen
        ):
            raise ConfigurationError(
                "thresholds", f"must be positive integers, got {list(thresholds)!r}"
            )
        if not hasattr(desk.store, "alert_add"):
            raise ConfigurationError("desk", f"the store {desk.store!r} cannot hold alerts")
        self.desk = desk
        self.url = url
        self.thresholds = tuple(chosen)
        self._store: Any = desk.store
        self._http = http
        self._owns_http = http is None
        self._rng = rng if rng is not None else random.Random()

    # -- what to say ------------------------------------------------------------------------
    def _queue(self, key: str, event: dict[str, Any]) -> bool:
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        return bool(self._store.alert_add(key, body, now=self.desk.clock.time()))

    def scan(self) -> int:
        """Queue an alert for each new group and each threshold a group crossed; how many."""
        since = float(self._store.alert_since(now=self.desk.clock.time()))
        queued = 0
        newest = self.desk.store.groups(GroupQuery(order="newest", limit=ALERTS_PER_ROUND))
        for group in newest.groups:
            if group.first_seen >= since and self._queue(
                f"new:{group.fingerprint}", _event("group_new", group)
            ):
                queued += 1
        largest = self.desk.store.groups(GroupQuery(order="largest", limit=ALERTS_PER_ROUND))
        for group in largest.groups:
            for threshold in self.thresholds:
                if group.open >= threshold and self._queue(
                    f"grew:{group.fingerprint}:{threshold}",
                    _event("group_grew", group, threshold=threshold),
                ):
                    queued += 1
        return queued

    def escalated(self, record: ErrorRecord) -> None:
        """Queue an alert: ``record``'s automatic attempts ran out; a person must look."""
        attempts = len(record.attempts)
        text = (
            f"{record.kind} · {record.error_type or 'no error type'}: record {record.id[:12]}"
            f" needs review after {attempts} automatic attempt{'s' * (attempts != 1)}"
        )
        event = {
            "event": "needs_review",
            "text": text,
            "record": {
                "id": record.id,
                "kind": record.kind,
                "source": record.source,
                "fingerprint": record.fingerprint,
                "error_type": record.error_type,
                "attempts": attempts,
            },
        }
        self._queue(f"review:{record.id}:{attempts}", event)

    # -- sending ----------------------------------------------------------------------------
    def deliver(self) -> int:
        """Send the alerts that are due (at most `ALERTS_PER_ROUND`); how many got through."""
        now = self.desk.clock.time()
        sent = 0
        for key, body, attempts in self._store.alerts_due(now=now, limit=ALERTS_PER_ROUND):
            problem = self._send(body)
            if problem is None:
                self._store.alert_sent(key, now=self.desk.clock.time())
                sent += 1
                continue
            wait = ALERT_BACKOFF.delay(attempts + 1, 0.0, self._rng)
            self._store.alert_failed(key, error=problem, next_at=self.desk.clock.time() + wait)
            if attempts == 0:  # said once per alert, not at every try
                _log.warning("alert %s could not be sent to the webhook: %s", key, problem)
        return sent

    def _send(self, body: str) -> str | None:
        """POST one alert; ``None`` when it got through, else what went wrong."""
        import httpx

        try:
            response = self._client().post(
                self.url, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if response.is_success:
            return None
        return f"HTTP {response.status_code}"

    def _client(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=ALERT_TIMEOUT)
        return self._http

    def run_once(self) -> int:
        """One round: `scan`, then `deliver`; returns how many alerts got through."""
        self.scan()
        return self.deliver()

    def status(self) -> AlertStatus:
        """What waits to be sent, what failed, and the last error (for the review pages)."""
        waiting, failing, last = self._store.alerts_waiting()
        return AlertStatus(waiting, failing, last)

    def close(self) -> None:
        """Close the HTTP client it made."""
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None


def _event(name: str, group: Group, *, threshold: int | None = None) -> dict[str, Any]:
    title = f"{group.kind} · {group.error_type or 'no error type'}"
    if name == "group_new":
        text = f"new failure: {title}: {group.title or '(no message)'}"
    else:
        text = f"{title}: {threshold:,} open records"
    event: dict[str, Any] = {"event": name, "text": text, "group": group.to_json()}
    if threshold is not None:
        event["threshold"] = threshold
    return event
