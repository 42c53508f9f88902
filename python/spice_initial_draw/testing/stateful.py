"""Hypothesis stateful fuzzing of QEMU's and the clients' actions, with race
points (issue 5), run by tests/test_stateful.py and tests/test_sanitizers.py.
Steps: scanout (sizes and formats, bad ones included), draw, connect client
k, disconnect client k, client k vanishes (its sockets reset, no goodbye),
park a server thread at a race point during an action and release it, wait.
After every step: the fd ledger (no fd used after close or reused), fds held
bounded, each QEMU draw completed at most once with its own cookie, no
completion QEMU did not ask for (initial frames included), no crash; at the
end every draw completed exactly once and every connected client shows the
newest scanout.  A failure shows the rules' and the race ledger's timeline.
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
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .. import patterns
from ..drm import DRM_FORMAT_XBGR8888, DRM_FORMAT_XRGB8888
from ..errors import DrawBusy, NoScanout, ShimError
from ..races import RaceKind
from .assertions import settled_memfds
from .racerig import RaceRig

XRGB = DRM_FORMAT_XRGB8888
XBGR = DRM_FORMAT_XBGR8888
BAD_FOURCC = 0x20203859    # not a DRM format spice knows
SIZES = [(64, 48), (320, 240), (96, 64), (0, 0), (8, 1)]
FORMATS = [XRGB, XRGB, XBGR, BAD_FOURCC]
POINTS = ["gst:before-map", "worker:before-encode", "gst:release",
          "gst:encoded", "qemu:scanout", "qemu:after-scanout", "worker:read"]
ACTIONS = ["scanout", "draw", "disconnect", "vanish", "nothing"]
MAX_FDS_HELD = 6
FD_SETTLE_S = 5.0
# two clients at once (they crashed both variants before multi-client 1)
MAX_CLIENTS = 2           # scanout + GStreamer's dups in flight


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
            kw = dict(rig_kwargs or {})
            env = {"SPICE_DEBUG_ALLOW_MC": "1", **kw.pop("env", {})}
            self.rig = RaceRig(variant, park_timeout=5.0, env=env, **kw)
            self.valid = None          # newest scanout that spice can encode
            self.next_k = 0
            # (monotonic ns, what): rule starts and ends, shown beside the
            # race ledger's parks when an invariant fails
            self.timeline: list[tuple[int, str]] = []
            self.t0_ns = time.monotonic_ns()

        # -- rules -------------------------------------------------------------
        @rule(size=st.sampled_from(SIZES), fourcc=st.sampled_from(FORMATS),
              seed=st.integers(0, 1))
        @logged
        def scanout(self, size, fourcc, seed):
            self._scanout(size, fourcc, seed)

        def _scanout(self, size, fourcc, seed):
            w, h = size
            if w == 0:
                try:
                    self.rig.display.scanout(b"", 0, 0)
                except ShimError:
                    return
                raise AssertionError("the shim took a 0x0 scanout")
            img = image(w, h, seed)
            data = img.data
            self.rig.display.scanout(data, w, h, img.stride, fourcc)
            self.rig.current = img
            # pixels are checked on sizes MJPEG keeps recognisable only
            self.valid = img if fourcc == XRGB and w >= 64 and h >= 48 else None

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
            self.rig.connect(k)
            self.next_k += 1
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
                    t = threading.Thread(target=self._scanout,
                                         args=(size, XRGB, 1))
                    t.start()
                    event(f"{point}: {'parked' if p.reached(2.0) else 'not reached'}")
                    p.release()
                    t.join(10)
                else:
                    # the draw itself can wait for a thread this park holds
                    # (an earlier client's disconnect, handled late, blocks
                    # QEMU's thread on the worker): bounded like the action
                    parked = self._bounded(p, self._draw) and self._reached(p, 0.5)
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
            """Run an action while `p` is armed or holds a thread. It can
            wait for that thread, as it would for a slow encode: spice-server's
            main loop (QEMU's thread) handles a client's disconnect by waiting
            for the worker (RedChannel::disconnect_client), the worker waits
            for the encode a parked GStreamer thread holds, and a closing
            client can wait for the server. So the action gets 1 s, then the
            thread is released; the action must then end within 30 s.
            Returns whether it ended within the 1 s (nothing released)."""
            failure: list[BaseException] = []

            def run():
                try:
                    action(*args)
                except BaseException as e:   # raised again on this thread
                    failure.append(e)
            t = threading.Thread(target=run)
            t.start()
            t.join(1.0)
            ended = not t.is_alive()
            if not ended:
                self.timeline.append((time.monotonic_ns(),
                                      f"{action.__name__} still running after 1 s: "
                                      f"release {p.name}"))
                p.release()
                t.join(30.0)
                assert not t.is_alive(), \
                    f"{action.__name__} still blocked 30 s after the release"
            if failure:
                raise failure[0]
            return ended

        @rule(t=st.sampled_from([0.05, 0.3]))
        @logged
        def wait(self, t):
            time.sleep(t)

        # -- invariants ---------------------------------------------------------
        @invariant()
        def no_defect(self):
            tally["checks"] += 1
            defects = self.rig.defects()
            assert not defects, "\n".join(defects) + self._shown_timeline()
            done = self.rig.completions()
            cookies = {h.cookie for h in self.rig.draws}
            assert all(n == 1 for n in done.values()), f"completions {done}"
            assert set(done) <= cookies, f"stray completions {done}"

        @invariant()
        def fds_bounded(self):
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
                self.rig.close()

    return ServerMachine


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
