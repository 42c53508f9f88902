"""The control block that libsid-races.so (csrc/races/sid_races.c) shares
with the test process, as ctypes structures: keep in step with the C side,
whose MAGIC, VERSION and ctl_size Races checks at start-up."""
from __future__ import annotations

import ctypes
import enum

MAGIC = 0x52444953
VERSION = 1
MAX_POINTS = 64
MAX_EVENTS = 16384

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


class RaceKind(enum.IntEnum):
    """Kinds of the ledger's events (sid_races.c: enum of the event kinds)."""

    GIVEN = 1
    CLOSE = 2
    DUP = 3
    ALLOC = 4
    MAP = 5
    RELEASE = 6
    PARK = 7
    UNPARK = 8
    DRAW = 9
    SCANOUT_DONE = 10
    PULLED = 11
    REUSED_BY = 12
    PARK_TIMEOUT = 50
    USE_AFTER_CLOSE = 100
    REUSED_FD = 101
    CLOSED_IN_USE = 102


VIOLATIONS = {RaceKind.USE_AFTER_CLOSE, RaceKind.REUSED_FD, RaceKind.CLOSED_IN_USE}
