"""Buffer layouts a device model may scan out that are not "linear from byte
0": a plane at a non-zero offset, a tiled buffer (DRM format modifiers).
They build the bytes of the memfd that stands in for such a DMA-BUF, so a
test can tell a server that reads them correctly from one that reads them
as linear from byte 0 (tests/test_gl_message_sequence.py,
tests/test_scanout_layout.py)."""
from __future__ import annotations

from ..drm import DRM_FORMAT_MOD_LINEAR, I915_FORMAT_MOD_X_TILED
from ..patterns import Image

__all__ = ["DRM_FORMAT_MOD_LINEAR", "I915_FORMAT_MOD_X_TILED", "X_TILE_BYTES",
           "X_TILE_ROWS", "at_offset", "x_tiled"]

# Intel X tiling: a tile is 512 bytes wide and 8 rows high (4 KiB), its rows
# stored one after the other; tiles row-major across the surface
X_TILE_BYTES = 512
X_TILE_ROWS = 8


def at_offset(image: Image, offset: int, before: Image | None = None) -> bytes:
    """The buffer of a plane that starts `offset` bytes into it: the bytes
    of `before` (its first `offset` bytes, repeated as needed) or zeros,
    then `image`'s pixels.  A reader that ignores the offset shows
    `before`."""
    head = b"" if before is None else before.data
    if len(head) < offset:
        head = head + bytes(offset - len(head))
    return head[:offset] + image.data


def x_tiled(image: Image) -> bytes:
    """`image` laid out in Intel X tiles (I915_FORMAT_MOD_X_TILED), same
    stride; the stride must be a multiple of 512 bytes and the height of 8
    rows for whole tiles (a partial last tile row is padded with zeros)."""
    stride = image.stride
    if stride % X_TILE_BYTES:
        raise ValueError(f"stride {stride}: X tiling needs a multiple of {X_TILE_BYTES}")
    tiles_x = stride // X_TILE_BYTES
    rows = -(-image.height // X_TILE_ROWS) * X_TILE_ROWS
    src = image.data + bytes(rows * stride - len(image.data))
    out = bytearray(rows * stride)
    for y in range(rows):
        ty, r = divmod(y, X_TILE_ROWS)
        for tx in range(tiles_x):
            dst = ((ty * tiles_x + tx) * X_TILE_ROWS + r) * X_TILE_BYTES
            s = y * stride + tx * X_TILE_BYTES
            out[dst:dst + X_TILE_BYTES] = src[s:s + X_TILE_BYTES]
    return bytes(out[:image.height * stride]) if rows == image.height else bytes(out)
