"""Test patterns for scanouts (XRGB8888 / DRM_FORMAT_XRGB8888, i.e. bytes
B, G, R, X in memory) and the colour expected at a point."""
from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]

from .drm import DRM_FORMAT_NV12, DRM_FORMAT_XBGR8888, DRM_FORMAT_XRGB8888  # noqa: F401

RED: RGB = (255, 0, 0)
GREEN: RGB = (0, 255, 0)
BLUE: RGB = (0, 0, 255)
WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
YELLOW: RGB = (255, 255, 0)
MAGENTA: RGB = (255, 0, 255)
CYAN: RGB = (0, 255, 255)

QUADRANT_COLOURS: tuple[RGB, RGB, RGB, RGB] = (RED, GREEN, BLUE, WHITE)


def _px(c: RGB) -> bytes:
    return bytes((c[2], c[1], c[0], 0xFF))


@dataclass(frozen=True)
class Image:
    """A guest framebuffer: XRGB8888 pixels, rows of `stride` bytes."""

    data: bytes
    width: int
    height: int
    stride: int
    fourcc: int = DRM_FORMAT_XRGB8888
    name: str = "image"
    colours: tuple[RGB, ...] = ()

    def expected(self, x: int, y: int) -> RGB:
        """Colour of pixel (x, y) (top-down rows)."""
        off = y * self.stride + 4 * x
        b, g, r = self.data[off], self.data[off + 1], self.data[off + 2]
        return (r, g, b)


def solid(colour: RGB, width: int = 1920, height: int = 1080) -> Image:
    data = _px(colour) * (width * height)
    return Image(data, width, height, width * 4, name=f"solid{colour}",
                 colours=(colour,))


def quadrants(width: int = 1920, height: int = 1080,
              colours: tuple[RGB, RGB, RGB, RGB] = QUADRANT_COLOURS) -> Image:
    """Four-colour test pattern: top-left, top-right, bottom-left,
    bottom-right = colours[0..3] (default red, green, blue, white)."""
    hw, hh = width // 2, height // 2
    top = _px(colours[0]) * hw + _px(colours[1]) * (width - hw)
    bottom = _px(colours[2]) * hw + _px(colours[3]) * (width - hw)
    data = top * hh + bottom * (height - hh)
    return Image(data, width, height, width * 4, name="quadrants",
                 colours=tuple(colours))


def bars(width: int = 1920, height: int = 1080,
         colours: tuple[RGB, ...] = (WHITE, YELLOW, CYAN, GREEN, MAGENTA, RED,
                                     BLUE, BLACK)) -> Image:
    """Vertical colour bars."""
    n = len(colours)
    row = b"".join(_px(colours[min(x * n // width, n - 1)]) for x in range(width))
    return Image(row * height, width, height, width * 4, name="bars",
                 colours=tuple(colours))


def quadrant_probes(width: int, height: int) -> list[tuple[int, int]]:
    """Points at the centre of each quadrant (same order as the colours)."""
    return [(width // 4, height // 4), (3 * width // 4, height // 4),
            (width // 4, 3 * height // 4), (3 * width // 4, 3 * height // 4)]


def colour_close(a: RGB, b: RGB, tolerance: int = 48) -> bool:
    """True if every channel differs by at most `tolerance` (lossy codecs,
    and MJPEG decodes black as (16, 16, 16))."""
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))
