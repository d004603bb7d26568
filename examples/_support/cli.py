"""The command line both examples share: ``up``, ``demo`` and ``serve``.

- ``up``: start every service, print their addresses, log to the run folder; Ctrl-C (or
  ``SIGTERM``, or a service exiting) stops them all.
- ``demo``: start them and play the example's scenario.
- ``serve NAME --settings PATH --fd N``: one service (what the supervisor runs).

``up`` and ``demo`` take ``--run-dir``, then the example's own options, then ``--dsn`` and
``--schema``; ``up`` also takes ``--fast`` and ``--traces`` (the demos are always traced).
What ``up`` prints and what ``demo`` plays are the example's; `main` parses, fills in the
run folder and calls them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from examples._support.settings import RunSettings

__all__ = ["Services", "main", "run_dir", "wait_until_stopped"]

_HELP = """``python -m {package} up|demo``: run the services, or play {scenario}.

- ``up``: start every service, print their addresses, log to the run folder; Ctrl-C stops
  them all.
- ``demo``: start them and play {scenario} step by step, printing what really happened;
  exit 0 only if every step behaved as described.
- ``serve NAME --settings PATH --fd N``: one service (what the supervisor runs).

Options of ``up`` and ``demo``: ``--run-dir`` (default: a new folder under ``{folder}/``),
{options}``--dsn`` (PostgreSQL instead of SQLite files), ``--schema``, and for ``up``
``--fast`` (the demo's short waits instead of the default ones) and ``--traces`` (each
service writes its spans to ``traces/`` in the run folder, as the demo does; ``python -m
examples._support.traces RUN_DIR`` prints one trace as a tree).
"""


class Services(Protocol):
    """What `wait_until_stopped` watches: an example's supervisor."""

    @property
    def services(self) -> tuple[str, ...]:
        """The service names."""
        ...

    def alive(self, name: str) -> bool:
        """Whether service ``name``'s process runs."""
        ...

    def log_path(self, name: str) -> Path:
        """The log file of service ``name``."""
        ...


def run_dir(given: str | None, folder: str, command: str) -> str:
    """The run folder: ``given``, or a new one under ``folder`` named after the command."""
    if given:
        return given
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path(folder) / f"{command}-{stamp}-{os.getpid()}")


def wait_until_stopped(supervisor: Services) -> None:
    """Block until Ctrl-C, ``SIGTERM`` or a service exiting (``up``'s last step).

    The caller's ``with`` block then stops every service.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # printed once the handlers are in place: a SIGTERM sent on seeing it stops them cleanly
    print("Ctrl-C stops them all.", flush=True)
    while not stop.wait(0.5):
        for name in supervisor.services:
            if not supervisor.alive(name):
                print(f"{name} exited: see {supervisor.log_path(name)}; stopping the rest")
                stop.set()
    print("\nstopping...")


def main(
    argv: Sequence[str] | None,
    package: str,
    settings: type[RunSettings],
    services: Sequence[str],
    *,
    scenario: str,
    up: Callable[[argparse.Namespace], int],
    demo: Callable[[argparse.Namespace], int],
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    options_help: str = "",
) -> int:
    """Parse ``argv`` and run the command; return the exit code.

    Before ``up`` or ``demo`` runs, ``args.run_dir`` is the run folder: the one given, or a
    new one under the settings' default ``run_dir`` (`run_dir`).

    Args:
        argv: The arguments (``None``: ``sys.argv[1:]``).
        package: The example's package, such as ``examples.payment_flow``: the help shows
            ``python -m PACKAGE``, and ``serve`` runs
            ``PACKAGE.runner.Supervisor.serve(NAME, PATH, N)``.
        settings: The example's settings class: its defaults of ``run_dir`` (where new run
            folders go) and ``schema`` (``--schema``'s default).
        services: The service names ``serve`` accepts.
        scenario: The flow the demo plays (``"the order flow"``, ``"the payment flow"``),
            for the help.
        up: Runs ``up`` with the parsed arguments.
        demo: Runs ``demo`` with the parsed arguments.
        options: Adds the example's own options to ``up`` and ``demo``.
        options_help: Their description in the help, ending with ``", "``.
    """
    folder = settings.run_dir  # the dataclass's default, such as ".payment-flow"
    description = _HELP.format(
        package=package, scenario=scenario, folder=folder, options=options_help
    )
    parser = argparse.ArgumentParser(prog=f"python -m {package}", description=description)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("up", "start every service until Ctrl-C"),
        ("demo", f"play {scenario} step by step"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--run-dir", help="the run folder (default: a new one)")
        if options is not None:
            options(command)
        command.add_argument("--dsn", help="PostgreSQL instead of SQLite files")
        command.add_argument("--schema", default=settings.schema, help="PostgreSQL schema prefix")
        if name == "up":
            command.add_argument("--fast", action="store_true", help="short waits, as in the demo")
            command.add_argument(
                "--traces",
                action="store_true",
                help="each service writes its spans to traces/ in the run folder",
            )
    serve = commands.add_parser("serve", help="run one service (used by the supervisor)")
    serve.add_argument("name", choices=services)
    serve.add_argument("--settings", required=True)
    serve.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        # imported here: ``--help``, ``up`` and ``demo`` need not load every service's app
        runner = importlib.import_module(f"{package}.runner")
        runner.Supervisor.serve(args.name, args.settings, args.fd)
        return 0
    args.run_dir = run_dir(args.run_dir, folder, args.command)
    return (up if args.command == "up" else demo)(args)
