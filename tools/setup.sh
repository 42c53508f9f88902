# shellcheck shell=bash
# Set-up, in whatever environment has the requirements (the host, or the
# Debian 13 root): the release tarball, the stock and patched builds, the
# virtual environment and the Python package; the sanitizer variants on demand.

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
# its ninja target: what a build of the library alone compiles
LIBRARY_TARGET=subprojects/$SPICE_DIR/server/spice-server:shared_library
# Sanitizer variants of both libraries, for the race tests:
# NAME:PROJECT:SANITIZER:BUILDTYPE. Built on demand only (build_variant), by
# the tests that use them. The patched ones, which every ./run test builds,
# are -O0: sanitized spice-server compiles in 25 s (ASan) and 17 s (TSan)
# instead of about 65 s at -O2, and the reproductions and the state machine
# report the same. The stock ones (./run test --extended only) stay -O2:
# the upstream destroy-time UB race showed there in 4-14 of 30-40 runs, at
# -O0 in none of 60 (test_upstream_destroy_ub_also_on_stock).
SANITIZER_VARIANTS="stock-asan:stock:address,undefined:debugoptimized patched-asan:.:address,undefined:debug stock-tsan:stock:thread:debugoptimized patched-tsan:.:thread:debug"
# The variant with the core series alone (spice_patch/core), for the tests
# marked core_series: its project is core/ (as stock/ is stock's), its wrap
# applies the build fix and that series. Built on demand only, like the
# sanitizer variants.
CORE_SERIES=core
CORE_BUILD=$BUILD/$CORE_SERIES

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

# The series of spice_patch/, in order: spice_patch/series lists their
# directories, one a line ('#' starts a comment line).
series_names() {
    local dir
    [ -e "$TOP/spice_patch/series" ] || die "reading spice_patch/series" "it does not exist" \
        "list the series directories of spice_patch/ in it, one a line, in the order they apply"
    while read -r dir; do
        [ -n "$dir" ] && [ "${dir:0:1}" != "#" ] || continue
        [ -d "$TOP/spice_patch/$dir" ] || die "reading spice_patch/series" \
            "it lists the series $dir, which is not a directory in spice_patch/" "fix spice_patch/series"
        [ -e "$TOP/spice_patch/$dir/series" ] || die "reading spice_patch/$dir/series" \
            "it does not exist" "list the patches of spice_patch/$dir in it, in order (not the cover letter)"
        echo "$dir"
    done < "$TOP/spice_patch/series"
}

# Every patch of the series, in order, one a line as DIR/PATCH: each series
# of spice_patch/series in order, and in it the patches of its own series
# file in order (the wraps' diff_files and the Debian packaging's
# debian/patches both take this list). With LAST (a series name), the series
# after it are left out.
series_patches() {
    local last=${1:-} dir p found=0 dirs
    dirs=$(series_names) || exit 1
    for dir in $dirs; do
        while read -r p; do
            [ -n "$p" ] && [ "${p:0:1}" != "#" ] || continue
            [ -e "$TOP/spice_patch/$dir/$p" ] || die "reading spice_patch/$dir/series" \
                "it lists $p, which is not in spice_patch/$dir/" "fix spice_patch/$dir/series"
            echo "$dir/$p"
        done < "$TOP/spice_patch/$dir/series"
        if [ "$dir" = "$last" ]; then found=1; break; fi
    done
    [ -z "$last" ] || [ "$found" = 1 ] || die "reading spice_patch/series" \
        "there is no series $last in it" "add spice_patch/$last and list it in spice_patch/series"
}

# The patches of the patched variant, comma-separated, as diff_files of
# the wrap: the build fix, then spice_patch/DIR/PATCH for each of
# series_patches. With LAST, up to that series: the core variant is
# `patched_diff_files core`.
patched_diff_files() {
    local files=(spice-0.16.0-meson-subproject.patch) p list
    list=$(series_patches "${1:-}") || exit 1
    for p in $list; do files+=("spice_patch/$p"); done
    local IFS=,
    echo "${files[*]}" | sed 's/,/, /g'
}

# Keep the wraps' diff_files in step with the series: the patched one with
# every series, the core variant's with the core series alone.
sync_wrap_with_series() {
    local wrap want have last
    for wrap in "$TOP/subprojects/spice-server.wrap" "$TOP/$CORE_SERIES/subprojects/spice-server.wrap"; do
        last=""
        [ "$wrap" = "$TOP/subprojects/spice-server.wrap" ] || last=$CORE_SERIES
        want=$(patched_diff_files "$last") || exit 1
        have=$(sed -n 's/^diff_files = //p' "$wrap")
        if [ "$want" != "$have" ]; then
            note "${wrap#"$TOP"/}: diff_files set from spice_patch/series${last:+ (the $last series alone)}"
            sed -i "s|^diff_files = .*|diff_files = $want|" "$wrap"
        fi
    done
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
# Under a lock: two runs in this tree may ask for the same one at once.
build_sanitizer_variant() {
    local name=$1 project=$2 sanitizer=$3 buildtype=$4 builddir=$BUILD/$1 lock
    exec {lock}>"$BUILD/.$name.lock"
    flock "$lock"
    if [ ! -e "$builddir/build.ninja" ]; then
        step "$name: configuring (-Db_sanitize=$sanitizer, --buildtype=$buildtype)"
        run_logged "$name: meson setup" "$BUILD/logs/$name-setup.log" \
            meson setup "$builddir" "$TOP/$project" --buildtype="$buildtype" -Db_sanitize="$sanitizer" -Db_lundef=false
    fi
    step "$name: building libspice-server (under a minute the first time)"
    run_logged "$name: building" "$BUILD/logs/$name-build.log" \
        meson compile -C "$builddir" "$LIBRARY_TARGET"
    exec {lock}>&-
}

sanitizer_variant_names() {
    local entry names=()
    for entry in $SANITIZER_VARIANTS; do names+=("${entry%%:*}"); done
    echo "${names[*]}"
}

# Every variant set-up leaves out, built on demand (build_variant).
lazy_variant_names() {
    echo "$(sanitizer_variant_names) $CORE_SERIES deb"
}

# The core variant: spice-server with the core series alone, configured as
# stock (release), only libspice-server built. Under a lock, as above.
build_core_variant() {
    local lock
    exec {lock}>"$BUILD/.$CORE_SERIES.lock"
    flock "$lock"
    ensure_subproject "$TOP/$CORE_SERIES" "$CORE_BUILD" "$CORE_SERIES"
    if [ ! -e "$CORE_BUILD/build.ninja" ]; then
        step "$CORE_SERIES: configuring (spice_patch/$CORE_SERIES alone)"
        run_logged "$CORE_SERIES: meson setup" "$BUILD/logs/$CORE_SERIES-setup.log" \
            meson setup "$CORE_BUILD" "$TOP/$CORE_SERIES" --buildtype=release -Db_ndebug=if-release
    fi
    step "$CORE_SERIES: building libspice-server with the $CORE_SERIES series alone (about 1 minute the first time)"
    run_logged "$CORE_SERIES: building" "$BUILD/logs/$CORE_SERIES-build.log" \
        meson compile -C "$CORE_BUILD" "$LIBRARY_TARGET"
    exec {lock}>&-
}

# The variant NAME, on demand: set-up (setup_all) leaves the sanitizer
# variants and the core variant out, ./run build --variant NAME builds one,
# and the tests that use one call that on its first use (tests/conftest.py,
# build_variant). It needs the tarball and its project's extracted tree,
# not the virtual environment or the package, so it can run while a test
# run uses them.
build_variant() {
    local want=$1 entry name project sanitizer base
    if [ "$want" = deb ]; then
        # the packages of ./run deb, which builds in the Debian 13 root
        if [ -n "${SID_IN_ROOT:-}" ]; then run_deb; else "$TOP/run" deb; fi
        step "deb: built ($DEB_LIBRARY)"
        return
    fi
    if [ "$want" = "$CORE_SERIES" ]; then
        claim_build_dir
        mkdir -p "$BUILD/logs"
        ensure_tarball
        sync_wrap_with_series
        build_core_variant
        step "$CORE_SERIES: built ($CORE_BUILD/$LIBRARY_IN_BUILD)"
        return
    fi
    for entry in $SANITIZER_VARIANTS; do
        IFS=: read -r name project sanitizer buildtype <<<"$entry"
        [ "$name" = "$want" ] || continue
        base=${name%-*}
        claim_build_dir
        mkdir -p "$BUILD/logs"
        ensure_tarball
        sync_wrap_with_series
        ensure_subproject "$TOP/$project" "$BUILD/$base" "$base"
        build_sanitizer_variant "$name" "$project" "$sanitizer" "$buildtype"
        step "$name: built ($BUILD/$name/$LIBRARY_IN_BUILD)"
        return
    done
    die "reading the build options" "there is no variant '$want' to build" \
        "use one of: $(lazy_variant_names | sed 's/ /, /g'), or all (./run build alone builds stock and patched)"
}

# NAME=PATH of every variant besides the bundled patched one.
variant_libraries_option() {
    local entry name list="stock=$STOCK_LIBRARY"
    for entry in $SANITIZER_VARIANTS; do
        name=${entry%%:*}
        list+=",$name=$BUILD/$name/$LIBRARY_IN_BUILD"
    done
    list+=",$CORE_SERIES=$CORE_BUILD/$LIBRARY_IN_BUILD"
    list+=",deb=$DEB_LIBRARY"
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
    step "set-up done ($SID_ENVIRONMENT)"
}
