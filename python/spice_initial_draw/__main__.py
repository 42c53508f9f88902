"""python -m spice_initial_draw {demo,info}"""
from __future__ import annotations

import argparse
import os
import sys

from .codecs import VIDEO_CODECS


def print_series(patch_dir: str) -> None:
    from . import info
    try:
        series = info.series_info(patch_dir)
    except OSError as e:
        print(f"patch series: unreadable ({e})")
        return
    print(f"patch series ({os.path.basename(os.path.normpath(patch_dir))}/series, "
          "applied in this order):")
    for s in series:
        deps = ", ".join(s["depends_on"]) or "nothing"
        print(f"  {s['name']}: {len(s['patches'])} patches, depends on {deps}")
        for k, title in enumerate(s["patches"], 1):
            print(f"    {k:2}. {title}")


def cmd_info(patch_dir: str | None = None) -> int:
    from . import info, variants
    b = info.build_info()
    print(f"spice-server version: {b['spice_server_version']}")
    print(f"DMA-BUF video encoder compiled in: "
          f"{'yes' if b['have_gstreamer_dmabuf_encoding'] else 'no'}")
    print(f"default variant: {b['default_variant']}")
    for name in variants.available_variants():
        if b["variants"][name] == info.NOT_BUILT:
            what = " (the core series alone)" if name == "core" else ""
            print(f"variant {name}{what}: not built yet (./run build --variant {name}; "
                  "the tests that use it build it)")
            continue
        v = info.variant_info(name)
        lib = v.get("library") or f"unavailable ({v.get('error')})"
        print(f"variant {name}: {lib}")
    print(f"library loaded by this process: {info.loaded_library()} "
          f"(variant {info.loaded_variant()})")
    g = info.gstreamer_info()
    print(f"GStreamer: {g.get('version') or g.get('error')}")
    for name, present in g.get("encoders", {}).items():
        print(f"  {name}: {'yes' if present else 'no'}")
    if patch_dir:
        print_series(patch_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spice_initial_draw")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="idle-VM demo on the stock and patched server")
    d.add_argument("--serve", action="store_true",
                   help="leave the patched server running for remote-viewer")
    d.add_argument("--output", default="demo-output",
                   help="directory for the PNG files (default demo-output)")
    d.add_argument("--codec", default=None, choices=VIDEO_CODECS,
                   help="default: the QEMU mode's (h264 for 10.1-remote, mjpeg for direct)")
    d.add_argument("--qemu", default="10.1-remote", choices=["10.1-remote", "direct"],
                   help="how the shim plays QEMU: 10.1's remote GL mode (draws from "
                        "the refresh tick; the default) or a draw per guest frame")
    d.add_argument("--window", type=float, default=5.0,
                   help="seconds to wait for a first frame (default 5)")
    d.add_argument("--tls-password", metavar="PASSWORD",
                   help="serve on a TLS port only, with this password (a certificate "
                        "from a throw-away CA is made in OUTPUT/x509)")
    i = sub.add_parser("info", help="version, variants, encoder, GStreamer, the patch series")
    i.add_argument("--patch-dir", metavar="DIR",
                   help="also list the patch series of DIR (spice_patch/ of the source tree)")
    args = p.parse_args(argv)
    if args.cmd == "info":
        return cmd_info(args.patch_dir)
    from . import demo
    return demo.main(args.serve, args.output, args.codec, args.window, args.tls_password,
                     args.qemu)


if __name__ == "__main__":
    sys.exit(main())
