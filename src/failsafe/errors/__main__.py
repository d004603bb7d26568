"""``python -m failsafe.errors COMMAND ...``: the same as ``failsafe errors COMMAND ...``."""

import sys

from failsafe.cli import errors_main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(errors_main())
