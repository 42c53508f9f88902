"""Live frames keep the time stock gives them (issue 26): the guest draws
numbered frames at a steady rate to a real spice-gtk client that shows its
picture (spice_initial_draw.testing.live), and each frame's draw -> pixels
is read off the client's surface.

- After the client stalls once (its process stopped for 500 ms, as a
  laptop's viewer stalls), draw -> pixels comes back to what it was before:
  a server that learns the stall as lateness and stamps every later frame
  that much later never does.
- A client behind a slow link does not hold the guest back: QEMU does not
  draw again before its draw completed, so a draw held for the client
  slows the guest itself.

Both on both variants, the same assertion: stock 0.16.0 has neither a
playback delay nor a held draw ("Send real time to client", MR 226)."""
from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from spice_initial_draw.testing.live import SLOW_LINK, LiveCase, LiveRun, run_live

# the stall: 2 s into a 7 s stream at 30 draws/s, 640x480 (a test's size)
STALL_CASE = LiveCase("", 640, 480, rate=30, duration_s=7.0, stall_at_s=2.0, stall_s=0.5)
# frames drawn from this long after the client continued are back to normal ...
BACK_WITHIN_S = 2.0
# ... their median draw -> pixels at most this much above the median before
MARGIN_MS = 20.0
# enough shown frames to take a median of (about 60 and 75 are drawn; after
# a stall stock's spice-gtk drops 3 to 7 MJPEG frames in 8 as late, for good:
# 6 of 45 shown in one run)
MIN_BEFORE, MIN_AFTER = 10, 5

# 60 draws/s through 2 Mbit/s with 20 ms each way, 1920x1080 MJPEG: about
# 20 times the link's rate, so rate control must drop frames
SLOW_CASE = LiveCase("mjpeg", 1920, 1080, rate=60, duration_s=3.0, link=SLOW_LINK)
# the guest's completed draws per second, of the 60 it aims at: the pacing
# loses a few ticks on a loaded machine (stock kept 57-58 here)
MIN_DRAWS_PER_S = 0.85 * SLOW_CASE.rate


def _ms(v: list[float]) -> str:
    return f"median {statistics.median(v):.1f} ms of {len(v)} frames" if v else "no frame"


def _report(run: LiveRun) -> str:
    return ", ".join(f"{f.n}: {'-' if f.px_ms is None else round(f.px_ms)}"
                     for f in run.frames)


@pytest.mark.parametrize("codec", [
    "mjpeg", "h264",
    pytest.param("vp8", marks=pytest.mark.extended),
    pytest.param("vp9", marks=pytest.mark.extended)])
def test_live_frames_come_back_to_time_after_a_client_stall(variant: str, codec: str):
    run = run_live(variant, replace(STALL_CASE, codec=codec))
    assert not run.fatal
    assert run.stall_ns is not None, "the client was not stalled"
    stopped, continued = run.stall_ns
    before = run.between(0, stopped)
    after = run.between(continued + int(BACK_WITHIN_S * 1e9), 2**63)
    assert len(before) >= MIN_BEFORE and len(after) >= MIN_AFTER, (
        f"too few frames shown: before the stall {_ms(before)}, after {_ms(after)}; "
        f"draw -> pixels per frame: {_report(run)}")
    assert statistics.median(after) <= statistics.median(before) + MARGIN_MS, (
        f"{codec}: draw -> pixels of the frames drawn {BACK_WITHIN_S:g} s after a "
        f"{STALL_CASE.stall_s * 1e3:.0f} ms client stall, {_ms(after)}, is more than "
        f"{MARGIN_MS:g} ms above before it, {_ms(before)} (recovery: "
        f"{run.recovery_ms()} ms): live frames are stamped later for good; "
        f"per frame: {_report(run)}")


def test_a_slow_client_does_not_hold_the_guest_back(variant: str):
    run = run_live(variant, SLOW_CASE)
    assert not run.fatal
    done = [f.done_ms for f in run.frames if f.done_ms is not None]
    assert run.draws_per_s() >= MIN_DRAWS_PER_S, (
        f"the guest completed {run.draws_per_s():.1f} draws/s of the {SLOW_CASE.rate:g} it "
        f"aims at ({len(run.frames)} draws in {SLOW_CASE.duration_s:g} s; draw -> "
        f"async_complete {_ms(done)}): its draws are held for a client behind "
        f"{SLOW_CASE.link.name if SLOW_CASE.link else ''}")
