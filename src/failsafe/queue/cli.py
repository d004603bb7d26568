"""``failsafe queue dlq``: list, show, replay and purge a queue's dead letters.

Usage:

```text
failsafe queue dlq list   --queue NAME [--broker URL] [FILTERS] [--json]
failsafe queue dlq show   ID --queue NAME [--broker URL] [--json]
failsafe queue dlq replay --queue NAME [--broker URL] [FILTERS] [--batch 100] [--rate N]
                          [--dry-run]
failsafe queue dlq purge  --queue NAME [--broker URL] [FILTERS | --all] [--batch 100]
                          [--dry-run] [--yes]

FILTERS: [--place delayed|parked|all] [--older-than AGE] [--error-type TYPE ...]
         [--id ID ...] [--limit N]
```

``--broker`` is a URL that ``failsafe.queue.connect.open_broker`` accepts
(default: ``$FAILSAFE_QUEUE_BROKER``, else ``queue.db``). ``list`` looks at both places by
default (and shows the oldest 100: ``--limit`` for more), ``replay`` and ``purge`` at the
parking queue only, with no limit. ``AGE`` is a number with a unit:
``30s``, ``15m``, ``2h``, ``3d``, ``1w`` (or several, ``1h30m``), counted from the time the
message got to its place. ``--error-type`` matches the last error's type exactly or by its
last dotted part (``OrderNotFound`` matches ``app.errors.OrderNotFound``). ``purge`` refuses
to run without ``--older-than``, ``--error-type`` or ``--id`` unless ``--all`` is given, and
asks before deleting when its input is a terminal (``--yes`` skips the question).

On RabbitMQ only parked messages are listed, replayed and purged: it cannot read its delay
queues without disturbing them.

Exit codes: 0 done, 1 refused (not found, broker unreachable, not confirmed; the reason on
stderr), 2 bad usage or configuration.

Time comes from the module attribute ``clock`` (the system clock); tests replace it with a
``FakeClock`` so that ages are fixed and the rate limit's pauses never really wait.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from failsafe.clock import SYSTEM_CLOCK, Clock
from failsafe.exceptions import ConfigurationError
from failsafe.queue.broker import Broker, BrokerError, DeadLetter, Place

__all__ = ["fill_queue_parser"]

clock: Clock = SYSTEM_CLOCK
"""Where the commands read the time and sleep (tests put a ``FakeClock`` here)."""

OK: Final = 0
REFUSED: Final = 1
USAGE: Final = 2

ENV_BROKER: Final = "FAILSAFE_QUEUE_BROKER"
DEFAULT_BROKER: Final = "queue.db"

_LIST_LIMIT: Final = 100  # list's default --limit
_SCAN: Final = 1_000_000  # dead letters read at most per command (filters apply client-side)
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


class _Refused(Exception):
    """Not found, broker unreachable or failing, not confirmed: exit 1."""


class _Usage(Exception):
    """Bad arguments or configuration: exit 2."""


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
    """Parse ``30s``, ``15m``, ``2h``, ``3d``, ``1w`` or a sum like ``1h30m`` into seconds."""
    value = text.strip().lower()
    parts = _AGE.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: give a number and a unit s, m, h, d or w "
            "(30s, 15m, 2h, 3d, 1h30m)"
        )
    return sum(float(n) * _UNITS[u] for n, u in parts)


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
            raise _Refused(f"no queue {args.queue!r} at {url} (its queues: {listed})")
    return broker


def _failed(exc: BaseException) -> _Refused:
    return _Refused(f"the broker failed: {exc}")


# -- selection --------------------------------------------------------------------------------
def _error_type(letter: DeadLetter) -> str | None:
    error = letter.message.last_error
    return error.type if error is not None else None


def _type_matches(kind: str | None, wanted: Sequence[str]) -> bool:
    if kind is None:
        return False
    short = kind.rsplit(".", 1)[-1]
    return any(w in (kind, short) for w in wanted)


class _Selection:
    """The dead letters a command acts on, and the ids asked for that were not there."""

    def __init__(self, matched: list[DeadLetter], missing: list[str], limit: int | None) -> None:
        self.matched = matched  # every one that matches the filters
        self.letters = matched[:limit] if limit is not None else matched  # within --limit
        self.missing = missing


def _select(broker: Broker, args: argparse.Namespace, default_place: str) -> _Selection:
    place = _PLACES[args.place or default_place]
    try:
        found = broker.dead_letters(args.queue, place=place, limit=_SCAN)
    except (BrokerError, OSError) as exc:
        raise _failed(exc) from None
    if len(found) >= _SCAN:
        sys.stderr.write(f"note: only the oldest {_SCAN} dead letters were looked at\n")
    ids = list(dict.fromkeys(args.id or ()))
    present = {letter.message.id for letter in found}
    missing = [i for i in ids if i not in present]
    now = clock.time()
    chosen = [
        letter
        for letter in found
        if (not ids or letter.message.id in ids)
        and (args.older_than is None or now - letter.since >= args.older_than)
        and (not args.error_type or _type_matches(_error_type(letter), args.error_type))
    ]
    return _Selection(chosen, missing, args.limit)


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


def _error_line(letter: DeadLetter) -> str:
    error = letter.message.last_error
    if error is None:
        return "-"
    return _clip(f"{error.type}: {error.message}" if error.message else error.type)


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "queue": letter.queue,
        "place": letter.place.value,
        "since": letter.since,
        "due_at": letter.due_at,
        "message": letter.message.to_json(),
    }


def _table(letters: Sequence[DeadLetter], out: TextIO) -> None:
    now = clock.time()
    columns = ("id", "place", "since (UTC)", "age", "rounds", "last error")
    rows = [
        (
            letter.message.id,
            letter.place.value,
            _iso(letter.since),
            _duration(now - letter.since),
            str(letter.message.delayed_attempts),
            _error_line(letter),
        )
        for letter in letters
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    for row in (columns, *rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _count_line(chosen: _Selection, queue: str) -> str:
    matched = chosen.matched
    delayed = sum(1 for letter in matched if letter.place is Place.DELAYED)
    places = f"(delayed: {delayed}, parked: {len(matched) - delayed})"
    noun = "dead letter" if len(matched) == 1 else "dead letters"
    if len(chosen.letters) < len(matched):
        return (
            f"the oldest {len(chosen.letters)} of {len(matched)} {noun} of {queue!r} {places}; "
            "raise --limit for more"
        )
    return f"{len(matched)} {noun} of {queue!r} {places}"


def _body_lines(letter: DeadLetter) -> tuple[str, list[str]]:
    message = letter.message
    text = message.text()
    if text is None:
        encoded = base64.b64encode(message.body).decode("ascii")
        return "body (base64)", [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    try:
        parsed = json.loads(text)
    except ValueError:
        return "body (text)", text.splitlines() or [""]
    return "body (JSON)", json.dumps(parsed, indent=2, ensure_ascii=False).splitlines()


def _print_letter(letter: DeadLetter, out: TextIO) -> None:
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
        for line in error.message.splitlines():
            out.write(f"  {line}\n")
    out.write("headers:" + ("\n" if message.headers else " -\n"))
    for key, value in sorted(message.headers.items()):
        out.write(f"  {key}: {value}\n")
    title, lines = _body_lines(letter)
    out.write(f"{title}:\n")
    for line in lines:
        out.write(f"  {line}\n")


class _Progress:
    """``replayed 200/350`` on stderr: rewritten in place on a terminal, else one line each."""

    def __init__(self, verb: str, total: int, stream: TextIO) -> None:
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


# -- commands ------------------------------------------------------------------------------------
def _cmd_list(args: argparse.Namespace) -> int:
    broker = _open(args)
    try:
        chosen = _select(broker, args, "all")
    finally:
        broker.close()
    letters = chosen.letters
    if args.json:
        json.dump([_letter_json(letter) for letter in letters], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return OK
    if not letters:
        sys.stdout.write(f"no dead letters of {args.queue!r} match\n")
        return OK
    _table(letters, sys.stdout)
    sys.stdout.write(_count_line(chosen, args.queue) + "\n")
    return OK


def _cmd_show(args: argparse.Namespace) -> int:
    broker = _open(args)
    try:
        found = broker.dead_letters(args.queue, limit=_SCAN)
    except (BrokerError, OSError) as exc:
        raise _failed(exc) from None
    finally:
        broker.close()
    letter = next((x for x in found if x.message.id == args.message_id), None)
    if letter is None:
        raise _Refused(
            f"no dead letter with id {args.message_id!r} in {args.queue!r} "
            "(not delayed, not parked: handled, replayed, purged or never there)"
        )
    if args.json:
        json.dump(_letter_json(letter), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_letter(letter, sys.stdout)
    return OK


def _batches(letters: Sequence[DeadLetter], size: int) -> list[list[str]]:
    ids = [letter.message.id for letter in letters]
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _apply(
    verb: str,
    action: Callable[[Sequence[str]], int],
    letters: Sequence[DeadLetter],
    *,
    batch: int,
    rate: float | None,
) -> int:
    """Run ``action`` batch by batch at most ``rate`` messages a second; return the count."""
    progress = _Progress(verb, len(letters), sys.stderr)
    start = clock.monotonic()
    sent = done = 0
    try:
        for ids in _batches(letters, batch):
            if rate is not None and sent:
                pause = start + sent / rate - clock.monotonic()
                if pause > 0:
                    clock.sleep(pause)
            done += action(ids)
            sent += len(ids)
            progress.update(sent)
    except (BrokerError, OSError) as exc:
        progress.finish()
        raise _Refused(f"{verb} {done} of {len(letters)}, then the broker failed: {exc}") from None
    except KeyboardInterrupt:
        progress.finish()
        raise _Refused(f"interrupted: {verb} {done} of {len(letters)}") from None
    progress.finish()
    return done


def _dry_run(verb: str, args: argparse.Namespace, chosen: _Selection) -> int:
    if chosen.letters:
        _table(chosen.letters, sys.stdout)
    sys.stdout.write(
        f"dry run: would {verb} {len(chosen.letters)} of {args.queue!r}, "
        f"not found {len(chosen.missing)} (nothing changed)\n"
    )
    return OK


def _cmd_replay(args: argparse.Namespace) -> int:
    broker = _open(args)
    try:
        chosen = _select(broker, args, "parked")
        if args.dry_run:
            return _dry_run("replay", args, chosen)
        moved = _apply(
            "replayed",
            lambda ids: broker.replay(args.queue, ids),
            chosen.letters,
            batch=args.batch,
            rate=args.rate,
        )
    finally:
        broker.close()
    not_found = len(chosen.missing) + len(chosen.letters) - moved
    sys.stdout.write(f"replayed {moved}, not found {not_found}\n")
    return OK


def _confirm(count: int, queue: str) -> bool:
    noun = "dead letter" if count == 1 else "dead letters"
    sys.stderr.write(f"purge {count} {noun} of {queue!r} for good? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _cmd_purge(args: argparse.Namespace) -> int:
    if not args.all and args.older_than is None and not args.error_type and not args.id:
        raise _Usage(
            "purge needs a filter (--older-than, --error-type or --id), "
            "or --all to purge every dead letter of the place"
        )
    broker = _open(args)
    try:
        chosen = _select(broker, args, "parked")
        if args.dry_run:
            return _dry_run("purge", args, chosen)
        asking = chosen.letters and not args.yes and sys.stdin.isatty()
        if asking and not _confirm(len(chosen.letters), args.queue):
            sys.stderr.write("nothing purged\n")
            return REFUSED
        deleted = _apply(
            "purged",
            lambda ids: broker.purge(args.queue, ids),
            chosen.letters,
            batch=args.batch,
            rate=None,
        )
    finally:
        broker.close()
    not_found = len(chosen.missing) + len(chosen.letters) - deleted
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
        "--id", action="append", metavar="ID", help="only this message id (repeatable)"
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
    listing.set_defaults(run=_guarded(_cmd_list, listing.prog))

    show = sub.add_parser("show", help="show one dead letter in full")
    show.add_argument("message_id", metavar="ID", help="the message's id")
    _common(show)
    show.add_argument("--json", action="store_true", help="print JSON")
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
