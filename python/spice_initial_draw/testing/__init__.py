"""Testing support: what the project's tests and benchmarks share (timeouts,
assertions on what a client shows, the bad-scanout cases, the patch series'
statistics).  Not part of the runtime API of spice_initial_draw; imported by
tests/ and bench/ only (and patch_stats by `./run info`, for the series)."""
from __future__ import annotations

from ..codecs import VIDEO_CODECS

__all__ = ["CORE_VARIANT", "DEB_VARIANT", "FRAME_TIMEOUT", "NO_FRAME_WINDOW", "VARIANTS", "VIDEO_CODECS"]

# the spice-server builds every A/B test runs on
VARIANTS = ("stock", "patched")
# spice-server with the core series alone (spice_patch/core): with
# --extended, the tests marked core_series run on it too, and expect it to
# do what patched does
CORE_VARIANT = "core"
# libspice-server.so.1 of the libspice-server1 package that ./run deb builds
# (Debian's packaging with every series), as dpkg -x extracts it: with
# --extended, the tests marked packaged run on it too, and expect it to do
# what patched does
DEB_VARIANT = "deb"
# stated window of a "no frame arrived" assertion, in seconds
NO_FRAME_WINDOW = 5.0
# generous wait for a frame that must arrive, in seconds
FRAME_TIMEOUT = 15.0
