# shellcheck shell=bash
# The Debian 13 build-and-test root, for hosts that lack what the build needs.
# Sourced by ./run. Needs root (debootstrap, mounts, chroot).
#
# The root lives outside the work tree, in $SID_CACHE (default
# /var/cache/spice-initial-draw), keyed by tools/root-packages.txt and
# ROOT_FORMAT, so a fresh clone on the same machine reuses it and a changed package
# list makes a new one. It is made under a temporary name and renamed when
# complete, so a killed run never leaves a half-made root in use.
# Every mount (the root's /proc, /dev, /sys and the work tree) is made inside a
# private mount namespace (unshare -m): the kernel undoes them when the run
# ends, killed or not, so nothing is left mounted on the host.

SID_CACHE=${SID_CACHE:-/var/cache/spice-initial-draw}
ROOT_SUITE=trixie
# Bump when make_root changes what a root contains.
ROOT_FORMAT=1

root_key() {
    { cat "$TOP/tools/root-packages.txt"; echo "$ROOT_SUITE $ROOT_FORMAT"; } | sha256sum | cut -c1-12
}

root_dir() {
    echo "$SID_CACHE/debian13-$(root_key)"
}

# The cached upper layer of the root's overlay in which ./run deb builds,
# with Debian's build dependencies of spice (tools/deb.sh): bound into the
# root at DEB_LAYER, beside the root rather than in it (the root's package
# list is its key), and kept as long as the root.
deb_layer_dir() {
    echo "$SID_CACHE/deb-build-$(root_key)"
}

# The Debian mirror the host's apt already uses: the root is made from the
# same one, so no address is written into the project.
host_debian_mirror() {
    local uri
    if [ -n "${SID_DEBIAN_MIRROR:-}" ]; then echo "$SID_DEBIAN_MIRROR"; return; fi
    uri=$(awk 'tolower($1)=="uris:" {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null |
          grep -E '/debian/?$' | head -n1)
    if [ -z "$uri" ]; then
        uri=$(awk '$1=="deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' \
              /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | grep -E '/debian/?$' | head -n1)
    fi
    [ -n "$uri" ] || die "making the Debian 13 root" "found no Debian mirror in the host's apt sources" \
        "set SID_DEBIAN_MIRROR to a Debian mirror URL and run again"
    echo "${uri%/}"
}

# Undo mounts left under the cache by a run of an older ./run that did not use
# a mount namespace, or by a debootstrap killed outside one. Deepest first.
remove_stale_mounts() {
    local mp
    awk -v c="$SID_CACHE/" 'index($5, c) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r mp; do
        note "removing a stale mount: $mp"
        umount -l "$mp" || true
    done
}

# Temporary roots of killed runs. Called with the cache lock held.
remove_unfinished_roots() {
    local d
    for d in "$SID_CACHE"/*.unfinished; do
        [ -e "$d" ] || continue
        note "removing an unfinished root from a killed run: $d"
        rm -rf --one-file-system "$d"
    done
}

# Roots made from an older package list (2.5 GB each), unless a run is using
# one (it holds a shared lock on the root's marker). Called with the cache lock held.
remove_other_roots() {
    local keep=$1 d
    for d in "$SID_CACHE"/debian13-*; do
        [ -d "$d" ] && [ "$d" != "$keep" ] || continue
        if [ -e "$d/.sid-root-complete" ] && ! flock -n -x "$d/.sid-root-complete" true; then
            note "keeping the root of an older package list, a run is using it: $d"
            continue
        fi
        note "removing the root of an older package list: $d"
        rm -rf --one-file-system "$d"
    done
    for d in "$SID_CACHE"/deb-build-*; do
        [ -d "$d" ] && [ "$d" != "$(deb_layer_dir)" ] || continue
        if [ -e "$d/lock" ] && ! flock -n -x "$d/lock" true; then continue; fi
        note "removing the package build layer of an older root: $d"
        rm -rf --one-file-system "$d"
    done
}

make_root() {
    local final=$1 tmp=$1.unfinished mirror
    mirror=$(host_debian_mirror)
    command -v debootstrap >/dev/null || {
        step "installing debootstrap on the host"
        run_logged "installing debootstrap" "$SID_CACHE/debootstrap-install.log" \
            bash -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap'
    }
    rm -rf --one-file-system "$tmp"
    step "making the Debian 13 root (debootstrap, about 30 s): $final"
    # debootstrap mounts /proc and /sys in the target: keep them in a namespace.
    run_logged "making the Debian 13 root (debootstrap)" "$SID_CACHE/debootstrap.log" \
        unshare -m --propagation private debootstrap --variant=minbase "$ROOT_SUITE" "$tmp" "$mirror"

    # spice-protocol 0.14.5 (headers only) from unstable; nothing else from there.
    cat > "$tmp/etc/apt/sources.list.d/unstable.sources" <<EOF
Types: deb deb-src
URIs: $mirror
Suites: sid
Components: main
Check-Valid-Until: no
EOF
    cat > "$tmp/etc/apt/preferences.d/unstable" <<'EOF'
Package: *
Pin: release n=sid
Pin-Priority: 1

Package: libspice-protocol-dev
Pin: release n=sid
Pin-Priority: 990
EOF
    cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
    local packages
    packages=$(grep -v -E '^\s*(#|$)' "$TOP/tools/root-packages.txt" | tr '\n' ' ')
    step "installing the build and test packages in the root (about 1 minute, 2 GB)"
    run_logged "installing packages in the root" "$SID_CACHE/root-install.log" \
        in_root_ns "$tmp" bash -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $packages && apt-get clean"
    touch "$tmp/.sid-root-complete"
    mv "$tmp" "$final"
}

ensure_root() {
    local dir
    [ "$(id -u)" = 0 ] || die "checking the host" "the host lacks the build requirements (or the command, ./run deb, builds in the Debian 13 root only), and the root needs root" \
        "run ./run as root, or install the requirements listed in README.md on the host"
    mkdir -p "$SID_CACHE"
    dir=$(root_dir)
    exec 9>"$SID_CACHE/lock"
    flock 9
    remove_stale_mounts
    remove_unfinished_roots
    if [ -e "$dir/.sid-root-complete" ]; then
        note "reusing the Debian 13 root $dir"
    else
        make_root "$dir"
        remove_other_roots "$dir"
    fi
    flock -u 9
    exec 9>&-
}

# in_root_ns ROOT CMD...: run CMD chrooted in ROOT, in a private mount namespace.
in_root_ns() {
    local root=$1; shift
    SID_DEB_LAYER_AT=$DEB_LAYER unshare -m --propagation private bash -c '
        set -e
        root=$1 top=$2; shift 2
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --rbind /sys "$root/sys"
        mkdir -p "$root$top"
        mount --bind "$top" "$root$top"
        if [ -n "${SID_DEB_LAYER:-}" ]; then
            mkdir -p "$root$SID_DEB_LAYER_AT"
            mount --bind "$SID_DEB_LAYER" "$root$SID_DEB_LAYER_AT"
        fi
        if [ -n "${SID_EXTRA_BIND:-}" ]; then
            mkdir -p "$root$SID_EXTRA_BIND"
            mount --bind "$SID_EXTRA_BIND" "$root$SID_EXTRA_BIND"
        fi
        cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
        exec chroot "$root" /usr/bin/env -i \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" SID_T0="$SID_T0" \
            SID_IN_ROOT="$(basename "$root")" \
            bash -c "cd \"$top\" && exec \"\$@\"" bash "$@"
    ' bash "$root" "$TOP" "$@"
}
