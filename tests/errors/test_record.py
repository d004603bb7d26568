"""Report.from_json refuses what JSON or the stores cannot keep, naming where."""

from __future__ import annotations

from typing import Any

import pytest

from failsafe.errors import InvalidReport, Report

BASE = {"kind": "stock.decrement", "action": "retry", "source": "warehouse"}


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"payload": {"amount": float("nan")}}, "payload.amount", "not a JSON number"),
        ({"payload": [1, float("inf")]}, "payload[1]", "not a JSON number"),
        ({"payload": {"note": "a\x00b"}}, "payload.note", "NUL"),
        ({"payload": {"note": "\ud800"}}, "payload.note", "surrogate"),
        ({"error_message": "x\x00"}, "error_message", "NUL"),
        ({"payload": {1: "x"}}, "payload", "non-string key"),
    ],
)
def test_unstorable_values_are_refused_by_name(
    extra: dict[str, Any], field: str, words: str
) -> None:
    """NaN, infinities, NUL, lone surrogates and non-string keys are refused, naming where."""
    with pytest.raises(InvalidReport) as info:
        Report.from_json({**BASE, **extra})
    assert info.value.field == field
    assert words in str(info.value)


def test_deep_nesting_is_refused() -> None:
    """A payload nested deeper than 64 levels is refused."""
    payload: Any = {}
    for _ in range(70):
        payload = {"x": payload}
    with pytest.raises(InvalidReport, match="nests deeper than 64"):
        Report.from_json({**BASE, "payload": payload})


def test_an_ordinary_report_passes() -> None:
    """A report of plain JSON values is accepted as it is."""
    report = Report.from_json({**BASE, "payload": {"qty": 2.5, "items": [{"id": "é"}]}})
    assert report.payload == {"qty": 2.5, "items": [{"id": "é"}]}
