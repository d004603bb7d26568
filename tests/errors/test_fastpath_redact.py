"""The faster `Redactor` redacts exactly what the one before it did.

`Redactor` skips a rule's scan when the text cannot hold what the rule finds, compiles its
key names once and remembers which payload keys are secret. `_Reference` below is the
redactor as it was before (copied whole): generated texts, payloads and reports, rich in
near-secrets, come out of both the same, with the default key names and with odd ones.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failsafe.errors.record import Report, default_dedupe_key
from failsafe.errors.redact import (
    _CARD,
    _MAX_DECISIONS,
    _SCHEME,
    _USERINFO,
    DEFAULT_SECRET_KEYS,
    REDACTED,
    Redactor,
    _luhn,
    _pairs,
)

# -- the reference: the redactor before the fast paths -----------------------------------------


def _old_cards(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group())
        return REDACTED if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()

    return _CARD.sub(replace, text)


@attrs.frozen(kw_only=True)
class _Reference:
    secret_keys: tuple[str, ...] = DEFAULT_SECRET_KEYS
    cards: bool = True
    enabled: bool = True

    def _secret(self, key: str) -> bool:
        name = key.lower().replace("-", "_")
        return any(word.replace("-", "_") in name for word in self.secret_keys)

    def value(self, value: Any) -> Any:
        if not self.enabled:
            return value
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and self._secret(k) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            if len(value) == 2 and isinstance(value[0], str) and self._secret(value[0]):
                return [value[0], REDACTED]
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if (
            self.cards
            and isinstance(value, int)
            and not isinstance(value, bool)
            and 13 <= len(str(abs(value))) <= 19
            and _luhn(str(abs(value)))
        ):
            return REDACTED
        return value

    def text(self, text: str | None) -> str | None:
        if text is None or not self.enabled:
            return text
        text = _SCHEME.sub(rf"\1\2{REDACTED}", text)
        text = _USERINFO.sub(rf"\1{REDACTED}\3", text)
        pattern = _pairs(self.secret_keys)
        if pattern is not None:
            text = pattern.sub(rf"\1{REDACTED}", text)
        return _old_cards(text) if self.cards else text

    def report(self, report: Report) -> Report:
        if not self.enabled:
            return report
        defaulted = report.dedupe_key == default_dedupe_key(report)
        clean = attrs.evolve(
            report,
            payload=self.value(report.payload),
            error_type=self.text(report.error_type),
            error_message=self.text(report.error_message),
            traceback=self.text(report.traceback),
            correlation_id=self.text(report.correlation_id),
            dedupe_key=self.text(report.dedupe_key) or "",
        )
        if defaulted:
            clean = attrs.evolve(clean, dedupe_key=default_dedupe_key(clean))
        return clean


# -- generated texts, rich in what the rules look for -------------------------------------------

_PIECES = [
    "Bearer ", "bearer\t", "BASIC ", "Token ", "digest  ", "beaRer", "tokenize", "Authorization",
    "authorization: ", "Authorization: Bearer ", "password", "PassWord=", "passwd:", "secret",
    "SECRET", "api_key", "api-key", "Api_Key", "apikey", "X-Api-Key: ", "cookie", "Set-Cookie: ",
    "private_key", "card_number", "cvv", "token=", "token: ", '"token": "', "'", '"', "=", ":",
    " ", "\n", "\t", ",", ";", "&", "-", "_", "@", "://", "postgresql://", "app:", "https://u:p@h",
    "abc123", "XYZ", "s3cr3t", "hunter2", "[REDACTED]", "4111111111111111", "4111 1111 1111 1111",
    "4111-1111-1111-1111", "1234567890123", "12345678901234567890", "0", "7",
    "5df390bf4738437283204a68",
    "\u017f", "\u212a", "\u0130", "\u0131", "\u00e9", "\u0660\u0661\u0662", "\u2003", "\xa0",
    "ba\u017fic ", "to\u212aen ", "\u017fecret=", "pa\u017f\u017fword: ", "\U0001f600",
]  # fmt: skip
_TEXT = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=4)), max_size=12).map("".join)
_KEY = st.one_of(st.sampled_from(_PIECES), _TEXT)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([4111111111111111, -4111111111111111, 10**12, 10**19 - 1, 10**19])
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(_KEY, inner).map(list)
        | st.dictionaries(_KEY, inner, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = st.one_of(
    st.just(DEFAULT_SECRET_KEYS),
    st.lists(
        st.one_of(
            st.sampled_from(
                ["", "-x", "_x", "X-Internal", "session", "Sid", "\u017fecret", "p\u0430ss", "a.b"]
            ),
            st.text(max_size=6),
        ),
        max_size=4,
    ).map(lambda extra: (*DEFAULT_SECRET_KEYS, *extra)),
    st.lists(st.text(min_size=1, max_size=6), max_size=3).map(tuple),
)
SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@SETTINGS
@given(keys=_KEYS, cards=st.booleans(), texts=st.lists(_TEXT, min_size=1, max_size=4))
def test_texts_are_redacted_as_before(keys: tuple[str, ...], cards: bool, texts: list[str]) -> None:
    """Every generated text comes out of both redactors the same."""
    new, old = Redactor(secret_keys=keys, cards=cards), _Reference(secret_keys=keys, cards=cards)
    for text in texts:
        assert new.text(text) == old.text(text), text


@SETTINGS
@given(keys=_KEYS, cards=st.booleans(), value=_JSON)
def test_payloads_are_redacted_as_before(keys: tuple[str, ...], cards: bool, value: Any) -> None:
    """Every generated payload comes out of both redactors the same (twice: the cache)."""
    new, old = Redactor(secret_keys=keys, cards=cards), _Reference(secret_keys=keys, cards=cards)
    expected = old.value(value)
    assert new.value(value) == expected
    assert new.value(value) == expected


@SETTINGS
@given(
    keys=_KEYS,
    payload=_JSON,
    texts=st.lists(st.none() | _TEXT, min_size=4, max_size=4),
    dedupe=st.sampled_from(["", "given", "token=abc", "x" * 32, "default"]),
)
def test_reports_are_redacted_as_before(
    keys: tuple[str, ...], payload: Any, texts: list[str | None], dedupe: str
) -> None:
    """Every generated report comes out of both redactors the same, dedupe key included."""
    report = Report(
        kind="k",
        action="review",
        source="s",
        payload=payload,
        error_type=texts[0],
        error_message=texts[1],
        traceback=texts[2],
        correlation_id=texts[3],
        dedupe_key="" if dedupe == "default" else dedupe,
    )
    new = Redactor(secret_keys=keys).report(report)
    assert new == _Reference(secret_keys=keys).report(report)
    assert type(new) is Report


def test_a_subclass_of_report_is_kept() -> None:
    """A report of a subclass comes back of that subclass, as attrs.evolve made it."""

    @attrs.frozen(kw_only=True)
    class Tagged(Report):
        tag: str = "t"

    report = Tagged(kind="k", action="review", source="s", payload={"token": "x"}, tag="mine")
    clean = Redactor().report(report)
    assert type(clean) is Tagged
    assert clean == _Reference().report(report)
    assert clean.tag == "mine"


def test_a_disabled_redactor_changes_nothing() -> None:
    """enabled=False: the text, the value and the report are given back as they came."""
    report = Report(kind="k", action="review", source="s", payload={"password": "p"})
    redactor = Redactor(enabled=False)
    assert redactor.report(report) is report
    assert redactor.value(report.payload) is report.payload
    assert redactor.text("password=p") == "password=p"


def test_the_key_cache_is_bounded() -> None:
    """Made-up keys cannot grow the cache past its bound; decisions stay right."""
    redactor = Redactor()
    for n in range(3 * _MAX_DECISIONS):
        assert redactor.value({f"k{n}": "v", f"token{n}": "v"}) == {
            f"k{n}": "v",
            f"token{n}": REDACTED,
        }
        assert len(redactor._rules.decisions) <= _MAX_DECISIONS
