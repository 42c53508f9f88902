"""Pure-Python parts: patterns, PNG output, info."""
from __future__ import annotations

import struct
import zlib

from spice_initial_draw import build_info, patterns, spice_server_version
from spice_initial_draw.frames import Frame


def test_quadrant_pattern_colours():
    img = patterns.quadrants(1920, 1080)
    assert len(img.data) == 1920 * 1080 * 4
    probes = patterns.quadrant_probes(1920, 1080)
    assert [img.expected(x, y) for x, y in probes] == list(patterns.QUADRANT_COLOURS)


def test_colour_tolerance_accepts_mjpeg_black():
    assert patterns.colour_close((16, 16, 16), patterns.BLACK)
    assert not patterns.colour_close((200, 0, 0), patterns.GREEN)


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
