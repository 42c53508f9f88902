"""TEST-ONLY deterministic race points and fd ownership ledger.

The library libsid-races.so (csrc/races/sid_races.c) is LD_PRELOADed into a
server subprocess only when a test asks for it:

    races = Races()
    srv = Server(variant="stock", env=races.env())
    races.attach(srv)
    with races.park("gst:before-map") as p:
        h = srv.display(0).draw()
        p.wait()                 # GStreamer's thread is parked before mmap()
        srv.display(0).scanout(other)
        p.release()
    assert not races.violations()

Points (where the calling thread blocks while the point is armed):
    qemu:scanout, qemu:after-scanout   QEMU's thread, around spice_qxl_gl_scanout{,2}
    qemu:draw                          QEMU's thread, before spice_qxl_gl_draw_async
    worker:before-encode               worker, before gst_dmabuf_allocator_alloc*
    worker:read                        worker ("SPICE Worker"), before any read():
                                       its dispatcher (connect, scanout, draw messages)
    gst:before-map                     GStreamer streaming thread, before mmap() of
                                       the fd wrapped in the encoder's GstMemory
    gst:encoded                        the thread that pulled the encoded sample
                                       (gst_app_sink_pull_sample; spice's appsink
                                       callback, a streaming thread)
    gst:release                        whichever thread drops that GstMemory last

The ledger records every fd QEMU gave spice, every fd wrapped in a GstMemory
(with its inode), and flags: a mmap of a closed fd (use-after-close), a mmap
of an fd whose number now names another file (reused fd), and a close of an
fd while a live GstMemory wraps it.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

MAGIC = 0x52444953
VERSION = 1
MAX_POINTS = 64
MAX_EVENTS = 16384

POINTS = ("qemu:scanout", "qemu:after-scanout", "qemu:draw",
          "worker:before-encode", "worker:read", "gst:before-map",
          "gst:encoded", "gst:release")


class _Point(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 48), ("armed", ctypes.c_int32),
                ("hits", ctypes.c_uint32), ("parked", ctypes.c_uint32),
                ("released", ctypes.c_uint32), ("last_tid", ctypes.c_int32),
                ("last_thread", ctypes.c_char * 16), ("inflight", ctypes.c_uint32)]


class _Event(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_uint32), ("kind", ctypes.c_int32),
                ("t_ns", ctypes.c_int64), ("fd", ctypes.c_int32),
                ("fd2", ctypes.c_int32), ("ino", ctypes.c_uint64),
                ("ino2", ctypes.c_uint64), ("tid", ctypes.c_int32),
                ("thread", ctypes.c_char * 16), ("what", ctypes.c_char * 60)]


class _Ctl(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_uint32), ("version", ctypes.c_uint32),
                ("ctl_size", ctypes.c_uint32), ("n_points", ctypes.c_uint32),
                ("n_events", ctypes.c_uint32),
                ("park_timeout_ms", ctypes.c_uint32),
                ("n_violations", ctypes.c_uint32),
                ("any_armed", ctypes.c_uint32),
                ("reuse_fill", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("points", _Point * MAX_POINTS),
                ("events", _Event * MAX_EVENTS)]


KINDS = {1: "GIVEN", 2: "CLOSE", 3: "DUP", 4: "ALLOC", 5: "MAP",
         6: "RELEASE", 7: "PARK", 8: "UNPARK", 9: "DRAW", 10: "SCANOUT_DONE",
         11: "PULLED", 12: "REUSED_BY", 50: "PARK_TIMEOUT", 100: "USE_AFTER_CLOSE",
         101: "REUSED_FD", 102: "CLOSED_IN_USE"}
VIOLATIONS = {"USE_AFTER_CLOSE", "REUSED_FD", "CLOSED_IN_USE"}


@dataclass(frozen=True)
class RaceEvent:
    index: int
    kind: str
    t_ns: int
    fd: int
    fd2: int
    ino: int
    ino2: int
    tid: int
    thread: str
    what: str

    def __str__(self) -> str:
        ino = f" ino={self.ino}" if self.ino else ""
        ino2 = f" now ino={self.ino2}" if self.ino2 else ""
        fd = f" fd={self.fd}" if self.fd >= 0 else ""
        return (f"{self.kind}{fd}{ino}{ino2} [{self.thread}] {self.what}")

    @property
    def violation(self) -> bool:
        return self.kind in VIOLATIONS


def library_path() -> str:
    """Absolute path of libsid-races.so, installed next to this module."""
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("libsid-races.so",):
        p = os.path.join(here, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"libsid-races.so is not in {here}; ./run build")


class ParkTimeout(AssertionError):
    pass


class Races:
    """Control block shared with the preloaded library of one server."""

    def __init__(self, park_timeout: float = 10.0,
                 preload_first: list[str] | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="sid-races-",
                                         dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        size = ctypes.sizeof(_Ctl)
        os.ftruncate(fd, size)
        self._mm = mmap.mmap(fd, size)
        os.close(fd)
        self.ctl = _Ctl.from_buffer(self._mm)
        self.ctl.ctl_size = size
        self.ctl.version = VERSION
        self.ctl.park_timeout_ms = int(park_timeout * 1000)
        self.ctl.magic = MAGIC
        self.preload_first = list(preload_first or [])
        self.server: Any = None
        self._seen = 0
        self._events: list[RaceEvent] = []

    # -- set-up ----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for Server(env=...): preload the race library."""
        preload = self.preload_first + [library_path()]
        old = os.environ.get("LD_PRELOAD")
        if old:
            preload.append(old)
        return {"LD_PRELOAD": ":".join(preload), "SID_RACES_SHM": self.path}

    def attach(self, server: Any) -> "Races":
        self.server = server
        return self

    def close(self) -> None:
        if self._mm is None:
            return
        self.release_all()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        # the ctypes view pins the buffer; let both go together
        self.ctl = None  # type: ignore[assignment]
        mm, self._mm = self._mm, None
        try:
            mm.close()
        except BufferError:
            pass

    def __enter__(self) -> "Races":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- points --------------------------------------------------------------------
    def _slot(self, name: str) -> _Point:
        if name not in POINTS:
            raise ValueError(f"unknown race point {name!r}; one of {POINTS}")
        n = self.ctl.n_points
        for i in range(n):
            if self.ctl.points[i].name.decode() == name:
                return self.ctl.points[i]
        if n >= MAX_POINTS:
            raise RuntimeError("too many race points")
        self.ctl.points[n].name = name.encode()
        self.ctl.n_points = n + 1
        return self.ctl.points[n]

    def arm(self, name: str, count: int = 1) -> "Park":
        """Park the next `count` threads that reach `name`."""
        p = self._slot(name)
        p.armed += count
        self.ctl.any_armed = 1
        return Park(self, name, p.parked)

    def reuse_closed_fds(self, fill: int | None = 0x80) -> None:
        """When a fd is closed while a GstMemory still wraps it, put a new
        memfd filled with byte `fill` at that number at once (None: off)."""
        self.ctl.reuse_fill = 0 if fill is None else (fill & 0xFF) + 1

    def disarm(self, name: str, drain_timeout: float = 1.0) -> None:
        """Park no more threads at `name` and release every one parked
        there. A thread can be between claiming an arm and taking its
        ticket (sid_races.c, point()): wait until none is (inflight), so
        that parked counts every thread that will wait here."""
        p = self._slot(name)
        p.armed = 0
        time.sleep(0.001)   # a syscall: our store of armed is visible
        deadline = time.monotonic() + drain_timeout
        while p.inflight and time.monotonic() < deadline:
            time.sleep(0.0005)
        p.released = max(p.released, p.parked)

    def hits(self, name: str) -> int:
        return int(self._slot(name).hits)

    def parked(self, name: str) -> int:
        """Threads parked at `name` and not released yet."""
        p = self._slot(name)
        return int(p.parked - p.released)

    def release(self, name: str, count: int = 1) -> None:
        p = self._slot(name)
        p.released = min(p.parked, p.released + count) if count else p.parked

    def release_all(self) -> None:
        if self.ctl is None:
            return
        self.ctl.any_armed = 0
        for i in range(self.ctl.n_points):
            p = self.ctl.points[i]
            p.armed = 0
            p.released = 0xFFFFFFF0   # ends every wait, now and later

    @contextmanager
    def park(self, name: str, count: int = 1) -> Iterator["Park"]:
        """Arm `name`; on exit, disarm it and release whatever is parked."""
        pk = self.arm(name, count)
        try:
            yield pk
        finally:
            self.disarm(name)

    # -- ledger ----------------------------------------------------------------
    def events(self) -> list[RaceEvent]:
        n = min(self.ctl.n_events, MAX_EVENTS)
        i = self._seen
        while i < n:
            e = self.ctl.events[i]
            if e.seq != i + 1:
                break
            self._events.append(RaceEvent(
                i, KINDS.get(e.kind, str(e.kind)), e.t_ns, e.fd, e.fd2, e.ino,
                e.ino2, e.tid, e.thread.decode(errors="replace"),
                e.what.decode(errors="replace")))
            i += 1
        self._seen = i
        return list(self._events)

    def violations(self) -> list[RaceEvent]:
        return [e for e in self.events() if e.violation]

    def n_violations(self) -> int:
        return int(self.ctl.n_violations)

    def timeouts(self) -> list[RaceEvent]:
        return [e for e in self.events() if e.kind == "PARK_TIMEOUT"]

    def of(self, kind: str) -> list[RaceEvent]:
        return [e for e in self.events() if e.kind == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0,
                 since: int = 0) -> list[RaceEvent]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events()[since:] if e.kind == kind]
            if len(found) >= count:
                return found
            if self.server is not None:
                self.server.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} {kind} ledger event(s) expected "
                                   f"within {timeout} s, got {len(found)}")
            time.sleep(0.005)

    def mark(self) -> int:
        """Index to pass as since= to wait_for (events after now)."""
        return len(self.events())


class Park:
    """An armed point (see Races.park)."""

    def __init__(self, races: Races, name: str, base: int) -> None:
        self.races, self.name, self.base = races, name, base

    @property
    def slot(self) -> _Point:
        return self.races._slot(self.name)

    def wait(self, count: int = 1, timeout: float = 5.0) -> str:
        """Wait until `count` threads are parked here; returns the thread
        name of the last one."""
        deadline = time.monotonic() + timeout
        while self.slot.parked - self.base < count:
            if self.races.server is not None:
                self.races.server.check_alive()
            if time.monotonic() > deadline:
                raise ParkTimeout(f"no thread reached race point {self.name} "
                                  f"within {timeout} s "
                                  f"({self.slot.hits} pass(es) in all)")
            time.sleep(0.002)
        return self.slot.last_thread.decode(errors="replace")

    def reached(self, timeout: float) -> bool:
        try:
            self.wait(1, timeout)
            return True
        except ParkTimeout:
            return False

    def release(self, count: int = 1) -> None:
        s = self.slot
        s.released = min(s.parked, s.released + count)


# ---------------------------------------------------------------------------
# A server + clients + ledger rig shared by the race, stateful and sanitizer
# tests: it drives the harness and turns what it saw into named defects.
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
        from .server import Server
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
        self.clients: dict[int, Any] = {}
        self.draws: list[Any] = []
        self.current: Any = None      # Image of the newest scanout
        self.notes: list[str] = []    # defects found along the way

    # -- actions ---------------------------------------------------------------
    def scanout(self, image: Any) -> None:
        self.display.scanout(image)
        self.current = image

    def connect(self, k: int = 0) -> Any:
        from .client import Client
        cli = Client.for_server(self.server)
        self.clients[k] = cli
        return cli

    def disconnect(self, k: int) -> None:
        cli = self.clients.pop(k, None)
        if cli is not None:
            cli.close()

    def draw(self) -> Any:
        h = self.display.draw()
        self.draws.append(h)
        return h

    def draw_into(self, park: "Park", attempts: int = 15) -> Any:
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
            allocs = sum(1 for e in ev if e.kind == "ALLOC")
            rels = sum(1 for e in ev if e.kind == "RELEASE")
            if allocs == rels and not self.display.draw_pending():
                return
            time.sleep(0.02)

    # -- checks ------------------------------------------------------------------
    def completions(self) -> dict[int, int]:
        from .events import EventKind
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

    def check_shows(self, cli: Any, image: Any, timeout: float = 4.0,
                    who: str = "client") -> list[str]:
        from . import patterns
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
        from .events import EventKind
        out = list(self.notes)
        for v in self.races.violations():
            label = {"USE_AFTER_CLOSE": "use of a closed fd",
                     "REUSED_FD": "use of a reused fd (another buffer's pixels)",
                     "CLOSED_IN_USE": "fd closed while GStreamer still uses it"}[v.kind]
            out.append(f"{label}: {v}")
        for t in self.races.timeouts():
            out.append(f"a thread stayed parked until the safety timeout: {t}")
        if not self.server.alive():
            out.append(str(self.server._crash_error("crash in the server's process")))
        else:
            for e in self.server.events(EventKind.FATAL):
                out.append(f"stray completion (QEMU would crash): {e}")
        return out

    def close(self) -> None:
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

    def __enter__(self) -> "RaceRig":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

