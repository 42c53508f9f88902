"""Issue 28, point 5: the harness by pip.

A wheel of this tree (pip wheel, meson-python) carries the package
spice_initial_draw, its cffi extension and the patched libspice-server it
loads.  With --extended (a minute or two the first time: the wheel's own
build of spice-server, in build/wheel; seconds later): the wheel is built,
installed into a fresh virtual environment outside the tree, and from there
an idle VM's picture reaches a new client, with the library loaded from
the wheel's installation (checked by the path the server process mapped).
Without --extended, a quick check of the same layout on the package ./run
installed from this tree with pip (the same meson-python build).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import spice_initial_draw
from spice_initial_draw import variants

TOP = Path(os.environ.get("SID_TOP", Path(__file__).resolve().parents[1]))
LIBS_DIR = ".spice_initial_draw.mesonpy.libs"

# run by the fresh environment's Python, outside the tree
SCENARIO = r"""
import json
import spice_initial_draw
from spice_initial_draw import Client, Server, patterns
from spice_initial_draw.testing import FRAME_TIMEOUT
from spice_initial_draw.testing.assertions import wait_shows
from spice_initial_draw.variants import available_variants

with Server(codecs="gstreamer:mjpeg") as srv:
    d = srv.display(0)
    image = patterns.quadrants(1280, 720)
    d.scanout(image)
    d.draw().wait(FRAME_TIMEOUT)   # no client: completes at once; idle since
    with Client.for_server(srv, "mjpeg") as cli:
        cli.wait_ready()
        cli.wait_frames(1, FRAME_TIMEOUT)
        wait_shows(cli, image, FRAME_TIMEOUT)
    print(json.dumps({"package": spice_initial_draw.__file__, "library": srv.library,
                      "variants": available_variants()}))
"""


def dynamic(path: Path) -> str:
    return subprocess.run(["readelf", "-d", str(path)], check=True, capture_output=True,
                          text=True).stdout


def test_installed_package_carries_its_library_and_finds_it_relatively() -> None:
    """The package ./run installed with pip, laid out as a wheel is: the
    library in the package's .mesonpy.libs beside it, the extension's
    RUNPATH relative to itself ($ORIGIN), nothing pointing into the tree."""
    package = Path(spice_initial_draw.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    assert package.parent == site, f"{package} is not installed in {site}"
    library = Path(variants.bundled_library())
    assert library.parent == site / LIBS_DIR
    assert "Library soname: [libspice-server.so.1]" in dynamic(library)
    shim = next(package.glob("_shim*.so"))
    shim_dynamic = dynamic(shim)
    assert "Shared library: [libspice-server.so.1]" in shim_dynamic
    assert f"Library runpath: [$ORIGIN/../{LIBS_DIR}]" in shim_dynamic
    record = next(site.glob("spice_initial_draw-*.dist-info")) / "RECORD"
    files = {line.split(",")[0] for line in record.read_text().splitlines()}
    assert f"{LIBS_DIR}/{library.name}" in files
    assert f"spice_initial_draw/{shim.name}" in files


@pytest.mark.extended
def test_wheel_in_a_fresh_environment_shows_an_idle_vm_with_its_own_library(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    t0 = time.monotonic()
    dist = tmp_path / "dist"
    # the tree's virtual environment has what the build needs (meson-python,
    # cffi: Debian's, through its system site packages); no download
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
         "-w", str(dist), f"-Cbuild-dir={TOP / 'build/wheel'}", str(TOP)],
        capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = next(dist.glob("spice_initial_draw-*.whl"))
    t_wheel = time.monotonic() - t0
    # a fresh environment of the system's Python, outside the tree
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("SID_TOP", "PYTHONPATH", "VIRTUAL_ENV", "SID_EXTRA_VARIANTS")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    ran = subprocess.run([str(venv / "bin/python"), "-c", SCENARIO], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    site = Path(subprocess.run([str(venv / "bin/python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()).resolve()
    assert Path(result["package"]).resolve().is_relative_to(site)
    library = Path(result["library"])
    assert library.parent == site / LIBS_DIR, f"loaded {library}, not the wheel's"
    assert not library.is_relative_to(TOP)
    assert result["variants"] == ["patched"], "a wheel knows only its own library"
    print(f"wheel {wheel.name}: {wheel.stat().st_size} bytes, built in {t_wheel:.0f} s; "
          f"whole test {time.monotonic() - t0:.0f} s; the server loaded {library}")
