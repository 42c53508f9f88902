"""Subprocess running one shim server: `python -m
spice_initial_draw._server_worker FD VARIANT`.  Answers RPCs from
server.Server over FD.  A crash of spice-server kills only this process."""
from __future__ import annotations

import os
import sys
from typing import Any

from . import _rpc, variants
from ._abi import Status


class ShimCallFailed(Exception):
    """A shim call returned an error; `status` crosses the RPC with it."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class Handlers:
    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.preloaded = variants.preload(variant)
        _shim = variants.load_shim(variant)
        self.ffi = _shim.ffi
        self.lib = _shim.lib
        self.srv: Any = None
        self.err = self.ffi.new("char[512]")
        loaded = os.path.realpath(self.library_path())
        if self.preloaded and loaded != os.path.realpath(self.preloaded):
            raise RuntimeError(
                f"variant {variant!r}: wanted {self.preloaded} but the shim "
                f"uses {loaded}")

    def library_path(self) -> str:
        return self.ffi.string(self.lib.sid_spice_library_path()).decode()

    def _error(self) -> str:
        return self.ffi.string(self.err).decode(errors="replace")

    def _check(self, ret: int, what: str) -> None:
        if ret != Status.OK:
            raise ShimCallFailed(Status(ret), f"{what}: {self._error()}")

    def rpc_info(self) -> dict[str, Any]:
        return {"variant": self.variant,
                "library": os.path.realpath(self.library_path()),
                "header_version": int(self.lib.sid_spice_header_version()),
                "pid": os.getpid()}

    def rpc_start(self, codecs: str, displays: int,
                  unix_path: str | None = None,
                  security: dict[str, Any] | None = None,
                  migration: dict[str, bool] | None = None) -> int:
        if migration is not None:
            mig = self.ffi.new("sid_migration *", migration)
            sec = self.ffi.NULL
            keep = []
            if security is not None:
                sec = self.ffi.new("sid_security *")
                for name, value in security.items():
                    if isinstance(value, str):
                        keep.append(self.ffi.new("char[]", value.encode()))
                        value = keep[-1]
                    if value is not None:
                        setattr(sec, name, value)
            self.srv = self.lib.sid_server_new_migratable(
                codecs.encode(), displays,
                self.ffi.NULL if unix_path is None else unix_path.encode(),
                sec, mig, self.err, len(self.err))
        elif security is not None:
            sec = self.ffi.new("sid_security *")
            keep = []   # the strings live as long as the call
            for name, value in security.items():   # sid_security's fields
                if isinstance(value, str):
                    keep.append(self.ffi.new("char[]", value.encode()))
                    value = keep[-1]
                if value is not None:
                    setattr(sec, name, value)
            self.srv = self.lib.sid_server_new_secure(codecs.encode(), displays, sec,
                                                      self.err, len(self.err))
        elif unix_path is None:
            self.srv = self.lib.sid_server_new(codecs.encode(), displays,
                                               self.err, len(self.err))
        else:
            self.srv = self.lib.sid_server_new_unix(
                codecs.encode(), displays, unix_path.encode(), self.err,
                len(self.err))
        if self.srv == self.ffi.NULL:
            raise ShimCallFailed(Status.SPICE, f"start: {self._error()}")
        return int(self.lib.sid_server_port(self.srv))

    def rpc_migrate_info(self, host: str, port: int, tls_port: int,
                         subject: str | None) -> None:
        subj = self.ffi.NULL if subject is None else subject.encode()
        self._check(self.lib.sid_server_migrate_info(self.srv, host.encode(), port,
                                                     tls_port, subj, self.err,
                                                     len(self.err)), "migrate_info")

    def rpc_migrate_start(self) -> None:
        self._check(self.lib.sid_server_migrate_start(self.srv, self.err,
                                                      len(self.err)), "migrate_start")

    def rpc_migrate_end(self, completed: bool) -> None:
        self._check(self.lib.sid_server_migrate_end(self.srv, completed, self.err,
                                                    len(self.err)), "migrate_end")

    def rpc_set_running(self, running: bool) -> None:
        self._check(self.lib.sid_server_set_running(self.srv, running, self.err,
                                                    len(self.err)), "set_running")

    def rpc_set_refresh_rate(self, rate: int) -> None:
        self._check(self.lib.sid_server_set_refresh_rate(self.srv, rate, self.err,
                                                         len(self.err)), "set_refresh_rate")

    def rpc_update(self, display: int) -> None:
        self._check(self.lib.sid_display_update(self.srv, display, self.err,
                                                len(self.err)), "update")

    def rpc_video_codecs(self) -> str:
        buf = self.ffi.new("char[]", 1024)
        n = self.lib.sid_server_video_codecs(self.srv, buf, len(buf))
        if n < 0:
            raise RuntimeError("video_codecs: the server is not started")
        return str(self.ffi.string(buf).decode())

    def rpc_tls_port(self) -> int:
        return int(self.lib.sid_server_tls_port(self.srv))

    def rpc_set_ticket(self, password: str | None, lifetime: int) -> None:
        pw = self.ffi.NULL if password is None else password.encode()
        self._check(self.lib.sid_server_set_ticket(self.srv, pw, lifetime, self.err,
                                                   len(self.err)), "set_ticket")

    def rpc_scanout(self, display: int, data: bytes, width: int, height: int,
                    stride: int, fourcc: int, y0_top: bool) -> None:
        self._check(self.lib.sid_display_scanout(
            self.srv, display, data, len(data), width, height, stride, fourcc,
            int(y0_top), self.err, len(self.err)), "scanout")

    def rpc_rewrite_on_complete(self, display: int, data: bytes) -> None:
        self._check(self.lib.sid_display_rewrite_on_complete(
            self.srv, display, data, len(data), self.err, len(self.err)),
            "rewrite_on_complete")

    def rpc_keep_buffer(self, display: int) -> None:
        self._check(self.lib.sid_display_keep_buffer(self.srv, display, self.err,
                                                     len(self.err)), "keep_buffer")

    def rpc_paint(self, display: int, rects: list[int]) -> None:
        self._check(self.lib.sid_display_paint(
            self.srv, display, self.ffi.new("uint32_t[]", rects), len(rects) // 5,
            self.err, len(self.err)), "paint")

    def rpc_scanout2(self, display: int, data: bytes, width: int, height: int,
                     offsets: list[int], strides: list[int], fourcc: int,
                     modifier: int, y0_top: bool, separate_fds: bool) -> None:
        n = len(offsets)
        self._check(self.lib.sid_display_scanout2(
            self.srv, display, data, len(data), width, height,
            self.ffi.new("uint32_t[]", offsets), self.ffi.new("uint32_t[]", strides),
            n, fourcc, modifier, int(y0_top), int(separate_fds),
            self.err, len(self.err)), "scanout2")

    def rpc_scanout_disable(self, display: int, qemu_10_1: bool) -> None:
        self._check(self.lib.sid_display_scanout_disable(
            self.srv, display, int(qemu_10_1), self.err, len(self.err)), "scanout_disable")

    def rpc_scanout_raw(self, display: int, use_scanout2: bool, data: bytes,
                        memfd_size: int, fd_kinds: list[int],
                        raw_fds: list[int], offsets: list[int],
                        strides: list[int], num_planes: int, width: int,
                        height: int, fourcc: int, modifier: int,
                        y0_top: bool) -> None:
        n = len(fd_kinds)
        self._check(self.lib.sid_display_scanout_raw(
            self.srv, display, int(use_scanout2), data, len(data), memfd_size,
            self.ffi.new("int32_t[]", fd_kinds),
            self.ffi.new("int32_t[]", raw_fds),
            self.ffi.new("uint32_t[]", offsets),
            self.ffi.new("uint32_t[]", strides), n, num_planes, width, height,
            fourcc, modifier, int(y0_top), self.err, len(self.err)),
            "scanout_raw")

    def rpc_draw(self, display: int, x: int, y: int, w: int, h: int) -> int:
        cookie = self.ffi.new("uint64_t *")
        self._check(self.lib.sid_display_draw(self.srv, display, x, y, w, h,
                                              cookie, self.err, len(self.err)),
                    "draw")
        return int(cookie[0])

    def rpc_wait_draw(self, display: int, cookie: int, timeout_ms: int) -> int:
        return int(self.lib.sid_display_wait_draw(self.srv, display, cookie,
                                                  timeout_ms))

    def rpc_draw_pending(self, display: int) -> bool:
        return bool(self.lib.sid_display_draw_pending(self.srv, display))

    def rpc_fake_complete(self, display: int, cookie: int) -> None:
        self.lib.sid_test_async_complete(self.srv, display, cookie)

    def rpc_events(self, since: int) -> list[tuple[Any, ...]]:
        out = []
        ev = self.ffi.new("sid_event *")
        n = self.lib.sid_log_count(self.srv)
        for i in range(since, n):
            if self.lib.sid_log_get(self.srv, i, ev) == 0:
                out.append((ev.t_ns, ev.kind, ev.display, ev.cookie, ev.a,
                            ev.b, ev.c, ev.d,
                            self.ffi.string(ev.text).decode(errors="replace")))
        return out

    def rpc_stop(self) -> None:
        if self.srv is not None:
            self.lib.sid_server_free(self.srv)
            self.srv = None

    def rpc_misuse_memory(self, what: int) -> None:
        """Test hook: the sanitizers' positive control (sid_shim.h)."""
        self.lib.sid_test_misuse_memory(self.srv, what)

    def rpc_crash(self, signum: int) -> None:
        """Test hook: die by a signal, as a crashing spice-server would."""
        os.kill(os.getpid(), signum)


def main(argv: list[str]) -> int:
    fd, variant = int(argv[1]), argv[2]
    handlers = Handlers(variant)
    try:
        _rpc.serve(fd, handlers)
    finally:
        handlers.rpc_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
