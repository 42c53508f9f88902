"""Assertions shared by the tests."""
from __future__ import annotations

import time

from spice_initial_draw import Client, Server, patterns
from spice_initial_draw.errors import SidError
from spice_initial_draw.events import EventKind
from spice_initial_draw.frames import Frame
from spice_initial_draw.patterns import Image

from . import INITIAL_FRAMES_MAX

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


def connect_showing(srv: Server, cli: Client, image: Image, draws: int = 1) -> None:
    """Wait for the client's display channel, then draw `image` (the
    current scanout) once and wait until the client shows it: one guest
    draw is shown.  draws > 1 only where the caller's comment says why (a
    set-up on stock, which drops a late MJPEG frame for good): up to
    `draws` draws until it shows."""
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


class NotAtOnce(AssertionError):
    """A new client's picture came later than the design's initial frame
    and one refresh, or outside the stated window."""


def initial_picture(cli: Client, image: Image, window: float,
                    since: float | None = None,
                    frames_max: int = INITIAL_FRAMES_MAX) -> tuple[int, float]:
    """A new client of a VM that does not draw shows `image` "at once": a
    decoded stream frame shows it within `window` s of `since` (default:
    its display channel opening), and that frame is among the first
    `frames_max` frames the client received (1: the initial frame, 2: the
    one idle refresh; dropped ones counted).  Returns (the frame's index,
    its delay after `since`); NotAtOnce otherwise."""
    if since is None:
        since = cli.wait_ready().t
    deadline = since + window
    match = lambda probes: all(probe_matches(probes, image))  # noqa: E731
    while (shown := cli.frame_showing(match)) is None:
        if time.monotonic() > deadline:
            raise NotAtOnce(
                f"no frame showed the picture within {window} s of the display "
                f"channel (frames received: {cli.frames_arrived()}, decoded: "
                f"{cli.frames_received()})")
        time.sleep(0.02)
    index, delay = int(shown.info["index"]), shown.t - since
    if index > frames_max or delay > window:
        raise NotAtOnce(
            f"the picture appeared with frame {index}, {delay:.3f} s after the display "
            f"channel: the design shows it by frame {frames_max} (1: the initial "
            f"frame, 2: one idle refresh) within {window} s")
    wait_shows(cli, image, 1.0)
    return index, delay


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
    clients' stream events: what a failing stream test prints (a dead
    process is named, with its exit status, in place of its events)."""
    lines = [f"server ({srv.variant}, {srv.codecs}):"]
    lines += ["  " + ln for ln in srv.output(mark).splitlines() if ln.strip()]
    try:
        lines += [f"  {e}" for e in srv.events()
                  if e.kind in (EventKind.DRAW, EventKind.DRAW_DONE, EventKind.FATAL)][-10:]
    except SidError as e:
        lines.append(f"  {str(e).splitlines()[0]}")
    for i, cli in enumerate(clients):
        lines.append(f"client {i}:")
        try:
            lines += [f"  {e.name} {e.info.get('text', e.info)}"
                      for e in cli.events() if e.name in CLIENT_EVIDENCE]
        except SidError as e:
            lines += ["  " + ln for ln in str(e).splitlines()]
    return "\n".join(lines)
