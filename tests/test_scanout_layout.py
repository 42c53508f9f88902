"""A scanout the encoder cannot read as linear from byte 0 is refused for a
remote client, not encoded wrong: its plane 0 at a non-zero offset, or a
modifier other than DRM_FORMAT_MOD_LINEAR (0) and DRM_FORMAT_MOD_INVALID
(implicit, QEMU's default), here Intel X tiling.

Given to a streaming client (TCP, gstreamer:mjpeg), stock 0.16.0 hands the
fd to GStreamer as a linear buffer from byte 0: the client shows the bytes
before the offset (a whole other picture here), or the tiles read as
lines.  The series refuses the scanout: one warning in the server's log
naming the offset or the modifier, no frame for it within NO_FRAME_WINDOW,
each draw on it completed exactly once, and the next good scanout and draw
are shown.  (A local GL client gets such a scanout as it is:
tests/test_gl_message_sequence.py.)
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from spice_initial_draw import patterns
from spice_initial_draw.events import EventKind
from spice_initial_draw.patterns import Image
from spice_initial_draw.testing import FRAME_TIMEOUT, NO_FRAME_WINDOW
from spice_initial_draw.testing.assertions import connect_showing, probe_matches, stream_evidence
from spice_initial_draw.testing.bad_scanouts import (
    GOOD_IMAGES,
    warnings_naming,
)
from spice_initial_draw.testing.scanout_layouts import (
    I915_FORMAT_MOD_X_TILED,
    at_offset,
    x_tiled,
)

# the guest's picture in the odd buffer, and what lies before the offset
GUEST = patterns.quadrants(320, 240, colours=(patterns.MAGENTA, patterns.CYAN,
                                              patterns.YELLOW, patterns.BLACK))
BEFORE = patterns.quadrants(320, 240, colours=(patterns.GREEN,) * 4)
OFFSET = len(BEFORE.data)            # 307200: page aligned, a whole picture
TILED = patterns.quadrants(512, 256, colours=GUEST.colours)  # whole 512-byte tiles
# draws on the odd scanout, spread over the window, as a guest keeps drawing
DRAWS = 3


class WrongPicture(AssertionError):
    """The client showed a frame of the odd scanout read as linear from 0."""


CASES: dict[str, tuple[dict[str, Any], Image, str]] = {
    "offset": (dict(width=GUEST.width, height=GUEST.height, stride=GUEST.stride,
                    scanout2=True, planes=[("memfd", OFFSET, GUEST.stride)],
                    memfd_size=OFFSET + len(GUEST.data),
                    data=at_offset(GUEST, OFFSET, before=BEFORE)),
               GUEST, r"offset"),
    "x-tiled-modifier": (dict(width=TILED.width, height=TILED.height,
                              stride=TILED.stride, scanout2=True,
                              modifier=I915_FORMAT_MOD_X_TILED, data=x_tiled(TILED)),
                         TILED, r"modifier"),
}


@pytest.mark.stock_defect("the odd buffer is encoded as linear from byte 0: the "
                          "client shows the bytes before the offset, or the tiles "
                          "as lines", raises=WrongPicture)
@pytest.mark.parametrize("case", list(CASES))
def test_odd_layout_is_refused_for_a_streaming_client(make_server, make_client,
                                                      variant, case):
    kwargs, image, named = CASES[case]
    srv = make_server(codecs="gstreamer:mjpeg", variant=variant)
    d = srv.display(0)
    d.scanout(GOOD_IMAGES[0])
    cli = make_client(srv, "mjpeg")
    # set-up, not the verdict: stock drops a late MJPEG frame for good
    connect_showing(srv, cli, GOOD_IMAGES[0], draws=3)
    time.sleep(0.5)     # rate control: room before the next frame
    mark = srv.output_mark()
    seen = len(cli.stream_frames())
    d.scanout_raw(**kwargs)
    cookies = []
    for _ in range(DRAWS):
        h = d.draw()
        h.wait(FRAME_TIMEOUT)
        cookies.append(h.cookie)
        try:
            cli.wait_frames(seen + 1, NO_FRAME_WINDOW / DRAWS)
        except TimeoutError:
            continue    # no frame of it: what the series does
        else:
            frames = cli.stream_frames()[seen:]
            probes = frames[-1].info.get("probes", [])
            shows_guest = all(probe_matches(probes, image))
            before = case == "offset" and all(probe_matches(probes, BEFORE))
            evidence = stream_evidence(srv, [cli], mark)
            if not shows_guest:
                raise WrongPicture(
                    f"{case}: a frame of the odd scanout shows {probes} at the "
                    f"quadrant centres, not the guest's picture"
                    + (" but the bytes before the offset" if before else "")
                    + f"\n{evidence}")
            raise AssertionError(f"{case}: a frame was sent for a scanout that "
                                 f"must be refused\n{evidence}")
    print(f"{variant}, {case}: no frame within {NO_FRAME_WINDOW} s, {DRAWS} draws")
    done = srv.events(EventKind.DRAW_DONE)
    assert all(sum(e.cookie == c for e in done) == 1 for c in cookies), \
        f"completions: {[sum(e.cookie == c for e in done) for c in cookies]}"
    warned = warnings_naming(srv.output(mark), named)
    assert len(warned) == 1, \
        f"expected one warning naming the {named}, got {warned}\n" + srv.output(mark)
    d.scanout(GOOD_IMAGES[1])
    connect_showing(srv, cli, GOOD_IMAGES[1])
    assert srv.alive()
