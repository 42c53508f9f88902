"""Subprocess running one spice-gtk client (SpiceClientGLib 2.0 through
GObject introspection) with its own GLib main loop: `python -m
spice_initial_draw._client_worker FD`.  Answers RPCs from client.Client.

What is observable, and how:
 - display-primary-create / -destroy / -invalidate / -mark: signals of
   SpiceDisplayChannel; the primary surface's pixels are read through the
   imgdata pointer given by display-primary-create (valid until
   display-primary-destroy).
 - stream creation and the GStreamer decoder elements: spice-gtk's debug
   messages (spice_util_set_debug), caught with a GLib log handler:
   "display_handle_stream_create: id N" and "A new element was added to
   Gstreamer's pipeline (vp8dec)".  spice-gtk decodes MJPEG with its
   built-in decoder (no GStreamer element).
 - a stream's destruction: "display_handle_stream_destroy: id N" (the
   event "stream-destroy"; "stream-stats" follows when it had frames).
 - a stream frame = a display-invalidate after a stream was created on that
   channel (spice-gtk invalidates the stream's rectangle per decoded frame).
   Each stream frame the channel received is numbered from 1 on (its
   `index`): a decoded one in its display-invalidate event, one spice-gtk
   dropped as late ("dropping a late MJPEG frame", "rendering too late ...
   dropping") in its "stream-late" event; so a test can tell which frame
   made a picture appear (1: the session's first frame).
 - GL (local) clients: connect(unix_path=..., gl=True) sets the session's
   "unix-path" and "gl-scanout"; the display channel's "gl-scanout"
   property change is the event "gl-scanout" (with the scanout's fd, size,
   stride, fourcc, y0top) and each "gl-draw" signal the event "gl-draw",
   answered with spice_display_channel_gl_draw_done() as spice-gtk's
   widget does.
 - migrations: SpiceSession:migration-state changes are the event
   "migration-state" (spice-gtk follows a migration by itself; with
   all_channels it connects cursor and inputs too, as remote-viewer, which
   a seamless migration needs).
 - rpc_cycle: many short sessions (connect, display channel open,
   disconnect) in this one process, for the connect/disconnect soaks.
"""
from __future__ import annotations

import ctypes
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

from spice_initial_draw import _rpc  # noqa: E402
from spice_initial_draw.codecs import CODEC_TYPES  # noqa: E402
from spice_initial_draw.patterns import quadrant_probes  # noqa: E402

DECODER_ELEMENTS = {"jpegdec": "mjpeg", "vp8dec": "vp8", "vp9dec": "vp9",
                    "h264parse": "h264", "avdec_h264": "h264",
                    "h265parse": "h265", "avdec_h265": "h265",
                    "vp8alphadecodebin": "vp8", "vp9alphadecodebin": "vp9"}
RE_CHANNEL = re.compile(r"display-2:(\d+):")
RE_STREAM = re.compile(r"display_handle_stream_create: id (\d+)")
RE_ELEMENT = re.compile(r"new element was added to Gstreamer's pipeline \((\w+)\)")
RE_STREAM_DESTROY = re.compile(r"display_handle_stream_destroy: id (\d+)")
RE_STATS = re.compile(r"display_stream_stats_debug: id=(\d+) #in-frames=(\d+)")
# spice-gtk dropped a frame it received, unshown (channel-display-gst.c,
# channel-display-mjpeg.c); the pipeline's own drops: "dropped N frames"
RE_DROPPED = re.compile(r"dropping a late MJPEG frame|too late by .*dropping")
RE_PIPELINE_DROPPED = re.compile(r"GStreamer pipeline dropped (\d+) frames")


@dataclass
class CycleStats:
    """rpc_cycle's result (as a dict, these keys): sessions run, display
    channels opened, sessions that showed a stream frame, main channels
    closed, seconds in all."""
    cycles: int = 0
    ready: int = 0
    frames: int = 0
    closed: int = 0
    seconds: float = 0.0


@dataclass
class CycleSession:
    """One short session of rpc_cycle and what its signal handlers saw.
    `stream` is set by ClientState.on_log (a stream was created)."""
    codec: str | None
    ready: bool = False          # the display channel is open
    stream: bool = False         # a stream was created
    frame: bool = False          # an invalidate after the stream's creation
    channels: int = 0            # channel-new
    destroyed: int = 0           # channel-destroy
    main_closed: bool = False    # the main channel had an event other than OPENED
    main_events: list[str] = field(default_factory=list)

    def start(self, host: str, port: int) -> Any:
        """A new session to host:port, its handlers connected, connecting."""
        s = SpiceClientGLib.Session()
        s.props.host = host
        s.props.port = str(port)
        GObject.Object.connect(s, "channel-new", self.on_new)
        GObject.Object.connect(s, "channel-destroy", self.on_destroy)
        s.connect()
        return s

    def on_new(self, _s: Any, ch: Any) -> None:
        self.channels += 1
        GObject.Object.connect(ch, "channel-event", self.on_event)
        if isinstance(ch, SpiceClientGLib.DisplayChannel):
            GObject.Object.connect(ch, "display-invalidate", self.on_invalidate)
            ch.connect()

    def on_destroy(self, _s: Any, _ch: Any) -> None:
        self.destroyed += 1

    def on_event(self, ch: Any, event: Any) -> None:
        if event != SpiceClientGLib.ChannelEvent.OPENED and \
                isinstance(ch, SpiceClientGLib.MainChannel):
            self.main_closed = True
            self.main_events.append(str(event))
        if event == SpiceClientGLib.ChannelEvent.OPENED and \
                isinstance(ch, SpiceClientGLib.DisplayChannel):
            if self.codec:
                ch.display_channel_change_preferred_video_codec_types(
                    [CODEC_TYPES[self.codec]])
            self.ready = True

    def on_invalidate(self, _ch: Any, *_a: Any) -> None:
        if self.stream:
            self.frame = True


def iterate_until(done: Callable[[], bool], seconds: float) -> bool:
    """Run the default main context until done() or `seconds` have passed
    (something must wake it: rpc_cycle's tick); returns done()."""
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        ctx.iteration(True)
    return done()


class ClientState:
    def __init__(self, loop: GLib.MainLoop) -> None:
        self.loop = loop
        self.session: Any = None
        self.codec: str | None = None
        self.events: list[tuple[int, str, int, dict[str, Any]]] = []
        self.primary: dict[int, dict[str, Any]] = {}
        self.streaming: dict[int, bool] = {}
        self.received: dict[int, int] = {}   # stream frames received, by channel
        self.last_channel = 0
        self.channels: list[Any] = []
        self.all_channels = False   # connect cursor and inputs too
        self.cycle: CycleSession | None = None   # rpc_cycle's current session
        self.old_sessions: list[Any] = []
        self.probe_points: list[tuple[int, int]] | None = None   # None: quadrant centres
        GLib.log_set_handler("GSpice", GLib.LogLevelFlags.LEVEL_MASK
                             | GLib.LogLevelFlags.FLAG_FATAL
                             | GLib.LogLevelFlags.FLAG_RECURSION,
                             self.on_log, None)
        SpiceClientGLib.set_debug(True) if hasattr(SpiceClientGLib, "set_debug") \
            else SpiceClientGLib.util_set_debug(True)

    def add(self, name: str, channel: int = -1, **info: Any) -> None:
        self.events.append((time.monotonic_ns(), name, channel, info))

    # -- spice-gtk debug log ---------------------------------------------
    def on_log(self, domain: str, level: int, message: str, _data: Any) -> None:
        m = RE_CHANNEL.search(message)
        if m:
            self.last_channel = int(m.group(1))
        ch = self.last_channel
        if (m := RE_STREAM.search(message)):
            self.streaming[ch] = True
            if self.cycle is not None:
                self.cycle.stream = True
                return
            self.add("stream-create", ch, stream_id=int(m.group(1)))
        elif (m := RE_STREAM_DESTROY.search(message)):
            if self.cycle is None:
                self.add("stream-destroy", ch, stream_id=int(m.group(1)))
        elif (m := RE_ELEMENT.search(message)):
            el = m.group(1)
            self.add("gst-element", ch, element=el,
                     codec=DECODER_ELEMENTS.get(el))
        elif (m := RE_STATS.search(message)):
            self.add("stream-stats", ch, stream_id=int(m.group(1)),
                     in_frames=int(m.group(2)), text=message)
        elif "too late" in message or "drop" in message:
            dropped = 1 if RE_DROPPED.search(message) else 0
            if (m := RE_PIPELINE_DROPPED.search(message)):
                dropped = int(m.group(1))
            info: dict[str, Any] = {"text": message}
            if dropped:
                info["index"] = self.count_received(ch, dropped)
            self.add("stream-late", ch, **info)
        if level & (GLib.LogLevelFlags.LEVEL_WARNING
                    | GLib.LogLevelFlags.LEVEL_CRITICAL):
            self.add("spice-warning", ch, text=message)

    # -- session / channels --------------------------------------------------
    def connect(self, host: str, port: int, codec: str | None,
                unix_path: str | None = None, gl: bool | None = None,
                auth: dict[str, Any] | None = None,
                all_channels: bool = False) -> bool:
        if codec is not None and codec not in CODEC_TYPES:
            raise ValueError(f"unknown codec {codec!r}; one of {sorted(CODEC_TYPES)}")
        self.codec = codec
        self.all_channels = all_channels
        s = SpiceClientGLib.Session()
        if unix_path is not None:
            s.props.unix_path = unix_path   # local client (QEMU unix=on)
        else:
            s.props.host = host
            if port:
                s.props.port = str(port)
        if auth and auth.get("tls_port"):
            s.props.tls_port = str(auth["tls_port"])
            s.props.ca_file = auth.get("ca_file")
        if auth and auth.get("password") is not None:
            s.props.password = auth["password"]
        if gl is not None:
            s.props.gl_scanout = gl   # SPICE_DISPLAY_CAP_GL_SCANOUT
        GObject.Object.connect(s, "channel-new", self.on_channel_new)
        GObject.Object.connect(s, "channel-destroy", self.on_channel_destroy)
        GObject.Object.connect(s, "notify::migration-state", self.on_migration_state)
        self.session = s
        self.add("session-connect", host=host, port=port, unix_path=unix_path,
                 tls_port=(auth or {}).get("tls_port", 0),
                 gl=s.props.gl_scanout)
        return bool(s.connect())  # spice_session_connect

    def on_migration_state(self, s: Any, _pspec: Any) -> None:
        """A migration's progress (SpiceSession:migration-state): the
        server sent MIGRATE_BEGIN(_SEAMLESS), the client follows it by
        itself; back to "none" once it is done."""
        state = s.props.migration_state
        self.add("migration-state", state=getattr(state, "value_nick", str(state)))

    def on_channel_new(self, _s: Any, ch: Any) -> None:
        cid = ch.props.channel_id
        self.add("channel-new", cid, type=type(ch).__name__)
        GObject.Object.connect(ch, "channel-event", self.on_channel_event)
        if isinstance(ch, SpiceClientGLib.DisplayChannel):
            self.channels.append(ch)
            GObject.Object.connect(ch, "display-primary-create", self.on_primary_create)
            GObject.Object.connect(ch, "display-primary-destroy", self.on_primary_destroy)
            GObject.Object.connect(ch, "display-invalidate", self.on_invalidate)
            GObject.Object.connect(ch, "display-mark", self.on_mark)
            GObject.Object.connect(ch, "notify::gl-scanout", self.on_gl_scanout)
            GObject.Object.connect(ch, "gl-draw", self.on_gl_draw)
            ch.connect()  # spice_channel_connect
        elif self.all_channels and not isinstance(ch, SpiceClientGLib.MainChannel):
            ch.connect()  # as remote-viewer: cursor and inputs as well

    def on_channel_destroy(self, _s: Any, ch: Any) -> None:
        self.add("channel-destroy", ch.props.channel_id, type=type(ch).__name__)
        if ch in self.channels:
            self.channels.remove(ch)

    def on_channel_event(self, ch: Any, event: Any) -> None:
        cid = ch.props.channel_id
        name = event.value_nick if hasattr(event, "value_nick") else str(event)
        kind = type(ch).__name__
        self.add("channel-event", cid, type=kind, event=name)
        if isinstance(ch, SpiceClientGLib.DisplayChannel) and \
                event == SpiceClientGLib.ChannelEvent.OPENED:
            if self.codec:
                ok = ch.display_channel_change_preferred_video_codec_types(
                    [CODEC_TYPES[self.codec]])
                self.add("preferred-codec", cid, codec=self.codec, ok=bool(ok))
            self.add("display-ready", cid)
        if event == SpiceClientGLib.ChannelEvent.CLOSED and kind == "MainChannel":
            self.add("session-closed")

    def on_primary_create(self, ch: Any, fmt: int, width: int, height: int,
                          stride: int, shmid: int, imgdata: int) -> None:
        cid = ch.props.channel_id
        self.primary[cid] = dict(format=fmt, width=width, height=height,
                                 stride=stride, data=imgdata)
        self.streaming[cid] = False
        self.add("display-primary-create", cid, format=fmt, width=width,
                 height=height, stride=stride)

    def on_primary_destroy(self, ch: Any) -> None:
        cid = ch.props.channel_id
        self.primary.pop(cid, None)
        self.add("display-primary-destroy", cid)

    def count_received(self, cid: int, n: int = 1) -> int:
        """Count `n` more stream frames received on channel `cid`; returns
        the index of the last one (1: the session's first)."""
        self.received[cid] = self.received.get(cid, 0) + n
        return self.received[cid]

    def on_invalidate(self, ch: Any, x: int, y: int, w: int, h: int) -> None:
        cid = ch.props.channel_id
        stream = bool(self.streaming.get(cid))
        extra = {"index": self.count_received(cid)} if stream else {}
        self.add("display-invalidate", cid, x=x, y=y, w=w, h=h,
                 stream=stream, probes=self.probes(cid), **extra)

    def probes(self, cid: int) -> list[list[int]]:
        """The surface's RGB at the probe points (the quadrant centres
        unless rpc_set_probes chose others) as this frame left it (every
        frame's picture, not only the last one); none when a point lies
        outside the surface."""
        p = self.primary.get(cid)
        if not p or not p["data"]:
            return []
        points = self.probe_points or quadrant_probes(p["width"], p["height"])
        if any(px >= p["width"] or py >= p["height"] for px, py in points):
            return []
        out = []
        for px, py in points:
            b, g, r = ctypes.string_at(p["data"] + py * p["stride"] + 4 * px, 3)
            out.append([r, g, b])
        return out

    def on_mark(self, ch: Any, mark: int) -> None:
        self.add("display-mark", ch.props.channel_id, mark=mark)

    def on_gl_scanout(self, ch: Any, _pspec: Any) -> None:
        info: dict[str, Any] = {}
        sc = ch.get_gl_scanout()
        if sc is not None:
            info = dict(fd=sc.fd, width=sc.width, height=sc.height,
                        stride=sc.stride, format=sc.format, y0top=bool(sc.y0top))
        self.add("gl-scanout", ch.props.channel_id, **info)

    def on_gl_draw(self, ch: Any, x: int, y: int, w: int, h: int) -> None:
        self.add("gl-draw", ch.props.channel_id, x=x, y=y, w=w, h=h)
        ch.gl_draw_done()   # what spice-gtk's widget does once it rendered

    # -- RPC ------------------------------------------------------------------
    def rpc_connect(self, host: str, port: int, codec: str | None,
                    unix_path: str | None = None, gl: bool | None = None,
                    auth: dict[str, Any] | None = None,
                    all_channels: bool = False) -> bool:
        return self.connect(host, port, codec, unix_path, gl, auth, all_channels)

    def rpc_cycle(self, count: int, host: str, port: int, codec: str | None,
                  wait_frame: float = 0.0, timeout: float = 10.0) -> dict[str, Any]:
        """`count` sessions one after the other: connect, wait until the
        display channel is open (and, with wait_frame > 0, up to wait_frame
        s for a stream frame), disconnect, wait until the main channel is
        closed.  Nothing is added to the event log; returns CycleStats as
        a dict."""
        stats = CycleStats()
        t0 = time.monotonic()
        tick = GLib.timeout_add(20, lambda: True)   # wakes iteration(True)
        try:
            for _ in range(count):
                self._run_one_cycle(stats, host, port, codec, wait_frame, timeout)
        finally:
            self.cycle = None
            GLib.source_remove(tick)
            stats.seconds = time.monotonic() - t0
        return asdict(stats)

    def _run_one_cycle(self, stats: CycleStats, host: str, port: int,
                       codec: str | None, wait_frame: float, timeout: float) -> None:
        """One session of rpc_cycle, counted in `stats`."""
        cycle = self.cycle = CycleSession(codec)
        session = cycle.start(host, port)
        if not iterate_until(lambda: cycle.ready, timeout):
            raise TimeoutError(f"cycle {stats.cycles}: display channel not "
                               f"open within {timeout} s ({cycle})")
        stats.ready += 1
        if wait_frame > 0:
            iterate_until(lambda: cycle.frame, wait_frame)
        stats.frames += int(cycle.frame)
        session.disconnect()
        self.old_sessions.append(session)
        stats.closed += int(iterate_until(lambda: cycle.main_closed, timeout))
        stats.cycles += 1
        ctx = GLib.MainContext.default()
        while ctx.pending():
            ctx.iteration(False)

    def rpc_set_probes(self, points: list[tuple[int, int]] | None) -> None:
        """The points each display-invalidate event samples (its "probes");
        None: the quadrant centres again."""
        self.probe_points = [(int(x), int(y)) for x, y in points] if points else None

    def rpc_events(self, since: int) -> list[tuple[int, str, int, dict[str, Any]]]:
        return self.events[since:]

    def rpc_frame(self, channel: int) -> dict[str, Any] | None:
        p = self.primary.get(channel)
        if not p or not p["data"]:
            return None
        size = p["stride"] * p["height"]
        data = ctypes.string_at(p["data"], size)
        return dict(p, data=data, t_ns=time.monotonic_ns())

    def rpc_reset_on_close(self) -> int:
        """SO_LINGER 0 on every TCP socket of this process: closing them (the
        process dying) resets them (RST) instead of a FIN, as when the
        client's host drops off the network. Returns how many."""
        n = 0
        for name in os.listdir("/proc/self/fd"):
            try:
                sock = socket.socket(fileno=os.dup(int(name)))
            except OSError:
                continue            # not a socket
            with sock:
                if sock.family in (socket.AF_INET, socket.AF_INET6) \
                        and sock.type == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    n += 1
        return n

    def rpc_disconnect(self) -> None:
        if self.session is not None:
            self.session.disconnect()
            self.add("session-disconnect")


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    conn = Connection(fd)
    loop = GLib.MainLoop()
    state = ClientState(loop)

    def on_request(_fd: int, cond: GLib.IOCondition) -> bool:
        if _rpc.answer(conn, state):
            return True
        loop.quit()
        return False

    GLib.io_add_watch(fd, GLib.PRIORITY_DEFAULT,
                      GLib.IOCondition.IN | GLib.IOCondition.HUP, on_request)
    loop.run()
    if state.session is not None:
        state.session.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
