"""``python -m examples.payment_flow up|demo``: run the services, or play the seed.

- ``up``: start every service, print their addresses, log to the run folder; Ctrl-C stops
  them all.
- ``demo``: start them and play scenario B step by step, printing what really happened;
  exit 0 only if every step behaved as the seed says.
- ``serve NAME --settings PATH --fd N``: one service (what the supervisor runs).

Options of ``up`` and ``demo``: ``--run-dir`` (default: a new folder under
``.payment-flow/``), ``--broker`` (default: the embedded SQLite broker; or
``amqp://guest:guest@127.0.0.1:5672/``), ``--redelivery-delay`` (the DLQ's delay, such as
``60s`` or ``2s``), ``--dsn`` (PostgreSQL instead of SQLite files), ``--schema``, and for
``up`` ``--fast`` (the demo's short waits instead of the seed's).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from examples.payment_flow.settings import SERVICES, Settings, parse_duration


def _run_dir(given: str | None, command: str) -> str:
    if given:
        return given
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path(".payment-flow") / f"{command}-{stamp}-{os.getpid()}")


def _settings(args: argparse.Namespace, command: str, fast: bool) -> Settings:
    run_dir = _run_dir(args.run_dir, command)
    settings = Settings.fast(run_dir) if fast else Settings(run_dir=run_dir)
    changes: dict[str, object] = {"broker": args.broker}
    if args.redelivery_delay is not None:
        changes["redelivery_delay"] = args.redelivery_delay
    if args.dsn:
        changes.update(dsn=args.dsn, schema=args.schema)
    return settings.replace(**changes)


def _up(args: argparse.Namespace) -> int:
    from examples.payment_flow.runner import Supervisor

    with Supervisor(_settings(args, "up", args.fast)) as supervisor:
        supervisor.start()
        settings = supervisor.settings
        print(f"run folder: {settings.path.resolve()} (logs, databases, settings.json)")
        print(f"broker: {settings.broker or settings.broker_url} (queue {settings.queue!r})")
        for name in SERVICES:
            print(f"  {name:<9} {settings.url(name)}")
        print(f"  review pages {settings.url('errors')}/review/")
        order, payment = settings.url("order"), settings.url("payment")
        print("try:")
        print(f'  curl -s -X POST {order}/orders -d \'{{"orderId": "o-1"}}\'')
        print(f'  curl -s -X POST {payment}/payments -d \'{{"orderId": "o-1", "amount": 25}}\'')
        print(f"  curl -s {order}/orders/o-1")
        print("Ctrl-C stops them all.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\nstopping...")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from examples.payment_flow.demo import run_demo

    return run_demo(_settings(args, "demo", fast=True))


def _serve(args: argparse.Namespace) -> int:
    from examples.payment_flow.runner import serve

    serve(args.name, args.settings, args.fd)
    return 0


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m examples.payment_flow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("up", "start every service until Ctrl-C"), ("demo", "play the seed")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--run-dir", help="the run folder (default: a new one)")
        command.add_argument(
            "--broker", help="amqp://... for RabbitMQ (default: the embedded SQLite broker)"
        )
        command.add_argument(
            "--redelivery-delay",
            type=_duration,
            help="seconds between redeliveries from the DLQ (default: 60s; the demo: 2s)",
        )
        command.add_argument("--dsn", help="PostgreSQL instead of SQLite files")
        command.add_argument("--schema", default="payment_flow", help="PostgreSQL schema prefix")
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
