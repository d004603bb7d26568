"""The suite's real-sleep guard: a test's own sleep fails, the stdlib's polling does not."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest


def test_a_tests_own_sleep_fails() -> None:
    """``time.sleep`` called by test code raises, naming the fake clock to use instead."""
    with pytest.raises(AssertionError, match="use FakeClock"):
        time.sleep(0.001)


def test_subprocess_waiting_for_its_child_is_not_a_sleep() -> None:
    """``subprocess.run(..., timeout=)`` polls its child with short sleeps: they go through."""
    done = subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.05)"], timeout=30, check=False
    )
    assert done.returncode == 0
