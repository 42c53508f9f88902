"""The video codecs by spice's names, for servers, clients, tests and bench."""
from __future__ import annotations

# the GStreamer encoders that can encode a DMA-BUF: the GL stream's codecs
VIDEO_CODECS = ("mjpeg", "vp8", "vp9", "h264")
# SPICE_VIDEO_CODEC_TYPE_* (spice/enums.h): what a client may prefer
CODEC_TYPES = {"mjpeg": 1, "vp8": 2, "h264": 3, "vp9": 4, "h265": 5}
