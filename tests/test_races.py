"""The race reproductions (spice_initial_draw.testing.repros) on both
variants: on stock each must detect a defect (printed as "stock defect"); on
patched each must find none."""
from __future__ import annotations

import pytest

from spice_initial_draw.testing import VARIANTS
from spice_initial_draw.testing.assertions import report
from spice_initial_draw.testing.expect import finds_defects_only_on_stock
from spice_initial_draw.testing.repros import REPROS, run_repro

# (iii) and (iv) also found a crash of both variants (SIGSEGV releasing a
# stream item of a client the stream was never created on, agent->dcc ==
# NULL) when a client connects after a GL draw stream: fixed by multi-client 1.


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", list(REPROS))
def test_repro(request, name, variant):
    defects, took = run_repro(name, variant)
    finds_defects_only_on_stock(request, name, variant, defects)
    # How long it took is a measurement (./run bench, step "repro", beside
    # issue 5's 5 s target), not a verdict: a loaded CI machine stretches it.
    report(request, f"\n  {name} [{variant}]: {took:.1f} s")
