"""The contract every ErrorStore passes; each store's test module subclasses StoreContract."""

from __future__ import annotations

import json
import threading
from typing import Any

import attrs
import pytest

from failsafe.errors import (
    Action,
    ErrorStore,
    InvalidMove,
    Query,
    RecordNotFound,
    Report,
    Status,
)
from failsafe.errors.store import RECEIPT_SECONDS, REPEAT_SAMPLE, GroupNotFound, GroupQuery

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER_SPAN = "b7ad6b7169203331"


def report(**overrides: Any) -> Report:
    fields: dict[str, Any] = {
        "kind": "stock.decrement",
        "action": Action.RETRY,
        "source": "warehouse",
        "payload": {"productId": "p-1", "quantity": 2},
        "error_type": "OperationalError",
        "error_message": "database is locked",
    }
    fields.update(overrides)
    return Report(**fields)


class StoreContract:
    """Behaviour every ErrorStore must have. Subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> ErrorStore:
        raise NotImplementedError

    def test_retry_report_becomes_pending_retry(self, store: ErrorStore) -> None:
        """A retry report is stored pending, due at the given time, with a 'reported' entry."""
        record, created = store.add(report(), now=100.0, next_attempt_at=160.0, actor="warehouse")
        assert created
        assert record.status is Status.PENDING_RETRY
        assert record.next_attempt_at == 160.0
        assert record.count == 1
        assert record.payload == {"productId": "p-1", "quantity": 2}
        assert [(h.action, h.actor, h.at) for h in record.history] == [
            ("reported", "warehouse", 100.0)
        ]
        assert store.get(record.id) == record

    def test_review_report_needs_review(self, store: ErrorStore) -> None:
        """A review report waits for a person and has no due time."""
        record, _ = store.add(
            report(action=Action.REVIEW, kind="product.not_found"),
            now=1.0,
            next_attempt_at=99.0,
            actor="warehouse",
        )
        assert record.status is Status.NEEDS_REVIEW
        assert record.next_attempt_at is None

    def test_same_failure_twice_is_one_record_with_a_count(self, store: ErrorStore) -> None:
        """Reports with one dedupe key, while the record is open, are one record with a count."""
        first, _ = store.add(report(), now=1.0, next_attempt_at=2.0, actor="a")
        again, created = store.add(report(), now=5.0, next_attempt_at=9.0, actor="b")
        assert not created
        assert again.id == first.id
        assert again.count == 2
        assert again.updated_at == 5.0
        assert [h.action for h in again.history] == ["reported", "reported again"]
        assert store.find(Query()).total == 1

    def test_a_failure_repeated_many_times_keeps_a_bounded_history(self, store: ErrorStore) -> None:
        """The first REPEAT_SAMPLE repeats are in the history; later ones only count."""
        for n in range(60):
            record, _ = store.add(report(), now=float(n), next_attempt_at=None, actor=f"a{n}")
        assert record.count == 60
        assert (record.created_at, record.updated_at) == (0.0, 59.0)  # first and last seen
        actions = [h.action for h in record.history]
        assert actions == ["reported"] + ["reported again"] * REPEAT_SAMPLE
        assert [h.actor for h in record.history][-1] == f"a{REPEAT_SAMPLE}"

    def test_repeats_in_one_batch_count_on_one_record_with_a_sampled_history(
        self, store: ErrorStore
    ) -> None:
        """Thirty repeats stored together count as thirty, their history sampled as ever."""
        store.add(report(), now=0.0, next_attempt_at=None, actor="first")
        results = store.add_many(
            [(report(), f"r{n}") for n in range(30)] + [(report(payload={"n": 1}), "new")],
            now=1.0,
            next_attempt_at=[None] * 31,
            actor=[f"a{n}" for n in range(31)],
        )
        ids = {record_id for record_id, _ in results[:30]}
        assert len(ids) == 1
        assert not any(created for _, created in results[:30])
        assert results[30][1] is True
        record = store.get(ids.pop())
        assert record.count == 31
        assert record.updated_at == 1.0
        assert [h.action for h in record.history] == ["reported"] + ["reported again"] * (
            REPEAT_SAMPLE
        )
        assert [h.actor for h in record.history][1:] == [f"a{n}" for n in range(REPEAT_SAMPLE)]
        # their receipts were kept: a redelivery of one of them counts nothing
        again, created = store.add(
            report(), now=2.0, next_attempt_at=None, actor="a", report_id="r7"
        )
        assert (again.count, created) == (31, False)

    def test_a_report_delivered_twice_counts_once(self, store: ErrorStore) -> None:
        """The same report id stored twice changes nothing the second time."""
        first, created = store.add(
            report(), now=1.0, next_attempt_at=2.0, actor="a", report_id="r-1"
        )
        again, created_again = store.add(
            report(), now=5.0, next_attempt_at=9.0, actor="a", report_id="r-1"
        )
        assert created
        assert not created_again
        assert again == first
        other, _ = store.add(report(), now=6.0, next_attempt_at=9.0, actor="a", report_id="r-2")
        assert other.id == first.id
        assert other.count == 2

    def test_report_ids_are_remembered_for_receipt_seconds_then_retired(
        self, store: ErrorStore
    ) -> None:
        """A redelivery within RECEIPT_SECONDS counts once; older ids retire, two per report."""
        for n in range(6):
            store.add(report(), now=float(n), next_attempt_at=None, actor="a", report_id=f"old{n}")
        # just inside the window: still remembered, and nothing retired yet
        inside, _ = store.add(
            report(), now=RECEIPT_SECONDS, next_attempt_at=None, actor="a", report_id="old0"
        )
        assert inside.count == 6
        assert _receipts(store) == 6
        later = RECEIPT_SECONDS + 10.0
        store.add(report(), now=later, next_attempt_at=None, actor="a", report_id="new0")
        assert _receipts(store) == 7 - 2  # the two oldest went
        store.add(report(), now=later, next_attempt_at=None, actor="a", report_id="new1")
        store.add(report(), now=later, next_attempt_at=None, actor="a", report_id="new2")
        assert _receipts(store) == 3  # only the new ones: the table is bounded by the window
        # a retired id is a new delivery now: counted again (the record is still open)
        again, _ = store.add(report(), now=later, next_attempt_at=None, actor="a", report_id="old0")
        assert again.count == 6 + 3 + 1

    def test_add_many_stores_all_in_one_go(self, store: ErrorStore) -> None:
        """A batch is stored as single adds would be: new records, joins and redeliveries."""
        store.add(report(payload={"n": 0}), now=0.0, next_attempt_at=1.0, actor="w", report_id="r0")
        results = store.add_many(
            [
                (report(payload={"n": 1}), "r1"),
                (report(payload={"n": 1}), "r2"),  # same dedupe key: joins r1's record
                (report(payload={"n": 0}), "r0"),  # a redelivery: counts once
                (report(action=Action.REVIEW, payload={"n": 2}), None),
            ],
            now=5.0,
            next_attempt_at=[6.0, 6.0, 6.0, None],
            actor=["w", "w", "w", "w"],
        )
        assert [created for _, created in results] == [True, False, False, True]
        assert results[0][0] == results[1][0]
        assert store.get(results[0][0]).count == 2
        assert store.get(results[2][0]).count == 1
        assert store.find(Query()).total == 3

    def test_a_report_delivered_twice_in_one_batch_counts_once(self, store: ErrorStore) -> None:
        results = store.add_many(
            [(report(payload={"n": 1}), "r1"), (report(payload={"n": 1}), "r1")],
            now=5.0,
            next_attempt_at=[6.0, 6.0],
            actor=["w", "w"],
        )
        assert results[0] == (results[1][0], True)
        assert results[1][1] is False
        assert store.get(results[0][0]).count == 1

    def test_the_record_add_returns_is_the_record_stored(self, store: ErrorStore) -> None:
        """A new record as `add` answers it is equal to the one read back, field by field."""
        given = report(
            payload={"z": [1, 2.5, None, "é"], "a": {"y": True, "b": "x"}},
            traceback="Traceback ...",
            correlation_id="c-1",
        )
        made, created = store.add(given, now=7.25, next_attempt_at=9.5, actor="shop", report_id="x")
        assert created
        assert made == store.get(made.id)
        # and it reads the same: the payload's keys in their stored order
        assert json.dumps(made.to_json()) == json.dumps(store.get(made.id).to_json())
        review, _ = store.add(
            report(action=Action.REVIEW, payload={"n": 3}), now=8.0, next_attempt_at=9.0, actor="a"
        )
        assert review == store.get(review.id)
        assert review.next_attempt_at is None

    def test_a_failing_batch_stores_nothing(self, store: ErrorStore) -> None:
        """One bad report in a batch rolls the whole batch back."""
        with pytest.raises(TypeError):
            store.add_many(
                [(report(payload={"n": 1}), "a"), (report(payload={"bad": {1}}), "b")],
                now=1.0,
                next_attempt_at=[2.0, 2.0],
                actor=["w", "w"],
            )
        assert store.find(Query()).total == 0

    def test_a_closed_record_does_not_absorb_new_reports(self, store: ErrorStore) -> None:
        """Once resolved, the same failure reported again opens a new record."""
        first, _ = store.add(report(), now=1.0, next_attempt_at=2.0, actor="a")
        store.move(first.id, Status.RESOLVED, now=3.0, actor="ops", note="fixed by hand")
        second, created = store.add(report(), now=4.0, next_attempt_at=5.0, actor="a")
        assert created
        assert second.id != first.id

    def test_unknown_id(self, store: ErrorStore) -> None:
        """Reading or moving an unknown id raises RecordNotFound."""
        with pytest.raises(RecordNotFound):
            store.get("nope")
        with pytest.raises(RecordNotFound):
            store.move("nope", Status.RESOLVED, now=1.0, actor="ops")

    def test_move_records_who_when_and_the_note(self, store: ErrorStore) -> None:
        """A person's move is kept in the audit trail with their note."""
        record, _ = store.add(
            report(action=Action.REVIEW), now=1.0, next_attempt_at=None, actor="w"
        )
        moved = store.move(record.id, Status.RESOLVED, now=7.0, actor="anna", note="found it")
        assert moved.status is Status.RESOLVED
        assert moved.history[-1].actor == "anna"
        assert moved.history[-1].note == "found it"
        assert moved.history[-1].action == "resolved"
        assert moved.updated_at == 7.0

    def test_invalid_move_changes_nothing(self, store: ErrorStore) -> None:
        """A closed record cannot be reopened; the refusal leaves it untouched."""
        record, _ = store.add(report(), now=1.0, next_attempt_at=2.0, actor="w")
        discarded = store.move(record.id, Status.DISCARDED, now=2.0, actor="ops")
        with pytest.raises(InvalidMove) as info:
            store.move(record.id, Status.PENDING_RETRY, now=3.0, actor="ops")
        assert info.value.current is Status.DISCARDED
        assert store.get(record.id) == discarded

    def test_claim_takes_only_due_records_once(self, store: ErrorStore) -> None:
        """Due records are claimed once, leased, and claimable again only when the lease ends."""
        due, _ = store.add(report(payload={"n": 1}), now=0.0, next_attempt_at=10.0, actor="w")
        later, _ = store.add(report(payload={"n": 2}), now=0.0, next_attempt_at=50.0, actor="w")
        store.add(
            report(action=Action.REVIEW, payload={"n": 3}), now=0.0, next_attempt_at=None, actor="w"
        )
        claimed = store.claim_due(now=10.0, lease=30.0, limit=10)
        assert [r.id for r in claimed] == [due.id]
        assert claimed[0].status is Status.RETRYING
        assert claimed[0].next_attempt_at == 40.0
        assert store.claim_due(now=20.0, lease=30.0, limit=10) == []
        reclaimed = store.claim_due(now=41.0, lease=30.0, limit=10)  # the worker died
        assert {r.id for r in reclaimed} == {due.id}
        assert later.id not in {r.id for r in reclaimed}

    def test_claim_respects_the_limit_oldest_due_first(self, store: ErrorStore) -> None:
        """At most ``limit`` records are claimed, earliest due first."""
        ids = [
            store.add(report(payload={"n": n}), now=0.0, next_attempt_at=float(5 - n), actor="w")[
                0
            ].id
            for n in range(5)
        ]
        claimed = store.claim_due(now=100.0, lease=1.0, limit=2)
        assert [r.id for r in claimed] == [ids[4], ids[3]]

    def test_attempt_outcomes_move_the_record(self, store: ErrorStore) -> None:
        """A failed attempt goes back to pending (or to review); a good one resolves."""
        record, _ = store.add(report(), now=0.0, next_attempt_at=0.0, actor="w")
        store.claim_due(now=0.0, lease=5.0, limit=1)
        failed = store.record_attempt(
            record.id,
            ok=False,
            detail="locked",
            now=1.0,
            to=Status.PENDING_RETRY,
            next_attempt_at=11.0,
            actor="worker",
        )
        assert failed.status is Status.PENDING_RETRY
        assert failed.next_attempt_at == 11.0
        store.claim_due(now=11.0, lease=5.0, limit=1)
        done = store.record_attempt(
            record.id,
            ok=True,
            detail="HTTP 200",
            now=12.0,
            to=Status.RESOLVED,
            next_attempt_at=None,
            actor="worker",
        )
        assert done.status is Status.RESOLVED
        assert done.next_attempt_at is None
        assert [(a.at, a.ok, a.detail) for a in done.attempts] == [
            (1.0, False, "locked"),
            (12.0, True, "HTTP 200"),
        ]
        assert "attempt failed" in [h.action for h in done.history]

    def test_attempt_after_a_person_closed_it_keeps_their_decision(self, store: ErrorStore) -> None:
        """An attempt that ends after a person discarded the record is recorded, not applied."""
        record, _ = store.add(report(), now=0.0, next_attempt_at=0.0, actor="w")
        store.claim_due(now=0.0, lease=5.0, limit=1)
        store.move(record.id, Status.DISCARDED, now=1.0, actor="ops")
        after = store.record_attempt(
            record.id,
            ok=True,
            detail="late",
            now=2.0,
            to=Status.RESOLVED,
            next_attempt_at=None,
            actor="worker",
        )
        assert after.status is Status.DISCARDED
        assert len(after.attempts) == 1

    def test_a_late_worker_does_not_move_a_record_another_one_took_over(
        self, store: ErrorStore
    ) -> None:
        """A result that arrives after the lease ran out is recorded, not applied."""
        record, _ = store.add(report(), now=0.0, next_attempt_at=0.0, actor="w")
        [first] = store.claim_due(now=0.0, lease=5.0, limit=1)
        [second] = store.claim_due(now=6.0, lease=5.0, limit=1)  # the first worker looked dead
        late = store.record_attempt(
            record.id,
            ok=True,
            detail="late",
            now=7.0,
            to=Status.RESOLVED,
            next_attempt_at=None,
            actor="worker-1",
            lease=first.next_attempt_at,
        )
        assert late.status is Status.RETRYING
        assert late.next_attempt_at == second.next_attempt_at
        done = store.record_attempt(
            record.id,
            ok=True,
            detail="on time",
            now=8.0,
            to=Status.RESOLVED,
            next_attempt_at=None,
            actor="worker-2",
            lease=second.next_attempt_at,
        )
        assert done.status is Status.RESOLVED
        assert [a.detail for a in done.attempts] == ["late", "on time"]

    def test_list_filters_and_pages(self, store: ErrorStore) -> None:
        """Listing filters by status, kind, source, time and text, newest first, with a total."""
        for n in range(6):
            store.add(
                report(
                    kind="stock.decrement" if n % 2 else "order.not_found",
                    action=Action.RETRY if n % 2 else Action.REVIEW,
                    source="warehouse" if n < 3 else "orders",
                    payload={"n": n, "note": "Lost ORDER" if n == 4 else "x"},
                ),
                now=float(n),
                next_attempt_at=100.0,
                actor="w",
            )
        everything = store.find(Query())
        assert everything.total == 6
        assert [r.payload["n"] for r in everything.records] == [5, 4, 3, 2, 1, 0]
        assert store.find(Query(statuses=(Status.NEEDS_REVIEW,))).total == 3
        assert store.find(Query(kind="stock.decrement", source="orders")).total == 2
        assert [r.payload["n"] for r in store.find(Query(since=2.0, until=4.0)).records] == [3, 2]
        assert [r.payload["n"] for r in store.find(Query(text="lost order")).records] == [4]
        page = store.find(Query(limit=2, offset=2))
        assert page.total == 6
        assert [r.payload["n"] for r in page.records] == [3, 2]
        assert store.find(Query(text="100%_")).total == 0  # LIKE wildcards are literal

    def test_text_search_finds_a_substring_of_any_field_in_any_case(
        self, store: ErrorStore
    ) -> None:
        """The text is a substring (any case) of the kind, error type, message or payload."""
        made = {
            "kind": report(kind="warehouse.restock", dedupe_key="a"),
            "type": report(error_type="DeadlockDetected", dedupe_key="b"),
            "message": report(error_message='row "p-7" 100% locked_out', dedupe_key="c"),
            "payload": report(payload={"order": "O-12345", "why": "Ünïcode"}, dedupe_key="d"),
        }
        ids = {
            name: store.add(r, now=1.0, next_attempt_at=None, actor="w")[0].id
            for name, r in made.items()
        }

        def found(text: str) -> set[str]:
            matched = {r.id for r in store.find(Query(text=text, limit=500)).records}
            return {name for name, record_id in ids.items() if record_id in matched}

        assert found("RESTOCK") == {"kind"}
        assert found("adlockdet") == {"type"}
        assert found('"p-7" 100% lock') == {"message"}  # quotes and % are plain characters
        assert found("100%_") == set()  # LIKE wildcards are literal
        assert found("o-123") == {"payload"}
        assert found("Ünï") == {"payload"}  # stored as sent, not escaped
        assert found("O-") == {"payload"}  # shorter than three characters: still found
        assert found("12346") == set()
        assert found("database is locked") == {"kind", "type", "payload"}  # the default message

    def test_keyset_pages_walk_every_record_once_newest_first(self, store: ErrorStore) -> None:
        """Following next_after visits each match once, in order, ties in time included."""
        for n in range(7):
            at = float(n // 2)  # pairs share a created_at: the id orders them
            store.add(
                report(dedupe_key=f"k{n}", payload={"n": n}),
                now=at,
                next_attempt_at=None,
                actor="w",
            )
        store.add(report(kind="other", dedupe_key="x"), now=9.0, next_attempt_at=None, actor="w")
        everything = store.find(Query(kind="stock.decrement", limit=500)).records
        seen: list[str] = []
        query = Query(kind="stock.decrement", limit=3)
        while True:
            page = store.find(query)
            assert page.total == 7  # the count is of all matches, not those past the cursor
            seen += [r.id for r in page.records]
            if page.next_after is None:
                break
            query = attrs.evolve(query, after=page.next_after)
        assert seen == [r.id for r in everything]
        assert len(set(seen)) == 7

    def test_a_record_keeps_the_trace_of_its_latest_traced_report(self, store: ErrorStore) -> None:
        """A repeat with a trace replaces the record's trace ids; one without leaves them."""
        first, _ = store.add(
            report(trace_id=TRACE, span_id=SPAN), now=1.0, next_attempt_at=2.0, actor="w"
        )
        assert (first.trace_id, first.span_id) == (TRACE, SPAN)
        assert store.get(first.id) == first
        untraced, _ = store.add(report(), now=2.0, next_attempt_at=3.0, actor="w")
        assert (untraced.id, untraced.trace_id, untraced.span_id) == (first.id, TRACE, SPAN)
        later, _ = store.add(report(trace_id=OTHER_TRACE), now=3.0, next_attempt_at=4.0, actor="w")
        assert (later.trace_id, later.span_id) == (OTHER_TRACE, None)  # the pair, not a mix
        # repeats stored together: the last of them that carries a trace
        store.add_many(
            [
                (report(trace_id=TRACE, span_id=SPAN), None),
                (report(trace_id=OTHER_TRACE, span_id=OTHER_SPAN), None),
                (report(), None),
            ],
            now=4.0,
            next_attempt_at=[5.0, 5.0, 5.0],
            actor=["w", "w", "w"],
        )
        after = store.get(first.id)
        assert (after.count, after.trace_id, after.span_id) == (6, OTHER_TRACE, OTHER_SPAN)
        assert store.find(Query()).total == 1

    def test_records_are_listed_by_trace_newest_first(self, store: ErrorStore) -> None:
        """A trace id filter lists that trace's records only, with the other filters."""
        made = [
            store.add(
                report(payload={"n": n}, trace_id=trace, span_id=SPAN if n else None),
                now=float(n),
                next_attempt_at=None,
                actor="w",
            )[0]
            for n, trace in enumerate([TRACE, OTHER_TRACE, TRACE, None])
        ]
        page = store.find(Query(trace_id=TRACE))
        assert [r.id for r in page.records] == [made[2].id, made[0].id]
        assert page.total == 2
        assert store.find(Query(trace_id=TRACE, kind="other.kind")).total == 0
        assert store.find(Query(trace_id="f" * 32)).total == 0
        assert store.find(Query()).total == 4

    def test_a_count_past_the_limit_stops_there(
        self, store: ErrorStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past COUNT_LIMIT matches, total is the limit and total_exact is false."""
        import failsafe.errors._sqlstore as sqlstore

        monkeypatch.setattr(sqlstore, "COUNT_LIMIT", 4)
        for n in range(6):
            store.add(report(dedupe_key=f"k{n}"), now=float(n), next_attempt_at=None, actor="w")
        page = store.find(Query(limit=2))
        assert (page.total, page.total_exact) == (4, False)
        assert len(page.records) == 2
        exact = store.find(Query(since=3.0))
        assert (exact.total, exact.total_exact) == (3, True)

    def test_counts_per_status(self, store: ErrorStore) -> None:
        """Counts cover every status, zeros included."""
        store.add(report(), now=0.0, next_attempt_at=1.0, actor="w")
        store.add(
            report(action=Action.REVIEW, payload={}), now=0.0, next_attempt_at=None, actor="w"
        )
        counts = store.counts()
        assert counts == {
            "pending_retry": 1,
            "retrying": 0,
            "needs_review": 1,
            "resolved": 0,
            "discarded": 0,
        }

    def test_counts_follow_every_change(self, store: ErrorStore) -> None:
        """The counts (kept apart from the records) agree with the records after each write."""

        def agree() -> None:
            listed = {s.value: store.find(Query(statuses=(s,), limit=1)).total for s in Status}
            assert store.counts() == listed

        store.add(report(payload={"n": 1}), now=0.0, next_attempt_at=1.0, actor="w")
        store.add(report(payload={"n": 1}), now=0.5, next_attempt_at=1.0, actor="w")  # repeat
        store.add_many(
            [(report(payload={"n": 2}), "x"), (report(action=Action.REVIEW, payload={}), "y")],
            now=1.0,
            next_attempt_at=[2.0, None],
            actor=["w", "w"],
        )
        agree()
        claimed = store.claim_due(now=5.0, lease=10.0, limit=10)
        assert len(claimed) == 2
        agree()
        store.record_attempt(
            claimed[0].id,
            ok=False,
            detail="no",
            now=6.0,
            to=Status.NEEDS_REVIEW,
            next_attempt_at=None,
            actor="worker",
            lease=claimed[0].next_attempt_at,
        )
        agree()
        store.move(claimed[1].id, Status.RESOLVED, now=7.0, actor="ops")
        store.move(claimed[0].id, Status.DISCARDED, now=8.0, actor="ops")
        agree()
        assert sum(store.counts().values()) == 3

    def test_delete_closed_takes_old_closed_records_whole_and_never_open_ones(
        self, store: ErrorStore
    ) -> None:
        def add(n: int, at: float, **fields: Any) -> str:
            record, _ = store.add(
                report(payload={"n": n}, error_message=f"row {n} locked", **fields),
                now=at,
                next_attempt_at=at + 1,
                actor="w",
                report_id=f"r-{n}",
            )
            return record.id

        old_closed = [add(n, float(n)) for n in range(3)]
        for record_id in old_closed:
            store.move(record_id, Status.RESOLVED, now=10.0, actor="ops")
        old_open = add(3, 4.0)
        late_closed = add(4, 5.0)
        store.move(late_closed, Status.DISCARDED, now=500.0, actor="ops")  # closed later
        other_group = add(5, 6.0, kind="order.unknown")
        store.move(other_group, Status.DISCARDED, now=11.0, actor="ops")
        assert store.delete_closed(before=100.0, limit=2) == 2  # the oldest two
        assert store.delete_closed(before=100.0, limit=10) == 2
        assert store.delete_closed(before=100.0, limit=10) == 0
        for gone in (*old_closed, other_group):
            with pytest.raises(RecordNotFound):
                store.get(gone)
        assert store.get(old_open).status is Status.PENDING_RETRY
        assert store.get(late_closed).status is Status.DISCARDED
        assert store.counts() == {
            "pending_retry": 1,
            "retrying": 0,
            "needs_review": 0,
            "resolved": 0,
            "discarded": 1,
        }
        # the group with records left keeps its numbers; the emptied one is gone
        (group,) = store.groups(GroupQuery(statuses=())).groups
        assert (group.records, group.statuses["discarded"]) == (2, 1)
        with pytest.raises(GroupNotFound):
            store.group(store.groups(GroupQuery(statuses=())).groups[0].fingerprint + "x")
        assert store.groups(GroupQuery(statuses=(), kind="order.unknown")).total == 0
        # a deleted record's report id no longer finds it, and can be reported afresh
        lookup = store.lookup_id  # type: ignore[attr-defined]
        with pytest.raises(RecordNotFound):
            lookup("r-0")
        _, created = store.add(
            report(payload={"n": 0}), now=600.0, next_attempt_at=None, actor="w", report_id="r-0"
        )
        assert created

    def test_a_record_is_found_by_its_id_a_prefix_or_its_report_id(self, store: ErrorStore) -> None:
        record, _ = store.add(report(), now=0.0, next_attempt_at=None, actor="w", report_id="r-77")
        other, _ = store.add(report(payload={"n": 2}), now=1.0, next_attempt_at=None, actor="w")
        lookup = store.lookup_id  # type: ignore[attr-defined]
        assert lookup(record.id) == record.id
        assert lookup("r-77") == record.id  # the report's id, as ErrorSink.report returns it
        assert lookup(record.id[:12]) == record.id
        assert lookup(record.id[:8].upper()) == record.id
        assert lookup(other.id[:9]) == other.id
        for missing in (
            record.id[:7],
            "0" * 8 if not record.id.startswith("0") else "f" * 8,
            "not-hex!",
            record.id + "0",
            "",
        ):
            with pytest.raises(RecordNotFound):
                lookup(missing)

    # -- failure groups ---------------------------------------------------------------------
    def test_groups_follow_every_change(self, store: ErrorStore) -> None:
        """The groups' numbers (kept apart from the records) agree with the records."""

        def agree() -> None:
            records = store.find(Query(limit=500)).records
            expected: dict[str, dict[str, Any]] = {}
            for r in records:
                g = expected.setdefault(
                    r.fingerprint,
                    {"records": 0, "reports": 0, "statuses": dict.fromkeys(Status, 0), "src": {}},
                )
                g["records"] += 1
                g["reports"] += r.count
                g["statuses"][r.status] += 1
                g["src"][r.source] = g["src"].get(r.source, 0) + 1
            page = store.groups(GroupQuery(statuses=(), limit=500))
            assert page.total == len(expected)
            for group in page.groups:
                want = expected[group.fingerprint]
                assert group.records == want["records"]
                assert group.reports == want["reports"]
                assert group.statuses == {s.value: n for s, n in want["statuses"].items()}
                assert dict(group.sources) == want["src"]

        locked = {"error_message": "row 1 locked"}
        store.add(report(payload={"n": 1}, **locked), now=0.0, next_attempt_at=1.0, actor="w")
        store.add(report(payload={"n": 1}, **locked), now=0.5, next_attempt_at=1.0, actor="w")
        store.add(
            report(payload={"n": 2}, source="shop", error_message="row 2 locked"),
            now=0.7,
            next_attempt_at=1.0,
            actor="w",
        )
        store.add_many(
            [
                (report(payload={"n": 3}, error_message="row 3 locked"), "x"),
                (report(action=Action.REVIEW, payload={}, kind="order.unknown"), "y"),
            ],
            now=1.0,
            next_attempt_at=[2.0, None],
            actor=["w", "w"],
        )
        agree()
        assert store.groups(GroupQuery(statuses=())).total == 2
        claimed = store.claim_due(now=5.0, lease=10.0, limit=10)
        assert len(claimed) == 3
        agree()
        store.record_attempt(
            claimed[0].id,
            ok=False,
            detail="no",
            now=6.0,
            to=Status.NEEDS_REVIEW,
            next_attempt_at=None,
            actor="worker",
            lease=claimed[0].next_attempt_at,
        )
        store.move(claimed[1].id, Status.RESOLVED, now=7.0, actor="ops")
        agree()
        moved = store.move_group(
            claimed[0].fingerprint,
            Status.DISCARDED,
            statuses=(Status.NEEDS_REVIEW, Status.RETRYING),
            created_until=10.0,
            now=8.0,
            actor="ops",
            limit=500,
        )
        assert sorted(moved) == sorted([claimed[0].id, claimed[2].id])
        agree()

    def test_a_group_is_its_records_numbers_sources_and_hours(self, store: ErrorStore) -> None:
        hour = 3600.0
        start = 1_700_000_000.0 // hour * hour
        for n, (at, source) in enumerate(
            [(start, "a"), (start + 10, "b"), (start + 2 * hour, "a"), (start - 8 * 24 * hour, "c")]
        ):
            store.add(
                report(payload={"n": n}, source=source, error_message=f"row {n} locked"),
                now=at,
                next_attempt_at=None,
                actor="w",
            )
        # a repeat counts at the hour it came in
        store.add(
            report(payload={"n": 0}, source="a", error_message="row 0 locked"),
            now=start + 2 * hour + 5,
            next_attempt_at=None,
            actor="w",
        )
        (listed,) = store.groups(GroupQuery()).groups
        group = store.group(listed.fingerprint)
        assert group.fingerprint.startswith("v1-")
        assert (group.kind, group.error_type) == ("stock.decrement", "OperationalError")
        assert group.title == "row 0 locked"  # the message of the record stored first
        assert (group.records, group.reports, group.open) == (4, 5, 4)
        assert group.first_seen == start - 8 * 24 * hour
        assert group.last_seen == start + 2 * hour + 5
        assert group.sources == (("a", 2), ("b", 1), ("c", 1))
        # the hour 8 days before the last report is older than the chart's 7 days
        assert group.hours == ((start, 2), (start + 2 * hour, 2))
        assert listed.hours == ()  # a listing gives hours only when asked
        assert store.groups(GroupQuery(hours=True)).groups[0].hours == group.hours
        with pytest.raises(GroupNotFound):
            store.group("v1-0000000000000000")

    def test_groups_filter_order_and_page(self, store: ErrorStore) -> None:
        def add(kind: str, n: int, at: float, source: str = "warehouse") -> str:
            record, _ = store.add(
                report(kind=kind, payload={"n": n}, source=source, error_message=f"{kind} {n}"),
                now=at,
                next_attempt_at=None,
                actor="w",
            )
            return record.fingerprint

        big, *same = [add("stock.decrement", n, float(n)) for n in range(3)]
        assert same == [big, big]  # messages that differ by a number: one group
        old = add("order.unknown", 1, -100.0, source="payments")
        new = add("price.lookup", 1, 50.0)
        newest = store.groups(GroupQuery())
        assert [g.fingerprint for g in newest.groups] == [new, big, old]
        assert newest.total == 3
        largest = store.groups(GroupQuery(order="largest"))
        assert largest.groups[0].fingerprint == big
        assert [g.fingerprint for g in store.groups(GroupQuery(kind="order.unknown")).groups] == [
            old
        ]
        assert [g.fingerprint for g in store.groups(GroupQuery(source="payments")).groups] == [old]
        assert [g.fingerprint for g in store.groups(GroupQuery(text="PRICE")).groups] == [new]
        page = store.groups(GroupQuery(limit=1, offset=1))
        assert ([g.fingerprint for g in page.groups], page.total) == ([big], 3)
        store.move_group(
            old,
            Status.RESOLVED,
            statuses=(Status.PENDING_RETRY,),
            created_until=1e12,
            now=60.0,
            actor="ops",
            limit=10,
        )
        assert old not in [g.fingerprint for g in store.groups(GroupQuery()).groups]
        closed = store.groups(GroupQuery(statuses=(Status.RESOLVED,)))
        assert [g.fingerprint for g in closed.groups] == [old]
        assert store.groups(GroupQuery(statuses=())).total == 3
        with pytest.raises(ValueError, match="order"):
            GroupQuery(order="biggest")

    def test_move_group_moves_the_oldest_matching_records_with_history(
        self, store: ErrorStore
    ) -> None:
        ids = [
            store.add(
                report(action=Action.REVIEW, payload={"n": n}, error_message=f"row {n} locked"),
                now=float(n),
                next_attempt_at=None,
                actor="w",
            )[0].id
            for n in range(5)
        ]
        fingerprint = store.get(ids[0]).fingerprint
        moved = store.move_group(
            fingerprint,
            Status.PENDING_RETRY,
            statuses=(Status.NEEDS_REVIEW,),
            created_until=3.0,
            now=10.0,
            actor="ops",
            note="the database is back",
            next_attempt_at=10.0,
            limit=3,
        )
        assert moved == ids[:3]
        for record_id in ids[:3]:
            record = store.get(record_id)
            assert record.status is Status.PENDING_RETRY
            assert record.next_attempt_at == 10.0
            assert record.history[-1].actor == "ops"
            assert record.history[-1].note == "the database is back"
        # created after the cut: left alone, as are records already moved
        again = store.move_group(
            fingerprint,
            Status.PENDING_RETRY,
            statuses=(Status.NEEDS_REVIEW,),
            created_until=3.0,
            now=11.0,
            actor="ops",
            limit=10,
        )
        assert again == [ids[3]]
        assert store.get(ids[4]).status is Status.NEEDS_REVIEW
        with pytest.raises(InvalidMove):
            store.move_group(
                fingerprint,
                Status.RETRYING,
                statuses=(Status.RESOLVED,),
                created_until=99.0,
                now=12.0,
                actor="ops",
                limit=1,
            )

    def test_a_report_chooses_its_own_group(self, store: ErrorStore) -> None:
        a, _ = store.add(
            report(fingerprint="stock-outage", payload={"a": 1}, error_message="one"),
            now=0.0,
            next_attempt_at=None,
            actor="w",
        )
        b, _ = store.add(
            report(fingerprint="stock-outage", payload={"b": 1}, kind="other.kind"),
            now=1.0,
            next_attempt_at=None,
            actor="w",
        )
        assert a.fingerprint == b.fingerprint == "stock-outage"
        assert store.group("stock-outage").records == 2
        assert [r.id for r in store.find(Query(fingerprint="stock-outage")).records] == [b.id, a.id]

    def test_a_failing_write_leaves_nothing(self, store: ErrorStore) -> None:
        """A report that cannot be stored raises and leaves no partial record."""
        with pytest.raises(TypeError):
            store.add(report(payload={"bad": {1, 2}}), now=0.0, next_attempt_at=1.0, actor="w")
        assert store.find(Query()).total == 0
        assert store.counts()["pending_retry"] == 0

    def test_concurrent_duplicates_make_one_record(self, store: ErrorStore) -> None:
        """Eight threads reporting the same failure at once make one record counted eight times."""
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def send() -> None:
            try:
                barrier.wait(10)
                store.add(report(), now=1.0, next_attempt_at=2.0, actor="w")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        page = store.find(Query())
        assert page.total == 1
        assert page.records[0].count == 8

    def test_concurrent_claims_never_share_a_record(self, store: ErrorStore) -> None:
        """Workers claiming at once get disjoint records, and every due record is claimed."""
        for n in range(40):
            store.add(report(payload={"n": n}), now=0.0, next_attempt_at=0.0, actor="w")
        barrier = threading.Barrier(4)
        claimed: list[list[str]] = [[] for _ in range(4)]

        def work(i: int) -> None:
            barrier.wait(10)
            while batch := store.claim_due(now=1.0, lease=60.0, limit=3):
                claimed[i] += [r.id for r in batch]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        every = [rid for part in claimed for rid in part]
        assert len(every) == 40
        assert len(set(every)) == 40


def _receipts(store: ErrorStore) -> int:
    """The report ids a SQL store remembers."""
    with store._transaction() as run:  # type: ignore[attr-defined]
        count: int = run("SELECT COUNT(*) FROM failsafe_error_receipts", ()).fetchone()[0]
    return count


class GroupCommitContract:
    """Reports that arrive together share a transaction; each is answered for itself.

    These drive threads against a real store, so they wait on real events (``real_time``).
    """

    @pytest.fixture
    def store(self) -> ErrorStore:
        raise NotImplementedError

    def _held_open(self, store: Any) -> tuple[list[int], threading.Event, threading.Event]:
        """Count transactions; hold the first until ``gate`` is set (``first`` says it waits)."""
        opened: list[int] = []
        first, gate = threading.Event(), threading.Event()
        real = store._transaction

        def counting() -> Any:
            opened.append(1)
            if len(opened) == 1:
                first.set()
                gate.wait(10)
            return real()

        store._transaction = counting
        return opened, first, gate

    @staticmethod
    def _queued(store: Any, n: int) -> None:
        pause = threading.Event()
        for _ in range(1000):
            if store._group is not None and len(store._group._queue) >= n:
                return
            pause.wait(0.005)
        raise AssertionError(f"{n} reports never queued")

    @pytest.mark.real_time
    def test_reports_arriving_together_share_one_transaction(self, store: Any) -> None:
        opened, first, gate = self._held_open(store)
        results: dict[int, tuple[Any, bool]] = {}

        def add(n: int) -> None:
            results[n] = store.add(
                report(dedupe_key=f"k{n}", payload={"n": n}),
                now=1.0,
                next_attempt_at=None,
                actor="w",
                report_id=f"r{n}",
            )

        leader = threading.Thread(target=add, args=(0,))
        leader.start()
        first.wait(10)
        others = [threading.Thread(target=add, args=(n,)) for n in range(1, 8)]
        for t in others:
            t.start()
        self._queued(store, 8)  # the leader is still in the queue until its transaction opens
        gate.set()
        for t in [leader, *others]:
            t.join(10)
        assert len(opened) == 1  # eight reports, one transaction
        assert sorted(results) == list(range(8))
        assert all(created for _, created in results.values())
        assert {record.payload["n"] for record, _ in results.values()} == set(range(8))
        for n, (record, _) in results.items():
            assert store.get(record.id).payload == {"n": n}

    @pytest.mark.real_time
    def test_one_failing_report_in_a_group_fails_only_its_caller(self, store: Any) -> None:
        opened, first, gate = self._held_open(store)
        real_add = store._add

        def add_or_fail(run: Any, rep: Report, *args: Any) -> Any:
            if rep.kind == "boom":
                real_add(run, rep, *args)  # written, then undone with its savepoint
                raise RuntimeError("this report's own failure")
            return real_add(run, rep, *args)

        real_add_all = store._add_all

        def add_all_or_fail(run: Any, group: Any) -> Any:
            results = real_add_all(run, group)  # written, then undone with the transaction
            if any(args[0].kind == "boom" for args in group):
                raise RuntimeError("this report's own failure")
            return results

        store._add = add_or_fail
        store._add_all = add_all_or_fail
        outcomes: dict[str, Any] = {}

        def add(kind: str) -> None:
            try:
                outcomes[kind] = store.add(
                    report(kind=kind), now=1.0, next_attempt_at=None, actor="w"
                )[0]
            except RuntimeError as exc:
                outcomes[kind] = exc

        leader = threading.Thread(target=add, args=("first",))
        leader.start()
        first.wait(10)
        rest = [threading.Thread(target=add, args=(k,)) for k in ("boom", "last")]
        for t in rest:
            t.start()
        self._queued(store, 3)
        gate.set()
        for t in [leader, *rest]:
            t.join(10)
        assert len(opened) == 2  # the group in one go, undone; then a savepoint each
        assert isinstance(outcomes["boom"], RuntimeError)
        assert store.get(outcomes["first"].id).kind == "first"
        assert store.get(outcomes["last"].id).kind == "last"
        assert store.find(Query(kind="boom")).total == 0
