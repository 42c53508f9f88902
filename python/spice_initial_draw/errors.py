"""Exceptions raised by spice_initial_draw: each says what went wrong and
what to do about it."""
from __future__ import annotations

from ._abi import Status


class SidError(RuntimeError):
    """Base class of the errors of this package."""


class ShimError(SidError):
    """The shim (the QEMU-like driver) refused an operation."""


class DrawBusy(ShimError):
    """A draw is outstanding on this display: QEMU blocks the console until
    spice completes it.  Wait for the previous DrawHandle first."""


class NoScanout(ShimError):
    """A draw was issued on a display without a scanout."""


class DrawTimeout(SidError):
    """spice-server did not complete a draw (async_complete) in time."""


class ServerCrashed(SidError):
    """The process running spice-server died (e.g. SIGSEGV on a bad build).

    `returncode` is the exit status (negative: killed by that signal),
    `signal_name` the signal's name if any, `stderr_tail` the last lines it
    printed."""

    def __init__(self, message: str, returncode: int | None,
                 signal_name: str | None, stderr_tail: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.signal_name = signal_name
        self.stderr_tail = stderr_tail


class ClientError(SidError):
    """The spice-gtk client failed (could not connect, process died...)."""


class VariantError(SidError):
    """The requested spice-server variant is not available."""


def for_status(status: Status, message: str) -> SidError:
    """The exception for a shim call that returned `status`."""
    cls = {Status.BUSY: DrawBusy, Status.NO_SCANOUT: NoScanout,
           Status.TIMEOUT: DrawTimeout}.get(status, ShimError)
    return cls(f"{status.name}: {message}")
