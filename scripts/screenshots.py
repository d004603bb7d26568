"""``python scripts/screenshots.py``: the review pages' pictures in the docs, taken, not drawn.

Fills a SQLite store the way a failure storm does (thousands of reports of one stock
failure that differ by a row number, a few other failures, some closed), serves the
Error-handling service's app with uvicorn on a loopback port, and photographs two pages in
Debian's headless Chromium (``/usr/bin/chromium``, through Playwright; no browser is
downloaded): the failure groups (``docs/img/review-groups.png``) and the largest group's
page (``docs/img/review-group.png``). Run it again after changing the pages
(``make screenshots``).
"""

from __future__ import annotations

import random
import socket
import sys
import tempfile
import threading
from pathlib import Path

import uvicorn

from failsafe.errors import Action, ErrorDesk, GroupQuery, Report, SQLiteStore
from failsafe.errors.auth import Tokens
from failsafe.errors.service import create_app
from failsafe.errors.worker import Handlers
from failsafe.testing import FakeClock

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"
NOW = 1_796_630_400.0  # a fixed time (2026-12-07 08:00 UTC): the same pictures each run


def fill(desk: ErrorDesk, clock: FakeClock) -> None:
    """A day of failures: a storm of one, and a few others, some dealt with."""
    rng = random.Random(7)
    start = NOW - 24 * 3600
    events: list[tuple[float, Report]] = []
    for n in range(2400):  # the stock database locked for an evening, worst at its start
        at = start + 14 * 3600 + 5 * 3600 * rng.random() ** 2
        events.append(
            (
                at,
                Report(
                    kind="stock.decrement",
                    action=Action.REVIEW,
                    source=rng.choice(["warehouse", "warehouse", "warehouse-2"]),
                    payload={"productId": f"p-{rng.randint(1, 900)}", "quantity": 2, "n": n},
                    error_type="OperationalError",
                    error_message=f"database is locked (row {rng.randint(1, 10**6)})",
                ),
            )
        )
    for n in range(60):
        events.append(
            (
                start + rng.uniform(0, 24 * 3600),
                Report(
                    kind="product.not_found",
                    action=Action.REVIEW,
                    source="warehouse",
                    payload={"productId": f"p-{9000 + n}"},
                    error_type="LookupError",
                    error_message=f"the Products service answered 404 for p-{9000 + n}",
                ),
            )
        )
    for n in range(25):
        events.append(
            (
                start + rng.uniform(10 * 3600, 24 * 3600),
                Report(
                    kind="order.not_found",
                    action=Action.REVIEW,
                    source="order-service",
                    payload={"orderId": f"o-{4000 + n}", "status": "paid"},
                    error_type="LookupError",
                    error_message=f"no order 'o-{4000 + n}' in the Orders database",
                ),
            )
        )
    for n in range(8):
        events.append(
            (
                start + rng.uniform(0, 6 * 3600),
                Report(
                    kind="payment.capture",
                    action=Action.REVIEW,
                    source="payments",
                    payload={"paymentId": f"pay-{n}"},
                    error_type="HTTPStatusError",
                    error_message="Server error '502 Bad Gateway' for url 'https://psp/capture'",
                ),
            )
        )
    events.sort(key=lambda event: event[0])
    for at, report in events:
        clock.advance(at - clock.time())
        desk.report(report, actor=report.source)
    clock.advance(NOW - clock.time())
    (payments,) = desk.store.groups(GroupQuery(kind="payment.capture")).groups
    desk.group_action(
        payments.fingerprint, "resolve", actor="alice", note="the PSP is back; captured by hand"
    )


def main() -> int:
    """Fill a store, serve it, photograph the two pages; 0 when done."""
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock(wall_start=NOW - 24 * 3600 - 1)
        desk = ErrorDesk(SQLiteStore(Path(tmp) / "errors.db"), clock=clock)
        fill(desk, clock)
        app = create_app(desk, tokens=Tokens(report=None, review=None), handlers=Handlers())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1180, "height": 820})
                page.goto(f"{url}/review/?order=largest", wait_until="load")
                page.screenshot(path=str(OUT / "review-groups.png"), full_page=True)
                page.locator("table.groups tbody tr a").first.click()
                page.wait_for_load_state("load")
                page.screenshot(path=str(OUT / "review-group.png"), full_page=False)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(10)
            desk.store.close()
    for name in ("review-groups.png", "review-group.png"):
        print(f"wrote docs/img/{name} ({(OUT / name).stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
