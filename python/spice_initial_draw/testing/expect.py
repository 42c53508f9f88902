"""What stock 0.16.0 and the patched server each do where the two differ.

One function per behaviour, named for it: it asserts what the patched
variant does AND what stock does (stock's defect asserted as stock
behaviour, so that a change of stock is noticed too, unless the docstring
says why stock's outcome is chance there), and its docstring says why they
differ.  The tests call these and contain no `if variant == ...` branch.
The other two idioms live in tests/conftest.py: a test that stock fails
outright carries the `stock_defect(reason, raises=...)` marker (a strict
xfail on stock), and one that cannot run on stock the `patched_only(reason)`
marker (skipped on stock).
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from spice_initial_draw import Client, Display, DrawHandle, Server, patterns
from spice_initial_draw.events import EventKind
from spice_initial_draw.frames import Frame
from spice_initial_draw.patterns import Image

from . import CORE_VARIANT, DEB_VARIANT, FRAME_TIMEOUT, INITIAL_FRAME_WINDOW, NO_FRAME_WINDOW, VARIANTS
from .assertions import (
    connect_showing,
    initial_picture,
    report,
    stream_evidence,
    wait_shows,
)
from .bad_scanouts import CRASH, Outcome
from .gl_sequence import Transcript, diff

T = TypeVar("T")


def is_stock(variant: str) -> bool:
    """Whether `variant` is stock 0.16.0 (its sanitizer builds included:
    stock-asan, stock-tsan); the core variant is not (the tests that run on
    it need only the core series), nor the deb one (every series, packaged);
    an unknown name is an error, not patched."""
    base = variant.split("-")[0]
    if base not in (*VARIANTS, CORE_VARIANT, DEB_VARIANT):
        raise ValueError(f"unknown variant {variant!r}")
    return base == "stock"


def per_variant(variant: str, *, patched: T, stock: T, deb: T | None = None) -> T:
    """A parameter that differs by variant (a timeout, a repeat count, a
    flag): the caller's comment says why.  `deb`, when given, is the deb
    variant's (else it takes patched's)."""
    if deb is not None and variant == DEB_VARIANT:
        return deb
    return stock if is_stock(variant) else patched


def _blank(frame: Frame | None) -> bool:
    return frame is None or frame.is_blank()


# -- a new client of an idle VM: the initial frame ------------------------
def gets_initial_frame_or_nothing(cli: Client, variant: str, timeout: float,
                                  window: float) -> None:
    """A streaming client of a VM with a scanout and no guest draw since it
    connected: patched sends it an initial frame, so it decodes a frame
    within `timeout` of its display channel opening (INITIAL_FRAME_WINDOW
    on loopback); stock sends none (its defect), so no frame comes within
    `window` s, asserted."""
    if is_stock(variant):
        assert cli.no_frame_within(window), \
            f"a frame arrived within {window} s on {variant}"
        return
    ready = cli.wait_ready()
    frames = cli.wait_frames(1, timeout)
    assert frames[0].t - ready.t <= timeout, \
        f"the first frame came {frames[0].t - ready.t:.3f} s after the display channel"


def shows_initial_frame_or_nothing(cli: Client, image: Image, variant: str,
                                   timeout: float, window: float,
                                   srv: Server | None = None, *,
                                   codec: str | None = None,
                                   since: float | None = None) -> None:
    """A client of an idle VM: patched sends the initial frame, so the
    client shows `image` at once (assertions.initial_picture: by the
    initial frame or the one idle refresh, INITIAL_FRAMES_MAX, within
    `timeout` s of its display channel opening: INITIAL_FRAME_WINDOW on
    loopback), in `codec` when given; stock sends none, so no frame comes
    within `window` s and the client's surface is blank or absent (its
    defect, asserted).  With `srv`, a patched failure prints the server's
    and the client's stream evidence; the initial picture's frame and
    delay are printed (after `since`, default the display channel's
    opening)."""
    if is_stock(variant):
        assert cli.no_frame_within(window), \
            f"a frame arrived within {window} s on {variant}"
        assert _blank(cli.frame()), f"{variant}: the client shows pixels without a frame"
        return
    try:
        index, delay = initial_picture(cli, image, timeout, since)
        if codec is not None:
            assert cli.stream_codec() == codec
    except (AssertionError, TimeoutError) as e:
        if srv is None:
            raise
        raise type(e)(f"{e}\n" + stream_evidence(srv, [cli])) from None
    print(f"{codec or cli.stream_codec()} {image.width}x{image.height}: the picture "
          f"by frame {index}, {delay:.3f} s after the display channel opened")


def shows_scanout_at_its_size_or_nothing(cli: Client, width: int, height: int,
                                         y0_top: bool, variant: str) -> None:
    """After shows_initial_frame_or_nothing: patched's single initial frame
    (H.264 included) has the scanout's size, and a y0_top scanout is shown
    with top and bottom told apart (red, the top-left quadrant of the
    guest's buffer, at the bottom left); stock sent nothing, so the surface is
    still blank or absent."""
    frame = cli.frame()
    if is_stock(variant):
        assert _blank(frame), f"{variant}: the client shows pixels without a frame"
        return
    assert frame is not None, "the client has no primary surface"
    assert (frame.width, frame.height) == (width, height)
    if y0_top:
        x, y = patterns.quadrant_probes(width, height)[2]
        assert patterns.colour_close(frame.pixel(x, y), patterns.RED)


def initial_frame_needed(cli: Client, image: Image, variant: str, what: str,
                         failure: type[AssertionError],
                         window: float = INITIAL_FRAME_WINDOW) -> None:
    """A scenario that needs the idle VM's picture on a new client (a test
    marked stock_defect(raises=failure)): patched shows `image` at once
    (assertions.initial_picture: by frame INITIAL_FRAMES_MAX, within
    `window`, INITIAL_FRAME_WINDOW unless the scenario says more, of the
    display channel), else `failure`.
    Stock sends no initial frame: no frame may come within NO_FRAME_WINDOW
    (a frame there is an AssertionError: stock behaviour changed), and then
    the scenario fails with `failure`, the defect the marker expects."""
    if is_stock(variant):
        if not cli.no_frame_within(NO_FRAME_WINDOW):
            raise AssertionError(f"{what}: a frame arrived within {NO_FRAME_WINDOW} s")
        raise failure(f"{what}: no frame within {NO_FRAME_WINDOW} s")
    try:
        initial_picture(cli, image, window)
    except (AssertionError, TimeoutError) as e:
        raise failure(f"{what}: {e}") from None


def newcomers_got_initial_frames(frames: dict[str, int], variant: str) -> None:
    """Stream frames each newly connected client of an idle VM decoded in
    all, by name: at least one each on patched (its initial frame); none
    at all on stock, which sends no initial frame (the defect, asserted)."""
    if is_stock(variant):
        assert all(n == 0 for n in frames.values()), \
            f"{variant}: newcomers decoded frames without a guest draw: {frames}"
        return
    assert all(n >= 1 for n in frames.values()), \
        f"newcomers without an initial frame: {frames}"


def every_connect_gets_an_initial_frame(cycler: Client, count: int,
                                        variant: str) -> dict[str, Any]:
    """`count` short sessions to an idle VM (Client.cycle): on patched each
    one decodes its initial frame (within INITIAL_FRAME_WINDOW each); stock sends
    none, so none of them decodes a frame (0.2 s each is watched: stock
    never sends one).  Returns cycle()'s counts."""
    stats = cycler.cycle(count, wait_frame=per_variant(variant, patched=INITIAL_FRAME_WINDOW,
                                                      stock=0.2))
    print(f"{variant}: {stats}")
    assert stats["frames"] == per_variant(variant, patched=count, stock=0), stats
    return stats


# -- a guest draw with a client connected ---------------------------------
def shows_the_draw(cli: Client, image: Image, variant: str, timeout: float,
                   srv: Server | None = None, what: str = "",
                   stock_wait: float = 0.0) -> None:
    """A guest draw with a client connected: patched shows `image` within
    `timeout` (with `srv`, a failure prints the stream evidence, after
    `what`).  Stock stamps each frame with no playback margin, so spice-gtk
    drops a frame that reaches it late (MJPEG; any codec over a slow link)
    and whether a given draw is shown there is chance: nothing is asserted
    on stock; it is given `stock_wait` s for frames still in flight."""
    if is_stock(variant):
        time.sleep(stock_wait)
        return
    try:
        wait_shows(cli, image, timeout)
    except AssertionError as e:
        if srv is None:
            raise
        raise AssertionError(f"{what}{e}\n" + stream_evidence(srv, [cli])) from None


def frame_of_the_draw_decoded(shown: bool, variant: str, codec: str, message: str) -> None:
    """Whether a decoded frame showed the guest's draw (`shown`): always on
    patched; on stock with every codec but MJPEG, whose late frames
    spice-gtk drops (stock stamps them with no playback margin), so that
    whether the draw's frame is decoded is chance there."""
    if is_stock(variant) and codec == "mjpeg":
        return
    assert shown, message


def dropped_draw_is_sent_again(dropped: int, draws: int, cli: Client, last: Image,
                               variant: str, srv: Server) -> None:
    """`draws` back-to-back draws, `dropped` of them dropped by the
    encoder's rate control.  Both variants complete a dropped draw at once
    (the guest is never held for a client); patched then refreshes the
    client with the current scanout once the guest stopped drawing (core
    10), so the client ends on the last draw within FRAME_TIMEOUT.  Stock
    loses the frame; nothing is asserted on stock."""
    if is_stock(variant):
        return
    wait_shows(cli, last, FRAME_TIMEOUT)


def ends_on_the_last_draw(ends: bool, variant: str, message: str) -> None:
    """After back-to-back draws, whether the client's last decoded frame
    shows the last draw (`ends`): always on patched, which refreshes a
    client whose last frame may not be shown once the guest is idle (core
    10: rate control dropped it, the client may drop a late MJPEG frame or
    hold an H.264 one).  Stock loses such a frame for good, so whether the
    last draw is the last frame is chance there: nothing is asserted on
    stock."""
    if is_stock(variant):
        return
    assert ends, message


def shows_a_lone_h264_draw(srv: Server, d: Display, cli: Client, image: Image,
                           first: DrawHandle, variant: str, window: float,
                           t_draw: float) -> None:
    """A client connected before the guest's only draw (`first`, made at
    `t_draw` and completed), H.264, and its stream created.  Patched
    encodes the current scanout again once the guest stopped drawing for
    100 ms (core 10): the single draw is shown without a second one,
    and it is the only completion.  Stock: the decoder only knows an access
    unit is complete when the next one starts, so nothing is decoded
    within `window` s and the surface stays blank; the guest's next draw
    on `d` makes the picture appear (stock behaviour, asserted)."""
    if not is_stock(variant):
        wait_shows(cli, image, timeout=FRAME_TIMEOUT)
        assert cli.stream_codec() == "h264"
        done = [e.cookie for e in srv.events(EventKind.DRAW_DONE)]
        assert done == [first.cookie], f"completions {done}"
        print(f"h264 [patched]: a single guest draw shown "
              f"{time.monotonic() - t_draw:.3f} s after it, no second draw")
        return
    assert cli.no_frame_within(window), \
        "stock H.264: a single frame was decoded; the characterisation changed"
    assert cli.stream_codec() == "h264"
    assert _blank(cli.frame()), "a lone H.264 frame showed pixels"
    t_second = time.monotonic()
    d.draw().wait(FRAME_TIMEOUT)
    frames = cli.wait_frames(1, FRAME_TIMEOUT)
    wait_shows(cli, image)
    print(f"h264 [stock]: nothing in {window} s after a single "
          f"draw; the picture {frames[0].t - t_second:.3f} s after the second")


# -- messages and crashes -------------------------------------------------
def warns_once_of_no_dmabuf_encoder(output: str, variant: str) -> None:
    """The server's output while it has no encoder for a DMA-BUF scanout:
    patched says so once, naming the fix (gstreamer:h264); stock has no
    such warning (the series adds it)."""
    hint = [ln for ln in output.splitlines() if "can encode a DMA-BUF" in ln]
    if is_stock(variant):
        assert not hint, hint
        return
    assert len(hint) == 1, f"expected one warning naming the fix, got:\n{output}"
    assert "gstreamer:h264" in hint[0]


def stock_crash_ends_the_test(srv: Server, result: dict[str, Any], variant: str) -> bool:
    """After connects and scanouts at the same time (`result`: what the
    threads caught, "crash" the ServerCrashed of the scanouts).  Stock
    0.16.0 may crash (SIGSEGV) when a client connects while a scanout is
    set and another one just went away: if it did, the server was killed
    by a signal (asserted) and True, the test ends there.  Patched must be
    alive: a dead patched server is an AssertionError.  False: the test
    goes on."""
    if not ((is_stock(variant) and "crash" in result) or not srv.alive()):
        return False
    assert is_stock(variant), f"the patched server died: {result}"
    assert srv.returncode is not None and srv.returncode < 0
    srv.expect_death("stock 0.16.0 crashes when a client connects while a "
                     "scanout is set and another one just went away")
    print(f"stock: the server died ({srv.returncode}) during the connects: {result}")
    return True


def survives_a_client_replacing_a_streaming_one(srv: Server, variant: str) -> bool:
    """After a new client replaced (no multi-client mode) one whose GL
    stream exists: patched is alive (asserted).  Stock 0.16.0 sometimes
    dies of a signal there (SIGSEGV in the old client's teardown: seen in
    test_tls, the old client's stream items outlive it); such a death is
    declared the expected outcome (Server.expect_death), any other exit is
    an AssertionError.  Returns whether the server is alive (the test's
    checks of its log go on only then)."""
    if not is_stock(variant):
        srv.check_alive()
        return True
    if srv.alive():
        return True
    assert srv.returncode is not None and srv.returncode < 0, \
        f"stock exited with {srv.returncode}, not by a signal"
    srv.expect_death("stock 0.16.0 crashes when a new client replaces a streaming one")
    return False


def stock_may_die_when_its_replaced_client_goes(srv: Server, variant: str) -> None:
    """A second client replaced (no multi-client mode) one whose GL stream
    exists, and the clients go at teardown: stock 0.16.0 then sometimes
    dies of SIGSEGV (the replaced client's stream items outlive it, as in
    survives_a_client_replacing_a_streaming_one), which the fixture would
    report; on stock such a death is declared.  Patched must end cleanly
    (the fixture checks it)."""
    if is_stock(variant):
        srv.expect_death("stock 0.16.0 can crash when the replaced streaming "
                         "client's items go")


def finds_defects_only_on_stock(request: pytest.FixtureRequest, name: str, variant: str,
                                defects: list[str]) -> None:
    """A race reproduction's findings: on stock it must detect a defect
    (each one printed as "stock defect"), on patched none (the series
    fixes each race)."""
    if is_stock(variant):
        assert defects, f"{name}: the reproduction found no defect on stock"
        for d in defects:
            report(request, f"\n  stock defect [{name}]: {d}")
        return
    assert not defects, f"{name} on {variant}:\n  " + "\n  ".join(defects)


# -- bad scanouts ---------------------------------------------------------
def handles_bad_scanout(srv: Server, outcome: Outcome, variant: str, what: str,
                        stock_defects: set[str]) -> None:
    """What a server made of a bad scanout (bad_scanouts.run_bad_scanout's
    Outcome): patched shows no defect.  Stock 0.16.0 validates little: the
    defects it always shows for this input (`stock_defects`) must all be
    there; more are reported (a crash ends the judging, and stock's
    zero-size crash comes a little before or after the next scanout)."""
    if not is_stock(variant):
        assert not outcome.defects, f"patched, {what}: {outcome}"
        return
    if CRASH in outcome.defects:   # judged here: stock's crash is its verdict
        srv.expect_death(f"stock 0.16.0, {what}: {outcome}")
    assert stock_defects <= outcome.defects, (
        f"stock 0.16.0, {what}: stock behaviour was "
        f"{sorted(stock_defects)}, now {sorted(outcome.defects) or 'no defect'}"
        f" ({outcome})")


def shows_next_scanout_after_disable(srv: Server, cli: Client, image: Image,
                                     variant: str) -> None:
    """The good scanout `image` after a disable (fd -1, 0x0) is shown
    (assertions.connect_showing): patched always shows it; stock 0.16.0
    sometimes does not, so a stock failure is an xfail (not strict: stock
    passes too)."""
    try:
        connect_showing(srv, cli, image)
    except AssertionError as e:
        if is_stock(variant):
            pytest.xfail(f"stock 0.16.0: the scanout after a disable is "
                         f"sometimes not shown ({e})")
        raise


# -- a local GL client: stock's messages ------------------------------------
def gl_client_messages_as_stock(stock: Transcript, got: Transcript, variant: str,
                                clients: list[str] | None) -> str:
    """The diff between what a local GL client got (`got`) and what stock
    sends it (`stock`, a reference run of the same script): "" when it is
    as stock's.  One difference is the series': QEMU's scanout disable
    (fd -1, 0x0) stops the GL stream on patched (core, "display-channel:
    Stop the GL stream when the scanout is disabled", which issue 13 asks
    for), so a GL client that was given the GL stream's STREAM_CREATE (a
    session with a streaming client beside it, as stock does) gets its
    STREAM_DESTROY at the disable; stock sends it when the next scanout's
    stream replaces the old one.  Nothing else may differ."""
    expected = stock
    if not is_stock(variant) and stock.before_disable:
        messages = {}
        for name, msgs in stock.messages.items():
            at = stock.before_disable.get(name, len(msgs))
            later = [i for i in range(at, len(msgs)) if msgs[i] == "STREAM_DESTROY"]
            if later:
                msgs = msgs[:at] + ["STREAM_DESTROY"] + [
                    m for i, m in enumerate(msgs) if i >= at and i != later[0]]
            messages[name] = msgs
        expected = replace(stock, messages=messages)
    return diff(expected, got, clients, ("stock (reference run)" if expected is stock
                                         else "stock, its GL stream stopped at the disable",
                                         variant))


def gl_client_told_of_gl_stream(gl: Client, variant: str) -> None:
    """A local GL client beside a streaming client that just connected to
    an idle VM (no guest draw yet).  Both variants create the GL stream on
    every client, the GL client included (STREAM_CREATE, never a frame),
    as soon as the stream exists: patched creates it for the streaming
    client's initial frame, at its connect; stock only at the next guest
    draw, so its GL client has none yet."""
    created = gl.events("stream-create")
    if is_stock(variant):
        assert not created, f"stock: {created}"
    else:
        assert len(created) == 1, f"patched: {created}"
    assert gl.frames_received() == 0
