"""``python -m examples.warehouse_flow demo``: the order flow, played on the real processes.

Each step sends what the site would send, prints what really happened (the status, the
message, which Warehouse instance answered after how many attempts, the stock before and
after, the Error-handling service's records), and checks it against the order flow's steps
(listed in the example's README). The demo exits 0 only if every step behaved.

The run is traced (``traces`` on): each add is the root span of a trace that the services
continue. The demo reads the Order service's ``/health`` (`failsafe.health`) to show
Warehouse 1's circuit opening and closing again, and prints the trace of the order whose
stock write the Error-handling service redid (`examples._support.traces`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from examples._support.policies import policy
from examples._support.telemetry import Site
from examples._support.traces import Span, read_spans, tree
from examples.warehouse_flow.domain import (
    ADDED,
    CATALOGUE,
    INFO_LATER,
    NOT_ENOUGH_STOCK,
    TRY_LATER,
    needed,
)
from examples.warehouse_flow.runner import Supervisor
from examples.warehouse_flow.settings import Settings
from examples.warehouse_flow.wiring import (
    POLICIES,
    RETRY_KIND,
    RETRY_PATH,
    REVIEW_KIND,
    policies,
)
from failsafe import CircuitBreaker, Retry
from failsafe.cli import main as failsafe_cli
from failsafe.config import Configuration

__all__ = ["Demo", "Reply", "run_demo"]


@dataclass
class Reply:
    """The Order service's answer to one add."""

    status: int
    body: dict[str, Any]
    endpoint: str
    attempts: str
    trace_id: str | None = None

    @property
    def text(self) -> str:
        """The message shown to the client."""
        return str(self.body.get("message") or self.body.get("error") or "")


@dataclass
class Demo:
    """The running services, and the helpers each step uses."""

    supervisor: Supervisor
    out: Callable[[str], None] = print
    failures: list[str] = field(default_factory=list)
    site: Site | None = None

    @property
    def settings(self) -> Settings:
        """The run's settings (with the chosen ports)."""
        return self.supervisor.settings

    @functools.cached_property
    def policies(self) -> Configuration:
        """The run's pipelines (``failsafe.toml`` with the run's overrides), as the services
        load them: the demo says their numbers."""
        return policies(self.settings)

    @property
    def retry(self) -> Retry:
        """The Order service's retry on each Warehouse instance."""
        return policy(self.policies, "warehouse", Retry)

    @property
    def breaker(self) -> CircuitBreaker:
        """The numbers of the Order service's circuit per Warehouse instance."""
        return policy(self.policies, "warehouse", CircuitBreaker)

    def instance(self, endpoint: str) -> str:
        """The name of the Warehouse instance at ``endpoint``."""
        for name in ("warehouse-1", "warehouse-2"):
            if self.settings.url(name) == endpoint.rstrip("/"):
                return name
        return endpoint or "none"

    def add(self, order: str, product: str, quantity: int = 1, *, key: str | None = None) -> Reply:
        """``POST /orders/{order}/products`` on the Order service, as the site does."""
        body = {"clientId": "c-42", "productId": product, "quantity": quantity}
        headers = {"Idempotency-Key": key} if key else {}
        self.out(f"  site -> POST /orders/{order}/products {json.dumps(body)}")
        if self.site is None:
            self.site = Site(self.settings)
        with (
            httpx.Client(timeout=60.0) as client,
            # the site's request is the root span of the order's trace
            self.site.request("add product", order=order, product=product) as request,
        ):
            response = client.post(
                f"{self.settings.url('order')}/orders/{order}/products",
                json=body,
                headers={**headers, **request.headers},  # its traceparent
            )
            request.answered(response.status_code)
        reply = Reply(
            response.status_code,
            response.json(),
            response.headers.get("X-Warehouse-Endpoint", ""),
            response.headers.get("X-Warehouse-Attempts", ""),
            request.trace_id,
        )
        served = (
            f" (answered by {self.instance(reply.endpoint)} after {reply.attempts} attempt(s))"
            if reply.endpoint
            else ""
        )
        self.out(f"  site <- {reply.status} {reply.text!r}{served}")
        return reply

    def stock(self) -> dict[str, int]:
        """The stock, read from whichever Warehouse instance is up."""
        for name in ("warehouse-2", "warehouse-1"):
            with contextlib.suppress(httpx.TransportError):
                levels: dict[str, int] = httpx.get(
                    f"{self.settings.url(name)}/warehouse/v1/stock", timeout=5.0
                ).json()["stock"]
                return levels
        raise RuntimeError("no Warehouse instance is up to read the stock")

    def records(
        self, kind: str, status: str = "pending_retry,retrying,needs_review,resolved"
    ) -> list[dict[str, Any]]:
        """The Error-handling service's records of ``kind``."""
        response = httpx.get(
            f"{self.settings.url('errors')}/v1/records",
            params={"kind": kind, "status": status, "limit": 500},
            timeout=5.0,
        )
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    def circuit(self, instance: str) -> str:
        """GET the Order service's ``/health``; print and return ``instance``'s circuit state.

        The Order service's circuits are one keyed breaker, ``warehouse-breaker``, keyed by
        the instance's address; the snapshot lists only its keys that are not closed. An
        open circuit whose open period is over admits a probe with the next call: it is
        returned as ``"open, probe due"``.
        """
        snapshot = httpx.get(f"{self.settings.url('order')}/health", timeout=5.0).json()
        entry = next(e for e in snapshot["entries"] if e["name"] == "warehouse-breaker")
        states = {key["key"].rstrip("/"): key for key in entry["open_keys"]}
        shown = []
        for name in ("warehouse-1", "warehouse-2"):
            shown.append(f"{name} {_state(states.get(self.settings.url(name)))}")
        self.out(
            f"  order GET /health: {snapshot['status']}; warehouse-breaker: {', '.join(shown)}"
        )
        return _state(states.get(self.settings.url(instance)))

    def faults(self, service: str, **switches: Any) -> None:
        """Flip fault switches on ``service``."""
        httpx.post(
            f"{self.settings.url(service)}/_faults", json=switches, timeout=5.0
        ).raise_for_status()

    def check(self, ok: bool, what: str) -> bool:
        """Print and remember whether the step's expectation held."""
        self.out(f"  {'ok' if ok else 'FAILED'}: {what}")
        if not ok:
            self.failures.append(what)
        return ok

    def wait_for(
        self, what: Callable[[], bool], timeout: float = 30.0, *, pause: float = 0.1
    ) -> bool:
        """Poll ``what`` every ``pause`` seconds until it is true or ``timeout`` seconds passed."""
        sleeper = threading.Event()
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                return False
            sleeper.wait(pause)
        return True

    def changes(self, before: dict[str, int], after: dict[str, int]) -> str:
        """The components whose quantity changed, as text."""
        moved = [
            f"{c} {before[c]} -> {after[c]}" for c in sorted(after) if before.get(c) != after[c]
        ]
        return ", ".join(moved) or "nothing changed"


def _state(key: dict[str, Any] | None) -> str:
    """A key's state, from its ``open_keys`` item in the health snapshot (none: closed)."""
    if key is None:
        return "closed"
    if key["state"] != "open":
        return str(key["state"])
    wait = float(key.get("retry_after") or 0.0)
    return f"open, probe in {wait:.1f} s" if wait > 0 else "open, probe due"


def _step(demo: Demo, title: str) -> None:
    demo.out("")
    demo.out(title)


def _normal_add(demo: Demo) -> None:
    _step(demo, "1. A normal add (order flow steps 1-2, 6, 9, 11)")
    before = demo.stock()
    reply = demo.add("o-1001", "p-desk")
    after = demo.stock()
    demo.out(f"  stock: {demo.changes(before, after)}")
    take = needed(CATALOGUE["p-desk"], 1)
    demo.check(reply.status == 200 and reply.text == ADDED, "200, the product was added")
    demo.check(demo.instance(reply.endpoint) == "warehouse-1", "Warehouse 1 answered")
    demo.check(
        all(after[c] == before[c] - n for c, n in take.items()),
        "every component decremented, in one transaction",
    )
    _step(demo, "1b. The same request again, same Idempotency-Key (a repeated try)")
    again = demo.add("o-1001", "p-desk", key=str(reply.body["requestId"]))
    demo.check(again.status == 200 and demo.stock() == after, "200 again; the stock is unchanged")


def _failover(demo: Demo) -> None:
    _step(demo, "2. Warehouse 1 is killed (kill -9): served by Warehouse 2 (order flow steps 3-4)")
    demo.check(demo.circuit("warehouse-1") == "closed", "Warehouse 1's circuit is closed")
    demo.supervisor.kill("warehouse-1")
    demo.out("  warehouse-1 killed")
    before = demo.stock()
    reply = demo.add("o-1002", "p-chair")
    after = demo.stock()
    demo.out(f"  stock: {demo.changes(before, after)}")
    demo.check(reply.status == 200, "200, the product was added")
    demo.check(
        demo.instance(reply.endpoint) == "warehouse-2"
        and reply.attempts == str(demo.retry.attempts + 1),
        f"{demo.retry.attempts} attempts on Warehouse 1, then Warehouse 2",
    )
    take = needed(CATALOGUE["p-chair"], 1)
    demo.check(all(after[c] == before[c] - n for c, n in take.items()), "decremented once")


def _both_down(demo: Demo) -> None:
    _step(demo, "3. Both Warehouse instances are killed: 500, try again later (order flow step 5)")
    demo.supervisor.kill("warehouse-2")
    demo.out("  warehouse-2 killed too")
    reply = demo.add("o-1003", "p-lamp")
    demo.check(reply.status == 500 and reply.text == TRY_LATER, "500, try again later")
    demo.check(
        demo.circuit("warehouse-1").startswith("open"),
        f"Warehouse 1's circuit opened after {demo.breaker.trip.threshold} failures in a row",
    )
    demo.out("  restarting both instances...")
    demo.supervisor.start(["warehouse-1", "warehouse-2"])
    demo.out(
        "  both up again (Warehouse 1's circuit stays open for"
        f" {demo.breaker.reset_timeout:g} s: the Order service uses Warehouse 2 meanwhile)"
    )


def _unknown_product(demo: Demo) -> str | None:
    _step(demo, "4. An unknown product: 404, and a record for review (order flow steps 7-8)")
    reply = demo.add("o-1004", "p-404")
    demo.check(reply.status == 404 and reply.text == INFO_LATER, "404, information available later")
    found: list[dict[str, Any]] = []

    def reviewed() -> bool:
        found[:] = demo.records(REVIEW_KIND, "needs_review")
        return bool(found)

    if not demo.check(demo.wait_for(reviewed, 10.0), "a product.not_found record awaits review"):
        return None
    record = found[0]
    demo.out(
        f"  Error-handling service: record {record['id']} ({record['status']}),"
        f" payload {record['payload']}"
    )
    return str(record["id"])


def _not_enough(demo: Demo) -> None:
    _step(demo, "5. Not enough stock: the custom 202, nothing decremented (order flow step 9)")
    before = demo.stock()
    reply = demo.add("o-1005", "p-shelf", 2)
    after = demo.stock()
    demo.out(f"  short: {reply.body.get('short')}; stock: {demo.changes(before, after)}")
    demo.check(reply.status == 202 and reply.text == NOT_ENOUGH_STOCK, "202, not enough stock")
    demo.check(after == before, "nothing decremented")


def _write_fails(demo: Demo) -> str | None:
    _step(demo, "6. The stock write fails: the client is told success, the Error-handling")
    demo.out("   service retries the write until the stock is right (order flow steps 10-11)")
    for name in ("warehouse-1", "warehouse-2"):
        demo.faults(name, fail_writes=2)
    demo.out("  fault switch: the next 2 stock writes fail, on each Warehouse instance")
    before = demo.stock()
    reply = demo.add("o-1006", "p-lamp", 3)
    demo.check(reply.status == 200 and reply.text == ADDED, "200, the product was added")
    demo.out(f"  stock right after: {demo.changes(before, demo.stock())}")
    key = reply.body.get("requestId")
    found: list[dict[str, Any]] = []

    def resolved() -> bool:
        found[:] = [r for r in demo.records(RETRY_KIND) if r["payload"].get("key") == key]
        return bool(found) and found[0]["status"] == "resolved"

    done = demo.wait_for(resolved, 30.0)
    if found:
        record = found[0]
        demo.out(
            f"  Error-handling service: record {record['id']} is {record['status']}; attempts:"
        )
        for attempt in record["attempts"]:
            demo.out(f"    {'ok    ' if attempt['ok'] else 'failed'} {attempt['detail']}")
    demo.check(done, "the record was retried until it worked (resolved)")
    after = demo.stock()
    demo.out(f"  stock now: {demo.changes(before, after)}")
    take = needed(CATALOGUE["p-lamp"], 3)
    demo.check(
        all(after[c] == before[c] - n for c, n in take.items()),
        "the stock is right: decremented exactly once",
    )
    for name in ("warehouse-1", "warehouse-2"):
        demo.faults(name, fail_writes=0)
    return reply.trace_id


def _review(demo: Demo, record_id: str | None) -> None:
    _step(demo, "7. What a Warehouse employee sees, and resolving it (order flow step 8)")
    if record_id is None:
        demo.check(False, "a record to review")
        return
    url = demo.settings.url("errors")
    demo.out(f"  (in a browser: {url}/review/records/{record_id})")
    demo.out(f"  $ failsafe errors show {record_id} --url {url}")
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        code = failsafe_cli(["errors", "show", record_id, "--url", url])
    for line in shown.getvalue().splitlines():
        demo.out(f"    {line}")
    demo.check(code == 0 and "p-404" in shown.getvalue(), "the record shows the unknown product")
    note = "p-404 is a new model: added to the catalogue"
    demo.out(
        f"  $ failsafe errors resolve {record_id} --url {url} --actor warehouse-employee --note ..."
    )
    resolved = io.StringIO()
    with contextlib.redirect_stdout(resolved):
        code = failsafe_cli(
            [
                "errors",
                "resolve",
                record_id,
                "--url",
                url,
                "--actor",
                "warehouse-employee",
                "--note",
                note,
            ]
        )
    demo.out(f"    {resolved.getvalue().strip()}")
    record = httpx.get(f"{url}/v1/records/{record_id}", timeout=5.0).json()
    demo.check(
        code == 0 and record["status"] == "resolved" and record["history"][-1]["note"] == note,
        "resolved, with the employee's note in its history",
    )


def _circuit_closes(demo: Demo) -> None:
    _step(demo, "8. Warehouse 1's circuit closes again, as the Order service's /health shows")
    breaker = demo.breaker
    demo.wait_for(
        lambda: demo.circuit("warehouse-1") in ("closed", "half-open", "open, probe due"),
        (breaker.max_reset_timeout or breaker.reset_timeout) + 5.0,
        pause=1.0,
    )
    reply = demo.add("o-1008", "p-desk")
    demo.check(
        reply.status == 200 and demo.instance(reply.endpoint) == "warehouse-1",
        "its open period over, Warehouse 1 answered the next add (the probe)",
    )
    demo.check(demo.circuit("warehouse-1") == "closed", "Warehouse 1's circuit is closed again")


def _retried(spans: list[Span]) -> bool:
    """Whether ``spans`` hold the retry that worked, and the Warehouse serving it."""
    return any(
        s.name == "failsafe.errors retry"
        and s.attributes.get("failsafe.errors.outcome") == "succeeded"
        for s in spans
    ) and any(
        s.service.startswith("warehouse")
        and s.attributes.get("url.path") == RETRY_PATH
        and s.attributes.get("http.response.status_code") == 200
        for s in spans
    )


def _trace(demo: Demo, trace_id: str | None) -> None:
    _step(demo, "9. The trace of o-1006, whose stock write the Error-handling service redid")
    if not demo.check(trace_id is not None, "the order's add started a trace"):
        return
    run = demo.settings.path
    spans: list[Span] = []

    def complete() -> bool:
        spans[:] = [s for s in read_spans(run) if s.trace_id == trace_id]
        return _retried(spans)

    done = demo.wait_for(complete, 10.0)  # the last spans end a moment after the record
    assert trace_id is not None
    for line in tree(spans, trace_id):
        demo.out(f"  {line}")
    demo.out(f"  (python -m examples._support.traces {run} --trace {trace_id})")
    services = {s.service for s in spans}
    ids = {s.span_id for s in spans}
    demo.check(
        {"site", "order", "errors"} <= services
        and any(name.startswith("warehouse") for name in services),
        "one trace holds the site's, the Order service's, the Warehouse's and the"
        " Error-handling service's spans",
    )
    demo.check(
        all(s.parent_id in ids for s in spans if s.service != "site"),
        "every span but the site's is a child of another span of the trace",
    )
    demo.check(done, "the Error-handling service's later retry and the Warehouse serving it")


STEPS = (
    "normal",
    "failover",
    "both_down",
    "unknown",
    "not_enough",
    "write_fails",
    "review",
    "circuit_closes",
    "trace",
)


def play(demo: Demo) -> bool:
    """Play every step on running services; return whether all behaved."""
    _normal_add(demo)
    _failover(demo)
    _both_down(demo)
    record_id = _unknown_product(demo)
    _not_enough(demo)
    trace_id = _write_fails(demo)
    _review(demo, record_id)
    _circuit_closes(demo)
    _trace(demo, trace_id)
    return not demo.failures


@contextlib.contextmanager
def _postgres_schema(settings: Settings) -> Iterator[None]:
    try:
        yield
    finally:
        if settings.dsn is not None:
            import psycopg

            with psycopg.connect(settings.dsn, autocommit=True) as conn:
                for name in ("stock", "products", "errors"):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{settings.schema}_{name}" CASCADE')


def run_demo(run_dir: str, *, dsn: str | None = None, schema: str = "warehouse_flow") -> int:
    """Start the services in ``run_dir``, play the order flow, stop them; return the exit status."""
    settings = Settings.fast(run_dir, traces=True)  # traces/ in the run folder
    if dsn is not None:
        settings = settings.replace(dsn=dsn, schema=f"{schema}_demo_{uuid.uuid4().hex[:8]}")
    print("The order flow: adding a product to an order (examples/warehouse_flow)")
    print("(the step numbers in brackets are those of examples/warehouse_flow/README.md)")
    print(f"run folder: {settings.path.resolve()}")
    print(f"policies: {settings.policies_file or POLICIES}, with the demo's short waits:")
    for name, value in settings.overrides.items():
        print(f"  {name}={value}")
    started = time.monotonic()
    with _postgres_schema(settings), Supervisor(settings) as supervisor:
        supervisor.start()
        for name in ("order", "warehouse-1", "warehouse-2", "products", "errors"):
            print(f"  {name:<12} {supervisor.settings.url(name)}")
        site = Site(supervisor.settings)  # the root span of each add: traces/site.jsonl
        demo = Demo(supervisor, site=site)
        try:
            ok = play(demo)
        finally:
            site.close()
    took = time.monotonic() - started
    print("")
    if ok:
        print(f"Every step of the order flow behaved as described ({took:.1f} s).")
        return 0
    print(f"{len(demo.failures)} step(s) did not behave: " + "; ".join(demo.failures))
    return 1
