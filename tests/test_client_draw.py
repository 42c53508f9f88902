"""A guest draw after the client connected reaches the real spice-gtk
client, for every GStreamer codec, on both variants."""
from __future__ import annotations

import pytest

from spice_initial_draw import patterns
from spice_initial_draw.testing import FRAME_TIMEOUT, VIDEO_CODECS
from spice_initial_draw.testing.assertions import wait_shows


@pytest.mark.parametrize("codec", VIDEO_CODECS)
def test_draw_after_connect_shows_pattern(make_server, make_client, variant,
                                          codec):
    srv = make_server(codecs=f"gstreamer:{codec}", variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(1920, 1080)
    d.scanout(image)
    cli = make_client(srv, codec)
    cli.wait_ready()
    d.draw().wait(FRAME_TIMEOUT)
    if codec == "h264":
        # spice's x264 settings (intra refresh): a lone frame shows nothing
        # (see test_h264.py); the guest's next frame makes it appear.
        try:
            cli.wait_frames(1, 2.0)
        except TimeoutError:
            d.draw().wait(FRAME_TIMEOUT)
    cli.wait_frames(1, FRAME_TIMEOUT)
    wait_shows(cli, image)
    assert cli.stream_codec() == codec
