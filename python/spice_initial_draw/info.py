"""What this installation is: spice-server version, variants, encoder,
loaded library, GStreamer and its encoders; and the patch series of a
source tree (spice_patch/)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

from . import variants
from .errors import VariantError


def spice_server_version() -> str:
    from . import _build_config
    return str(getattr(_build_config, "SPICE_SERVER_VERSION", None)
               or getattr(_build_config, "SPICE_RELEASE"))


def have_encoder() -> bool:
    """Whether the bundled spice-server has the DMA-BUF video encoder."""
    from . import _build_config
    return bool(_build_config.HAVE_GSTREAMER_DMABUF_ENCODING)


def loaded_library() -> str:
    """Path of the libspice-server loaded in this process (dladdr on
    spice_server_new through the shim).  Loads the patched library unless
    a variant was preloaded (variants.preload)."""
    import sys
    if "spice_initial_draw._shim" not in sys.modules:
        variants.preload(variants.DEFAULT_VARIANT)
    _shim = variants.load_shim()
    return os.path.realpath(_shim.ffi.string(
        _shim.lib.sid_spice_library_path()).decode())


NOT_BUILT = "(not built)"


def _library_or_none(name: str) -> str | None:
    """The variant's library, or None when it is not built (the sanitizer
    variants are built only when a test needs one)."""
    try:
        return variants.variant_library(name)
    except VariantError:
        return None


def loaded_variant() -> str:
    lib = loaded_library()
    for name in variants.available_variants():
        path = _library_or_none(name)
        if path and os.path.realpath(path) == lib:
            return name
    return variants.DEFAULT_VARIANT


def variant_info(variant: str) -> dict[str, Any]:
    """Library and version as seen by a fresh process loading `variant`."""
    code = ("import json,sys;from spice_initial_draw import variants,info;"
            "variants.preload(sys.argv[1]);"
            "from spice_initial_draw import _shim;"
            "print(json.dumps({'library':info.loaded_library(),"
            "'header_version':hex(_shim.lib.sid_spice_header_version())}))")
    out = subprocess.run([sys.executable, "-c", code, variant],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or out.returncode}
    import json
    return json.loads(out.stdout)


def gstreamer_info() -> dict[str, Any]:
    try:
        import gi
        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as e:
        return {"version": None, "error": str(e), "encoders": {}}
    Gst.init(None)
    names = ["x264enc", "vp8enc", "vp9enc", "avenc_mjpeg", "jpegenc",
             "x265enc", "videoconvert"]
    return {"version": Gst.version_string(),
            "encoders": {n: Gst.ElementFactory.find(n) is not None for n in names}}


def build_info() -> dict[str, Any]:
    from . import _build_config
    return {
        "spice_server_version": spice_server_version(),
        "have_gstreamer_dmabuf_encoding": have_encoder(),
        "variants": {name: _library_or_none(name) or NOT_BUILT
                     for name in variants.available_variants()},
        "default_variant": variants.DEFAULT_VARIANT,
        "build_config": {k: v for k, v in vars(_build_config).items()
                         if k.isupper()},
    }


def series_info(patch_dir: str) -> list[dict[str, Any]]:
    """The series of `patch_dir` (spice_patch/), in the order they apply:
    name, Depends-on and the patch subjects (without `[PATCH n/m]`)."""
    from pathlib import Path

    from .testing.patch_stats import read_series, subject
    out = []
    for s in read_series(Path(patch_dir)):
        out.append({"name": s.name, "depends_on": s.depends_on,
                    "patches": [re.sub(r"^\[PATCH[^]]*\] *", "", subject(p))
                                for p in s.patches]})
    return out
