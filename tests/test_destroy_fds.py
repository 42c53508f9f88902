"""Scanout fds are not leaked when the device goes away: after
spice_server_destroy() (red_qxl_destroy() for each QXL instance, what
QEMU's exit or a device removal leads to), every fd QEMU handed over with a
scanout has been closed exactly once, the last one and one still queued
for a busy worker included, and the server process holds no scanout memfd.

Evidence: the race library's fd ledger (GIVEN/CLOSE of each fd and inode,
testing/fd_fates.py) and /proc/PID/fd (Server.memfds()).  Stock 0.16.0
keeps the current scanout in QXLState and red_qxl_destroy() frees that
without closing its fd: the last scanout's fd stays open.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from spice_initial_draw import Client, patterns
from spice_initial_draw.races import Races
from spice_initial_draw.testing import FRAME_TIMEOUT
from spice_initial_draw.testing.fd_fates import not_closed_once, scanout_fd_fates

A = patterns.quadrants(320, 240)
B = patterns.quadrants(640, 480, colours=(patterns.BLUE,) * 4)
# how long destroy() is left blocked on the parked worker before the
# worker is let go (the scanout is queued meanwhile)
BUSY = 1.0


class FdLeaked(AssertionError):
    """A scanout fd QEMU handed over was not closed by the destroy."""


@pytest.fixture
def races() -> Iterator[Races]:
    with Races() as r:
        yield r


@pytest.mark.stock_defect("red_qxl_destroy() frees QXLState without closing the "
                          "current scanout's fd", raises=FdLeaked)
@pytest.mark.parametrize("how", ["no-client", "client-connected",
                                 "scanout-queued-for-a-busy-worker"])
def test_destroy_closes_every_scanout_fd_once(make_server, variant, races, how):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant, env=races.env())
    races.attach(srv)
    d = srv.display(0)
    d.scanout(A)
    cli = None
    if how != "no-client":
        cli = Client.for_server(srv, "mjpeg")
        cli.wait_ready()
        d.draw().wait(FRAME_TIMEOUT)
    try:
        if how == "scanout-queued-for-a-busy-worker":
            park = races.arm("worker:read")
            d.draw()    # wakes the worker, which parks before reading it
            park.wait(1, 5.0)
            d.scanout(B)    # QEMU's thread hands the fd over: queued
            destroyer = threading.Thread(target=srv.destroy)
            destroyer.start()
            time.sleep(BUSY)
            assert destroyer.is_alive(), "destroy did not wait for the busy worker"
            races.disarm("worker:read")
            destroyer.join(FRAME_TIMEOUT)
            assert not destroyer.is_alive(), "destroy did not return"
        else:
            d.scanout(B)
            srv.destroy()
        fates = scanout_fd_fates(races)
        leaked = not_closed_once(fates)
        held = srv.memfds()
        evidence = "\n  ".join(str(f) for f in fates)
        print(f"{variant}, {how}:\n  {evidence}\n  held after destroy: {held}")
        assert len(fates) >= 2, f"the ledger saw {len(fates)} scanout fds"
        assert not races.violations(), races.violations()
        if leaked or held:
            raise FdLeaked(f"after the destroy: {leaked}; the server process still "
                           f"holds {held}\n  ledger:\n  {evidence}")
    finally:
        if cli is not None:
            cli.close()
