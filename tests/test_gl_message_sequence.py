"""Issue 4, point 8, message by message: a local GL client gets from the
patched server exactly the display-channel messages stock 0.16.0 sends it.

QEMU with -spice gl=on listens on a unix socket; a spice-gtk client there
with "gl-scanout" is a GL client: GL_SCANOUT_UNIX and GL_DRAW, no video
stream.  Each script below (scanouts, draws, a connect, a new scanout of
another size, QEMU's scanout disable, a new scanout) is run on the variant
under test and, once per session, on stock as the reference; the
transcripts (testing/gl_sequence.py: every message each client received,
in order, scanouts with their size, stride and format, draws with their
rectangle; and every QEMU draw with how many times it was completed) must
be the same, but for the one difference the series means to make
(testing/expect.py, gl_client_messages_as_stock: QEMU's disable stops the
GL stream, so a GL client that has it gets its STREAM_DESTROY then).  That
the transcript is exact, not a matter of timing, is checked by running
stock twice (test_stock_transcript_is_exact: the mixed session, the one with
the most clients and steps; every script under --extended).

The odd scanouts are ones stock forwards to a GL client as they are
(the client's GPU imports them) but that a video encoder could not read as
a linear buffer from byte 0: above 16384 pixels, a stride below width x 4,
a non-zero offset, a tiled modifier.  The series must not refuse them for
GL clients.  The mixed session adds a streaming client (no GL scanout
capability, on the same socket: the server treats it as a remote client;
SPICE_DEBUG_ALLOW_MC=1); only the GL client's messages and QEMU's draws
are compared there (the streaming client's initial frame is the series'
point).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

import pytest

from spice_initial_draw import Client, Server, patterns
from spice_initial_draw.testing.assertions import stream_evidence
from spice_initial_draw.testing.expect import gl_client_messages_as_stock
from spice_initial_draw.testing.gl_sequence import (
    CONNECT_GL,
    CONNECT_STREAMING,
    DISABLE,
    Step,
    Transcript,
    draw,
    raw_scanout,
    run_script,
    scanout,
)
from spice_initial_draw.testing.scanout_layouts import (
    I915_FORMAT_MOD_X_TILED,
    at_offset,
    x_tiled,
)

CODECS = "gstreamer:mjpeg"
MC_ENV = {"SPICE_DEBUG_ALLOW_MC": "1"}

A = patterns.quadrants(320, 240)
B = patterns.quadrants(640, 480, colours=(patterns.BLUE, patterns.RED,
                                          patterns.YELLOW, patterns.GREEN))
C = patterns.quadrants(320, 240, colours=(patterns.WHITE,) * 4)
OFFSET = 64 * 1024


def session(b_step: Step, b_size: tuple[int, int]) -> list[Step]:
    """Scanout, draws, a GL client connects, draws, the scanout `b_step`
    of size b_size and draws on it, QEMU disables the scanout, a new
    scanout, draws."""
    bw, bh = b_size
    return [scanout(A), draw(0, 0, 320, 240), draw(0, 0, 100, 50),
            CONNECT_GL, draw(0, 0, 320, 240), draw(10, 20, 30, 40),
            b_step, draw(0, 0, bw, bh), draw(0, 0, min(bw, 16), min(bh, 16)),
            DISABLE,
            scanout(C), draw(0, 0, 320, 240), draw(160, 120, 160, 120)]


SCRIPTS: dict[str, list[Step]] = {
    "plain": session(scanout(B), (640, 480)),
    "width-above-16384": session(
        raw_scanout(width=16385, height=16, stride=16385 * 4), (16385, 16)),
    "height-above-16384": session(
        raw_scanout(width=16, height=16385, stride=16 * 4), (16, 16385)),
    "stride-below-width-x4": session(
        raw_scanout(width=640, height=480, stride=640 * 2, data=B.data[:640 * 2 * 480]),
        (640, 480)),
    "non-zero-offset": session(
        raw_scanout(width=640, height=480, stride=B.stride, scanout2=True,
                    planes=[("memfd", OFFSET, B.stride)],
                    memfd_size=OFFSET + len(B.data), data=at_offset(B, OFFSET)),
        (640, 480)),
    "x-tiled-modifier": session(
        raw_scanout(width=640, height=480, stride=B.stride, scanout2=True,
                    modifier=I915_FORMAT_MOD_X_TILED, data=x_tiled(B)),
        (640, 480)),
    "mixed-gl-and-streaming-client": [
        scanout(A), draw(0, 0, 320, 240), CONNECT_GL, draw(0, 0, 320, 240),
        CONNECT_STREAMING, draw(0, 0, 320, 240), draw(0, 0, 100, 50),
        scanout(B), draw(0, 0, 640, 480), DISABLE,
        scanout(C), draw(0, 0, 320, 240)],
}
# whose messages are compared (all clients unless listed)
COMPARED: dict[str, list[str]] = {"mixed-gl-and-streaming-client": ["gl0"]}


def _server(variant: str, unix_path: str, name: str,
            make: Callable[..., Server] = Server) -> Server:
    env = MC_ENV if CONNECT_STREAMING in SCRIPTS[name] else None
    return make(codecs=CODECS, variant=variant, unix_path=unix_path, env=env)


@pytest.fixture(scope="session")
def stock_transcript() -> Iterator[Callable[[str], Transcript]]:
    """stock_transcript(name): the script `name` run once on stock (per
    session), its transcript."""
    cache: dict[str, Transcript] = {}

    def run(name: str) -> Transcript:
        if name not in cache:
            made: list[Client] = []

            def new_client(srv: Server, gl: bool) -> Client:
                made.append(Client.for_server(srv, gl=gl))
                return made[-1]

            with tempfile.TemporaryDirectory(prefix="sid-glseq-") as d:
                srv = _server("stock", os.path.join(d, "spice.sock"), name)
                try:
                    cache[name] = run_script(srv, SCRIPTS[name], new_client)
                finally:
                    for cli in made:
                        cli.close()
                    srv.close()
        return cache[name]

    yield run


def differences_from_stock(variant: str, name: str, make_server: Callable[..., Server],
                           make_client: Callable[..., Client],
                           stock_transcript: Callable[[str], Transcript]) -> str:
    """Run the script `name` on `variant` and compare it with stock's
    reference run (gl_client_messages_as_stock): "" when they agree, else
    the steps, the diff and the server's evidence."""
    with tempfile.TemporaryDirectory(prefix="sid-glseq-") as d:
        srv = _server(variant, os.path.join(d, "spice.sock"), name, make_server)
        got = run_script(srv, SCRIPTS[name], lambda s, gl: make_client(s, gl=gl))
        delta = gl_client_messages_as_stock(stock_transcript(name), got, variant,
                                            COMPARED.get(name))
        return delta and f"steps: {got.steps}\n{delta}\n\n" + stream_evidence(srv, [])


@pytest.mark.patched_only("the reference is stock's own run of the script "
                          "(test_stock_transcript_is_exact compares two of them)")
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_gl_client_gets_the_messages_stock_sends(make_server, make_client, variant,
                                                 stock_transcript, name):
    delta = differences_from_stock(variant, name, make_server, make_client, stock_transcript)
    assert not delta, f"{name} on {variant}: the transcript differs from stock's\n{delta}"


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "mixed-gl-and-streaming-client" else pytest.mark.extended)
    for n in SCRIPTS])
def test_stock_transcript_is_exact(make_server, make_client, stock_transcript, name):
    """A second stock run of a script gives the reference's transcript: the
    comparison above is exact, not a matter of timing."""
    delta = differences_from_stock("stock", name, make_server, make_client, stock_transcript)
    assert not delta, f"{name}: two stock runs differ\n{delta}"
