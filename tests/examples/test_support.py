"""The plumbing both examples share (``examples/_support``), where their own tests do not.

What is pinned here: the settings each example inherits, and the ``up`` command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from examples._support.processes import ROOT
from examples.payment_flow.settings import Settings as PaymentSettings
from examples.warehouse_flow.settings import Settings as WarehouseSettings


def test_fast_settings_keep_each_example_s_short_waits(tmp_path: Path) -> None:
    """``fast`` applies the shared short waits and then the example's own."""
    warehouse = WarehouseSettings.fast(tmp_path)
    payment = PaymentSettings.fast(tmp_path, lease=7.0)
    for settings in (warehouse, payment):
        assert (settings.poll_interval, settings.sink_poll, settings.retry_backoff) == (
            0.1,
            0.5,
            0.2,
        )
        assert settings.run_dir == str(tmp_path)
    assert (warehouse.retry_attempts, warehouse.retry_backoff_max) == (12, 0.8)
    assert (warehouse.warehouse_backoff, warehouse.breaker_reset) == (0.02, 5.0)
    assert (payment.retry_attempts, payment.retry_backoff_max) == (20, 1.0)
    assert (payment.redelivery_delay, payment.lease) == (2.0, 7.0)  # the caller's change wins


def test_warehouse_settings_refuse_a_cap_below_the_first_open_period(tmp_path: Path) -> None:
    """A breaker_reset above breaker_reset_max fails where it is set, not in a service."""
    with pytest.raises(ValueError, match="breaker_reset_max"):
        WarehouseSettings.fast(tmp_path, breaker_reset=600.0)
    assert WarehouseSettings.fast(tmp_path, breaker_reset=600.0, breaker_reset_max=600.0)


def test_each_example_keeps_its_own_defaults() -> None:
    """The shared fields take each example's defaults: folder, ports, schema, retries."""
    warehouse, payment = WarehouseSettings(), PaymentSettings()
    assert (warehouse.run_dir, warehouse.schema, warehouse.retry_attempts) == (
        ".warehouse-flow",
        "warehouse_flow",
        8,
    )
    assert (payment.run_dir, payment.schema, payment.retry_backoff) == (
        ".payment-flow",
        "payment_flow",
        30.0,
    )
    assert set(warehouse.ports) == {"errors", "products", "warehouse-1", "warehouse-2", "order"}
    assert set(payment.ports) == {"errors", "order", "payment", "consumer"}
    assert all(port == 0 for port in [*warehouse.ports.values(), *payment.ports.values()])


def test_settings_saved_in_the_run_folder_load_back_equal(tmp_path: Path) -> None:
    """``settings.json`` holds every field and loads back into an equal value."""
    settings = PaymentSettings.fast(tmp_path, broker="amqp://x", ports={"order": 1234})
    path = settings.save()
    assert path == tmp_path / "settings.json"
    assert json.loads(path.read_text())["broker"] == "amqp://x"
    assert PaymentSettings.load(path) == settings
    assert settings.url("order") == "http://127.0.0.1:1234"


@pytest.mark.real_time
@pytest.mark.parametrize("example", ["warehouse_flow", "payment_flow"])
def test_up_prints_the_services_and_stops_them_on_sigterm(example: str, tmp_path: Path) -> None:
    """``up`` prints each service's address, and ``SIGTERM`` stops it and every service."""
    up = subprocess.Popen(
        [sys.executable, "-m", f"examples.{example}", "up", "--fast", "--run-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert up.stdout is not None
    try:
        lines = []
        for line in up.stdout:  # ends early if up exits: the asserts below say why
            lines.append(line)
            if line.startswith("Ctrl-C stops them all."):
                break
        printed = "".join(lines)
        assert "Ctrl-C stops them all." in printed, printed
        ports = json.loads((tmp_path / "settings.json").read_text())["ports"]
        for name, port in ports.items():
            assert f"  {name} " in printed
            assert f"http://127.0.0.1:{port}" in printed
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
    assert up.returncode == 0, printed + rest
    assert "stopping..." in rest
    for name in ports:
        assert (tmp_path / f"{name}.log").exists()
    # every service stopped: their ports refuse connections
    for port in ports.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
