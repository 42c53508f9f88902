"""Assertions shared by the tests."""
from __future__ import annotations

import time

from spice_initial_draw import Client, Server, patterns
from spice_initial_draw.events import EventKind
from spice_initial_draw.frames import Frame
from spice_initial_draw.patterns import Image

CLIENT_EVIDENCE = ("stream-create", "stream-late", "spice-warning", "stream-stats")


def assert_shows(frame: Frame | None, image: Image, tolerance: int = 48) -> None:
    """The client's primary surface shows `image` at the quadrant centres."""
    assert frame is not None, "the client has no primary surface"
    assert (frame.width, frame.height) == (image.width, image.height)
    for x, y in patterns.quadrant_probes(image.width, image.height):
        got, want = frame.pixel(x, y), image.expected(x, y)
        assert patterns.colour_close(got, want, tolerance), \
            f"pixel ({x},{y}): client shows {got}, guest drew {want}"


def wait_shows(client: Client, image: Image, timeout: float = 10.0) -> None:
    """Wait until the surface shows the image (a decoded frame may take a few
    ms to land after its invalidate)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = client.frame()
        try:
            assert_shows(frame, image)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def connect_showing(srv: Server, cli: Client, image: Image, draws: int = 3) -> None:
    """Wait for the client's display channel, then draw until it shows
    `image` (the current scanout), at most `draws` times.  GAP: on the
    patched variant the first draw after the channel is ready is sometimes
    never shown (the surface stays black, about 1 run in 4 here); the
    guest's next draw shows it, so more than one draw is made, as a guest
    would keep drawing."""
    cli.wait_ready()
    d = srv.display(0)
    for attempt in range(draws):
        d.draw(0, 0, image.width, image.height).wait(10)
        try:
            wait_shows(cli, image, 3.0)
            return
        except AssertionError:
            if attempt == draws - 1:
                raise


def settled_memfds(srv, n: int, timeout: float = 5.0) -> dict[int, str]:
    """The scanout fds the server holds, once at most n or after `timeout`
    (the worker takes queued scanouts, and the worker and GStreamer let go
    of the previous scanout's, asynchronously: a leak is what stays)."""
    deadline = time.monotonic() + timeout
    while True:
        held = srv.memfds()
        if len(held) <= n or time.monotonic() > deadline or not srv.alive():
            return held
        time.sleep(0.05)


def report(request, line: str) -> None:
    """A line in pytest's output even when output is captured (counts,
    stock defects)."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line)
    print(line)


def probe_matches(probes: list[list[int]], image: Image, tolerance: int = 48) -> list[bool]:
    """For a decoded frame's probes (the client's display-invalidate event),
    whether each quadrant centre shows `image`."""
    points = patterns.quadrant_probes(image.width, image.height)
    if len(probes) != len(points):
        return [False] * len(points)
    return [patterns.colour_close(tuple(got), image.expected(x, y), tolerance)
            for got, (x, y) in zip(probes, points)]


def stream_evidence(srv: Server, clients: list[Client], mark: int = 0) -> str:
    """The server's output and draw completions since `mark`, and the
    clients' stream events: what a failing stream test prints."""
    lines = [f"server ({srv.variant}, {srv.codecs}):"]
    lines += ["  " + ln for ln in srv.output(mark).splitlines() if ln.strip()]
    lines += [f"  {e}" for e in srv.events()
              if e.kind in (EventKind.DRAW, EventKind.DRAW_DONE, EventKind.FATAL)][-10:]
    for i, cli in enumerate(clients):
        lines.append(f"client {i}:")
        lines += [f"  {e.name} {e.info.get('text', e.info)}"
                  for e in cli.events() if e.name in CLIENT_EVIDENCE]
    return "\n".join(lines)
