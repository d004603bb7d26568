"""Redaction: secrets are removed from reports before they are stored.

By default: values under keys named like a password, token, secret, API key,
authorization or cookie (at any depth of the payload, any case), and card numbers (13 to 19
digits, with spaces or dashes, that pass the Luhn check) in any string, the error message
and the traceback included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import attrs

from failsafe.errors.record import Report

__all__ = ["DEFAULT_SECRET_KEYS", "REDACTED", "Redactor"]

REDACTED: Final = "[REDACTED]"
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
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


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
            return [self.value(v) for v in value]
        if isinstance(value, str) and self.cards:
            return _cards(value)
        return value

    def text(self, text: str | None) -> str | None:
        """Return ``text`` with card numbers and ``key=value`` secrets replaced."""
        if text is None or not self.enabled:
            return text
        for key in self.secret_keys:
            text = re.sub(
                rf"(?i)({re.escape(key)}\w*[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&]+)",
                rf"\1{REDACTED}",
                text,
            )
        return _cards(text) if self.cards else text

    def report(self, report: Report) -> Report:
        """Return the report with its payload, message and traceback redacted.

        The dedupe key is computed before redaction, so it is unchanged.
        """
        if not self.enabled:
            return report
        return attrs.evolve(
            report,
            payload=self.value(report.payload),
            error_message=self.text(report.error_message),
            traceback=self.text(report.traceback),
        )

    @classmethod
    def with_keys(cls, extra: Iterable[str]) -> Redactor:
        """The default redactor plus more secret key names."""
        return cls(secret_keys=(*DEFAULT_SECRET_KEYS, *extra))
