"""A snapshot of a client's primary surface, and PNG output (no PIL)."""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .patterns import RGB

SPICE_SURFACE_FMT_32_xRGB = 32
SPICE_SURFACE_FMT_32_ARGB = 96


@dataclass(frozen=True)
class Frame:
    """Pixels of a primary surface (32-bit xRGB: bytes B, G, R, X)."""

    width: int
    height: int
    stride: int
    format: int
    data: bytes
    t_ns: int

    def pixel(self, x: int, y: int) -> RGB:
        off = y * self.stride + 4 * x
        b, g, r = self.data[off], self.data[off + 1], self.data[off + 2]
        return (r, g, b)

    def is_blank(self, tolerance: int = 24) -> bool:
        """True if a grid of sample points is all (near) black."""
        for y in range(0, self.height, max(1, self.height // 16)):
            for x in range(0, self.width, max(1, self.width // 16)):
                if max(self.pixel(x, y)) > tolerance:
                    return False
        return True

    def to_png(self, path: str) -> None:
        rows = bytearray()
        for y in range(self.height):
            row = self.data[y * self.stride: y * self.stride + 4 * self.width]
            rgb = bytearray(3 * self.width)
            rgb[0::3] = row[2::4]
            rgb[1::3] = row[1::4]
            rgb[2::3] = row[0::4]
            rows += b"\x00" + rgb

        def chunk(tag: bytes, body: bytes) -> bytes:
            return (struct.pack(">I", len(body)) + tag + body
                    + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF))

        png = (b"\x89PNG\r\n\x1a\n"
               + chunk(b"IHDR", struct.pack(">IIBBBBB", self.width,
                                            self.height, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
               + chunk(b"IEND", b""))
        with open(path, "wb") as f:
            f.write(png)
