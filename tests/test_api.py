"""Pure-Python parts: patterns, PNG output, info, the workers' RPC."""
from __future__ import annotations

import gc
import socket
import struct
import sys
import zlib
from multiprocessing.connection import Connection

from spice_initial_draw import _rpc, build_info, patterns, spice_server_version
from spice_initial_draw.frames import Frame


def test_quadrant_pattern_colours():
    img = patterns.quadrants(1920, 1080)
    assert len(img.data) == 1920 * 1080 * 4
    probes = patterns.quadrant_probes(1920, 1080)
    assert [img.expected(x, y) for x, y in probes] == list(patterns.QUADRANT_COLOURS)


def test_colour_tolerance_accepts_mjpeg_black():
    assert patterns.colour_close((16, 16, 16), patterns.BLACK)
    assert not patterns.colour_close((200, 0, 0), patterns.GREEN)


def test_numbered_frames_decode_and_reject_a_blurred_one():
    for w, h in ((1920, 1080), (640, 480)):
        probes = patterns.number_probes(w, h)
        for n in (0, 1, 170, 255, 4097, 65535):
            img = patterns.numbered(n, w, h)
            assert len(img.data) == w * h * 4
            assert patterns.decode_number([img.expected(x, y) for x, y in probes]) == n
    # MJPEG's black, a light grey for white: still a number
    assert patterns.decode_number([(16, 16, 16)] * 16 + [(235, 235, 235)] * 16) == 0
    # a mid-grey block (a blurred or half-decoded frame), or a bit equal to
    # its inverse, is no number
    colours = [patterns.BLACK] * 16 + [patterns.WHITE] * 16
    assert patterns.decode_number([*colours[:5], (128, 128, 128), *colours[6:]]) is None
    assert patterns.decode_number([patterns.WHITE] * 32) is None
    assert patterns.decode_number(colours[:31]) is None


def test_frame_png_roundtrip(tmp_path):
    img = patterns.quadrants(8, 4)
    frame = Frame(8, 4, 32, 32, img.data, 0)
    path = tmp_path / "f.png"
    frame.to_png(str(path))
    raw = path.read_bytes()
    assert raw.startswith(b"\x89PNG")
    w, h = struct.unpack(">II", raw[16:24])
    assert (w, h) == (8, 4)
    idat = raw[raw.index(b"IDAT") + 4:raw.index(b"IEND") - 8]
    pixels = zlib.decompress(idat)
    assert pixels[1:4] == bytes(patterns.RED)


def test_build_info():
    info = build_info()
    assert spice_server_version().startswith("0.16")
    assert info["have_gstreamer_dmabuf_encoding"] is True
    assert "stock" in info["variants"] and "patched" in info["variants"]


def _send_to_a_dead_worker() -> str:
    """An RPC sent to a worker that went away, its error kept the way a test
    keeps one it caught (the traceback holds this frame, which holds it)."""
    ours, theirs = socket.socketpair()
    theirs.close()
    conn = Connection(ours.detach())
    kept: list[OSError] = []
    try:
        _rpc.send(conn, ("scanout", (bytes(64 * 1024),), {}))
    except OSError as e:
        kept.append(e)
    finally:
        conn.close()
    return type(kept[0]).__name__


def test_failed_rpc_send_leaves_no_buffer_to_the_garbage_collector():
    """A failed send's traceback pins no view of a BytesIO: the garbage
    collector, freeing the error, would close that BytesIO under the view
    (BufferError, an unraisable exception; Connection.send does that)."""
    unraisable: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(
        f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")
    try:
        gc.collect()
        assert _send_to_a_dead_worker() == "BrokenPipeError"
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert not unraisable
