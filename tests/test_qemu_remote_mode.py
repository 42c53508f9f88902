"""The shim's QEMU 10.1 remote GL mode (issue 15): guest updates are
counted, the refresh tick draws at most once per 1000 / max-refresh-rate ms,
only when updates are pending and no draw is outstanding, and never on
connect or while idle; gstreamer:h264 is the default codec."""
from __future__ import annotations

import time

import pytest

from spice_initial_draw import QEMU_10_1_REMOTE, Client, EventKind, patterns
from spice_initial_draw.server import QEMU_DIRECT
from spice_initial_draw.testing import FRAME_TIMEOUT, INITIAL_FRAME_WINDOW
from spice_initial_draw.testing.bad_scanouts import warnings_naming
from spice_initial_draw.testing.expect import shows_initial_frame_or_nothing

W, H = 1280, 720


def draws(srv):
    return srv.events(EventKind.DRAW)


def test_default_codec_is_h264(make_server, variant):
    """What spice-server itself reports it uses (spice_server_get_video_codecs)
    in the shim's QEMU 10.1 remote mode with no codec given: QEMU 10.1's
    gstreamer:h264, and nothing else."""
    srv = make_server(qemu=QEMU_10_1_REMOTE, variant=variant)
    assert srv.video_codecs() == "gstreamer:h264"


def test_updates_within_a_tick_make_one_draw(make_server, variant):
    srv = make_server(qemu=QEMU_10_1_REMOTE, variant=variant, max_refresh_rate=5)
    d = srv.display(0)
    d.scanout(patterns.quadrants(W, H))
    time.sleep(0.5)
    assert not draws(srv), "a draw without a guest update"
    for _ in range(10):
        d.update()
    d.wait_draw(1, FRAME_TIMEOUT)
    time.sleep(0.6)   # three ticks at 5 per second
    assert len(draws(srv)) == 1, [str(e) for e in draws(srv)]
    done = srv.events(EventKind.DRAW_DONE)
    assert len(done) == 1 and done[0].cookie == draws(srv)[0].cookie


@pytest.mark.parametrize("rate", [10, 30])
def test_draws_at_most_max_refresh_rate(make_server, make_client, variant, rate):
    """Updates every 5 ms for 2 s, a client connected: no more draws than
    ticks, each completed before the next, and at least half as many as
    ticks (each tick has updates pending; a draw of 1280x720 completes
    well within a tick, so only a tick that falls while one is
    outstanding is skipped)."""
    srv = make_server(qemu=QEMU_10_1_REMOTE, variant=variant, max_refresh_rate=rate)
    d = srv.display(0)
    d.scanout(patterns.quadrants(W, H))
    cli = make_client(srv)
    cli.wait_ready()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        d.update()
        time.sleep(0.005)
    time.sleep(0.5)
    n = len(draws(srv))
    print(f"{variant}: {n} draws in 2 s at max-refresh-rate {rate}")
    assert rate <= n <= 2.0 * rate + 2, f"{n} draws in 2 s at max-refresh-rate {rate}"
    t = [e.t_ns for e in draws(srv)]
    assert all(b - a >= 0.8e9 / rate for a, b in zip(t, t[1:])), "two draws within a tick"
    assert len(srv.events(EventKind.DRAW_DONE)) == n
    assert not srv.fatal_errors()


def test_idle_vm_gets_no_draw_on_connect_and_patched_shows_it(make_server, variant):
    srv = make_server(qemu=QEMU_10_1_REMOTE, variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(W, H)
    d.scanout(image)
    d.update()
    d.wait_draw(1, FRAME_TIMEOUT)
    with Client.for_server(srv) as cli:   # h264
        cli.wait_ready()
        # at once: by the initial frame or one refresh, in INITIAL_FRAME_WINDOW
        shows_initial_frame_or_nothing(cli, image, variant, INITIAL_FRAME_WINDOW, 3.0)
        assert len(draws(srv)) == 1, "QEMU 10.1 does not draw on connect"


# how the shim's QEMU disables the scanout (the shim's SCANOUT event), by mode
DISABLE_FORMS = {QEMU_10_1_REMOTE: "QEMU 10.1: gl_scanout2, 0 planes, no arrays",
                 QEMU_DIRECT: "gl_scanout, fd -1, 0x0"}


@pytest.mark.parametrize("qemu", DISABLE_FORMS)
def test_scanout_disable_as_the_qemu_played_and_silent(make_server, variant, qemu):
    """The shim disables the scanout as the QEMU it plays does
    (Display.scanout_disable()'s default): QEMU 10.1 with
    spice_qxl_gl_scanout2 and 0 planes, QEMU before 10.1 with
    spice_qxl_gl_scanout and fd -1.  spice-server takes either without a
    word (hardening 1; stock 0.16.0 has no warning for either), and the
    next scanout's draw is completed once."""
    srv = make_server(qemu=qemu, variant=variant)
    d = srv.display(0)
    d.scanout(patterns.quadrants(W, H))
    mark = srv.output_mark()
    d.scanout_disable()
    assert srv.events(EventKind.SCANOUT)[-1].text == f"scanout disable ({DISABLE_FORMS[qemu]})"
    d.scanout(patterns.quadrants(W, H, colours=(patterns.BLUE,) * 4))
    if qemu == QEMU_10_1_REMOTE:
        d.update()
        h = d.wait_draw(1, FRAME_TIMEOUT)
    else:
        h = d.draw()
    h.wait(FRAME_TIMEOUT)
    time.sleep(0.2)
    assert [e.cookie for e in srv.events(EventKind.DRAW_DONE)] == [h.cookie]
    assert not warnings_naming(srv.output(mark), "."), srv.output(mark)
    assert srv.alive()
