"""Deterministic reproductions of the initial-frame races (issue 5), run by
tests/test_races.py, tests/test_sanitizers.py and the bench.

Each reproduction parks one server thread at a named race point
(spice_initial_draw.races, libsid-races.so LD_PRELOADed into the server
process only), does the conflicting action from QEMU's side or the client's,
releases the thread, then checks the fd ledger, the draw completions, the
client's picture and the server process.  On stock each must detect a
defect; on patched each must find none.  (i)-(vi) are issue 5's list; (vii)
and (viii) are the races multi-client 5 fixes.
"""
from __future__ import annotations

import time

from .. import patterns
from ..client import Client
from . import FRAME_TIMEOUT
from .racerig import RaceRig

W, H = 320, 240
A = patterns.quadrants(W, H)
B = patterns.solid(patterns.BLUE, W, H)
C = patterns.bars(W, H)


def sends_initial_frame(variant: str) -> bool:
    return not variant.startswith("stock")


def _ready(rig: RaceRig, cli: Client, variant: str) -> None:
    """The client's display channel, and on patched its initial frame: a
    wait, not a window (FRAME_TIMEOUT: the first ASan process after a
    build took more than 4 s, with its code and GStreamer's still cold)."""
    cli.wait_ready()
    if sends_initial_frame(variant):
        try:
            cli.wait_frames(1, FRAME_TIMEOUT)
        except TimeoutError:
            rig.notes.append(f"no initial frame within {FRAME_TIMEOUT} s of connecting")
    rig.settle()


def repro_scanout_during_initial_encode(rig: RaceRig, variant: str) -> None:
    """(i) QEMU replaces the scanout while the initial frame is encoded."""
    rig.scanout(A)
    with rig.races.park("gst:before-map") as p:
        cli = rig.connect(0)
        parked = p.reached(3.0)
        if parked:
            rig.scanout(B)     # QEMU's thread: closes/replaces the old buffer
            p.release()
    cli.wait_ready()
    rig.settle()
    if not parked:
        rig.notes.append("missing frame: no initial frame; the worker never "
                         "encoded the current scanout for the new client "
                         "(an idle VM shows nothing)")
    else:
        rig.notes += rig.check_shows(cli, A, who="new client (initial frame)")
    if rig.completions():
        rig.notes.append(f"stray completion for the initial frame: "
                         f"{rig.completions()}")
    rig.draw()
    rig.notes += rig.check_draws()
    rig.notes += rig.check_shows(cli, B, who="client after the next draw")


def repro_scanout_during_draw_encode(rig: RaceRig, variant: str,
                                     reuse: bool = False) -> None:
    """(ii) QEMU replaces the scanout while a draw's frame is encoded;
    (vi) with reuse: the closed fd number is taken by a new memfd before
    GStreamer maps it."""
    rig.scanout(A)
    cli = rig.connect(0)
    _ready(rig, cli, variant)
    if reuse:
        rig.races.reuse_closed_fds(0x80)
    with rig.races.park("gst:before-map") as p:
        rig.draw_into(p)       # a draw of A, GStreamer about to map it
        rig.scanout(B)         # QEMU's next frame
        if not reuse:
            rig.scanout(C)
        p.release()
    rig.notes += rig.check_draws()
    rig.notes += rig.check_shows(cli, A, timeout=2.0,
                                 who="client (frame of the draw)")
    rig.races.reuse_closed_fds(None)
    rig.settle()
    time.sleep(0.3)
    rig.draw()
    rig.notes += rig.check_draws()
    rig.notes += rig.check_shows(cli, rig.current, who="client after the next draw")


def repro_disconnect_during_encode(rig: RaceRig, variant: str) -> None:
    """(iii) the client disconnects while its frame is encoded."""
    rig.scanout(A)
    cli = rig.connect(0)
    _ready(rig, cli, variant)
    with rig.races.park("gst:before-map") as p:
        rig.draw_into(p)
        rig.disconnect(0)
        time.sleep(0.2)
        p.release()
    rig.notes += rig.check_draws()
    rig.settle()
    rig.scanout(B)
    cli2 = rig.connect(1)
    _ready(rig, cli2, variant)
    time.sleep(0.3)
    rig.draw()
    rig.notes += rig.check_draws()
    rig.notes += rig.check_shows(cli2, B, who="next client after a draw")


def repro_two_clients_one_iteration(rig: RaceRig, variant: str) -> None:
    """(iv) two clients' connections handled in one worker iteration."""
    rig.scanout(A)
    with rig.races.park("worker:read") as p:
        c0 = rig.connect(0)
        p.wait(1, 5.0)          # the worker is parked before its next read
        c1 = rig.connect(1)
        time.sleep(0.4)         # both connections queue for the worker
        p.release()
    c0.wait_ready()
    c1.wait_ready()
    for k, cli in ((0, c0), (1, c1)):
        found = rig.check_shows(cli, A, timeout=2.5 if k == 0 else 1.0,
                                who=f"client {k} (initial frame)")
        if found and not sends_initial_frame(variant):
            found = [f"missing frame: client {k} got no initial frame "
                     f"({found[0]})"]
        rig.notes += found
    rig.settle()
    if rig.completions():
        rig.notes.append(f"stray completion for an initial frame: "
                         f"{rig.completions()}")
    rig.scanout(B)
    time.sleep(0.3)
    rig.draw()
    rig.notes += rig.check_draws()
    for k, cli in ((0, c0), (1, c1)):
        rig.notes += rig.check_shows(cli, B, who=f"client {k} after a draw")


def repro_draw_during_initial_frame(rig: RaceRig, variant: str) -> None:
    """(v) a QEMU draw arrives while an initial frame is in flight."""
    rig.scanout(A)
    with rig.races.park("gst:before-map") as p:
        cli = rig.connect(0)
        parked = p.reached(3.0)
        rig.scanout(B)
        rig.draw()             # QEMU draws B meanwhile
        time.sleep(0.1)
        p.release()
    if not parked:
        rig.notes.append("missing frame: no initial frame was in flight "
                         "(stock never encodes the scanout on connect)")
    cli.wait_ready()
    rig.notes += rig.check_draws()
    rig.notes += rig.check_shows(cli, B, who="client (after the draw)")
    rig.settle()
    done = rig.completions()
    extra = {c: n for c, n in done.items()
             if c not in {h.cookie for h in rig.draws}}
    if extra:
        rig.notes.append(f"stray completion (initial frame?): {extra}")


def repro_reused_fd(rig: RaceRig, variant: str) -> None:
    """(vi) the old fd is closed and its number reused by a new memfd before
    GStreamer maps it."""
    repro_scanout_during_draw_encode(rig, variant, reuse=True)


def client_gone_during_resized_draw(rig: RaceRig, variant: str,
                                    gone: int) -> None:
    """One of two clients vanishes (its sockets reset) while QEMU's draw in
    a new size is queued for the worker.  The draw makes a new primary
    surface, sent to every client from inside RedChannel::pipes_new_add();
    the write to the vanished client fails and disconnects it there."""
    small = patterns.quadrants(160, 120)
    rig.scanout(small)
    clients = [rig.connect(0)]
    _ready(rig, clients[0], variant)
    clients.append(rig.connect(1))
    _ready(rig, clients[1], variant)
    rig.draw()                 # the GL stream, at 160x120, on both clients
    rig.notes += rig.check_draws()
    rig.settle()
    rig.scanout(A)             # QEMU's display changes size (320x240)
    time.sleep(0.5)            # past core 10's refresh: the worker is idle
    with rig.races.park("worker:read") as p:
        rig.draw()             # queued: the worker is parked before its next read
        p.wait(1, 5.0)
        reset = rig.clients.pop(gone).vanish()   # the parked worker has not seen it
        assert reset, "harness: the client had no TCP socket left to reset"
        p.release()
    rig.notes += rig.check_draws(3.0)
    kept = 1 - gone
    rig.notes += rig.check_shows(clients[kept], A, who=f"client {kept} after the draw")


def repro_newer_client_gone_during_resized_draw(rig: RaceRig, variant: str) -> None:
    """(vii) the newer client vanishes: it is first in the channel's list,
    its own surface push fails, and the draw is counted for it (fixed by
    multi-client 5)."""
    client_gone_during_resized_draw(rig, variant, gone=1)


def repro_older_client_gone_during_resized_draw(rig: RaceRig, variant: str) -> None:
    """(viii) the older client vanishes: the push for the newer client,
    first in the list, disconnects it and frees the list link the loop
    goes on with (fixed by multi-client 5)."""
    client_gone_during_resized_draw(rig, variant, gone=0)


REPROS = {
    "i-scanout-during-initial-encode": repro_scanout_during_initial_encode,
    "ii-scanout-during-draw-encode": repro_scanout_during_draw_encode,
    "iii-disconnect-during-encode": repro_disconnect_during_encode,
    "iv-two-clients-one-iteration": repro_two_clients_one_iteration,
    "v-draw-during-initial-frame": repro_draw_during_initial_frame,
    "vi-reused-fd": repro_reused_fd,
    "vii-newer-client-gone-during-resized-draw": repro_newer_client_gone_during_resized_draw,
    "viii-older-client-gone-during-resized-draw": repro_older_client_gone_during_resized_draw,
}


# spice-server keeps one client unless SPICE_DEBUG_ALLOW_MC is set: a second
# connection would kick the first one out.
MULTI_CLIENT_ENV = {"SPICE_DEBUG_ALLOW_MC": "1"}


def run_repro(name: str, variant: str, **rig_kwargs) -> tuple[list[str], float]:
    t0 = time.monotonic()
    env = dict(MULTI_CLIENT_ENV)
    env.update(rig_kwargs.pop("env", None) or {})
    with RaceRig(variant, env=env, **rig_kwargs) as rig:
        try:
            REPROS[name](rig, variant)
        except Exception as e:       # a dead server shows up in defects()
            if rig.server.alive():
                raise
            rig.notes.append(f"{type(e).__name__}: {e}")
        defects = rig.defects()
    return defects, time.monotonic() - t0
