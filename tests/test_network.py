"""The initial frame over shaped links (issue 15): a user-space proxy
(spice_initial_draw.netshape, asyncio: no netem here) between the real
client and the server adds each profile's round trip, jitter and bit rate
limit.  spice-server's net test at connect sees them, and so does the
playback margin it derives from it."""
from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest

from spice_initial_draw import Client, patterns
from spice_initial_draw.netshape import CHUNK, PROFILES, ShapingProxy
from spice_initial_draw.testing import (
    FRAME_TIMEOUT,
    NO_FRAME_WINDOW,
    SHAPED_INITIAL_FRAME_WINDOW,
    VIDEO_CODECS,
)
from spice_initial_draw.testing.expect import shows_initial_frame_or_nothing, shows_the_draw

# the poor profile moves a 1080p frame in seconds, not milliseconds
TIMEOUT = 2 * FRAME_TIMEOUT


def measure(proxy: ShapingProxy, seconds: float = 2.0) -> dict[str, float]:
    """Round trip (median of 20 pings of 1 byte) and each direction's
    throughput over `seconds`, through `proxy` whose upstream must be an
    EchoServer."""
    rtts = []
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(20):
            t = time.monotonic()
            s.sendall(b"x")
            s.recv(1)
            rtts.append(time.monotonic() - t)
        # throughput: send for `seconds` while reading the echo back
        got = 0
        stop = time.monotonic() + seconds
        sender_done = threading.Event()

        def send() -> None:
            chunk = b"y" * CHUNK
            while time.monotonic() < stop:
                s.sendall(chunk)
            sender_done.set()

        th = threading.Thread(target=send, daemon=True)
        first = None
        th.start()
        while not sender_done.is_set() or got == 0:
            data = s.recv(1 << 20)
            if not data:
                break
            now = time.monotonic()
            if first is None:
                first, got = now, 0
            else:
                got += len(data)
            if now > stop:
                break
        last = time.monotonic()
        th.join(10)
    return {"rtt_ms": statistics.median(rtts) * 1e3,
            "throughput_bps": got * 8 / (last - first) if first and last > first else 0.0}


class EchoServer:
    """127.0.0.1 echo server on a free port, in a thread (for measure())."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(1 << 16):
                    conn.sendall(data)
            except OSError:   # the peer went away mid-stream
                pass

    def close(self) -> None:
        self._sock.close()


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_proxy_meets_its_profile(name):
    """Measured round trip and throughput within 10 % of the profile (lan:
    no round trip added, and no limit below 100 Mbit/s)."""
    profile = PROFILES[name]
    echo = EchoServer()
    try:
        with ShapingProxy(profile, echo.port) as proxy:
            got = measure(proxy)
    finally:
        echo.close()
    if profile.rtt_ms:
        assert abs(got["rtt_ms"] - profile.rtt_ms) <= 0.1 * profile.rtt_ms, got
    else:
        assert got["rtt_ms"] < 5, got
    if profile.rate_bps:
        assert abs(got["throughput_bps"] - profile.rate_bps) <= 0.1 * profile.rate_bps, got
    else:
        assert got["throughput_bps"] > 100e6, got


@pytest.mark.parametrize("codec", VIDEO_CODECS)
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_initial_frame_and_next_draw_over_the_link(make_server, variant, name, codec,
                                                   repeat):   # 5 repeats with --extended
    srv = make_server(codecs=f"gstreamer:{codec}", variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(1920, 1080)
    d.scanout(image)
    d.draw().wait(FRAME_TIMEOUT)   # idle VM: no client yet
    with ShapingProxy(PROFILES[name], srv.port, lifetime=300) as proxy:
        with Client("127.0.0.1", proxy.port, codec) as cli:
            cli.wait_ready(TIMEOUT)
            shows_initial_frame_or_nothing(cli, image, variant, SHAPED_INITIAL_FRAME_WINDOW,
                                           NO_FRAME_WINDOW, srv)
            # a guest draw after connect is shown too, and is the last picture
            after = patterns.quadrants(1920, 1080, colours=(
                patterns.WHITE, patterns.RED, patterns.GREEN, patterns.BLUE))
            d.scanout(after)
            d.draw().wait(TIMEOUT)
            shows_the_draw(cli, after, variant, TIMEOUT, srv,
                           f"{name}/{codec}: the draw after connect: ")
    assert not srv.fatal_errors()
