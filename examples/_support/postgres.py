"""The PostgreSQL connection pool both examples' databases use with ``--dsn``."""

from __future__ import annotations

from typing import Any

__all__ = ["schema_pool"]


def schema_pool(dsn: str, schema: str) -> Any:
    """A small, open ``psycopg_pool.ConnectionPool`` whose connections work in ``schema``.

    Every connection gets ``search_path=schema``, so the examples' SQL names its tables
    without a schema. psycopg is imported here: without ``--dsn`` it need not be installed.
    """
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=8,
        kwargs={"options": f"-c search_path={schema}"},
        open=True,
    )
