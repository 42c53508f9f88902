"""What became of each scanout fd QEMU gave spice, from the race library's
ledger (csrc/races: GIVEN when spice_qxl_gl_scanout{,2} is called, CLOSE
when that fd, the same inode, is closed): tests/test_destroy_fds.py."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..races import RaceEvent, RaceKind, Races


@dataclass
class FdFate:
    """One fd spice was given (number and inode) and the closes of it."""

    given: RaceEvent
    closes: list[RaceEvent] = field(default_factory=list)

    def __str__(self) -> str:
        how = "; ".join(f"closed by [{c.thread}]" for c in self.closes) or "never closed"
        return f"fd {self.given.fd} (inode {self.given.ino}): {how}"


def scanout_fd_fates(races: Races) -> list[FdFate]:
    """Every scanout fd given so far, in order, with the ledger's closes of
    it: a close of the same number and inode after it was given and before
    the number was given again."""
    fates: list[FdFate] = []
    open_by_fd: dict[int, FdFate] = {}
    for e in races.events():
        if e.kind == RaceKind.GIVEN:
            fate = FdFate(e)
            fates.append(fate)
            open_by_fd[e.fd] = fate
        elif e.kind == RaceKind.CLOSE and e.what == "scanout fd":
            fate = open_by_fd.get(e.fd)
            if fate is not None and fate.given.ino == e.ino:
                fate.closes.append(e)
    return fates


def not_closed_once(fates: list[FdFate]) -> list[str]:
    """The fates where the fd was not closed exactly once, as sentences."""
    return [str(f) for f in fates if len(f.closes) != 1]
