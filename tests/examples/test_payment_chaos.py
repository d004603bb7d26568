"""examples/payment_flow under chaos: 1,000 payments while the Order service and the consumer die.

During the payments the Order service is killed (``kill -9``) and started again twice, the
Status consumer is killed with ``kill -9`` once, and a burst of status writes fails.
Afterwards every paid order is Paid with exactly one reserved-to-paid transition, no message
is lost, and what was not applied (the payments for orders that do not exist) is in the
Error-handling service.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from examples.payment_flow.demo import Flow
from examples.payment_flow.domain import PAID, RESERVED
from examples.payment_flow.runner import Supervisor, delete_rabbitmq_queues
from examples.payment_flow.settings import Settings
from examples.payment_flow.wiring import RETRY_KIND, REVIEW_KIND, queue_review_kind

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"
PAYMENTS = 1000
UNKNOWN = 10
PAYERS = 8
PAUSE = 0.05  # between one payer's payments: the storm lasts several seconds


class Payers:
    """Clients paying every order, each payment resent with its key until it is accepted."""

    def __init__(self, url: str, orders: list[str]) -> None:
        self.url = url
        self.accepted: dict[str, str] = {}
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._pay, args=(orders[i::PAYERS],), daemon=True)
            for i in range(PAYERS)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(120)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def _pay(self, orders: list[str]) -> None:
        pause = threading.Event()
        with httpx.Client(timeout=30.0) as http:
            for order in orders:
                for _ in range(100):
                    try:
                        answer = http.post(
                            f"{self.url}/payments",
                            json={"orderId": order, "amount": 10.0},
                            headers={"Idempotency-Key": f"pay-{order}"},
                        )
                    except httpx.TransportError:
                        pause.wait(0.1)
                        continue
                    if answer.status_code == 202:
                        with self.lock:
                            self.accepted[order] = answer.json()["messageId"]
                        break
                    assert answer.status_code == 503, answer.text
                    pause.wait(0.1)
                pause.wait(PAUSE)


def _until(flow: Flow, what: str, check: object, timeout: float = 60.0) -> None:
    flow.wait_for(what, check, timeout)  # type: ignore[arg-type]


@pytest.mark.real_time
@pytest.mark.parametrize("broker", ["sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_chaos_every_paid_order_is_paid_once(tmp_path: Path, broker: str) -> None:
    """1,000 payments through kills and failed writes: each order Paid once, nothing lost."""
    settings = Settings.fast(tmp_path, lease=3.0, retry_attempts=40)
    if broker == "rabbitmq":
        settings = settings.replace(broker=RABBIT, queue=f"chaos-{uuid.uuid4().hex[:8]}")
    known = [f"c-{i:04d}" for i in range(PAYMENTS - UNKNOWN)]
    unknown = [f"u-{i:02d}" for i in range(UNKNOWN)]
    orders = known + unknown
    random.Random(7).shuffle(orders)
    try:
        with Supervisor(settings) as supervisor:
            supervisor.start()
            flow = Flow(supervisor.settings)
            try:
                flow.db.add_orders(known)
                payers = Payers(supervisor.settings.url("payment"), orders)
                payers.start()

                def order_service_outage(at: int) -> None:
                    _until(flow, f"{at} payments", lambda: payers.count >= at)
                    deferred = flow.stats().get("RedeliveryScheduled", 0)
                    supervisor.kill("order")
                    _until(
                        flow,
                        "messages deferred to the DLQ",
                        lambda: flow.stats().get("RedeliveryScheduled", 0) >= deferred + 5,
                    )
                    supervisor.start(["order"])

                order_service_outage(150)
                _until(flow, "400 payments", lambda: payers.count >= 400)
                supervisor.kill("consumer")
                supervisor.start(["consumer"])
                _until(flow, "550 payments", lambda: payers.count >= 550)
                flow.faults("order", fail_writes=15)
                order_service_outage(700)
                payers.join()
                assert sorted(payers.accepted) == sorted(orders)

                def all_paid() -> bool:
                    statuses = flow.db.statuses()
                    return all(statuses[o] == PAID for o in known)

                _until(flow, "every known order Paid", all_paid, timeout=90)
                _until(
                    flow,
                    "a review record per unknown order",
                    lambda: len(flow.records(kind=REVIEW_KIND)) >= UNKNOWN,
                )
                _until(
                    flow,
                    "every retried write resolved",
                    lambda: all(r["status"] == "resolved" for r in flow.records(kind=RETRY_KIND)),
                )
                transitions = flow.db.transitions()
                reviews = flow.records(kind=REVIEW_KIND)
                retried = flow.records(kind=RETRY_KIND)
                gave_up = flow.records(kind=queue_review_kind(flow.settings))
                parked = flow.dlq()
            finally:
                flow.close()
    finally:
        if settings.rabbitmq:
            delete_rabbitmq_queues(settings)

    # every paid order: Paid, exactly one reserved -> paid, nothing else
    assert Counter(transitions) == Counter((o, RESERVED, PAID) for o in known)
    # not applied (no such order): each in the Error-handling service, once, for review
    assert sorted(r["payload"]["orderId"] for r in reviews) == sorted(unknown)
    assert all(r["status"] == "needs_review" for r in reviews)
    assert {r["payload"]["messageId"] for r in reviews} == {payers.accepted[o] for o in unknown}
    # the failed writes were retried by the Error-handling service, and no message was given
    # up on or left parked
    assert retried, "the fail_writes burst produced no retry record"
    assert gave_up == []
    assert parked == []
