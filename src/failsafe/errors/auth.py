"""Access to the Error-handling service: one bearer token for reporting, one for review.

Tokens come from the environment (``FAILSAFE_ERRORS_REPORT_TOKEN``,
``FAILSAFE_ERRORS_REVIEW_TOKEN``) or from files named by ``..._TOKEN_FILE``; they are
compared in constant time. Without tokens the service only listens on loopback, and
(`LoopbackOnly`) answers only requests addressed to loopback, refusing cross-origin writes.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from failsafe.exceptions import ConfigurationError

__all__ = ["LoopbackOnly", "Tokens", "is_loopback"]


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


_UNSAFE: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_MAX_HOSTS: Final = 256


def _host_name(value: str) -> str:
    """The host part of a ``Host`` value or an origin's authority (no port, no brackets)."""
    if value.startswith("["):  # [::1] or [::1]:8090
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


class LoopbackOnly:
    """ASGI middleware for a service with an open door (a token not set), on loopback.

    Binding to loopback keeps other machines out, but not a web page in the user's browser:
    with DNS rebinding, ``attacker.example`` resolves to 127.0.0.1 and the page's requests
    reach the service with ``Host: attacker.example``; a page can also POST a form to
    ``http://127.0.0.1:8090`` (a cross-origin write). So while a door is open, a request is
    refused (403) unless its ``Host`` names loopback (``127.0.0.1``, ``::1``, ``localhost``,
    any port), and a write (POST, PUT, PATCH, DELETE) that carries an ``Origin`` is refused
    unless that origin is the request's own (same host and port).

    Whether a ``Host`` value names loopback is decided once per distinct value (parsing an
    address costs more than the rest of the check): the middleware keeps at most 256
    decisions, and forgets them all when full (so made-up Host values cannot grow it).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._loopback: dict[str, bool] = {}

    def _names_loopback(self, host: str) -> bool:
        """``is_loopback`` of a ``Host`` value's host name, remembered (see the class)."""
        loopback = self._loopback.get(host)
        if loopback is None:
            loopback = is_loopback(_host_name(host))
            if len(self._loopback) >= _MAX_HOSTS:
                self._loopback.clear()
            self._loopback[host] = loopback
        return loopback

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, or answer 403 naming the header that refused it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1").strip().lower()
            elif name == b"origin":
                origin = value.decode("latin-1").strip().lower()
        problem = field = None
        if host is None or not self._names_loopback(host):
            field = "host"
            problem = (
                f"Host: {host!r} is not this machine; without both tokens the service"
                " answers only requests addressed to 127.0.0.1, ::1 or localhost"
            )
        elif origin is not None and scope["method"] in _UNSAFE:
            _, _, authority = origin.partition("://")
            if authority != host:
                field = "origin"
                problem = (
                    f"Origin: {origin[:200]!r} is another site; without both tokens the"
                    " service refuses writes from other origins"
                )
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": problem, "field": field}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
