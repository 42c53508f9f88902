"""The encode floor: one fresh GStreamer pipeline encoding one frame, built
as spice-server 0.16.0 builds it (server/gstreamer-encoder.c,
create_pipeline() / configure_pipeline() / set_appsrc_caps()):

    appsrc is-live=true format=time do-timestamp=true name=src !
      videoconvert ! ENCODER name=encoder OPTIONS ! appsink name=sink

caps video/x-raw,format=BGRx (DRM XRGB8888),width,height,framerate=60/1
and the encoder's bit rate width*height*256 bit/s (divided by 1024 where
the property is in kbit/s): what the server set on loopback for the harness's
draws (G_MESSAGES_DEBUG: "setting the GStreamer bitrate to 530841600" at
1920x1080, source fps 60); MJPEG runs without a pipeline clock.  The frame is
a DMA-BUF stand-in (a memfd wrapped by GstDmaBufAllocator), as in the
harness.  Timed: parse + PLAYING + push + pull of the encoded frame, i.e.
what spice's worker does for the first frame of a new stream.

Run as `python floor.py CODEC REPS WxH[,WxH...] CONTENT[,CONTENT...]`;
prints one JSON object.  Each invocation is a new process: the first
pipeline is "cold" (plugin loading), the next REPS are fresh pipelines in a
warm process."""
from __future__ import annotations

import json
import os
import sys
import time

import gi
import numpy as np

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstAllocators", "1.0")
from gi.repository import Gst, GstAllocators, GstApp  # noqa: E402,F401

ENCODERS = {
    "mjpeg": ("avenc_mjpeg", ""),
    "vp8": ("vp8enc", "end-usage=cbr min-quantizer=10 error-resilient=default "
            "lag-in-frames=0 deadline=1 cpu-used=4"),
    "vp9": ("vp9enc", "end-usage=cbr min-quantizer=10 error-resilient=default "
            "lag-in-frames=0 deadline=1 cpu-used=4"),
    "h264": ("x264enc", "byte-stream=true aud=true qp-min=15 qp-max=35 tune=4 "
             "sliced-threads=true speed-preset=ultrafast intra-refresh=true"),
}


def frame_bytes(content: str, w: int, h: int) -> bytes:
    if content == "pattern":
        from spice_initial_draw import patterns
        return patterns.quadrants(w, h).data
    rng = np.random.default_rng(1000)
    px = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
    px[:, :, 3] = 255
    return px.tobytes()


def set_bitrate(enc: Gst.Element, w: int, h: int) -> None:
    rate = w * h * 256
    for name in ("bitrate", "target-bitrate"):
        spec = enc.find_property(name)
        if spec is None:
            continue
        if "kbit" in (spec.get_blurb() or ""):
            rate //= 1024
        rate = max(spec.minimum, min(spec.maximum, rate))
        enc.set_property(name, rate)
        return


def encode_once(codec: str, memfd: int, size: int, w: int, h: int) -> dict:
    name, opts = ENCODERS[codec]
    t0 = time.monotonic()
    desc = ("appsrc is-live=true format=time do-timestamp=true name=src ! "
            f"videoconvert ! {name} name=encoder {opts} ! appsink name=sink")
    pipe = Gst.parse_launch(desc)
    src = pipe.get_by_name("src")
    sink = pipe.get_by_name("sink")
    enc = pipe.get_by_name("encoder")
    if codec == "mjpeg":
        pipe.use_clock(None)
    set_bitrate(enc, w, h)
    src.set_caps(Gst.Caps.from_string(
        f"video/x-raw,format=BGRx,width={w},height={h},framerate=60/1"))
    pipe.set_state(Gst.State.PLAYING)
    t1 = time.monotonic()
    alloc = GstAllocators.DmaBufAllocator.new()
    mem = GstAllocators.DmaBufAllocator.alloc(alloc, os.dup(memfd), size)
    buf = Gst.Buffer.new()
    buf.append_memory(mem)
    src.emit("push-buffer", buf)
    sample = sink.emit("try-pull-sample", 30 * Gst.SECOND)
    t2 = time.monotonic()
    nbytes = sample.get_buffer().get_size() if sample else 0
    pipe.set_state(Gst.State.NULL)
    return dict(total_ms=(t2 - t0) * 1e3, setup_ms=(t1 - t0) * 1e3,
                encode_ms=(t2 - t1) * 1e3, bytes=nbytes, ok=sample is not None)


def main(argv: list[str]) -> int:
    codec, reps = argv[1], int(argv[2])
    sizes = [tuple(int(v) for v in s.split("x")) for s in argv[3].split(",")]
    contents = argv[4].split(",")
    Gst.init(None)
    results = []
    cold_done = False
    for w, h in sizes:
        for content in contents:
            data = frame_bytes(content, w, h)
            fd = os.memfd_create("sid-floor")
            os.write(fd, data)
            runs = []
            cold = None
            if not cold_done:
                cold = encode_once(codec, fd, len(data), w, h)
                cold_done = True
            for _ in range(reps):
                runs.append(encode_once(codec, fd, len(data), w, h))
            os.close(fd)
            results.append(dict(codec=codec, w=w, h=h, content=content,
                                cold=cold, runs=runs))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
