"""The store contract on the real PostgreSQL server, plus what only a shared server can show.

Each test runs in a fresh schema, dropped afterwards. The server must be there (it always is
under CI): an unreachable server fails the tests, it never skips them.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import attrs
import psycopg
import pytest
from psycopg import sql

from failsafe.errors import ErrorRecord, Query, Status
from failsafe.errors import _sql as store_sql
from failsafe.errors.postgres import PostgresStore
from tests.errors.store_contract import (
    SPAN,
    TRACE,
    GroupCommitContract,
    StoreContract,
    report,
)

DSN = os.environ.get("FAILSAFE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"failsafe_test_{uuid.uuid4().hex}"
    try:
        psycopg.connect(DSN, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {DSN} ({exc}). Start the server or point"
            " FAILSAFE_TEST_POSTGRES at one; these tests never skip."
        )
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


class TestPostgresStore(StoreContract):
    """The shared contract against PostgreSQL."""

    @pytest.fixture
    def store(self, schema: str) -> Iterator[PostgresStore]:
        # connections ready for every thread, so the concurrency tests really overlap
        store = PostgresStore(DSN, schema=schema, min_size=8)
        yield store
        store.close()


class TestPostgresGroupCommit(GroupCommitContract):
    @pytest.fixture
    def store(self, schema: str) -> Iterator[PostgresStore]:
        store = PostgresStore(DSN, schema=schema, min_size=2)
        yield store
        store.close()


def _crash_midway(store: PostgresStore, record: ErrorRecord) -> None:
    """Insert a record, move another and add an attempt in one transaction, then fail."""
    with store._transaction() as run:
        stray = attrs.evolve(record, id=uuid.uuid4().hex, dedupe_key="stray")
        run(store_sql.INSERT_RECORD, store_sql.record_row(stray))
        run(store_sql.MOVE, (Status.RETRYING.value, 8.0, 9.0, record.id))
        run(store_sql.INSERT_ATTEMPT, (record.id, 8.0, 0, "half done"))
        raise RuntimeError("the worker crashed midway")


def test_two_instances_share_records_and_a_failed_transaction_leaves_nothing(schema: str) -> None:
    """Two stores (as two services) see each other's writes; a failed transaction leaves none."""
    first = PostgresStore(DSN, schema=schema, max_size=2)
    second = PostgresStore(DSN, schema=schema, max_size=2)
    try:
        record, _ = first.add(report(), now=1.0, next_attempt_at=2.0, actor="warehouse")
        again, created = second.add(report(), now=3.0, next_attempt_at=4.0, actor="warehouse")
        assert not created
        assert again.id == record.id
        assert again.count == 2
        second.move(record.id, Status.RESOLVED, now=5.0, actor="ops", note="done")
        assert first.get(record.id).status is Status.RESOLVED

        doomed, _ = first.add(report(payload={"n": 2}), now=6.0, next_attempt_at=7.0, actor="w")
        with pytest.raises(RuntimeError, match="midway"):
            _crash_midway(first, doomed)
        assert second.get(doomed.id) == doomed
        assert second.find(Query()).total == 2
    finally:
        first.close()
        second.close()


def test_concurrent_deliveries_of_one_report_count_once(schema: str) -> None:
    """Eight deliveries of one report id at once all succeed and make one record counted once."""
    store = PostgresStore(DSN, schema=schema, min_size=8)
    barrier = threading.Barrier(8)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait(10)
            record, created = store.add(
                report(), now=1.0, next_attempt_at=2.0, actor="w", report_id="r-1"
            )
            results.append((record.id, created))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=deliver) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert len({rid for rid, _ in results}) == 1
        assert sorted(created for _, created in results) == [False] * 7 + [True]
        assert store.find(Query()).records[0].count == 1
    finally:
        store.close()


def test_a_text_search_can_use_the_trigram_index(schema: str) -> None:
    """The search's SQL is the indexed expression, so PostgreSQL may answer from the index."""
    store = PostgresStore(DSN, schema=schema)
    try:
        clause, params = store._text_clause("locked 42")
        with store._transaction() as run:
            run("SET LOCAL enable_seqscan = off", ())
            plan = "\n".join(
                row[0]
                for row in run(
                    f"EXPLAIN SELECT id FROM failsafe_errors WHERE {clause}", params
                ).fetchall()
            )
        assert "failsafe_errors_text_trgm" in plan
    finally:
        store.close()


def test_counts_of_two_stores_on_one_schema_add_up(schema: str) -> None:
    """Two stores' counts add up; an older schema's records are counted when it is opened."""
    first = PostgresStore(DSN, schema=schema)
    for n in range(3):
        first.add(report(payload={"n": n}), now=float(n), next_attempt_at=None, actor="w")
    with psycopg.connect(DSN, autocommit=True) as conn:  # as a schema of an older version
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for name in ("insert", "update", "delete"):
            conn.execute(f"DROP TRIGGER failsafe_errors_count_{name} ON failsafe_errors")
        conn.execute("DROP TABLE failsafe_error_counts")
    first.close()
    first, second = PostgresStore(DSN, schema=schema), PostgresStore(DSN, schema=schema)
    try:
        assert first.counts()["pending_retry"] == 3
        made, _ = second.add(report(payload={"n": 9}), now=9.0, next_attempt_at=None, actor="w")
        second.move(made.id, Status.RESOLVED, now=10.0, actor="ops")
        first.add(report(payload={"n": 10}), now=11.0, next_attempt_at=None, actor="w")
        assert first.counts()["pending_retry"] == 4
        assert second.counts()["resolved"] == 1
    finally:
        first.close()
        second.close()


def test_a_schema_from_before_traces_gets_the_trace_columns_when_opened(schema: str) -> None:
    """An older schema's records read with no trace; new ones store theirs, by index."""
    store = PostgresStore(DSN, schema=schema)
    old, _ = store.add(report(payload={"n": 1}), now=1.0, next_attempt_at=None, actor="w")
    store.close()
    with psycopg.connect(DSN, autocommit=True) as conn:  # as a schema of the version before
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("DROP INDEX failsafe_errors_trace")
        conn.execute("ALTER TABLE failsafe_errors DROP COLUMN trace_id, DROP COLUMN span_id")
    first, second = PostgresStore(DSN, schema=schema), PostgresStore(DSN, schema=schema)
    try:
        assert (first.get(old.id).trace_id, first.get(old.id).span_id) == (None, None)
        new, _ = second.add(
            report(payload={"n": 2}, trace_id=TRACE, span_id=SPAN),
            now=2.0,
            next_attempt_at=None,
            actor="w",
        )
        assert [r.id for r in first.find(Query(trace_id=TRACE)).records] == [new.id]
        assert first.get(new.id).span_id == SPAN
        with first._transaction() as run:
            run("SET LOCAL enable_seqscan = off", ())
            plan = "\n".join(
                row[0]
                for row in run(
                    "EXPLAIN SELECT id FROM failsafe_errors WHERE trace_id = ?"
                    " ORDER BY created_at DESC, id DESC",
                    (TRACE,),
                ).fetchall()
            )
        assert "failsafe_errors_trace" in plan
    finally:
        first.close()
        second.close()
