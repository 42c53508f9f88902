"""Hypothesis stateful fuzzing of QEMU's and the clients' actions, with race
points (issue 5).  Steps: scanout (sizes and formats, bad ones included),
draw, connect client k, disconnect client k, client k vanishes (its
sockets reset, no goodbye), park a server thread at a race point during an
action and release it, wait.  After every step: the fd
ledger (no fd used after close or reused), fds held bounded, each QEMU draw
completed at most once with its own cookie, no completion QEMU did not ask
for (initial frames included), no crash; at the end every draw completed
exactly once and every connected client shows the newest scanout.

Profiles: "ci" (default, 200 examples) and "extended" (5,000, SID_EXTENDED=1
as set by ./run test --extended); SID_STATEFUL_EXAMPLES=N overrides either.
Each run prints its seed (SID_STATEFUL_SEED=N replays it); a failure prints
the seed and the shrunk schedule as Python (state.scanout(...), ...).
"""
from __future__ import annotations

import functools
import os
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant,
                                 precondition, rule)

from spice_initial_draw import DrawBusy, NoScanout, ShimError, patterns
from helpers import report, settled_memfds
from spice_initial_draw.races import RaceRig

EXTENDED = os.environ.get("SID_EXTENDED") == "1"

settings.register_profile(
    "sid-stateful-ci", max_examples=200, stateful_step_count=6,
    deadline=None, print_blob=True,
    suppress_health_check=list(HealthCheck))
settings.register_profile(
    "sid-stateful-extended", max_examples=5000, stateful_step_count=12,
    deadline=None, print_blob=True,
    suppress_health_check=list(HealthCheck))
PROFILE = "sid-stateful-extended" if EXTENDED else "sid-stateful-ci"

XRGB = patterns.DRM_FORMAT_XRGB8888
XBGR = 0x34324258          # DRM_FORMAT_XBGR8888
BAD_FOURCC = 0x20203859    # not a DRM format spice knows
SIZES = [(64, 48), (320, 240), (96, 64), (0, 0), (8, 1)]
FORMATS = [XRGB, XRGB, XBGR, BAD_FOURCC]
POINTS = ["gst:before-map", "worker:before-encode", "gst:release",
          "gst:encoded", "qemu:scanout", "qemu:after-scanout", "worker:read"]
ACTIONS = ["scanout", "draw", "disconnect", "vanish", "nothing"]
MAX_FDS_HELD = 6
FD_SETTLE_S = 5.0
# two clients at once (they crashed both variants before patch 0012)
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


def make_machine(variant: str, rig_kwargs: dict | None = None,
                 tally: dict[str, int] | None = None):
    """tally, when given, counts the examples (schedules) run and their
    steps (rules), shrinking included."""
    tally = tally if tally is not None else {}

    class ServerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            tally["examples"] = tally.get("examples", 0) + 1
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
                with pytest.raises(ShimError):
                    self.rig.display.scanout(b"", 0, 0)
                return
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
        @rule()
        @logged
        def connect(self):
            self.rig.connect(self.next_k)
            self.next_k += 1

        @precondition(lambda self: self.rig.clients)
        @rule(data=st.data())
        @logged
        def disconnect(self, data):
            self._disconnect(data.draw(st.sampled_from(sorted(self.rig.clients))))

        def _disconnect(self, k):
            self.rig.disconnect(k)

        @precondition(lambda self: self.rig.clients)
        @rule(data=st.data())
        @logged
        def vanish(self, data):
            self._vanish(data.draw(st.sampled_from(sorted(self.rig.clients))))

        def _vanish(self, k):
            # the client's host drops off: its sockets are reset, no goodbye
            self.rig.clients.pop(k).vanish()

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
                    p.reached(2.0)
                    p.release()
                    t.join(10)
                else:
                    # the draw itself can wait for a thread this park holds
                    # (an earlier client's disconnect, handled late, blocks
                    # QEMU's thread on the worker): bounded like the action
                    if self._bounded(p, self._draw) and p.reached(0.5):
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
            tally["checks"] = tally.get("checks", 0) + 1
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
            parks = [(e.t_ns, f"ledger: {e.kind} {e.what} [{e.thread}]")
                     for e in self.rig.races.events()
                     if e.kind in ("PARK", "UNPARK", "PARK_TIMEOUT")]
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


def run_machine(variant: str, profile: str = PROFILE, max_examples=None,
                rig_kwargs: dict | None = None) -> dict[str, int]:
    """Runs the machine; returns how many examples ran and how many steps
    they took (the invariants run once per example before its first step)."""
    tally: dict[str, int] = {}
    run_seed = int(os.environ.get("SID_STATEFUL_SEED") or random.getrandbits(32))
    machine = hypothesis_seed(run_seed)(make_machine(variant, rig_kwargs, tally))
    print(f"\nstateful {variant}: seed {run_seed} "
          f"(SID_STATEFUL_SEED={run_seed} replays this run's schedules)")
    s = settings.get_profile(profile)
    if max_examples is not None:
        s = settings(s, max_examples=max_examples)
    machine.TestCase.settings = s
    t0 = time.monotonic()
    try:
        machine.TestCase().runTest()
    finally:
        tally["steps"] = tally.get("checks", 0) - tally.get("examples", 0)
        tally["seconds"] = round(time.monotonic() - t0)
        tally["seed"] = run_seed
        print(f"\nstateful {variant} ({profile}, max_examples={s.max_examples}, "
              f"seed {run_seed}): {tally.get('examples', 0)} examples, "
              f"{tally['steps']} steps in {tally['seconds']} s")
    return tally


def test_stateful_patched(request):
    n = os.environ.get("SID_STATEFUL_EXAMPLES")
    tally = run_machine("patched", max_examples=int(n) if n else None)
    report(request, f"\n  stateful patched ({PROFILE}, seed {tally['seed']}): "
           f"{tally['examples']} examples, {tally['steps']} steps in "
           f"{tally['seconds']} s")
    # Hypothesis stops early when it has tried every distinct schedule; the
    # machine's space is far larger than any profile here, so this holds
    assert tally["examples"] >= (int(n) if n else settings.get_profile(PROFILE).max_examples)
