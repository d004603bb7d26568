"""The demo: the payment flow, step by step, against the real processes.

`run_demo` starts every service (`runner.Supervisor`, fast settings), then plays:

1. a normal payment: the order is Paid within a second; a redelivered copy of the message
   changes nothing, and a late status never moves an order back;
2. the Order service down: the payments are still accepted, the messages wait in the DLQ and
   come back every ``redelivery_delay`` seconds; once it is back they are applied, once;
3. the status write failing: the Order service reports it, and the Error-handling service
   retries the write by itself until the order is Paid;
4. an unknown order: a review record; a person finds the order and sends the record back for
   a retry, which applies the status and resolves the record;
5. the trace of step 3's payment (the run is traced: ``traces`` on), from the site through
   the Payment service, the queue, the Status consumer, the Order service and the
   Error-handling service's later retry, printed as a tree (`examples._support.traces`).

Step 2 also reads the Status consumer's ``/health`` (`failsafe.health`): its circuit to the
Order service opens while the Order service is down and closes once it is back.

It prints what really happened and returns 0 only if every step behaved as described (the
payment flow's steps are listed in the example's README).
`Flow` is the demo's (and the tests') client of a running set of services.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from examples._support.traces import Span, read_spans, tree
from examples.payment_flow.db import OrdersDB
from examples.payment_flow.domain import PAID, RESERVED, status_message
from examples.payment_flow.runner import Supervisor
from examples.payment_flow.settings import Settings
from examples.payment_flow.wiring import (
    POLICIES,
    RETRY_KIND,
    RETRY_PATH,
    REVIEW_KIND,
    blocking_broker,
)
from failsafe.queue import Broker, DeadLetter, Envelope, Place

if TYPE_CHECKING:
    from examples._support.telemetry import Site

__all__ = ["Flow", "run_demo"]

T = TypeVar("T")


class Flow:
    """A client of a running payment flow: pay, read orders, error records, the queue.

    With the settings' ``traces`` on, each payment is the root span of a trace (the site's,
    written to ``traces/site.jsonl``), whose id `payment_traces` keeps per order.

    Args:
        settings: The running services' settings (``Supervisor.settings``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = httpx.Client(timeout=30.0)
        self.site: Site | None = None
        if settings.traces:  # the OpenTelemetry SDK is needed only then
            from examples._support.telemetry import Site

            self.site = Site(settings)
        self.payment_traces: dict[str, str] = {}
        """The trace id of each order's latest payment (with ``traces`` on)."""
        token = os.environ.get("FAILSAFE_ERRORS_REVIEW_TOKEN")
        self.review_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._broker: Broker | None = None
        self._db: OrdersDB | None = None

    def close(self) -> None:
        """Close the clients (and the site's trace file)."""
        self.http.close()
        if self.site is not None:
            self.site.close()
        if self._broker is not None:
            self._broker.close()
        if self._db is not None:
            self._db.close()

    @property
    def broker(self) -> Broker:
        """The run's broker, opened on first use."""
        if self._broker is None:
            self._broker = blocking_broker(self.settings)
        return self._broker

    @property
    def db(self) -> OrdersDB:
        """The Orders database, opened directly (it is readable while the service is down)."""
        if self._db is None:
            self._db = OrdersDB.open(self.settings)
        return self._db

    # -- the services ----------------------------------------------------------------------
    def add_orders(self, *order_ids: str) -> None:
        """Create orders in status ``reserved`` through the Order service."""
        response = self.http.post(
            f"{self.settings.url('order')}/orders", json={"orders": list(order_ids)}
        )
        response.raise_for_status()

    def pay(self, order_id: str, amount: float = 25.0, *, key: str | None = None) -> httpx.Response:
        """``POST /payments`` on the Payment service (the root span of a trace, if traced)."""
        headers = {"Idempotency-Key": key} if key else {}
        if self.site is None:
            return self._pay(order_id, amount, headers)
        with self.site.request("pay", order=order_id) as request:
            response = self._pay(order_id, amount, {**headers, **request.headers})
            request.answered(response.status_code)
        if request.trace_id is not None:
            self.payment_traces[order_id] = request.trace_id
        return response

    def _pay(self, order_id: str, amount: float, headers: dict[str, str]) -> httpx.Response:
        return self.http.post(
            f"{self.settings.url('payment')}/payments",
            json={"orderId": order_id, "amount": amount},
            headers=headers,
        )

    def health(self, service: str) -> dict[str, Any]:
        """Service ``service``'s ``GET /health``: its failsafe policies, right now."""
        response = self.http.get(f"{self.settings.url(service)}/health")
        response.raise_for_status()
        snapshot: dict[str, Any] = response.json()
        return snapshot

    def set_status(self, order_id: str, status: str, message_id: str) -> httpx.Response:
        """``PUT /orders/{orderId}/status`` directly on the Order service."""
        return self.http.put(
            f"{self.settings.url('order')}/orders/{order_id}/status",
            json={"status": status},
            headers={"Idempotency-Key": message_id},
        )

    def order(self, order_id: str) -> dict[str, Any] | None:
        """The order with its history, read from the Orders database."""
        return self.db.get(order_id)

    def faults(self, service: str, **switches: Any) -> dict[str, Any]:
        """Flip fault switches on ``service`` (none: clear them all)."""
        url = f"{self.settings.url(service)}/_faults"
        response = self.http.post(url, json=switches) if switches else self.http.delete(url)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def stats(self) -> dict[str, int]:
        """The Status consumer's events so far, counted by type."""
        response = self.http.get(f"{self.settings.url('consumer')}/stats")
        response.raise_for_status()
        counts: dict[str, int] = response.json()
        return counts

    def records(self, *, kind: str | None = None, text: str | None = None) -> list[dict[str, Any]]:
        """Error records (every status), newest first."""
        params: dict[str, Any] = {"limit": 500}
        if kind:
            params["kind"] = kind
        if text:
            params["q"] = text
        found: list[dict[str, Any]] = []
        while True:
            params["offset"] = len(found)
            response = self.http.get(
                f"{self.settings.url('errors')}/v1/records",
                params=params,
                headers=self.review_headers,
            )
            response.raise_for_status()
            page = response.json()
            found.extend(page["records"])
            if len(found) >= page["total"] or not page["records"]:
                return found

    def record(self, record_id: str) -> dict[str, Any]:
        """One error record."""
        response = self.http.get(
            f"{self.settings.url('errors')}/v1/records/{record_id}", headers=self.review_headers
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def act(self, record_id: str, action: str, *, actor: str, note: str) -> dict[str, Any]:
        """A person's ``resolve``, ``retry`` or ``discard`` of a record."""
        response = self.http.post(
            f"{self.settings.url('errors')}/v1/records/{record_id}/{action}",
            json={"actor": actor, "note": note},
            headers=self.review_headers,
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def dlq(self, place: Place | None = None) -> list[DeadLetter]:
        """The messages in the DLQ and the parking queue (on RabbitMQ: parked ones only)."""
        return self.broker.dead_letters(self.settings.queue, place=place)

    def publish_copy(self, message_id: str, order_id: str, status: str = PAID) -> None:
        """Publish a message as a redelivery would hand it out again: the same id and body."""
        self.broker.publish(
            self.settings.queue,
            Envelope(body=status_message(order_id, status), id=message_id),
        )

    # -- waiting ---------------------------------------------------------------------------
    @staticmethod
    def wait_for(what: str, check: Callable[[], T | None], timeout: float = 20.0) -> T:
        """Poll ``check`` until it returns something truthy; return it.

        Raises:
            TimeoutError: After ``timeout`` seconds, naming ``what``.
        """
        pause = threading.Event()
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s")
            pause.wait(0.02)

    def wait_status(self, order_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until order ``order_id`` has ``status``; return it."""

        def check() -> dict[str, Any] | None:
            order = self.order(order_id)
            return order if order is not None and order["status"] == status else None

        return self.wait_for(f"order {order_id} {status}", check, timeout)

    def wait_record(
        self, kind: str, text: str, statuses: tuple[str, ...], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Wait until a record of ``kind`` mentioning ``text`` has one of ``statuses``."""

        def check() -> dict[str, Any] | None:
            for record in self.records(kind=kind, text=text):
                if record["status"] in statuses:
                    return record
            return None

        return self.wait_for(f"a {kind} record for {text} ({'/'.join(statuses)})", check, timeout)

    def wait_events(self, event: str, at_least: int, timeout: float = 20.0) -> int:
        """Wait until the consumer counted ``at_least`` events of type ``event``."""
        return self.wait_for(
            f"{at_least} {event}",
            lambda: (n := self.stats().get(event, 0)) >= at_least and n,
            timeout,
        )


def _transitions(order: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(h["from"], h["to"]) for h in (order or {}).get("history", [])]


class _Demo:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.failures = 0

    def check(self, ok: bool, text: str) -> None:
        print(f"   {'ok  ' if ok else 'FAIL'} {text}")
        if not ok:
            self.failures += 1

    def normal_payment(self) -> None:
        flow = self.flow
        print("\n1. A normal payment (payment flow steps 1, 2 and 4)")
        handled = flow.stats().get("MessageHandled", 0)
        started = time.monotonic()
        answer = flow.pay("o-1001", 49.90)
        self.check(answer.status_code == 202, f"POST /payments o-1001: {answer.status_code}")
        order: dict[str, Any] | None = flow.wait_status("o-1001", PAID, timeout=10)
        took = time.monotonic() - started
        self.check(took <= 1.0, f"o-1001 is Paid {took * 1000:.0f} ms after the payment")
        self.check(_transitions(order) == [(RESERVED, PAID)], "its history: one reserved -> paid")
        message_id = answer.json()["messageId"]
        flow.publish_copy(message_id, "o-1001")
        flow.wait_events("MessageHandled", handled + 2)
        order = flow.order("o-1001")
        self.check(
            _transitions(order) == [(RESERVED, PAID)],
            "the same message delivered again: handled, and still one transition",
        )
        shipped = flow.set_status("o-1001", "shipped", "warehouse-ship-o-1001")
        flow.publish_copy("late-paid-o-1001", "o-1001")
        flow.wait_events("MessageHandled", handled + 3)
        order = flow.order("o-1001")
        self.check(
            shipped.status_code == 200 and order is not None and order["status"] == "shipped",
            "a late 'paid' after 'shipped' is stale: the order stays shipped",
        )

    def order_service_down(self) -> None:
        flow, settings = self.flow, self.flow.settings
        delay = settings.redelivery_delay
        print(f"\n2. The Order service is down (payment flow step 3; DLQ every {delay:g} s)")
        supervisor = self.supervisor
        self.check(self.consumer_health() == "closed", "the consumer's circuit to it is closed")
        supervisor.kill("order")
        print("   the Order service was killed (kill -9)")
        before = flow.stats().get("RedeliveryScheduled", 0)
        answers = [flow.pay(order, 15.0) for order in ("o-1002", "o-1003")]
        self.check(
            all(a.status_code == 202 for a in answers),
            "payments for o-1002 and o-1003 still accepted (202): the queue holds the change",
        )
        flow.wait_events("RedeliveryScheduled", before + 2)
        if settings.rabbitmq:
            print("   both messages went to the DLQ (RabbitMQ TTL delay queue)")
        else:
            for dead in flow.dlq(Place.DELAYED):
                error = dead.message.last_error
                due = (dead.due_at or 0) - time.time()
                print(
                    f"   in the DLQ: {dead.message.json()} due in {due:.1f} s"
                    f" (last error: {error.type if error else '?'})"
                )
        flow.wait_events("RedeliveryScheduled", before + 4)
        statuses = [(flow.order(o) or {}).get("status") for o in ("o-1002", "o-1003")]
        self.check(
            statuses == [RESERVED, RESERVED],
            "redelivered from the DLQ, the Order service still down: back to the DLQ, "
            "orders still reserved",
        )
        self.check(
            self.consumer_health() != "closed",
            "the consumer's circuit to the Order service is not closed",
        )
        supervisor.start(["order"])
        back = time.monotonic()
        print("   the Order service is back")
        for order_id in ("o-1002", "o-1003"):
            order = flow.wait_status(order_id, PAID, timeout=settings.redelivery_delay * 3 + 10)
            self.check(
                _transitions(order) == [(RESERVED, PAID)],
                f"{order_id} Paid {time.monotonic() - back:.1f} s after it came back, "
                "with one reserved -> paid",
            )
        self.check(self.consumer_health() == "closed", "the consumer's circuit is closed again")

    def consumer_health(self) -> str:
        """GET the Status consumer's ``/health``; print it, return its circuit's state.

        The consumer's client has one keyed breaker, ``order-breaker``, keyed by the Order
        service's address; the snapshot lists its keys that are not closed (an open one
        whose open period is over admits a probe with the next call).
        """
        snapshot = self.flow.health("consumer")
        entries = {entry["name"]: entry for entry in snapshot["entries"]}
        consumer = entries["status-consumer"]
        breaker = entries["order-breaker"]
        order = self.flow.settings.url("order")
        keys = [k for k in breaker["open_keys"] if k["key"].rstrip("/") == order]
        state = keys[0]["state"] if keys else "closed"
        wait = f", probe in {keys[0]['retry_after']:.1f} s" if keys and state == "open" else ""
        print(
            f"   consumer GET /health: {snapshot['status']}; status-consumer"
            f" {consumer['state']}, {consumer['in_flight']} in flight, DLQ depth"
            f" {consumer['dlq_depth']}; order-breaker: {state}{wait}"
        )
        return str(state)

    def write_fails(self) -> None:
        flow = self.flow
        print("\n3. The status write fails (payment flow step 5)")
        flow.faults("order", fail_writes=3)
        print("   the Orders database will refuse the next 3 writes")
        answer = flow.pay("o-1004", 120.0)
        self.check(answer.status_code == 202, f"POST /payments o-1004: {answer.status_code}")
        record = flow.wait_record(RETRY_KIND, "o-1004", ("pending_retry", "retrying", "resolved"))
        print(f"   the Order service reported it: {RETRY_KIND} record {record['id'][:8]}")
        order = flow.wait_status("o-1004", PAID, timeout=30)
        record = flow.wait_record(RETRY_KIND, "o-1004", ("resolved",))
        attempts = ["ok" if a["ok"] else a["detail"].split(":")[0] for a in record["attempts"]]
        print(f"   the Error-handling service's attempts: {attempts}")
        self.check(
            record["status"] == "resolved" and bool(attempts) and attempts[-1] == "ok",
            "retried by the Error-handling service until the write worked (record resolved)",
        )
        self.check(
            [(h["from"], h["to"], h["source"]) for h in order["history"]]
            == [(RESERVED, PAID, "errors-retry")],
            "o-1004 is Paid, one reserved -> paid, written by the retry",
        )
        flow.faults("order")

    def unknown_order(self) -> None:
        flow = self.flow
        print("\n4. An unknown order (payment flow step 6)")
        answer = flow.pay("o-404", 9.99)
        self.check(answer.status_code == 202, f"POST /payments o-404: {answer.status_code}")
        record = flow.wait_record(REVIEW_KIND, "o-404", ("needs_review",))
        print(
            f"   review record {record['id'][:8]}: {record['error_type']}: "
            f"{record['error_message']}"
        )
        parked = [d for d in flow.dlq() if d.message.id == answer.json()["messageId"]]
        self.check(not parked, "one place for it: the record (the message is not also parked)")
        flow.add_orders("o-404")
        flow.act(record["id"], "retry", actor="alice", note="found it: the order was re-created")
        print("   alice re-created the lost order and sent the record back for a retry")
        order = flow.wait_status("o-404", PAID)
        record = flow.wait_record(REVIEW_KIND, "o-404", ("resolved",))
        self.check(
            _transitions(order) == [(RESERVED, PAID)] and record["status"] == "resolved",
            "o-404 is Paid and its record resolved",
        )

    def trace(self, order_id: str) -> None:
        flow = self.flow
        print(f"\n5. The trace of {order_id}'s payment, whose status write was retried (step 3)")
        trace_id = flow.payment_traces.get(order_id)
        if trace_id is None:
            self.check(False, f"{order_id}'s payment started a trace")
            return
        run = flow.settings.path

        def complete() -> list[Span] | None:  # the last spans end a moment after the record
            spans = [s for s in read_spans(run) if s.trace_id == trace_id]
            return spans if _retried(spans) else None

        try:
            spans = flow.wait_for("the trace's retry spans", complete, timeout=10)
        except TimeoutError:
            spans = [s for s in read_spans(run) if s.trace_id == trace_id]
            self.check(False, "the Error-handling service's retry that worked, in the trace")
        for line in tree(spans, trace_id):
            print(f"   {line}")
        print(f"   (python -m examples._support.traces {run} --trace {trace_id})")
        services = {s.service for s in spans}
        ids = {s.span_id for s in spans}
        self.check(
            {"site", "payment", "consumer", "order", "errors"} <= services,
            "one trace: the site, the Payment service, the Status consumer, the Order service"
            " and the Error-handling service",
        )
        self.check(
            all(s.parent_id in ids for s in spans if s.service != "site"),
            "every span but the site's is a child of another span of the trace",
        )

    supervisor: Supervisor


def _retried(spans: list[Span]) -> bool:
    """Whether ``spans`` hold the retry that worked, and the Order service serving it."""
    worked = any(
        s.name == "failsafe.errors retry"
        and s.attributes.get("failsafe.errors.outcome") == "succeeded"
        for s in spans
    )
    served = any(
        s.service == "order"
        and s.attributes.get("url.path") == RETRY_PATH
        and s.attributes.get("http.response.status_code") == 200
        for s in spans
    )
    return worked and served


def run_demo(settings: Settings) -> int:
    """Start the services, play the payment flow, and return 0 if all went as described."""
    print("The payment flow: after a payment, change the order's status through a queue")
    print("(the step numbers in brackets are those of examples/payment_flow/README.md)")
    settings = settings.replace(traces=True)  # traces/ in the run folder
    with Supervisor(settings) as supervisor:
        print(f"run folder: {supervisor.settings.path.resolve()}")
        print(f"broker: {settings.broker or 'SQLite ' + supervisor.settings.broker_url}")
        overrides = ", ".join(f"{k}={v}" for k, v in settings.overrides.items())
        print(f"policies: {settings.policies_file or POLICIES} ({overrides or 'as written'})")
        supervisor.start()
        flow = Flow(supervisor.settings)
        demo = _Demo(flow)
        demo.supervisor = supervisor
        try:
            flow.add_orders("o-1001", "o-1002", "o-1003", "o-1004")
            print("orders o-1001 to o-1004 are reserved; o-404 does not exist")
            demo.normal_payment()
            demo.order_service_down()
            demo.write_fails()
            demo.unknown_order()
            demo.trace("o-1004")
        except (TimeoutError, httpx.HTTPError) as exc:
            demo.check(False, f"stopped: {exc}")
        finally:
            flow.close()
        counts = _counts(supervisor.settings)
    print(f"\nError-handling service: {counts}")
    if supervisor.settings.dsn is None:
        print(f"review pages: failsafe errors list --db {supervisor.settings.path / 'errors.db'}")
    if demo.failures:
        print(f"\n{demo.failures} step(s) of the payment flow did not behave as described")
        return 1
    print("\nEvery step of the payment flow behaved as described.")
    return 0


def _counts(settings: Settings) -> dict[str, int] | str:
    if settings.dsn is not None:
        return "(PostgreSQL store)"
    from failsafe.errors import SQLiteStore

    store = SQLiteStore(str(settings.path / "errors.db"))
    try:
        return {k: v for k, v in store.counts().items() if v}
    finally:
        store.close()
