#!/usr/bin/env bash
# Builds the real peers the end-to-end tests drive, from their Go modules (nothing
# prebuilt is downloaded): containerd 2.x, its runc shim and ctr, crictl, and the
# CNI plugins (bridge, host-local, loopback, portmap, and bandwidth for comparison),
# and helm (to render the chart in charts/).
# Idempotent: a peer already built at the pinned version is kept.
#
# usage: tests/e2e/build-peers.sh [OUT_DIR]    (default: .cache/peers)
set -euo pipefail

CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
# containerd 1.7 (NRI off by default there), for the compatibility check; empty = skip.
CONTAINERD17_VERSION=${CONTAINERD17_VERSION-}
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.34.0}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.9.1}
HELM_VERSION=${HELM_VERSION:-v3.22.0}

out=$(realpath -m "${1:-.cache/peers}")
bin="$out/bin"
mkdir -p "$bin" "$out/cni"
command -v go >/dev/null || { echo "go is required to build the e2e peers (golang)" >&2; exit 1; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=${CGO_ENABLED:-1}

# build MODULE@VERSION PACKAGE... -> binaries in DIR, stamped with the version.
build() {
    local dir=$1 module=$2 version=$3; shift 3
    local stamp="$dir/.${module//\//_}@$version"
    if [ -f "$stamp" ]; then return 0; fi
    echo "building $module@$version: $*" >&2
    local src
    src=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$src" ] || { echo "could not fetch $module@$version" >&2; exit 1; }
    for pkg in "$@"; do
        (cd "$src" && go build -trimpath -o "$dir/$(basename "$pkg")" "./$pkg")
    done
    touch "$stamp"
}

build "$bin" github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" \
    cmd/containerd cmd/containerd-shim-runc-v2 cmd/ctr
if [ -n "$CONTAINERD17_VERSION" ]; then
    mkdir -p "$out/containerd-1.7"
    # Its own ctr: a 2.x ctr imports images that 1.7's CRI does not see.
    build "$out/containerd-1.7" github.com/containerd/containerd "$CONTAINERD17_VERSION" \
        cmd/containerd cmd/containerd-shim-runc-v2 cmd/ctr
fi
build "$bin" sigs.k8s.io/cri-tools "$CRI_TOOLS_VERSION" cmd/crictl
build "$out/cni" github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" \
    plugins/main/bridge plugins/main/loopback plugins/ipam/host-local \
    plugins/meta/portmap plugins/meta/bandwidth
build "$bin" helm.sh/helm/v3 "$HELM_VERSION" cmd/helm
echo "$bin" >&2
