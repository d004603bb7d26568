"""``python -m examples.payment_flow up|demo|serve``: the example's command line.

``up`` starts every service and prints where they listen; ``demo`` plays the payment flow
(`demo.run_demo`, with the fast settings). Both take the broker (``--broker``, default
the embedded SQLite broker) and the DLQ's delay (``--redelivery-delay``); the rest, and the
help, is shared with warehouse_flow (`examples._support.cli`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from examples._support import cli  # the parsing and up's wait, shared with warehouse_flow
from examples.payment_flow.settings import SERVICES, Settings, parse_duration


def _settings(args: argparse.Namespace, fast: bool) -> Settings:
    settings = Settings.fast(args.run_dir) if fast else Settings(run_dir=args.run_dir)
    changes: dict[str, object] = {"broker": args.broker}
    if args.redelivery_delay is not None:
        changes["redelivery_delay"] = args.redelivery_delay
    if args.dsn:
        changes.update(dsn=args.dsn, schema=args.schema)
    if getattr(args, "traces", False):  # up's option (the demo is always traced)
        changes["traces"] = True
    return settings.replace(**changes)


def _up(args: argparse.Namespace) -> int:
    from examples.payment_flow.runner import Supervisor
    from examples.payment_flow.wiring import POLICIES

    with Supervisor(_settings(args, args.fast)) as supervisor:
        supervisor.start()
        settings = supervisor.settings
        print(f"run folder: {settings.path.resolve()} (logs, databases, settings.json)")
        print(f"broker: {settings.broker or settings.broker_url} (queue {settings.queue!r})")
        for name in SERVICES:
            print(f"  {name:<9} {settings.url(name)}")
        print(f"  review pages {settings.url('errors')}/review/")
        print(f"  health       {settings.url('consumer')}/health (every service serves its own)")
        policies = settings.policies_file or POLICIES
        print(f"policies: {policies} (the consumer watches it: an edit applies, no restart)")
        if settings.traces:
            print(f"traces: python -m examples._support.traces {settings.path}")
        order, payment = settings.url("order"), settings.url("payment")
        print("try:")
        print(f'  curl -s -X POST {order}/orders -d \'{{"orderId": "o-1"}}\'')
        print(f'  curl -s -X POST {payment}/payments -d \'{{"orderId": "o-1", "amount": 25}}\'')
        print(f"  curl -s {order}/orders/o-1")
        cli.wait_until_stopped(supervisor)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from examples.payment_flow.demo import run_demo

    return run_demo(_settings(args, fast=True))


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_OPTIONS_HELP = (
    "``--broker`` (default: the embedded SQLite broker; or"
    " ``amqp://guest:guest@127.0.0.1:5672/``), ``--redelivery-delay`` (the DLQ's delay,"
    " such as ``60s`` or ``2s``), "
)


def _options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--broker", help="amqp://... for RabbitMQ (default: the embedded SQLite broker)"
    )
    command.add_argument(
        "--redelivery-delay",
        type=_duration,
        help="seconds between redeliveries from the DLQ (default: 60s; the demo: 2s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    return cli.main(
        argv,
        "examples.payment_flow",
        Settings,
        SERVICES,
        scenario="the payment flow",
        up=_up,
        demo=_demo,
        options=_options,
        options_help=_OPTIONS_HELP,
    )


if __name__ == "__main__":
    sys.exit(main())
