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
from examples._support.policies import policy
from examples._support.processes import ROOT
from examples.payment_flow import wiring as payment_wiring
from examples.payment_flow.settings import Settings as PaymentSettings
from examples.warehouse_flow import wiring as warehouse_wiring
from examples.warehouse_flow.settings import Settings as WarehouseSettings

from failsafe import Backoff, CircuitBreaker, Retry, Timeout
from failsafe.config import ConfigError


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
    assert (payment.retry_attempts, payment.retry_backoff_max) == (20, 1.0)
    assert (payment.redelivery_delay, payment.lease) == (2.0, 7.0)  # the caller's change wins


def test_fast_settings_shorten_the_files_waits_through_overrides(tmp_path: Path) -> None:
    """``fast`` shortens the policies of ``failsafe.toml`` by overrides; a caller's add up."""
    warehouse = WarehouseSettings.fast(
        tmp_path, overrides={"FAILSAFE_WAREHOUSE_CIRCUIT_BREAKER_RESET_TIMEOUT": "0.5"}
    )
    config = warehouse_wiring.policies(warehouse)
    assert policy(config, "warehouse", Retry).backoff == Backoff.exponential(0.02, maximum=0.1)
    assert policy(config, "warehouse", Timeout).seconds == 10
    assert policy(config, "warehouse", CircuitBreaker).reset_timeout == 0.5  # the caller's
    assert policy(config, "callback", CircuitBreaker).reset_timeout == 5  # fast's
    assert policy(config, "products", Retry).backoff == Backoff.exponential(0.02, maximum=0.1)
    slow = warehouse_wiring.policies(WarehouseSettings(run_dir=str(tmp_path)))
    assert policy(slow, "warehouse", Retry).attempts == 4  # the file's, as written
    assert policy(slow, "warehouse", CircuitBreaker).reset_timeout == 2
    payment = payment_wiring.policies(PaymentSettings.fast(tmp_path))
    assert policy(payment, "order", CircuitBreaker).reset_timeout == 1


def test_an_override_that_breaks_a_rule_fails_when_the_file_loads(tmp_path: Path) -> None:
    """An open period above its cap fails at load, naming the key, not in a request."""
    settings = WarehouseSettings.fast(
        tmp_path, overrides={"FAILSAFE_WAREHOUSE_CIRCUIT_BREAKER_RESET_TIMEOUT": "600"}
    )
    with pytest.raises(ConfigError, match="max_reset_timeout"):
        warehouse_wiring.policies(settings)


@pytest.mark.parametrize(
    ("example", "names", "words"),
    [
        (
            "warehouse_flow",
            ["warehouse", "products", "callback"],
            "<Pipeline 'warehouse': timeout 'warehouse.timeout': 15s, around retry "
            "'warehouse.retry': up to 4 attempts",
        ),
        ("payment_flow", ["order"], "circuit breaker 'order.circuit_breaker': opens after 5"),
    ],
)
def test_failsafe_config_check_prints_the_examples_pipelines(
    example: str, names: list[str], words: str
) -> None:
    """``failsafe config check`` on an example's file prints each pipeline and exits 0."""
    command = Path(sys.executable).with_name("failsafe")  # the installed console script
    out = subprocess.run(
        [str(command), "config", "check", f"examples/{example}/failsafe.toml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [line.split(":", 1)[0] for line in out.stdout.splitlines()] == names
    assert words in out.stdout


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
