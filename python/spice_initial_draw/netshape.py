"""A network-conditions proxy on loopback, in user space (asyncio): these
machines have no netem.  Between a client and a server it delays each
direction by half the round trip (plus jitter), and serialises it at a bit
rate behind a bounded queue, as a router's buffer would; when the queue is
full it stops reading, so TCP's flow control pushes back on the sender.
Bytes keep their order (jitter never reorders: it is a TCP stream).

    with ShapingProxy(PROFILES["wan"], upstream_port=srv.port) as proxy:
        Client("127.0.0.1", proxy.port, ...)

It listens on 127.0.0.1 only, forwards to 127.0.0.1 only, and closes itself
after `lifetime` seconds at the latest."""
from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass

CHUNK = 16384


@dataclass(frozen=True)
class Profile:
    name: str
    rtt_ms: float = 0.0          # round trip added, both directions together
    jitter_ms: float = 0.0       # ± on the round trip
    rate_bps: float | None = None  # each direction; None: unlimited
    queue_bytes: int = 256 * 1024  # the link's buffer, each direction


PROFILES = {
    "lan": Profile("lan"),
    "metro": Profile("metro", rtt_ms=20, rate_bps=100e6),
    "wan": Profile("wan", rtt_ms=80, jitter_ms=5, rate_bps=20e6),
    "poor": Profile("poor", rtt_ms=200, jitter_ms=20, rate_bps=5e6),
}


class _Direction:
    """One direction of one connection: a delay line behind a serialiser."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile, self.rng = profile, rng
        self.tx_free_at = 0.0        # when the serialiser is free again
        self.last_delivery = 0.0     # deliveries never overtake
        self.queued = 0
        self.room = asyncio.Condition()

    def delivery_time(self, now: float, size: int) -> float:
        p = self.profile
        start = max(now, self.tx_free_at)
        self.tx_free_at = start + (size * 8 / p.rate_bps if p.rate_bps else 0.0)
        one_way = p.rtt_ms / 2e3 + self.rng.uniform(-p.jitter_ms, p.jitter_ms) / 2e3
        self.last_delivery = max(self.last_delivery, self.tx_free_at + one_way)
        return self.last_delivery

    async def pump(self, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                at, data = await line.get()
                if not data:
                    break
                delay = at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
                async with self.room:
                    self.queued -= len(data)
                    self.room.notify_all()
            writer.close()

        out = asyncio.ensure_future(deliver())
        try:
            while True:
                async with self.room:
                    await self.room.wait_for(lambda: self.queued < self.profile.queue_bytes)
                data = await reader.read(CHUNK)
                if not data:
                    break
                self.queued += len(data)
                line.put_nowait((self.delivery_time(loop.time(), len(data)), data))
        except (ConnectionError, OSError):
            pass
        finally:
            line.put_nowait((0.0, b""))
            try:
                await out
            except (ConnectionError, OSError):
                pass


class ShapingProxy:
    """Listens on 127.0.0.1:port (free port) and forwards each connection to
    127.0.0.1:upstream_port, shaped by `profile`."""

    def __init__(self, profile: Profile, upstream_port: int, lifetime: float = 900.0,
                 seed: int = 0) -> None:
        self.profile, self.upstream_port, self.lifetime = profile, upstream_port, lifetime
        self.rng = random.Random(seed)
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"shape-{profile.name}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"network proxy ({profile.name}) did not start: {self._error}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # reported by __init__ or close()
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self.upstream_port)
            except OSError:
                writer.close()
                return
            up = _Direction(self.profile, self.rng)
            down = _Direction(self.profile, self.rng)
            await asyncio.gather(up.pump(reader, up_writer), down.pump(up_reader, writer),
                                 return_exceptions=True)

        def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            t = asyncio.ensure_future(handle(reader, writer))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        server = await asyncio.start_server(track, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        except asyncio.TimeoutError:
            pass
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> "ShapingProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

