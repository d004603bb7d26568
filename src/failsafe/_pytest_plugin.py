"""The pytest plugin installed with failsafe: the ``failsafe_fake_time`` fixture.

pytest loads it through the ``pytest11`` entry point; it adds nothing else to a test run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from failsafe.testing import FakeClock, fake_time


@pytest.fixture
def failsafe_fake_time() -> Iterator[FakeClock]:
    """Run the test on fake time: every failsafe policy on the default clock never waits.

    Yields the [`FakeClock`][failsafe.testing.FakeClock] (see
    [`fake_time`][failsafe.testing.fake_time]).
    """
    with fake_time() as clock:
        yield clock
