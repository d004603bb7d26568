"""Redaction: secrets are removed from reports before they are spooled, sent or stored.

By default, in every text of a report (payload strings at any depth, error type and
message, traceback, correlation id, an explicit dedupe key):

- values under keys named like a password, token, secret, API key, authorization or cookie
  (payload keys at any depth, any case; ``key=value``, ``key: value`` and ``"key": "value"``
  in text; ``[name, value]`` pairs such as header lists);
- the credential after ``Bearer``, ``Basic`` and ``Token``;
- the password in a URL (``postgresql://app:SECRET@db/x`` keeps ``app``);
- card numbers (13 to 19 digits, with spaces or dashes, that pass the Luhn check), in
  strings and as JSON numbers.

A report's default dedupe key is computed from the redacted report, so it reveals nothing
the record does not show.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any, Final

import attrs

from failsafe.errors.record import Report, default_dedupe_key

__all__ = ["DEFAULT_SECRET_KEYS", "REDACTED", "Redactor"]

REDACTED: Final = "[REDACTED]"
"""What a secret is replaced by: the string ``[REDACTED]``.

It takes the place of a secret key's value, of the credential after ``Bearer`` / ``Basic`` /
``Token``, of a URL's password and of a card number (a JSON number too becomes this
string); the text around it is kept.
"""

DEFAULT_SECRET_KEYS: Final = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "set-cookie",
    "private_key",
    "card_number",
    "cvv",
)
"""The key names a [`Redactor`][failsafe.errors.Redactor] treats as secret by default.

A key is secret when one of these is part of its name, in any case and with ``-`` and
``_`` alike: ``Password``, ``X-Api-Key``, ``access_token`` and ``Set-Cookie`` all are. Its
value is replaced by [`REDACTED`][failsafe.errors.redact.REDACTED], under a payload key at
any depth, after ``key=`` / ``key: `` / ``"key": `` in text, and as the second item of a
``[name, value]`` pair (a header list's entry).
[`Redactor.with_keys`][failsafe.errors.Redactor.with_keys] adds names to these.
"""
# not inside a longer word: a hex id such as 5df390bf4738437283204a68 holds a digit run
_CARD = re.compile(r"(?<![0-9A-Za-z])(?:\d[ -]?){12,18}\d(?![0-9A-Za-z])")
# the credential of an Authorization value, wherever it appears
_SCHEME = re.compile(r"(?i)\b(bearer|basic|token|digest)(\s+)([A-Za-z0-9._~+/=-]{4,})")
# a password in a URL's userinfo: scheme://user:PASSWORD@host
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)([^\s/@]+)(@)")

# Most texts hold no secret, and each rule's scan costs far more than a look for what it
# cannot match without; these looks are exact (a rule that can match always runs):
# - _SCHEME needs one of its words: in an ASCII text, in the lower-cased text;
# - _USERINFO needs "://" and "@"; a key=value pair needs ":" or "=" and, in an ASCII text
#   (with ASCII key names), the first part of a key name in the lower-cased text;
# - _CARD needs 13 digits, one space or dash at most between two.
# (Only ASCII texts are looked at in lower case: (?i) also matches some other characters,
# such as U+017F, the long s, for "s", that str.lower() does not turn into ASCII.)
_SCHEME_WORDS = re.compile("bearer|basic|token|digest")
_CARD_HINT = re.compile(r"\d(?:[ -]?\d){12}")
# an int whose decimal form has 13 to 19 digits, as a card number has
_CARD_LOW: Final = 10**12
_CARD_HIGH: Final = 10**19
_MAX_DECISIONS: Final = 1024


def _key_pattern(key: str) -> str:
    """A key name as found in text: ``api_key`` also matches ``api-key`` and ``apikey``."""
    return "[-_]?".join(re.escape(part) for part in re.split(r"[-_]", key))


def _scheme(match: re.Match[str]) -> str:
    return match[1] + match[2] + REDACTED


def _userinfo(match: re.Match[str]) -> str:
    return match[1] + REDACTED + match[3]


def _pair(match: re.Match[str]) -> str:
    return match[1] + REDACTED


@functools.lru_cache(maxsize=32)
def _pairs(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for every ``key=value`` / ``key: value`` secret of ``keys``, compiled once."""
    if not keys:
        return None
    names = "|".join(_key_pattern(key) for key in sorted(keys, key=len, reverse=True))
    return re.compile(
        rf"(?i)((?:{names})[\w-]*[\"']?\s*[:=]\s*[\"']?"
        r"(?:(?:bearer|basic|token|digest)\s+)?+)"
        rf"(?!{re.escape(REDACTED)})([^\s\"',;&]+)"
    )


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        n = int(char)
        if index % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _cards(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group())
        return REDACTED if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()

    return _CARD.sub(replace, text)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


class _Rules:
    """What a `Redactor` compiles from its key names once, and its cache of key decisions.

    Attributes:
        pairs: The ``key=value`` pattern (`_pairs`), ``None`` without key names.
        key_hint: Finds the first part of a key name in a lower-cased ASCII text; ``None``
            when that cannot rule a key out (a non-ASCII name, or one starting with ``-`` or
            ``_``).
        words: Finds a secret word (``-`` read as ``_``) in a key name in lower case with
            ``-`` read as ``_``; ``None`` without key names.
        decisions: Whether a payload key is secret, by key: at most `_MAX_DECISIONS` keys
            (emptied when full, so keys an attacker makes up cannot grow it; threads adding
            at once may pass the bound by one each until the next one empties it).
    """

    __slots__ = ("decisions", "key_hint", "pairs", "words")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.pairs = _pairs(keys)
        firsts = [re.split(r"[-_]", key)[0] for key in keys]
        self.key_hint = (
            re.compile("|".join(re.escape(first.lower()) for first in firsts))
            if keys and all(first and first.isascii() for first in firsts)
            else None
        )
        # the same test as `word.replace("-", "_") in name`, for every word in one scan
        self.words = (
            re.compile("|".join(re.escape(word.replace("-", "_")) for word in keys))
            if keys
            else None
        )
        self.decisions: dict[str, bool] = {}


@attrs.frozen(kw_only=True)
class Redactor:
    """Removes secrets from a report's payload, message and traceback.

    Args:
        secret_keys: Substrings of key names whose values are secret (compared in lower
            case, ``-`` and ``_`` alike).
        cards: Whether to redact card numbers in strings.
        enabled: ``False`` stores reports as they come (for tests of your own).
    """

    secret_keys: tuple[str, ...] = attrs.field(default=DEFAULT_SECRET_KEYS, converter=_strings)
    cards: bool = True
    enabled: bool = True
    _rules: _Rules = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_rules", _Rules(self.secret_keys))

    def _secret(self, key: str) -> bool:
        """Whether a key's value is secret: a secret word is part of its name.

        Decided once per key (`_Rules.decisions`): payloads repeat their keys.
        """
        decisions = self._rules.decisions
        secret = decisions.get(key)
        if secret is None:
            words = self._rules.words
            secret = words is not None and words.search(key.lower().replace("-", "_")) is not None
            if len(decisions) >= _MAX_DECISIONS:
                decisions.clear()
            decisions[key] = secret
        return secret

    def value(self, value: Any) -> Any:
        """Return ``value`` (any JSON value) with its secrets replaced by ``[REDACTED]``."""
        if not self.enabled:
            return value
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and self._secret(k) else self._value(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            if len(value) == 2 and isinstance(value[0], str) and self._secret(value[0]):
                return [value[0], REDACTED]  # a (name, value) pair: a header list's entry
            return [self._value(v) for v in value]
        if (
            self.cards
            and isinstance(value, int)
            and not isinstance(value, bool)
            and _CARD_LOW <= abs(value) < _CARD_HIGH  # 13 to 19 digits
            and _luhn(str(abs(value)))
        ):
            return REDACTED
        return value

    def text(self, text: str | None) -> str | None:
        """Return ``text`` with its secrets replaced (see the module's list)."""
        if text is None or not self.enabled:
            return text
        return self._text(text)

    def _text(self, text: str) -> str:
        # each rule runs only when the text can hold what it finds (see _SCHEME_WORDS)
        rules = self._rules
        ascii_text = text.isascii()  # stays so: what replaces a secret is ASCII
        if not ascii_text or _SCHEME_WORDS.search(text.lower()):
            text = _SCHEME.sub(_scheme, text)
        if "://" in text and "@" in text:
            text = _USERINFO.sub(_userinfo, text)
        pattern = rules.pairs
        if (
            pattern is not None
            and (":" in text or "=" in text)
            and (
                not ascii_text
                or rules.key_hint is None
                or rules.key_hint.search(text.lower()) is not None
            )
        ):
            text = pattern.sub(_pair, text)
        if self.cards and _CARD_HINT.search(text):
            text = _cards(text)
        return text

    def report(self, report: Report) -> Report:
        """Return the report with every text redacted.

        A default dedupe key (one the reporter did not give) is computed again from the
        redacted report: the key of the unredacted one would let a reader of the record
        recover a short secret by hashing guesses. A given key is redacted as text.
        """
        if not self.enabled:
            return report
        key = report.dedupe_key
        # a default key is 32 hex digits: one of another length was given (no hash needed)
        defaulted = len(key) == 32 and key == default_dedupe_key(report)
        # an empty key is computed again by Report, from the redacted fields
        changes: dict[str, Any] = {
            "payload": self._value(report.payload),
            "error_type": self.text(report.error_type),
            "error_message": self.text(report.error_message),
            "traceback": self.text(report.traceback),
            "correlation_id": self.text(report.correlation_id),
            "dedupe_key": "" if defaulted else self._text(key) or "",
        }
        if type(report) is not Report:
            return attrs.evolve(report, **changes)
        # what attrs.evolve does, without looking up the fields each time
        return Report(
            kind=report.kind,
            action=report.action,
            source=report.source,
            fingerprint=report.fingerprint,
            trace_id=report.trace_id,
            span_id=report.span_id,
            **changes,
        )

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A report's JSON body (as an `ErrorSink` sends it), redacted the same way."""
        if not self.enabled:
            return body
        clean = dict(body)
        if "payload" in clean:
            clean["payload"] = self.value(clean["payload"])
        for name in ("error_type", "error_message", "traceback", "correlation_id", "dedupe_key"):
            if isinstance(clean.get(name), str):
                clean[name] = self.text(clean[name])
        return clean

    @classmethod
    def with_keys(cls, extra: Iterable[str]) -> Redactor:
        """The default redactor plus more secret key names."""
        return cls(secret_keys=(*DEFAULT_SECRET_KEYS, *extra))
