"""A tiny request/reply protocol over a socketpair between the parent and a
worker subprocess (pickled tuples, multiprocessing's framing)."""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from typing import Any


def send(conn: Connection, obj: Any) -> None:
    """conn.send(obj), pickled to bytes first.

    Connection.send() pickles into a BytesIO and sends a view of it
    (BytesIO.getbuffer()). When the send fails (the worker died: EPIPE),
    the frames in the OSError's traceback hold that view, and what is
    raised from the OSError keeps it (as __context__, even `from None`).
    Once such an exception is in a reference cycle (pytest.raises, a test
    keeping the error it caught), the garbage collector finalises the
    BytesIO while the view still exports its buffer: BytesIO.close() then
    raises BufferError, reported as an unraisable exception (CPython
    gh-111331). A bytes object has no such export; the framing is
    send()'s, so the other end's recv() reads it as before."""
    conn.send_bytes(pickle.dumps(obj))


class WorkerDied(Exception):
    """The worker process closed the connection (it exited or crashed)."""


class RpcError(Exception):
    """The worker raised an exception: its type name, its message, and its
    `status` attribute if it had one (a shim call's _abi.Status)."""

    def __init__(self, type_name: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.status = status


class WorkerProcess:
    """A `python -m MODULE FD ARGS...` subprocess answering call()s."""

    def __init__(self, module: str, args: list[str],
                 env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        """prefix: a command the worker runs under (e.g. ["valgrind",
        "--tool=callgrind"]); the worker's pid is then the prefix's."""
        parent, child = socket.socketpair()
        self.stderr_file = tempfile.TemporaryFile(prefix="sid-worker-")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            self.proc = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", module,
                 str(child.fileno()), *args],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                stdout=self.stderr_file, stderr=self.stderr_file,
                env=full_env)
        finally:
            child.close()
        self.conn = Connection(parent.detach())

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            send(self.conn, (method, args, kwargs))
            status, payload = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as e:
            raise WorkerDied(str(e)) from None
        if status == "ok":
            return payload
        raise RpcError(*payload)

    def stderr_text(self, start: int = 0) -> str:
        """What the worker printed (stdout and stderr) from byte `start`.
        pread: the file offset is shared with the worker, leave it alone."""
        fd = self.stderr_file.fileno()
        size = os.fstat(fd).st_size
        return os.pread(fd, max(0, size - start), start).decode("utf-8",
                                                                "replace")

    def stderr_size(self) -> int:
        """Bytes the worker has printed so far (a mark for stderr_text)."""
        return os.fstat(self.stderr_file.fileno()).st_size

    def stderr_tail(self, lines: int = 30) -> str:
        self.stderr_file.seek(0)
        text = self.stderr_file.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait(self, timeout: float = 10.0) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self, timeout: float = 10.0) -> int | None:
        """Ask the worker to exit, then kill it if it does not."""
        if self.proc.poll() is None:
            try:
                send(self.conn, ("exit", (), {}))
            except OSError:
                pass
            if self.wait(timeout) is None:
                self.proc.kill()
                self.wait(5)
        self.conn.close()
        return self.proc.returncode


def answer(conn: Connection, handlers: Any) -> bool:
    """Worker side: answer one request with handlers.rpc_<method>(...).
    False once the parent said 'exit' or went away."""
    try:
        method, args, kwargs = conn.recv()
    except (EOFError, OSError):
        return False
    if method == "exit":
        send(conn, ("ok", None))
        return False
    try:
        send(conn, ("ok", getattr(handlers, "rpc_" + method)(*args, **kwargs)))
    except Exception as e:  # reported to the parent
        send(conn, ("err", (type(e).__name__, str(e), getattr(e, "status", None))))
    return True


def serve(fd: int, handlers: Any) -> None:
    """Worker side: answer requests until 'exit' or EOF."""
    conn = Connection(fd)
    while answer(conn, handlers):
        pass
