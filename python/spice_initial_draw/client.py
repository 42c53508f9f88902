"""A real spice client: Debian's spice-gtk (SpiceClientGLib 2.0 via GI), one
subprocess per client, each with its own GLib main loop."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from . import _rpc
from .codecs import CODEC_TYPES
from .errors import ClientError
from .frames import Frame

CODECS = tuple(CODEC_TYPES)


@dataclass(frozen=True)
class ClientEvent:
    """Something the client saw; t_ns is CLOCK_MONOTONIC (as the shim's)."""

    t_ns: int
    name: str
    channel: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def t(self) -> float:
        return self.t_ns / 1e9


class Client:
    """spice-gtk connected to host:port.

    codec: force the display channel's preferred video codec ("mjpeg",
    "vp8", "vp9", "h264", "h265") once the channel is up, or None.
    unix_path: connect to that unix socket instead of host:port (a local
    client, Server(unix_path=...)); gl: the session's "gl-scanout" property
    (spice-gtk then advertises SPICE_DISPLAY_CAP_GL_SCANOUT; the server
    treats the client as a GL client only on a unix socket); None leaves
    spice-gtk's default.
    connect=False: start the client process without a session (for cycle(),
    or connect() later: several clients then connect at once).
    tls_port, ca_file, password: as remote-viewer's
    spice://host?port=...&tls-port=... --spice-ca-file=... and its password
    prompt; port 0: TLS only.
    all_channels: connect the cursor and inputs channels too, as
    remote-viewer does (by default only the display channel is connected);
    a seamless migration needs it: spice-gtk follows one only once every
    channel of its session has migrated.
    """

    def __init__(self, host: str, port: int, codec: str | None = None,
                 env: dict[str, str] | None = None,
                 unix_path: str | None = None, gl: bool | None = None,
                 connect: bool = True, tls_port: int = 0,
                 ca_file: str | None = None, password: str | None = None,
                 all_channels: bool = False) -> None:
        if codec is not None and codec not in CODECS:
            raise ValueError(f"codec {codec!r}: use one of {CODECS} or None")
        self.host, self.port, self.codec = host, port, codec
        self.unix_path, self.gl = unix_path, gl
        self.all_channels = all_channels
        self.auth = {"tls_port": tls_port, "ca_file": ca_file, "password": password}
        self._events: list[ClientEvent] = []
        self._ended = False   # close() or vanish() ended the process
        self.vanished = False  # vanish() killed it (status -SIGKILL, expected)
        self._worker = _rpc.WorkerProcess("spice_initial_draw._client_worker",
                                          [], env=env)
        self.t_connect = time.monotonic()
        self._connected = connect
        if connect:
            self._call("connect", host, port, codec, unix_path, gl, self.auth,
                       all_channels)

    @classmethod
    def for_server(cls, server: Any, codec: str | None = None,
                   **kwargs: Any) -> "Client":
        """Client of a Server; codec defaults to the server's first codec;
        a server on a unix socket is reached there; a secured server's TLS
        port, CA and password are the defaults."""
        if codec is None:
            first = server.codecs.split(";")[0]
            codec = first.split(":", 1)[1] if ":" in first else None
        if getattr(server, "unix_path", None) is not None:
            kwargs.setdefault("unix_path", server.unix_path)
        security = getattr(server, "security", None)
        if security is not None:
            if security.tls is not None:
                kwargs.setdefault("tls_port", server.tls_port)
                kwargs.setdefault("ca_file", security.tls.ca_file)
            kwargs.setdefault("password", security.password)
        return cls(server.host, server.port, codec, **kwargs)

    def connect(self) -> None:
        """Open the session of a Client(connect=False)."""
        if self._connected:
            raise ClientError("this client is connected already")
        self.t_connect = time.monotonic()
        self._call("connect", self.host, self.port, self.codec,
                   self.unix_path, self.gl, self.auth, self.all_channels)
        self._connected = True

    def cycle(self, count: int, wait_frame: float = 0.0,
              timeout: float = 10.0) -> dict[str, Any]:
        """Run `count` short sessions to host:port in this client's
        process, one after the other: connect, display channel open (then
        up to `wait_frame` s for a stream frame), disconnect, all channels
        gone.  Much cheaper than `count` Client()s.  Returns
        {cycles, ready, frames, closed, seconds}."""
        return self._call("cycle", count, self.host, self.port, self.codec,
                          wait_frame, timeout)

    def gl_scanouts(self, channel: int = 0) -> list[ClientEvent]:
        """GL_SCANOUT_UNIX messages seen (the "gl-scanout" property)."""
        return self.events("gl-scanout", channel)

    def gl_draws(self, channel: int = 0) -> list[ClientEvent]:
        """GL_DRAW messages seen (the "gl-draw" signal)."""
        return self.events("gl-draw", channel)

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return self._worker.call(method, *args)
        except _rpc.WorkerDied:
            rc = self._worker.wait(5)
            raise ClientError(
                f"spice-gtk client process died (status {rc}) during "
                f"{method}(); its last output:\n{self._worker.stderr_tail()}"
            ) from None
        except _rpc.RpcError as e:
            raise ClientError(f"client {method}: {e.message}") from None

    # -- events ---------------------------------------------------------------
    def events(self, name: str | None = None,
               channel: int | None = None) -> list[ClientEvent]:
        """What the client saw so far (optionally one event name, one
        channel).  ClientError, with the exit status and its last output, if
        the client process died on its own (not by close() or vanish())."""
        rc = self._worker.proc.poll()
        if rc is not None and not self._ended:
            raise ClientError(
                f"the spice-gtk client process {self._worker.proc.pid} is dead "
                f"(status {rc}); its last output:\n{self._worker.stderr_tail()}")
        if rc is None:
            for t, n, ch, info in self._call("events", len(self._events)):
                self._events.append(ClientEvent(t, n, ch, info))
        return [e for e in self._events
                if (name is None or e.name == name)
                and (channel is None or e.channel == channel)]

    def stream_frames(self, channel: int = 0) -> list[ClientEvent]:
        """display-invalidate events caused by decoded stream frames."""
        return [e for e in self.events("display-invalidate", channel)
                if e.info.get("stream")]

    def frames_received(self, channel: int = 0) -> int:
        """Stream frames decoded (shown) so far."""
        return len(self.stream_frames(channel))

    def frames_arrived(self, channel: int = 0) -> int:
        """Stream frames the channel received so far: decoded, or dropped
        by spice-gtk as late (the highest frame index seen)."""
        indexes = [int(e.info["index"]) for e in self.events(channel=channel)
                   if "index" in e.info]
        return max(indexes, default=0)

    def frame_showing(self, probes_match: Any, channel: int = 0) -> ClientEvent | None:
        """The first decoded stream frame whose quadrant probes satisfy
        probes_match(probes) (e.g. assertions.probe_matches for an
        image): its display-invalidate event, with info["index"] the
        frame's number among those the channel received (1: the
        session's first frame, dropped ones counted); None if none yet."""
        for e in self.stream_frames(channel):
            if probes_match(e.info.get("probes", [])):
                return e
        return None

    def stream_codec(self, channel: int = 0) -> str | None:
        """Codec of the video stream, from spice-gtk's decoder pipeline
        (a GStreamer decoder element; spice-gtk's built-in MJPEG decoder has
        none, so a stream with no GStreamer decoder is reported as mjpeg)."""
        if not self.events("stream-create", channel):
            return None
        for e in self.events("gst-element", channel):
            if e.info.get("codec"):
                return str(e.info["codec"])
        return "mjpeg" if not self.events("gst-element", channel) else None

    def _wait(self, pred: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = pred()
            if result:
                return result
            if self._worker.proc.poll() is not None:
                raise ClientError(f"client process exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"client: no {what} within {timeout} s")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 10.0, channel: int = 0) -> ClientEvent:
        """Wait until the display channel is open (codec preference sent).
        ClientError at once if the session ends first: the server refused
        the connection or closed it (or died)."""
        def ready() -> list[ClientEvent]:
            opened = self.events("display-ready", channel)
            ended = self.session_end()
            if not opened and ended is not None:
                raise ClientError(f"client: the session ended before the display channel "
                                  f"opened ({ended.name} {ended.info})")
            return opened
        return self._wait(ready, timeout, "display channel")[0]

    def session_end(self) -> ClientEvent | None:
        """The event that ended the client's session, if it ended: its
        main channel closed or failed (connect, link, TLS, I/O)."""
        for e in self.events():
            if e.name == "session-closed" or (
                    e.name == "channel-event" and e.info.get("type") == "MainChannel"
                    and str(e.info.get("event", "")).startswith("error")):
                return e
        return None

    def wait_primary(self, timeout: float = 10.0, channel: int = 0) -> ClientEvent:
        return self._wait(lambda: self.events("display-primary-create", channel),
                          timeout, "display-primary-create")[-1]

    def wait_migrated(self, timeout: float = 10.0) -> ClientEvent:
        """Wait until the client followed a migration (its migration state
        is back to none)."""
        return self._wait(lambda: [e for e in self.events("migration-state")
                                   if e.info["state"] == "none"],
                          timeout, "end of the migration")[0]

    def wait_frames(self, count: int = 1, timeout: float = 10.0,
                    channel: int = 0) -> list[ClientEvent]:
        """Wait until `count` stream frames have been decoded."""
        return self._wait(
            lambda: (f if len(f := self.stream_frames(channel)) >= count else None),
            timeout, f"{count} stream frame(s)")

    def no_frame_within(self, window: float, channel: int = 0) -> bool:
        """Watch for `window` seconds; True if no stream frame arrived."""
        try:
            self.wait_frames(1, window, channel)
            return False
        except TimeoutError:
            return True

    # -- pixels -----------------------------------------------------------------
    def set_probes(self, points: list[tuple[int, int]] | None) -> None:
        """The surface points each display-invalidate event samples from
        now on: its info["probes"] holds their RGB as that frame left the
        surface (patterns.number_probes() for numbered frames); None: the
        quadrant centres (the default)."""
        self._call("set_probes", points)

    def frame(self, channel: int = 0) -> Frame | None:
        """Snapshot of the primary surface (None before display-primary-create)."""
        d = self._call("frame", channel)
        if d is None:
            return None
        return Frame(d["width"], d["height"], d["stride"], d["format"],
                     d["data"], d["t_ns"])

    # -- lifetime -----------------------------------------------------------------
    def disconnect(self, timeout: float = 5.0) -> None:
        """spice_session_disconnect and wait for the main channel to close."""
        if self._worker.proc.poll() is not None or not self._connected:
            return
        self._call("disconnect")
        try:
            self._wait(lambda: self.events("session-closed")
                       or self.events("channel-destroy"), timeout,
                       "session close")
        except TimeoutError:
            pass

    def vanish(self, timeout: float = 5.0) -> int:
        """The client vanishes without a goodbye: its TCP sockets are reset
        (SO_LINGER 0, then SIGKILL), as when its host drops off the network.
        The server's next write to it fails at once. Returns how many
        sockets were reset (0 if the server had closed them already)."""
        reset = self._call("reset_on_close")
        self._ended = self.vanished = True
        self._worker.proc.kill()
        if self._worker.wait(timeout) is None:
            raise ClientError(f"the client process {self._worker.proc.pid} "
                              f"survived SIGKILL for {timeout} s")
        self._connected = False
        return reset

    def close(self) -> int | None:
        """Disconnect and end the process; returns its exit status (0: it
        exited cleanly; see exit_problem())."""
        if self._ended:
            return self._worker.close()
        try:
            self.disconnect()
        except ClientError:
            pass
        self._ended = True
        return self._worker.close()

    def exit_problem(self) -> str | None:
        """After close(): how the process ended badly (a signal, a non-zero
        status), with its last output; None if it exited with 0 or
        vanish() killed it."""
        rc = self._worker.proc.poll()
        if rc == 0 or self.vanished:
            return None
        return (f"the spice-gtk client process {self._worker.proc.pid} ended with "
                f"status {rc}; its last output:\n{self._worker.stderr_tail()}")

    def suspend(self, seconds: float) -> tuple[int, int]:
        """The client stalls: its process is stopped (SIGSTOP) for `seconds`,
        so its main loop reads, decodes and shows nothing, then continued
        (SIGCONT), as when a laptop's viewer stalls.  Returns when it was
        stopped and continued (CLOCK_MONOTONIC ns).  Blocks; call it from
        another thread to stall the client while the guest draws."""
        pid = self._worker.proc.pid
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic_ns()
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return stopped, time.monotonic_ns()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
