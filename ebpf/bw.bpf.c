// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * nri-bandwidth datapath: three programs attached to a workload's cgroup v2
 * directory, sharing one bw_state per attachment (cgroup storage).
 *
 *  bw_egress  (cgroup_skb/egress)  - egress bucket: backstop for TCP (CE marks and
 *                                    congestion notification, drop only far past the
 *                                    limit), policer for everything else; withholds
 *                                    the receiver's pure ACKs while the ingress bucket
 *                                    is in debt (this is what slows a remote sender).
 *  bw_ingress (cgroup_skb/ingress) - ingress bucket: charges received bytes; CE marks
 *                                    and drops only as a backstop; polices non-TCP.
 *  bw_sockops (sockops)            - TCP pacing (SO_MAX_PACING_RATE) of the cgroup's
 *                                    own senders, the rate shared among the active
 *                                    ones; receive-window clamp for receivers.
 *
 * Why this shape (docs/design.md has the measurements): a policer alone cannot
 * hold TCP at the rate, pacing the workload's own sockets holds egress at the rate
 * with no queue, and ACK gating plus a window clamp holds ingress without a queue
 * at the price of sender probes on short paths.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bw_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Not in the UAPI headers reachable with -target bpf. */
#define SOL_SOCKET 1
#define SO_MAX_PACING_RATE 47
#define SOL_TCP 6
#define TCP_WINDOW_CLAMP 10
#define MAX_WINDOW_CLAMP (65535 << 14) /* largest window TCP can advertise */
#define CLAMP_TARGET_PCT 99 /* a remote sender's window, in % of its share of one BDP */
#define CLAMP_WHOLE_SEGS 8   /* from this many segments of BDP the window is not dithered */
#define CLAMP_SPENT_DIV 8 /* the window steps down once 1/8 of the bucket is spent */
#define AF_INET6 10
#define LOOPBACK_IFINDEX 1 /* lo is ifindex 1 in every network namespace */

/* Small packets (ACKs, SYNs, DNS) are dropped only twice as far past the limit. */
#define SMALL_PACKET 128

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, __u64);
	__type(value, struct bw_state);
} bw_state SEC(".maps");

#ifdef BW_TEST
/*
 * Only in the test object (bw_test.bpf.o, built with -DBW_TEST by core/build.rs):
 * BPF_PROG_TEST_RUN gives a program a fresh cgroup storage that user space cannot
 * reach, so the test rig (testkit/src/testrun.rs) hands the programs their state
 * in key 0 of this array instead. The production object has neither the map nor
 * the branch; the test programs differ from it only in how state_get() finds the
 * state (an array lookup instead of the storage helper).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_state);
} bw_test_state SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct bw_sock);
} bw_sock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct bw_dst_key);
	__type(value, struct bw_dst);
} bw_dst SEC(".maps");

/* Connections whose sender is paced here (LRU: entries of closed connections age
 * out; never read by user space). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct bw_flow_key);
	__type(value, __u32);
} bw_flows SEC(".maps");

/* Not preallocated: a node pays kernel memory for the limits it has, not for the
 * 65,536 it could have. Only user space touches this map, never per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct bw_meta);
} bw_meta SEC(".maps");

/* The attachment's state, or NULL until user space has configured it (the
 * microseconds between attach and configure): then traffic passes. */
static __always_inline struct bw_state *state_get(void)
{
#ifdef BW_TEST
	__u32 zero = 0;
	struct bw_state *s = bpf_map_lookup_elem(&bw_test_state, &zero);
#else
	struct bw_state *s = bpf_get_local_storage(&bw_state, 0);
#endif
	return s && s->cgid ? s : 0;
}

#include "bw_packet.h"
#include "bw_sockets.h"

/* ------------------------------------------------------------------ programs */

/* The state a packet is charged to, or NULL when it passes untouched: loopback
 * traffic (inside the pod) and cgroups not configured yet. */
static __always_inline struct bw_state *limited_state(struct __sk_buff *skb)
{
	if (skb->ifindex == LOOPBACK_IFINDEX)
		return 0;
	return state_get();
}

/* Whether the sender of the connection this ACK belongs to is paced on this node:
 * then it arrives at the rate by its pace, and holding its ACKs for the jitter of
 * paced arrivals, or for the initial windows of many flows starting at once, would
 * only stall it until its retransmission timer. Past half of `drop_ns` of debt (the
 * pacing is not holding) the gate holds it all the same. */
static __always_inline int peer_paced(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 0;
	struct bw_sock *ss = bpf_sk_storage_get(&bw_sock, sk, 0, 0);
	return ss && ss->peer_paced;
}

SEC("cgroup_skb/egress")
int bw_egress(struct __sk_buff *skb)
{
	struct bw_state *s = limited_state(skb);
	if (!s)
		return BW_VERDICT_PASS;

	struct pkt p;
	parse(skb, &p);
	__u64 now;

	/* Slow a remote sender by withholding our ACKs while its data overdrew the
	 * ingress bucket; its tail-loss probe brings the next ACK once repaid. */
	struct bw_dir *in = &s->dir[BW_DIR_INGRESS];
	if (in->rate && is_pure_ack(&p) && !(s->flags & BW_F_NO_ACK_GATE)) {
		now = clock_precise();
		__s64 debt = (__s64)(in->tat - now);
		if (debt > 0 && !(debt <= (__s64)(in->drop_ns / 2) && peer_paced(skb))) {
			__sync_fetch_and_add(&s->acks_gated, 1);
			return BW_VERDICT_DROP;
		}
	} else {
		now = clock_coarse();
	}

	struct bw_dir *d = &s->dir[BW_DIR_EGRESS];
	if (!d->rate) {
		count_pass(d, p.wire);
		return BW_VERDICT_PASS;
	}
	__u64 cost = cost_ns(d, p.wire);

	/* A dropped UDP packet with CN makes the sender see ENOBUFS (counted, not
	 * fatal) instead of EPERM. */
	if (!p.tcp)
		return police(d, now, cost, p.wire) ? BW_VERDICT_PASS : BW_VERDICT_DROP_CN;

	__s64 after = peek(d, now, cost);
	__s64 limit = tcp_drop_limit(d, &p);
	__s64 young = young_drop_limit(d);
	if (after > young && after <= limit && p.payload && young_unpaced(skb))
		limit = young;
	/* A packet costing more than the whole allowance (a super-packet at a low
	 * rate) passes when the bucket is full, as UDP does. */
	if (after > limit && (cost <= (__u64)limit || bucket_spent(d, now, 0))) {
		count_drop(d, p.wire);
		if (p.payload)
			count_stalled(s, skb, now);
		return BW_VERDICT_DROP_CN;
	}
	__s64 debt = charge(d, now, cost);
	count_pass(d, p.wire);
	if (debt > (__s64)d->mark_ns) {
		__sync_fetch_and_add(&d->mark_packets, 1);
		if (p.ect)
			bpf_skb_ecn_set_ce(skb);
		return BW_VERDICT_PASS_CN;
	}
	return BW_VERDICT_PASS;
}

SEC("cgroup_skb/ingress")
int bw_ingress(struct __sk_buff *skb)
{
	struct bw_state *s = limited_state(skb);
	if (!s)
		return BW_VERDICT_PASS;

	struct pkt p;
	parse(skb, &p);
	struct bw_dir *d = &s->dir[BW_DIR_INGRESS];
	if (!d->rate) {
		count_pass(d, p.wire);
		return BW_VERDICT_PASS;
	}
	__u64 now = clock_coarse();
	__u64 cost = cost_ns(d, p.wire);

	if (!p.tcp)
		return police(d, now, cost, p.wire) ? BW_VERDICT_PASS : BW_VERDICT_DROP;

	/* TCP already crossed the wire: dropping it only costs a retransmission, so
	 * the gate on our ACKs does the work and this is a backstop for senders that
	 * do not answer it. */
	if (p.payload && peek(d, now, cost) > tcp_drop_limit(d, &p)) {
		count_drop(d, p.wire);
		return BW_VERDICT_DROP;
	}
	__s64 debt = charge(d, now, cost);
	count_pass(d, p.wire);
	if (p.payload && debt > (__s64)d->mark_ns && p.ect) {
		__sync_fetch_and_add(&d->mark_packets, 1);
		bpf_skb_ecn_set_ce(skb);
	}
	return BW_VERDICT_PASS;
}

SEC("sockops")
int bw_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op == BPF_SOCK_OPS_RWND_INIT) {
		/* Runs for a request socket too (skops->sk is NULL then), in the
		 * listener's cgroup: the window of both our SYN and our SYN-ACK. */
		struct bw_state *s = bpf_get_local_storage(&bw_state, 0);
		if (s && s->cgid &&
		    !(skops->family == 2 && (bpf_ntohl(skops->remote_ip4) >> 24) == 127))
			skops->reply = initial_window(skops, s);
		return 1;
	}
	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_RTT_CB && op != BPF_SOCK_OPS_HDR_OPT_LEN_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] != BPF_TCP_CLOSE)
		return 1;

	struct bw_state *s = bpf_get_local_storage(&bw_state, 0);
	if (!s || !s->cgid)
		return 1;
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	/* Loopback connections are never limited. */
	if (skops->family == 2 && (bpf_ntohl(skops->remote_ip4) >> 24) == 127)
		return 1;
	struct bw_sock *ss = bpf_sk_storage_get(&bw_sock, sk, 0,
						op == BPF_SOCK_OPS_STATE_CB ? 0 : BPF_SK_STORAGE_GET_F_CREATE);
	if (!ss)
		return 1;
	struct bw_sock_slot *slot = slot_for(ss, s->cgid);
	if (!slot)
		return 1;
	__u64 now = clock_coarse();

	switch (op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* RTT_CB marks senders, HDR_OPT_LEN_CB fires on every segment we send,
		 * which is where receivers' ACKs are seen. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_RTT_CB_FLAG |
						 BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		apply_pacing(skops, s, ss, slot, now);
		apply_clamp(skops, s, ss, slot, now);
		egress_initial_window(skops, s);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		forget_socket(s, slot, now);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		apply_pacing(skops, s, ss, slot, now);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		/* A pure ACK going out means this socket is receiving. */
		if (skops->skb_len == 0 && (skops->skb_tcp_flags & BW_TCP_ACK) &&
		    !(skops->skb_tcp_flags & (BW_TCP_SYN | BW_TCP_FIN | BW_TCP_RST)))
			apply_clamp(skops, s, ss, slot, now);
		break;
	}
	return 1;
}

/*
 * Local senders toward a limited destination (attached to the cgroup that holds
 * the node's senders, not to the workload): pace each sending socket at its share
 * of the destination's ingress rate, shared among the sockets sending to it. The
 * receiver's ACK gate stays as the backstop for senders this does not see.
 */
SEC("sockops")
int bw_senders(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_RTT_CB && op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] != BPF_TCP_CLOSE)
		return 1;
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	struct bw_dst_key k = {};
	if (!dst_key(skops, &k))
		return 1;
	struct bw_dst *d = bpf_map_lookup_elem(&bw_dst, &k);
	if (!d || !d->rate) {
		/* Not (or no longer) limited: give back a pace set earlier. */
		struct bw_sock *old = bpf_sk_storage_get(&bw_sock, sk, 0, 0);
		if (old && old->dst_pacing) {
			__u32 was = cwnd_want(skops, old);
			old->dst_pacing = 0;
			__u64 ignored = 0;
			set_pacing(skops, old, &ignored);
			set_cwnd_clamp(skops, old, was);
		}
		return 1;
	}
	if (op == BPF_SOCK_OPS_STATE_CB) {
		/* A finished connection leaves the count of senders to this address. */
		struct bw_sock *gone = bpf_sk_storage_get(&bw_sock, sk, 0, 0);
		if (gone)
			uncount(d->active, &gone->dst_epoch_seen, clock_coarse() >> BW_EPOCH_SHIFT);
		return 1;
	}
	struct bw_sock *ss = bpf_sk_storage_get(&bw_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ss)
		return 1;
	if (op != BPF_SOCK_OPS_RTT_CB) {
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG);
		struct bw_flow_key fk = {};
		__u32 one = 1;
		if (flow_key(skops, 1, &fk))
			bpf_map_update_elem(&bw_flows, &fk, &one, BPF_ANY);
	}

	__u64 e = clock_coarse() >> BW_EPOCH_SHIFT;
	__u64 de = d->epoch;
	if (de != e && __sync_val_compare_and_swap(&d->epoch, de, e) == de) {
		d->active[e & 1] = 0;
		if (e != de + 1)
			d->active[(e + 1) & 1] = 0;
	}
	__u32 ei = 0;
	__u32 n = count_active(d->active, &ss->dst_epoch_seen, &ss->dst_progress,
			       skops->bytes_acked, BW_MAX_ACTIVE_BYTES, e, &ei);
	__u64 pay = seg_payload(skops, ss);
	__u32 was = cwnd_want(skops, ss);
	ss->dst_pacing = d->rate / n * pay / (pay + seg_header(skops));
	set_pacing(skops, ss, &d->pacing_sets);
	set_cwnd_clamp(skops, ss, was);
	return 1;
}

#ifdef BW_TEST
/* Test object only, never attached: the baseline the benchmark compares
 * per-packet cost against. */
SEC("cgroup_skb/egress")
int bw_empty(struct __sk_buff *skb)
{
	return BW_VERDICT_PASS;
}
#endif
