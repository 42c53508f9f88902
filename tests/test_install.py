"""`./run install --prefix DIR` gives what a QEMU build looks for."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

TOP = Path(os.environ.get("SID_TOP", Path(__file__).resolve().parents[1]))
STOCK_LIBRARY = TOP / "build/stock/subprojects/spice-0.16.0/server/libspice-server.so.1"
PATCHED_LIBRARY = TOP / "build/patched/subprojects/spice-0.16.0/server/libspice-server.so.1"

# Built the way QEMU's configure finds spice: pkg-config spice-server.
PROGRAM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <spice.h>

int main(void)
{
    Dl_info info;
    SpiceServer *server = spice_server_new();
    if (!server || !dladdr((void *)spice_server_new, &info)) {
        return 1;
    }
    printf("version=0x%06x\nlibrary=%s\n", SPICE_SERVER_VERSION, info.dli_fname);
    spice_server_destroy(server);
    return 0;
}
"""


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("prefix")
    result = subprocess.run([str(TOP / "run"), "install", "--prefix", str(prefix)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return prefix


def dynamic_exports(library: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def soname(library: Path) -> str:
    out = subprocess.run(["readelf", "-d", str(library)], check=True, capture_output=True, text=True).stdout
    return next(line.split("[")[1].rstrip("]") for line in out.splitlines() if "(SONAME)" in line)


def messages(library: Path) -> set[bytes]:
    """The library's messages: printable strings of 12 bytes or more with
    a space, but no source path or line (those differ between build
    directories)."""
    return {s for s in re.findall(rb"[\x20-\x7e]{12,}", library.read_bytes())
            if b" " in s and b"subprojects" not in s
            and not re.search(rb"\.(c|cpp|h):\d", s)}


def test_installed_library_is_the_patched_one(prefix: Path) -> None:
    """The installed library has every message the patched build has and
    stock lacks (the series' warnings and debug lines, 19 at 3e0ddc4: none
    of them can come from stock 0.16.0)."""
    series_only = messages(PATCHED_LIBRARY) - messages(STOCK_LIBRARY)
    assert len(series_only) >= 5, f"the patched build differs from stock by {series_only}"
    missing = series_only - messages(prefix / "lib/libspice-server.so.1")
    assert not missing, f"the installed library lacks the series' strings {sorted(missing)[:5]}"


def test_install_puts_library_headers_and_pc_file(prefix: Path) -> None:
    assert (prefix / "lib/libspice-server.so.1").exists()
    assert (prefix / "include/spice-server/spice.h").exists()
    pc = (prefix / "lib/pkgconfig/spice-server.pc").read_text()
    assert f"prefix={prefix}" in pc
    assert "Version: 0.16.0" in pc


def test_installed_library_has_the_stock_soname_and_exports(prefix: Path) -> None:
    installed = prefix / "lib/libspice-server.so.1"
    assert soname(installed) == soname(STOCK_LIBRARY) == "libspice-server.so.1"
    assert dynamic_exports(installed) == dynamic_exports(STOCK_LIBRARY)


def test_program_built_with_pkg_config_runs_on_the_installed_library(prefix: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib/pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "spice-server"], env=env,
                           check=True, capture_output=True, text=True).stdout.split()
    source = tmp_path / "prog.c"
    source.write_text(PROGRAM)
    subprocess.run(["cc", str(source), "-o", str(tmp_path / "prog"), *flags, "-ldl"], check=True)
    run = subprocess.run([str(tmp_path / "prog")], env=dict(env, LD_LIBRARY_PATH=str(prefix / "lib")),
                         check=True, capture_output=True, text=True).stdout
    assert "version=0x001000" in run
    library = run.split("library=")[1].strip()
    assert Path(library).resolve().parent == (prefix / "lib").resolve()
