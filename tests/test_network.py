"""The initial frame over shaped links (issue 15): a user-space proxy
(spice_initial_draw.netshape, asyncio: no netem here) between the real
client and the server adds each profile's round trip, jitter and bit rate
limit.  spice-server's net test at connect sees them, and so does the
playback margin it derives from it."""
from __future__ import annotations

import os

import pytest

from conftest import FRAME_TIMEOUT, NO_FRAME_WINDOW, VIDEO_CODECS
from helpers import stream_evidence, wait_shows
from spice_initial_draw import Client, patterns
from spice_initial_draw.netshape import PROFILES, EchoServer, ShapingProxy, measure

EXTENDED = os.environ.get("SID_EXTENDED") == "1"
REPEATS = 5 if EXTENDED else 1
# the poor profile moves a 1080p frame in seconds, not milliseconds
TIMEOUT = 2 * FRAME_TIMEOUT


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_proxy_meets_its_profile(name):
    """Measured round trip and throughput within 10 % of the profile (lan:
    no round trip added, and no limit below 100 Mbit/s)."""
    profile = PROFILES[name]
    echo = EchoServer()
    try:
        with ShapingProxy(profile, echo.port) as proxy:
            got = measure(proxy)
    finally:
        echo.close()
    if profile.rtt_ms:
        assert abs(got["rtt_ms"] - profile.rtt_ms) <= 0.1 * profile.rtt_ms, got
    else:
        assert got["rtt_ms"] < 5, got
    if profile.rate_bps:
        assert abs(got["throughput_bps"] - profile.rate_bps) <= 0.1 * profile.rate_bps, got
    else:
        assert got["throughput_bps"] > 100e6, got


@pytest.mark.parametrize("repeat", range(REPEATS))
@pytest.mark.parametrize("codec", VIDEO_CODECS)
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_initial_frame_and_next_draw_over_the_link(make_server, variant, name, codec,
                                                   repeat):
    srv = make_server(codecs=f"gstreamer:{codec}", variant=variant)
    d = srv.display(0)
    image = patterns.quadrants(1920, 1080)
    d.scanout(image)
    d.draw().wait(FRAME_TIMEOUT)   # idle VM: no client yet
    with ShapingProxy(PROFILES[name], srv.port, lifetime=300) as proxy:
        with Client("127.0.0.1", proxy.port, codec) as cli:
            cli.wait_ready(TIMEOUT)
            if variant == "patched":
                try:
                    cli.wait_frames(1, TIMEOUT)
                    wait_shows(cli, image, TIMEOUT)
                except (AssertionError, TimeoutError) as e:
                    raise AssertionError(f"{name}/{codec}: {e}\n"
                                         + stream_evidence(srv, [cli])) from None
            else:
                assert cli.no_frame_within(NO_FRAME_WINDOW), \
                    f"a frame arrived within {NO_FRAME_WINDOW} s on {variant}"
            # a guest draw after connect is shown too, and is the last picture
            after = patterns.quadrants(1920, 1080, colours=(
                patterns.WHITE, patterns.RED, patterns.GREEN, patterns.BLUE))
            d.scanout(after)
            d.draw().wait(TIMEOUT)
            if variant == "patched":
                try:
                    wait_shows(cli, after, TIMEOUT)
                except AssertionError as e:
                    raise AssertionError(f"{name}/{codec}: the draw after connect: {e}\n"
                                         + stream_evidence(srv, [cli])) from None
    assert not srv.fatal_errors()
