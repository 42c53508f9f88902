# shellcheck shell=bash
# Set-up and the commands of ./run, in whatever environment has the
# requirements (the host, or the Debian 13 root).

SPICE_TARBALL=spice-0.16.0.tar.bz2
SPICE_SHA256=0a6ec9528f05371261bbb2d46ff35e7b5c45ff89bb975a99af95a5f20ff4717d
SPICE_DEBIAN_SOURCE=spice=0.16.0-3
SPICE_DIR=spice-0.16.0
BUILD=$TOP/build
VENV=$BUILD/venv
PATCHED_BUILD=$BUILD/patched
STOCK_BUILD=$BUILD/stock
STOCK_LIBRARY=$STOCK_BUILD/subprojects/$SPICE_DIR/server/libspice-server.so.1
LIBRARY_IN_BUILD=subprojects/$SPICE_DIR/server/libspice-server.so.1
# Sanitizer variants of both libraries, for the race tests: NAME:PROJECT:SANITIZER.
SANITIZER_VARIANTS="stock-asan:stock:address,undefined patched-asan:.:address,undefined stock-tsan:stock:thread patched-tsan:.:thread"

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
    # A shared lock on the root's marker for as long as the run lasts: a run
    # that makes a newer root does not remove this one under it.
    exec 8<"$root/.sid-root-complete"
    flock -s 8
    in_root_ns "$root" "$TOP/run" "$@"
    exit $?
}

# The build directory belongs to one environment (host or a given root); a
# build made elsewhere is thrown away rather than mixed with this one.
claim_build_dir() {
    mkdir -p "$BUILD"
    local stamp=$BUILD/.environment
    if [ -e "$stamp" ] && [ "$(cat "$stamp")" != "$SID_ENVIRONMENT" ]; then
        note "build/ was made in $(cat "$stamp"), not in $SID_ENVIRONMENT: starting it again"
        rm -rf "$BUILD"
        mkdir -p "$BUILD"
    fi
    echo "$SID_ENVIRONMENT" > "$stamp"
}

# The release tarball, from Debian's source package, checked against its sha256.
ensure_tarball() {
    local cache=$TOP/subprojects/packagecache file
    file=$cache/$SPICE_TARBALL
    mkdir -p "$cache"
    if [ ! -e "$file" ]; then
        step "fetching the spice-server 0.16.0 release tarball (Debian source package $SPICE_DEBIAN_SOURCE)"
        local tmp
        tmp=$(mktemp -d)
        if ! (cd "$tmp" && { apt-get source -q --download-only "$SPICE_DEBIAN_SOURCE" >"$tmp/log" 2>&1 ||
                              { apt-get update -q >>"$tmp/log" 2>&1 && apt-get source -q --download-only "$SPICE_DEBIAN_SOURCE" >>"$tmp/log" 2>&1; }; }); then
            tail -n 5 "$tmp/log" >&2
            rm -rf "$tmp"
            die "fetching the spice-server tarball" "apt-get source $SPICE_DEBIAN_SOURCE failed (it needs a deb-src entry for Debian unstable)" \
                "put $SPICE_TARBALL (sha256 $SPICE_SHA256) into subprojects/packagecache/ and run again"
        fi
        mv "$tmp/spice_0.16.0.orig.tar.bz2" "$file.part"
        rm -rf "$tmp"
        mv "$file.part" "$file"
    fi
    local sum
    sum=$(sha256sum "$file" | cut -d' ' -f1)
    if [ "$sum" != "$SPICE_SHA256" ]; then
        mv "$file" "$file.rejected"
        die "checking the spice-server tarball" "$file has sha256 $sum, not the pinned $SPICE_SHA256 (moved aside to $file.rejected)" \
            "delete it and run again to fetch it anew; if it still differs, the mirror serves another file"
    fi
    note "spice-server tarball verified: sha256 $SPICE_SHA256"
}

# The patches of the patched variant: the build fix, then spice_patch/series.
patched_diff_files() {
    local files=(spice-0.16.0-meson-subproject.patch) p
    while read -r p; do
        [ -n "$p" ] && [ "${p:0:1}" != "#" ] || continue
        [ -e "$TOP/spice_patch/$p" ] || die "reading spice_patch/series" "it lists $p, which is not in spice_patch/" "fix spice_patch/series"
        files+=("spice_patch/$p")
    done < "$TOP/spice_patch/series"
    local IFS=,
    echo "${files[*]}" | sed 's/,/, /g'
}

# Keep the wrap's diff_files in the order of spice_patch/series.
sync_wrap_with_series() {
    local wrap=$TOP/subprojects/spice-server.wrap want have
    want=$(patched_diff_files)
    have=$(sed -n 's/^diff_files = //p' "$wrap")
    if [ "$want" != "$have" ]; then
        note "subprojects/spice-server.wrap: diff_files set from spice_patch/series"
        sed -i "s|^diff_files = .*|diff_files = $want|" "$wrap"
    fi
}

# A digest of a wrap and the patches it applies.
subproject_stamp() {
    local dir=$1 f
    for f in $(sed -n 's/^diff_files = //p' "$dir/spice-server.wrap" | tr ',' ' '); do
        [ -e "$dir/packagefiles/$f" ] || die "reading $dir/spice-server.wrap" "diff_files names $f, which is not in $dir/packagefiles/" "fix the wrap or spice_patch/series"
    done
    { cat "$dir/spice-server.wrap"
      for f in $(sed -n 's/^diff_files = //p' "$dir/spice-server.wrap" | tr ',' ' '); do cat "$dir/packagefiles/$f"; done
    } | sha256sum | cut -c1-16
}

# The extracted, patched tree of a variant is remade whenever its wrap or
# patches change (meson itself would keep a stale one).
ensure_subproject() {
    local project=$1 builddir=$2 name=$3 stamp_want stamp_file
    local subdir=$project/subprojects/$SPICE_DIR
    stamp_want=$(subproject_stamp "$project/subprojects")
    stamp_file=$subdir/.sid-patches
    if [ -d "$subdir" ] && [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp_want" ]; then
        note "$name: the wrap or its patches changed: extracting the tarball again"
        rm -rf "$subdir" "$builddir" "$BUILD/$name-asan" "$BUILD/$name-tsan"
    fi
    if [ ! -d "$subdir" ]; then
        step "$name: extracting spice-server 0.16.0 and applying its patches"
        run_logged "$name: extracting and patching spice-server" "$BUILD/logs/$name-subproject.log" \
            bash -c "cd '$project' && meson subprojects download spice-server"
        [ -e "$subdir/meson.build" ] || die "$name: extracting spice-server" "meson did not extract $subdir" "see $BUILD/logs/$name-subproject.log"
        grep -E '^(Applying|Patch|patching)' "$BUILD/logs/$name-subproject.log" | sed 's/^/    /' || true
        echo "$stamp_want" > "$stamp_file"
    fi
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        step "making the Python virtual environment (with system site packages, for python3-gi)"
        python3 -m venv --system-site-packages "$VENV"
    fi
}

build_stock() {
    ensure_subproject "$TOP/stock" "$STOCK_BUILD" stock
    if [ ! -e "$STOCK_BUILD/build.ninja" ]; then
        step "stock: configuring"
        run_logged "stock: meson setup" "$BUILD/logs/stock-setup.log" \
            meson setup "$STOCK_BUILD" "$TOP/stock" --buildtype=release -Db_ndebug=if-release
    fi
    step "stock: building spice-server 0.16.0 (about 1 minute the first time)"
    run_logged "stock: building" "$BUILD/logs/stock-build.log" meson compile -C "$STOCK_BUILD"
}

# A sanitizer variant: only libspice-server itself is built, with
# -fsanitize; a process loads it with the sanitizer's runtime preloaded.
build_sanitizer_variant() {
    local name=$1 project=$2 sanitizer=$3 builddir=$BUILD/$1
    if [ ! -e "$builddir/build.ninja" ]; then
        step "$name: configuring (-Db_sanitize=$sanitizer)"
        run_logged "$name: meson setup" "$BUILD/logs/$name-setup.log" \
            meson setup "$builddir" "$TOP/$project" --buildtype=debugoptimized -Db_sanitize="$sanitizer" -Db_lundef=false
    fi
    step "$name: building libspice-server (about 1 minute the first time)"
    run_logged "$name: building" "$BUILD/logs/$name-build.log" \
        meson compile -C "$builddir" "subprojects/$SPICE_DIR/server/spice-server:shared_library"
}

build_sanitizer_variants() {
    local entry name project sanitizer
    for entry in $SANITIZER_VARIANTS; do
        IFS=: read -r name project sanitizer <<<"$entry"
        build_sanitizer_variant "$name" "$project" "$sanitizer"
    done
}

# NAME=PATH of every variant besides the bundled patched one.
variant_libraries_option() {
    local entry name list="stock=$STOCK_LIBRARY"
    for entry in $SANITIZER_VARIANTS; do
        name=${entry%%:*}
        list+=",$name=$BUILD/$name/$LIBRARY_IN_BUILD"
    done
    echo "$list"
}

# What the installed package is made of: the project's build inputs (the
# extracted spice-server tree follows from the wrap and its patches) and the
# variant libraries it is configured with.
install_stamp() {
    { variant_libraries_option
      cd "$TOP" && find meson.build meson.options pyproject.toml meson csrc python \
          spice_patch subprojects -type f \
          -not -path "subprojects/$SPICE_DIR/*" -not -path 'subprojects/packagecache/*' \
          -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
}

# pip reinstalls the package each time (uninstall, then install), which
# pulls it from under any run using this tree: skip it when nothing it is
# made of changed since the last install (a hand edit in the extracted
# spice-server tree is not seen: rm build/patched-install.stamp).
build_patched() {
    local stamp_want stamp_file=$BUILD/patched-install.stamp
    ensure_subproject "$TOP" "$PATCHED_BUILD" patched
    stamp_want=$(install_stamp)
    if [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp_want" ] \
        && "$VENV/bin/python" -c 'import spice_initial_draw' 2>/dev/null; then
        step "patched: installed package is up to date (sources unchanged since its install)"
        return
    fi
    rm -f "$stamp_file"
    step "patched: building spice-server with spice_patch/ and the harness, installing the Python package (about 1 minute the first time)"
    run_logged "patched: pip install" "$BUILD/logs/patched-install.log" \
        "$VENV/bin/pip" install --no-build-isolation --no-deps --no-index -v \
        -Cbuild-dir="$PATCHED_BUILD" \
        -Csetup-args=-Dvariant_libraries="$(variant_libraries_option)" \
        "$TOP"
    echo "$stamp_want" > "$stamp_file"
}

setup_all() {
    claim_build_dir
    mkdir -p "$BUILD/logs"
    ensure_tarball
    sync_wrap_with_series
    ensure_venv
    build_stock
    build_patched
    build_sanitizer_variants
    step "set-up done ($SID_ENVIRONMENT)"
}

# meson install of the patched spice-server (library, headers, spice-server.pc)
# into PREFIX, from a build directory of its own configured with that prefix.
run_install() {
    local prefix=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --prefix) prefix=${2:-}; shift ;;
            --prefix=*) prefix=${1#--prefix=} ;;
            *) die "reading the install options" "unknown option '$1'" "use: ./run install --prefix DIR" ;;
        esac
        shift
    done
    [ -n "$prefix" ] || die "reading the install options" "no --prefix given" "use: ./run install --prefix DIR"
    mkdir -p "$prefix"
    prefix=$(cd "$prefix" && pwd)
    local builddir=$BUILD/install
    if [ -e "$builddir/build.ninja" ]; then
        run_logged "install: configuring for $prefix" "$BUILD/logs/install-setup.log" \
            meson configure "$builddir" --prefix="$prefix"
    else
        step "install: configuring a build for $prefix"
        run_logged "install: configuring for $prefix" "$BUILD/logs/install-setup.log" \
            meson setup "$builddir" "$TOP" --prefix="$prefix" --libdir=lib --buildtype=release -Db_ndebug=if-release
    fi
    step "install: building and installing the patched spice-server into $prefix"
    run_logged "install: meson install" "$BUILD/logs/install.log" \
        meson install -C "$builddir" --tags runtime,devel
    note "installed: $(cd "$prefix" && find . -name 'libspice-server.so*' -o -name spice-server.pc -o -name spice.h | sort | tr '\n' ' ')"
    note "build against it with: PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs spice-server"
}

run_info() {
    "$VENV/bin/python" -m spice_initial_draw info
}

# spice-server's own registered test suite, for one variant.
run_upstream_suite() {
    local name=$1 builddir=$2
    step "$name: spice-server's own test suite (meson test)"
    meson test -C "$builddir" --suite spice-server --suite spice-common --print-errorlogs --num-processes 2 2>&1 |
        grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Expected Fail|Unexpected Pass|Skipped|Timeout): *[0-9]' | sed "s/^/    [$name] /"
    return "${PIPESTATUS[0]}"
}

# spice-server's test-video-encoders, run from the directory it needs (upstream
# registers it, with -Dextra-checks, so that meson runs it elsewhere: exit 127).
run_video_encoders() {
    local name=$1 builddir=$2
    step "$name: spice-server's test-video-encoders (about 2 minutes)"
    local dir=$builddir/subprojects/$SPICE_DIR/server/tests
    run_logged "$name: test-video-encoders" "$BUILD/logs/$name-test-video-encoders.log" \
        bash -c "cd '$dir' && '$TOP/subprojects/$SPICE_DIR/server/tests/test-video-encoders'"
    note "$name: test-video-encoders passed ($(grep -c -i 'ok\|pass' "$BUILD/logs/$name-test-video-encoders.log") lines of success)"
}

run_tests() {
    local extended=0 pytest_args=() test_paths=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --extended) extended=1 ;;
            -*) pytest_args+=("$1") ;;
            *) pytest_args+=("$1")
               # a test file or node id: run only what was named
               if [ -e "${1%%::*}" ]; then test_paths=1; fi ;;
        esac
        shift
    done
    local failed=0
    if [ "$test_paths" = 1 ]; then
        note "tests named: spice-server's own suite skipped (./run test without paths runs it)"
    else
        run_upstream_suite stock "$STOCK_BUILD" || failed=1
        run_upstream_suite patched "$PATCHED_BUILD" || failed=1
        pytest_args+=("$TOP/tests")
    fi
    if [ "$extended" = 1 ]; then
        run_video_encoders stock "$STOCK_BUILD"
        run_video_encoders patched "$PATCHED_BUILD"
    fi
    step "pytest$([ "$extended" = 1 ] && echo ' (extended)')"
    [ "$extended" = 1 ] && pytest_args=(--extended "${pytest_args[@]}")
    SID_TOP=$TOP "$VENV/bin/python" -m pytest -p no:cacheprovider "${pytest_args[@]}" || failed=1
    [ "$failed" = 0 ] || { echo "some tests failed (see above)" >&2; return 1; }
}

run_bench() {
    SID_TOP=$TOP "$VENV/bin/python" "$TOP/bench/run.py" --output "$TOP/bench/results" "$@"
}

run_demo() {
    "$VENV/bin/python" -m spice_initial_draw demo --output "$TOP/demo-output" "$@"
}

run_shell() {
    if [ $# -gt 0 ]; then
        PATH=$VENV/bin:$PATH "$@"
    else
        PATH=$VENV/bin:$PATH PS1='(spice-initial-draw) \w\$ ' bash --norc -i
    fi
}
