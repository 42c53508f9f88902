"""Debian's own QEMU runs on our patched libspice-server (LD_LIBRARY_PATH),
and the real client receives its display: the BIOS screen.  With
--extended also on the library of ./run deb's libspice-server1 (the deb
variant: dpkg -x of the package), as an operator's QEMU would load it.

-vga qxl, no disk, no network device (-nic none), TCG, loopback only. QEMU's
GL path (gl=on) cannot run here (no DRM render node); the DMA-BUF path is
driven by our own QEMU-like driver in the other tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spice_initial_draw import Client
from spice_initial_draw.testing import DEB_VARIANT
from spice_initial_draw.variants import variant_library

TOP = Path(os.environ.get("SID_TOP", Path(__file__).resolve().parents[1]))
PATCHED_LIBDIR = TOP / "build/patched/subprojects/spice-0.16.0/server"
# the directory QEMU finds libspice-server.so.1 in, by variant: the patched
# build's, or where dpkg -x put the package's (known once it is built)
LIBDIRS = {"patched": lambda: PATCHED_LIBDIR,
           DEB_VARIANT: lambda: Path(variant_library(DEB_VARIANT)).resolve().parent}
QEMU = shutil.which("qemu-system-x86_64")
BIOS_SCREEN_TIMEOUT = 60.0

pytestmark = [
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed (tools/root-packages.txt has it)"),
    pytest.mark.packaged,
    pytest.mark.parametrize("variant", ["patched", pytest.param(DEB_VARIANT, marks=pytest.mark.extended)],
                            indirect=True),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def libdir(variant: str) -> Path:
    return LIBDIRS[variant]()


@pytest.fixture
def qemu(libdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [str(QEMU), "-nodefaults", "-machine", "pc", "-accel", "tcg", "-m", "64",
         "-vga", "qxl", "-nic", "none", "-display", "none", "-monitor", "none", "-serial", "none",
         "-spice", f"port={port},addr=127.0.0.1,disable-ticketing=on"],
        env=dict(os.environ, LD_LIBRARY_PATH=str(libdir)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"QEMU exited: {proc.stdout.read().decode() if proc.stdout else ''}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "QEMU's spice port did not open within 30 s"
                time.sleep(0.2)
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


def mapped_spice_libraries(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps if "libspice-server" in line}


def test_debian_qemu_loads_our_library(qemu: tuple[subprocess.Popen[bytes], int], libdir: Path) -> None:
    proc, _ = qemu
    ours = str((libdir / "libspice-server.so.1").resolve())
    assert mapped_spice_libraries(proc.pid) == {ours}


def test_client_receives_the_bios_screen(qemu: tuple[subprocess.Popen[bytes], int]) -> None:
    _, port = qemu
    with Client("127.0.0.1", port) as client:
        client.wait_primary(timeout=BIOS_SCREEN_TIMEOUT)
        deadline = time.monotonic() + BIOS_SCREEN_TIMEOUT
        frame = client.frame()
        while frame is None or frame.is_blank():
            assert time.monotonic() < deadline, f"the client saw no BIOS text within {BIOS_SCREEN_TIMEOUT} s"
            time.sleep(0.5)
            frame = client.frame()
        assert (frame.width, frame.height) == (720, 400)
