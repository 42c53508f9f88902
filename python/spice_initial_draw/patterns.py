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


# -- numbered frames: a frame number that survives lossy codecs -------------
# NUMBER_COLS x NUMBER_ROWS blocks over the whole picture: the first half of
# the blocks (row-major) are the number's bits, least significant first,
# white for 1; the second half are the same bits inverted.  A block is
# read at its centre (far from any edge a codec blurs), and a decode counts
# only when every block is clearly black or white and every bit matches its
# inverse, so a half-decoded or blurred frame reads as no number at all.
NUMBER_COLS, NUMBER_ROWS = 8, 4
NUMBER_BITS = NUMBER_COLS * NUMBER_ROWS // 2
NUMBER_BLACK_BELOW, NUMBER_WHITE_ABOVE = 64, 192   # luma of a clear block

Rect = tuple[int, int, int, int, RGB]   # x, y, w, h, colour


def _block(i: int, width: int, height: int) -> tuple[int, int, int, int]:
    c, r = i % NUMBER_COLS, i // NUMBER_COLS
    x0, x1 = c * width // NUMBER_COLS, (c + 1) * width // NUMBER_COLS
    y0, y1 = r * height // NUMBER_ROWS, (r + 1) * height // NUMBER_ROWS
    return x0, y0, x1 - x0, y1 - y0


def number_blocks(n: int, width: int, height: int) -> list[Rect]:
    """The blocks that show frame number n (0 <= n < 2**NUMBER_BITS)."""
    if not 0 <= n < 1 << NUMBER_BITS:
        raise ValueError(f"frame number {n}: 0..{(1 << NUMBER_BITS) - 1}")
    bits = [(n >> i) & 1 for i in range(NUMBER_BITS)]
    bits += [1 - b for b in bits]
    return [(*_block(i, width, height), WHITE if b else BLACK) for i, b in enumerate(bits)]


def number_probes(width: int, height: int) -> list[tuple[int, int]]:
    """The centre of each block, in number_blocks()' order."""
    return [(x + w // 2, y + h // 2) for x, y, w, h
            in (_block(i, width, height) for i in range(2 * NUMBER_BITS))]


def decode_number(colours: list[RGB] | list[list[int]]) -> int | None:
    """The frame number the colours at number_probes() show, or None."""
    if len(colours) != 2 * NUMBER_BITS:
        return None
    bits = []
    for r, g, b in colours:
        luma = 0.299 * r + 0.587 * g + 0.114 * b
        if NUMBER_BLACK_BELOW <= luma <= NUMBER_WHITE_ABOVE:
            return None
        bits.append(int(luma > NUMBER_WHITE_ABOVE))
    if any(a == b for a, b in zip(bits[:NUMBER_BITS], bits[NUMBER_BITS:])):
        return None
    return sum(b << i for i, b in enumerate(bits[:NUMBER_BITS]))


def numbered(n: int, width: int = 1920, height: int = 1080) -> Image:
    """A whole picture showing frame number n (number_blocks())."""
    blocks = number_blocks(n, width, height)
    data = bytearray()
    for r in range(NUMBER_ROWS):
        row = blocks[r * NUMBER_COLS:(r + 1) * NUMBER_COLS]
        line = b"".join(_px(colour) * w for _, _, w, _, colour in row)
        data += line * row[0][3]
    return Image(bytes(data), width, height, width * 4, name=f"number{n}",
                 colours=(BLACK, WHITE))
