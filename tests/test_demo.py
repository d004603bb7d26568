"""`python -m failsafe.demo`: a tour of the core policies that plays every step and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.real_time
def test_demo_runs_and_every_step_behaves() -> None:
    """The demo exits 0 and reports each of its eight steps as behaving as described."""
    out = subprocess.run(
        [sys.executable, "-m", "failsafe.demo"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("   => ok:") == 8
    assert "NOT AS EXPECTED" not in out.stdout
    assert "Every step of the tour behaved as described." in out.stdout
