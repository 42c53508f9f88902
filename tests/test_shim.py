"""The QEMU-like driver itself: server setup, memfd scanouts, draw/cookie
semantics, event log, crash reporting.  Real spice-server, both variants."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from spice_initial_draw import DrawBusy, NoScanout, ServerCrashed, patterns, variants
from spice_initial_draw.events import EventKind
from spice_initial_draw.patterns import DRM_FORMAT_NV12
from spice_initial_draw.testing import FRAME_TIMEOUT
from spice_initial_draw.testing.assertions import settled_memfds
from spice_initial_draw.testing.racerig import RaceRig


def test_server_listens_on_loopback(make_server, variant):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant, displays=2)
    assert srv.port > 0
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5):
        pass
    started = srv.events(EventKind.SERVER_STARTED)
    assert started and started[0].a == srv.port


@pytest.mark.packaged   # the deb variant loads the library dpkg -x extracted
def test_variant_library_is_loaded(make_server, variant):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant)
    expected = variants.variant_library(variant)
    if expected is not None:
        assert srv.library == os.path.realpath(expected)
    else:
        others = [os.path.realpath(p) for n in variants.available_variants()
                  if n != variant and (p := variants.variant_library(n))]
        assert srv.library not in others


def test_invalid_codec_list_is_an_error(make_server):
    with pytest.raises(Exception, match="video codecs"):
        make_server(codecs="nosuch:codec", variant="patched")


def test_scanout_memfd_is_held_by_server_and_replaced(make_server, variant):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant, displays=2)
    assert srv.memfds() == {}
    srv.display(0).scanout(patterns.quadrants(320, 240))
    held = srv.memfds()
    assert list(held.values()) == ["/memfd:sid-scanout-d0-p0 (deleted)"]
    # a new scanout replaces the old buffer: spice closes the previous fd
    srv.display(0).scanout(patterns.solid(patterns.RED, 320, 240))
    assert len(srv.memfds()) == 1
    srv.display(1).scanout(patterns.quadrants(320, 240))
    names = sorted(srv.memfds().values())
    assert names == ["/memfd:sid-scanout-d0-p0 (deleted)",
                     "/memfd:sid-scanout-d1-p0 (deleted)"]


@pytest.mark.parametrize("separate_fds", [False, True])
def test_multi_plane_scanout(make_server, variant, separate_fds):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant)
    w, h = 64, 32
    data = bytes([128]) * (w * h * 3 // 2)
    srv.display(0).scanout_planes(data, w, h, offsets=[0, w * h],
                                  strides=[w, w], fourcc=DRM_FORMAT_NV12,
                                  separate_fds=separate_fds)
    held = sorted(srv.memfds().values())
    # one dup() per plane, as QEMU passes one fd per plane
    assert len(held) == 2
    if separate_fds:
        assert held == ["/memfd:sid-scanout-d0-p0 (deleted)",
                        "/memfd:sid-scanout-d0-p1 (deleted)"]
    ev = srv.events(EventKind.SCANOUT)[-1]
    assert (ev.a, ev.b, ev.c, ev.d) == (w, h, 2, DRM_FORMAT_NV12)


def test_draw_without_client_completes(make_server, variant):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant)
    d = srv.display(0)
    d.scanout(patterns.quadrants())
    h = d.draw()
    h.wait(5)
    done = h.completion()
    assert done is not None and done.t_ns >= h.t_issued * 1e9 - 1e6
    assert not d.draw_pending()
    # one cookie per draw
    h2 = d.draw()
    h2.wait(5)
    assert h2.cookie != h.cookie


def test_draw_without_scanout_is_rejected(make_server):
    srv = make_server(codecs="gstreamer:mjpeg", variant="patched")
    with pytest.raises(NoScanout, match="scanout first"):
        srv.display(0).draw(0, 0, 10, 10)


def test_second_draw_while_outstanding_is_rejected(make_server, make_client,
                                                   variant):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant)
    d = srv.display(0)
    d.scanout(patterns.quadrants())
    cli = make_client(srv)
    cli.wait_ready()
    h = d.draw()   # outstanding until the client has the frame (>= tens of ms)
    with pytest.raises(DrawBusy, match="outstanding"):
        d.draw()
    h.wait(15)
    d.draw().wait(15)


def test_scanout_may_replace_current_one_while_draw_outstanding(
        make_server, make_client, variant):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant)
    d = srv.display(0)
    d.scanout(patterns.quadrants())
    cli = make_client(srv)
    cli.wait_ready()
    h = d.draw()
    d.scanout(patterns.solid(patterns.BLUE))
    h.wait(15)
    assert srv.alive()
    # The draw completes from GStreamer's weak reference on the memory, which
    # GStreamer notifies just before it frees the memory and closes its dup()
    # of the fd: for a moment after completion that dup can still be open.
    memfds = settled_memfds(srv, 1)
    assert len(memfds) == 1, f"the replaced scanout's fd was not closed: {memfds}"


@pytest.mark.parametrize("which", ["unknown", "repeated", "invalid"])
def test_bad_completion_is_recorded_as_fatal(make_server, which):
    srv = make_server(codecs="gstreamer:mjpeg", variant="patched",
                      expect_fatal=True)
    d = srv.display(0)
    d.scanout(patterns.quadrants(64, 64))
    h = d.draw()
    h.wait(5)
    cookie = {"unknown": h.cookie + 100, "repeated": h.cookie,
              "invalid": 0x1234}[which]
    d.inject_async_complete(cookie)
    fatal = srv.events(EventKind.FATAL)
    assert len(fatal) == 1 and fatal[0].cookie == cookie
    assert which in fatal[0].text and "QEMU would crash" in fatal[0].text


def test_warning_after_one_second_without_completion(variant):
    # The draw's encode is held for 1.3 s at a race point (GStreamer's
    # thread, before it maps the buffer): deterministic, whatever the
    # machine's speed.  QEMU prints its warning after 1 s; so must the shim.
    with RaceRig(variant) as rig:
        rig.scanout(patterns.quadrants(320, 240))
        cli = rig.connect(0)
        cli.wait_ready()
        rig.settle()
        with rig.races.park("gst:before-map") as p:
            h = rig.draw_into(p)
            time.sleep(1.3)
            p.release()
        h.wait(10)
        warned = [e for e in rig.server.events(EventKind.WARNING)
                  if e.cookie == h.cookie]
        assert len(warned) == 1, f"warnings for the held draw: {warned}"
        assert warned[0].text == "spice: no gl-draw-done within one second"
        assert warned[0].t_ns - h.t_issued * 1e9 >= 0.99e9
        done = h.completion()
        assert done is not None and done.t_ns > warned[0].t_ns
        defects = rig.check_draws()
        assert not defects, defects


def test_event_log_is_monotonic_and_sees_clients(make_server, make_client,
                                                 variant):
    t0 = time.monotonic_ns()
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant)
    d = srv.display(0)
    d.scanout(patterns.quadrants(320, 240))
    cli = make_client(srv)
    cli.wait_ready()
    srv.wait_event(EventKind.CLIENT_CONNECT, 1)
    # The worker handles this draw after the display channel's connect, so
    # once it completed, dcc_start() no longer waits for the client's init:
    # stock dies of SIGSEGV when the client leaves during that wait (core 2;
    # 2 in 100 quick disconnects here, seen as "no display channel
    # disconnect seen" in two fresh-clone runs).
    d.draw().wait(FRAME_TIMEOUT)
    assert len(srv.display_connections()) == 1
    cli.disconnect()
    srv.wait_event(EventKind.CHANNEL, 1)
    events = srv.events()
    times = [e.t_ns for e in events]
    assert times == sorted(times) and times[0] >= t0
    assert times[-1] <= time.monotonic_ns()
    connect = srv.events(EventKind.CLIENT_CONNECT)[0]
    # display caps the server passes: SIZED_STREAM, MONITORS_CONFIG,
    # COMPOSITE, A8_SURFACE (bits 0..3) as far as the client has them
    assert connect.a & 0x1
    # the main channel's disconnect can come first
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and srv.display_connections():
        time.sleep(0.05)
    assert not srv.display_connections(), "no display channel disconnect seen"


def test_crash_is_reported_with_signal(make_server):
    srv = make_server(codecs="gstreamer:mjpeg", variant="patched")
    srv.expect_death("the test kills it")
    srv.crash(signal.SIGSEGV)
    with pytest.raises(ServerCrashed) as info:
        srv.display(0).scanout(patterns.quadrants(64, 64))
    assert info.value.signal_name == "SIGSEGV"
    assert info.value.returncode == -signal.SIGSEGV
