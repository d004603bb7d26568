"""``python -m examples.warehouse_flow up|demo``: run the services, or play the seed.

- ``up``: start every service, print their addresses, log to the run folder; Ctrl-C stops
  them all.
- ``demo``: start them and play scenario A step by step, printing what really happened;
  exit 0 only if every step behaved as the seed says.
- ``serve NAME --settings PATH --fd N``: one service (what the supervisor runs).

Options of ``up`` and ``demo``: ``--run-dir`` (default: a new folder under
``.warehouse-flow/``), ``--dsn`` (PostgreSQL instead of SQLite files), ``--schema``, and for
``up`` ``--fast`` (the demo's short waits instead of the seed's).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from examples.warehouse_flow.settings import SERVICES, Settings


def _run_dir(given: str | None, command: str) -> str:
    if given:
        return given
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path(".warehouse-flow") / f"{command}-{stamp}-{os.getpid()}")


def _up(args: argparse.Namespace) -> int:
    from examples.warehouse_flow.runner import Supervisor

    run_dir = _run_dir(args.run_dir, "up")
    settings = Settings.fast(run_dir) if args.fast else Settings(run_dir=run_dir)
    if args.dsn:
        settings = settings.replace(dsn=args.dsn, schema=args.schema)
    with Supervisor(settings) as supervisor:
        supervisor.start()
        print(f"run folder: {supervisor.settings.path.resolve()} (logs, databases, settings.json)")
        for name in SERVICES:
            print(f"  {name:<12} {supervisor.settings.url(name)}")
        order = supervisor.settings.url("order")
        print(f"  review pages {supervisor.settings.url('errors')}/review/")
        print(
            f"try: curl -s -X POST {order}/orders/o-1/products -H 'content-type: application/json'"
            ' -d \'{"clientId": "c-1", "productId": "p-desk"}\''
        )
        print("Ctrl-C stops them all.")
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(0.5):
            for name in SERVICES:
                if not supervisor.alive(name):
                    print(f"{name} exited: see {supervisor.log_path(name)}; stopping the rest")
                    stop.set()
        print("\nstopping...")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from examples.warehouse_flow.demo import run_demo

    run_dir = _run_dir(args.run_dir, "demo")
    return run_demo(run_dir, dsn=args.dsn, schema=args.schema)


def _serve(args: argparse.Namespace) -> int:
    from examples.warehouse_flow.runner import serve

    serve(args.name, args.settings, args.fd)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m examples.warehouse_flow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("up", "start every service until Ctrl-C"), ("demo", "play the seed")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--run-dir", help="the run folder (default: a new one)")
        command.add_argument("--dsn", help="PostgreSQL instead of SQLite files")
        command.add_argument("--schema", default="warehouse_flow", help="PostgreSQL schema prefix")
        if name == "up":
            command.add_argument("--fast", action="store_true", help="short waits, as in the demo")
    serve = commands.add_parser("serve", help="run one service (used by the supervisor)")
    serve.add_argument("name", choices=SERVICES)
    serve.add_argument("--settings", required=True)
    serve.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    run = {"up": _up, "demo": _demo, "serve": _serve}[args.command]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
