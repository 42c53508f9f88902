"""Live frames: the guest draws numbered frames at a steady rate to a real
spice-gtk client that already shows its picture, and each frame's
draw -> pixels is measured (issue 26: the benchmark's live-frame table,
tests/test_live_frames.py).

The guest renders into its own buffer (Display.keep_buffer() and paint():
the frame number as black and white blocks, patterns.number_blocks()) and
draws as QEMU does with gl=on: it never draws again before the previous
draw completed (QEMU blocks the console until async_complete), and a late
completion costs it its tick (no catch-up burst).  The client samples the
block centres at every display-invalidate (Client.set_probes()), so the
time a number FIRST appears on its surface is that event's time.  Both
times are CLOCK_MONOTONIC of this host: the shim's event log
(sid_monotonic_ns) and the client process's time.monotonic_ns()."""
from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import Client, Display, Server, patterns
from ..events import EventKind
from ..netshape import Profile, ShapingProxy

# 60 draws/s through a slow link (issue 26): 2 Mbit/s, 20 ms each way
SLOW_LINK = Profile("2mbit-20ms", rtt_ms=40, rate_bps=2e6)
# a run's "back to normal": the pre-stall median + this, in a window of
# RECOVERY_WINDOW shown frames
RECOVERY_MARGIN_MS = 10.0
RECOVERY_WINDOW = 5
SHOW_FIRST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LiveCase:
    """One stream: codec and size, the guest's rate and how long it draws,
    the link (None: loopback), one client stall `stall_at` s into the
    stream (None: none), and how long to wait after the last draw."""
    codec: str
    width: int = 1920
    height: int = 1080
    rate: float = 30.0
    duration_s: float = 4.0
    link: Profile | None = None
    stall_at_s: float | None = None
    stall_s: float = 0.5
    tail_s: float = 2.0


@dataclass(frozen=True)
class LiveFrame:
    """One guest draw of the stream: its number, when it was drawn, its
    draw -> async_complete and, if the client showed it, draw -> pixels."""
    n: int
    draw_ns: int
    done_ms: float | None
    px_ms: float | None


@dataclass
class LiveRun:
    """What one stream did; times relative to the first draw of the stream."""
    case: LiveCase
    variant: str
    frames: list[LiveFrame]
    first_shown: bool                         # frame 0, before the stream
    stall_ns: tuple[int, int] | None = None   # client stopped, continued
    late_logged: int = 0                      # spice-gtk's "too late" drops
    fatal: list[str] = field(default_factory=list)

    def draws_per_s(self) -> float:
        """Completed draws per second over the stream: the guest's rate."""
        done = [f for f in self.frames if f.done_ms is not None]
        if len(done) < 2:
            return 0.0
        span = (done[-1].draw_ns + done[-1].done_ms * 1e6 - done[0].draw_ns) / 1e9
        return len(done) / span if span > 0 else 0.0

    def between(self, t0_ns: int, t1_ns: int) -> list[float]:
        """draw -> pixels of the shown frames drawn in [t0, t1)."""
        return [f.px_ms for f in self.frames
                if f.px_ms is not None and t0_ns <= f.draw_ns < t1_ns]

    def recovery_ms(self) -> float | None:
        """After the stall: from the client's continuation to the draw of
        the first frame of the first RECOVERY_WINDOW shown frames whose
        median draw -> pixels is within RECOVERY_MARGIN_MS of the median
        before the stall; None if it never is (or there was no stall)."""
        if self.stall_ns is None:
            return None
        before = self.between(0, self.stall_ns[0])
        if not before:
            return None
        limit = statistics.median(before) + RECOVERY_MARGIN_MS
        continued = self.stall_ns[1]
        after = [(f.draw_ns, f.px_ms) for f in self.frames
                 if f.px_ms is not None and f.draw_ns >= continued]
        for i in range(len(after) - RECOVERY_WINDOW + 1):
            if statistics.median(px for _, px in after[i:i + RECOVERY_WINDOW]) <= limit:
                return (after[i][0] - continued) / 1e6
        return None

    def summary(self) -> dict[str, Any]:
        """The run's numbers, as the benchmark records them."""
        px = self.between(0, 2**63)
        done = [f.done_ms for f in self.frames if f.done_ms is not None]
        out: dict[str, Any] = {
            "variant": self.variant, "codec": self.case.codec,
            "w": self.case.width, "h": self.case.height, "rate": self.case.rate,
            "duration_s": self.case.duration_s,
            "link": self.case.link.name if self.case.link else "loopback",
            "drawn": len(self.frames), "shown": len(px),
            "draws_per_s": self.draws_per_s(),
            "px_median_ms": _median(px), "px_p95_ms": _p95(px),
            "done_median_ms": _median(done),
            "last_shown": bool(self.frames) and self.frames[-1].px_ms is not None,
            "first_shown": self.first_shown,
            "late_logged": self.late_logged, "fatal": self.fatal}
        if self.stall_ns is not None:
            stop, cont = self.stall_ns
            out["stall"] = {
                "at_s": self.case.stall_at_s, "s": (cont - stop) / 1e9,
                "before_median_ms": _median(self.between(0, stop)),
                "after_5s_median_ms": _median(self.between(cont, cont + 5_000_000_000)),
                "recovery_ms": self.recovery_ms()}
        return out


def _median(v: list[float]) -> float | None:
    return statistics.median(v) if v else None


def _p95(v: list[float]) -> float | None:
    s = sorted(v)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))] if s else None


def first_shown(cli: Client) -> dict[int, int]:
    """Each frame number the client's surface showed, and when it FIRST
    did (the display-invalidate that brought it, CLOCK_MONOTONIC ns)."""
    seen: dict[int, int] = {}
    for e in cli.events("display-invalidate", 0):
        n = patterns.decode_number(e.info.get("probes", []))
        if n is not None and n not in seen:
            seen[n] = e.t_ns
    return seen


def show_first(d: Display, cli: Client, timeout_s: float) -> bool:
    """Until the client shows frame 0, for up to timeout_s, the guest draws
    it again every 100 ms (stock sends a newly connected client nothing; a
    lone H.264 frame is shown only once the next one arrives; stock's
    spice-gtk drops every lone MJPEG frame as late behind a link with a
    delay).  Whether it was shown."""
    deadline = time.monotonic() + timeout_s
    while 0 not in first_shown(cli):
        if time.monotonic() > deadline:
            return False
        d.draw().wait(10)
        time.sleep(0.1)
    return True


def stream(d: Display, case: LiveCase, first: int = 1) -> list[tuple[int, int]]:
    """The guest draws numbered frames from `first` (its buffer shows
    first - 1) at case.rate for case.duration_s, each after the previous
    draw completed, painting only the blocks that change: [(number,
    cookie)]."""
    period = 1.0 / case.rate
    drawn: list[tuple[int, int]] = []
    shows = patterns.number_blocks(first - 1, case.width, case.height)
    handle = None
    t_end = time.monotonic() + case.duration_s
    next_t = time.monotonic()
    n = first
    while next_t < t_end:
        time.sleep(max(0.0, next_t - time.monotonic()))
        if handle is not None:
            handle.wait(30)   # QEMU: the console is blocked until async_complete
        blocks = patterns.number_blocks(n, case.width, case.height)
        d.paint([b for b, was in zip(blocks, shows) if b != was])
        shows = blocks
        handle = d.draw()
        drawn.append((n, handle.cookie))
        n += 1
        next_t = max(next_t + period, time.monotonic())
    if handle is not None:
        handle.wait(30)
    return drawn


@contextlib.contextmanager
def _link(case: LiveCase, srv: Server) -> Iterator[int]:
    """The port a client of srv connects to for case.link."""
    if case.link is None:
        yield srv.port
        return
    with ShapingProxy(case.link, srv.port) as proxy:
        yield proxy.port


def run_live(variant: str, case: LiveCase) -> LiveRun:
    """A fresh server and client: the client shows frame 0, then the guest
    streams (and the client stalls once if the case says so)."""
    w, h = case.width, case.height
    with Server(codecs=f"gstreamer:{case.codec}", variant=variant) as srv:
        d = srv.display(0)
        d.keep_buffer()
        d.scanout(patterns.numbered(0, w, h))
        d.draw().wait(10)
        with _link(case, srv) as port, Client(srv.host, port, case.codec) as cli:
            cli.set_probes(patterns.number_probes(w, h))
            cli.wait_ready(30)
            first = show_first(d, cli, SHOW_FIRST_TIMEOUT_S)
            time.sleep(0.5)
            stall: list[tuple[int, int]] = []
            staller = None
            if case.stall_at_s is not None:
                at_s = case.stall_at_s
                staller = threading.Timer(
                    at_s, lambda: stall.append(cli.suspend(case.stall_s)))
                staller.start()
            try:
                drawn = stream(d, case)
            finally:
                if staller is not None:
                    staller.join()
            time.sleep(case.tail_s)
            seen = first_shown(cli)
            late = sum(1 for e in cli.events("stream-late") if "too late" in e.info["text"])
        draw_ns = {e.cookie: e.t_ns for e in srv.events(EventKind.DRAW)}
        done_ms = {e.cookie: e.a / 1e6 for e in srv.events(EventKind.DRAW_DONE)}
        fatal = [str(e) for e in srv.events(EventKind.FATAL)]
    frames = [LiveFrame(n, draw_ns[c], done_ms.get(c),
                        (seen[n] - draw_ns[c]) / 1e6 if n in seen else None)
              for n, c in drawn]
    return LiveRun(case, variant, frames, first, stall[0] if stall else None, late, fatal)
