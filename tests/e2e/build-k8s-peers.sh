#!/usr/bin/env bash
# Builds a Kubernetes control plane and node from their Go modules for the
# cluster tests: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
# and kubectl from k8s.io/kubernetes, and etcd from its server module (its embed
# package behind tests/e2e/k8s/etcd). Nothing prebuilt is downloaded.
# Idempotent: a set already built at the pinned versions is kept.
#
# usage: tests/e2e/build-k8s-peers.sh [OUT_DIR]    (default: .cache/peers)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:-.cache/peers}")
bin="$out/k8s-$K8S_VERSION"
stamp="$bin/.built-etcd-$ETCD_VERSION"
if [ -f "$stamp" ]; then echo "$bin" >&2; exit 0; fi
command -v go >/dev/null || { echo "go is required to build the Kubernetes peers (golang)" >&2; exit 1; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=${CGO_ENABLED:-1}
mkdir -p "$bin"

# k8s.io/kubernetes points its staging modules (k8s.io/api, client-go, ...) at
# ./staging with version v0.0.0, which a dependent module cannot follow: each
# gets a replace to its published v0.MINOR.PATCH.
staging=v0.${K8S_VERSION#v1.}
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "could not fetch k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$here/k8s/etcd" "$src/etcd"
{
    echo "module nri-bandwidth.test/k8s-peers"
    echo
    echo "go 1.26"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $K8S_VERSION"
    echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo ")"
    echo
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
} > "$src/go.mod"
n=$(grep -c '^replace ' "$src/go.mod")
[ "$n" -gt 0 ] || { echo "no staging modules found in $gomod" >&2; exit 1; }
# The packages built are imported once so that tidy keeps what they need.
cat > "$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
cd "$src"
echo "resolving k8s.io/kubernetes@$K8S_VERSION ($n staging modules at $staging) and etcd $ETCD_VERSION" >&2
go mod tidy >&2

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ld=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    echo "building $cmd" >&2
    go build -trimpath -ldflags "$ld" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
echo "building etcd" >&2
go build -trimpath -o "$bin/etcd" ./etcd
touch "$stamp"
echo "$bin" >&2
