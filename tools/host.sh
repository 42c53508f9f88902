# shellcheck shell=bash
# Where ./run builds: whether the host has what the build needs, and if not,
# running ./run again inside the Debian 13 root (tools/root.sh).

# What the build and the tests need, or nothing when the host has it all.
host_missing_requirements() {
    local missing=() tool
    for tool in meson ninja cc c++ pkg-config python3; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if command -v pkg-config >/dev/null 2>&1; then
        pkg-config --atleast-version=1.24 gstreamer-1.0 gstreamer-allocators-1.0 2>/dev/null ||
            missing+=("GStreamer >= 1.24 with gstreamer-allocators")
        pkg-config --atleast-version=0.14.5 spice-protocol 2>/dev/null || missing+=("spice-protocol >= 0.14.5")
    fi
    if command -v cc >/dev/null 2>&1; then
        echo '#include <drm/drm_fourcc.h>' | cc -E -x c - >/dev/null 2>&1 || missing+=("drm/drm_fourcc.h")
    fi
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || missing+=("Python >= 3.11")
        python3 - <<'EOF' 2>/dev/null || missing+=("Python modules cffi, mesonpy, pytest, hypothesis, PIL, gi with SpiceClientGLib 2.0")
import cffi, mesonpy, pytest, hypothesis, PIL, gi
gi.require_version('SpiceClientGLib', '2.0')
from gi.repository import SpiceClientGLib
EOF
    fi
    local IFS=,
    echo "${missing[*]}"
}

exec_in_root() {
    local root arg prev=""
    root=$(root_dir)
    # ./run install --prefix DIR: DIR is on the host, so mount it in the root too.
    if [ "${1:-}" = install ]; then
        for arg in "$@"; do
            case "$prev|$arg" in
                --prefix\|*) SID_EXTRA_BIND=$arg ;;
                *\|--prefix=*) SID_EXTRA_BIND=${arg#--prefix=} ;;
            esac
            prev=$arg
        done
        if [ -n "${SID_EXTRA_BIND:-}" ]; then
            mkdir -p "$SID_EXTRA_BIND"
            SID_EXTRA_BIND=$(cd "$SID_EXTRA_BIND" && pwd)
            export SID_EXTRA_BIND
        fi
    fi
    # the cached layer of Debian's build dependencies (./run deb, and the deb
    # variant of the tests)
    SID_DEB_LAYER=$(deb_layer_dir)
    mkdir -p "$SID_DEB_LAYER"
    export SID_DEB_LAYER
    # A shared lock on the root's marker for as long as the run lasts: a run
    # that makes a newer root does not remove this one under it.
    exec 8<"$root/.sid-root-complete"
    flock -s 8
    in_root_ns "$root" "$TOP/run" "$@"
    exit $?
}
