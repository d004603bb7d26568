"""Fixtures for the warehouse_flow tests: the example's services as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.warehouse_flow.runner import Supervisor
from examples.warehouse_flow.settings import Settings


@pytest.fixture(scope="module")
def warehouse_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    """Every warehouse_flow service, started once for the test module (fast settings)."""
    run_dir: Path = tmp_path_factory.mktemp("warehouse-flow")
    with Supervisor(Settings.fast(run_dir)) as supervisor:
        supervisor.start()
        yield supervisor
