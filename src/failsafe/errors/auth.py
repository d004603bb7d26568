"""Access to the Error-handling service: one bearer token for reporting, one for review.

Tokens come from the environment (``FAILSAFE_ERRORS_REPORT_TOKEN``,
``FAILSAFE_ERRORS_REVIEW_TOKEN``) or from files named by ``..._TOKEN_FILE``; they are
compared in constant time. Without tokens the service only listens on loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from failsafe.exceptions import ConfigurationError

__all__ = ["Tokens", "is_loopback"]


def _read(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    path = env.get(f"{name}_FILE")
    if value and path:
        raise ConfigurationError(name, f"set either {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"{name}_FILE", f"cannot read {path}: {exc}") from None
    if value is not None and not value.strip():
        raise ConfigurationError(name, "is empty")
    return value or None


@attrs.frozen(kw_only=True, repr=False)
class Tokens:
    """The bearer tokens: ``report`` for services reporting, ``review`` for people reviewing.

    A ``None`` token means that door is open (acceptable only on loopback). The review
    token is also accepted for reporting.
    """

    report: str | None = None
    review: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tokens:
        """Read the tokens from the environment (or token files it names).

        Raises:
            ConfigurationError: If a token is empty, its file unreadable, or both a token
                and its file are set.
        """
        env = os.environ if env is None else env
        return cls(
            report=_read(env, "FAILSAFE_ERRORS_REPORT_TOKEN"),
            review=_read(env, "FAILSAFE_ERRORS_REVIEW_TOKEN"),
        )

    @property
    def complete(self) -> bool:
        """Whether both doors are locked."""
        return self.report is not None and self.review is not None

    def allows(self, door: str, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header opens ``door`` (``"report"`` or ``"review"``)."""
        wanted = [self.review] if door == "review" else [self.report, self.review]
        if door == "review" and self.review is None:
            return True
        if door == "report" and self.report is None:
            return True
        if not authorization or not authorization.startswith("Bearer "):
            return False
        given = authorization[len("Bearer ") :].encode()
        # compare against every accepted token, always, in constant time
        matches = [hmac.compare_digest(given, t.encode()) for t in wanted if t is not None]
        return any(matches)

    def check_listen(self, host: str) -> None:
        """Refuse to serve a non-loopback address without both tokens.

        Raises:
            ConfigurationError: Naming the missing token.
        """
        if is_loopback(host) or self.complete:
            return
        missing = (
            "FAILSAFE_ERRORS_REPORT_TOKEN"
            if self.report is None
            else ("FAILSAFE_ERRORS_REVIEW_TOKEN")
        )
        raise ConfigurationError(
            "host",
            f"{host} is not a loopback address: set {missing} (and its pair) to listen there",
        )

    def __repr__(self) -> str:
        shown = {
            k: "set" if v else None for k, v in (("report", self.report), ("review", self.review))
        }
        return f"Tokens({shown})"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
