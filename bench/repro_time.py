"""Wall time of the race reproductions (issue 5: each under 5 s).

The reproductions are the tests' own (spice_initial_draw.testing.repros), so the
bench times exactly what `./run test` runs.  A time is a measurement, not a
test verdict: the tests assert what each reproduction finds, this step
reports how long it took, beside the 5 s target.  Stock's runs include the
stated windows in which a frame that never comes is waited for.
"""
from __future__ import annotations

from typing import Any

from spice_initial_draw.testing.repros import REPROS, run_repro


def names() -> list[str]:
    return list(REPROS)


def run(name: str, variant: str) -> dict[str, Any]:
    defects, took = run_repro(name, variant)
    return dict(name=name, variant=variant, took_s=round(took, 3),
                defects=len(defects), first_defect=defects[0] if defects else None)
