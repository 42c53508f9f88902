"""Wall time of the race reproductions (issue 5: each under 5 s).

The reproductions are the tests' own (tests/test_races.py), imported, so the
bench times exactly what `./run test` runs.  A time is a measurement, not a
test verdict: the tests assert what each reproduction finds, this step
reports how long it took, beside the 5 s target.  Stock's runs include the
stated windows in which a frame that never comes is waited for.
"""
from __future__ import annotations

import os
import sys
from typing import Any

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from test_races import REPROS, run_repro  # noqa: E402


def names() -> list[str]:
    return list(REPROS)


def run(name: str, variant: str) -> dict[str, Any]:
    defects, took = run_repro(name, variant)
    return dict(name=name, variant=variant, took_s=round(took, 3),
                defects=len(defects), first_defect=defects[0] if defects else None)
