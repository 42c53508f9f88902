"""Scripted GL-console sessions and the display-channel messages each client
received in them, for comparing the patched server with stock
(tests/test_gl_message_sequence.py).

A script is a list of steps (scanouts, draws, client connects, QEMU's
scanout disable) run against one server on a unix socket, as QEMU with
-spice gl=on,unix=on.  What comes out is a Transcript: per client, the
display-channel messages it received, in order, each as one line; and for
QEMU, each draw with how many times it was completed.  Two transcripts of
the same script compare line by line.

How the messages are known (spice-gtk 0.42 logs no message types as such;
every item below is a signal or a debug line of one message handler, in the
order the channel's coroutine handled them):

| line | message | from |
| --- | --- | --- |
| GL_SCANOUT_UNIX WxH stride=S format=F y0top=Y | SPICE_MSG_DISPLAY_GL_SCANOUT_UNIX (or _SCANOUT2_UNIX) | the channel's "gl-scanout" property |
| GL_DRAW x,y WxH | SPICE_MSG_DISPLAY_GL_DRAW | the "gl-draw" signal |
| SURFACE_CREATE WxH stride=S format=F | SPICE_MSG_DISPLAY_SURFACE_CREATE (primary) | display-primary-create |
| SURFACE_DESTROY | SPICE_MSG_DISPLAY_SURFACE_DESTROY (primary) | display-primary-destroy |
| MARK | SPICE_MSG_DISPLAY_MARK | display-mark |
| STREAM_CREATE | SPICE_MSG_DISPLAY_STREAM_CREATE | "display_handle_stream_create" |
| STREAM_DESTROY | SPICE_MSG_DISPLAY_STREAM_DESTROY | "display_handle_stream_destroy" |
| STREAM_DATA | SPICE_MSG_DISPLAY_STREAM_DATA, decoded | a display-invalidate of the stream |

Not seen: messages no handler logs or signals (monitors config, inval
palettes, stream reports, draw commands of the 2D path, which a GL console
does not use).  A stream frame that spice-gtk drops as late has no
invalidate: STREAM_DATA lines count decoded frames, so a GL client (which
must get none) is where they are compared exactly.
"""
from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import patterns
from ..client import Client, ClientEvent
from ..drm import DRM_FORMAT_XRGB8888
from ..errors import DrawTimeout, ServerCrashed
from ..events import EventKind
from ..server import Server

# QEMU waits for a GL draw (the console is blocked); a good one completes
# in ms on a GL client (gl_draw_done) or at once without a scanout
DRAW_TIMEOUT = 5.0
# a client's message log is settled once it has not grown for this long
QUIET = 0.4
SETTLE_TIMEOUT = 8.0


def fourcc_name(code: int) -> str:
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


def _line(e: ClientEvent) -> str | None:
    i = e.info
    if e.name == "gl-scanout":
        if "width" not in i:
            return "GL_SCANOUT_UNIX (none)"
        return (f"GL_SCANOUT_UNIX {i['width']}x{i['height']} stride={i['stride']} "
                f"format={fourcc_name(i['format'])} y0top={int(i['y0top'])}"
                + (" fd=-1" if i.get("fd", -1) < 0 else ""))
    if e.name == "gl-draw":
        return f"GL_DRAW {i['x']},{i['y']} {i['w']}x{i['h']}"
    if e.name == "display-primary-create":
        return (f"SURFACE_CREATE {i['width']}x{i['height']} stride={i['stride']} "
                f"format={i['format']}")
    if e.name == "display-primary-destroy":
        return "SURFACE_DESTROY"
    if e.name == "display-mark":
        return "MARK"
    if e.name == "stream-create":
        return "STREAM_CREATE"
    if e.name == "stream-destroy":
        return "STREAM_DESTROY"
    if e.name == "display-invalidate" and i.get("stream"):
        return "STREAM_DATA"
    return None


def display_messages(cli: Client, channel: int = 0) -> list[str]:
    """The display-channel messages `cli` received so far, one line each
    (the table in this module's docstring), in the order it handled them."""
    return [ln for e in cli.events(channel=channel) if (ln := _line(e)) is not None]


def settle(clients: list[Client], quiet: float = QUIET,
           timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until no client's event log has grown for `quiet` s (at most
    `timeout` s): the messages a step caused have arrived."""
    deadline = time.monotonic() + timeout
    sizes = [len(c.events()) for c in clients]
    last_change = time.monotonic()
    while time.monotonic() - last_change < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        now = [len(c.events()) for c in clients]
        if now != sizes:
            sizes, last_change = now, time.monotonic()


# -- scripts ----------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One thing QEMU or a user does: `what` is "scanout" (kwargs:
    Display.scanout_raw's), "draw" (rect), "disable" (fd -1, 0x0),
    "connect-gl" (a local GL client), "connect-streaming" (a client on the
    same socket without the GL scanout capability: a streaming client, as
    a remote one)."""

    what: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    rect: tuple[int, int, int, int] | None = None

    def __str__(self) -> str:
        if self.what == "scanout":
            k = self.kwargs
            extra = "".join(f" {n}={k[n]!r}" for n in ("scanout2", "modifier") if n in k)
            planes = k.get("planes")
            if planes:
                extra += f" offset={planes[0][1]}"
            return f"scanout {k['width']}x{k['height']} stride={k['stride']}{extra}"
        if self.what == "draw":
            return f"draw {self.rect}"
        return self.what


def scanout(image: patterns.Image) -> Step:
    return Step("scanout", dict(width=image.width, height=image.height,
                                stride=image.stride, fourcc=image.fourcc,
                                data=image.data))


def raw_scanout(**kwargs: Any) -> Step:
    kwargs.setdefault("fourcc", DRM_FORMAT_XRGB8888)
    return Step("scanout", kwargs)


def draw(x: int, y: int, w: int, h: int) -> Step:
    return Step("draw", rect=(x, y, w, h))


DISABLE = Step("disable")
CONNECT_GL = Step("connect-gl")
CONNECT_STREAMING = Step("connect-streaming")


@dataclass
class Transcript:
    """What a script produced: per client (in connect order: "gl0",
    "streaming1", ...), the display messages it received; per draw, the
    rectangle and how many times QEMU saw it completed; the steps run."""

    messages: dict[str, list[str]] = field(default_factory=dict)
    draws: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    # per client, how many messages it had received before QEMU's last
    # scanout disable (absent: no disable in the script)
    before_disable: dict[str, int] = field(default_factory=dict)

    def lines(self, clients: list[str] | None = None) -> list[str]:
        out = [f"QEMU draw {d}" for d in self.draws]
        for name, msgs in self.messages.items():
            if clients is None or name in clients:
                out += [f"{name}: {m}" for m in msgs]
        return out


def diff(expected: Transcript, got: Transcript, clients: list[str] | None = None,
         labels: tuple[str, str] = ("stock", "patched")) -> str:
    """A unified diff of two transcripts ("" when they are the same)."""
    return "\n".join(difflib.unified_diff(expected.lines(clients), got.lines(clients),
                                          labels[0], labels[1], lineterm="", n=2))


def run_script(srv: Server, steps: list[Step],
               new_client: Callable[..., Client]) -> Transcript:
    """Run `steps` on `srv` (on a unix socket), with clients made by
    new_client(srv, gl=bool) (closed by the caller).  A draw is waited for
    (DRAW_TIMEOUT: QEMU's console is blocked until it completes); a scanout
    and a connect are followed by settle().  A server crash is raised
    (ServerCrashed) with the transcript so far in its message."""
    d = srv.display(0)
    clients: dict[str, Client] = {}
    handles: list[tuple[tuple[int, int, int, int], int]] = []
    t = Transcript()
    try:
        for step in steps:
            t.steps.append(str(step))
            if step.what == "scanout":
                d.scanout_raw(**step.kwargs)
            elif step.what == "disable":
                settle(list(clients.values()))
                t.before_disable = {name: len(display_messages(cli))
                                    for name, cli in clients.items()}
                d.scanout_raw(fd=-1, width=0, height=0, stride=0)
            elif step.what == "draw":
                assert step.rect is not None
                h = d.draw(*step.rect)
                handles.append((step.rect, h.cookie))
                try:
                    h.wait(DRAW_TIMEOUT)
                except DrawTimeout:
                    pass    # counted below: QEMU would still be waiting
            elif step.what in ("connect-gl", "connect-streaming"):
                gl = step.what == "connect-gl"
                cli = new_client(srv, gl=gl)
                clients[f"{'gl' if gl else 'streaming'}{len(clients)}"] = cli
                cli.wait_ready()
            else:
                raise ValueError(f"unknown step {step.what!r}")
            if step.what != "draw":
                settle(list(clients.values()))
        settle(list(clients.values()))
    except ServerCrashed as e:
        raise ServerCrashed(f"{e}\nsteps run: {t.steps}", e.returncode, e.signal_name,
                            e.stderr_tail) from None
    done = srv.events(EventKind.DRAW_DONE)
    for (x, y, w, h), cookie in handles:
        n = sum(1 for e in done if e.cookie == cookie)
        t.draws.append(f"{x},{y} {w}x{h}: completed {n}x")
    for name, cli in clients.items():
        t.messages[name] = display_messages(cli)
    return t
