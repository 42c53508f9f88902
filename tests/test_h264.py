"""H.264 as spice-server configures x264 (intra-refresh, ...): after a
single frame the spice-gtk client shows nothing; the picture appears once
a second frame follows (BASELINE: about 0.26 s later).  The decoder only
knows an access unit is complete when the next one starts.

Stock: a guest that draws once and then stays idle is never shown; the
characterisation (nothing within SINGLE_FRAME_WINDOW, the picture after a
second guest draw) is asserted as stock behaviour.  Patched: once the guest
stopped drawing for 100 ms, the server encodes the current scanout once
more (core 10, the idle refresh), which pushes the held frame out: the
single draw is shown without a second guest draw.
"""
from __future__ import annotations

import time

from spice_initial_draw import patterns
from spice_initial_draw.testing import FRAME_TIMEOUT
from spice_initial_draw.testing.expect import shows_a_lone_h264_draw

SINGLE_FRAME_WINDOW = 3.0


def test_h264_single_guest_draw(make_server, make_client, variant):
    srv = make_server(codecs="gstreamer:h264", variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(1920, 1080)
    # the client connects before the guest has any scanout, so that the
    # patched server has no initial frame to send: one frame is one draw
    cli = make_client(srv, "h264")
    cli.wait_ready()
    d.scanout(image)
    t_draw = time.monotonic()
    first = d.draw()
    first.wait(FRAME_TIMEOUT)
    # the frame was sent (a stream exists, the decoder is h264) ...
    cli._wait(lambda: cli.events("stream-create"), FRAME_TIMEOUT, "stream")
    # ... and shown without any other guest draw (patched), or only after
    # the guest's next draw (stock)
    shows_a_lone_h264_draw(srv, d, cli, image, first, variant, SINGLE_FRAME_WINDOW, t_draw)
