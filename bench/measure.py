"""Measurements on the real stack: shim server (stock or patched
libspice-server) and real spice-gtk clients, all timestamps CLOCK_MONOTONIC
(the shim's event log, the client's events and time.monotonic() share it).

"Pattern visible" = the client's primary surface shows the guest's image:
the four-colour pattern at the quadrant centres within a colour tolerance
(MJPEG decodes black as (16,16,16)), random noise by the correlation of the
luma of 96x96 sample points with the guest's (> 0.25; unrelated pictures
give about 0 +- 0.01, lossy codecs at spice's bit rates 0.5-0.9).  The time it became visible is the client's stream
display-invalidate that brought it (the first one after the last snapshot
that did not show it yet), not the time of the snapshot."""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from spice_initial_draw import Client, Server, patterns
from spice_initial_draw.events import EventKind
from spice_initial_draw.frames import Frame
from spice_initial_draw.netshape import PROFILES, ShapingProxy
from spice_initial_draw.patterns import Image
from spice_initial_draw.security import Security
from spice_initial_draw.server import QEMU_10_1_REMOTE

POLL = 0.01
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
QEMU_WARN_S = 1.0

# --------------------------------------------------------------------------
# content


def make_image(content: str, w: int, h: int, alt: int = 0) -> Image:
    """content "pattern": the four-colour pattern (alt>0 permutes the
    colours); "noise": uniform random RGB noise (alt = seed)."""
    if content == "pattern":
        cols = list(patterns.QUADRANT_COLOURS)
        for _ in range(alt % 4):
            cols = cols[1:] + cols[:1]
        return patterns.quadrants(w, h, tuple(cols))  # type: ignore[arg-type]
    if content == "noise":
        rng = np.random.default_rng(1000 + alt)
        px = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
        px[:, :, 3] = 255
        return Image(px.tobytes(), w, h, w * 4, name="noise")
    raise ValueError(content)


def _sample(data: bytes, w: int, h: int, stride: int, n: int = 96) -> np.ndarray:
    """RGB at an n x n grid of points (avoiding the edges)."""
    a = np.frombuffer(data, dtype=np.uint8)[: stride * h].reshape(h, stride)
    ys = np.linspace(8, h - 9, n).astype(int)
    xs = np.linspace(8, w - 9, n).astype(int)
    px = a[ys][:, (xs * 4)[:, None] + np.array([2, 1, 0])]  # B,G,R,X -> R,G,B
    return px.astype(np.float32)


def checker(image: Image) -> Callable[[Frame], tuple[bool, float]]:
    """A function telling whether a snapshot shows `image` (and a score)."""
    if image.name == "noise":
        want = _sample(image.data, image.width, image.height, image.stride) @ LUMA
        wv = want.ravel() - want.mean()

        def check_noise(fr: Frame) -> tuple[bool, float]:
            if (fr.width, fr.height) != (image.width, image.height):
                return False, 0.0
            got = (_sample(fr.data, fr.width, fr.height, fr.stride) @ LUMA).ravel()
            gv = got - got.mean()
            den = float(np.sqrt((gv * gv).sum() * (wv * wv).sum())) or 1.0
            corr = float((gv * wv).sum()) / den
            return corr > 0.25, corr
        return check_noise

    probes = patterns.quadrant_probes(image.width, image.height)

    def check_pattern(fr: Frame) -> tuple[bool, float]:
        if (fr.width, fr.height) != (image.width, image.height):
            return False, 0.0
        worst = 0
        for x, y in probes:
            got, want = fr.pixel(x, y), image.expected(x, y)
            worst = max(worst, max(abs(a - b) for a, b in zip(got, want)))
        return worst <= 48, float(worst)
    return check_pattern


@dataclass
class Visible:
    t_ns: int            # the stream invalidate that brought the picture
    snapshot_ns: int     # the snapshot that showed it
    first_frame_ns: int  # first stream invalidate after t_from
    score: float


def wait_visible(cli: Client, image: Image, t_from_ns: int, timeout: float,
                 channel: int = 0,
                 check: Callable[[Frame], tuple[bool, float]] | None = None
                 ) -> Visible | None:
    check = check or checker(image)
    deadline = time.monotonic() + timeout
    last_fail_ns = t_from_ns
    checked_upto = t_from_ns
    last_snap = 0.0
    while True:
        invs = [e for e in cli.stream_frames(channel) if e.t_ns > t_from_ns]
        now = time.monotonic()
        if invs and (invs[-1].t_ns > checked_upto or now - last_snap > 0.1):
            checked_upto = invs[-1].t_ns
            last_snap = now
            fr = cli.frame(channel)
            if fr is not None:
                ok, score = check(fr)
                if ok:
                    cands = [e for e in invs
                             if last_fail_ns < e.t_ns <= fr.t_ns]
                    if cands:
                        t = cands[0].t_ns
                    else:
                        t = max(e.t_ns for e in invs if e.t_ns <= fr.t_ns)
                    return Visible(t, fr.t_ns, invs[0].t_ns, score)
                last_fail_ns = fr.t_ns
        if now > deadline:
            return None
        time.sleep(POLL)


def _draw_event_ns(srv: Server, cookie: int) -> int | None:
    for e in srv.events(EventKind.DRAW):
        if e.cookie == cookie:
            return e.t_ns
    return None


def _done_latency_ms(srv: Server, cookie: int) -> float | None:
    for e in srv.events(EventKind.DRAW_DONE):
        if e.cookie == cookie:
            return e.a / 1e6
    return None


def guest_draw_visible(srv: Server, d: Any, cli: Client, img: Image,
                       codec: str, timeout: float = 5.0
                       ) -> tuple[float | None, list[float]]:
    """An ordinary QEMU draw (whole scanout), waited for as QEMU does, then
    the time until the client shows it: (draw -> pixels in ms or None,
    completion latencies in ms).  H.264 as spice configures x264 shows a
    lone frame only once the next one arrives (BASELINE): there the guest
    keeps drawing, every 50 ms, until the picture shows; the time counts
    from the first draw."""
    h = d.draw()
    h.wait(15)
    t0 = _draw_event_ns(srv, h.cookie) or int(h.t_issued * 1e9)
    lat = [_done_latency_ms(srv, h.cookie) or -1.0]
    check = checker(img)
    deadline = time.monotonic() + timeout
    while True:
        step = 0.05 if codec == "h264" else timeout
        vis = wait_visible(cli, img, t0, step, check=check)
        if vis is not None:
            return (vis.t_ns - t0) / 1e6, lat
        if time.monotonic() > deadline:
            return None, lat
        h = d.draw()
        h.wait(15)
        lat.append(_done_latency_ms(srv, h.cookie) or -1.0)


# --------------------------------------------------------------------------
# time to first frame, and the reference


def ttff_run(variant: str, codec: str, w: int, h: int, content: str,
             window: float, warm_draw: bool = True,
             security: Security | None = None) -> dict[str, Any]:
    """Idle VM: scanout + draw before any client, nothing after; a client
    connects (over TLS with a password if `security` says so).  Then (same
    client, same stream) a warm guest draw of a new image."""
    img = make_image(content, w, h)
    out: dict[str, Any] = dict(variant=variant, codec=codec, w=w, h=h,
                               content=content, window_s=window,
                               transport="tls" if security and security.tls else "tcp")
    with Server(codecs=f"gstreamer:{codec}", variant=variant, security=security) as srv:
        d = srv.display(0)
        d.scanout(img)
        d.draw().wait(15)  # no client: completes at once
        time.sleep(0.1)
        with Client.for_server(srv, codec) as cli:
            t_conn = int(cli.t_connect * 1e9)
            ready = cli.wait_ready(10)
            out["ready_ms"] = (ready.t_ns - t_conn) / 1e6
            vis = wait_visible(cli, img, t_conn, window)
            if vis is None:
                out["ttff_ms"] = None
                out["frames_in_window"] = cli.frames_received()
            else:
                out["ttff_ms"] = (vis.t_ns - t_conn) / 1e6
                out["first_frame_ms"] = (vis.first_frame_ns - t_conn) / 1e6
                out["score"] = vis.score
                prim = cli.events("display-primary-create", 0)
                if prim:
                    out["primary_ms"] = (prim[0].t_ns - t_conn) / 1e6
            if warm_draw and vis is not None:
                time.sleep(0.3)
                img2 = make_image(content, w, h, alt=1)
                d.scanout(img2)
                px, lat = guest_draw_visible(srv, d, cli, img2, codec)
                out["warm_draw_px_ms"] = px
                out["warm_draw_done_ms"] = lat
        out["fatal"] = [str(e) for e in srv.events(EventKind.FATAL)]
    return out


def ref_run(variant: str, codec: str, w: int, h: int, content: str,
            settle: float = 0.5) -> dict[str, Any]:
    """BASELINE's "ordinary QEMU draw": the client connects to a display
    with no scanout yet, then the guest sets its scanout and draws: draw ->
    pixels on the client, a fresh stream (new encoder) like the initial
    frame's.  Fresh server process, as for the TTFF run."""
    img = make_image(content, w, h)
    out: dict[str, Any] = dict(variant=variant, codec=codec, w=w, h=h,
                               content=content)
    with Server(codecs=f"gstreamer:{codec}", variant=variant) as srv:
        d = srv.display(0)
        with Client.for_server(srv, codec) as cli:
            t_conn = int(cli.t_connect * 1e9)
            ready = cli.wait_ready(10)
            out["ready_ms"] = (ready.t_ns - t_conn) / 1e6
            time.sleep(settle)
            d.scanout(img)
            px, lat = guest_draw_visible(srv, d, cli, img, codec)
            out["draw_px_ms"] = px
            out["draw_done_ms"] = lat
        out["fatal"] = [str(e) for e in srv.events(EventKind.FATAL)]
    return out


# --------------------------------------------------------------------------
# connect storm


class PreparedClient(Client):
    """A spice-gtk client process started (imports done) but not connected
    yet, so that N clients can connect at once."""

    def __init__(self, host: str, port: int, codec: str) -> None:
        super().__init__(host, port, codec, connect=False)
        self._call("events", 0)  # answered once the worker is up

    def go(self) -> None:
        self.t_connect = time.monotonic()
        self._call("connect", self.host, self.port, self.codec)
        self._connected = True


def storm_run(variant: str, codec: str, w: int, h: int, n: int,
              window: float, with_draw: bool) -> dict[str, Any]:
    """Idle VM; n clients connect at once.  with_draw: the guest draws (the
    same picture) as soon as the first client's display channel is ready,
    i.e. while the others are still connecting; its completion latency is
    what QEMU waits for (it warns after 1 s)."""
    img = make_image("pattern", w, h)
    check = checker(img)
    out: dict[str, Any] = dict(variant=variant, codec=codec, w=w, h=h, n=n,
                               window_s=window, with_draw=with_draw)
    # spice-server keeps a single client (a new one replaces it) unless
    # SPICE_DEBUG_ALLOW_MC is set: N clients at once need it.
    with Server(codecs=f"gstreamer:{codec}", variant=variant,
                env={"SPICE_DEBUG_ALLOW_MC": "1"}) as srv:
        d = srv.display(0)
        d.scanout(img)
        d.draw().wait(15)
        clients = [PreparedClient(srv.host, srv.port, codec) for _ in range(n)]
        try:
            time.sleep(0.2)
            t_storm = time.monotonic()
            for c in clients:
                c.go()
            out["connect_spread_ms"] = (time.monotonic() - t_storm) * 1e3
            handle = None
            if with_draw:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    if any(c.events("display-ready") for c in clients):
                        break
                    time.sleep(0.002)
                handle = d.draw()
                out["draw_issued_ms"] = (handle.t_issued - t_storm) * 1e3
            ttff: list[float | None] = [None] * n
            fail_ns = [0] * n
            checked = [0] * n
            deadline = time.monotonic() + window
            while time.monotonic() < deadline and any(t is None for t in ttff):
                for i, c in enumerate(clients):
                    if ttff[i] is not None:
                        continue
                    invs = c.stream_frames(0)
                    if not invs or invs[-1].t_ns <= checked[i]:
                        continue
                    checked[i] = invs[-1].t_ns
                    fr = c.frame(0)
                    if fr is None:
                        continue
                    ok, _ = check(fr)
                    if ok:
                        cands = [e for e in invs if fail_ns[i] < e.t_ns <= fr.t_ns]
                        t = cands[0].t_ns if cands else invs[-1].t_ns
                        ttff[i] = (t - c.t_connect * 1e9) / 1e6
                    else:
                        fail_ns[i] = fr.t_ns
                time.sleep(POLL)
            out["ttff_ms"] = ttff
            out["ready_ms"] = [
                (r[0].t_ns / 1e6 - c.t_connect * 1e3) if (r := c.events("display-ready")) else None
                for c in clients]
            if handle is not None:
                try:
                    handle.wait(max(0.1, 15 - (time.monotonic() - handle.t_issued)))
                    out["draw_done_ms"] = _done_latency_ms(srv, handle.cookie)
                except Exception as e:  # DrawTimeout
                    out["draw_done_ms"] = None
                    out["draw_error"] = str(e)
            out["disconnected"] = sum(
                1 for c in clients if c.events("session-closed"))
        finally:
            for c in clients:
                c.close()
        out["fatal"] = [str(e) for e in srv.events(EventKind.FATAL)]
    return out


# --------------------------------------------------------------------------
# steady state


def steady_run(variant: str, codec: str, w: int, h: int, draws: int,
               period: float, callgrind_dir: str | None = None
               ) -> dict[str, Any]:
    """One client connected and showing the guest; then `draws` QEMU draws
    of the whole scanout, one every `period` s (QEMU's display refresh),
    each waited for (QEMU blocks its console until async_complete).
    callgrind_dir: run the server under callgrind with instrumentation
    switched on only around the draws: instructions per draw."""
    img = make_image("pattern", w, h)
    out: dict[str, Any] = dict(variant=variant, codec=codec, w=w, h=h,
                               draws=draws, period_s=period,
                               callgrind=callgrind_dir is not None)
    prefix = None
    cg_out = None
    if callgrind_dir:
        cg_out = os.path.join(callgrind_dir, f"callgrind.{variant}.{codec}.out")
        prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                  f"--callgrind-out-file={cg_out}", "--dump-instr=no",
                  "--vgdb=yes"]
    with Server(codecs=f"gstreamer:{codec}", variant=variant,
                command_prefix=prefix) as srv:
        d = srv.display(0)
        d.scanout(img)
        with Client.for_server(srv, codec) as cli:
            cli.wait_ready(60 if prefix else 10)
            px, _ = guest_draw_visible(srv, d, cli, img, codec,
                                       60 if prefix else 10)
            if px is None:
                raise RuntimeError("the client never showed the first draw")
            for _ in range(5):  # warm-up
                d.draw().wait(30)
            if prefix:
                subprocess.run(["callgrind_control", "-i", "on", str(srv.pid)],
                               check=True, capture_output=True, timeout=60)
            frames0 = cli.frames_received()
            cpu0 = srv.cpu_seconds()
            n0 = len(srv.events(EventKind.DRAW_DONE))
            t_start = time.monotonic()
            nxt = t_start
            for _ in range(draws):
                d.draw().wait(30)
                nxt += period
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            elapsed = time.monotonic() - t_start
            cpu1 = srv.cpu_seconds()
            if prefix:
                # dump now: the window's cost goes to <out>.1 (the exit
                # dump gets the teardown)
                subprocess.run(["callgrind_control", "-d", str(srv.pid)],
                               check=True, capture_output=True, timeout=60)
            done = srv.events(EventKind.DRAW_DONE)[n0:]
            out["done_ms"] = [e.a / 1e6 for e in done]
            out["cpu_ms_per_draw"] = (cpu1 - cpu0) * 1000.0 / draws
            out["elapsed_s"] = elapsed
            time.sleep(0.3)
            out["client_frames"] = cli.frames_received() - frames0
        out["fatal"] = [str(e) for e in srv.events(EventKind.FATAL)]
    if cg_out:
        out["instructions"] = _callgrind_total(cg_out + ".1")
        out["instructions_per_draw"] = out["instructions"] / draws
    return out


def idle_run(variant: str, case: str, window: float, codec: str = "mjpeg",
             w: int = 1920, h: int = 1080) -> dict[str, Any]:
    """Server CPU while the VM is idle, as a share of one core over
    `window` s, 1 s after the last frame.  case "draw": a client connected,
    the guest drew once (stock creates the GL stream); "connect": the guest
    drew before the client connected (patched sends the initial frame).
    The client stays connected (the spin does not depend on it)."""
    img = make_image("pattern", w, h)
    with Server(codecs=f"gstreamer:{codec}", variant=variant) as srv:
        d = srv.display(0)
        d.scanout(img)
        if case == "connect":
            d.draw().wait(30)
        with Client.for_server(srv, codec) as cli:
            cli.wait_ready(10)
            if case == "draw":
                d.draw().wait(30)
            shown = wait_visible(cli, img, time.monotonic_ns(), 10) is not None
            time.sleep(1.0)
            cpu0 = srv.cpu_seconds()
            time.sleep(window)
            cpu1 = srv.cpu_seconds()
            rss_kib = srv.rss_kib()
    share = (cpu1 - cpu0) / window
    return dict(variant=variant, case=case, codec=codec, w=w, h=h,
                window_s=window, core_share=share, shown=shown, rss_kib=rss_kib)


def second_client_run(variant: str, codec: str, window: float,
                      w: int = 1920, h: int = 1080) -> dict[str, Any]:
    """The fragile scenario of issue 12, once: a client shows the guest's
    draw, then a second client connects to the now idle VM.  Failed: the
    second client does not show the picture within `window` s.  Late: a
    client logged a frame as late (spice-gtk drops a late MJPEG frame)."""
    img = make_image("pattern", w, h)
    with Server(codecs=f"gstreamer:{codec}", variant=variant) as srv:
        d = srv.display(0)
        d.scanout(img)
        with Client.for_server(srv, codec) as first:
            first.wait_ready(10)
            guest_draw_visible(srv, d, first, img, codec)
            with Client.for_server(srv, codec) as second:
                t_conn = int(second.t_connect * 1e9)
                second.wait_ready(10)
                vis = wait_visible(second, img, t_conn, window)
                late = sum(1 for c in (first, second) for e in c.events("stream-late")
                           if "too late" in e.info.get("text", ""))
    return dict(variant=variant, codec=codec, w=w, h=h, window_s=window,
                shown=vis is not None, late_frames=late,
                ttff_ms=None if vis is None else (vis.t_ns - t_conn) / 1e6)


def _callgrind_total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError(f"no callgrind totals in {path}")


# --------------------------------------------------------------------------
# the initial frame over shaped links (issue 15)

NET_TEST = re.compile(r"net test: latency ([\d.]+) ms, bitrate (\d+) bps")


def net_run(variant: str, profile: str, codec: str = "h264", w: int = 1920,
            h: int = 1080, window: float = 15.0, steady_draws: int = 300) -> dict[str, Any]:
    """Through a shaped link (netshape.PROFILES[profile]): TTFF on an idle
    VM and what spice's connect-time net test measured; an ordinary draw ->
    pixels (fresh server, the client connected to a display with no scanout
    yet, as ref_run); and frames decoded of `steady_draws` guest updates at
    30 per second in QEMU 10.1's remote mode."""
    prof = PROFILES[profile]
    out: dict[str, Any] = dict(variant=variant, profile=profile, codec=codec, w=w, h=h,
                               rtt_ms=prof.rtt_ms, rate_bps=prof.rate_bps)
    img = make_image("pattern", w, h)
    env = {"G_MESSAGES_DEBUG": "Spice"}
    with Server(codecs=f"gstreamer:{codec}", variant=variant, env=env) as srv:
        d = srv.display(0)
        d.scanout(img)
        d.draw().wait(15)
        time.sleep(0.1)
        with ShapingProxy(prof, srv.port) as proxy, Client("127.0.0.1", proxy.port, codec) as cli:
            t_conn = int(cli.t_connect * 1e9)
            out["ready_ms"] = (cli.wait_ready(30).t_ns - t_conn) / 1e6
            vis = wait_visible(cli, img, t_conn, window if variant == "patched" else 5.0)
            out["ttff_ms"] = None if vis is None else (vis.t_ns - t_conn) / 1e6
            m = NET_TEST.search(srv.output())
            out["net_latency_ms"] = float(m.group(1)) if m else None
            out["net_bitrate_bps"] = int(m.group(2)) if m else None
    with Server(codecs=f"gstreamer:{codec}", variant=variant) as srv:
        d = srv.display(0)
        with ShapingProxy(prof, srv.port) as proxy, Client("127.0.0.1", proxy.port, codec) as cli:
            cli.wait_ready(30)
            time.sleep(0.5)
            img2 = make_image("pattern", w, h, alt=1)
            d.scanout(img2)
            out["draw_px_ms"], out["draw_done_ms"] = guest_draw_visible(
                srv, d, cli, img2, codec, timeout=window)
    with Server(codecs=f"gstreamer:{codec}", variant=variant, qemu=QEMU_10_1_REMOTE) as srv:
        d = srv.display(0)
        d.scanout(img)
        with ShapingProxy(prof, srv.port) as proxy, Client("127.0.0.1", proxy.port, codec) as cli:
            cli.wait_ready(30)
            time.sleep(0.5)
            before = len(cli.stream_frames())
            t0 = time.monotonic()
            for i in range(steady_draws):
                d.update()
                time.sleep(max(0.0, t0 + (i + 1) / 30 - time.monotonic()))
            time.sleep(1.0)
            out["steady_updates"] = steady_draws
            out["steady_draws"] = len(srv.events(EventKind.DRAW))
            out["frames_shown"] = len(cli.stream_frames()) - before
        out["fatal"] = [str(e) for e in srv.events(EventKind.FATAL)]
    return out
