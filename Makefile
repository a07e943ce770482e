# nri-bandwidth — the two commands that matter are at the top of README.md:
#   make demo   install what is missing, build, show the limiter on real traffic
#   make test   install what is missing, build, run the whole suite (root for most of it)

CARGO ?= cargo
# Debian packages the build, the tests and the demo need.
APT_PACKAGES := clang llvm libbpf-dev linux-libc-dev iproute2 iperf3 iputils-ping util-linux kmod runc podman conmon systemd fonts-dejavu-core strace openssl iptables
PRIV := NRI_BANDWIDTH_PRIVILEGED=1
# The e2e peers need a recent Go; the machine's toolchain lives here when it is not on PATH.
export PATH := $(PATH):/usr/local/go/bin
PEERS := .cache/peers

.PHONY: all deps build release demo test unit lint bench bench-nri bench-k8s bench-scale bench-two-nodes bench-report e2e peers clean install uninstall image

# Install locations (`make install DESTDIR=/tmp/stage PREFIX=/usr`). The settings
# file is always /etc/nri-bandwidth/nri-bandwidth.conf: the hook and the unit
# look for it there. HOOKSDIR is the directory both podman and CRI-O read by default.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
HOOKSDIR ?= /usr/share/containers/oci/hooks.d
DOCDIR := $(PREFIX)/share/doc/nri-bandwidth
# Binaries to install; `make install BUILD_DIR=target/debug` installs a debug build
# without rebuilding.
BUILD_DIR ?= target/release
BINARIES := nri-bandwidth bwctl nri-bandwidth-hook
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

all: build

# Installs only what is missing, so repeated runs cost nothing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo (Rust >= 1.89) is required: install it with rustup" >&2; exit 1; }
	@modprobe ifb 2>/dev/null || true

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --workspace --release

demo: release
	./target/release/bwctl demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Pure tests only (no root needed).
unit: deps
	$(CARGO) test --workspace

# containerd, its runc shim, ctr, crictl and the CNI plugins (build-peers.sh), the
# Kubernetes node's binaries (build-k8s-peers.sh) and CRI-O's crio and pinns
# (build-crio-peers.sh), built from their Go modules, cached by version in .cache/peers.
peers: deps
	@command -v go >/dev/null || { echo "go (>= 1.23) is required to build the e2e peers" >&2; exit 1; }
	CONTAINERD17_VERSION=v1.7.35 tests/e2e/build-peers.sh $(PEERS)
	K8S_VERSION=v1.37.2 ETCD_VERSION=v3.7.3 tests/e2e/build-k8s-peers.sh $(PEERS)
	CRIO_VERSION=v1.34.0 tests/e2e/build-crio-peers.sh $(PEERS)

# The whole suite: lint, pure tests, in-kernel tests, lifecycle, traffic, NRI
# protocol, and the end-to-end tests against containerd, podman, CRI-O and a
# Kubernetes node.
test: lint build peers
	@if [ "$$(id -u)" != 0 ]; then echo "make test runs privileged tests: run it as root" >&2; exit 1; fi
	$(PRIV) NRI_BANDWIDTH_E2E=1 $(CARGO) test --workspace

# Only the end-to-end suites against the real runtimes and the node.
e2e: build peers
	$(PRIV) NRI_BANDWIDTH_E2E=1 $(CARGO) test -p nri-bandwidth-tests --test e2e_containerd --test e2e_churn --test e2e_podman --test deployment --test helm_chart --test e2e_kubernetes --test e2e_two_nodes --test e2e_crio

# Not part of `make test`: minutes of traffic. Prints a markdown table.
bench: release
	./target/release/bw-bench --out docs/bench-latest.md --json docs/bench-latest.json

# NRI handler latency under real containerd at 10 and 100 pods.
bench-nri: release peers
	./target/release/nri-latency 10 100 | tee docs/nri-latency.md

# The daemon on a Kubernetes node built from modules: watch-to-kernel latency of
# annotation changes and memory at 100 pods. Prints a markdown table.
bench-k8s: release peers
	$(PRIV) ./target/release/k8s-bench 100 100 | tee docs/k8s-bench.md

# Pod-to-pod traffic between two real nodes (two kubelets and containerds linked
# through the delay line) with sender-side ingress. Prints a markdown table.
bench-two-nodes: release peers
	$(PRIV) ./target/release/two-node-bench | tee docs/bench-raw/two-nodes.md

# The cluster watch of sender-side ingress at 10,000 limited pods on 100 other nodes.
bench-scale: release peers
	$(PRIV) ./target/release/watch-scale 10000 100 | tee docs/bench-raw/watch-scale.md

# Paths in the unit and the hooks.d JSON follow BINDIR and DOCDIR.
install: $(if $(filter target/release,$(BUILD_DIR)),release)
	@for b in $(BINARIES); do [ -x $(BUILD_DIR)/$$b ] || { echo "$(BUILD_DIR)/$$b is missing: build it first" >&2; exit 1; }; done
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(HOOKSDIR) $(DESTDIR)/etc/nri-bandwidth $(DESTDIR)$(DOCDIR)
	install -m 0755 $(addprefix $(BUILD_DIR)/,$(BINARIES)) $(DESTDIR)$(BINDIR)/
	sed -e 's#/usr/local/bin/#$(BINDIR)/#g' -e 's#/usr/local/share/doc/nri-bandwidth/#$(DOCDIR)/#g' \
		systemd/nri-bandwidth.service > $(DESTDIR)$(UNITDIR)/nri-bandwidth.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/nri-bandwidth.service
	sed -e 's#/usr/local/bin/#$(BINDIR)/#g' hooks/nri-bandwidth-hook.json > $(DESTDIR)$(HOOKSDIR)/nri-bandwidth-hook.json
	chmod 0644 $(DESTDIR)$(HOOKSDIR)/nri-bandwidth-hook.json
	@# An existing settings file is the operator's: never overwrite it.
	[ -e $(DESTDIR)/etc/nri-bandwidth/nri-bandwidth.conf ] || install -m 0644 packaging/nri-bandwidth.conf $(DESTDIR)/etc/nri-bandwidth/nri-bandwidth.conf
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md

# Leaves /etc/nri-bandwidth and any limits in place (`bwctl unlimit --all --purge` first).
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(BINARIES)) $(DESTDIR)$(UNITDIR)/nri-bandwidth.service \
		$(DESTDIR)$(HOOKSDIR)/nri-bandwidth-hook.json
	rm -rf $(DESTDIR)$(DOCDIR)

# The DaemonSet's image, built from the release binaries and the shared libraries
# they link (no base image, no registry): target/nri-bandwidth-image.tar. Load it
# with `ctr -n k8s.io images import` on each node or push it with skopeo.
image: release
	packaging/oci-image.sh localhost/nri-bandwidth:$(VERSION) target/nri-bandwidth-image.tar \
		/usr/local/bin/nri-bandwidth \
		$(foreach b,$(BINARIES),target/release/$(b):/usr/local/bin/$(b))

# The whole benchmark report (about an hour of traffic on 2 cores): the matrix at
# 0.2/2/20 ms one way through the delay line, CPU per gigabit, attach times, the
# daemon at 10/100/1000 pods, real containerd latency, the real CNI bandwidth
# plugin side by side; then docs/benchmarks.md and docs/img/*.png from those files.
BENCH_DIR := target/bench
BENCH_SECONDS ?= 5
BENCH_REPEATS ?= 2
BENCH_DELAYS ?= 0.2,2,20
# Same-node senders and short transfers: the round trips of pod-to-pod traffic.
BENCH_LOCAL_DELAYS ?= 0.2,2
bench-report: release peers
	@mkdir -p $(BENCH_DIR)
	./target/release/bw-bench --delays $(BENCH_DELAYS) --repeats $(BENCH_REPEATS) --seconds $(BENCH_SECONDS) \
		--cpu --attach-cgroups 200 --json $(BENCH_DIR)/matrix.json --out $(BENCH_DIR)/matrix.md
	./target/release/nri-synth 10 100 1000 > $(BENCH_DIR)/nri-synth.jsonl
	./target/release/nri-latency 10 100 > $(BENCH_DIR)/nri-latency.md
	./target/release/cni-compare $$(( $(BENCH_SECONDS) + 3 )) $(BENCH_REPEATS) > $(BENCH_DIR)/cni.jsonl
	./target/release/bw-bench --local-senders --delays $(BENCH_LOCAL_DELAYS) --dirs ingress --seconds $(BENCH_SECONDS) \
		--no-cost --json $(BENCH_DIR)/local-senders.json --out $(BENCH_DIR)/local-senders.md
	./target/release/bw-bench --transfers --delays $(BENCH_LOCAL_DELAYS) --rates 10M,100M \
		--json $(BENCH_DIR)/transfers.json --out $(BENCH_DIR)/transfers.md
	./target/release/bw-bench --cross-node --delays $(BENCH_LOCAL_DELAYS) --seconds $(BENCH_SECONDS) --no-cost \
		--json $(BENCH_DIR)/cross-node.json --out $(BENCH_DIR)/cross-node.md
	$(PRIV) ./target/release/two-node-bench --seconds $$(( $(BENCH_SECONDS) - 1 )) > $(BENCH_DIR)/two-nodes.md
	./target/release/bench-report --matrix $(BENCH_DIR)/matrix.json --synth $(BENCH_DIR)/nri-synth.jsonl \
		--nri-latency $(BENCH_DIR)/nri-latency.md --cni $(BENCH_DIR)/cni.jsonl \
		--local-senders $(BENCH_DIR)/local-senders.json --transfers $(BENCH_DIR)/transfers.json \
		--cross-node $(BENCH_DIR)/cross-node.md --two-nodes $(BENCH_DIR)/two-nodes.md \
		--out docs/benchmarks.md --img docs/img

clean:
	$(CARGO) clean
