"""``python -m examples.warehouse_flow up|demo|serve``: the example's command line.

``up`` starts every service and prints where they listen; ``demo`` plays the order flow
(`demo.run_demo`). The commands, their options and their help are those of both
examples (`examples._support.cli`); ``python -m examples.warehouse_flow --help`` lists them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from examples._support import cli  # the parsing and up's wait, shared with payment_flow
from examples.warehouse_flow.settings import SERVICES, Settings


def _up(args: argparse.Namespace) -> int:
    from examples.warehouse_flow.runner import Supervisor
    from examples.warehouse_flow.wiring import POLICIES

    settings = Settings.fast(args.run_dir) if args.fast else Settings(run_dir=args.run_dir)
    if args.dsn:
        settings = settings.replace(dsn=args.dsn, schema=args.schema)
    settings = settings.replace(traces=args.traces)
    with Supervisor(settings) as supervisor:
        supervisor.start()
        print(f"run folder: {supervisor.settings.path.resolve()} (logs, databases, settings.json)")
        for name in SERVICES:
            print(f"  {name:<12} {supervisor.settings.url(name)}")
        order = supervisor.settings.url("order")
        print(f"  review pages {supervisor.settings.url('errors')}/review/")
        print(f"  health       {order}/health (every service serves its own)")
        policies = supervisor.settings.policies_file or POLICIES
        print(f"policies: {policies} (the services watch it: an edit applies, no restart)")
        if args.traces:
            print(f"traces: python -m examples._support.traces {supervisor.settings.path}")
        print(
            f"try: curl -s -X POST {order}/orders/o-1/products -H 'content-type: application/json'"
            ' -d \'{"clientId": "c-1", "productId": "p-desk"}\''
        )
        cli.wait_until_stopped(supervisor)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from examples.warehouse_flow.demo import run_demo

    return run_demo(args.run_dir, dsn=args.dsn, schema=args.schema)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    return cli.main(
        argv,
        "examples.warehouse_flow",
        Settings,
        SERVICES,
        scenario="the order flow",
        up=_up,
        demo=_demo,
    )


if __name__ == "__main__":
    sys.exit(main())
