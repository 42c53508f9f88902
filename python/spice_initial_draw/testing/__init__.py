"""Testing support: what the project's tests and benchmarks share (timeouts,
assertions on what a client shows, the bad-scanout cases, the patch series'
statistics).  Not part of the runtime API of spice_initial_draw; imported by
tests/ and bench/ only (and patch_stats by `./run info`, for the series)."""
from __future__ import annotations

from ..codecs import VIDEO_CODECS

__all__ = ["CORE_VARIANT", "DEB_VARIANT", "FRAME_TIMEOUT", "INITIAL_FRAMES_MAX",
           "INITIAL_FRAME_WINDOW", "NO_FRAME_WINDOW", "SHAPED_INITIAL_FRAME_WINDOW", "VARIANTS",
           "VIDEO_CODECS"]

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
# "At once", the design's promise to a newly connected streaming client of a
# VM that does not draw: an initial frame of the current scanout, stamped
# with a playback margin so that the client shows it, and at most one idle
# refresh (another standalone frame, ~100 ms after the guest's last draw)
# if that picture might not be shown.  So the picture is on screen after
# the client received at most INITIAL_FRAMES_MAX frames (1: the initial
# frame, 2: the refresh; a later one is a re-send or a draw), within
# INITIAL_FRAME_WINDOW s of its display channel opening on loopback (the
# measured TTFF is 0.2-0.4 s; shaped links state their own window).
INITIAL_FRAMES_MAX = 2
INITIAL_FRAME_WINDOW = 3.0
# the same over netshape's shaped links (measured TTFF up to 1.9 s on
# `poor`: 200 ms round trip, 5 Mbit/s for a 1080p frame)
SHAPED_INITIAL_FRAME_WINDOW = 8.0
