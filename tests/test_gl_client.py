"""Issue 4, point 8: local GL clients behave as before.

QEMU with -spice gl=on listens on a unix socket only
(spice_server_set_addr(addr, SPICE_ADDR_FLAG_UNIX_ONLY), no port) and
drives the console with spice_qxl_gl_scanout / spice_qxl_gl_draw_async.
A spice-gtk client there with the session's "gl-scanout" TRUE advertises
SPICE_DISPLAY_CAP_GL_SCANOUT and is a GL client: at connect it receives
GL_SCANOUT_UNIX (the scanout's fd: the display channel's "gl-scanout"
property), then GL_DRAW per guest draw ("gl-draw", answered with
gl_draw_done as spice-gtk's widget does) and no video stream.  Same on
stock and patched.
"""
from __future__ import annotations

import os
import tempfile

import pytest

from spice_initial_draw import Client, patterns
from spice_initial_draw.events import EventKind
from spice_initial_draw.patterns import DRM_FORMAT_XRGB8888
from spice_initial_draw.testing import FRAME_TIMEOUT, INITIAL_FRAME_WINDOW, NO_FRAME_WINDOW
from spice_initial_draw.testing.expect import (
    gets_initial_frame_or_nothing,
    gl_client_told_of_gl_stream,
)


@pytest.fixture
def unix_path():
    with tempfile.TemporaryDirectory(prefix="sid-gl-") as d:
        yield os.path.join(d, "spice.sock")


@pytest.fixture
def gl_clients():
    made: list[Client] = []

    def make(srv) -> Client:
        cli = Client.for_server(srv, gl=True)
        made.append(cli)
        return cli

    yield make
    for cli in made:
        cli.close()


@pytest.mark.parametrize("drawn_before", [False, True],
                         ids=["no-draw-yet", "drawn-before"])
def test_gl_client_gets_gl_scanout_at_connect(make_server, gl_clients,
                                              variant, unix_path,
                                              drawn_before):
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant,
                      unix_path=unix_path)
    assert srv.port == 0 and os.path.exists(unix_path)
    d = srv.display(0)
    image = patterns.quadrants(1280, 720)
    d.scanout(image, y0_top=True)
    if drawn_before:
        d.draw().wait(FRAME_TIMEOUT)
    cli = gl_clients(srv)
    cli.wait_ready()
    srv.wait_event(EventKind.CLIENT_CONNECT)
    # the server sends it the scanout itself at connect, without a draw
    sc = cli._wait(lambda: [e for e in cli.gl_scanouts()
                            if e.info.get("fd", -1) >= 0],
                   FRAME_TIMEOUT, "GL_SCANOUT_UNIX")[-1]
    assert (sc.info["width"], sc.info["height"], sc.info["stride"],
            sc.info["format"], sc.info["y0top"]) == \
        (1280, 720, 1280 * 4, DRM_FORMAT_XRGB8888, True), sc.info
    n_draws = len(srv.events(EventKind.DRAW))
    # no video stream for it, no frame, no extra completion
    assert cli.no_frame_within(NO_FRAME_WINDOW)
    assert not cli.events("stream-create"), cli.events("stream-create")
    assert cli.stream_codec() is None
    assert not cli.gl_draws()
    assert len(srv.events(EventKind.DRAW)) == n_draws
    assert len(srv.events(EventKind.DRAW_DONE)) == n_draws
    # a guest draw reaches it as GL_DRAW; its gl_draw_done completes it
    h = d.draw()
    h.wait(FRAME_TIMEOUT)
    draw = cli._wait(cli.gl_draws, FRAME_TIMEOUT, "gl-draw")[-1]
    assert (draw.info["w"], draw.info["h"]) == (1280, 720)
    assert not cli.events("stream-create")
    done = [e.cookie for e in srv.events(EventKind.DRAW_DONE)]
    assert done.count(h.cookie) == 1
    assert not srv.fatal_errors()


def test_gl_and_remote_style_client_on_one_socket(make_server, gl_clients,
                                                  variant, unix_path):
    """A client on the same unix socket without GL scanout (gl=False:
    MULTI_CODEC only) is a streaming client, not a GL one: patched sends it
    an initial frame, stock nothing; the GL client next to it still gets
    GL_SCANOUT at connect and no stream frame (multi-client mode)."""
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant,
                      unix_path=unix_path, env={"SPICE_DEBUG_ALLOW_MC": "1"})
    d = srv.display(0)
    image = patterns.quadrants(640, 480)
    d.scanout(image)
    gl = gl_clients(srv)
    gl.wait_ready()
    gl._wait(lambda: [e for e in gl.gl_scanouts()
                      if e.info.get("fd", -1) >= 0],
             FRAME_TIMEOUT, "GL_SCANOUT_UNIX")
    plain = Client.for_server(srv, "mjpeg", gl=False)
    try:
        plain.wait_ready()
        gets_initial_frame_or_nothing(plain, variant, INITIAL_FRAME_WINDOW, NO_FRAME_WINDOW)
        assert not plain.gl_scanouts()
    finally:
        plain.close()
    assert not gl.events("session-closed")
    gl_client_told_of_gl_stream(gl, variant)
    assert not srv.events(EventKind.DRAW_DONE)
