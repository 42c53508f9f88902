"""The stateful machine (spice_initial_draw.testing.stateful) on the patched
build, as Hypothesis's TestCase, under the run's profile (tests/conftest.py:
sid-ci, 200 examples of up to 6 steps; sid-extended with --extended, 5,000
of up to 12), each example on a codec it draws.  Over the run, each race
point is reached in REACHED_SHARE of its arms (assert_points_reached).  A failure prints the shrunk schedule as Python
(state.scanout(...), ...) and how to replay it (--hypothesis-seed=N, or
the @reproduce_failure blob); --hypothesis-show-statistics shows how often
each race point was reached."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import settings

from spice_initial_draw.testing.assertions import report
from spice_initial_draw.testing.stateful import assert_points_reached, make_machine

TALLY: Counter[str] = Counter()


class TestStatefulPatched(make_machine("patched", tally=TALLY).TestCase):
    settings = settings()   # the profile conftest loaded

    @pytest.fixture(autouse=True)
    def _report(self, request: pytest.FixtureRequest):
        TALLY.clear()
        yield
        report(request, f"\n  stateful patched: {TALLY['examples']} examples, "
               f"{TALLY['checks'] - TALLY['examples']} steps; "
               + ", ".join(f"{k}: {n}" for k, n in sorted(TALLY.items())
                           if k.startswith(("codec", "initial", "armed", "reached"))))

    def runTest(self) -> None:
        super().runTest()
        # Hypothesis stops early when it has tried every distinct schedule;
        # the machine's space is far larger than any profile here
        assert TALLY["examples"] >= self.settings.max_examples, \
            f"{TALLY['examples']} examples ran, the profile asks for {self.settings.max_examples}"
        assert_points_reached(TALLY)
