"""./run demo's main job, as a new user runs it: the idle VM in QEMU 10.1's
remote mode (the default), stock shows nothing, patched the picture."""
from __future__ import annotations

import subprocess
import sys


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
