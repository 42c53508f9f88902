"""Hypothesis over the fields of a GL scanout, good and bad values mixed
(issue 7): fd kind, width, height, stride, fourcc, plane count and offsets,
buffer size, spice_qxl_gl_scanout vs spice_qxl_gl_scanout2.  Each example
gives the server (a real spice-gtk client connected, gstreamer:mjpeg) one
such scanout and a draw, then a good scanout and a draw, and counts crashes,
hangs (draw not completed) and the rest (spice_initial_draw/testing/bad_scanouts.py).

Profiles: 30 examples per variant by default, 500 with --extended
(./run test --extended); SID_BAD_SCANOUT_EXAMPLES=N overrides.  Patched:
no crash and no hang, whatever the input.  Stock: at least one crash or
hang; the counts are reported (printed, and written to
build/bad-scanouts/fuzz-stock.json).

One server and client serve consecutive examples; after a crash, a hang
(the display stays blocked) or a lost client they are replaced, so nothing
leaks from one example to the next but the current scanout, which the next
example replaces.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from spice_initial_draw import Client, Server, SidError
from spice_initial_draw.drm import (
    DRM_FORMAT_ARGB8888,
    DRM_FORMAT_MOD_INVALID,
    DRM_FORMAT_MOD_LINEAR,
    DRM_FORMAT_XBGR8888,
)
from spice_initial_draw.testing.assertions import connect_showing
from spice_initial_draw.testing.bad_scanouts import (
    BAD_FOURCC,
    CRASH,
    DISCONNECT,
    DOUBLE,
    GOOD_IMAGES,
    HANG,
    NOT_SHOWN,
    NV12,
    XRGB,
    run_bad_scanout,
)

REPORT_DIR = Path(__file__).resolve().parents[1] / "build" / "bad-scanouts"

XBGR = DRM_FORMAT_XBGR8888
ARGB = DRM_FORMAT_ARGB8888
MAX_PIXELS = 1 << 20          # keep accepted scanouts cheap to encode
MAX_MEMFD = 64 << 20

u32 = st.integers(0, 2**32 - 1)
dims = st.one_of(st.sampled_from([0, 1, 2, 16, 64, 320, 16384, 16385,
                                   65535, 2**31, 2**32 - 1]),
                 st.integers(1, 640))
fd_kind = st.one_of(st.just("memfd"), st.just("memfd"), st.just("memfd"),
                    st.sampled_from(["closed", "pipe", "socket"]),
                    st.sampled_from([-1, -2, -(2**31)]))


@st.composite
def scanouts(draw):
    """Display.scanout_raw() keyword arguments, and the draw rectangle."""
    width, height = draw(dims), draw(dims)
    if 0 < width <= 16384 and 0 < height <= 16384 and width * height > MAX_PIXELS:
        height = max(1, MAX_PIXELS // width)    # valid but cheap
    fourcc = draw(st.sampled_from([XRGB, XRGB, XRGB, XBGR, ARGB, NV12,
                                   BAD_FOURCC, 0]) | u32)
    good_stride = width * 4 if fourcc != NV12 else width
    stride = draw(st.one_of(
        st.just(good_stride), st.just(good_stride),
        st.integers(good_stride, good_stride + 256),
        st.integers(0, max(0, good_stride - 1)), st.just(0),
        st.integers(0, 2**32 - 1)))
    stride &= 0xFFFFFFFF
    scanout2 = draw(st.booleans())
    if scanout2:
        n = draw(st.integers(1, 4) | st.sampled_from([5, 8]))
        planes = [(draw(fd_kind) if i == 0 else draw(st.just("memfd") | fd_kind),
                   draw(st.just(0) | st.integers(0, 2**32 - 1)) if i == 0
                   else draw(st.integers(0, 2 * 1024 * 1024) | u32),
                   stride if i == 0 else draw(u32 | st.just(width)))
                  for i in range(min(n, 8))]
        num_planes = draw(st.just(n) | st.sampled_from([0, 5, 2**32 - 1]))
    else:
        planes = [(draw(fd_kind), 0, stride)]
        num_planes = 1
    needed = planes[0][1] + stride * height
    memfd_size = draw(st.one_of(
        st.just(needed), st.just(needed),
        st.integers(needed, needed + 65536),
        st.integers(0, max(0, needed - 1)), st.just(0)))
    memfd_size = min(memfd_size, MAX_MEMFD)
    kwargs = dict(width=width, height=height, stride=stride, fourcc=fourcc,
                  memfd_size=memfd_size, planes=planes, num_planes=num_planes,
                  scanout2=scanout2, y0_top=draw(st.booleans()),
                  modifier=draw(st.sampled_from([DRM_FORMAT_MOD_INVALID, DRM_FORMAT_MOD_LINEAR])))
    rect = (0, 0, min(width, 2**32 - 1), min(height, 2**32 - 1))
    return kwargs, rect


class Rig:
    """A server + client showing a good scanout, replaced when broken."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.srv: Server | None = None
        self.cli: Client | None = None
        self.restarts = 0
        self.flip = 0

    def ensure(self) -> tuple[Server, Client]:
        if self.srv is None:
            self.srv = Server(codecs="gstreamer:mjpeg", variant=self.variant)
            d = self.srv.display(0)
            d.scanout(GOOD_IMAGES[0])
            self.cli = Client.for_server(self.srv, "mjpeg")
            # set-up: stock drops a late MJPEG frame for good
            connect_showing(self.srv, self.cli, GOOD_IMAGES[0], draws=3)
            self.flip = 1
        assert self.cli is not None
        return self.srv, self.cli

    def next_image(self):  # type: ignore[no-untyped-def]
        img = GOOD_IMAGES[self.flip]
        self.flip ^= 1
        return img

    def reset(self) -> None:
        if self.cli is not None:
            self.cli.close()
        if self.srv is not None:
            self.srv.close()
        self.srv = self.cli = None
        self.restarts += 1

    def close(self) -> None:
        self.reset()
        self.restarts -= 1


def _fuzz(variant: str, extended: bool) -> dict:
    examples_wanted = int(os.environ.get("SID_BAD_SCANOUT_EXAMPLES") or (500 if extended else 30))
    rig = Rig(variant)
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    t0 = time.monotonic()

    @settings(max_examples=examples_wanted, deadline=None, database=None,
              derandomize=not extended, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(scanouts())
    def one(case) -> None:  # type: ignore[no-untyped-def]
        kwargs, rect = case
        counts["examples"] += 1
        try:
            srv, cli = rig.ensure()
        except (SidError, AssertionError, TimeoutError) as e:
            # stock: spice-gtk drops a late MJPEG frame (0.16 stamps frames
            # with no margin), so the good picture may not show
            counts["setup-failed"] += 1
            examples.setdefault("setup-failed", []).append(str(e)[:300])
            rig.reset()
            return
        outcome = run_bad_scanout(srv, cli, kwargs, None, rig.next_image(),
                                  draw_rect=rect)
        for defect in outcome.defects:
            counts[defect] += 1
            found = examples.setdefault(defect, [])
            if len(found) < 5:
                found.append(f"{kwargs} -> {outcome}")
        if outcome.defects & {CRASH, HANG, DISCONNECT, NOT_SHOWN, DOUBLE}:
            rig.reset()

    try:
        one()
    finally:
        rig.close()
    report = {"variant": variant, "examples": counts.pop("examples", 0),
              "crashes": counts.get(CRASH, 0), "hangs": counts.get(HANG, 0),
              "counts": dict(counts), "restarts": rig.restarts,
              "seconds": round(time.monotonic() - t0, 1),
              "profile": "extended" if extended else "default",
              "first_examples": examples}
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / f"fuzz-{variant}.json").write_text(
        json.dumps(report, indent=2, default=str))
    print(f"\nbad-scanout fuzz, {variant}: {report['examples']} examples, "
          f"{report['crashes']} crashes, {report['hangs']} hangs, other "
          f"{ {k: v for k, v in counts.items() if k not in (CRASH, HANG)} }, "
          f"{rig.restarts} restarts, {report['seconds']} s")
    return report


def test_fuzz_patched_never_crashes_nor_hangs(extended):
    report = _fuzz("patched", extended)
    assert report["examples"] >= 1
    assert report["crashes"] == 0 and report["hangs"] == 0, \
        f"patched: {json.dumps(report['first_examples'], indent=1, default=str)}"
    # and the rest of the contract, for any input
    assert not report["counts"], \
        f"patched: {json.dumps(report['first_examples'], indent=1, default=str)}"


def test_fuzz_stock_crashes_or_hangs(extended):
    """The defect the patched test proves fixed, on stock: the same inputs
    crash or hang stock 0.16.0 (27 crashes in the default 30 examples
    here).  Its counts are reported (build/bad-scanouts/fuzz-stock.json and
    stdout); only that at least one crash or hang happens is asserted."""
    report = _fuzz("stock", extended)
    assert report["examples"] >= 1
    assert report["crashes"] + report["hangs"] >= 1, \
        f"stock: no crash nor hang in {report['examples']} examples: {report['counts']}"
