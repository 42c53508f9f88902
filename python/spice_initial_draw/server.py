"""Parent-side API of a shim server running in its own process."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from . import _rpc
from ._abi import MISUSE_RACE, MISUSE_USE_AFTER_FREE, RAW_MAX_PLANES, FdKind, Status
from .drm import DRM_FORMAT_MOD_INVALID, DRM_FORMAT_XRGB8888
from .errors import DrawTimeout, ServerCrashed, ShimError, for_status
from .events import CHANNEL_TYPE_DISPLAY, ChannelEvent, Event, EventKind
from .patterns import Image, Rect, bars, quadrants
from .security import Security

PATTERNS = {"quadrants": quadrants, "bars": bars}

HOST = "127.0.0.1"
# how the shim plays QEMU: a draw per Display.draw() call, or QEMU 10.1's
# remote GL mode (Display.update() counts, the refresh tick draws)
QEMU_DIRECT = "direct"
QEMU_10_1_REMOTE = "10.1-remote"


class Server:
    """A spice-server driven like QEMU, in a subprocess.

    Server(codecs="gstreamer:mjpeg", variant="patched", displays=1)
    The first usable codec must be a gstreamer:* one (the DMA-BUF path).
    qemu: QEMU_DIRECT (default: Display.draw() issues a draw, as QEMU
    before 10.1 with gl=on) or QEMU_10_1_REMOTE (QEMU 10.1's remote GL
    mode: Display.update() counts guest updates and a refresh tick, every
    1000 / max_refresh_rate ms, draws the whole surface when updates are
    pending and no draw is outstanding; codecs default to gstreamer:h264,
    as QEMU sets them).
    unix_path: listen on that unix socket only, no TCP port (QEMU's
    -spice unix=on,addr=PATH, which gl=on needs); local GL clients
    (Client(..., unix_path=..., gl=True)) get the scanout itself.
    security: TLS port, ticket, plain port (security.Security); the TLS
    port is tls_port, port is 0 when only TLS listens.
    command_prefix: run the server process under this command (e.g.
    ["valgrind", "--tool=callgrind", ...] for the benchmarks).
    seamless_migration: QEMU's -spice seamless-migration=on (off by
    default, as QEMU); incoming: a migration target (QEMU's -incoming): the
    VM does not run until set_running(True).  The source side of a
    migration: migrate_info(target), migrate_start(), set_running(False),
    migrate_end() (sid_migrate.c).
    """

    def __init__(self, codecs: str | None = None,
                 variant: str = "patched", displays: int = 1,
                 env: dict[str, str] | None = None,
                 command_prefix: list[str] | None = None,
                 unix_path: str | None = None,
                 security: Security | None = None,
                 qemu: str = QEMU_DIRECT, max_refresh_rate: int = 30,
                 seamless_migration: bool = False, incoming: bool = False) -> None:
        if qemu not in (QEMU_DIRECT, QEMU_10_1_REMOTE):
            raise ValueError(f"qemu={qemu!r}: use {QEMU_DIRECT!r} (a draw per call) or "
                             f"{QEMU_10_1_REMOTE!r} (draws from the refresh tick)")
        if security is not None and unix_path is not None:
            raise ValueError("security applies to TCP ports, not to unix_path")
        if codecs is None:   # QEMU 10.1 sets gstreamer:h264 in remote GL mode
            codecs = "gstreamer:h264" if qemu == QEMU_10_1_REMOTE else "gstreamer:mjpeg"
        self.codecs = codecs
        self.qemu = qemu
        self.unix_path = unix_path
        self.variant = variant
        self.n_displays = displays
        self._events: list[Event] = []
        self._closed = False
        self._destroyed = False
        # why the test expects this process to die (expect_death), or None
        self.death_expected: str | None = None
        self._worker = _rpc.WorkerProcess(
            "spice_initial_draw._server_worker", [variant], env=env,
            prefix=command_prefix)
        self.pid = self._worker.proc.pid
        self.library: str = self._call("info")["library"]
        self.security = security
        self.tls_port = 0
        self.seamless_migration, self.incoming = seamless_migration, incoming
        if seamless_migration or incoming:
            self.port = self._call("start", codecs, displays, unix_path,
                                   None if security is None else security.as_args(),
                                   {"seamless": seamless_migration, "incoming": incoming})
            self.tls_port = self._call("tls_port")
        elif security is not None:
            self.port = self._call("start", codecs, displays, None, security.as_args())
            self.tls_port = self._call("tls_port")
        elif unix_path is None:
            self.port: int = self._call("start", codecs, displays)
        else:   # QEMU's -spice unix=on,addr=PATH (gl=on): no TCP port
            self.port = self._call("start", codecs, displays, unix_path)
        self.max_refresh_rate = max_refresh_rate
        if qemu == QEMU_10_1_REMOTE:
            self._call("set_refresh_rate", max_refresh_rate)

    # -- plumbing ---------------------------------------------------------
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._worker.call(method, *args, **kwargs)
        except _rpc.WorkerDied:
            raise self._crash_error(f"server process died during {method}()") from None
        except _rpc.RpcError as e:
            if e.status is None:
                raise ShimError(f"{method}: {e}") from None
            raise for_status(Status(e.status), e.message) from None

    def _crash_error(self, what: str) -> ServerCrashed:
        rc = self._worker.wait(5)
        sig = None
        if rc is not None and rc < 0:
            try:
                sig = signal.Signals(-rc).name
            except ValueError:
                sig = f"signal {-rc}"
        tail = self._worker.stderr_tail()
        how = f"killed by {sig}" if sig else f"exit status {rc}"
        return ServerCrashed(
            f"{what} ({how}, variant {self.variant!r}); its last output:\n"
            f"{tail}", rc, sig, tail)

    # -- properties ---------------------------------------------------------
    @property
    def host(self) -> str:
        return HOST

    @property
    def uri(self) -> str:
        if self.unix_path is not None:
            return f"spice+unix://{self.unix_path}"
        return f"spice://{HOST}:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self._worker.proc.poll()

    def alive(self) -> bool:
        return self._worker.proc.poll() is None

    def check_alive(self) -> None:
        """Raise ServerCrashed if the server process has died."""
        if not self.alive():
            raise self._crash_error("server process died")

    def expect_death(self, reason: str) -> None:
        """The test declares that this process dying (a signal, a non-zero
        exit, a hang at close) is its expected outcome, for `reason` (stock
        0.16.0's crash that the test asserts): the fixtures then accept it.
        Without it, a server that died during or after the test fails it."""
        self.death_expected = reason

    def exit_problem(self) -> str | None:
        """After close(): what was wrong with how the process ended (killed
        by a signal, a non-zero exit status, killed after a hang at close),
        with its last output; None when it exited cleanly (status 0)."""
        rc = self._worker.proc.poll()
        if rc == 0:
            return None
        if rc is None:
            return f"the server process {self.pid} ({self.variant}) is still running"
        return str(self._crash_error(f"the server process {self.pid} ended badly"))

    def video_codecs(self) -> str:
        """The video codecs spice-server uses, as it reports them
        (spice_server_get_video_codecs: "gstreamer:h264;..."), which is what
        it took of the codecs it was given."""
        return str(self._call("video_codecs"))

    def info(self) -> dict[str, Any]:
        return dict(self._call("info"), port=self.port, codecs=self.codecs)

    # -- displays -------------------------------------------------------------
    def display(self, index: int) -> "Display":
        if not 0 <= index < self.n_displays:
            raise IndexError(f"display {index}: the server has "
                             f"{self.n_displays} display(s); pass displays=N "
                             "to Server()")
        return Display(self, index)

    # -- event log ----------------------------------------------------------
    def events(self, kind: EventKind | None = None) -> list[Event]:
        """The shim's event log so far (optionally only one kind); final
        after destroy(), and after close() once the process exited with
        status 0.  ServerCrashed, with the exit status and the last output,
        if the process died otherwise: its log is not the log of a live
        server."""
        if not self.alive() and not (self._closed and self.returncode == 0):
            raise self._crash_error("the server process is dead: its event log "
                                    "ends where it died")
        if self.alive() and not self._destroyed:
            for raw in self._call("events", len(self._events)):
                t, k, d, ck, a, b, c, dd, text = raw
                self._events.append(Event(t, EventKind(k), d, ck, a, b, c, dd, text))
        return [e for e in self._events if kind is None or e.kind == kind]

    def display_connections(self) -> set[int]:
        """The connection ids of the clients whose display channel the
        server has now (linked, not yet disconnected), by its channel
        events (CONNECTED comes before the link: it has no channel type)."""
        live: set[int] = set()
        for e in self.events(EventKind.CHANNEL):
            if e.b != CHANNEL_TYPE_DISPLAY:
                continue
            if e.a == ChannelEvent.INITIALIZED:
                live.add(e.d)
            elif e.a == ChannelEvent.DISCONNECTED:
                live.discard(e.d)
        return live

    def fatal_errors(self) -> list[Event]:
        return self.events(EventKind.FATAL)

    def wait_event(self, kind: EventKind, count: int = 1,
                   timeout: float = 10.0) -> list[Event]:
        """Wait until `count` events of `kind` are in the log."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(kind)
            if len(found) >= count:
                return found
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{count} {kind.name} event(s) expected within {timeout} s,"
                    f" got {len(found)}")
            time.sleep(0.02)

    # -- output -----------------------------------------------------------------
    def output_mark(self) -> int:
        """A mark in the server process's output (its stderr, where
        spice-server's g_log warnings go), for output(since=mark)."""
        return self._worker.stderr_size()

    def output(self, since: int = 0) -> str:
        """What the server process printed (spice-server's warnings, the
        shim's own warnings), from `since` (an output_mark())."""
        return self._worker.stderr_text(since)

    def set_ticket(self, password: str | None, lifetime: int = 0) -> None:
        """QEMU's set_password (lifetime 0) and expire_password: the ticket a
        client must present from now on; None: none is valid."""
        self._call("set_ticket", password, lifetime)

    # -- migration (QEMU's ui/spice-core.c) ----------------------------------
    def migrate_info(self, target: "Server", subject: str | None = None) -> None:
        """The monitor's client_migrate_info to `target`
        (spice_server_migrate_connect): the clients connect to the target;
        MIGRATE_CONNECTED is logged once they did (or gave up)."""
        self._call("migrate_info", target.host, target.port, target.tls_port, subject)

    def migrate_start(self) -> None:
        """The migration's setup (spice_server_migrate_start)."""
        self._call("migrate_start")

    def migrate_end(self, completed: bool = True) -> None:
        """The migration completed or failed (spice_server_migrate_end);
        MIGRATE_END_DONE is logged once spice is done with the clients."""
        self._call("migrate_end", completed)

    def set_running(self, running: bool) -> None:
        """The VM's run state: spice_server_vm_start / vm_stop (the source
        stops before migrate_end; the target starts once loaded)."""
        self._call("set_running", running)

    # -- file descriptors -----------------------------------------------------
    def fds(self) -> dict[int, str]:
        """The server process's open fds: {fd: readlink target}."""
        out: dict[int, str] = {}
        base = f"/proc/{self.pid}/fd"
        for name in os.listdir(base):
            try:
                out[int(name)] = os.readlink(f"{base}/{name}")
            except OSError:
                continue
        return out

    def memfds(self, prefix: str = "sid-scanout") -> dict[int, str]:
        """The scanout memfds the server process holds (the shim's own copy
        is closed right after each scanout call, as QEMU's dup())."""
        return {fd: t for fd, t in self.fds().items()
                if t.startswith(f"/memfd:{prefix}")}

    # -- resources -------------------------------------------------------------
    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process, all its threads."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        """Resident memory of the server process, KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no VmRSS in /proc/{self.pid}/status")

    # -- lifetime -------------------------------------------------------------
    def crash(self, signum: int = signal.SIGSEGV) -> None:
        """Test hook: kill the server process with a signal."""
        try:
            self._worker.call("crash", int(signum))
        except _rpc.WorkerDied:
            pass
        self._worker.wait(5)   # dead, and reaped, when this returns

    def misuse_memory(self, what: str) -> None:
        """Test hook, the sanitizers' positive control: "race" makes QEMU's
        thread and another write one buffer unordered (TSan must report a
        data race); "use-after-free" makes QEMU's thread write a freed block
        (ASan must report it, and aborts the process: ServerCrashed)."""
        kind = {"race": MISUSE_RACE, "use-after-free": MISUSE_USE_AFTER_FREE}[what]
        self._call("misuse_memory", int(kind))

    def destroy(self) -> None:
        """QEMU's exit, spice's side of it: spice_server_vm_stop() and
        spice_server_destroy(), which destroys each QXL instance
        (red_qxl_destroy: the worker is told to close, joined, and its
        display channel closed); then the shim frees its displays.  The
        server process stays up, so that what it still holds can be
        inspected (fds(), memfds(), a Races ledger) before close().  The
        event log is final (read just before the destroy); the displays
        take no more calls."""
        if self._destroyed:
            return
        self.events()
        self._call("stop")
        self._destroyed = True

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    def close(self) -> int | None:
        """Stop the server; returns the process exit status."""
        if self._closed:
            return self._worker.proc.returncode
        self._closed = True
        if self.alive() and not self._destroyed:
            try:
                self.events()
                self._worker.call("stop")
            except (_rpc.WorkerDied, _rpc.RpcError):
                pass
        return self._worker.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Server(codecs={self.codecs!r}, variant={self.variant!r}, "
                f"port={self.port}, pid={self.pid})")


@dataclass
class DrawHandle:
    """An outstanding spice_qxl_gl_draw_async (one cookie)."""

    server: Server
    display: int
    cookie: int
    t_issued: float

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for async_complete with this draw's cookie."""
        ret = self.server._call("wait_draw", self.display, self.cookie,
                                int(timeout * 1000))
        status = Status(ret)
        if status == Status.OK:
            return
        if status == Status.TIMEOUT:
            raise DrawTimeout(
                f"display {self.display}: draw {self.cookie:#x} not completed "
                f"within {timeout} s (spice-server never called async_complete;"
                " a stock build with no encoder or a stuck client does this)")
        raise for_status(status, f"wait for draw {self.cookie:#x}")

    def done(self) -> bool:
        try:
            self.wait(0)
            return True
        except DrawTimeout:
            return False

    def completion(self) -> Event | None:
        for e in self.server.events(EventKind.DRAW_DONE):
            if e.cookie == self.cookie:
                return e
        return None


class Display:
    """One QXL instance (a QEMU GL console) of a Server."""

    def __init__(self, server: Server, index: int) -> None:
        self.server = server
        self.index = index
        self.width = 0
        self.height = 0

    def scanout(self, image: Image | bytes | str = "quadrants",
                width: int | None = None, height: int | None = None,
                stride: int | None = None, fourcc: int = DRM_FORMAT_XRGB8888,
                y0_top: bool = False) -> None:
        """spice_qxl_gl_scanout from a memfd holding the image.

        `image` is an Image, raw bytes, or a pattern name ("quadrants",
        "bars") drawn at width x height (default 1920x1080)."""
        data, w, h, s, fourcc = _resolve(image, width, height, stride, fourcc)
        self.server._call("scanout", self.index, data, w, h, s, fourcc, y0_top)
        self.width, self.height = w, h

    def rewrite_on_complete(self, image: Image | bytes | str,
                            width: int | None = None, height: int | None = None) -> None:
        """Test hook, a guest reusing its buffer: once the next draw
        completes, the shim writes `image` into the buffer of the scanout
        current then, inside async_complete.  Call it before that scanout;
        one-shot.  Anything that reads the buffer after completion then sees
        `image`."""
        data = _resolve(image, width, height, None, DRM_FORMAT_XRGB8888)[0]
        self.server._call("rewrite_on_complete", self.index, data)

    def keep_buffer(self) -> None:
        """A guest that renders into its own buffer: from the next scanout
        on, the shim keeps that scanout's memfd (QEMU keeps the guest's
        dmabuf), and paint() fills rectangles of it in place."""
        self.server._call("keep_buffer", self.index)

    def paint(self, rects: list[Rect]) -> None:
        """The guest renders: fill each (x, y, w, h, colour) of the kept
        buffer (keep_buffer()), clipped to the scanout.  Paint between a
        draw's completion and the next draw, as a guest does."""
        flat: list[int] = []
        for x, y, w, h, (r, g, b) in rects:
            flat += [x, y, w, h, 0xFF000000 | r << 16 | g << 8 | b]
        self.server._call("paint", self.index, flat)

    def scanout_planes(self, data: bytes, width: int, height: int,
                       offsets: list[int], strides: list[int], fourcc: int,
                       modifier: int = DRM_FORMAT_MOD_INVALID, y0_top: bool = False,
                       separate_fds: bool = False) -> None:
        """spice_qxl_gl_scanout2 (multi-plane; modifier default
        DRM_FORMAT_MOD_INVALID)."""
        if len(offsets) != len(strides) or not 1 <= len(offsets) <= 4:
            raise ValueError("offsets and strides need the same length, 1..4")
        self.server._call("scanout2", self.index, data, width, height,
                          list(offsets), list(strides), fourcc, modifier,
                          y0_top, separate_fds)
        self.width, self.height = width, height

    def scanout_disable(self, qemu_10_1: bool | None = None) -> None:
        """QEMU disables the scanout, as QEMU calls spice: before 10.1,
        spice_qxl_gl_scanout with fd -1 and 0x0; QEMU 10.1 (qemu_10_1),
        spice_qxl_gl_scanout2 with 0 planes, NULL arrays, 0x0,
        DRM_FORMAT_INVALID and DRM_FORMAT_MOD_INVALID.  By default, as the
        QEMU the server plays: QEMU 10.1's in QEMU_10_1_REMOTE mode, the
        older one in QEMU_DIRECT mode (QEMU before 10.1)."""
        if qemu_10_1 is None:
            qemu_10_1 = self.server.qemu == QEMU_10_1_REMOTE
        self.server._call("scanout_disable", self.index, qemu_10_1)
        self.width = self.height = 0

    def scanout_raw(self, *, width: int, height: int, stride: int,
                    fourcc: int = DRM_FORMAT_XRGB8888,
                    fd: "int | str" = "memfd", memfd_size: int | None = None,
                    data: bytes = b"", num_planes: int | None = None,
                    planes: "list[tuple[int | str, int, int]] | None" = None,
                    scanout2: bool = False,
                    modifier: int = DRM_FORMAT_MOD_INVALID,
                    y0_top: bool = False) -> None:
        """A scanout with fields exactly as a device model could pass them,
        unchecked (bad-input tests).

        fd: "memfd" (a memfd of memfd_size bytes, default stride*height,
        holding `data`), "closed" (a number that is not open), "pipe",
        "socket" (not mappable), or an int passed as is (e.g. -1).
        planes: [(fd, offset, stride), ...] for scanout2 (default one plane
        from fd/stride); num_planes: the count passed to spice (default
        len(planes), may be 0 or more than 4).  All "memfd" planes share one
        memfd.  scanout2=False calls spice_qxl_gl_scanout (plane 0 only)."""
        kinds = {"memfd": FdKind.MEMFD, "closed": FdKind.CLOSED,
                 "pipe": FdKind.PIPE, "socket": FdKind.SOCKET}
        if planes is None:
            planes = [(fd, 0, stride)]
        if not 1 <= len(planes) <= RAW_MAX_PLANES:
            raise ValueError(f"planes: 1..{RAW_MAX_PLANES} slots")
        fd_kinds, raw_fds = [], []
        for pfd, _, _ in planes:
            if isinstance(pfd, int):
                fd_kinds.append(FdKind.VALUE)
                raw_fds.append(pfd)
            elif pfd in kinds:
                fd_kinds.append(kinds[pfd])
                raw_fds.append(-1)
            else:
                raise ValueError(f"fd {pfd!r}: use an int or one of {sorted(kinds)}")
        if memfd_size is None:
            memfd_size = stride * height
        n = len(planes) if num_planes is None else num_planes
        self.server._call("scanout_raw", self.index, scanout2, bytes(data),
                          memfd_size, fd_kinds, raw_fds,
                          [p[1] for p in planes], [p[2] for p in planes], n,
                          width, height, fourcc, modifier, y0_top)
        self.width, self.height = width, height

    def draw(self, x: int = 0, y: int = 0, w: int | None = None,
             h: int | None = None) -> DrawHandle:
        """spice_qxl_gl_draw_async of a rectangle (default: whole scanout)."""
        w = self.width - x if w is None else w
        h = self.height - y if h is None else h
        t = time.monotonic()
        cookie = self.server._call("draw", self.index, x, y, w, h)
        return DrawHandle(self.server, self.index, cookie, t)

    def update(self) -> None:
        """QEMU 10.1 remote mode: the guest updated its display
        (spice_gl_update); the next refresh tick draws it, once, whatever
        the number of updates since the last tick (wait_draw())."""
        self.server._call("update", self.index)

    def wait_draw(self, count: int = 1, timeout: float = 10.0) -> DrawHandle:
        """The count-th draw of this display (in QEMU 10.1 remote mode, the
        refresh tick's), once issued; its wait() waits for the completion."""
        deadline = time.monotonic() + timeout
        while True:
            draws = [e for e in self.server.events(EventKind.DRAW) if e.display == self.index]
            if len(draws) >= count:
                e = draws[count - 1]
                return DrawHandle(self.server, self.index, e.cookie, e.t_ns / 1e9)
            if time.monotonic() > deadline:
                raise DrawTimeout(f"display {self.index}: {len(draws)} draw(s) within "
                                  f"{timeout} s, waited for draw {count} (no guest update, "
                                  "or not in QEMU 10.1 remote mode?)")
            time.sleep(0.01)

    def draw_pending(self) -> bool:
        return bool(self.server._call("draw_pending", self.index))

    def inject_async_complete(self, cookie: int) -> None:
        """Test hook: call QXLInterface.async_complete as spice would."""
        self.server._call("fake_complete", self.index, cookie)


def _resolve(image: Image | bytes | str, width: int | None,
             height: int | None, stride: int | None,
             fourcc: int) -> tuple[bytes, int, int, int, int]:
    if isinstance(image, str):
        try:
            maker = PATTERNS[image]
        except KeyError:
            raise ValueError(f"unknown pattern {image!r}; use one of "
                             f"{sorted(PATTERNS)} or pass an Image") from None
        image = maker(width or 1920, height or 1080)
    if isinstance(image, Image):
        return image.data, image.width, image.height, image.stride, image.fourcc
    if width is None or height is None:
        raise ValueError("raw bytes need width and height")
    return bytes(image), width, height, stride or width * 4, fourcc
