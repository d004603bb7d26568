"""The failure-group fingerprint: what it keeps, what it takes out, and its version."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failsafe.errors import InvalidReport, Report
from failsafe.errors.fingerprint import (
    FINGERPRINT_PATTERN,
    FINGERPRINT_VERSION,
    fingerprint,
    normalise_message,
    top_frames,
)

TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/.venv/lib/python3.11/site-packages/warehouse/api.py", line 88, in order
    stock.decrement(item)
  File "/srv/app/warehouse/stock.py", line 41, in decrement
    db.execute(sql)
  File "/usr/lib/python3.11/sqlite3/dbapi2.py", line 12, in execute
    raise OperationalError("database is locked")
sqlite3.OperationalError: database is locked
"""


def failure(**fields: object) -> Report:
    base: dict[str, object] = {
        "kind": "stock.decrement",
        "action": "retry",
        "source": "warehouse",
        "error_type": "OperationalError",
        "error_message": "row 4711 locked after 2.5 s",
    }
    base.update(fields)
    return Report(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "normal"),
    [
        ("row 4711 locked after 2.5 s", "row <n> locked after <n> s"),
        ("order 6f1c2a9e-0b7d-4c4e-9a63-2d1f5e8b7c10 not found", "order <uuid> not found"),
        ("object at 0x7f3a9c2b10d0 is gone", "object at <hex> is gone"),
        ("etag 9f86d081884c7d65 mismatch", "etag <hex> mismatch"),
        ("KeyError: 'productId'", "KeyError: '<value>'"),
        ('no column "price_eur"', 'no column "<value>"'),
        (
            "expired at 2026-12-07T06:15:31Z, now 2026-12-07 06:16:00",
            "expired at <time>, now <time>",
        ),
        ("timeout at 12:30:05.123", "timeout at <time>"),
        ("  two\n  lines\tand   spaces ", "two lines and spaces"),
        ("p-77 out of stock", "p-<n> out of stock"),
        ("deadbeef is a word here, cafe too", "deadbeef is a word here, cafe too"),
        ("", ""),
        (None, ""),
    ],
)
def test_what_varies_is_replaced(message: str | None, normal: str) -> None:
    assert normalise_message(message) == normal


def test_only_the_first_2000_characters_are_read() -> None:
    assert normalise_message("a" * 5000) == "a" * 2000


def test_top_frames_are_file_and_function_innermost_last() -> None:
    assert top_frames(TRACEBACK) == ("api.py:order", "stock.py:decrement", "dbapi2.py:execute")
    assert top_frames(TRACEBACK, limit=1) == ("dbapi2.py:execute",)
    assert top_frames("not a python traceback") == ()
    assert top_frames(None) == ()
    windows = '  File "C:\\\\app\\\\stock.py", line 3, in decrement\n'
    assert top_frames(windows) == ("stock.py:decrement",)


def test_the_same_failure_with_other_numbers_is_one_group() -> None:
    a = fingerprint(failure(error_message="row 4711 locked after 2.5 s", payload={"n": 1}))
    b = fingerprint(failure(error_message="row 90 locked after 0.1 s", source="other"))
    assert a == b
    assert re.fullmatch(FINGERPRINT_PATTERN, a)
    assert a.startswith(f"v{FINGERPRINT_VERSION}-")


def test_line_numbers_and_install_paths_do_not_split_a_group() -> None:
    moved = TRACEBACK.replace("line 41", "line 57").replace("/srv/app/", "/opt/other/")
    assert fingerprint(failure(traceback=TRACEBACK)) == fingerprint(failure(traceback=moved))


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "stock.increment"},
        {"error_type": "IntegrityError"},
        {"error_message": "row 4711 missing"},
        {"traceback": TRACEBACK.replace("in decrement", "in increment")},
    ],
)
def test_another_kind_error_message_or_place_is_another_group(change: dict[str, str]) -> None:
    assert fingerprint(failure(traceback=TRACEBACK)) != fingerprint(
        failure(**{"traceback": TRACEBACK, **change})
    )


def test_a_report_may_choose_its_group() -> None:
    chosen = failure(fingerprint="stock-outage")
    assert fingerprint(chosen) == "stock-outage"
    assert fingerprint(failure(fingerprint="stock-outage", error_message="other")) == "stock-outage"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "-leading", "new\nline"])
def test_a_chosen_fingerprint_is_a_short_name(bad: str) -> None:
    with pytest.raises(InvalidReport) as caught:
        failure(fingerprint=bad)
    assert caught.value.field == "fingerprint"


def test_a_chosen_fingerprint_comes_through_json() -> None:
    data = failure(fingerprint="stock-outage").to_json()
    assert data["fingerprint"] == "stock-outage"
    assert Report.from_json(data).fingerprint == "stock-outage"
    assert "fingerprint" not in failure().to_json()


_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@given(
    words=st.lists(_WORDS, min_size=1, max_size=6),
    first=st.lists(st.integers(0, 10**9), min_size=6, max_size=6),
    second=st.lists(st.integers(0, 10**9), min_size=6, max_size=6),
)
def test_numbers_between_words_never_split_a_group(
    words: list[str], first: list[int], second: list[int]
) -> None:
    def message(numbers: list[int]) -> str:
        return " ".join(f"{w} {n}" for w, n in zip(words, numbers, strict=False))

    assert fingerprint(failure(error_message=message(first))) == fingerprint(
        failure(error_message=message(second))
    )


@given(st.text(max_size=300))
def test_normalising_twice_changes_nothing(text: str) -> None:
    once = normalise_message(text)
    assert normalise_message(once) == once
