"""The review pages: where a person lists open error records, reads one, and acts on it.

Server-rendered HTML (no script at all; a little CSS), mounted by the service at ``/review``:

- ``GET /review/``: the failure groups of the whole store (those with open records by
  default), with their numbers, sources and a chart of their last 24 hours; filters
  (status, kind, source, text), newest or largest first, pagination;
- ``GET /review/groups/{fingerprint}``: one group: its numbers, reports per hour over 24
  hours and 7 days, its records (with filters and pagination), and forms to retry, resolve
  or discard all its open records, each first showing how many records it will change;
- ``POST /review/groups/{fingerprint}/retry|resolve|discard``: without ``confirm``, the
  page saying how many records the action would change; with it, the action, then a 303
  redirect back to the group;
- ``GET /review/records``: records matching filters (status, kind, source, text, trace id,
  group), grouped by kind and error type, with pagination;
- ``GET /review/records/{id}``: one record with its payload, error, trace (a link to the
  records of its trace), attempts and history, and forms to resolve (with a note), retry or
  discard it;
- ``POST /review/records/{id}/resolve|retry|discard``: the action, then a 303 redirect back
  to the record; a refused move shows its reason on the record page (409);
- ``GET|POST /review/login`` and ``POST /review/logout``.

When the review token is set, every page needs it: an ``Authorization: Bearer`` header, or
the session cookie the login form sets (HttpOnly, SameSite=Strict; a signed session id and
its time, not the token; valid `SESSION_SECONDS`). Failed logins are limited per client
(`LOGIN_BURST` at once, then one every `LOGIN_EVERY` seconds; 429 with ``Retry-After``).
Every action form carries a CSRF token tied to the login session with HMAC (to a
per-process secret when no token is set), so another site cannot make a reviewer's browser
act. Every value shown is escaped.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, quote, urlencode

import attrs

from failsafe._extras import missing_extra

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import BaseRoute, Route
except ImportError as exc:
    raise missing_extra("errors", "failsafe.errors.review", exc) from exc

from failsafe.errors.alerts import Alerts
from failsafe.errors.api import _MAX_ID, _MAX_OFFSET
from failsafe.errors.auth import Tokens
from failsafe.errors.desk import GROUP_ACTIONS, ErrorDesk
from failsafe.errors.fingerprint import FINGERPRINT_PATTERN
from failsafe.errors.record import OPEN_STATUSES, ErrorRecord, InvalidReport, Status
from failsafe.errors.review_dlq import DeadLetters
from failsafe.errors.store import (
    EDITABLE,
    GROUP_ORDERS,
    MOVES,
    Group,
    GroupNotFound,
    GroupQuery,
    InvalidMove,
    Query,
    RecordNotFound,
    StoreError,
    StoreUnavailable,
    cursor_text,
    parse_cursor,
)

__all__ = [
    "AUTH_COOKIE",
    "CSRF_FIELD",
    "LOGIN_BURST",
    "LOGIN_CLIENTS",
    "LOGIN_EVERY",
    "NAME_COOKIE",
    "SESSION_SECONDS",
    "csrf_token",
    "review_routes",
]

AUTH_COOKIE: Final = "failsafe_review"
"""The cookie the login form sets (HttpOnly, SameSite=Strict): a session id, its time and an
HMAC of both with the review token. It does not hold the token."""

SESSION_SECONDS: Final = 12 * 3600
"""How long a login lasts; then the pages ask for the token again."""

LOGIN_BURST: Final = 5
"""Failed logins a client may make at once before it must wait."""

LOGIN_EVERY: Final = 12.0
"""Seconds after which a client may fail one more login (five a minute, sustained)."""

LOGIN_CLIENTS: Final = 10_000
"""Clients whose failed logins are remembered; the least recent is forgotten beyond it."""

NAME_COOKIE: Final = "failsafe_reviewer"
"""The cookie that remembers the name a reviewer last acted under (prefills "your name")."""

CSRF_FIELD: Final = "csrf"
"""The hidden form field that carries the CSRF token."""

_ACTIONS: Final = {
    "resolve": Status.RESOLVED,
    "retry": Status.PENDING_RETRY,
    "discard": Status.DISCARDED,
}
_DONE: Final = {
    "resolve": "Resolved.",
    "retry": "Queued for a retry now.",
    "discard": "Discarded.",
    "edit": "Payload saved; queued for a retry now.",
}
_GROUP_LABELS: Final = {
    "retry": "Retry every record that needs review",
    "resolve": "Resolve every open record",
    "discard": "Discard every open record",
}
_GROUP_DONE: Final = {
    "retry": "Queued {n} record{s} for a retry now.",
    "resolve": "Resolved {n} record{s}.",
    "discard": "Discarded {n} record{s}.",
}
_FINGERPRINT: Final = re.compile(FINGERPRINT_PATTERN)
_TRACE_ID: Final = re.compile("[0-9a-f]{32}")
_MAX_FORM_BYTES: Final = 64 * 1024
_MAX_ACTOR: Final = 200
_MAX_NOTE: Final = 10_000
_PAGE_SIZE: Final = 50

_STYLE: Final = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1em;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header form{margin-left:auto}
main{max-width:1100px;margin:1em auto;padding:0 1em}
table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:1em}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e3e6ea;vertical-align:top}
h2.group{font-size:1.05em;margin:1.4em 0 .3em}h2.group .n{color:#5a6270;font-weight:400}
td.num{text-align:right;font-variant-numeric:tabular-nums}.sub{color:#5a6270;font-size:.9em}
svg.chart{background:#fff;border:1px solid #e3e6ea}svg.chart rect{fill:#4a6fa5}
.charts{display:flex;gap:1.5em;flex-wrap:wrap}.charts figure{margin:0}
pre{background:#fff;border:1px solid #e3e6ea;padding:.7em;overflow:auto;white-space:pre-wrap}
.msg{padding:.6em 1em;border-radius:4px;margin:1em 0}
.error{background:#fde8e8;border:1px solid #e5a3a3}.ok{background:#e6f6ea;border:1px solid #9fd3ac}
.status{font-family:monospace;padding:.1em .4em;border-radius:3px;background:#e8ebf0}
.status.warn{background:#fde8e8;color:#8a1f1f}
.actions{display:flex;gap:1em;flex-wrap:wrap}
.actions form{background:#fff;border:1px solid #e3e6ea;padding:.8em;flex:1;min-width:240px}
label{display:block;margin:.3em 0}input[type=text],input[type=password],textarea,select{
width:100%;box-sizing:border-box;padding:.3em}
form.filters{display:flex;gap:.6em;flex-wrap:wrap;align-items:end}form.filters label{width:auto}
nav.pages{display:flex;gap:1em;margin:1em 0}
"""

_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_View = Callable[[Request], Awaitable[Response]]


class HandlerLookup(Protocol):
    """What the pages need of the retry handlers: the handler of a kind, or ``None``."""

    def get(self, kind: str) -> object:
        """The handler of ``kind`` (``None`` when there is none)."""
        ...


def _e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def csrf_token(tokens: Tokens, secret: bytes, session: str | None = None) -> str:
    """The CSRF token the review forms carry.

    Derived with HMAC-SHA256 from the review token (or from ``secret``, per process, when no
    review token is set) and the login ``session``'s id, so it changes with every login
    and is unknown to other sites.
    """
    key = tokens.review.encode() if tokens.review is not None else secret
    message = b"failsafe-review-csrf" + (b"|" + session.encode() if session else b"")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _signed(key: bytes, issued: int, nonce: str) -> str:
    mac = hmac.new(key, f"session|{issued}|{nonce}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{nonce}.{mac}"


class _LoginLimit:
    """Failed logins per client: a token bucket of `LOGIN_BURST`, one back per `LOGIN_EVERY`.

    At most `LOGIN_CLIENTS` clients are remembered (the least recently seen is forgotten).
    """

    def __init__(self) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, client: str, now: float) -> float:
        level, stamp = self._buckets.get(client, (float(LOGIN_BURST), now))
        return min(float(LOGIN_BURST), level + (now - stamp) / LOGIN_EVERY)

    def wait(self, client: str, now: float) -> float:
        """Seconds before ``client`` may try again (0: now)."""
        level = self._level(client, now)
        return 0.0 if level >= 1 else (1 - level) * LOGIN_EVERY

    def failed(self, client: str, now: float) -> None:
        """Count a failed login of ``client``."""
        self._buckets[client] = (self._level(client, now) - 1, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > LOGIN_CLIENTS:
            self._buckets.popitem(last=False)

    def forget(self, client: str) -> None:
        """A successful login: the client starts afresh."""
        self._buckets.pop(client, None)


class _BadForm(Exception):
    """A form the review pages cannot take: the status to answer with and why."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


async def _read_form(request: Request) -> dict[str, list[str]]:
    """Parse a urlencoded form body (at most 64 KiB): each field's values, in order."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise _BadForm(415, "the form must be sent as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise _BadForm(413, f"the form is over the limit of {_MAX_FORM_BYTES} bytes")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise _BadForm(400, "the form is not valid UTF-8") from None
    return parsed


class _Pages:
    """The review pages over one desk; see the module docstring."""

    def __init__(
        self,
        desk: ErrorDesk,
        tokens: Tokens,
        handlers: Callable[[str], object] | None,
        *,
        allow_edits: bool = False,
        alerts: Alerts | None = None,
    ) -> None:
        self.desk = desk
        self.tokens = tokens
        self.handler_of = handlers
        self.allow_edits = allow_edits
        self.alerts = alerts
        self.dead_letters = False  # whether the dead-letter pages are mounted beside
        self.secret = secrets.token_bytes(32)
        self.csrf = csrf_token(tokens, self.secret)  # without a login session
        self.logins = _LoginLimit()

    # -- plumbing ---------------------------------------------------------------------------
    def unhandled(self, kind: str, status: Status) -> bool:
        """Whether a record waits for automatic retries that no handler will run."""
        return (
            self.handler_of is not None
            and status in (Status.PENDING_RETRY, Status.RETRYING)
            and self.handler_of(kind) is None
        )

    def no_handler(self, kind: str, status: Status) -> str:
        """The "no handler" mark of such a record (empty for the others)."""
        if not self.unhandled(kind, status):
            return ""
        return (
            ' <span class="status warn" title="no handler is registered for this kind: its'
            ' automatic attempts fail">no handler</span>'
        )

    @staticmethod
    def base(request: Request) -> str:
        """The mount point's path, such as ``/review``."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the review token (header or login cookie)."""
        if self.tokens.review is None:
            return True
        header = request.headers.get("authorization")
        if header is not None:
            return self.tokens.allows("review", header)
        return self.session(request) is not None

    def session(self, request: Request) -> str | None:
        """The id of the request's login session, if its cookie is genuine and recent."""
        review = self.tokens.review
        cookie = request.cookies.get(AUTH_COOKIE)
        if review is None or not cookie or len(cookie) > 200:
            return None
        issued, _, rest = cookie.partition(".")
        nonce, _, _ = rest.partition(".")
        if not issued.isascii() or not issued.isdigit() or not nonce:
            return None
        expected = _signed(review.encode(), int(issued), nonce)
        if not hmac.compare_digest(cookie.encode(), expected.encode()):
            return None
        age = self.desk.clock.time() - int(issued)
        return nonce if 0 <= age < SESSION_SECONDS else None

    def csrf_for(self, request: Request) -> str:
        """The CSRF token of the request's login session (or of the process, without one)."""
        nonce = self.session(request)
        return self.csrf if nonce is None else csrf_token(self.tokens, self.secret, nonce)

    def page(
        self,
        request: Request,
        title: str,
        body: str,
        *,
        status: int = 200,
        nav: bool = True,
    ) -> HTMLResponse:
        """A whole HTML page around ``body`` (already escaped)."""
        base = self.base(request)
        logout = ""
        if nav and self.tokens.review is not None:
            logout = (
                f'<form method="post" action="{_e(base)}/logout">'
                f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(self.csrf_for(request))}">'
                '<button type="submit">Log out</button></form>'
            )
        header = f'<header><a href="{_e(base)}/">Error review</a>{logout}</header>' if nav else ""
        text = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)} · failsafe errors</title><style>{_STYLE}</style></head>"
            f"<body>{header}<main>{body}</main></body></html>"
        )
        return HTMLResponse(text, status_code=status, headers=self.security_headers())

    @staticmethod
    def security_headers() -> dict[str, str]:
        """Headers every review response carries: no scripts, no framing, no caching."""
        return {
            "content-security-policy": _CSP,
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "same-origin",
            "cache-control": "no-store",
        }

    def problem(self, request: Request, status: int, message: str) -> HTMLResponse:
        """An error page naming the problem."""
        body = f'<h1>Error {status}</h1><p class="msg error">{_e(message)}</p>'
        return self.page(request, f"Error {status}", body, status=status)

    def guarded(self, view: _View, *, post: bool = False) -> _View:
        """Wrap a view with the auth check (and, for a POST, the form and CSRF checks)."""

        async def endpoint(request: Request) -> Response:
            if not self.authorized(request):
                if request.method in ("GET", "HEAD"):
                    here = request.url.path
                    if request.url.query:
                        here += f"?{request.url.query}"
                    target = f"{self.base(request)}/login?" + urlencode({"next": here})
                    return RedirectResponse(target, status_code=303)
                refused = self.problem(request, 401, "log in with the review token first")
                refused.headers["www-authenticate"] = 'Bearer realm="failsafe review"'
                return refused
            if post:
                try:
                    form = await _read_form(request)
                except _BadForm as exc:
                    return self.problem(request, exc.status, exc.message)
                given = (form.get(CSRF_FIELD) or [""])[-1]
                if not hmac.compare_digest(given.encode(), self.csrf_for(request).encode()):
                    return self.problem(
                        request, 403, "the form's CSRF token is missing or wrong; reload the page"
                    )
                # the last value of each field; every value in ``form_lists`` (check boxes)
                request.state.form = {k: v[-1] for k, v in form.items()}
                request.state.form_lists = form
            return await view(request)

        return endpoint

    # -- login ------------------------------------------------------------------------------
    def login_form(self, request: Request, next_path: str, error: str = "") -> str:
        """The login form's HTML."""
        message = f'<p class="msg error">{_e(error)}</p>' if error else ""
        return (
            f"<h1>Log in to error review</h1>{message}"
            f'<form method="post" action="{_e(self.base(request))}/login">'
            f'<input type="hidden" name="next" value="{_e(next_path)}">'
            '<label>Review token <input type="password" name="token" autocomplete="off"'
            ' required autofocus></label><button type="submit">Log in</button></form>'
        )

    def safe_next(self, request: Request, value: str | None) -> str:
        """Where to go after login: a path under the mount point, never another site."""
        base = self.base(request)
        if (
            value
            and value.startswith(f"{base}/")
            and not value.startswith("//")
            and not any(c in value for c in "\\\r\n")
        ):
            return value
        return f"{base}/"

    async def login_get(self, request: Request) -> Response:
        """Show the login form (or go straight on when already authorized)."""
        target = self.safe_next(request, request.query_params.get("next"))
        if self.tokens.review is None or self.authorized(request):
            return RedirectResponse(target, status_code=303)
        return self.page(request, "Log in", self.login_form(request, target), nav=False)

    async def login_post(self, request: Request) -> Response:
        """Check the token; on success set the HttpOnly, SameSite=Strict cookie."""
        try:
            form = {k: v[-1] for k, v in (await _read_form(request)).items()}
        except _BadForm as exc:
            return self.problem(request, exc.status, exc.message)
        target = self.safe_next(request, form.get("next"))
        token = form.get("token", "")
        review = self.tokens.review
        if review is None:
            return RedirectResponse(target, status_code=303)
        client = request.client.host if request.client is not None else "unknown"
        now = self.desk.clock.monotonic()
        wait = self.logins.wait(client, now)
        if wait > 0:
            seconds = math.ceil(wait)
            body = self.login_form(
                request, target, f"Too many failed logins: try again in {seconds} s."
            )
            refused = self.page(request, "Log in", body, status=429, nav=False)
            refused.headers["retry-after"] = str(seconds)
            return refused
        if not token or not self.tokens.allows("review", f"Bearer {token}"):
            self.logins.failed(client, now)
            body = self.login_form(request, target, "That is not the review token.")
            return self.page(request, "Log in", body, status=401, nav=False)
        self.logins.forget(client)
        response = RedirectResponse(target, status_code=303)
        session = _signed(review.encode(), int(self.desk.clock.time()), secrets.token_hex(16))
        response.set_cookie(
            AUTH_COOKIE,
            session,
            max_age=SESSION_SECONDS,
            path=f"{self.base(request)}/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """Forget the login cookie."""
        response = RedirectResponse(f"{self.base(request)}/login", status_code=303)
        response.delete_cookie(
            AUTH_COOKIE, path=f"{self.base(request)}/", httponly=True, samesite="strict"
        )
        return response

    # -- the list -----------------------------------------------------------------------------
    async def records(self, request: Request) -> Response:
        """Records matching the filters (open ones by default), grouped by kind and error."""
        body = await self.record_listing(request, path="/records", fingerprint=None)
        if isinstance(body, Response):
            return body
        return self.page(request, "Error records", "<h1>Error records</h1>" + body)

    async def record_listing(
        self, request: Request, *, path: str, fingerprint: str | None
    ) -> str | Response:
        """The filter form, a page of records (by kind and error type) and the page links.

        ``path`` is the page's own (its links keep it); ``fingerprint``: only the records
        of this group (the group page's listing), else the ``group`` parameter's.
        """
        params = request.query_params
        status_value = params.get("status", "open") or "open"
        try:
            statuses = _statuses(status_value)
            limit = _int(params.get("limit"), "limit", _PAGE_SIZE, 1, 500)
            offset = _int(params.get("offset"), "offset", 0, 0, _MAX_OFFSET)
            after_text = params.get("after", "")
            # older than the previous page's last record: the "next" links carry it
            after = parse_cursor(after_text) if after_text else None
        except ValueError as exc:
            return self.problem(request, 400, str(exc))
        kind = params.get("kind", "").strip()
        source = params.get("source", "").strip()
        text = params.get("text", "").strip()
        for name, value in (("status", status_value), ("kind", kind), ("source", source)):
            if "\x00" in value:
                return self.problem(request, 400, f"{name} must not contain NUL characters")
        if "\x00" in text:
            return self.problem(request, 400, "text must not contain NUL characters")
        trace_id = params.get("trace_id", "").strip().lower()
        if trace_id and not _TRACE_ID.fullmatch(trace_id):
            return self.problem(
                request, 400, f"trace_id must be a trace id (32 hex digits), got {trace_id[:80]!r}"
            )
        group = fingerprint or params.get("group", "").strip()
        if group and not _FINGERPRINT.fullmatch(group):
            return self.problem(request, 400, f"group must be a fingerprint, got {group[:80]!r}")
        query = Query(
            statuses=statuses,
            kind=kind or None,
            source=source or None,
            text=text or None,
            fingerprint=group or None,
            trace_id=trace_id or None,
            limit=min(limit + 1, 500),  # one more than shown: whether a next page has any
            offset=0 if after else offset,
            after=after,
        )
        found = await run_in_threadpool(self.desk.find, query)
        shown_records = found.records[:limit]
        more = len(found.records) > limit or (limit == 500 and found.next_after is not None)
        last = shown_records[-1] if shown_records else None
        page = attrs.evolve(
            found,
            records=shown_records,
            next_after=(last.created_at, last.id) if more and last is not None else None,
        )
        filters = {
            "status": status_value,
            "kind": kind,
            "source": source,
            "text": text,
            "trace_id": trace_id,
        }
        if group and fingerprint is None:
            filters["group"] = group
        if not page.records:
            shown = ""
        elif after is not None:
            shown = f"; showing {len(page.records)} older than the page before"
        else:
            shown = f"; showing {offset + 1}-{offset + len(page.records)}"
        if not page.total_exact:
            matching = f"{page.total:,}+ records match"
        else:
            matching = "1 record matches" if page.total == 1 else f"{page.total} records match"
        body = [
            self.filter_form(request, filters, path=path),
            f'<p class="total">{matching}{shown}.</p>',
        ]
        if not page.records:
            body.append('<p class="msg ok">Nothing to review here.</p>')
        for (group_kind, error_type), records in _groups(page.records):
            reports = sum(r.count for r in records)
            body.append(
                f'<h2 class="group">{_e(group_kind)} · {_e(error_type or "no error type")} '
                f'<span class="n">({len(records)} record{"s" * (len(records) != 1)}, '
                f"{reports} report{'s' * (reports != 1)})</span></h2>"
            )
            body.append(self.record_table(request, records))
        body.append(
            self.pager(
                request,
                filters,
                limit,
                offset if after is None else None,
                page.next_after,
                path=path,
            )
        )
        return "".join(body)

    def filter_form(self, request: Request, filters: Mapping[str, str], *, path: str) -> str:
        """The GET form of the filters, showing the current ones."""
        choices = [("open", "open"), *((s.value, s.value) for s in Status), ("all", "all")]
        options = "".join(
            f'<option value="{_e(v)}"{" selected" * (v == filters["status"])}>{_e(label)}</option>'
            for v, label in choices
        )
        fields = "".join(
            f'<label>{_e(name)} <input type="text" name="{name}" value="{_e(filters[name])}">'
            "</label>"
            for name in ("kind", "source", "text", "trace_id")
            if name in filters
        )
        if "group" in filters:
            fields += f'<input type="hidden" name="group" value="{_e(filters["group"])}">'
        if "order" in filters:
            fields += (
                '<label>order <select name="order">'
                + "".join(
                    f'<option value="{o}"{" selected" * (o == filters["order"])}>{o}</option>'
                    for o in GROUP_ORDERS
                )
                + "</select></label>"
            )
        return (
            f'<form class="filters" method="get" action="{_e(self.base(request))}{_e(path)}">'
            f'<label>status <select name="status">{options}</select></label>{fields}'
            '<button type="submit">Filter</button></form>'
        )

    def record_table(self, request: Request, records: Sequence[ErrorRecord]) -> str:
        """One group's records as a table with links to each record."""
        base = self.base(request)
        rows = "".join(
            "<tr>"
            f'<td><a href="{_e(base)}/records/{_e(quote(r.id, safe=""))}">{_e(r.id[:12])}</a></td>'
            f'<td><span class="status">{_e(r.status.value)}</span>'
            f"{self.no_handler(r.kind, r.status)}</td>"
            f"<td>{_e(r.source)}</td><td>{r.count}</td><td>{_e(_when(r.created_at))}</td>"
            f"<td>{_e(_short(r.error_message))}</td></tr>"
            for r in records
        )
        return (
            "<table><thead><tr><th>record</th><th>status</th><th>source</th><th>reports</th>"
            f"<th>first reported</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>"
        )

    def pager(
        self,
        request: Request,
        filters: Mapping[str, str],
        limit: int,
        offset: int | None,
        next_after: tuple[float, str] | None,
        *,
        path: str,
    ) -> str:
        """Newest/previous/next links that keep the filters.

        "next" carries the last record's cursor (a page costs the same however deep it is);
        ``offset`` is ``None`` on a page reached by a cursor, whose place is not counted.
        """
        base = self.base(request)
        links = []

        def href(**at: Any) -> str:
            return f"{base}{path}?" + urlencode({**filters, "limit": limit, **at})

        if offset is None:
            links.append(f'<a rel="first" href="{_e(href())}">newest</a>')
        elif offset > 0:
            previous = href(offset=max(0, offset - limit))
            links.append(f'<a rel="prev" href="{_e(previous)}">previous</a>')
        if next_after is not None:
            older = href(after=cursor_text(next_after))
            links.append(f'<a rel="next" href="{_e(older)}">next</a>')
        return f'<nav class="pages">{"".join(links)}</nav>' if links else ""

    # -- failure groups -----------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        """The failure groups (those with open records by default), with a 24-hour chart each."""
        params = request.query_params
        status_value = params.get("status", "open") or "open"
        order = params.get("order", "newest") or "newest"
        try:
            statuses = _statuses(status_value)
            limit = _int(params.get("limit"), "limit", _PAGE_SIZE, 1, 500)
            offset = _int(params.get("offset"), "offset", 0, 0, _MAX_OFFSET)
            if order not in GROUP_ORDERS:
                raise ValueError(f"order must be newest or largest, got {order[:40]!r}")
        except ValueError as exc:
            return self.problem(request, 400, str(exc))
        filters = {
            "status": status_value,
            "kind": params.get("kind", "").strip(),
            "source": params.get("source", "").strip(),
            "text": params.get("text", "").strip(),
            "order": order,
        }
        for name, value in filters.items():
            if "\x00" in value:
                return self.problem(request, 400, f"{name} must not contain NUL characters")
        query = GroupQuery(
            statuses=statuses,
            kind=filters["kind"] or None,
            source=filters["source"] or None,
            text=filters["text"] or None,
            order=order,
            limit=limit,
            offset=offset,
            hours=True,
        )
        found = await run_in_threadpool(self.desk.store.groups, query)
        now = self.desk.clock.time()
        base = self.base(request)
        rows = "".join(
            "<tr>"
            f'<td><a href="{_e(base)}/groups/{_e(quote(g.fingerprint, safe=""))}">'
            f"{_e(_short(g.title, 90) or '(no message)')}</a>"
            f'<div class="sub">{_e(g.kind)} · {_e(g.error_type or "no error type")}</div></td>'
            f'<td class="num">{g.open:,}</td><td class="num">{g.records:,}</td>'
            f'<td class="num">{g.reports:,}</td>'
            f"<td>{_e(', '.join(s for s, _ in g.sources[:3]))}"
            f"{' …' if len(g.sources) > 3 else ''}</td>"
            f"<td>{_e(_when(g.first_seen))}</td><td>{_e(_when(g.last_seen))}</td>"
            f"<td>{_chart(g.hours, now, hours=24, width=120, height=24)}</td></tr>"
            for g in found.groups
        )
        shown = f"; showing {offset + 1}-{offset + len(found.groups)}" if found.groups else ""
        matching = "1 group matches" if found.total == 1 else f"{found.total:,} groups match"
        body = [
            "<h1>Failure groups</h1>",
            await self.alerts_banner(),
            f'<p><a href="{_e(base)}/records">all records</a>'
            + (f' · <a href="{_e(base)}/dlq">dead letters</a>' if self.dead_letters else "")
            + "</p>",
            self.filter_form(request, filters, path="/"),
            f'<p class="total">{matching}{shown}.</p>',
        ]
        if not found.groups:
            body.append('<p class="msg ok">Nothing to review here.</p>')
        else:
            body.append(
                '<table class="groups"><thead><tr><th>failure</th><th>open</th><th>records</th>'
                "<th>reports</th><th>sources</th><th>first seen</th><th>last seen</th>"
                f"<th>last 24 h</th></tr></thead><tbody>{rows}</tbody></table>"
            )
        links = []

        def href(at: int) -> str:
            return f"{base}/?" + urlencode({**filters, "limit": limit, "offset": at})

        if offset > 0:
            links.append(f'<a rel="prev" href="{_e(href(max(0, offset - limit)))}">previous</a>')
        if offset + len(found.groups) < found.total:
            links.append(f'<a rel="next" href="{_e(href(offset + limit))}">next</a>')
        if links:
            body.append(f'<nav class="pages">{"".join(links)}</nav>')
        return self.page(request, "Failure groups", "".join(body))

    async def alerts_banner(self) -> str:
        """A warning while alerts cannot be delivered (empty when they are, or there are none)."""
        if self.alerts is None:
            return ""
        state = await run_in_threadpool(self.alerts.status)
        if not state.failing:
            return ""
        return (
            '<p class="msg error" role="alert">Alerts are not getting through to the webhook:'
            f" {state.failing:,} failed, {state.waiting:,} waiting; the last error:"
            f" {_e(state.last_error or '-')}. They are tried again with backoff.</p>"
        )

    async def group_page(self, request: Request, *, message: str = "") -> Response:
        """One group: its numbers, charts, action forms, and its records."""
        fingerprint = request.path_params["fingerprint"]
        if not _FINGERPRINT.fullmatch(fingerprint):
            return self.problem(request, 404, f"no failure group {fingerprint[:80]!r}")
        try:
            group = await run_in_threadpool(self.desk.store.group, fingerprint)
        except GroupNotFound as exc:
            return self.problem(request, 404, str(exc))
        here = f"/groups/{quote(fingerprint, safe='')}"
        listing = await self.record_listing(request, path=here, fingerprint=fingerprint)
        if isinstance(listing, Response):
            return listing
        now = self.desk.clock.time()
        base = self.base(request)
        done = _GROUP_DONE.get(request.query_params.get("done", ""), "")
        if done:
            count = _int_or(request.query_params.get("changed"), 0)
            message = done.format(n=f"{count:,}", s="s" * (count != 1))
        mix = ", ".join(f"{n:,} {status}" for status, n in group.statuses.items() if n)
        facts = [
            ("kind", _e(group.kind)),
            ("error type", _e(group.error_type or "-")),
            ("records", f"{group.records:,} ({group.open:,} open)"),
            ("reports", f"{group.reports:,}"),
            ("statuses", _e(mix or "-")),
            ("sources", _e(", ".join(f"{s} ({n:,})" for s, n in group.sources) or "-")),
            ("first seen", _e(_when(group.first_seen))),
            ("last seen", _e(_when(group.last_seen))),
            ("fingerprint", f"<code>{_e(group.fingerprint)}</code>"),
        ]
        body = (
            f'<p><a href="{_e(base)}/">&larr; all groups</a></p>'
            f"<h1>{_e(_short(group.title, 200) or '(no message)')}</h1>"
            + (f'<p class="msg ok" role="status">{_e(message)}</p>' if message else "")
            + "<table>"
            + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
            + "</table>"
            + '<div class="charts"><figure><figcaption>reports per hour, last 24 hours'
            f"</figcaption>{_chart(group.hours, now, hours=24, width=480, height=80)}</figure>"
            "<figure><figcaption>reports per hour, last 7 days</figcaption>"
            f"{_chart(group.hours, now, hours=7 * 24, width=504, height=80)}</figure></div>"
            + self.group_forms(request, group)
            + "<h2>Records</h2>"
            + listing
        )
        return self.page(request, _short(group.title, 60) or group.fingerprint, body)

    def group_forms(self, request: Request, group: Group) -> str:
        """The retry/resolve/discard forms for a whole group, with what each would change."""
        name = request.cookies.get(NAME_COOKIE, "") or "reviewer"
        here = f"{self.base(request)}/groups/{quote(group.fingerprint, safe='')}"
        forms = []
        for action, (_, statuses) in GROUP_ACTIONS.items():
            matched = sum(group.statuses[s.value] for s in statuses)
            if not matched:
                continue
            forms.append(
                f'<form method="post" action="{_e(here)}/{action}" class="group-{action}">'
                f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(self.csrf_for(request))}">'
                f'<label>your name <input type="text" name="actor" value="{_e(name)}"'
                f' maxlength="{_MAX_ACTOR}" required></label>'
                f'<label>note <textarea name="note" rows="2" maxlength="{_MAX_NOTE}"></textarea>'
                f'</label><button type="submit">{_GROUP_LABELS[action]} ({matched:,} record'
                f"{'s' * (matched != 1)})</button></form>"
            )
        if not forms:
            return "<h2>Act on the group</h2><p>No open records: nothing to act on.</p>"
        return (
            "<h2>Act on the group</h2><p>Each asks you to confirm, showing how many records"
            f' it will change.</p><div class="actions">{"".join(forms)}</div>'
        )

    def group_acting(self, action: str) -> _View:
        """The POST view of a group action: first the count to confirm, then the action."""

        async def view(request: Request) -> Response:
            fingerprint = request.path_params["fingerprint"]
            if not _FINGERPRINT.fullmatch(fingerprint):
                return self.problem(request, 404, f"no failure group {fingerprint[:80]!r}")
            form: dict[str, str] = request.state.form
            actor = form.get("actor", "").strip() or "reviewer"
            note = form.get("note", "").strip() or None
            if len(actor) > _MAX_ACTOR:
                return self.problem(request, 422, f"your name is over {_MAX_ACTOR} characters")
            if note is not None and len(note) > _MAX_NOTE:
                return self.problem(request, 422, f"the note is over {_MAX_NOTE} characters")
            confirmed = form.get("confirm", "") == "yes"
            try:
                done = await run_in_threadpool(
                    lambda: self.desk.group_action(
                        fingerprint, action, actor=actor, note=note, dry_run=not confirmed
                    )
                )
            except GroupNotFound as exc:
                return self.problem(request, 404, str(exc))
            here = f"{self.base(request)}/groups/{quote(fingerprint, safe='')}"
            if not confirmed:
                return self.page(
                    request,
                    f"{action} a group",
                    self.confirm_form(request, here, action, done.matched, actor=actor, note=note),
                )
            target = f"{here}?" + urlencode({"done": action, "changed": done.changed})
            return self.done(request, target, actor)

        return view

    def confirm_form(
        self,
        request: Request,
        here: str,
        action: str,
        matched: int,
        *,
        actor: str,
        note: str | None,
    ) -> str:
        """The dry run's answer: how many records the action will change, and Confirm."""
        records = f"{matched:,} record{'s' * (matched != 1)}"
        if not matched:
            return (
                f'<h1>{_e(_GROUP_LABELS[action])}</h1><p class="msg ok">No record of this group'
                f' can take this action now.</p><p><a href="{_e(here)}">back to the group</a></p>'
            )
        return (
            f"<h1>{_e(_GROUP_LABELS[action])}: {records}</h1>"
            f'<p class="msg error" role="alert">This will change {records} of this group'
            " (each gets an entry in its history). Records reported after now are left"
            " alone.</p>"
            f'<form method="post" action="{_e(here)}/{action}" class="confirm-{action}">'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(self.csrf_for(request))}">'
            '<input type="hidden" name="confirm" value="yes">'
            f'<input type="hidden" name="actor" value="{_e(actor)}">'
            f'<input type="hidden" name="note" value="{_e(note or "")}">'
            f'<button type="submit">Confirm: {_e(action)} {records}</button> '
            f'<a href="{_e(here)}">cancel</a></form>'
        )

    # -- one record ---------------------------------------------------------------------------
    async def record(self, request: Request) -> Response:
        """One record with its payload, error, attempts, history and action forms."""
        record_id = request.path_params["record_id"]
        if not _plausible_id(record_id):
            return self.problem(request, 404, f"no error record with id {record_id[:80]!r}")
        try:
            record = await run_in_threadpool(self.desk.get, record_id)
        except RecordNotFound as exc:
            return self.problem(request, 404, str(exc))
        done = _DONE.get(request.query_params.get("done", ""), "")
        return self.record_page(request, record, ok=done)

    def record_page(
        self,
        request: Request,
        record: ErrorRecord,
        *,
        ok: str = "",
        error: str = "",
        status: int = 200,
        edited: str | None = None,
    ) -> HTMLResponse:
        """The HTML page of one record, with an optional success or error message.

        ``edited``: the payload text a refused edit sent, shown again in its form.
        """
        base = self.base(request)
        messages = ""
        if ok:
            messages += f'<p class="msg ok" role="status">{_e(ok)}</p>'
        if error:
            messages += f'<p class="msg error" role="alert">{_e(error)}</p>'
        facts = [
            (
                "status",
                f'<span class="status">{_e(record.status.value)}</span>'
                + self.no_handler(record.kind, record.status),
            ),
            ("kind", _e(record.kind)),
            ("source", _e(record.source)),
            ("asked for", _e(record.action.value)),
            ("reports", str(record.count)),
            ("first reported", _e(_when(record.created_at))),
            ("last changed", _e(_when(record.updated_at))),
            ("next attempt", _e(_when(record.next_attempt_at))),
            ("correlation id", _e(record.correlation_id or "-")),
            ("trace id", self.trace_link(request, record.trace_id)),
            ("span id", f"<code>{_e(record.span_id)}</code>" if record.span_id else "-"),
            ("dedupe key", _e(record.dedupe_key)),
        ]
        facts_html = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
        payload = json.dumps(record.payload, indent=2, sort_keys=True, ensure_ascii=False)
        attempts = "".join(
            f"<tr><td>{_e(_when(a.at))}</td><td>{'ok' if a.ok else 'failed'}</td>"
            f"<td>{_e(a.detail)}</td></tr>"
            for a in record.attempts
        )
        history = "".join(
            f"<tr><td>{_e(_when(h.at))}</td><td>{_e(h.actor)}</td><td>{_e(h.action)}</td>"
            f"<td>{_e(h.note or '')}</td></tr>"
            for h in record.history
        )
        body = (
            f'<p><a href="{_e(base)}/">&larr; all groups</a> · <a href="{_e(base)}/groups/'
            f"{_e(quote(record.fingerprint, safe=''))}\">this record's group</a></p>"
            f"<h1>{_e(record.kind)} <small>{_e(record.id)}</small></h1>{messages}"
            f"<table>{facts_html}</table>"
            f"<h2>Error</h2><table><tr><th>type</th><td>{_e(record.error_type or '-')}</td></tr>"
            f"<tr><th>message</th><td>{_e(record.error_message or '-')}</td></tr></table>"
            + (f"<pre>{_e(record.traceback)}</pre>" if record.traceback else "")
            + f'<h2>Payload</h2><pre class="payload">{_e(payload)}</pre>'
            + self.action_forms(request, record)
            + self.edit_form(request, record, edited)
            + "<h2>Attempts</h2>"
            + (
                "<table><thead><tr><th>when</th><th>outcome</th><th>detail</th></tr></thead>"
                f"<tbody>{attempts}</tbody></table>"
                if attempts
                else "<p>No automatic attempts yet.</p>"
            )
            + '<h2>History</h2><table class="history"><thead><tr><th>when</th><th>who</th>'
            f"<th>action</th><th>note</th></tr></thead><tbody>{history}</tbody></table>"
        )
        return self.page(request, f"{record.kind} {record.id[:12]}", body, status=status)

    def trace_link(self, request: Request, trace_id: str | None) -> str:
        """A record's trace id, linked to the listing of every record of that trace."""
        if trace_id is None:
            return "-"
        listing = f"{self.base(request)}/records?" + urlencode(
            {"status": "all", "trace_id": trace_id}
        )
        return (
            f'<a href="{_e(listing)}" title="every record of this trace">'
            f"<code>{_e(trace_id)}</code></a>"
        )

    def action_forms(self, request: Request, record: ErrorRecord) -> str:
        """The resolve/retry/discard forms the record's status allows."""
        allowed = [a for a, to in _ACTIONS.items() if to in MOVES[record.status]]
        if not allowed:
            return f"<h2>Act</h2><p>This record is {_e(record.status.value)}: it is closed.</p>"
        base = self.base(request)
        name = request.cookies.get(NAME_COOKIE, "") or "reviewer"
        labels = {
            "resolve": "Resolve (dealt with)",
            "retry": "Retry now",
            "discard": "Discard (not worth acting on)",
        }
        here = f"{base}/records/{quote(record.id, safe='')}"
        forms = "".join(
            f'<form method="post" action="{_e(here)}/{action}"'
            f' class="action-{action}">'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(self.csrf_for(request))}">'
            f'<label>your name <input type="text" name="actor" value="{_e(name)}"'
            f' maxlength="{_MAX_ACTOR}" required></label>'
            f'<label>note <textarea name="note" rows="3" maxlength="{_MAX_NOTE}"></textarea>'
            f'</label><button type="submit" name="do" value="{action}">{labels[action]}</button>'
            "</form>"
            for action in allowed
        )
        return f'<h2>Act</h2><div class="actions">{forms}</div>'

    def edit_form(self, request: Request, record: ErrorRecord, edited: str | None) -> str:
        """The form to correct the payload and retry (when edits are allowed and it may)."""
        if not self.allow_edits or record.status not in EDITABLE:
            return ""
        here = f"{self.base(request)}/records/{quote(record.id, safe='')}/edit"
        name = request.cookies.get(NAME_COOKIE, "") or "reviewer"
        text = edited
        if text is None:
            text = json.dumps(record.payload, indent=2, sort_keys=True, ensure_ascii=False)
        return (
            "<h2>Edit the payload and retry</h2>"
            f'<form method="post" action="{_e(here)}" class="edit-payload">'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(self.csrf_for(request))}">'
            f'<label>payload (JSON) <textarea name="payload" rows="12" spellcheck="false"'
            f' maxlength="{_MAX_FORM_BYTES}">{_e(text)}</textarea></label>'
            f'<label>why (kept in the history) <textarea name="note" rows="2"'
            f' maxlength="{_MAX_NOTE}" required></textarea></label>'
            f'<label>your name <input type="text" name="actor" value="{_e(name)}"'
            f' maxlength="{_MAX_ACTOR}" required></label>'
            '<button type="submit">Save and retry now</button></form>'
        )

    async def edit(self, request: Request) -> Response:
        """Correct a record's payload and retry it, then 303 back (or say why not)."""
        record_id = request.path_params["record_id"]
        if not self.allow_edits:
            return self.problem(request, 403, "editing payloads is off on this service")
        if not _plausible_id(record_id):
            return self.problem(request, 404, f"no error record with id {record_id[:80]!r}")
        form: dict[str, str] = request.state.form
        text = form.get("payload", "")
        actor = form.get("actor", "").strip() or "reviewer"
        note = form.get("note", "")
        problem = ""
        payload: Any = None
        if len(actor) > _MAX_ACTOR:
            problem = f"your name is over {_MAX_ACTOR} characters"
        else:
            try:
                payload = json.loads(text, parse_constant=_no_constant)
            except ValueError as exc:
                problem = f"the payload is not JSON: {exc}"
        try:
            if not problem:
                await run_in_threadpool(
                    lambda: self.desk.edit_and_retry(record_id, payload, actor=actor, note=note)
                )
        except RecordNotFound as exc:
            return self.problem(request, 404, str(exc))
        except (InvalidReport, InvalidMove) as exc:
            problem = str(exc)
        if problem:
            record = await run_in_threadpool(self.desk.get, record_id)
            return self.record_page(request, record, error=problem, status=422, edited=text)
        target = f"{self.base(request)}/records/{quote(record_id, safe='')}?done=edit"
        return self.done(request, target, actor)

    def done(self, request: Request, target: str, actor: str) -> Response:
        """The 303 back after an action, remembering the name it was done under."""
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            NAME_COOKIE,
            actor,
            path=f"{self.base(request)}/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def acting(self, action: str) -> _View:
        """The POST view of one action: act, then 303 back to the record (or say why not)."""

        async def view(request: Request) -> Response:
            record_id = request.path_params["record_id"]
            if not _plausible_id(record_id):
                return self.problem(request, 404, f"no error record with id {record_id[:80]!r}")
            form: dict[str, str] = request.state.form
            actor = form.get("actor", "").strip() or "reviewer"
            note = form.get("note", "").strip() or None
            problem = ""
            if len(actor) > _MAX_ACTOR:
                problem = f"your name is over {_MAX_ACTOR} characters"
            elif note is not None and len(note) > _MAX_NOTE:
                problem = f"the note is over {_MAX_NOTE} characters"
            operation = getattr(self.desk, action)
            try:
                if problem:
                    record = await run_in_threadpool(self.desk.get, record_id)
                    return self.record_page(request, record, error=problem, status=422)
                await run_in_threadpool(lambda: operation(record_id, actor=actor, note=note))
            except RecordNotFound as exc:
                return self.problem(request, 404, str(exc))
            except InvalidMove as exc:
                record = await run_in_threadpool(self.desk.get, record_id)
                return self.record_page(request, record, error=str(exc), status=409)
            except StoreUnavailable:
                raise  # the app answers 503 with Retry-After
            except StoreError as exc:  # any other refusal by the store: say it, never a 500
                record = await run_in_threadpool(self.desk.get, record_id)
                return self.record_page(request, record, error=str(exc), status=409)
            target = f"{self.base(request)}/records/{quote(record_id, safe='')}?done={action}"
            return self.done(request, target, actor)

        return view

    def routes(self) -> list[BaseRoute]:
        """The routes, relative to the mount point."""
        routes: list[BaseRoute] = [
            Route("/", self.guarded(self.index), methods=["GET"]),
            Route("/records", self.guarded(self.records), methods=["GET"]),
            Route("/groups/{fingerprint}", self.guarded(self.group_page), methods=["GET"]),
            Route(
                "/records/{record_id}/edit", self.guarded(self.edit, post=True), methods=["POST"]
            ),
            Route("/login", self.login_get, methods=["GET"]),
            Route("/login", self.login_post, methods=["POST"]),
            Route("/logout", self.guarded(self.logout, post=True), methods=["POST"]),
            Route("/records/{record_id}", self.guarded(self.record), methods=["GET"]),
        ]
        routes.extend(
            Route(
                f"/records/{{record_id}}/{action}",
                self.guarded(self.acting(action), post=True),
                methods=["POST"],
            )
            for action in _ACTIONS
        )
        routes.extend(
            Route(
                f"/groups/{{fingerprint}}/{action}",
                self.guarded(self.group_acting(action), post=True),
                methods=["POST"],
            )
            for action in GROUP_ACTIONS
        )
        return routes


def _statuses(value: str) -> tuple[Status, ...]:
    if value == "open":
        return tuple(sorted(OPEN_STATUSES, key=lambda s: s.value))
    if value == "all":
        return ()
    try:
        return (Status(value),)
    except ValueError:
        known = ", ".join(["open", *(s.value for s in Status), "all"])
        raise ValueError(f"status must be one of {known}; got {value!r}") from None


def _chart(
    series: Sequence[tuple[float, int]], now: float, *, hours: int, width: int, height: int
) -> str:
    """A bar chart (inline SVG, no script) of reports per hour over the ``hours`` up to now.

    ``series``: ``(hour start, reports)`` pairs (a group's ``hours``); each bar is an hour,
    the current one last, scaled to the largest; hovering a bar shows its hour and count.
    """
    last = int(now // 3600)
    first = last - hours + 1
    counts = [0] * hours
    for at, n in series:
        slot = int(at // 3600) - first
        if 0 <= slot < hours:
            counts[slot] += n
    total = sum(counts)
    top = max(counts) or 1
    step = width / hours
    bars = "".join(
        f'<rect x="{i * step:.1f}" y="{height - max(1.0, n / top * (height - 2)):.1f}"'
        f' width="{max(step - 1, 0.5):.1f}" height="{max(1.0, n / top * (height - 2)):.1f}">'
        f"<title>{_e(_when((first + i) * 3600.0))}: {n:,}</title></rect>"
        for i, n in enumerate(counts)
        if n
    )
    label = f"{total:,} report{'s' * (total != 1)} in the last {hours} hours"
    return (
        f'<svg class="chart" role="img" aria-label="{_e(label)}" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}"><title>{_e(label)}</title>'
        f"{bars}</svg>"
    )


def _int_or(value: str | None, default: int) -> int:
    """``value`` as a number of records (a redirect's count), ``default`` if it is not one."""
    try:
        return max(0, int(value or ""))
    except ValueError:
        return default


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _plausible_id(record_id: str) -> bool:
    """Whether a store could hold this id (no NUL, which PostgreSQL refuses; not too long)."""
    return "\x00" not in record_id and 0 < len(record_id) <= _MAX_ID


def _int(value: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {number}")
    return number


def _short(text: str | None, limit: int = 120) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _groups(
    records: Iterable[ErrorRecord],
) -> list[tuple[tuple[str, str | None], list[ErrorRecord]]]:
    """Records grouped by (kind, error type), groups sorted, records newest first within."""
    groups: dict[tuple[str, str | None], list[ErrorRecord]] = {}
    for record in records:
        groups.setdefault((record.kind, record.error_type), []).append(record)
    return sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or ""))


def review_routes(
    desk: ErrorDesk,
    *,
    tokens: Tokens,
    handlers: HandlerLookup | None = None,
    allow_edits: bool = False,
    alerts: Alerts | None = None,
    dead_letters: DeadLetters | None = None,
) -> list[BaseRoute]:
    """The routes of the review pages, to mount at ``/review`` (or anywhere else).

    Args:
        desk: The desk the pages read records from and act through.
        tokens: The service's tokens; when ``tokens.review`` is set every page needs it.
        handlers: What retries each kind (the worker's `Handlers`): records waiting for
            automatic retries of a kind without a handler are marked "no handler".
        allow_edits: Offer, on the page of a record that needs review or waits for a
            retry, a form to correct its payload and retry it (off by default).
        alerts: The service's webhook alerts: the groups page says when they fail.
        dead_letters: A broker and queues whose dead letters get pages at ``/dlq``
            (see `failsafe.errors.review_dlq`).

    Returns:
        Starlette routes relative to the mount point.

    Example:
        ```python
        from starlette.applications import Starlette
        from starlette.routing import Mount

        app = Starlette(routes=[Mount("/review", routes=review_routes(desk, tokens=tokens))])
        ```
    """
    lookup = None if handlers is None else handlers.get
    pages = _Pages(desk, tokens, lookup, allow_edits=allow_edits, alerts=alerts)
    routes = pages.routes()
    if dead_letters is not None:
        from failsafe.errors.review_dlq import DeadLetterPages

        pages.dead_letters = True
        routes.extend(DeadLetterPages(pages, dead_letters).routes())
    return routes
