"""Which spice-server build ("variant") a process loads.

The extension _shim links the "patched" libspice-server bundled with the
package.  Other variants (e.g. "stock") are built outside the wheel and
listed in _build_config.VARIANT_LIBRARIES; a process loads one by
preloading it with RTLD_GLOBAL before importing _shim: the soname is the
same, so the dynamic loader reuses the preloaded library.
"""
from __future__ import annotations

import ctypes
import os

from .errors import VariantError

DEFAULT_VARIANT = "patched"


def _config():  # type: ignore[no-untyped-def]
    from . import _build_config
    return _build_config


def _extra_variants() -> dict[str, str]:
    """Variants named in $SID_EXTRA_VARIANTS ("NAME=/ABS/PATH,..."): a
    library built elsewhere, e.g. a patch tried out before it joins the
    series (same soname and exported symbols as the others)."""
    out: dict[str, str] = {}
    for entry in os.environ.get("SID_EXTRA_VARIANTS", "").split(","):
        name, sep, path = entry.strip().partition("=")
        if sep and name and path.startswith("/"):
            out[name] = path
    return out


def available_variants() -> list[str]:
    names = set(getattr(_config(), "VARIANT_LIBRARIES", {}).keys())
    names.update(_extra_variants())
    names.add(DEFAULT_VARIANT)
    return sorted(names)


def bundled_library() -> str:
    """The patched libspice-server that meson-python bundled with the wheel.

    meson-python copies the library as its real file name
    (libspice-server.so.1.15.0) without the soname link, so the extension
    cannot find "libspice-server.so.1" by itself: it is preloaded like any
    other variant."""
    import glob
    package_dir = os.path.dirname(os.path.abspath(__file__))
    libs_dir = os.path.join(os.path.dirname(package_dir), ".spice_initial_draw.mesonpy.libs")
    found = sorted(glob.glob(os.path.join(libs_dir, "libspice-server.so.1*")))
    if not found:
        raise VariantError(
            f"the patched libspice-server is not in {libs_dir}; reinstall the "
            "package (./run build)")
    return found[0]


def variant_library(variant: str) -> str:
    """Absolute path of the variant's library."""
    libs: dict[str, str] = dict(getattr(_config(), "VARIANT_LIBRARIES", {}))
    libs.update(_extra_variants())
    if variant in libs:
        path = libs[variant]
        if not os.path.exists(path):
            # the sanitizer variants, core and deb are built on demand only
            how = (f"./run build --variant {variant} builds it (the tests "
                   "that use it build it themselves)"
                   if variant.endswith(("-asan", "-tsan")) or variant in ("core", "deb")
                   else "./run build builds it")
            raise VariantError(
                f"spice-server variant {variant!r}: {path} does not exist; {how}")
        return path
    if variant == DEFAULT_VARIANT:
        return bundled_library()
    raise VariantError(
        f"unknown spice-server variant {variant!r}; available: "
        f"{', '.join(available_variants())}")


def preload(variant: str) -> str:
    """Load the variant's library globally.  Must run before _shim is
    imported in this process.  Returns the path preloaded, if any."""
    import sys
    if "spice_initial_draw._shim" in sys.modules:
        raise VariantError(
            "spice_initial_draw._shim is already loaded in this process; a "
            "variant can only be chosen before (servers run in their own "
            "process for this reason)")
    path = variant_library(variant)
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    return path


def load_shim(variant: str | None = None):  # type: ignore[no-untyped-def]
    """Import and return the _shim extension, preloading `variant` (default:
    the bundled patched library, through its VARIANT_LIBRARIES entry if the
    build lists one) unless _shim is already loaded."""
    import sys
    if "spice_initial_draw._shim" not in sys.modules:
        preload(variant or DEFAULT_VARIANT)
    from . import _shim
    return _shim
