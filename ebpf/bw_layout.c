// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/* Host program run by plugin/build.rs: prints the C layouts of bw_maps.h as Rust
 * constants, so plugin/src/datapath_abi.rs can test its mirrors against them. */
#include <stddef.h>
#include <stdio.h>
#include <linux/bpf.h>
#include "bw_maps.h"

#define SIZE(t) printf("pub const SIZEOF_%s: usize = %zu;\n", #t, sizeof(struct t))
#define OFF(t, f, name) printf("pub const OFFSETOF_%s_%s: usize = %zu;\n", #t, name, offsetof(struct t, f))

int main(void)
{
	printf("pub const ABI_VERSION: u32 = %d;\n", BW_ABI_VERSION);
	SIZE(bw_dir);
	OFF(bw_dir, rate, "rate");
	OFF(bw_dir, cost_mult, "cost_mult");
	OFF(bw_dir, cost_shift, "cost_shift");
	OFF(bw_dir, burst_ns, "burst_ns");
	OFF(bw_dir, mark_ns, "mark_ns");
	OFF(bw_dir, drop_ns, "drop_ns");
	OFF(bw_dir, tat, "tat");
	OFF(bw_dir, packets, "packets");
	OFF(bw_dir, bytes, "bytes");
	OFF(bw_dir, drop_packets, "drop_packets");
	OFF(bw_dir, drop_bytes, "drop_bytes");
	OFF(bw_dir, mark_packets, "mark_packets");
	SIZE(bw_state);
	OFF(bw_state, cgid, "cgid");
	OFF(bw_state, abi, "abi");
	OFF(bw_state, flags, "flags");
	OFF(bw_state, dir, "dir");
	OFF(bw_state, clamp_budget, "clamp_budget");
	OFF(bw_state, acks_gated, "acks_gated");
	OFF(bw_state, pacing_sets, "pacing_sets");
	OFF(bw_state, clamp_sets, "clamp_sets");
	OFF(bw_state, epoch, "epoch");
	OFF(bw_state, active, "active");
	OFF(bw_state, active_bytes, "active_bytes");
	SIZE(bw_meta);
	OFF(bw_meta, cgid, "cgid");
	OFF(bw_meta, created_ns, "created_ns");
	OFF(bw_meta, ingress_bps, "ingress_bps");
	OFF(bw_meta, egress_bps, "egress_bps");
	OFF(bw_meta, burst_bytes, "burst_bytes");
	OFF(bw_meta, source, "source");
	OFF(bw_meta, path, "path");
	OFF(bw_meta, pod_namespace, "pod_namespace");
	OFF(bw_meta, pod_name, "pod_name");
	OFF(bw_meta, pod_uid, "pod_uid");
	OFF(bw_meta, container, "container");
	OFF(bw_meta, container_id, "container_id");
	SIZE(bw_sock);
	/* __sk_buff fields BPF_PROG_TEST_RUN lets a test set. */
	SIZE(__sk_buff);
	OFF(__sk_buff, ifindex, "ifindex");
	OFF(__sk_buff, gso_segs, "gso_segs");
	OFF(__sk_buff, gso_size, "gso_size");
	return 0;
}
