"""The GL stream only uses an encoder that can encode a DMA-BUF (issue 12,
point 4).  spice-server's default video codec list starts with the builtin
MJPEG encoder ("spice:mjpeg"), which has no encode_dmabuf: stock picks it
for the GL stream and never sends a frame."""
from __future__ import annotations

import pytest

from spice_initial_draw import patterns
from spice_initial_draw.errors import DrawTimeout
from spice_initial_draw.testing import FRAME_TIMEOUT, INITIAL_FRAME_WINDOW, NO_FRAME_WINDOW
from spice_initial_draw.testing.assertions import wait_shows
from spice_initial_draw.testing.expect import (
    per_variant,
    shows_initial_frame_or_nothing,
    warns_once_of_no_dmabuf_encoder,
)

# "auto" is spice_server_set_video_codecs()'s name for the default list
LISTS = {"default": "auto", "spice-mjpeg-first": "spice:mjpeg;gstreamer:h264"}


def draw_wait(variant: str) -> float:
    """How long QEMU's draw is waited for: patched completes it (a generous
    timeout); stock never does with the builtin MJPEG encoder (it has no
    encode_dmabuf, so nothing completes the draw), which the stated window
    shows as well as a longer wait would."""
    return per_variant(variant, patched=FRAME_TIMEOUT, stock=NO_FRAME_WINDOW)


@pytest.mark.parametrize("codecs", LISTS.values(), ids=LISTS.keys())
@pytest.mark.stock_defect("the builtin MJPEG encoder is picked for the "
                          "GL stream: no frame is sent and the draw never completes",
                          raises=(TimeoutError, DrawTimeout))
def test_guest_draw_shown_with_a_spice_codec_first(make_server, make_client,
                                                   variant, codecs):
    srv = make_server(codecs=codecs, variant=variant)
    d = srv.display(0)
    cli = make_client(srv, None)   # the client's own codec preference
    cli.wait_ready()
    image = patterns.quadrants(1280, 720)
    d.scanout(image)
    d.draw().wait(draw_wait(variant))
    cli.wait_frames(1, NO_FRAME_WINDOW)
    wait_shows(cli, image)


@pytest.mark.parametrize("codecs", LISTS.values(), ids=LISTS.keys())
def test_idle_picture_shown_with_a_spice_codec_first(make_server, make_client,
                                                     variant, codecs):
    srv = make_server(codecs=codecs, variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(1280, 720)
    d.scanout(image)
    d.draw().wait(FRAME_TIMEOUT)
    cli = make_client(srv, None)
    cli.wait_ready()
    shows_initial_frame_or_nothing(cli, image, variant, INITIAL_FRAME_WINDOW, NO_FRAME_WINDOW)


@pytest.mark.stock_defect("the draw is never completed",
                          raises=DrawTimeout)
def test_no_dmabuf_codec_warns_once_and_completes(make_server, make_client,
                                                  variant):
    """Only the builtin MJPEG encoder: no picture can be sent; patched says
    why, once, naming the fix, and QEMU's draws still complete (stock's
    never do: QEMU's console stays blocked)."""
    srv = make_server(codecs="spice:mjpeg", variant=variant)
    d = srv.display(0)
    cli = make_client(srv, None)
    cli.wait_ready()
    d.scanout(patterns.quadrants(640, 480))
    mark = srv.output_mark()
    for _ in range(3):
        d.draw().wait(draw_wait(variant))
    assert cli.no_frame_within(2.0), "a frame arrived without a DMA-BUF encoder"
    warns_once_of_no_dmabuf_encoder(srv.output(mark), variant)
    assert srv.alive()
