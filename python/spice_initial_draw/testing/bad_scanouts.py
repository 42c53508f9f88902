"""Bad GL scanouts as QEMU (a device model) could pass them, and how to judge
what a server made of one: tests/test_bad_scanouts.py (one test per bad
input) and tests/test_bad_scanouts_fuzz.py (Hypothesis).

A bad scanout must never crash the server nor leave QEMU waiting: the draw
issued on it is completed exactly once, one warning names the problem, the
client stays connected and the next good scanout is shown.  run_bad_scanout()
checks all that and returns the defects it saw (empty: all good).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from spice_initial_draw import (
    ClientError,
    DrawTimeout,
    ServerCrashed,
    SidError,
    patterns,
)
from spice_initial_draw.events import EventKind

from .assertions import wait_shows

XRGB = patterns.DRM_FORMAT_XRGB8888
NV12 = patterns.DRM_FORMAT_NV12
BAD_FOURCC = 0x20203859     # fourcc('Y', '8', ' ', ' '): no DRM format
W, H = 320, 240             # the good scanouts
STRIDE = W * 4

# How long QEMU is left waiting for the draw on a bad scanout before it is
# called a hang (a good 320x240 MJPEG draw completes in tens of ms).
DRAW_TIMEOUT = 3.0
# the next good scanout's one draw is shown within this
SHOW_TIMEOUT = 3.0

# Defects, as named in the assertion messages.
CRASH = "crash"                  # the server process died
HANG = "hang"                    # the draw was not completed (QEMU blocked)
DOUBLE = "double-completion"     # completed more than once (QEMU crashes)
NO_WARNING = "no-warning"        # no warning naming the problem
MANY_WARNINGS = "repeated-warning"  # the warning naming it, more than once
DISCONNECT = "client-disconnected"
NOT_SHOWN = "next-not-shown"     # the next good scanout + draw not shown

GOOD_IMAGES = (
    patterns.quadrants(W, H),
    patterns.quadrants(W, H, colours=(patterns.BLUE, patterns.RED,
                                      patterns.YELLOW, patterns.GREEN)),
)


@dataclass(frozen=True)
class BadScanout:
    """One bad input: Display.scanout_raw() keyword arguments, and a regular
    expression matching a warning that names the problem."""

    name: str
    kwargs: dict[str, Any]
    warning: str
    what: str


def _kw(**over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = dict(width=W, height=H, stride=STRIDE,
                              data=GOOD_IMAGES[0].data)
    kw.update(over)
    return kw


# five planes, each its own dup() of one memfd (spice owns all five)
PLANES_5 = [("memfd", 0, STRIDE)] * 5

# spice-server's own words (stock where it has any, else the series'
# hardening: red-qxl for planes and fds, the encoder for what it maps, the GL
# stream for the size it streams) for each problem.
# Not bad input, so not here:
# - spice_qxl_gl_scanout2 with 0 planes is QEMU 10.1's own disable (NULL
#   arrays, 0x0): a silent disable, tests/test_bad_scanouts.py's
#   test_scanout_disable_* (both of QEMU's forms);
# - a number that is not an open fd: QEMU passes spice the fds it opened
#   (a dup() of the guest's dmabuf), and spice owns and closes them.  spice
#   no longer probes them with fcntl() on QEMU's thread (hardening 1), and
#   no probe could tell QEMU's file from another one at the same number; a
#   server given a closed number would close() it at the next scanout,
#   when it may name another of QEMU's files.  There is no right outcome to
#   assert: the contract is that QEMU passes open fds.
CASES = [
    BadScanout("fd-minus-1", _kw(fd=-1),
               r"no file descriptor \(-1\)", "fd -1 with a 320x240 geometry"),
    BadScanout("pipe-fd", _kw(fd="pipe"),
               r"size of the DMA-BUF: Illegal seek", "a pipe (not mappable)"),
    BadScanout("socket-fd", _kw(fd="socket"),
               r"size of the DMA-BUF: Illegal seek", "a socket (not mappable)"),
    BadScanout("memfd-too-small", _kw(memfd_size=4096),
               r"DMA-BUF is smaller \(4096 bytes\) than",
               "a 4096-byte memfd for 320x240x4"),
    BadScanout("fd-minus-1-scanout2", _kw(fd=-1, scanout2=True),
               r"no file descriptor \(-1\)", "fd -1 through scanout2"),
    BadScanout("memfd-too-small-scanout2", _kw(memfd_size=W * 4 * 100,
                                               scanout2=True),
               r"DMA-BUF is smaller \(128000 bytes\) than",
               "a 100-line memfd for 240 lines, through scanout2"),
    BadScanout("width-0", _kw(width=0), r"invalid GL scanout size 0x240",
               "width 0"),
    BadScanout("height-0", _kw(height=0), r"invalid GL scanout size 320x0",
               "height 0"),
    BadScanout("width-16385", _kw(width=16385, height=16, stride=16385 * 4,
                                  data=b""),
               r"invalid GL scanout size 16385x16", "width above 16384"),
    BadScanout("height-16385", _kw(width=16, height=16385, stride=64,
                                   data=b""),
               r"invalid GL scanout size 16x16385", "height above 16384"),
    BadScanout("stride-below-width", _kw(stride=W * 2),
               r"stride 640, less than a line", "stride = width x 2"),
    BadScanout("unsupported-fourcc", _kw(fourcc=BAD_FOURCC),
               r"format.*(0x20203859|538982489)", "fourcc 'Y8  '"),
    BadScanout("planes-5", _kw(scanout2=True, planes=PLANES_5),
               r"invalid GL scanout: 5 planes, at most 4 are supported|num_planes <= 4",
               "spice_qxl_gl_scanout2, 5 planes"),
    BadScanout("multi-plane-video", _kw(scanout2=True, fourcc=NV12,
                                        memfd_size=W * H * 3 // 2,
                                        planes=[("memfd", 0, W),
                                                ("memfd", W * H, W)]),
               r"[Mm]ulti.?plane", "an NV12 scanout with the video encoder"),
]
CASE_IDS = [c.name for c in CASES]


@dataclass
class Outcome:
    defects: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def add(self, defect: str, note: str) -> None:
        self.defects.add(defect)
        self.notes.append(f"{defect}: {note}")

    def __str__(self) -> str:
        return "; ".join(self.notes) or "no defect"


def warnings_naming(output: str, regex: str) -> list[str]:
    """Lines of the server's output that are warnings matching regex."""
    pat = re.compile(regex)
    return [ln for ln in output.splitlines()
            if pat.search(ln) and re.search(r"WARNING|CRITICAL|warning", ln)]


def client_connected(cli: Any) -> bool:
    try:
        return not (cli.events("channel-destroy") or cli.events("session-closed"))
    except ClientError:
        return False


def run_bad_scanout(srv: Any, cli: Any, scanout_kwargs: dict[str, Any],
                    warning: str | None, next_image: Any,
                    draw_rect: tuple[int, int, int, int] | None = None
                    ) -> Outcome:
    """Give `srv` (with `cli` connected and showing a good scanout) the bad
    scanout, draw on it as QEMU would, then a good scanout of next_image
    and a draw: return the defects seen.  warning None: do not judge the
    warnings (fuzzing)."""
    out = Outcome()
    d = srv.display(0)
    mark = srv.output_mark()
    done_before = len(srv.events(EventKind.DRAW_DONE))
    try:
        d.scanout_raw(**scanout_kwargs)
        h = d.draw(*draw_rect) if draw_rect else d.draw()
    except ServerCrashed as e:
        out.add(CRASH, f"during the bad scanout/draw ({e.signal_name or e.returncode})")
        return out
    try:
        h.wait(DRAW_TIMEOUT)
    except ServerCrashed as e:
        out.add(CRASH, f"before completing the draw ({e.signal_name or e.returncode})")
        return out
    except DrawTimeout:
        if not srv.alive():
            out.add(CRASH, "before completing the draw")
        else:
            out.add(HANG, f"draw not completed within {DRAW_TIMEOUT} s: QEMU's "
                          "console stays blocked")
        return out
    time.sleep(0.2)            # room for a second completion, or a crash
    if not srv.alive():
        out.add(CRASH, f"after completing the draw (status {srv.returncode})")
        return out
    done = [e for e in srv.events(EventKind.DRAW_DONE) if e.cookie == h.cookie]
    fatal = srv.events(EventKind.FATAL)
    if len(done) != 1 or fatal:
        out.add(DOUBLE, f"{len(done)} completions of {h.cookie:#x}, "
                        f"fatal: {[e.text for e in fatal]}")
    if len(srv.events(EventKind.DRAW_DONE)) != done_before + 1:
        out.add(DOUBLE, "other completions appeared")
    if warning is not None:
        named = warnings_naming(srv.output(mark), warning)
        if not named:
            out.add(NO_WARNING, f"nothing matching /{warning}/ in: "
                                f"{srv.output(mark).strip()[-600:]!r}")
        elif len(named) > 1:
            out.add(MANY_WARNINGS, f"{len(named)} warnings: {named}")
    if not client_connected(cli):
        out.add(DISCONNECT, "the client lost its session")
        return out
    # the next good scanout is shown, after one draw (patched holds a draw
    # whose frame the encoder dropped until it is encoded: core 14)
    try:
        d.scanout(next_image)
    except ServerCrashed as e:
        out.add(CRASH, f"on the next good scanout ({e.signal_name or e.returncode})")
        return out
    try:
        d.draw(0, 0, next_image.width, next_image.height).wait(10)
    except SidError as e:  # ServerCrashed, DrawTimeout, DrawBusy...
        if not srv.alive():
            out.add(CRASH, f"on the next good draw (status {srv.returncode})")
        else:
            out.add(NOT_SHOWN, f"next good draw: {type(e).__name__}: {e}")
        return out
    try:
        wait_shows(cli, next_image, SHOW_TIMEOUT)
    except AssertionError as e:
        out.add(NOT_SHOWN, f"one draw of the next good scanout, client: {e}")
    except ClientError as e:
        out.add(DISCONNECT, str(e))
    if not client_connected(cli):
        out.add(DISCONNECT, "the client lost its session")
    if not srv.alive():
        out.add(CRASH, "after the next good scanout")
    return out
