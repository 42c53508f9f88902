"""A server + clients + ledger rig shared by the race, stateful and sanitizer
tests and the bench: it drives the harness and turns what it saw into
defects, each a sentence naming it."""
from __future__ import annotations

import time

from .. import patterns
from ..client import Client
from ..errors import ServerCrashed
from ..events import EventKind
from ..patterns import Image
from ..races import Park, ParkTimeout, RaceKind, Races
from ..server import DrawHandle, Server

VIOLATION_LABELS = {
    RaceKind.USE_AFTER_CLOSE: "use of a closed fd",
    RaceKind.REUSED_FD: "use of a reused fd (another buffer's pixels)",
    RaceKind.CLOSED_IN_USE: "fd closed while GStreamer still uses it",
}


class RaceRig:
    """One server (with the race library preloaded) and its clients.

    defects() returns what went wrong, as sentences naming the defect."""

    def __init__(self, variant: str, codecs: str = "gstreamer:mjpeg",
                 env: dict[str, str] | None = None,
                 preload_first: list[str] | None = None,
                 park_timeout: float = 10.0,
                 output_sink: list[str] | None = None) -> None:
        """output_sink: on close(), the server process's whole output is
        appended to it (sanitizer reports that go to stderr)."""
        self.variant = variant
        self.output_sink = output_sink
        self.races = Races(park_timeout=park_timeout,
                           preload_first=preload_first)
        full_env = dict(env or {})
        renv = self.races.env()
        if "LD_PRELOAD" in full_env:
            renv["LD_PRELOAD"] = full_env.pop("LD_PRELOAD") + ":" + renv["LD_PRELOAD"]
        full_env.update(renv)
        try:
            self.server = Server(codecs=codecs, variant=variant, env=full_env)
        except BaseException:
            self.races.close()
            raise
        self.races.attach(self.server)
        self.display = self.server.display(0)
        self.clients: dict[int, Client] = {}
        self.draws: list[DrawHandle] = []
        self.current: Image | None = None   # the newest scanout
        self.notes: list[str] = []    # defects found along the way

    # -- actions ---------------------------------------------------------------
    def scanout(self, image: Image) -> None:
        self.display.scanout(image)
        self.current = image

    def connect(self, k: int = 0) -> Client:
        cli = Client.for_server(self.server)
        self.clients[k] = cli
        return cli

    def disconnect(self, k: int) -> None:
        cli = self.clients.pop(k, None)
        if cli is not None:
            cli.close()

    def draw(self) -> DrawHandle:
        h = self.display.draw()
        self.draws.append(h)
        return h

    def draw_into(self, park: Park, attempts: int = 15) -> DrawHandle:
        """Draw until a thread parks at `park` (spice's rate control may drop
        a frame that follows another closely: it is completed at once and
        never encoded; then draw again)."""
        for _ in range(attempts):
            h = self.draw()
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                if park.reached(0.02):
                    return h
                if h.done():
                    break
            else:
                raise ParkTimeout(f"draw neither completed nor reached "
                                  f"{park.name} within 3 s")
            time.sleep(0.15)
        raise ParkTimeout(f"{attempts} draws, none reached {park.name}")

    def settle(self, timeout: float = 3.0) -> None:
        """Wait until no draw is outstanding and every GstMemory made so far
        was released (quiet ledger)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server.alive():
                return
            ev = self.races.events()
            allocs = sum(1 for e in ev if e.kind == RaceKind.ALLOC)
            rels = sum(1 for e in ev if e.kind == RaceKind.RELEASE)
            if allocs == rels and not self.display.draw_pending():
                return
            time.sleep(0.02)

    # -- checks ------------------------------------------------------------------
    def completions(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for e in self.server.events(EventKind.DRAW_DONE):
            out[e.cookie] = out.get(e.cookie, 0) + 1
        return out

    def check_draws(self, timeout: float = 3.0) -> list[str]:
        """Each QEMU draw completed exactly once, with its cookie."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        for h in self.draws:
            if not self.server.alive():
                break
            try:
                h.wait(max(0.0, deadline - time.monotonic()))
            except Exception:
                out.append(f"missing completion: QEMU draw {h.cookie:#x} never "
                           f"completed (QEMU's console stays blocked)")
        if self.server.alive():
            done = self.completions()
            for h in self.draws:
                if done.get(h.cookie, 0) > 1:
                    out.append(f"draw {h.cookie:#x} completed "
                               f"{done[h.cookie]} times")
        return out

    def check_shows(self, cli: Client, image: Image, timeout: float = 4.0,
                    who: str = "client") -> list[str]:
        deadline = time.monotonic() + timeout
        got = None
        while True:
            frame = cli.frame()
            if frame is not None and (frame.width, frame.height) == (image.width, image.height):
                probes = patterns.quadrant_probes(image.width, image.height)
                bad = [(xy, frame.pixel(*xy), image.expected(*xy)) for xy in probes
                       if not patterns.colour_close(frame.pixel(*xy), image.expected(*xy), 48)]
                if not bad:
                    return []
                got = bad[0]
            elif frame is not None:
                got = ((frame.width, frame.height), None, (image.width, image.height))
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if got is None:
            return [f"{who} shows nothing (no surface) within {timeout} s"]
        if got[1] is None:
            return [f"wrong frame: {who} surface is {got[0]}, scanout is {got[2]}"]
        return [f"wrong frame: {who} shows {got[1]} at {got[0]}, the scanout "
                f"has {got[2]}"]

    def defects(self) -> list[str]:
        """Everything wrong so far: ledger violations, park timeouts, fatal
        completions (stray, repeated, unknown cookie), a dead server."""
        out = list(self.notes)
        for v in self.races.violations():
            out.append(f"{VIOLATION_LABELS[v.kind]}: {v}")
        for t in self.races.timeouts():
            out.append(f"a thread stayed parked until the safety timeout: {t}")
        try:
            self.server.check_alive()
        except ServerCrashed as e:
            out.append(f"crash in the server's process: {e}")
        else:
            for e in self.server.events(EventKind.FATAL):
                out.append(f"stray completion (QEMU would crash): {e}")
        return out

    def close(self) -> str | None:
        """Release every park, close the clients and the server; returns
        how the server process ended badly (Server.exit_problem: a crash or
        a non-zero status at close), or None."""
        self.races.release_all()
        for k in list(self.clients):
            try:
                self.disconnect(k)
            except Exception:
                pass
        try:
            self.server.close()
        finally:
            self.races.close()
            if self.output_sink is not None:
                self.output_sink.append(self.server.output())
        return self.server.exit_problem()

    def __enter__(self) -> "RaceRig":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

