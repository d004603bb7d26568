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


def _key_pattern(key: str) -> str:
    """A key name as found in text: ``api_key`` also matches ``api-key`` and ``apikey``."""
    return "[-_]?".join(re.escape(part) for part in re.split(r"[-_]", key))


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

    def _secret(self, key: str) -> bool:
        name = key.lower().replace("-", "_")
        return any(word.replace("-", "_") in name for word in self.secret_keys)

    def value(self, value: Any) -> Any:
        """Return ``value`` (any JSON value) with its secrets replaced by ``[REDACTED]``."""
        if not self.enabled:
            return value
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and self._secret(k) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            if len(value) == 2 and isinstance(value[0], str) and self._secret(value[0]):
                return [value[0], REDACTED]  # a (name, value) pair: a header list's entry
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
        """Return ``text`` with its secrets replaced (see the module's list)."""
        if text is None or not self.enabled:
            return text
        text = _SCHEME.sub(rf"\1\2{REDACTED}", text)
        text = _USERINFO.sub(rf"\1{REDACTED}\3", text)
        pattern = _pairs(self.secret_keys)
        if pattern is not None:
            text = pattern.sub(rf"\1{REDACTED}", text)
        return _cards(text) if self.cards else text

    def report(self, report: Report) -> Report:
        """Return the report with every text redacted.

        A default dedupe key (one the reporter did not give) is computed again from the
        redacted report: the key of the unredacted one would let a reader of the record
        recover a short secret by hashing guesses. A given key is redacted as text.
        """
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
