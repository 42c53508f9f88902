"""Issue 4, point 4: no fd leaks.  After 1,000 connects and disconnects of
the real client and 1,000 scanouts, the server process holds exactly the
fds of the current scanout (Server.memfds(), checked by content), and no
more fds in all than after the first connect.

The connects run in one spice-gtk process (Client.cycle: a new session
per connect, the display channel open, then disconnect), concurrently
with the scanouts (and a guest draw every 50 scanouts).  Measured: about
25 s per variant for the 1,000 + 1,000 (SID_FD_CYCLES overrides 1,000).
"""
from __future__ import annotations

import os
import threading

from spice_initial_draw import Client, ServerCrashed, patterns
from spice_initial_draw.patterns import DRM_FORMAT_NV12
from spice_initial_draw.testing import FRAME_TIMEOUT
from spice_initial_draw.testing.assertions import settled_memfds
from spice_initial_draw.testing.expect import stock_crash_ends_the_test

CYCLES = int(os.environ.get("SID_FD_CYCLES", "1000"))
SCANOUTS = CYCLES


def memfd_contents(srv, fd: int, n: int) -> bytes:
    with open(f"/proc/{srv.pid}/fd/{fd}", "rb") as f:
        return f.read(n)


def test_fds_after_connects_and_scanouts(make_server, variant):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant)
    d = srv.display(0)
    small = [patterns.quadrants(320, 240),
             patterns.quadrants(320, 240, colours=(patterns.BLUE,) * 4)]
    d.scanout(small[0])
    cycler = Client(srv.host, srv.port, "mjpeg", connect=False)
    result: dict = {}
    try:
        cycler.cycle(2, wait_frame=1.0)     # warm-up: GStreamer loaded
        srv.check_alive()
        baseline = len(srv.fds())

        def connects() -> None:
            try:
                result["stats"] = cycler.cycle(CYCLES, wait_frame=0.0)
            except Exception as e:  # reported below
                result["error"] = e

        th = threading.Thread(target=connects)
        th.start()
        try:
            for i in range(SCANOUTS):
                d.scanout(small[i % 2])
                if i % 50 == 49:
                    d.draw().wait(FRAME_TIMEOUT)
        except ServerCrashed as e:
            result["crash"] = e
        th.join()
    finally:
        cycler.close()
    if stock_crash_ends_the_test(srv, result, variant):
        return
    assert "error" not in result, result.get("error")
    stats = result["stats"]
    print(f"{variant}: {stats}")
    assert stats["cycles"] == stats["ready"] == stats["closed"] == CYCLES

    # the current scanout: the last one of the loop ...
    last = small[(SCANOUTS - 1) % 2]
    held = settled_memfds(srv, 1)
    assert len(held) == 1, f"server holds {len(held)} scanout fds: {held}"
    (fd,) = held
    assert memfd_contents(srv, fd, len(last.data)) == last.data, \
        "the fd the server holds is not the current scanout's"
    assert len(srv.fds()) <= baseline, \
        f"{len(srv.fds())} fds open, {baseline} after the first connect"

    # ... and a two-plane scanout with one fd per plane replaces it
    w, h = 320, 240
    nv12 = bytes(w * h) + bytes([128]) * (w * h // 2)
    d.scanout_planes(nv12, w, h, offsets=[0, w * h], strides=[w, w],
                     fourcc=DRM_FORMAT_NV12, separate_fds=True)
    held = settled_memfds(srv, 2)
    assert sorted(held.values()) == sorted(
        ["/memfd:sid-scanout-d0-p0 (deleted)",
         "/memfd:sid-scanout-d0-p1 (deleted)"]), held
    d.scanout(small[0])
    assert len(settled_memfds(srv, 1)) == 1, srv.memfds()
