# shellcheck shell=bash
# The commands of ./run: run_NAME for each NAME of the table COMMANDS in
# ./run, called with the command's arguments in the build environment (the
# host or the Debian 13 root). Each sets up first (tools/setup.sh).

# ./run build: set-up. ./run build --variant NAME (or all), repeatable: only
# those on-demand variants: the sanitizer ones and core (the tests that use
# one build it themselves).
run_build() {
    local variants=() v entry
    while [ $# -gt 0 ]; do
        case "$1" in
            --variant) [ $# -ge 2 ] || die "reading the build options" "--variant needs a name" "use: ./run build [--variant NAME]..."
                       variants+=("$2"); shift ;;
            --variant=*) variants+=("${1#--variant=}") ;;
            *) die "reading the build options" "unknown option '$1'" "use: ./run build [--variant NAME]..." ;;
        esac
        shift
    done
    for v in "${variants[@]}"; do
        case " all $(lazy_variant_names) " in
            *" $v "*) ;;
            *) die "reading the build options" "there is no variant '$v' to build" \
                   "use one of: $(lazy_variant_names | sed 's/ /, /g'), or all (./run build alone builds stock and patched)" ;;
        esac
    done
    if [ ${#variants[@]} = 0 ]; then
        setup_all
        return
    fi
    for v in "${variants[@]}"; do
        if [ "$v" = all ]; then
            for entry in $(lazy_variant_names); do build_variant "$entry"; done
        else
            build_variant "$v"
        fi
    done
}

# meson install of the patched spice-server (library, headers, spice-server.pc)
# into PREFIX, from a build directory of its own configured with that prefix.
run_install() {
    local prefix=""
    setup_all
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
    # only what the runtime and devel tags install: the library (its headers
    # and spice-server.pc come from configuring), not the harness or tests
    run_logged "install: building libspice-server" "$BUILD/logs/install-build.log" \
        meson compile -C "$builddir" "$LIBRARY_TARGET"
    run_logged "install: meson install" "$BUILD/logs/install.log" \
        meson install -C "$builddir" --tags runtime,devel --no-rebuild
    note "installed: $(cd "$prefix" && find . -name 'libspice-server.so*' -o -name spice-server.pc -o -name spice.h | sort | tr '\n' ' ')"
    note "build against it with: PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs spice-server"
}

# ./run deb: the Debian 13 packages of spice 0.16.0-3 with the series
# (tools/deb.sh), in build/deb/; skipped when the series did not change since
# they were built. Always in the Debian 13 root (./run enters it for deb,
# also on a host that has the build's requirements). build/deb/ does not
# depend on where the rest of build/ was made: no claim_build_dir.
run_deb() {
    [ $# = 0 ] || die "reading the deb options" "unknown argument '$1'" "use: ./run deb"
    [ -n "${SID_IN_ROOT:-}" ] || die "building the packages" "./run deb builds in the Debian 13 root only" "run ./run deb as root"
    mkdir -p "$BUILD/logs"
    if [ -n "${SID_IN_DEB_BUILD_ROOT:-}" ]; then
        deb_build
        return
    fi
    deb_packages
    step "deb: the packages are in $DEB_OUT:"
    ls -l "$DEB_OUT"/*.deb | sed 's/^/    /'
}

run_info() {
    setup_all
    "$VENV/bin/python" -m spice_initial_draw info --patch-dir "$TOP/spice_patch"
}

# spice-server's own registered test suite, for one variant.
upstream_suite() {
    local name=$1 builddir=$2
    step "$name: spice-server's own test suite (meson test)"
    meson test -C "$builddir" --suite spice-server --suite spice-common --print-errorlogs --num-processes 2 2>&1 |
        grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Expected Fail|Unexpected Pass|Skipped|Timeout): *[0-9]' | sed "s/^/    [$name] /"
    return "${PIPESTATUS[0]}"
}

# spice-server's test-video-encoders, run from the directory it needs (upstream
# registers it, with -Dextra-checks, so that meson runs it elsewhere: exit 127).
video_encoders_test() {
    local name=$1 builddir=$2
    step "$name: spice-server's test-video-encoders (about 2 minutes)"
    local dir=$builddir/subprojects/$SPICE_DIR/server/tests
    run_logged "$name: test-video-encoders" "$BUILD/logs/$name-test-video-encoders.log" \
        bash -c "cd '$dir' && '$TOP/subprojects/$SPICE_DIR/server/tests/test-video-encoders'"
    note "$name: test-video-encoders passed ($(grep -c -i 'ok\|pass' "$BUILD/logs/$name-test-video-encoders.log") lines of success)"
}

run_test() {
    local extended=0 pytest_args=() test_paths=0
    setup_all
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
        upstream_suite stock "$STOCK_BUILD" || failed=1
        upstream_suite patched "$PATCHED_BUILD" || failed=1
        pytest_args+=("$TOP/tests")
    fi
    if [ "$extended" = 1 ]; then
        video_encoders_test stock "$STOCK_BUILD"
        video_encoders_test patched "$PATCHED_BUILD"
    fi
    step "pytest$([ "$extended" = 1 ] && echo ' (extended)')"
    [ "$extended" = 1 ] && pytest_args=(--extended "${pytest_args[@]}")
    SID_TOP=$TOP "$VENV/bin/python" -m pytest -p no:cacheprovider "${pytest_args[@]}" || failed=1
    [ "$failed" = 0 ] || { echo "some tests failed (see above)" >&2; return 1; }
}

run_bench() {
    setup_all
    SID_TOP=$TOP "$VENV/bin/python" "$TOP/bench/run.py" --output "$TOP/bench/results" "$@"
}

run_demo() {
    setup_all
    "$VENV/bin/python" -m spice_initial_draw demo --output "$TOP/demo-output" "$@"
}

run_shell() {
    setup_all
    if [ $# -gt 0 ]; then
        PATH=$VENV/bin:$PATH "$@"
    else
        PATH=$VENV/bin:$PATH PS1='(spice-initial-draw) \w\$ ' bash --norc -i
    fi
}
