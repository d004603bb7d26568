"""The service's intake: concurrent reports stored in groups, each answered after its commit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from failsafe.errors import ErrorDesk, Query, SQLiteStore, StoreUnavailable, _intake
from failsafe.errors._intake import Intake
from failsafe.errors.record import Report
from failsafe.exceptions import ConfigurationError
from tests.errors.store_contract import report


class HeldDesk(ErrorDesk):
    """A desk whose writer waits at a gate before each group, and notes each group's size."""

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__(store)
        self.gate = threading.Event()
        self.groups: list[int] = []
        self.fail: BaseException | None = None

    def report_each(self, reports: Sequence[tuple[Report, str, str | None]]) -> Any:
        self.gate.wait(10)
        self.groups.append(len(reports))
        if self.fail is not None:
            raise self.fail
        return super().report_each(reports)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[HeldDesk]:
    store = SQLiteStore(tmp_path / "errors.db")
    yield HeldDesk(store)
    store.close()


async def _queued(intake: Intake, n: int) -> None:
    for _ in range(1000):
        if intake._waiting >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"fewer than {n} reports waiting")


def test_reports_waiting_together_are_stored_in_one_group(desk: HeldDesk) -> None:
    intake = Intake(desk)

    async def main() -> list[Any]:
        tasks = [
            asyncio.ensure_future(
                intake.report(report(payload={"n": n}), actor="shop", report_id=f"r{n}")
            )
            for n in range(20)
        ]
        await _queued(intake, 20)
        desk.gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert [record.payload for record, _ in results] == [{"n": n} for n in range(20)]
    assert all(created for _, created in results)
    # the first report may have been taken alone before the others queued; the rest in one go
    assert sum(desk.groups) == 20
    assert len(desk.groups) <= 2
    assert desk.store.find(Query()).total == 20


def test_one_bad_report_fails_only_its_own_request(desk: HeldDesk) -> None:
    store: Any = desk.store
    real_add_all, real_add = store._add_all, store._add

    def add_all(run: Any, group: Any) -> Any:  # the group fails whole: one report is bad
        results = real_add_all(run, group)
        if any(args[0].kind == "boom" for args in group):
            raise RuntimeError("this report's own failure")
        return results

    def add(run: Any, rep: Report, *args: Any) -> Any:  # then each alone: only it fails
        if rep.kind == "boom":
            raise RuntimeError("this report's own failure")
        return real_add(run, rep, *args)

    store._add_all, store._add = add_all, add
    intake = Intake(desk)

    async def main() -> list[Any]:
        tasks = [
            asyncio.ensure_future(intake.report(r, actor="shop", report_id=None))
            for r in (report(payload={"n": 1}), report(kind="boom"), report())
        ]
        await _queued(intake, 3)
        desk.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, bad, last = asyncio.run(main())
    assert isinstance(bad, RuntimeError)
    assert first[0].payload == {"n": 1}
    assert last[1] is True
    assert desk.store.find(Query()).total == 2


def test_when_the_store_is_away_every_waiting_report_is_refused(desk: HeldDesk) -> None:
    intake = Intake(desk)
    desk.fail = StoreUnavailable("down", retry_after=2.0)

    async def main() -> list[Any]:
        tasks = [
            asyncio.ensure_future(
                intake.report(report(payload={"n": n}), actor="a", report_id=None)
            )
            for n in range(3)
        ]
        await _queued(intake, 3)
        desk.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)


def test_a_report_past_the_bound_is_refused_at_once(desk: HeldDesk) -> None:
    intake = Intake(desk, max_waiting=3)

    async def main() -> tuple[list[Any], BaseException | None]:
        tasks = [
            asyncio.ensure_future(
                intake.report(report(payload={"n": n}), actor="a", report_id=None)
            )
            for n in range(3)
        ]
        await _queued(intake, 3)
        refused = None
        try:
            await intake.report(report(payload={"n": 99}), actor="a", report_id=None)
        except StoreUnavailable as exc:
            refused = exc
        desk.gate.set()
        return await asyncio.gather(*tasks), refused

    stored, refused = asyncio.run(main())
    assert refused is not None
    assert "3 reports are waiting" in str(refused)
    assert refused.retry_after_header == "1"
    assert len(stored) == 3
    assert desk.store.find(Query(text="99")).total == 0  # nothing of it was written


def test_a_request_that_went_away_still_has_its_report_stored(desk: HeldDesk) -> None:
    intake = Intake(desk)

    async def main() -> Any:
        gone = asyncio.ensure_future(
            intake.report(report(payload={"n": 1}), actor="a", report_id="x")
        )
        kept = asyncio.ensure_future(
            intake.report(report(payload={"n": 2}), actor="a", report_id="y")
        )
        await _queued(intake, 2)
        gone.cancel()
        desk.gate.set()
        return await kept

    record, created = asyncio.run(main())
    assert created
    assert record.payload == {"n": 2}
    assert desk.store.find(Query()).total == 2  # the one whose client hung up too


def test_answers_go_to_the_event_loop_that_asked(desk: HeldDesk) -> None:
    """One intake used from two event loops in turn (its writer outlives the first)."""
    intake = Intake(desk)
    desk.gate.set()
    one = asyncio.run(intake.report(report(payload={"n": 1}), actor="a", report_id=None))
    two = asyncio.run(intake.report(report(payload={"n": 2}), actor="a", report_id=None))
    assert (one[0].payload, two[0].payload) == ({"n": 1}, {"n": 2})


def test_the_writer_ends_when_idle_and_the_next_report_starts_one(
    desk: HeldDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_intake, "IDLE_SECONDS", 0.0)  # idle at once: no wait at all
    intake = Intake(desk)
    desk.gate.set()
    asyncio.run(intake.report(report(payload={"n": 1}), actor="a", report_id=None))
    for thread in threading.enumerate():
        if thread.name == "failsafe-errors-intake":
            thread.join(10)
    assert intake._running == 0
    record, _ = asyncio.run(intake.report(report(payload={"n": 2}), actor="a", report_id=None))
    assert record.payload == {"n": 2}


def test_a_store_with_a_bad_writers_count_is_refused_at_construction(desk: HeldDesk) -> None:
    class Odd(SQLiteStore):
        writers = "4"  # type: ignore[assignment]

    odd = Odd(desk.store.path)  # type: ignore[attr-defined]
    try:
        with pytest.raises(ConfigurationError, match="writers must be a positive integer"):
            Intake(ErrorDesk(odd))
        with pytest.raises(ConfigurationError, match="got 0"):
            Intake(desk, writers=0)
    finally:
        odd.close()
