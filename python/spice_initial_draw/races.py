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
from typing import Iterator

from ._races_abi import MAGIC, MAX_EVENTS, MAX_POINTS, VERSION, Ctl, Point, RaceKind
from .server import Server

VIOLATIONS = frozenset(k for k in RaceKind if k >= RaceKind.USE_AFTER_CLOSE)
POINTS = ("qemu:scanout", "qemu:after-scanout", "qemu:draw",
          "worker:before-encode", "worker:read", "gst:before-map",
          "gst:encoded", "gst:release")


@dataclass(frozen=True)
class RaceEvent:
    index: int
    kind: RaceKind
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
        return (f"{self.kind.name}{fd}{ino}{ino2} [{self.thread}] {self.what}")

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
        size = ctypes.sizeof(Ctl)
        os.ftruncate(fd, size)
        self._mm = mmap.mmap(fd, size)
        os.close(fd)
        self.ctl = Ctl.from_buffer(self._mm)
        self.ctl.ctl_size = size
        self.ctl.version = VERSION
        self.ctl.park_timeout_ms = int(park_timeout * 1000)
        self.ctl.magic = MAGIC
        self.preload_first = list(preload_first or [])
        self.server: Server | None = None
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

    def attach(self, server: Server) -> "Races":
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
    def _slot(self, name: str) -> Point:
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
                i, RaceKind(e.kind), e.t_ns, e.fd, e.fd2, e.ino,
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
        return self.of(RaceKind.PARK_TIMEOUT)

    def of(self, kind: RaceKind) -> list[RaceEvent]:
        return [e for e in self.events() if e.kind == kind]

    def wait_for(self, kind: RaceKind, count: int = 1, timeout: float = 5.0,
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
    def slot(self) -> Point:
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
