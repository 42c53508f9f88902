# shellcheck shell=bash
# ./run deb: Debian 13 binary packages of spice 0.16.0 with the series.
#
# Debian's own source package spice 0.16.0-3 (apt-get source from Debian
# unstable, each file checked against the .dsc, the release tarball against
# its pinned sha256) is unpacked with its own patches; the series of
# spice_patch/ are added to debian/patches after them, one directory per
# series (debian/patches/initial-frame/SERIES/PATCH), in the order of
# spice_patch/series and of each series file; a changelog entry gives the
# version DEB_VERSION, which sorts above Debian's; dpkg-buildpackage -b
# builds it (Debian's rules run spice's test suite and check the symbols
# file at level 4: any change of the exported ABI fails the build).
#
# Debian's build dependencies are not in the build-and-test root (its package
# list is the key of everyone's root): the build runs in an overlay of the
# root whose upper layer holds them (about 65 MB, 10 s to install the first
# time), cached beside the root ($SID_CACHE/deb-build-KEY, bound into the
# root at DEB_LAYER by tools/root.sh). Nothing of Debian's goes into this
# work tree's history: the source package is fetched into build/deb-src.

DEB_SOURCE_VERSION=0.16.0-3
# Debian's version + "+initialframe1": above 0.16.0-3, below Debian's next
# revision (0.16.0-4) or release, which then replaces it.
DEB_VERSION=$DEB_SOURCE_VERSION+initialframe1
DEB_PATCH_PREFIX=initial-frame
DEB_MAINTAINER="spice-initial-draw developers <devel@spice-initial-draw.invalid>"
DEB_OUT=$BUILD/deb
DEB_SRC=$BUILD/deb-src
# the library the variant "deb" loads: a link into what dpkg -x extracted
DEB_LIBRARY=$DEB_OUT/libspice-server.so.1
# where tools/root.sh binds the cached layer of the build dependencies
DEB_LAYER=/var/cache/sid-deb-build

# The patches as debian/patches names them, one a line, in the order they
# apply after the packaging's own: PREFIX/SERIES/PATCH.
deb_patch_list() {
    local list p
    list=$(series_patches) || exit 1
    for p in $list; do echo "$DEB_PATCH_PREFIX/$p"; done
}

# deb_add_series TREE: copy the series into TREE/debian/patches and append
# them to its series file, after the packaging's own patches.
deb_add_series() {
    local tree=$1 patches=$1/debian/patches name list
    [ -d "$tree/debian" ] || die "adding the series to the packaging" "$tree has no debian/" "unpack the source package again"
    mkdir -p "$patches"
    touch "$patches/series"
    if grep -q "^$DEB_PATCH_PREFIX/" "$patches/series"; then
        die "adding the series to the packaging" "$patches/series already lists $DEB_PATCH_PREFIX/ patches" \
            "unpack the source package again (rm -rf $DEB_SRC)"
    fi
    # the series file may lack its last newline
    [ ! -s "$patches/series" ] || [ -z "$(tail -c1 "$patches/series")" ] || echo >> "$patches/series"
    list=$(deb_patch_list) || exit 1
    for name in $list; do
        mkdir -p "$(dirname "$patches/$name")"
        cp "$TOP/spice_patch/${name#"$DEB_PATCH_PREFIX"/}" "$patches/$name"
        echo "$name" >> "$patches/series"
    done
}

# deb_add_changelog TREE: the entry of DEB_VERSION on top of Debian's.
deb_add_changelog() {
    local tree=$1 date counts="" dir n tmp newest p d
    for dir in $(series_names); do
        n=$(series_patches | grep -c "^$dir/")
        counts+="${counts:+, }$dir ($n)"
    done
    # the date of the newest patch (its Date: line), so that the same series
    # gives the same entry (dpkg takes SOURCE_DATE_EPOCH from it)
    newest=0
    for p in $(series_patches); do
        d=$(sed -n '1,/^$/s/^Date: //p' "$TOP/spice_patch/$p" | head -n1)
        d=$(date -d "$d" +%s 2>/dev/null || echo 0)
        [ "$d" -le "$newest" ] || newest=$d
    done
    [ "$newest" != 0 ] || newest=$(date +%s)
    date=$(LC_ALL=C date -u -R -d "@$newest")
    tmp=$(mktemp)
    cat > "$tmp" <<EOF
spice ($DEB_VERSION) trixie; urgency=medium

  * spice-initial-draw: a remote client of a GL scanout gets the current
    picture when it connects, and QEMU's draws complete once each. The
    series are added to debian/patches/$DEB_PATCH_PREFIX/, after the
    packaging's own patches: $counts.

 -- $DEB_MAINTAINER  $date

EOF
    cat "$tree/debian/changelog" >> "$tmp"
    mv "$tmp" "$tree/debian/changelog"
}

# What the packages are made of: a new series or a change of this script
# makes them again.
deb_stamp() {
    { echo "$DEB_VERSION"; deb_patch_list
      for p in $(series_patches); do cat "$TOP/spice_patch/$p"; done
      cat "$TOP/tools/deb.sh"
    } | sha256sum | cut -c1-16
}

deb_up_to_date() {
    [ "$(cat "$DEB_OUT/.stamp" 2>/dev/null)" = "$(deb_stamp)" ] &&
        compgen -G "$DEB_OUT/libspice-server1_${DEB_VERSION}_*.deb" >/dev/null
}

# Debian's source package, each file checked against the .dsc's sha256 (apt
# checked the .dsc against the signed archive index), the release tarball
# also against the project's pin.
deb_fetch_source() {
    local dir=$1 dsc sum name
    mkdir -p "$dir"
    step "deb: fetching Debian's source package spice=$DEB_SOURCE_VERSION"
    if ! (cd "$dir" && { apt-get source -q --download-only "spice=$DEB_SOURCE_VERSION" ||
                          { apt-get update -q && apt-get source -q --download-only "spice=$DEB_SOURCE_VERSION"; }; }) \
            >"$BUILD/logs/deb-source.log" 2>&1; then
        tail -n 5 "$BUILD/logs/deb-source.log" >&2
        die "fetching Debian's source package" "apt-get source spice=$DEB_SOURCE_VERSION failed (it needs a deb-src entry for Debian unstable)" \
            "check the root's /etc/apt/sources.list.d/unstable.sources and run ./run deb again"
    fi
    dsc=$dir/spice_$DEB_SOURCE_VERSION.dsc
    [ -e "$dsc" ] || die "fetching Debian's source package" "no $dsc" "run ./run deb again"
    while read -r sum _ name; do
        [ "$(sha256sum "$dir/$name" | cut -d' ' -f1)" = "$sum" ] ||
            die "checking Debian's source package" "$name does not have the sha256 of the .dsc ($sum)" "rm -rf $dir and run ./run deb again"
        note "deb: $name: sha256 as in the .dsc"
    done < <(sed -n '/^Checksums-Sha256:/,/^[^ ]/s/^ \([0-9a-f]\{64\}\) /\1 /p' "$dsc")
    [ "$(sha256sum "$dir/spice_0.16.0.orig.tar.bz2" | cut -d' ' -f1)" = "$SPICE_SHA256" ] ||
        die "checking Debian's source package" "its orig tarball is not the pinned release tarball ($SPICE_SHA256)" "rm -rf $dir and run ./run deb again"
}

# In the build root (the overlay with the build dependencies): fetch, patch,
# build, collect the packages into DEB_OUT.
deb_build() {
    local t0 tree=$DEB_SRC/spice-0.16.0 log=$BUILD/logs/deb-build.log
    t0=$(date +%s)
    rm -rf "$DEB_SRC"
    deb_fetch_source "$DEB_SRC"
    step "deb: unpacking it with its own patches, adding the series and a changelog entry for $DEB_VERSION"
    run_logged "deb: dpkg-source -x" "$BUILD/logs/deb-unpack.log" \
        bash -c "cd '$DEB_SRC' && dpkg-source -x spice_$DEB_SOURCE_VERSION.dsc"
    note "deb: the packaging's own patches: $(grep -v -c '^\s*\(#\|$\)' "$tree/debian/patches/series")"
    deb_add_series "$tree"
    note "deb: the series added: $(deb_patch_list | wc -l) patches ($(series_names | tr '\n' ' '| sed 's/ $//'))"
    deb_add_changelog "$tree"
    step "deb: Debian's build dependencies (cached in the build layer after the first time)"
    run_logged "deb: apt-get build-dep" "$BUILD/logs/deb-build-dep.log" \
        bash -c "cd '$tree' && { DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q --no-install-recommends . ||
                 { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q --no-install-recommends .; }; } && apt-get clean"
    step "deb: dpkg-buildpackage -b (applies the patches, builds, runs spice's test suite, checks the symbols; a few minutes)"
    # nice: a build of this size shares the machine with whatever else runs
    run_logged "deb: dpkg-buildpackage" "$log" \
        bash -c "cd '$tree' && DEB_BUILD_OPTIONS='parallel=$(nproc)' nice -n 10 dpkg-buildpackage -b -us -uc"
    rm -rf "$DEB_OUT"
    mkdir -p "$DEB_OUT"
    cp "$DEB_SRC"/*.deb "$DEB_SRC"/*.buildinfo "$DEB_SRC"/*.changes "$DEB_OUT/"
    deb_build_report "$log" "$(( $(date +%s) - t0 ))" | tee "$DEB_OUT/build-report.txt"
    deb_stamp > "$DEB_OUT/.stamp"
}

# What Debian's build said: the patches applied, the test suite, the symbols.
deb_build_report() {
    local log=$1 secs=$2 f
    echo "deb: built in ${secs}s: spice $DEB_VERSION"
    echo "deb: the series' patches applied by dpkg-buildpackage: $(grep -c "^dpkg-source: info: applying $DEB_PATCH_PREFIX/" "$log") of $(deb_patch_list | wc -l)"
    echo "deb: spice's test suite (dh_auto_test):"
    grep -E '^(Ok|Expected Fail|Fail|Unexpected Pass|Skipped|Timeout): *[0-9]+' "$log" | sed 's/^/    /'
    if grep -q 'dpkg-gensymbols: warning' "$log"; then
        echo "deb: dpkg-gensymbols warned:"
        grep -A20 'dpkg-gensymbols: warning' "$log" | sed 's/^/    /'
    else
        grep -q '^ *dh_makeshlibs' "$log" || echo "deb: dh_makeshlibs did not run: no symbols check"
        echo "deb: dpkg-gensymbols (dh_makeshlibs, DPKG_GENSYMBOLS_CHECK_LEVEL=4 in Debian's rules): no warning, the symbols file matches"
    fi
    for f in "$DEB_OUT"/*.deb; do
        echo "deb: $(basename "$f"): $(stat -c %s "$f") bytes, $(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version), installed size $(dpkg-deb -f "$f" Installed-Size) KiB"
    done
}

# The library of the variant "deb": libspice-server1's files, as dpkg -x
# extracts them, and a link DEB_LIBRARY to its libspice-server.so.1.
deb_extract() {
    local pkg lib
    pkg=$(compgen -G "$DEB_OUT/libspice-server1_${DEB_VERSION}_*.deb" | head -n1)
    [ -n "$pkg" ] || die "extracting libspice-server1" "no libspice-server1_${DEB_VERSION}_*.deb in $DEB_OUT" "run ./run deb"
    rm -rf "$DEB_OUT/extracted"
    dpkg -x "$pkg" "$DEB_OUT/extracted"
    lib=$(find "$DEB_OUT/extracted/usr/lib" -name libspice-server.so.1 | head -n1)
    [ -n "$lib" ] || die "extracting libspice-server1" "$pkg has no libspice-server.so.1" "see $BUILD/logs/deb-build.log"
    ln -sfn "${lib#"$DEB_OUT"/}" "$DEB_LIBRARY"
    note "deb: the variant deb loads $(readlink -f "$DEB_LIBRARY")"
}

# Run `./run deb` again in the build root: an overlay of this root whose
# upper layer (DEB_LAYER, cached beside the root) takes the build
# dependencies. One build at a time uses the layer.
deb_enter_build_root() {
    local lock
    mountpoint -q "$DEB_LAYER" 2>/dev/null || die "building the packages" \
        "$DEB_LAYER is not mounted: the cached layer for Debian's build dependencies is bound there by ./run when it enters the Debian 13 root" \
        "run ./run deb from the host (as root), not from a shell of the root"
    exec {lock}>"$DEB_LAYER/lock"
    flock -n "$lock" || { note "deb: another package build uses the build layer: waiting"; flock "$lock"; }
    mkdir -p "$DEB_LAYER/upper" "$DEB_LAYER/work" "$DEB_LAYER/merged"
    # mounts in a namespace of their own (the root's own is private already)
    unshare -m --propagation unchanged bash -c '
        set -e
        layer=$1 top=$2; shift 2
        merged=$layer/merged
        mount -t overlay overlay -o "lowerdir=/,upperdir=$layer/upper,workdir=$layer/work" "$merged"
        mount -t proc proc "$merged/proc"
        mount --rbind /dev "$merged/dev"
        mount --rbind /sys "$merged/sys"
        mkdir -p "$merged$top"
        mount --bind "$top" "$merged$top"
        exec chroot "$merged" /usr/bin/env -i \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" SID_T0="$SID_T0" \
            SID_IN_ROOT="$SID_IN_ROOT" SID_IN_DEB_BUILD_ROOT=1 \
            bash -c "cd \"$top\" && exec \"\$@\"" bash "$@"
    ' bash "$DEB_LAYER" "$TOP" "$TOP/run" deb
    exec {lock}>&-
}

# The packages, built if the series (or this script) changed since, and the
# variant's library extracted. Under a lock: the deb variant's first use in
# a test run and ./run deb may ask at once.
deb_packages() {
    local lock
    exec {lock}>"$BUILD/.deb.lock"
    flock "$lock"
    if deb_up_to_date; then
        step "deb: the packages of $DEB_VERSION are up to date (series unchanged since they were built)"
    else
        deb_enter_build_root
        deb_up_to_date || die "building the packages" "the build ended without the packages" "see $BUILD/logs/deb-build.log"
    fi
    deb_extract
    exec {lock}>&-
}
