#!/usr/bin/env python3
"""Generate the C source of the cffi extension spice_initial_draw._shim.

Usage: gen_ffi.py HEADER OUTPUT.c

API mode, out of line: the C declarations between CDEF-BEGIN and CDEF-END
in HEADER go to FFI.cdef(); the module includes the header itself.  No
setuptools: meson compiles the emitted C.
"""
import os
import sys

import cffi


def main() -> int:
    header, output = sys.argv[1], sys.argv[2]
    with open(header, encoding="utf-8") as f:
        text = f.read()
    try:
        cdef = text.split("/* CDEF-BEGIN */", 1)[1].split("/* CDEF-END */", 1)[0]
    except IndexError:
        sys.exit(f"{header}: CDEF-BEGIN/CDEF-END markers not found")
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    ffi.set_source("spice_initial_draw._shim",
                   f'#include "{os.path.basename(header)}"')
    ffi.emit_c_code(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
