"""The defect: an idle VM (scanout and draw before the client connects,
nothing after) shows a new client nothing on stock, within a stated
window; the patched variant sends it an initial frame."""
from __future__ import annotations

import pytest

from spice_initial_draw import patterns
from spice_initial_draw.testing import FRAME_TIMEOUT, INITIAL_FRAME_WINDOW, NO_FRAME_WINDOW
from spice_initial_draw.testing.assertions import wait_shows
from spice_initial_draw.testing.expect import (
    shows_initial_frame_or_nothing,
    stock_may_die_when_its_replaced_client_goes,
)

CODECS = ("mjpeg", "vp8")


def idle_vm(make_server, variant, codec):
    srv = make_server(codecs=f"gstreamer:{codec}", variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(1920, 1080)
    d.scanout(image)
    d.draw().wait(FRAME_TIMEOUT)   # no client: completes at once
    return srv, d, image


@pytest.mark.parametrize("codec", CODECS)
def test_first_client_of_idle_vm(make_server, make_client, variant, codec):
    srv, _, image = idle_vm(make_server, variant, codec)
    cli = make_client(srv, codec)
    cli.wait_ready()
    shows_initial_frame_or_nothing(cli, image, variant, INITIAL_FRAME_WINDOW, NO_FRAME_WINDOW)


@pytest.mark.parametrize("codec", CODECS)
def test_second_client_of_idle_vm(make_server, make_client, variant, codec):
    srv = make_server(codecs=f"gstreamer:{codec}", variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(1920, 1080)
    d.scanout(image)
    first = make_client(srv, codec)
    first.wait_ready()
    d.draw().wait(FRAME_TIMEOUT)
    first.wait_frames(1, FRAME_TIMEOUT)   # the first client saw the guest draw
    wait_shows(first, image)
    # the VM is idle now; a second client connects
    second = make_client(srv, codec)
    second.wait_ready()
    shows_initial_frame_or_nothing(second, image, variant, INITIAL_FRAME_WINDOW, NO_FRAME_WINDOW)
    # the first client is still fine
    wait_shows(first, image)
    stock_may_die_when_its_replaced_client_goes(srv, variant)
