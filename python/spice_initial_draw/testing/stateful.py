"""Hypothesis stateful fuzzing of QEMU's and the clients' actions, with race
points (issue 5), run by tests/test_stateful.py and tests/test_sanitizers.py.
Each example runs on a codec it draws (CODECS).  Steps: scanout (sizes and
formats, bad ones included), QEMU's scanout disable in both its forms
(spice_qxl_gl_scanout with fd -1 and 0x0; QEMU 10.1's spice_qxl_gl_scanout2
with 0 planes), draw, connect client k, disconnect client k, client k
vanishes (its sockets reset, no goodbye), park a server thread at a race
point during an action and release it, wait.
A client that connects while the scanout is valid must show it at once,
with no guest draw (testing.assertions.initial_picture: by the initial
frame or the one refresh, within INITIAL_FRAME_WINDOW).  A disable, in
either form, is silent (no "invalid GL scanout" warning).  An action that
stays blocked for BLOCKED_LIMIT s while a server thread is parked fails
the example (QEMU's thread or a client waiting for a parked encode).
After every step: the fd ledger (no fd used after close or reused), fds
held bounded, each QEMU draw completed at most once with its own cookie, no
completion QEMU did not ask for (initial frames included), no crash; at the
end every draw completed exactly once, every connected client shows the
newest scanout, and the server process exits cleanly.  Over a run, each
race point armed while a client streams must be reached in REACHED_SHARE
of those arms (assert_points_reached).  A failure shows the rules' and the
race ledger's timeline.
"""
from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .. import patterns
from ..codecs import VIDEO_CODECS
from ..drm import DRM_FORMAT_XBGR8888, DRM_FORMAT_XRGB8888
from ..errors import DrawBusy, NoScanout
from ..races import RaceKind
from . import INITIAL_FRAME_WINDOW
from .assertions import initial_picture, settled_memfds
from .bad_scanouts import warnings_naming
from .racerig import RaceRig

XRGB = DRM_FORMAT_XRGB8888
XBGR = DRM_FORMAT_XBGR8888
BAD_FOURCC = 0x20203859    # not a DRM format spice knows
SIZES = [(64, 48), (320, 240), (96, 64), (8, 1)]
# QEMU's scanout disable (Display.scanout_disable): qemu_spice_gl_scanout_disable
# before 10.1 (fd -1, 0x0, through spice_qxl_gl_scanout), and 10.1's
# spice_server_gl_scanout (spice_qxl_gl_scanout2, 0 planes, NULL arrays)
DISABLES = {"fd -1": False, "scanout2, 0 planes": True}
CODECS = VIDEO_CODECS
FORMATS = [XRGB, XRGB, XBGR, BAD_FOURCC]
POINTS = ["gst:before-map", "worker:before-encode", "gst:release",
          "gst:encoded", "qemu:scanout", "qemu:after-scanout", "worker:read"]
ACTIONS = ["scanout", "draw", "disconnect", "vanish", "nothing"]
MAX_FDS_HELD = 6
FD_SETTLE_S = 5.0
# two clients at once (they crashed both variants before multi-client 1)
MAX_CLIENTS = 2           # scanout + GStreamer's dups in flight
# an action still running this long while a server thread is parked is
# blocked behind it: the example fails
BLOCKED_LIMIT = 3.0
# the share of arms of a race point, with a client streaming, that reach it
REACHED_SHARE = 0.5
# points on a streaming client's encode (the qemu:* ones are on the scanout)
ENCODE_POINTS = [p for p in POINTS if not p.startswith("qemu:")]


def image(w: int, h: int, seed: int) -> patterns.Image:
    maker = [patterns.quadrants, patterns.bars][seed % 2]
    return maker(w, h)


def logged(rule_fn):
    """Record when a rule starts and ends (the machine's timeline)."""
    @functools.wraps(rule_fn)
    def step(self, **kw):
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items() if k != "data")
        self.timeline.append((time.monotonic_ns(), f"{rule_fn.__name__}({args}) starts"))
        try:
            return rule_fn(self, **kw)
        finally:
            self.timeline.append((time.monotonic_ns(), f"{rule_fn.__name__} ends"))
    return step


def make_machine(variant: str, rig_kwargs: dict[str, Any] | None = None,
                 tally: Counter[str] | None = None) -> type[RuleBasedStateMachine]:
    """The machine on `variant`; `tally`, when given, counts the examples
    (schedules) run and the invariant checks (one per step, and one per
    example before its first step), shrinking included."""
    tally = tally if tally is not None else Counter()

    class ServerMachine(RuleBasedStateMachine):
        clients = Bundle("clients")

        def __init__(self) -> None:
            super().__init__()
            tally["examples"] += 1
            self.rig: RaceRig | None = None   # made by start(), with its codec
            self.valid = None          # newest scanout that spice can encode
            self.next_k = 0
            # (monotonic ns, what): rule starts and ends, shown beside the
            # race ledger's parks when an invariant fails
            self.timeline: list[tuple[int, str]] = []
            self.t0_ns = time.monotonic_ns()

        @initialize(codec=st.sampled_from(CODECS))
        def start(self, codec):
            kw = dict(rig_kwargs or {})
            env = {"SPICE_DEBUG_ALLOW_MC": "1", **kw.pop("env", {})}
            kw.setdefault("codecs", f"gstreamer:{codec}")
            self.rig = RaceRig(variant, park_timeout=5.0, env=env, **kw)
            tally[f"codec {codec}"] += 1

        # -- rules -------------------------------------------------------------
        @rule(size=st.sampled_from(SIZES), fourcc=st.sampled_from(FORMATS),
              seed=st.integers(0, 1))
        @logged
        def scanout(self, size, fourcc, seed):
            self._scanout(size, fourcc, seed)

        def _scanout(self, size, fourcc, seed):
            w, h = size
            img = image(w, h, seed)
            data = img.data
            self.rig.display.scanout(data, w, h, img.stride, fourcc)
            self.rig.current = img
            # pixels are checked on sizes MJPEG keeps recognisable only
            self.valid = img if fourcc == XRGB and w >= 64 and h >= 48 else None

        @rule(form=st.sampled_from(sorted(DISABLES)))
        @logged
        def disable(self, form):
            """QEMU disables the scanout: silently (no "invalid" warning)."""
            mark = self.rig.server.output_mark()
            self.rig.display.scanout_disable(qemu_10_1=DISABLES[form])
            self.rig.current = self.valid = None
            warned = warnings_naming(self.rig.server.output(mark), r"invalid GL scanout")
            assert not warned, f"QEMU's disable ({form}) warned: {warned}"

        @rule()
        @logged
        def draw(self):
            self._draw()

        def _draw(self):
            try:
                self.rig.draw()
            except (DrawBusy, NoScanout):
                pass

        @precondition(lambda self: len(self.rig.clients) < MAX_CLIENTS)
        @rule(target=clients)
        @logged
        def connect(self):
            k = self.next_k
            cli = self.rig.connect(k)
            self.next_k += 1
            if self.valid is not None:
                # the initial frame: no guest draw, the picture at once
                try:
                    index, _ = initial_picture(cli, self.valid, INITIAL_FRAME_WINDOW)
                except AssertionError as e:
                    raise AssertionError(f"client {k}, no draw: {e}"
                                         + self._shown_timeline()) from None
                tally[f"initial picture by frame {index}"] += 1
            return k

        # a client a parked action took away stays in the bundle: a no-op then
        @rule(k=consumes(clients))
        @logged
        def disconnect(self, k):
            self._disconnect(k)

        def _disconnect(self, k):
            self.rig.disconnect(k)

        @rule(k=consumes(clients))
        @logged
        def vanish(self, k):
            self._vanish(k)

        def _vanish(self, k):
            # the client's host drops off: its sockets are reset, no goodbye
            cli = self.rig.clients.pop(k, None)
            if cli is not None:
                cli.vanish()

        @rule(point=st.sampled_from(POINTS), action=st.sampled_from(ACTIONS),
              size=st.sampled_from(SIZES[:3]))
        @logged
        def park_and_release(self, point, action, size):
            with self.rig.races.park(point) as p:
                if point.startswith("qemu:"):
                    # QEMU's thread parks inside the scanout call: issue it
                    # from another thread, release it from this one
                    failure: list[BaseException] = []

                    def scanout():
                        try:
                            self._scanout(size, XRGB, 1)
                        except BaseException as e:   # raised again below
                            failure.append(e)
                    t = threading.Thread(target=scanout)
                    t.start()
                    parked = p.reached(2.0)
                    self._count(point, parked)
                    event(f"{point}: {'parked' if parked else 'not reached'}")
                    p.release()
                    t.join(10)
                    assert not t.is_alive(), \
                        f"QEMU's scanout still blocked 10 s after {point} was released"
                    if failure:
                        raise failure[0]
                else:
                    # the draw itself can wait for a thread this park holds
                    # (an earlier client's disconnect, handled late, blocks
                    # QEMU's thread on the worker): bounded like the action
                    streaming = bool(self.rig.clients) and self.valid is not None
                    parked = self._bounded(p, self._draw) and self._reached(p, 0.5)
                    if streaming:
                        self._count(point, parked)
                    event(f"{point} during {action}: {'parked' if parked else 'not reached'}")
                    if parked:
                        first = sorted(self.rig.clients)[:1]
                        if action == "scanout":
                            self._while_parked(p, self._scanout, size, XRGB, 0)
                        elif action == "draw":
                            self._while_parked(p, self._draw)
                        elif action == "disconnect" and first:
                            self._while_parked(p, self._disconnect, first[0])
                        elif action == "vanish" and first:
                            self._while_parked(p, self._vanish, first[0])
                        p.release()

        def _count(self, point: str, parked: bool) -> None:
            """Tally an arm of `point` that had a thread to park (the
            scanout's, or a streaming client's encode) and whether it did."""
            tally[f"armed {point}"] += 1
            tally[f"reached {point}"] += int(parked)

        def _reached(self, p, timeout: float) -> bool:
            """p.reached(timeout), False as soon as no client is left to
            encode for: the points past the draw (worker:*, gst:*) are on
            a streaming client's encode, and a client the rig no longer has
            (vanished) counts until the server saw it go."""
            deadline = time.monotonic() + timeout
            while not p.reached(0.02):
                if time.monotonic() > deadline:
                    return False
                if not self.rig.clients and not self.rig.server.display_connections():
                    return p.reached(0)
            return True

        def _while_parked(self, p, action, *args):
            """An action while a server thread is parked, then the release."""
            self._bounded(p, action, *args)
            p.release()

        def _bounded(self, p, action, *args) -> bool:
            """Run an action while `p` is armed or holds a thread.  If it is
            still running after BLOCKED_LIMIT s it is blocked behind the
            parked thread (spice-server's main loop, QEMU's thread, waiting
            for the worker, which waits for the encode a parked GStreamer
            thread holds; or a client waiting for the server): the thread
            is released, so that the example can end, and the example
            fails.  Returns True (it ended, nothing released)."""
            failure: list[BaseException] = []

            def run():
                try:
                    action(*args)
                except BaseException as e:   # raised again on this thread
                    failure.append(e)
            t = threading.Thread(target=run)
            t.start()
            t.join(BLOCKED_LIMIT)
            if t.is_alive():
                self.timeline.append((time.monotonic_ns(),
                                      f"{action.__name__} still running after "
                                      f"{BLOCKED_LIMIT} s: release {p.name}"))
                p.release()
                t.join(30.0)
                raise AssertionError(
                    f"{action.__name__} stayed blocked {BLOCKED_LIMIT} s while a thread "
                    f"was parked at {p.name}" + ("" if not t.is_alive() else
                                                 ", and 30 s after its release")
                    + self._shown_timeline())
            if failure:
                raise failure[0]
            return True

        @rule(t=st.sampled_from([0.05, 0.3]))
        @logged
        def wait(self, t):
            time.sleep(t)

        # -- invariants ---------------------------------------------------------
        @invariant()
        def no_defect(self):
            tally["checks"] += 1
            if self.rig is None:
                return
            defects = self.rig.defects()
            assert not defects, "\n".join(defects) + self._shown_timeline()
            done = self.rig.completions()
            cookies = {h.cookie for h in self.rig.draws}
            assert all(n == 1 for n in done.values()), f"completions {done}"
            assert set(done) <= cookies, f"stray completions {done}"

        @invariant()
        def fds_bounded(self):
            if self.rig is None:
                return
            # scanouts queued for a busy (parked, or sanitizer-slow) worker
            # hold their fds until it takes them: a leak is what stays
            held = settled_memfds(self.rig.server, MAX_FDS_HELD, FD_SETTLE_S)
            assert len(held) <= MAX_FDS_HELD, \
                f"fd leak: {len(held)} scanout fds held after {FD_SETTLE_S} s: {held}"

        def _shown_timeline(self, last: int = 24) -> str:
            """The rules' starts and ends merged with the race ledger's
            parks, in time order (ms since the example began)."""
            parks = [(e.t_ns, f"ledger: {e.kind.name} {e.what} [{e.thread}]")
                     for e in self.rig.races.events()
                     if e.kind in (RaceKind.PARK, RaceKind.UNPARK, RaceKind.PARK_TIMEOUT)]
            rows = sorted(self.timeline + parks)[-last:]
            return "\n  timeline (ms since the example began):\n" + "\n".join(
                f"  {(t - self.t0_ns) / 1e6:10.1f}  {what}" for t, what in rows)

        def teardown(self):
            if self.rig is None:
                return
            try:
                if self.rig.server.alive():
                    self.rig.races.release_all()
                    defects = self.rig.check_draws(5.0)
                    if self.valid is not None and self.rig.clients:
                        self.rig.settle()
                        time.sleep(0.3)
                        self.rig.current = self.valid
                        self.rig.display.scanout(self.valid)
                        self._draw()
                        defects += self.rig.check_draws(5.0)
                        for k, cli in self.rig.clients.items():
                            cli.wait_ready()
                            defects += self.rig.check_shows(
                                cli, self.valid, who=f"client {k}")
                    defects += self.rig.defects()
                    assert not defects, "\n".join(defects) + self._shown_timeline()
                else:
                    assert not self.rig.defects()
            finally:
                ended = self.rig.close()
            assert ended is None, ended

    return ServerMachine


def assert_points_reached(tally: Counter[str], min_arms: int = 3) -> None:
    """Each race point that the run armed at least `min_arms` times with a
    thread to park was reached in REACHED_SHARE of those arms: a renamed or
    unreachable point must not make the machine silently race-free."""
    short = {}
    for point in POINTS:
        armed, reached = tally[f"armed {point}"], tally[f"reached {point}"]
        if armed >= min_arms and reached < REACHED_SHARE * armed:
            short[point] = f"{reached} of {armed}"
    assert not short, (f"race points reached in less than {REACHED_SHARE:.0%} of their "
                       f"arms with a thread to park: {short}")


def run_machine(variant: str, max_examples: int,
                rig_kwargs: dict[str, Any] | None = None) -> Counter[str]:
    """Run the machine on `variant` with the current Hypothesis profile and
    `max_examples` (a seed given with --hypothesis-seed replays a run);
    returns the tally: examples, checks, seconds."""
    tally: Counter[str] = Counter()
    t0 = time.monotonic()
    try:
        run_state_machine_as_test(make_machine(variant, rig_kwargs, tally),
                                  settings=settings(max_examples=max_examples))
    finally:
        tally["seconds"] = round(time.monotonic() - t0)
    return tally
