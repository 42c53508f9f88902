"""./run demo's main job, as a new user runs it: the idle VM in QEMU 10.1's
remote mode (the default), stock shows nothing, patched the picture."""
from __future__ import annotations

import subprocess
import sys

from PIL import Image as PILImage

from spice_initial_draw import patterns


def test_demo_shows_the_idle_vm_on_patched_only(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "spice_initial_draw", "demo", "--output", str(tmp_path),
         "--window", "5"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any("QEMU 10.1's remote GL mode" in ln for ln in lines), out.stdout
    stock = next(ln for ln in lines if ln.startswith("stock"))
    patched = next(ln for ln in lines if ln.startswith("patched"))
    assert "gstreamer:h264" in patched and "no frame in 5 s" in stock, out.stdout
    assert "first frame" in patched and (tmp_path / "patched-h264.png").exists(), out.stdout
    # the PNG is the picture the patched client showed: the guest's pattern
    picture = patterns.quadrants(1920, 1080)
    with PILImage.open(tmp_path / "patched-h264.png") as png:
        assert png.size == (picture.width, picture.height)
        rgb = png.convert("RGB")
        for x, y in patterns.quadrant_probes(picture.width, picture.height):
            got = rgb.getpixel((x, y))
            assert patterns.colour_close(got, picture.expected(x, y)), \
                f"the PNG's pixel ({x},{y}) is {got}, the guest drew {picture.expected(x, y)}"
    assert not (tmp_path / "stock-h264.png").exists(), "stock showed no frame, yet a PNG"
