"""Testing support: what the project's tests and benchmarks share (timeouts,
assertions on what a client shows, the bad-scanout cases).  Not part of the
runtime API of spice_initial_draw; imported by tests/ and bench/ only."""
from __future__ import annotations

from ..codecs import VIDEO_CODECS

__all__ = ["FRAME_TIMEOUT", "NO_FRAME_WINDOW", "VARIANTS", "VIDEO_CODECS"]

# the spice-server builds every A/B test runs on
VARIANTS = ("stock", "patched")
# stated window of a "no frame arrived" assertion, in seconds
NO_FRAME_WINDOW = 5.0
# generous wait for a frame that must arrive, in seconds
FRAME_TIMEOUT = 15.0
