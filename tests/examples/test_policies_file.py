"""The examples' ``failsafe.toml``: the services run under its pipelines and follow its edits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from examples.warehouse_flow.runner import Supervisor
from examples.warehouse_flow.settings import Settings
from examples.warehouse_flow.wiring import POLICIES

pytestmark = pytest.mark.real_time  # real processes: the test polls them with deadlines


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.05)
    return True


def add(services: Supervisor, order: str) -> httpx.Response:
    """What the site sends to the Order service: one desk for ``order``."""
    return httpx.post(
        f"{services.settings.url('order')}/orders/{order}/products",
        json={"clientId": "c-1", "productId": "p-desk"},
        timeout=30.0,
    )


def test_an_edit_of_the_file_applies_to_the_order_service_without_a_restart(
    tmp_path: Path,
) -> None:
    """Fewer attempts written in failsafe.toml: the Order service's next call makes fewer."""
    policies = tmp_path / "failsafe.toml"
    policies.write_text(POLICIES.read_text())
    run = tmp_path / "run"
    with Supervisor(Settings.fast(run, policies_file=str(policies))) as services:
        services.start()
        services.kill("warehouse-1")
        first = add(services, "o-1")
        assert first.status_code == 200
        assert first.headers["X-Warehouse-Attempts"] == "5"  # 4 on instance 1, then 2
        edited = (
            policies.read_text()
            .replace("attempts = 4", "attempts = 2", 1)
            # and a higher threshold: instance 1's circuit (4 failures counted) stays closed
            .replace("threshold = 5,", "threshold = 50,", 1)
        )
        assert edited != policies.read_text()
        policies.write_text(edited)
        log = run / "order.log"
        assert wait_until(lambda: "pipelines changed: warehouse" in log.read_text(), 10.0)
        second = add(services, "o-2")
        assert second.status_code == 200
        assert second.headers["X-Warehouse-Attempts"] == "3"  # 2 on instance 1, then 2
        assert services.settings.url("warehouse-2") == second.headers["X-Warehouse-Endpoint"]
