#!/usr/bin/env bash
# Builds a one-layer OCI image archive from files on this host, with no registry,
# no base image and no Docker: what `ctr images import` and `podman load` read.
#
#   oci-image.sh NAME OUT.tar ENTRYPOINT SRC:DEST [SRC:DEST ...]
#
# NAME is the image reference (localhost/nri-bandwidth:0.1.0), ENTRYPOINT the
# absolute path of the program to run. Each SRC file is copied to DEST in the
# image; for a dynamically linked ELF SRC the shared libraries `ldd` names (and
# the dynamic loader) are copied to their own paths too, so the image needs
# nothing else. The archive is reproducible: sorted, owned by root, mtime 0.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 NAME OUT.tar ENTRYPOINT SRC:DEST..." >&2; exit 2; }
name=$1 out=$2 entry=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root" "$work/oci/blobs/sha256"
put() { # SRC DEST
    mkdir -p "$root$(dirname "$2")"
    cp -L "$1" "$root$2"
}
for pair in "$@"; do
    src=${pair%%:*} dest=${pair#*:}
    [ -f "$src" ] || { echo "$0: $src does not exist" >&2; exit 1; }
    put "$src" "$dest"
    chmod 0755 "$root$dest"
    # Shared libraries: lines "libc.so.6 => /lib/.../libc.so.6 (0x...)" and the
    # loader "/lib64/ld-linux-x86-64.so.2 (0x...)"; a static binary has none.
    if ldd "$src" >/dev/null 2>&1; then
        ldd "$src" | awk '/=> \//{print $3} /^\t\//{print $1}' | while read -r lib; do
            put "$lib" "$lib"
        done
    fi
done
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$work/layer.tar" .
blob() { # FILE -> digest, stored as a blob
    local d; d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$work/oci/blobs/sha256/$d"
    echo "$d"
}
size() { stat -c %s "$1"; }
layer=$(blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["%s"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entry" "$layer" > "$work/config.json"
config=$(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$(size "$work/config.json")" "$layer" "$(size "$work/layer.tar")" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json")
tag=${name##*:}
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$(size "$work/manifest.json")" "$name" "$tag" > "$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci/oci-layout"
tar -C "$work/oci" -cf "$out" .
