"""QEMU's draw completes once nothing reads its buffer again (issue 16).

After async_complete QEMU lets the guest go on, and the guest may render its
next frame into the buffer it just showed.  The shim does that inside
async_complete (Display.rewrite_on_complete): a frame encoded from a read of
the buffer after completion shows the rewrite.  The client samples its
surface at every decoded stream frame, so every frame's picture is checked,
not only the last one.  The memfd stands in for the DMA-BUF: GStreamer maps
and reads it as it would a linear DMA-BUF."""
from __future__ import annotations

import time

import pytest

from spice_initial_draw import patterns
from spice_initial_draw.testing import FRAME_TIMEOUT, VIDEO_CODECS
from spice_initial_draw.testing.assertions import (
    probe_matches,
    report,
    stream_evidence,
)
from spice_initial_draw.testing.expect import (
    dropped_draw_is_sent_again,
    ends_on_the_last_draw,
    frame_of_the_draw_decoded,
    shows_the_draw,
)

W, H = 1280, 720
# what the guest renders into the buffer once its draw completed, never drawn
NEXT = patterns.solid(patterns.MAGENTA, W, H)
# after the draw under test: long enough for an idle refresh (100 ms) and a
# loaded machine's encode
WINDOW = 3.0


def shows(probes: list[list[int]], image: patterns.Image) -> bool:
    return all(probe_matches(probes, image))


def shows_any_of(probes: list[list[int]], image: patterns.Image) -> bool:
    """Some probe shows the image: a torn frame counts."""
    return any(probe_matches(probes, image))


@pytest.mark.core_series   # one client, a good scanout
@pytest.mark.parametrize("codec", VIDEO_CODECS)
def test_no_read_after_completion(request, make_server, make_client, variant, codec):
    srv = make_server(codecs=f"gstreamer:{codec}", variant=variant)
    d = srv.display(0)
    cli = make_client(srv, codec)
    cli.wait_ready()
    d.scanout(patterns.bars(W, H))
    d.draw().wait(FRAME_TIMEOUT)
    # A draw that follows another closely can be dropped by the encoder's
    # rate control: this test covers the encoded draw, the next one the
    # dropped draw.
    time.sleep(1.0)

    drawn = patterns.quadrants(W, H)
    d.rewrite_on_complete(NEXT)
    d.scanout(drawn)
    d.draw().wait(FRAME_TIMEOUT)
    assert [e for e in srv.events() if "guest rewrote" in e.text], \
        "the shim did not rewrite the buffer at completion"
    # At once a new buffer, which the guest does not rewrite: the idle
    # refresh (core 10) reads the current scanout after its draw completed,
    # as agreed on the list, so the rewritten one must not stay current.
    # A read of the rewritten buffer by the draw's own frame still shows.
    last = patterns.quadrants(W, H, colours=(patterns.WHITE, patterns.RED,
                                             patterns.GREEN, patterns.BLUE))
    d.scanout(last)
    d.draw().wait(FRAME_TIMEOUT)
    time.sleep(WINDOW)
    # stock stamps frames with no playback margin: spice-gtk drops late
    # MJPEG frames, so whether a given one is shown is chance there
    shows_the_draw(cli, last, variant, FRAME_TIMEOUT, stock_wait=1.0)

    pictures = [e.info.get("probes", []) for e in cli.stream_frames()]
    after = [p for p in pictures if shows_any_of(p, NEXT)]
    report(request, f"{variant}/{codec}: {len(pictures)} frames, "
           f"{sum(shows(p, drawn) for p in pictures)} of the draw, "
           f"{len(after)} read after completion")
    assert not after, (f"{len(after)} frame(s) show what the guest wrote after its "
                       f"draw completed: {after[:3]}\n" + stream_evidence(srv, [cli]))
    frame_of_the_draw_decoded(any(shows(p, drawn) for p in pictures), variant, codec,
                              f"no frame showed the draw; frames: {pictures}\n"
                              + stream_evidence(srv, [cli]))
    assert not srv.fatal_errors()


DROPPED = "GL draw frame dropped"


@pytest.mark.core_series   # one client, a good scanout
@pytest.mark.parametrize("codec", VIDEO_CODECS)
def test_dropped_draw_is_not_read_after_completion(request, make_server, make_client,
                                                   variant, codec):
    """Draws back to back: the encoder's rate control drops some frames
    (a frame within one period of the last one, or over the bit rate).
    Patched holds such a draw until it is sent again and encoded (core 14;
    before it, the refresh encoded the scanout after completion);
    every draw's buffer is rewritten at completion, so a frame read later
    shows it.  Stock drops the frame and completes the draw: no read either,
    but the frame is lost."""
    srv = make_server(codecs=f"gstreamer:{codec}", variant=variant,
                      env={"G_MESSAGES_DEBUG": "Spice"})
    d = srv.display(0)
    cli = make_client(srv, codec)
    cli.wait_ready()
    # small frames, so that draws can follow each other within a frame period
    w, h = 320, 180
    next_ = patterns.solid(patterns.MAGENTA, w, h)
    d.scanout(patterns.bars(w, h))
    d.draw().wait(FRAME_TIMEOUT)

    colours = (patterns.RED, patterns.GREEN, patterns.BLUE, patterns.WHITE)
    drawn: list[patterns.Image] = []
    durations: list[float] = []
    for k in range(100):
        image = patterns.quadrants(w, h, colours=colours[k % 4:] + colours[:k % 4])
        d.rewrite_on_complete(next_)
        d.scanout(image)
        t = time.monotonic()
        d.draw().wait(FRAME_TIMEOUT)
        durations.append(time.monotonic() - t)
        drawn.append(image)
    # The idle refresh reads the current scanout after its draw completed
    # (core 10; agreed on the list: the guest is idle, the buffer current):
    # the guest ends on a buffer it does not rewrite.  The draws above follow
    # each other well within the refresh's 100 ms.
    final = patterns.quadrants(w, h, colours=(patterns.YELLOW, patterns.BLUE,
                                              patterns.RED, patterns.GREEN))
    d.scanout(final)
    d.draw().wait(FRAME_TIMEOUT)
    drawn.append(final)
    dropped = srv.output().count(DROPPED)
    dropped_draw_is_sent_again(dropped, len(drawn), cli, drawn[-1], variant, srv)
    time.sleep(WINDOW)

    pictures = [e.info.get("probes", []) for e in cli.stream_frames()]
    after = [p for p in pictures if shows_any_of(p, next_)]
    ends_on_last = all(probe_matches(pictures[-1], drawn[-1])) if pictures else False
    report(request, f"{variant}/{codec}: {len(drawn)} draws, {len(pictures)} frames, "
           f"ends on the last draw: {ends_on_last}, "
           f"{dropped} dropped and sent again, slowest completion "
           f"{max(durations) * 1000:.0f} ms, "
           f"{len(after)} read after completion")
    assert not after, (f"{len(after)} frame(s) show what the guest wrote after its "
                       f"draw completed: {after[:3]}\n" + stream_evidence(srv, [cli]))
    ends_on_the_last_draw(ends_on_last, variant,
                          f"the client's last frame is not the last of {len(drawn)} draws: "
                          f"{pictures[-3:]}\n" + stream_evidence(srv, [cli]))
    assert not srv.fatal_errors()
