"""Issue 28: the Debian 13 packages of ./run deb (tools/deb.sh).

Without building anything: the packaging takes exactly spice_patch/'s
patches, in the order of spice_patch/series and of each series file, after
the packaging's own patches, one directory per series; its changelog entry's
version sorts above Debian's 0.16.0-3 and below Debian's next revision.
With --extended (the packages built on first use, a few minutes): the
build applied every patch of the series, Debian's build-time test suite
passed, dpkg-gensymbols found the symbols file unchanged, and the library
of libspice-server1 has stock's soname and exports.  The scenarios the
package is proven with are the tests marked `packaged` (the deb variant).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from spice_initial_draw.testing import DEB_VARIANT
from spice_initial_draw.testing.patch_stats import read_series
from spice_initial_draw.variants import variant_library

TOP = Path(os.environ.get("SID_TOP", Path(__file__).resolve().parents[1]))
DEB_OUT = TOP / "build" / "deb"
STOCK_LIBRARY = TOP / "build/stock/subprojects/spice-0.16.0/server/libspice-server.so.1"
DEBIAN_VERSION = "0.16.0-3"
# debian/patches/PREFIX/SERIES/PATCH: one directory per series
PREFIX = "initial-frame"


def tools(*command: str, cwd: Path | None = None) -> str:
    """A function of tools/deb.sh, with what ./run sources before it."""
    script = ('set -euo pipefail; TOP=$1; shift; source "$TOP/tools/common.sh"; '
              'source "$TOP/tools/setup.sh"; source "$TOP/tools/deb.sh"; "$@"')
    r = subprocess.run(["bash", "-c", script, "bash", str(TOP), *command],
                       capture_output=True, text=True, cwd=cwd, check=False)
    assert r.returncode == 0, f"{command}: {r.stdout}\n{r.stderr}"
    return r.stdout


def expected_patch_names() -> list[str]:
    """spice_patch/'s patches in order, as the packaging must list them."""
    return [f"{PREFIX}/{s.name}/{p.name}" for s in read_series(TOP / "spice_patch") for p in s.patches]


def deb_version() -> str:
    return tools("eval", 'echo "$DEB_VERSION"').strip()


def test_packaging_patch_list_is_the_series_in_order() -> None:
    listed = tools("deb_patch_list").split()
    assert listed == expected_patch_names()
    assert listed, "no patch in spice_patch/"


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A stand-in for the unpacked source package: its own two patches (the
    series file without its last newline) and a changelog."""
    tree = tmp_path / "spice-0.16.0"
    (tree / "debian/patches").mkdir(parents=True)
    (tree / "debian/patches/series").write_text("own-fix-1.patch\nown-fix-2.patch")
    (tree / "debian/changelog").write_text(
        f"spice ({DEBIAN_VERSION}) unstable; urgency=medium\n\n  * Debian's.\n\n"
        " -- Debian <debian@invalid>  Wed, 05 Aug 2026 18:28:00 +0300\n")
    return tree


def test_series_go_after_the_packagings_own_patches(source_tree: Path) -> None:
    tools("deb_add_series", str(source_tree))
    series = (source_tree / "debian/patches/series").read_text().splitlines()
    assert series == ["own-fix-1.patch", "own-fix-2.patch", *expected_patch_names()]
    for name in expected_patch_names():
        copied = source_tree / "debian/patches" / name
        original = TOP / "spice_patch" / name.split("/", 1)[1]
        assert copied.read_bytes() == original.read_bytes(), name


def test_series_are_not_added_twice(source_tree: Path) -> None:
    tools("deb_add_series", str(source_tree))
    script = ('TOP=$1; shift; source "$TOP/tools/common.sh"; source "$TOP/tools/setup.sh"; '
              'source "$TOP/tools/deb.sh"; deb_add_series "$1"')
    r = subprocess.run(["bash", "-c", script, "bash", str(TOP), str(source_tree)],
                       capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "already lists" in r.stderr


def test_changelog_entry_sorts_above_debians_and_below_its_next(source_tree: Path) -> None:
    again = source_tree.parent / "again"
    shutil.copytree(source_tree, again)
    tools("deb_add_changelog", str(source_tree))
    changelog = (source_tree / "debian/changelog").read_text()
    top = re.match(r"spice \(([^)]+)\) (\S+); urgency=", changelog)
    assert top, changelog[:200]
    version = top.group(1)
    assert version == deb_version() == f"{DEBIAN_VERSION}+initialframe1"
    assert changelog.count(f"spice ({DEBIAN_VERSION})") == 1, "Debian's entry is kept below"
    # the same series give the same entry (its date is the newest patch's)
    tools("deb_add_changelog", str(again))
    assert (again / "debian/changelog").read_text() == changelog
    if shutil.which("dpkg") is None:   # a host of another distribution
        pytest.skip("dpkg is not installed: the version order is not checked")
    for op, other in (("gt", DEBIAN_VERSION), ("lt", "0.16.0-4"), ("lt", "0.16.1-1")):
        assert subprocess.run(["dpkg", "--compare-versions", version, op, other]).returncode == 0, \
            f"{version} is not {op} {other}"


# -- the packages, built on first use (--extended) ---------------------------
@pytest.fixture(scope="module")
def built(build_variant) -> Path:
    build_variant(DEB_VARIANT)
    return DEB_OUT


def package(out: Path, name: str) -> Path:
    found = sorted(out.glob(f"{name}_{deb_version()}_*.deb"))
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


@pytest.mark.extended
def test_debian_build_applied_the_series_passed_its_tests_and_kept_the_symbols(built: Path) -> None:
    report = (built / "build-report.txt").read_text()
    print(report)
    n = len(expected_patch_names())
    assert f"the series' patches applied by dpkg-buildpackage: {n} of {n}" in report
    ok = re.search(r"^\s*Ok:\s+(\d+)", report, re.M)
    fail = re.search(r"^\s*Fail:\s+(\d+)", report, re.M)
    assert ok and int(ok.group(1)) > 0 and fail and int(fail.group(1)) == 0, report
    assert "dpkg-gensymbols warned" not in report and "the symbols file matches" in report
    # the packaging actually used: Debian's own patches first, then the series
    series = (TOP / "build/deb-src/spice-0.16.0/debian/patches/series").read_text().split()
    assert series[-n:] == expected_patch_names()
    assert series[:-n] and not any(s.startswith(f"{PREFIX}/") for s in series[:-n])


@pytest.mark.extended
def test_packages_carry_the_version_and_the_library(built: Path) -> None:
    lib = package(built, "libspice-server1")
    dev = package(built, "libspice-server-dev")
    for deb in (lib, dev):
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        assert version == deb_version()
        print(f"{deb.name}: {deb.stat().st_size} bytes")
    files = subprocess.run(["dpkg-deb", "-c", str(lib)], check=True, capture_output=True,
                           text=True).stdout
    assert re.search(r"usr/lib/[^/]+/libspice-server\.so\.1 -> libspice-server\.so\.1\.", files)
    depends = subprocess.run(["dpkg-deb", "-f", str(dev), "Depends"], check=True,
                             capture_output=True, text=True).stdout
    assert f"libspice-server1 (= {deb_version()})" in depends


def exports(library: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], check=True,
                         capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.mark.extended
def test_packaged_library_has_the_stock_soname_and_exports(built: Path) -> None:
    library = Path(variant_library(DEB_VARIANT)).resolve()
    assert library.is_relative_to(built / "extracted")
    dynamic = subprocess.run(["readelf", "-d", str(library)], check=True, capture_output=True,
                             text=True).stdout
    assert "Library soname: [libspice-server.so.1]" in dynamic
    assert exports(library) == exports(STOCK_LIBRARY)


# The README's install path for an operator, as it runs there: in a
# throw-away overlay of this Debian 13 root (a tmpfs upper layer, undone when
# the namespace ends), Debian's QEMU with its spice module and Debian 13's
# libspice-server1 installed.
OPERATOR = r"""
set -eu
deb=$1 work=$2 port=$3
mount -t tmpfs tmpfs "$work"
mkdir -p "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
mount -t proc proc "$work/root/proc"
mount --rbind /dev "$work/root/dev"
mkdir -p "$work/root/pkg" && cp "$deb" "$work/root/pkg/"
exec chroot "$work/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive bash -s "$(basename "$deb")" "$port" <<'SCRIPT'
set -eu
echo "before=$(dpkg-query -W -f='${Version}' libspice-server1)"
apt install -y -q ./pkg/$1 >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
echo "installed=$(dpkg-query -W -f='${Version}' libspice-server1)"
module=$(dpkg -L qemu-system-modules-spice | grep '/ui-spice-core\.so$')
echo "ldd=$(ldd "$module" | awk '/libspice-server/ {print $3}')"
qemu-system-x86_64 -nodefaults -machine pc -accel tcg -m 64 -vga qxl -nic none \
    -display none -monitor none -serial none \
    -spice port=$2,addr=127.0.0.1,disable-ticketing=on >/tmp/qemu.log 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q libspice-server /proc/$pid/maps 2>/dev/null && break; sleep 0.2; done
echo "maps=$(awk '/libspice-server/ {print $6}' /proc/$pid/maps | sort -u | tr '\n' ' ')"
echo "owner=$(dpkg -S "$(readlink -f "$(awk '/libspice-server/ {print $6; exit}' /proc/$pid/maps)")" | cut -d: -f1)"
kill $pid; wait $pid 2>/dev/null || true
apt install -y -q --allow-downgrades libspice-server1/trixie >/tmp/back.log 2>&1 ||
    { apt-get update -q >/dev/null && apt install -y -q --allow-downgrades libspice-server1/trixie >/tmp/back.log 2>&1; } ||
    { cat /tmp/back.log; exit 1; }
echo "back=$(dpkg-query -W -f='${Version}' libspice-server1)"
SCRIPT
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.extended
def test_operator_installs_the_package_qemu_loads_it_and_goes_back(built: Path, tmp_path: Path) -> None:
    """apt install ./libspice-server1_...deb; Debian's QEMU (its spice
    module) then loads the package's library, as ldd and /proc/PID/maps
    say; apt install --allow-downgrades libspice-server1/trixie goes back
    to Debian 13's package."""
    lib = package(built, "libspice-server1")
    work = tmp_path / "operator"
    work.mkdir()
    r = subprocess.run(["unshare", "-m", "--propagation", "unchanged", "bash", "-c", OPERATOR,
                        "bash", str(lib), str(work), str(free_port())], capture_output=True, text=True,
                       timeout=600, check=False)
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert got["installed"] == deb_version()
    assert subprocess.run(["dpkg", "--compare-versions", got["before"], "lt", deb_version()]).returncode == 0
    assert got["ldd"].endswith("/libspice-server.so.1")
    maps = got["maps"].split()
    assert len(maps) == 1 and re.search(r"/usr/lib/[^/]+/libspice-server\.so\.1\.", maps[0]), maps
    assert got["owner"] == "libspice-server1"
    assert got["back"] == got["before"]
