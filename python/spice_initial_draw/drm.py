"""DRM pixel formats and modifiers (linux/drm_fourcc.h) that the harness
passes in scanouts."""
from __future__ import annotations


def fourcc(code: str) -> int:
    """fourcc_code(a, b, c, d) of drm_fourcc.h: fourcc("XR24")."""
    a, b, c, d = (ord(ch) for ch in code)
    return a | b << 8 | c << 16 | d << 24


DRM_FORMAT_XRGB8888 = fourcc("XR24")
DRM_FORMAT_XBGR8888 = fourcc("XB24")
DRM_FORMAT_ARGB8888 = fourcc("AR24")
DRM_FORMAT_NV12 = fourcc("NV12")

DRM_FORMAT_MOD_LINEAR = 0
DRM_FORMAT_MOD_INVALID = 0x00ffffffffffffff   # fourcc_mod_code(NONE, DRM_FORMAT_RESERVED)
# fourcc_mod_code(INTEL, 1): Intel's X tiling, 512-byte x 8-row tiles
DRM_FORMAT_MOD_VENDOR_INTEL = 0x01
I915_FORMAT_MOD_X_TILED = DRM_FORMAT_MOD_VENDOR_INTEL << 56 | 1
