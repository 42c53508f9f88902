"""The build foundation: the pinned tarball, the two variants, the encoder."""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from spice_initial_draw.testing.patch_stats import read_series

TOP = Path(os.environ.get("SID_TOP", Path(__file__).resolve().parents[1]))
BUILD = TOP / "build"
LIBRARY = Path("subprojects/spice-0.16.0/server/libspice-server.so.1")
VARIANT_BUILDS = {"stock": BUILD / "stock", "patched": BUILD / "patched"}


def read_wrap(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(path)
    return dict(parser["wrap-file"])


def spice_options(meson_build: Path) -> list[str]:
    text = meson_build.read_text()
    block = re.search(r"spice_server_options = \[(.*?)\]", text, re.S)
    assert block, f"{meson_build} has no spice_server_options list"
    return re.findall(r"'([^']+)'", block.group(1))


def series(last: str | None = None) -> list[str]:
    """The wrap paths of the series' patches (spice_patch/DIR/PATCH), in
    order; with `last`, the series after it left out."""
    out = []
    for s in read_series(TOP / "spice_patch"):
        out += [f"spice_patch/{s.name}/{p.name}" for p in s.patches]
        if s.name == last:
            break
    return out


def dynamic_symbols(library: Path, *flags: str) -> set[str]:
    out = subprocess.run(["nm", "-D", *flags, str(library)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_all_wraps_pin_the_same_release_tarball() -> None:
    patched = read_wrap(TOP / "subprojects" / "spice-server.wrap")
    stock = read_wrap(TOP / "stock" / "subprojects" / "spice-server.wrap")
    core = read_wrap(TOP / "core" / "subprojects" / "spice-server.wrap")
    for key in ("directory", "source_filename", "source_hash", "source_url"):
        assert patched[key] == stock[key] == core[key], key
    assert patched["source_filename"] == "spice-0.16.0.tar.bz2"
    assert patched["source_hash"] == "0a6ec9528f05371261bbb2d46ff35e7b5c45ff89bb975a99af95a5f20ff4717d"


def test_tarball_in_the_cache_has_the_pinned_hash() -> None:
    wrap = read_wrap(TOP / "subprojects" / "spice-server.wrap")
    tarball = TOP / "subprojects" / "packagecache" / wrap["source_filename"]
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == wrap["source_hash"]


def test_patched_wrap_applies_the_series_in_order_and_stock_only_the_build_fix() -> None:
    build_fix = "spice-0.16.0-meson-subproject.patch"
    patched = [f.strip() for f in read_wrap(TOP / "subprojects" / "spice-server.wrap")["diff_files"].split(",")]
    stock = [f.strip() for f in read_wrap(TOP / "stock" / "subprojects" / "spice-server.wrap")["diff_files"].split(",")]
    assert stock == [build_fix]
    assert patched == [build_fix] + series()


def test_core_wrap_applies_the_core_series_alone() -> None:
    core = [f.strip() for f in read_wrap(TOP / "core" / "subprojects" / "spice-server.wrap")["diff_files"].split(",")]
    assert core == ["spice-0.16.0-meson-subproject.patch"] + series("core")
    assert core[1:] and all(f.startswith("spice_patch/core/") for f in core[1:])


def test_all_variants_are_built_with_the_same_options() -> None:
    assert spice_options(TOP / "meson.build") == spice_options(TOP / "stock" / "meson.build") \
        == spice_options(TOP / "core" / "meson.build")


@pytest.mark.parametrize("variant", sorted(VARIANT_BUILDS))
def test_variant_has_the_dmabuf_encoder(variant: str) -> None:
    # The DMA-BUF path of gstreamer-encoder.c is the only user of GStreamer's
    # dmabuf allocator and of the 1.24 DRM-format mapping: without
    # HAVE_GSTREAMER_DMABUF_ENCODING the library imports neither.
    imports = dynamic_symbols(VARIANT_BUILDS[variant] / LIBRARY, "--undefined-only")
    assert {"gst_dmabuf_allocator_new", "gst_video_dma_drm_fourcc_to_format"} <= imports


def test_variants_export_the_same_abi() -> None:
    stock, patched = (dynamic_symbols(VARIANT_BUILDS[v] / LIBRARY, "--defined-only") for v in ("stock", "patched"))
    assert patched == stock
    assert any(name.startswith("spice_qxl_gl_draw_async") for name in stock)


def test_variants_differ_exactly_when_the_series_is_not_empty() -> None:
    stock_tree = TOP / "stock" / "subprojects" / "spice-0.16.0" / "server"
    patched_tree = TOP / "subprojects" / "spice-0.16.0" / "server"
    differing = subprocess.run(["diff", "-rq", str(stock_tree), str(patched_tree)], capture_output=True, text=True).stdout
    assert bool(differing.strip()) == bool(series())


def test_no_upstream_source_or_tarball_is_committed() -> None:
    if not (TOP / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "-C", str(TOP), "ls-files"], check=True, capture_output=True, text=True).stdout.split()
    upstream = [f for f in files if re.search(r"\.tar(\.(bz2|xz|gz))?$|(^|/)spice-0\.16\.0/|(^|/)spice-common/", f)]
    upstream += [f for f in files if f.startswith("csrc/") and Path(f).name in {"red-qxl.cpp", "dcc.cpp", "reds.cpp"}]
    assert upstream == []
