"""H.264 as spice-server configures x264 (intra-refresh, ...): after a
single frame the spice-gtk client shows nothing; the picture appears once
a second frame follows (BASELINE: about 0.26 s later)."""
from __future__ import annotations

import time

from conftest import FRAME_TIMEOUT
from helpers import wait_shows
from spice_initial_draw import patterns

SINGLE_FRAME_WINDOW = 3.0


def test_h264_single_frame_shows_nothing_until_second(make_server,
                                                      make_client, variant):
    srv = make_server(codecs="gstreamer:h264", variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(1920, 1080)
    # the client connects before the guest has any scanout, so that the
    # patched server has no initial frame to send: one frame is one draw
    cli = make_client(srv, "h264")
    cli.wait_ready()
    d.scanout(image)
    first = d.draw()
    first.wait(FRAME_TIMEOUT)
    # the frame was sent (a stream exists, the decoder is h264) ...
    cli._wait(lambda: cli.events("stream-create"), FRAME_TIMEOUT, "stream")
    assert cli.no_frame_within(SINGLE_FRAME_WINDOW), \
        "H.264: a single frame was decoded; the characterisation changed"
    assert cli.stream_codec() == "h264"
    frame = cli.frame()
    assert frame is None or frame.is_blank(), "a lone H.264 frame showed pixels"
    # ... and the guest's next frame makes the picture appear
    t_second = time.monotonic()
    d.draw().wait(FRAME_TIMEOUT)
    frames = cli.wait_frames(1, FRAME_TIMEOUT)
    wait_shows(cli, image)
    print(f"h264 [{variant}]: picture {frames[0].t - t_second:.3f} s after "
          f"the second draw; late/drop notes: "
          f"{[e.info.get('text', '')[-60:] for e in cli.events('stream-late')]}")
