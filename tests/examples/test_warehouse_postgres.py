"""examples/warehouse_flow on PostgreSQL: the stock, the catalogue and the error records there."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from examples.warehouse_flow.runner import Supervisor
from examples.warehouse_flow.settings import Settings

from tests.examples.test_warehouse_flow import add, minus, records, stock, wait_until

DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = [pytest.mark.postgres, pytest.mark.real_time]


@pytest.fixture
def on_postgres(tmp_path: Path) -> Iterator[Supervisor]:
    """The services with ``--dsn``, in schemas of their own, dropped afterwards."""
    schema = f"wf_test_{uuid.uuid4().hex[:8]}"
    settings = Settings.fast(tmp_path, dsn=DSN, schema=schema)
    try:
        with Supervisor(settings) as supervisor:
            supervisor.start()
            yield supervisor
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            for name in ("stock", "products", "errors"):
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_{name}" CASCADE')


def test_the_seed_steps_run_on_postgresql(on_postgres: Supervisor, tmp_path: Path) -> None:
    """An add, a 202, an unknown product and a retried write, with no SQLite file made."""
    before = stock(on_postgres)
    assert add(on_postgres, "o-1", "p-desk").status_code == 200
    assert stock(on_postgres) == minus(before, "p-desk", 1)
    assert add(on_postgres, "o-2", "p-shelf", 2).status_code == 202
    assert add(on_postgres, "o-3", "p-404").status_code == 404
    for name in ("warehouse-1", "warehouse-2"):
        url = f"{on_postgres.settings.url(name)}/_faults"
        httpx.post(url, json={"fail_writes": 1}, timeout=5).raise_for_status()
    middle = stock(on_postgres)
    assert add(on_postgres, "o-4", "p-lamp").status_code == 200
    assert wait_until(lambda: stock(on_postgres) == minus(middle, "p-lamp", 1), 30)
    assert wait_until(lambda: bool(records(on_postgres, "stock.decrement", "resolved")), 10)
    assert records(on_postgres, "product.not_found", "needs_review")
    for name in ("stock.db", "products.db", "errors.db"):
        assert not (tmp_path / name).exists()
