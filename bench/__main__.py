"""``python -m bench [--quick] [--markdown]``: time failsafe and its peers, check the targets."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

from bench.harness import Settings
from bench.report import format_all
from bench.run import run_all, sleep_zero_ns

PACKAGES = (
    "failsafe-kit",
    "tenacity",
    "stamina",
    "backoff",
    "pybreaker",
    "circuitbreaker",
    "pyresilience",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="one round of 3 short repeats per case (~8 s)"
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="also write the Markdown tables between the bench markers of README.md and"
        " docs/performance.md",
    )
    args = parser.parse_args(argv)
    settings = Settings(rounds=1, repeats=3, repeat_ns=25_000_000) if args.quick else Settings()

    started = time.perf_counter()
    results = run_all(settings)
    sleep_zero = sleep_zero_ns(settings)
    elapsed = time.perf_counter() - started

    versions = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    header = (
        f"Python {platform.python_version()} ({platform.python_implementation()}), {versions}.\n"
        f"ns per call: the best of {settings.rounds} round(s) x {settings.repeats} timed loops"
        f" of ~{settings.repeat_ns // 1_000_000} ms per case (GC off while timing; loop overhead"
        f" included). Async calls are awaited one after another in one event loop per case."
        f" Ran in {elapsed:.0f} s.\n"
    )
    print(header)
    print(format_all(results, markdown=args.markdown, sleep_zero_ns=sleep_zero))
    if args.update_docs:
        table = format_all(results, markdown=True, sleep_zero_ns=sleep_zero)
        command = "make bench" + (" (--quick)" if args.quick else "")
        block = f"Printed by `{command}` on {time.strftime('%Y-%m-%d')}. {header}\n{table}"
        for path in DOCS:
            _replace_between_markers(path, block)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "docs" / "performance.md")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _replace_between_markers(path: Path, block: str) -> None:
    text = path.read_text()
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise SystemExit(f"{path}: the markers {START} and {END} are missing")
    path.write_text(f"{head}{START}\n{block.strip()}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
