#!/usr/bin/env bash
# Build bench/image_cost/image_cost against the patched spice-server's static
# libraries (build/patched), inside the project's Debian 13 root.
#   bench/image_cost/build.sh            (from anywhere; enters the root via ./run shell)
# Output: build/image_cost (the build tree, not committed)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
# ./run shell runs the command in the build environment (the Debian root,
# whose env -i drops IMAGE_COST_SHELL, sets SID_IN_ROOT; or the host).
if [ -z "${SID_IN_ROOT:-}" ] && [ -z "${IMAGE_COST_SHELL:-}" ]; then
    IMAGE_COST_SHELL=1 exec "$TOP/run" shell bash "$HERE/build.sh" "$@"
fi

SPICE=$TOP/subprojects/spice-0.16.0              # sources
B=$TOP/build/patched/subprojects/spice-0.16.0    # its meson build (config.h, generated headers, .a)
# The include dirs and defines meson uses for server/image-encoders.cpp
# (build/patched/compile_commands.json), the system ones from pkg-config.
CXXFLAGS=(
    -O2 -g -std=gnu++17 -pthread -fno-exceptions -fvisibility=hidden
    -Wall -Wno-sign-compare -Wno-unused-parameter -Wno-missing-field-initializers
    -DNDEBUG -D_FILE_OFFSET_BITS=64 -DSPICE_SERVER_INTERNAL '-DG_LOG_DOMAIN="image_cost"'
    -DGLIB_VERSION_MIN_REQUIRED=GLIB_VERSION_2_38 -DGLIB_VERSION_MAX_ALLOWED=GLIB_VERSION_2_38
    -I"$B/server" -I"$SPICE/server" -I"$B" -I"$SPICE"
    -I"$B/subprojects/spice-common" -I"$SPICE/subprojects/spice-common"
    -I"$B/subprojects/spice-common/common"
    $(pkg-config --cflags spice-protocol glib-2.0 pixman-1)
)
# The link of spice-server's own tests (test-codecs-parsing in build.ninja):
# image-encoders.o pulls in much of the library, hence all its deps.
LIBS=(
    -Wl,--start-group
    "$B/server/libspice-server-static.a"
    "$B/subprojects/spice-common/common/libspice-common-server.a"
    "$B/subprojects/spice-common/common/libspice-common.a"
    -Wl,--end-group
    $(pkg-config --libs glib-2.0 gobject-2.0 gio-2.0 pixman-1 openssl libudev libjpeg zlib \
        gstreamer-1.0 gstreamer-base-1.0 gstreamer-app-1.0 gstreamer-video-1.0 \
        gstreamer-allocators-1.0 libdrm orc-0.4)
    -lm -lrt
)
set -x
mkdir -p "$TOP/build"
c++ "${CXXFLAGS[@]}" -o "$TOP/build/image_cost" "$HERE/image_cost.cpp" "${LIBS[@]}"
