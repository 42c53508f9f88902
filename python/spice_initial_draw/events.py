"""Event log records of the shim (timestamps: CLOCK_MONOTONIC, the clock of
time.monotonic_ns(), shared by every process on the machine)."""
from __future__ import annotations

from dataclasses import dataclass

from ._abi import CHANNEL_TYPE_DISPLAY, ChannelEvent, EventKind

__all__ = ["CHANNEL_TYPE_DISPLAY", "ChannelEvent", "Event", "EventKind"]


@dataclass(frozen=True)
class Event:
    """One entry of the shim's event log.

    For DRAW, (a, b, c, d) = (x, y, w, h); for DRAW_DONE, a = latency in ns;
    for SCANOUT, (a, b, c, d) = (width, height, planes, fourcc); for
    CLIENT_CONNECT, a = the first 32 display-channel capability bits; for
    CHANNEL, (a, b, c, d) = (ChannelEvent, channel type, channel id,
    connection id).
    """

    t_ns: int
    kind: EventKind
    display: int
    cookie: int
    a: int
    b: int
    c: int
    d: int
    text: str

    @property
    def t(self) -> float:
        """Timestamp in seconds (time.monotonic())."""
        return self.t_ns / 1e9

    def __str__(self) -> str:
        disp = "" if self.display < 0 else f" display={self.display}"
        ck = f" cookie={self.cookie:#x}" if self.cookie else ""
        return f"{self.t:.6f} {self.kind.name}{disp}{ck}: {self.text}"
