"""The console's dead-letter pages: a queue's parked and delayed messages, beside the groups.

Mounted with the review pages (``/review/dlq``) when the service is given a broker and its
queues (``failsafe errors serve --dlq-broker URL --dlq-queue NAME``), behind the same review
token, session and CSRF tokens:

- ``GET /review/dlq``: each queue with its counts of delayed and parked messages;
- ``GET /review/dlq/{queue}``: its dead letters, oldest first, with filters (place, error
  type, age, id or id prefix) and pages; check boxes to replay or purge the ones chosen,
  and buttons to replay or purge all that match;
- ``GET /review/dlq/{queue}/messages/{id}``: one message: its headers, body, last error and
  attempts, with forms to replay or purge it;
- ``POST /review/dlq/{queue}/replay`` and ``/purge``: without ``confirm``, a page saying how
  many dead letters it will take (a dry run) with the rate to take them at; with it, the
  action, then a 303 back to the queue's page saying how many it took.

Replay and purge act on parked messages (as ``failsafe queue dlq`` does), a batch at a
time through [`walk`][failsafe.queue.dlq.walk] at the asked rate, at most `MAX_PER_ACTION`
per request (the page says when more are left: ask again). On RabbitMQ only parked
messages can be listed; the pages say how many wait in the delay queues.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.exceptions import ConfigurationError

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import BaseRoute, Route
except ImportError as exc:  # pragma: no cover - the errors extra brings starlette
    from failsafe._extras import missing_extra

    raise missing_extra("errors", "failsafe.errors.review_dlq", exc) from exc

if TYPE_CHECKING:
    from failsafe.errors.redact import Redactor
    from failsafe.errors.review import _Pages
    from failsafe.queue.broker import Broker, DeadLetter, DeadLetterCursor

__all__ = ["DEFAULT_RATE", "MAX_PER_ACTION", "PAGE_SIZE", "DeadLetters"]

PAGE_SIZE: Final = 50
"""Dead letters a queue's page lists."""

MAX_PER_ACTION: Final = 10_000
"""The most dead letters one replay or purge from the pages takes (ask again for more)."""

DEFAULT_RATE: Final = 500.0
"""Messages a second a replay or purge from the pages goes at unless another rate is asked."""

_BATCH: Final = 100
_MAX_RATE: Final = 100_000.0
_BODY_SHOWN: Final = 64 * 1024


class DeadLetters:
    """The broker and queues whose dead letters the console shows (the service's option).

    The broker is opened on first use, never created (`open_broker` with ``create=False``)
    and its calls take turns; `close` closes it.

    Args:
        broker: A URL ``open_broker`` takes (``sqlite:///path.db``, ``amqp://...``).
        queues: The work queues to show.
        clock: Times the ages and paces the actions (a ``FakeClock`` in tests).

    Raises:
        ConfigurationError: If no queue is given, or a name is empty.
    """

    def __init__(self, broker: str, queues: Sequence[str], *, clock: Clock = SYSTEM_CLOCK):
        names = [queues] if isinstance(queues, str) else list(queues)
        if not names or any(not isinstance(q, str) or not q.strip() for q in names):
            raise ConfigurationError("queues", f"must be queue names, got {queues!r}")
        self.url = broker
        self.queues = tuple(dict.fromkeys(q.strip() for q in names))
        self.clock = clock
        self._broker: Broker | None = None
        self._lock = threading.Lock()

    def call(self, use: Callable[[Broker], Any]) -> Any:
        """Run ``use(broker)`` with the broker (opened the first time), one call at a time."""
        from failsafe.queue.connect import open_broker

        with self._lock:
            if self._broker is None:
                self._broker = open_broker(self.url, create=False, clock=self.clock)
            return use(self._broker)

    def close(self) -> None:
        """Close the broker, if it was opened."""
        with self._lock:
            if self._broker is not None:
                self._broker.close()
                self._broker = None


def _cursor_text(cursor: DeadLetterCursor | None) -> str | None:
    """A page cursor for a link (``None`` when it cannot travel in one)."""
    if cursor is None:
        return None
    try:
        text = json.dumps([cursor.adapter, list(cursor.key)], separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _cursor_of(text: str) -> DeadLetterCursor:
    from failsafe.queue.broker import DeadLetterCursor

    try:
        padded = text + "=" * (-len(text) % 4)
        adapter, key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return DeadLetterCursor(adapter=str(adapter), key=tuple(key))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a page cursor: {text[:40]!r}") from exc


class DeadLetterPages:
    """The dead-letter views, drawn and guarded by the review pages' ``pages``."""

    def __init__(self, pages: _Pages, letters: DeadLetters) -> None:
        self.pages = pages
        self.letters = letters
        # a page is no place for a secret: what a dead letter carries is redacted as the
        # service redacts reports (the desk's rules: secret keys, URLs' passwords, cards)
        self.redactor = pages.desk.redactor

    # -- reading the request ------------------------------------------------------------------
    def _queue(self, request: Request) -> str | None:
        queue = str(request.path_params["queue"])
        return queue if queue in self.letters.queues else None

    def _unknown(self, request: Request) -> Response:
        queue = str(request.path_params["queue"])[:80]
        shown = ", ".join(self.letters.queues)
        return self.pages.problem(
            request, 404, f"no queue {queue!r} on this console (its queues: {shown})"
        )

    def _filters(self, values: Mapping[str, str]) -> dict[str, str]:
        return {
            "place": values.get("place", "") or "all",
            "error_type": values.get("error_type", "").strip(),
            "older_than": values.get("older_than", "").strip(),
            "message": values.get("message", "").strip(),
        }

    def _where(self, filters: Mapping[str, str], *, parked_only: bool = False) -> Any:
        """The `DeadLetterFilter` of the filters (``ValueError`` naming a bad one)."""
        from failsafe.queue import Place
        from failsafe.queue.broker import DeadLetterFilter
        from failsafe.queue.dlq import parse_age

        places = {"all": None, "parked": Place.PARKED, "delayed": Place.DELAYED}
        if filters["place"] not in places:
            raise ValueError(f"place must be all, parked or delayed, got {filters['place']!r}")
        until = None
        if filters["older_than"]:
            until = self.letters.clock.time() - parse_age(filters["older_than"])
        given = filters["message"]
        return DeadLetterFilter(
            place=Place.PARKED if parked_only else places[filters["place"]],
            until=until,
            error_types=[filters["error_type"]] if filters["error_type"] else (),
            ids=[given] if given else (),
            id_prefixes=[given] if len(given) >= 8 else (),
        )

    def _problem(self, request: Request, exc: Exception) -> Response:
        from failsafe.queue.broker import NoSuchQueue

        if isinstance(exc, NoSuchQueue):
            return self.pages.problem(request, 404, str(exc))
        if isinstance(exc, ValueError | ConfigurationError):
            return self.pages.problem(request, 400, str(exc))
        return self.pages.problem(request, 503, f"the broker failed: {exc}")

    # -- pages -----------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        """Each queue with its counts."""
        from failsafe.queue.broker import BrokerError

        base = self.pages.base(request)
        rows = []
        for queue in self.letters.queues:
            try:
                count, unlisted = await run_in_threadpool(self.letters.call, _counts(queue))
            except (BrokerError, OSError) as exc:
                rows.append(f"<tr><td>{_e(queue)}</td><td colspan=3>{_e(exc)}</td></tr>")
                continue
            plus = "" if count.exact else "+"
            delayed = f"{count.delayed:,}{plus}"
            if unlisted is not None and unlisted.messages:
                delayed = f"{unlisted.messages:,} (in the delay queues, not listed)"
            rows.append(
                f'<tr><td><a href="{_e(base)}/dlq/{_e(quote(queue, safe=""))}">{_e(queue)}</a>'
                f'</td><td class="num">{count.parked:,}{plus}</td><td>{_e(delayed)}</td></tr>'
            )
        body = (
            f'<p><a href="{_e(base)}/">&larr; failure groups</a></p><h1>Dead letters</h1>'
            f"<p>Broker: <code>{_e(_shown_url(self.letters.url))}</code></p>"
            "<table><thead><tr><th>queue</th><th>parked</th><th>delayed</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
        return self.pages.page(request, "Dead letters", body)

    async def queue(self, request: Request) -> Response:
        """One queue's dead letters: filters, a page, and the forms to act on them."""
        queue = self._queue(request)
        if queue is None:
            return self._unknown(request)
        filters = self._filters(request.query_params)
        after_text = request.query_params.get("after", "")
        try:
            where = self._where(filters)
            after = _cursor_of(after_text) if after_text else None
            page = await run_in_threadpool(
                self.letters.call,
                lambda b: b.dead_letter_page(queue, where=where, after=after, limit=PAGE_SIZE),
            )
        except Exception as exc:
            return self._problem(request, exc)
        base = self.pages.base(request)
        here = f"{base}/dlq/{quote(queue, safe='')}"
        csrf = _e(self.pages.csrf_for(request))
        rows = "".join(
            "<tr>"
            f'<td><input type="checkbox" name="id" value="{_e(letter.message.id)}"'
            f' form="chosen"></td>'
            f'<td><a href="{_e(here)}/messages/{_e(quote(letter.message.id, safe=""))}">'
            f"{_e(letter.message.id[:16])}</a></td>"
            f'<td><span class="status">{_e(letter.place.value)}</span></td>'
            f"<td>{_e(_when(letter.since))}</td>"
            f'<td class="num">{letter.message.delayed_attempts}</td>'
            f"<td>{_e(_error(letter, self.redactor))}</td></tr>"
            for letter in page.letters
        )
        done = request.query_params.get("done", "")
        message = ""
        if done in ("replay", "purge"):
            n = request.query_params.get("n", "0")
            left = request.query_params.get("left", "")
            verb = "Replayed" if done == "replay" else "Purged"
            message = f"{verb} {n} dead letters." + (" More match: ask again." if left else "")
        older = _cursor_text(page.cursor)
        pager = (
            f'<nav class="pages"><a rel="next" href="{_e(here)}?'
            f'{_e(urlencode({**filters, "after": older}))}">next</a></nav>'
            if older
            else ""
        )
        selection = "".join(
            f'<input type="hidden" name="{k}" value="{_e(v)}">' for k, v in filters.items()
        )
        body = (
            f'<p><a href="{_e(base)}/dlq">&larr; dead letters</a></p><h1>{_e(queue)}</h1>'
            + (f'<p class="msg ok" role="status">{_e(message)}</p>' if message else "")
            + self._filter_form(here, filters)
            + (
                '<table class="letters"><thead><tr><th></th><th>id</th><th>place</th>'
                "<th>since</th><th>rounds</th><th>last error</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>"
                if page.letters
                else '<p class="msg ok">No dead letters match.</p>'
            )
            + pager
            + f'<form id="chosen" method="post" action="{_e(here)}/replay" class="chosen">'
            f'<input type="hidden" name="csrf" value="{csrf}">'
            '<button type="submit" name="do" value="replay">Replay the checked</button> '
            f'<button type="submit" formaction="{_e(here)}/purge">Purge the checked</button>'
            "</form>"
            + '<h2>All that match</h2><div class="actions">'
            + f'<form method="post" action="{_e(here)}/replay" class="matching-replay">'
            f'<input type="hidden" name="csrf" value="{csrf}">{selection}'
            '<input type="hidden" name="matching" value="yes">'
            "<button type=submit>Replay all parked that match&hellip;</button></form>"
            + f'<form method="post" action="{_e(here)}/purge" class="matching-purge">'
            f'<input type="hidden" name="csrf" value="{csrf}">{selection}'
            '<input type="hidden" name="matching" value="yes">'
            "<button type=submit>Purge all parked that match&hellip;</button></form></div>"
        )
        return self.pages.page(request, f"Dead letters of {queue}", body)

    def _filter_form(self, here: str, filters: Mapping[str, str]) -> str:
        places = "".join(
            f'<option value="{p}"{" selected" * (p == filters["place"])}>{p}</option>'
            for p in ("all", "parked", "delayed")
        )
        fields = "".join(
            f'<label>{label} <input type="text" name="{name}" value="{_e(filters[name])}"></label>'
            for name, label in (
                ("error_type", "error type"),
                ("older_than", "older than (2h, 3d)"),
                ("message", "id or its start"),
            )
        )
        return (
            f'<form class="filters" method="get" action="{_e(here)}">'
            f'<label>place <select name="place">{places}</select></label>{fields}'
            "<button type=submit>Filter</button></form>"
        )

    async def message(self, request: Request) -> Response:
        """One dead letter: headers, body, last error, attempts, and its forms."""
        queue = self._queue(request)
        if queue is None:
            return self._unknown(request)
        message_id = str(request.path_params["message_id"])
        try:
            where = self._where(
                {"place": "all", "error_type": "", "older_than": "", "message": message_id}
            )
            page = await run_in_threadpool(
                self.letters.call,
                lambda b: b.dead_letter_page(queue, where=where, limit=2),
            )
        except Exception as exc:
            return self._problem(request, exc)
        found = [lt for lt in page.letters if lt.message.id == message_id] or list(page.letters)
        if len(found) != 1:
            problem = (
                f"no dead letter with id {message_id[:80]!r} in {queue!r}"
                if not found
                else f"id {message_id[:80]!r} begins more than one dead letter's id: give more"
            )
            return self.pages.problem(request, 404, problem)
        letter = found[0]
        base = self.pages.base(request)
        here = f"{base}/dlq/{quote(queue, safe='')}"
        envelope = letter.message
        facts = [
            ("id", envelope.id),
            ("place", letter.place.value),
            ("since", _when(letter.since)),
            ("due back", _when(letter.due_at)),
            ("rounds through the DLQ", str(envelope.delayed_attempts)),
            ("attempts in the last round", str(envelope.immediate_attempts)),
            ("first received", _when(envelope.first_seen)),
            ("content type", envelope.content_type),
        ]
        error = envelope.last_error
        shown_headers = self.redactor.value(dict(envelope.headers))
        headers = "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in sorted(shown_headers.items())
        )
        csrf = _e(self.pages.csrf_for(request))
        forms = "".join(
            f'<form method="post" action="{_e(here)}/{verb}" class="one-{verb}">'
            f'<input type="hidden" name="csrf" value="{csrf}">'
            f'<input type="hidden" name="id" value="{_e(envelope.id)}">'
            f"<button type=submit>{label}</button></form>"
            for verb, label in (("replay", "Replay it now"), ("purge", "Purge it&hellip;"))
        )
        body = (
            f'<p><a href="{_e(here)}">&larr; {_e(queue)}</a></p>'
            f"<h1>Dead letter <small>{_e(envelope.id)}</small></h1>"
            "<table>"
            + "".join(f"<tr><th>{k}</th><td>{_e(v)}</td></tr>" for k, v in facts)
            + "</table><h2>Last error</h2>"
            + (
                f"<table><tr><th>type</th><td>{_e(error.type)}</td></tr>"
                f"<tr><th>message</th><td>{_e(self.redactor.text(error.message))}</td></tr>"
                "</table>"
                if error is not None
                else "<p>None recorded.</p>"
            )
            + f"<h2>Headers</h2><table>{headers or '<tr><td>none</td></tr>'}</table>"
            + f'<h2>Body</h2><pre class="body">{_e(_body(envelope.body, self.redactor))}</pre>'
            + f'<h2>Act</h2><div class="actions">{forms}</div>'
        )
        return self.pages.page(request, f"Dead letter {envelope.id[:16]}", body)

    def acting(self, verb: str) -> Callable[[Request], Any]:
        """The POST view of ``replay`` or ``purge``: the count to confirm, then the action."""

        async def view(request: Request) -> Response:
            queue = self._queue(request)
            if queue is None:
                return self._unknown(request)
            form: dict[str, Any] = request.state.form
            matching = form.get("matching") == "yes"
            ids = [] if matching else [i for i in request.state.form_lists.get("id", []) if i]
            here = f"{self.pages.base(request)}/dlq/{quote(queue, safe='')}"
            if not matching and not ids:
                return self.pages.problem(request, 400, f"check the dead letters to {verb} first")
            filters = self._filters(form)
            try:
                rate = float(form.get("rate", "") or DEFAULT_RATE)
                if not 0 < rate <= _MAX_RATE:
                    raise ValueError(f"rate must be from 1 to {_MAX_RATE:,.0f} a second")
                where = self._where(filters, parked_only=True) if matching else None
                narrowed = bool(
                    filters["error_type"] or filters["older_than"] or filters["message"]
                )
                if matching and not narrowed and form.get("all") != "yes":
                    return self._confirm(request, here, verb, form, None, needs_all=True)
                if form.get("confirm") != "yes":
                    count = None
                    if where is not None:
                        count = await run_in_threadpool(
                            self.letters.call, lambda b: b.count_dead_letters(queue, where=where)
                        )
                    return self._confirm(request, here, verb, form, count, ids=ids)
                done, left = await run_in_threadpool(self._act, verb, queue, ids, where, rate)
            except Exception as exc:
                return self._problem(request, exc)
            target = f"{here}?" + urlencode(
                {"done": verb, "n": done, **({"left": "1"} if left else {})}
            )
            return RedirectResponse(target, status_code=303)

        return view

    def _act(
        self, verb: str, queue: str, ids: list[str], where: Any, rate: float
    ) -> tuple[int, bool]:
        """Replay or purge the chosen ids, or the selection (paced); how many, and if more left."""
        from failsafe.queue.dlq import Pacer, walk

        if where is None:
            act_ids: Callable[[Broker], int] = (
                (lambda b: b.replay(queue, ids))
                if verb == "replay"
                else (lambda b: b.purge(queue, ids))
            )
            return int(self.letters.call(act_ids)), False
        pacer = Pacer(rate, _BATCH, self.letters.clock)

        def batch(broker: Broker) -> Callable[..., Any]:
            return broker.replay_batch if verb == "replay" else broker.purge_batch

        def one(q: str, **kwargs: Any) -> Any:
            return self.letters.call(lambda b: batch(b)(q, **kwargs))

        # only what is there now: one replayed and parked again meanwhile waits for next time
        bounded = where.__class__(
            place=where.place,
            until=min(where.until, self.letters.clock.time())
            if where.until is not None
            else self.letters.clock.time(),
            error_types=where.error_types,
            ids=where.ids,
            id_prefixes=where.id_prefixes,
        )
        done, _ = walk(one, queue, bounded, wanted=MAX_PER_ACTION, batch=_BATCH, pacer=pacer)
        return done, done >= MAX_PER_ACTION

    def _confirm(
        self,
        request: Request,
        here: str,
        verb: str,
        form: Mapping[str, Any],
        count: Any,
        *,
        ids: Sequence[str] = (),
        needs_all: bool = False,
    ) -> Response:
        """The dry run's page: how many it will take, the rate, and Confirm."""
        csrf = _e(self.pages.csrf_for(request))
        # "all": a reviewer who said "every parked one" is not asked again at the count
        kept = ("place", "error_type", "older_than", "message", "matching", "all")
        pairs = [(k, v) for k, v in form.items() if k in kept] + [("id", i) for i in ids]
        hidden = "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in pairs)
        if needs_all:
            what = (
                f"No filter narrows this {verb}: it takes every parked dead letter, poison"
                " messages too (they fail and are parked again)."
            )
            hidden += '<input type="hidden" name="all" value="yes">'
            button = f"{verb.capitalize()} every parked dead letter&hellip;"
        elif count is not None:
            plus = "" if count.exact else "+"
            n = count.parked
            what = f"This will {verb} {n:,}{plus} parked dead letter{'s' * (n != 1)} of this queue"
            if n > MAX_PER_ACTION:
                what += f" ({MAX_PER_ACTION:,} now: ask again for the rest)"
            hidden += '<input type="hidden" name="confirm" value="yes">'
            button = f"Confirm: {verb} {n:,}{plus}"
        else:
            what = f"This will {verb} {len(ids):,} checked dead letter{'s' * (len(ids) != 1)}."
            hidden += '<input type="hidden" name="confirm" value="yes">'
            button = f"Confirm: {verb} {len(ids):,}"
        if verb == "purge":
            what += " Purged messages are deleted for good."
        body = (
            f"<h1>{_e(verb.capitalize())}</h1>"
            f'<p class="msg error" role="alert">{_e(what)}</p>'
            f'<form method="post" action="{_e(here)}/{verb}" class="confirm-{verb}">'
            f'<input type="hidden" name="csrf" value="{csrf}">{hidden}'
            f'<label>at most this many a second <input type="text" name="rate"'
            f' value="{_e(form.get("rate", "") or f"{DEFAULT_RATE:g}")}"></label>'
            f"<button type=submit>{button}</button> "
            f'<a href="{_e(here)}">cancel</a></form>'
        )
        return self.pages.page(request, f"{verb} dead letters", body)

    def routes(self) -> list[BaseRoute]:
        """The routes, relative to the review pages' mount point."""
        guarded = self.pages.guarded
        return [
            Route("/dlq", guarded(self.index), methods=["GET"]),
            Route("/dlq/{queue}", guarded(self.queue), methods=["GET"]),
            Route("/dlq/{queue}/messages/{message_id}", guarded(self.message), methods=["GET"]),
            *(
                Route(
                    f"/dlq/{{queue}}/{verb}",
                    guarded(self.acting(verb), post=True),
                    methods=["POST"],
                )
                for verb in ("replay", "purge")
            ),
        ]


def _counts(queue: str) -> Callable[[Broker], tuple[Any, Any]]:
    """A queue's counts: its dead letters by place, and those a broker cannot list."""

    def count(broker: Broker) -> tuple[Any, Any]:
        unlisted = getattr(broker, "count_unlisted_delayed", None)
        return broker.count_dead_letters(queue), None if unlisted is None else unlisted(queue)

    return count


def _e(value: object) -> str:
    from failsafe.errors.review import _e as escape

    return escape(value)


def _when(epoch: float | None) -> str:
    from failsafe.errors.review import _when as when

    return when(epoch)


def _error(letter: DeadLetter, redactor: Redactor) -> str:
    error = letter.message.last_error
    if error is None:
        return ""
    message = redactor.text(error.message)
    text = f"{error.type}: {message}" if message else error.type
    return text if len(text) <= 120 else text[:119] + "…"


def _body(body: bytes, redactor: Redactor) -> str:
    """A body as text, secrets redacted: pretty JSON when it is JSON, else UTF-8."""
    shown = body[:_BODY_SHOWN]
    text = shown.decode("utf-8", errors="backslashreplace")
    if not text.isprintable():  # a control character shows as its escape, not as itself
        text = "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text)
    try:
        text = json.dumps(
            redactor.value(json.loads(text)), indent=2, sort_keys=True, ensure_ascii=False
        )
    except ValueError:  # not JSON (or cut short): redacted as text
        text = redactor.text(text) or ""
    if len(body) > _BODY_SHOWN:
        text += f"\n… ({len(body) - _BODY_SHOWN:,} more bytes)"
    return text


def _shown_url(url: str) -> str:
    """The broker's URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
