"""``failsafe queue dlq``: list, show, replay and purge a queue's dead letters.

Usage:

```text
failsafe queue dlq list   --queue NAME [--broker URL] [FILTERS] [--json] [--reveal]
failsafe queue dlq show   ID --queue NAME [--broker URL] [--json] [--reveal]
failsafe queue dlq replay --queue NAME [--broker URL] [FILTERS | --all] [--batch 100]
                          [--rate N] [--dry-run]
failsafe queue dlq purge  --queue NAME [--broker URL] [FILTERS | --all] [--batch 100]
                          [--dry-run] [--yes]

FILTERS: [--place delayed|parked|all] [--older-than AGE] [--error-type TYPE ...]
         [--id ID ...] [--limit N]
```

``--broker`` is a URL that ``failsafe.queue.connect.open_broker`` accepts
(default: ``$FAILSAFE_QUEUE_BROKER``, else ``queue.db``). ``list`` looks at both places by
default (and shows the oldest 100: ``--limit`` for more), ``replay`` and ``purge`` at the
parking queue only, with no limit, and only at the dead letters that were there when the
command started (a replayed message that fails and is parked again meanwhile is left for
the next run). ``AGE`` is a number with a unit:
``30s``, ``15m``, ``2h``, ``3d``, ``1w`` (or several, ``1h30m``), counted from the time the
message got to its place. ``--error-type`` matches the last error's type exactly or by its
last dotted part (``OrderNotFound`` matches ``app.errors.OrderNotFound``). An ``ID`` (of
``show`` or ``--id``) is a message's id or, with 8 characters or more, the start of one: the
dead letter with that very id if there is one, else the only one whose id begins with it (a
prefix that begins two is refused, naming them; one that begins none is not found).
``replay`` and ``purge`` refuse to run without ``--older-than``, ``--error-type`` or
``--id`` unless ``--all`` is given (a replay of everything sends the poison messages round
again), except as a ``--dry-run``, which changes nothing and may show the whole place;
``purge`` asks before deleting when its input is a terminal (``--yes`` skips the question).

``list``, ``show`` and the dry runs redact what a dead letter may carry as secrets, with
the error review console's default rules (`failsafe.errors.Redactor`): header values and
JSON body fields whose names say secret (``Authorization``, ``password``, ``token``...),
passwords in URLs, card numbers, ``key=value`` secrets in text bodies and in the last
error's message (a dry run without the ``errors`` extra shows error types only). ``--reveal``
(``list``, ``show``) prints them whole: it writes the secrets to the terminal (and to its
scroll-back and any log of it).

The commands never create a queue: a ``--queue`` the broker does not know is refused (exit
2, "no such queue NAME on BROKER"; on SQLite with the file's queues listed).

On RabbitMQ only parked messages are listed, replayed and purged: it cannot read its delay
queues without disturbing them. ``list`` (of the delayed messages or of both places) and a
``show`` that finds nothing say how many messages wait in the delay queues instead.

Bounds (issue #15): nothing reads the whole DLQ at once. ``list``, ``show`` and the dry runs
read dead letters a page at a time (``--limit`` or 500, whichever is smaller) and print as
they go, so ``list --limit 100`` decodes about 100 dead letters however many are parked;
the "N of M" footer comes from a count that stops at 1,000,000
(``failsafe.queue.broker.COUNT_LIMIT``). ``replay`` and ``purge`` act on the selection a
batch at a time (``--batch``, 100 by default: one broker call, one transaction on SQLite,
each). ``--rate`` is a token bucket on the clock:
each batch is paid for when it starts and the next one waits until that is earned back at
``--rate`` messages a second; the bucket saves up a quarter of a second's worth at most
(one batch if that is more), so after a slow batch the command catches up by that much and
no more.

Exit codes: 0 done, 1 refused (not found, an ambiguous id prefix, broker unreachable, not
confirmed; the reason on stderr), 2 bad usage or configuration (no such queue, a missing
filter).

Time comes from the module attribute ``clock`` (the system clock); tests replace it with a
``FakeClock`` so that ages are fixed and the rate limit's pauses never really wait.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TextIO

from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.exceptions import ConfigurationError
from failsafe.queue.broker import (
    COUNT_LIMIT,
    Broker,
    BrokerError,
    DeadLetter,
    DeadLetterBatch,
    DeadLetterCount,
    DeadLetterCursor,
    DeadLetterFilter,
    NoSuchQueue,
    Place,
    UnlistedDelayed,
)
from failsafe.queue.dlq import Pacer, parse_age, walk

__all__ = ["fill_queue_parser"]

clock: Clock = SYSTEM_CLOCK
"""Where the commands read the time and sleep (tests put a ``FakeClock`` here)."""

OK: Final = 0
REFUSED: Final = 1
USAGE: Final = 2

ENV_BROKER: Final = "FAILSAFE_QUEUE_BROKER"
DEFAULT_BROKER: Final = "queue.db"

_LIST_LIMIT: Final = 100  # list's default --limit
_PAGE: Final = 500  # dead letters read (and decoded) at most per page: list, show, dry runs
_ID_PREFIX: Final = 8  # the fewest characters of a message id that name it as a prefix


class _Refused(Exception):
    """Not found, broker unreachable or failing, not confirmed: exit 1."""


class _Usage(Exception):
    """Bad arguments or configuration, or no such queue: exit 2."""


def _guarded(
    command: Callable[[argparse.Namespace], int], prog: str
) -> Callable[[argparse.Namespace], int]:
    """``command`` with its refusals and usage errors turned into a message and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (_Usage, ConfigurationError) as exc:
            sys.stderr.write(f"{prog}: error: {exc}\n")
            return USAGE
        except _Refused as exc:
            sys.stderr.write(f"{prog}: {exc}\n")
            return REFUSED

    return run


# -- option types (argparse turns their errors into exit 2 naming the option) ---------------
def _age(text: str) -> float:
    """``--older-than``'s value in seconds (`parse_age`), or argparse's error."""
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a number of messages per second > 0, got {text!r}"
        )
    return value


_PLACES: Final = {"delayed": Place.DELAYED, "parked": Place.PARKED, "all": None}


def _place(text: str) -> str:
    value = text.strip().lower()
    if value not in _PLACES:
        raise argparse.ArgumentTypeError(f"unknown place {text!r} (known: delayed, parked, all)")
    return value


# -- the broker ---------------------------------------------------------------------------
def _open(args: argparse.Namespace) -> Broker:
    from failsafe.queue.connect import open_broker

    url = args.broker or os.environ.get(ENV_BROKER) or DEFAULT_BROKER
    try:
        broker = open_broker(url, create=False, clock=clock)
    except BrokerError as exc:
        raise _Refused(
            f"cannot open the broker: {exc} (give --broker URL or set {ENV_BROKER})"
        ) from None
    except OSError as exc:
        raise _Refused(f"cannot reach the broker: {exc}") from None
    known: Callable[[], list[str]] | None = getattr(broker, "queues", None)
    if known is not None:
        try:
            names = known()
        except (BrokerError, OSError) as exc:
            broker.close()
            raise _Refused(f"the broker failed: {exc}") from None
        if args.queue not in names:
            broker.close()
            listed = ", ".join(names) or "none"
            raise _Usage(f"{NoSuchQueue(args.queue, url)} (its queues: {listed})")
    return broker


def _failed(exc: BaseException) -> Exception:
    """The refusal (exit 1) for a broker's failure; the usage error (exit 2) for no queue."""
    if isinstance(exc, NoSuchQueue):
        return _Usage(str(exc))
    return _Refused(f"the broker failed: {exc}")


# -- selection --------------------------------------------------------------------------------
def _where(
    args: argparse.Namespace, default_place: str, until: float | None, ids: Sequence[str]
) -> DeadLetterFilter:
    """The filter the options ask for; ``until``: the latest ``since`` to take.

    ``ids``: the ``--id`` values, each prefix replaced by the id it names (`_resolve_ids`).
    """
    if args.older_than is not None:
        now = clock.time()
        until = now - args.older_than if until is None else min(until, now - args.older_than)
    return DeadLetterFilter(
        place=_PLACES[args.place or default_place],
        until=until,
        error_types=args.error_type or (),
        ids=ids,
    )


def _selection(
    args: argparse.Namespace, ids: Sequence[str]
) -> tuple[DeadLetterFilter, DeadLetterFilter]:
    """What ``replay`` or ``purge`` asks for, and the same bounded to now, to walk.

    The walk takes only dead letters that got there by now, so that one replayed and
    parked again meanwhile is not replayed again (and again). The count at the start needs
    no such bound (nothing has got there after now yet), which spares RabbitMQ a pass.
    """
    return _where(args, "parked", None, ids), _where(args, "parked", clock.time(), ids)


def _filtered(args: argparse.Namespace) -> bool:
    """Whether the options narrow the selection (``--limit`` and ``--place`` do not)."""
    return args.older_than is not None or bool(args.error_type) or bool(args.id)


def _needs_filter(verb: str, args: argparse.Namespace, why: str = "") -> None:
    """Refuse to act on a whole place by accident: a filter, ``--all`` or ``--dry-run``.

    A dry run changes nothing, so it may show the whole place (what ``--all`` would take).
    """
    if not (args.all or args.dry_run or _filtered(args)):
        raise _Usage(
            f"{verb} needs a filter (--older-than, --error-type or --id), "
            f"or --all to {verb} every dead letter of the place{why}"
        )


# -- ids and their prefixes -------------------------------------------------------------------
def _named(
    given: str, exact: Sequence[DeadLetter], begun: Sequence[DeadLetter], queue: str
) -> DeadLetter | None:
    """The dead letter ``given`` names, from what the broker found; ``None``: none.

    ``exact``: a dead letter with that very id, if any (it wins); ``begun``: up to two
    whose id begins with ``given``, looked for only when ``given`` has `_ID_PREFIX`
    characters or more. Two of them are refused (exit 1), naming both: a prefix names one
    dead letter or none.
    """
    if exact:
        return exact[0]
    if len(given) < _ID_PREFIX or not begun:
        return None
    if len(begun) > 1:
        ids = ", ".join(letter.message.id for letter in begun[:2])
        raise _Refused(
            f"id {given!r} begins more than one dead letter's id in {queue!r} ({ids}, ...): "
            "give more of it"
        )
    return begun[0]


def _resolve(broker: Broker, queue: str, place: Place | None, given: str) -> DeadLetter | None:
    """The dead letter of ``place`` that ``given`` names: its id, or a prefix of it.

    Two bounded lookups: the exact id (one letter), then, for a prefix of `_ID_PREFIX`
    characters or more, the first two letters whose id begins with it.
    """
    exact = list(_Letters(broker, queue, DeadLetterFilter(place=place, ids=[given]), 1))
    begun: list[DeadLetter] = []
    if not exact and len(given) >= _ID_PREFIX:
        prefix = DeadLetterFilter(place=place, id_prefixes=[given])
        begun = list(_Letters(broker, queue, prefix, 2))
    return _named(given, exact, begun, queue)


def _resolve_ids(
    broker: Broker, args: argparse.Namespace, default_place: str, *, missing_too: bool = True
) -> tuple[list[str], list[str]]:
    """The ``--id`` values with each prefix replaced by the id it names, and those not found.

    One lookup finds the ids given in full (the letters it reads are those ids, no more);
    then each value not found that way, of `_ID_PREFIX` characters or more, is looked up
    as a prefix. A value that names no dead letter of the place stays as given (it selects
    nothing) and is returned as not found. ``missing_too=False`` (``list``): the values too
    short to be a prefix are not looked up (on RabbitMQ each lookup is a pass), and count
    as found.
    """
    given = list(dict.fromkeys(args.id or ()))
    place = _PLACES[args.place or default_place]
    asked = given if missing_too else [v for v in given if len(v) >= _ID_PREFIX]
    present = set(given) - set(asked)
    if asked:
        whole = DeadLetterFilter(place=place, ids=asked)
        present |= {letter.message.id for letter in _Letters(broker, args.queue, whole, None)}
    resolved, missing = [], []
    for value in given:
        letter = None
        if value not in present and len(value) >= _ID_PREFIX:
            prefix = DeadLetterFilter(place=place, id_prefixes=[value])
            letter = _named(value, [], list(_Letters(broker, args.queue, prefix, 2)), args.queue)
        if value in present or letter is not None:
            resolved.append(value if letter is None else letter.message.id)
        else:
            resolved.append(value)
            missing.append(value)
    return resolved, missing


class _Letters:
    """The dead letters ``where`` selects, oldest first, read a page at a time.

    Iterate it once; afterwards ``more`` says whether the listing stopped at ``limit`` with
    more left (the broker gave a cursor), ``truncated`` whether the broker stopped at its
    own bound.
    """

    def __init__(
        self, broker: Broker, queue: str, where: DeadLetterFilter, limit: int | None
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.where = where
        self.limit = limit
        self.more = False
        self.truncated = False
        self.count = 0
        self.places = {Place.DELAYED: 0, Place.PARKED: 0}

    def __iter__(self) -> Iterator[DeadLetter]:
        cursor: DeadLetterCursor | None = None
        while self.limit is None or self.count < self.limit:
            size = _PAGE if self.limit is None else min(_PAGE, self.limit - self.count)
            try:
                page = self.broker.dead_letter_page(
                    self.queue, where=self.where, after=cursor, limit=size
                )
            except (BrokerError, OSError) as exc:
                raise _failed(exc) from None
            for letter in page.letters:
                self.count += 1
                self.places[letter.place] += 1
                yield letter
            self.truncated = self.truncated or page.truncated
            cursor = page.cursor
            if cursor is None:
                self.more = False
                return
            self.more = True


def _note_truncated(truncated: bool) -> None:
    if truncated:
        sys.stderr.write(
            "note: the broker stopped at its bound on how far it reads the parking queue "
            "(RabbitMQ: dlq_browse_limit); more may match beyond it\n"
        )


def _count(broker: Broker, queue: str, where: DeadLetterFilter) -> DeadLetterCount:
    try:
        return broker.count_dead_letters(queue, where=where, at_most=COUNT_LIMIT)
    except (BrokerError, OSError) as exc:
        raise _failed(exc) from None


def _unlisted(broker: Broker, queue: str, place: Place | None) -> UnlistedDelayed | None:
    """Delayed messages of ``queue`` the broker holds but cannot list, if any.

    Only a broker that cannot list its delayed messages (RabbitMQ) can say; for the others,
    or when ``place`` is the parking queue, or none wait, ``None``.
    """
    count: Callable[[str], UnlistedDelayed | None] | None = getattr(
        broker, "count_unlisted_delayed", None
    )
    if count is None or place is Place.PARKED:
        return None
    try:
        unlisted = count(queue)
    except (BrokerError, OSError) as exc:
        raise _failed(exc) from None
    return unlisted if unlisted is not None and unlisted.messages > 0 else None


def _note_unlisted(
    broker: Broker, args: argparse.Namespace, place: Place | None, what: str
) -> None:
    """On stderr, ``note: not WHAT: N messages wait in the delay queues ...``, if any do."""
    unlisted = _unlisted(broker, args.queue, place)
    if unlisted is not None:
        line = _unlisted_line(unlisted, args.queue, _filtered(args))
        sys.stderr.write(f"note: not {what}: {line}\n")


def _unlisted_line(unlisted: UnlistedDelayed, queue: str, filtered: bool) -> str:
    """``12 messages wait in the delay queues of 'orders' (they cannot be listed ...)``."""
    n = unlisted.messages
    wait = "message waits" if n == 1 else "messages wait"
    which = ", matching the filters or not" if filtered else ""
    return f"{n} {wait} in the delay queues of {queue!r}{which} ({unlisted.reason})"


# -- output -------------------------------------------------------------------------------------
def _iso(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    """``45s``, ``12m``, ``2h05m``, ``3d04h``: two units at most."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f"{s % 60:02d}s" if s % 60 else "")
    if s < 86400:
        return f"{s // 3600}h" + (f"{s % 3600 // 60:02d}m" if s % 3600 // 60 else "")
    return f"{s // 86400}d" + (f"{s % 86400 // 3600:02d}h" if s % 86400 // 3600 else "")


def _clip(text: str, limit: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _error_line(letter: DeadLetter, redactor: _Redactor | None = None) -> str:
    error = letter.message.last_error
    if error is None:
        return "-"
    message: str | None = error.message
    if message and redactor is not None:
        message = redactor.text(message)
    return _clip(f"{error.type}: {message}" if message else error.type)


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "queue": letter.queue,
        "place": letter.place.value,
        "since": letter.since,
        "due_at": letter.due_at,
        "message": letter.message.to_json(),
    }


_COLUMNS: Final = ("id", "place", "since (UTC)", "age", "rounds", "last error")


class _Table:
    """The dead-letter table, written as the rows come, a page at a time.

    The column widths are those of the first page (a later, wider cell pushes its row out
    instead of holding every row to measure them all).
    """

    def __init__(self, out: TextIO, redactor: _Redactor | None) -> None:
        self.out = out
        self.redactor = redactor
        self.widths: list[int] | None = None
        self.rows: list[tuple[str, ...]] = []

    def add(self, letter: DeadLetter) -> None:
        now = clock.time()
        self.rows.append(
            (
                letter.message.id,
                letter.place.value,
                _iso(letter.since),
                _duration(now - letter.since),
                str(letter.message.delayed_attempts),
                _error_line(letter, self.redactor),
            )
        )
        if len(self.rows) >= _PAGE:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        if self.widths is None:
            self.widths = [
                max(len(c), *(len(row[i]) for row in self.rows)) for i, c in enumerate(_COLUMNS)
            ]
            self._line(_COLUMNS)
        for row in self.rows:
            self._line(row)
        self.rows = []

    def _line(self, row: Sequence[str]) -> None:
        assert self.widths is not None
        cells = zip(row, self.widths, strict=True)
        self.out.write("  ".join(cell.ljust(w) for cell, w in cells).rstrip() + "\n")


class _JsonList:
    """A JSON array written an item at a time, as ``json.dump(items, indent=2)`` writes it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0

    def add(self, item: dict[str, Any]) -> None:
        self.out.write("[\n" if self.count == 0 else ",\n")
        text = json.dumps(item, indent=2)
        self.out.write("\n".join("  " + line for line in text.splitlines()))
        self.count += 1

    def close(self) -> None:
        self.out.write("\n]\n" if self.count else "[]\n")


def _noun(count: int) -> str:
    return "dead letter" if count == 1 else "dead letters"


def _count_line(letters: _Letters, total: DeadLetterCount | None, queue: str) -> str:
    """The footer: how many match (``total``: counted, when the listing stopped early)."""
    shown = letters.count
    if total is None or (total.exact and total.total <= shown):
        delayed, parked = letters.places[Place.DELAYED], letters.places[Place.PARKED]
        return f"{shown} {_noun(shown)} of {queue!r} (delayed: {delayed}, parked: {parked})"
    if not total.exact:
        return (
            f"the oldest {shown} of more than {total.total} {_noun(2)} of {queue!r} "
            f"(counting stopped there); raise --limit for more"
        )
    places = f"(delayed: {total.delayed}, parked: {total.parked})"
    return (
        f"the oldest {shown} of {total.total} {_noun(total.total)} of {queue!r} {places}; "
        "raise --limit for more"
    )


class _Redactor(Protocol):
    """What ``list`` and ``show`` need of `failsafe.errors.Redactor` (imported only when used)."""

    def value(self, value: Any) -> Any: ...

    def text(self, text: str | None) -> str | None: ...


def _redactor(args: argparse.Namespace) -> _Redactor | None:
    """The review console's default redaction rules, or ``None`` under ``--reveal``."""
    if args.reveal:
        return None
    # imported here: only ``list`` and ``show`` need it (the rules of the desk's DLQ pages).
    # Importing it runs the failsafe.errors package, which needs the ``errors`` extra: with
    # it missing, refuse rather than print secrets unredacted.
    try:
        from failsafe.errors.redact import Redactor
    except ImportError as exc:
        raise _Refused(
            "list and show redact secrets with failsafe.errors.Redactor, which needs the 'errors'"
            " extra (pip install 'failsafe-kit[errors]'); --reveal prints them unredacted"
        ) from exc
    return Redactor()


class _TypesOnly:
    """Without the ``errors`` extra, a dry run's table shows each error's type, no message."""

    def value(self, value: Any) -> Any:
        return value

    def text(self, text: str | None) -> str | None:
        return None


def _quiet_redactor() -> _Redactor:
    """The redactor of a dry run's table: the default rules, or error types alone."""
    try:
        from failsafe.errors.redact import Redactor
    except ImportError:
        return _TypesOnly()
    return Redactor()


def _redacted_text(text: str, redactor: _Redactor | None) -> str:
    """A body or error text with its secrets replaced (JSON by its keys, else as text)."""
    if redactor is None:
        return text
    try:
        parsed = json.loads(text)
    except ValueError:
        return redactor.text(text) or ""
    return json.dumps(redactor.value(parsed), ensure_ascii=False)


def _body_lines(letter: DeadLetter, redactor: _Redactor | None) -> tuple[str, list[str]]:
    message = letter.message
    text = message.text()
    if text is None:
        encoded = base64.b64encode(message.body).decode("ascii")
        return "body (base64)", [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    try:
        parsed = json.loads(text)
    except ValueError:
        if redactor is not None:
            text = redactor.text(text) or ""
        return "body (text)", text.splitlines() or [""]
    if redactor is not None:
        parsed = redactor.value(parsed)
    return "body (JSON)", json.dumps(parsed, indent=2, ensure_ascii=False).splitlines()


def _shown_json(letter: DeadLetter, redactor: _Redactor | None) -> dict[str, Any]:
    """``show --json``: the dead letter, its headers, body and error message redacted."""
    data = _letter_json(letter)
    if redactor is None:
        return data
    message = data["message"]
    if "headers" in message:
        message["headers"] = redactor.value(message["headers"])
    if isinstance(message.get("body"), str):
        message["body"] = _redacted_text(message["body"], redactor)
    error = message.get("last_error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error["message"] = redactor.text(error["message"])
    return data


def _print_letter(letter: DeadLetter, out: TextIO, redactor: _Redactor | None) -> None:
    message = letter.message
    now = clock.time()
    error = message.last_error
    facts = [
        ("id", message.id),
        ("queue", letter.queue),
        ("place", letter.place.value),
        ("since", f"{_iso(letter.since)} ({_duration(now - letter.since)} ago)"),
    ]
    if letter.due_at is not None:
        left = letter.due_at - now
        due = f"in {_duration(left)}" if left > 0 else "now"
        facts.append(("due at", f"{_iso(letter.due_at)} ({due})"))
    facts += [
        ("content type", message.content_type),
        ("immediate attempts", str(message.immediate_attempts)),
        ("delayed rounds", str(message.delayed_attempts)),
        ("first seen", _iso(message.first_seen)),
        ("last error", error.type if error is not None else "-"),
    ]
    if error is not None:
        facts.append(("error at", _iso(error.at)))
    for name, value in facts:
        out.write(f"{name + ':':<20}{value}\n")
    if error is not None and error.message:
        out.write("error message:\n")
        shown = error.message if redactor is None else (redactor.text(error.message) or "")
        for line in shown.splitlines():
            out.write(f"  {line}\n")
    out.write("headers:" + ("\n" if message.headers else " -\n"))
    headers = dict(message.headers)
    if redactor is not None:
        headers = redactor.value(headers)
    for key, value in sorted(headers.items()):
        out.write(f"  {key}: {value}\n")
    title, lines = _body_lines(letter, redactor)
    out.write(f"{title}:\n")
    for line in lines:
        out.write(f"  {line}\n")


class _Progress:
    """``replayed 200/350`` on stderr: rewritten in place on a terminal, else one line each."""

    def __init__(self, verb: str, total: str, stream: TextIO) -> None:
        self.verb = verb
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = False

    def update(self, done: int) -> None:
        line = f"{self.verb} {done}/{self.total}"
        if self.tty:
            self.stream.write(f"\r{line}")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _total_label(total: DeadLetterCount, limit: int | None) -> tuple[int | None, str]:
    """How many the walk will take (``None``: unknown, walk to the end), and how to say it."""
    if total.exact:
        n = total.total if limit is None else min(limit, total.total)
        return n, str(n)
    if limit is not None and limit <= total.total:
        return limit, str(limit)
    return limit, f"{total.total}+"


def _walk(
    verb: str,
    act: Callable[..., DeadLetterBatch],
    args: argparse.Namespace,
    where: DeadLetterFilter,
    total: DeadLetterCount,
    rate: float | None,
) -> int:
    """Run ``act`` (``replay_batch``/``purge_batch``) batch by batch; return how many it took.

    Each batch is one broker call on the next ``--batch`` of the selection (the cursor of
    the one before), paced by a `Pacer` when ``rate`` is given. Stops after the number
    counted at the start (or ``--limit``), or when the broker has no more.
    """
    wanted, label = _total_label(total, args.limit)
    progress = _Progress(verb, label, sys.stderr)
    pacer = Pacer(rate, args.batch, clock) if rate is not None else None
    done = 0

    def seen(count: int) -> None:
        nonlocal done
        done = count
        progress.update(count)

    try:
        done, truncated = walk(
            act, args.queue, where, wanted=wanted, batch=args.batch, pacer=pacer, progress=seen
        )
    except NoSuchQueue as exc:
        progress.finish()
        raise _Usage(f"{verb} {done} of {label}, then: {exc}") from None
    except (BrokerError, OSError) as exc:
        progress.finish()
        raise _Refused(f"{verb} {done} of {label}, then the broker failed: {exc}") from None
    except KeyboardInterrupt:
        progress.finish()
        raise _Refused(f"interrupted: {verb} {done} of {label}") from None
    progress.finish()
    _note_truncated(truncated)
    return done


def _not_found(missing: list[str], total: DeadLetterCount, limit: int | None, done: int) -> int:
    """Ids asked for that are not there, and counted ones that were gone when their turn came."""
    wanted, _ = _total_label(total, limit)
    gone = max(0, wanted - done) if total.exact and wanted is not None else 0
    return len(missing) + gone


# -- commands ------------------------------------------------------------------------------------
def _cmd_list(args: argparse.Namespace) -> int:
    redactor = _redactor(args)
    broker = _open(args)
    try:
        ids, _ = _resolve_ids(broker, args, "all", missing_too=False)
        where = _where(args, "all", None, ids)
        letters = _Letters(broker, args.queue, where, args.limit)
        if args.json:
            array = _JsonList(sys.stdout)
            for letter in letters:
                array.add(_shown_json(letter, redactor))
            array.close()
            _note_truncated(letters.truncated)
            _note_unlisted(broker, args, where.place, "listed")
            return OK
        table = _Table(sys.stdout, redactor)
        for letter in letters:
            table.add(letter)
        table.flush()
        _note_truncated(letters.truncated)
        unlisted = _unlisted(broker, args.queue, where.place)
        if not letters.count:
            if unlisted is None:
                sys.stdout.write(f"no dead letters of {args.queue!r} match\n")
            else:
                line = _unlisted_line(unlisted, args.queue, _filtered(args))
                sys.stdout.write(f"no dead letters can be listed here; {line}\n")
            return OK
        total = _count(broker, args.queue, letters.where) if letters.more else None
    finally:
        broker.close()
    sys.stdout.write(_count_line(letters, total, args.queue) + "\n")
    if unlisted is not None:
        line = _unlisted_line(unlisted, args.queue, _filtered(args))
        sys.stdout.write(f"not listed: {line}\n")
    return OK


def _cmd_show(args: argparse.Namespace) -> int:
    broker = _open(args)
    try:
        letter = _resolve(broker, args.queue, None, args.message_id)
        unlisted = _unlisted(broker, args.queue, None) if letter is None else None
    finally:
        broker.close()
    if letter is None:
        missing = f"no dead letter with id {args.message_id!r} in {args.queue!r}"
        if unlisted is None:
            raise _Refused(
                f"{missing} (not delayed, not parked: handled, replayed, purged or never there)"
            )
        raise _Refused(f"{missing}: not parked, and {_unlisted_line(unlisted, args.queue, False)}")
    redactor = _redactor(args)
    if args.json:
        json.dump(_shown_json(letter, redactor), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_letter(letter, sys.stdout, redactor)
    return OK


def _dry_run(
    verb: str, args: argparse.Namespace, broker: Broker, where: DeadLetterFilter, missing: list[str]
) -> int:
    table = _Table(sys.stdout, _quiet_redactor())
    letters = _Letters(broker, args.queue, where, args.limit)
    for letter in letters:
        table.add(letter)
    table.flush()
    _note_truncated(letters.truncated)
    _note_unlisted(broker, args, where.place, "listed")
    unfiltered = "" if args.all or _filtered(args) else f"; to {verb} them, give --all"
    sys.stdout.write(
        f"dry run: would {verb} {letters.count} of {args.queue!r}, "
        f"not found {len(missing)} (nothing changed{unfiltered})\n"
    )
    return OK


def _cmd_replay(args: argparse.Namespace) -> int:
    _needs_filter("replay", args, " (poison messages too: they fail and are parked again)")
    broker = _open(args)
    try:
        ids, missing = _resolve_ids(broker, args, "parked")
        asked, where = _selection(args, ids)
        if args.dry_run:
            return _dry_run("replay", args, broker, where, missing)
        total = _count(broker, args.queue, asked)
        moved = _walk("replayed", broker.replay_batch, args, where, total, args.rate)
        _note_unlisted(broker, args, where.place, "replayed")
    finally:
        broker.close()
    not_found = _not_found(missing, total, args.limit, moved)
    sys.stdout.write(f"replayed {moved}, not found {not_found}\n")
    return OK


def _confirm(label: str, count: int, queue: str) -> bool:
    sys.stderr.write(f"purge {label} {_noun(count)} of {queue!r} for good? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _cmd_purge(args: argparse.Namespace) -> int:
    _needs_filter("purge", args)
    broker = _open(args)
    try:
        ids, missing = _resolve_ids(broker, args, "parked")
        asked, where = _selection(args, ids)
        if args.dry_run:
            return _dry_run("purge", args, broker, where, missing)
        total = _count(broker, args.queue, asked)
        wanted, label = _total_label(total, args.limit)
        asking = (wanted is None or wanted > 0) and not args.yes and sys.stdin.isatty()
        if asking and not _confirm(label, wanted or total.total, args.queue):
            sys.stderr.write("nothing purged\n")
            return REFUSED
        deleted = _walk("purged", broker.purge_batch, args, where, total, None)
        _note_unlisted(broker, args, where.place, "purged")
    finally:
        broker.close()
    not_found = _not_found(missing, total, args.limit, deleted)
    sys.stdout.write(f"purged {deleted}, not found {not_found}\n")
    return OK


# -- the parser -----------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        metavar="URL",
        default=None,
        help=f"sqlite:///path.db, a file path or amqp://... (default: ${ENV_BROKER}, "
        f"else {DEFAULT_BROKER})",
    )
    parser.add_argument("--queue", metavar="NAME", required=True, help="the work queue's name")


def _filters(
    parser: argparse.ArgumentParser, default_place: str, default_limit: int | None = None
) -> None:
    parser.add_argument(
        "--place",
        type=_place,
        default=None,
        help=f"delayed (in the DLQ), parked, or all (default: {default_place})",
    )
    parser.add_argument(
        "--older-than",
        type=_age,
        metavar="AGE",
        help="only those that got there at least AGE ago (30s, 15m, 2h, 3d)",
    )
    parser.add_argument(
        "--error-type",
        action="append",
        metavar="TYPE",
        help="only those whose last error is TYPE (full or last dotted name; repeatable)",
    )
    parser.add_argument(
        "--id",
        action="append",
        metavar="ID",
        help=f"only this message id, or its first {_ID_PREFIX}+ characters (repeatable)",
    )
    parser.add_argument(
        "--limit",
        type=_positive_int,
        default=default_limit,
        metavar="N",
        help="at most N, oldest first (default: "
        + (f"{default_limit})" if default_limit else "no limit)"),
    )


def fill_queue_parser(queue: argparse.ArgumentParser) -> None:
    """Add the ``dlq`` commands (``list``, ``show``, ``replay``, ``purge``) to ``queue``.

    ``failsafe.cli.main`` calls this for ``failsafe queue``. Each command sets ``run`` on the
    parsed arguments: a function that runs it, writes any refusal or usage error to stderr
    and returns the exit code (0 done, 1 refused, 2 bad usage).

    Args:
        queue: The parser of the ``queue`` tool.

    Example:
        ```python
        import argparse

        from failsafe.queue.cli import fill_queue_parser

        parser = argparse.ArgumentParser(prog="failsafe queue")
        fill_queue_parser(parser)
        args = parser.parse_args(["dlq", "list", "--queue", "orders"])
        ```
    """
    tools = queue.add_subparsers(dest="queue_tool", metavar="TOOL")
    tools.required = True
    dlq = tools.add_parser(
        "dlq",
        help="the dead letters: delayed (in the DLQ) and parked messages",
        description="List, show, replay and purge a queue's dead letters.",
    )
    sub = dlq.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    listing = sub.add_parser("list", help="list dead letters (delayed and parked), oldest first")
    _common(listing)
    _filters(listing, "all", _LIST_LIMIT)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--reveal",
        action="store_true",
        help="print headers, bodies and error messages whole: secrets included, to the terminal",
    )
    listing.set_defaults(run=_guarded(_cmd_list, listing.prog))

    show = sub.add_parser("show", help="show one dead letter in full")
    show.add_argument(
        "message_id",
        metavar="ID",
        help=f"the message's id, or the first {_ID_PREFIX} or more characters of it",
    )
    _common(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument(
        "--reveal",
        action="store_true",
        help="print headers, body and error message whole: secrets included, to the terminal",
    )
    show.set_defaults(run=_guarded(_cmd_show, show.prog))

    replay = sub.add_parser(
        "replay", help="move dead letters back to the work queue, with fresh counts"
    )
    _common(replay)
    _filters(replay, "parked")
    replay.add_argument(
        "--batch", type=_positive_int, default=100, metavar="N", help="ids per call (100)"
    )
    replay.add_argument(
        "--rate",
        type=_rate,
        default=None,
        metavar="N",
        help="at most N messages a second (default: no limit)",
    )
    replay.add_argument(
        "--all",
        action="store_true",
        help="allow replaying with no filter: every one of the place, poison messages too",
    )
    replay.add_argument("--dry-run", action="store_true", help="print what would be replayed")
    replay.set_defaults(run=_guarded(_cmd_replay, replay.prog))

    purge = sub.add_parser("purge", help="delete dead letters for good")
    _common(purge)
    _filters(purge, "parked")
    purge.add_argument(
        "--all", action="store_true", help="allow purging with no filter: every one of the place"
    )
    purge.add_argument(
        "--batch", type=_positive_int, default=100, metavar="N", help="ids per call (100)"
    )
    purge.add_argument("--dry-run", action="store_true", help="print what would be purged")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(run=_guarded(_cmd_purge, purge.prog))
