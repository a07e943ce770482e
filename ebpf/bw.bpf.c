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

/*
 * Bucket time. The per-packet path reads the tick-granular clock (1-4 ms steps,
 * a fraction of the cost of a precise read); buckets are at least 10 ms deep
 * (bucket.rs) so a tick never starves them. Decisions that need the real time -
 * withholding an ACK, whose timing the sender's probe timer races - read the
 * precise clock.
 */
static __always_inline __u64 clock_coarse(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline __u64 clock_precise(void)
{
	return bpf_ktime_get_ns();
}

/* ------------------------------------------------------------------ parsing */

struct pkt {
	__u32 wire;     /* IP bytes on the wire, headers counted once per segment */
	__u32 payload;  /* TCP payload bytes (0 for non-TCP) */
	__u8 tcp;       /* 1 if TCP */
	__u8 flags;     /* TCP flags byte */
	__u8 ect;       /* ECN-capable transport */
};

/* Reads `len` header bytes at `off`: straight from the linear packet data when it
 * is there (almost always), else through the slower copy helper. */
static __always_inline __u8 *hdr_at(struct __sk_buff *skb, __u32 off, __u32 len, __u8 *buf)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (off < 64 && data + off + len <= end)
		return data + off;
	if (bpf_skb_load_bytes(skb, off, buf, len))
		return 0;
	return buf;
}

static __always_inline void parse(struct __sk_buff *skb, struct pkt *p)
{
	__u8 buf[40];
	__u8 *h;
	__u32 l3, l4, proto;
	__u32 segs = skb->gso_segs ? skb->gso_segs : 1;

	p->wire = skb->len;
	p->payload = 0;
	p->tcp = 0;
	p->flags = 0;
	p->ect = 0;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		h = hdr_at(skb, 0, 20, buf);
		if (!h)
			return;
		l3 = (h[0] & 0x0f) * 4;
		proto = h[9];
		p->ect = (h[1] & 0x03) != 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		h = hdr_at(skb, 0, 40, buf);
		if (!h)
			return;
		l3 = 40;
		proto = h[6]; /* extension headers: treated as another protocol */
		p->ect = (h[1] & 0x30) != 0;
	} else {
		return;
	}
	if (l3 < 20 || l3 > 60)
		return;

	if (proto == IPPROTO_TCP) {
		h = hdr_at(skb, l3, 14, buf);
		if (!h)
			return;
		l4 = (h[12] >> 4) * 4;
		if (l4 < 20)
			return;
		p->tcp = 1;
		p->flags = h[13];
		__u32 hl = l3 + l4;
		/* GSO/GRO super-packets carry one header for `segs` segments. */
		p->payload = skb->len > hl ? skb->len - hl : 0;
		p->wire = skb->len + (segs - 1) * hl;
	} else if (proto == IPPROTO_UDP) {
		p->wire = skb->len + (segs - 1) * (l3 + 8);
	} else {
		p->wire = skb->len + (segs - 1) * l3;
	}
}

/* ------------------------------------------------------------------ bucket */

static __always_inline __u64 cost_ns(const struct bw_dir *d, __u32 bytes)
{
	return ((__u64)bytes * d->cost_mult) >> (d->cost_shift & 63);
}

/* Debt after charging `cost` without charging it (used to decide a drop). */
static __always_inline __s64 peek(struct bw_dir *d, __u64 now, __u64 cost)
{
	__u64 tat = d->tat;
	__u64 floor = now - d->burst_ns;

	if ((__s64)(tat - floor) < 0)
		tat = floor;
	return (__s64)(tat + cost - now);
}

/* Charge `cost` ns to the bucket; returns the debt afterwards. */
static __always_inline __s64 charge(struct bw_dir *d, __u64 now, __u64 cost)
{
	__u64 tat = d->tat;
	__u64 floor = now - d->burst_ns;

	if ((__s64)(tat - floor) < 0) {
		/* Idle long enough that the bucket is full: restart it at the floor.
		 * If another CPU moved tat meanwhile, fall through to the plain add. */
		__u64 want = floor + cost;
		if (__sync_val_compare_and_swap(&d->tat, tat, want) == tat)
			return (__s64)(want - now);
	}
	return (__s64)(__sync_fetch_and_add(&d->tat, cost) + cost - now);
}

static __always_inline void count_pass(struct bw_dir *d, __u32 wire)
{
	__sync_fetch_and_add(&d->packets, 1);
	__sync_fetch_and_add(&d->bytes, wire);
}

static __always_inline void count_drop(struct bw_dir *d, __u32 wire)
{
	__sync_fetch_and_add(&d->drop_packets, 1);
	__sync_fetch_and_add(&d->drop_bytes, wire);
}

/* Non-TCP traffic cannot be slowed down, so it gets no debt: a token-bucket
 * policer. Returns 1 when the packet may pass (and charges it). */
static __always_inline int police(struct bw_dir *d, __u64 now, __u64 cost, __u32 wire)
{
	if (peek(d, now, cost) > 0) {
		count_drop(d, wire);
		return 0;
	}
	charge(d, now, cost);
	count_pass(d, wire);
	return 1;
}

/* Debt past which a TCP packet is dropped: small packets (ACKs, SYNs) get twice
 * the room so connections keep working far over the limit. */
static __always_inline __s64 tcp_drop_limit(const struct bw_dir *d, const struct pkt *p)
{
	return p->wire <= SMALL_PACKET ? 2 * d->drop_ns : d->drop_ns;
}

static __always_inline int is_pure_ack(const struct pkt *p)
{
	return p->tcp && p->payload == 0 && (p->flags & BW_TCP_ACK) &&
	       !(p->flags & (BW_TCP_SYN | BW_TCP_FIN | BW_TCP_RST));
}

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
 * paced arrivals would only stall it until its loss probe. (Past `mark_ns` of debt
 * the gate holds it all the same.) */
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
		if (debt > 0 && !(debt <= (__s64)in->mark_ns && peer_paced(skb))) {
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

	if (peek(d, now, cost) > tcp_drop_limit(d, &p)) {
		count_drop(d, p.wire);
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

/* ------------------------------------------------------------------ sock_ops */

/* An address as the maps key it: family and 16 bytes, a v4-mapped IPv6 address
 * as IPv4. `ip6` is ignored for IPv4 sockets. */
static __always_inline int addr_of(__u32 family, __u32 ip4, const __u32 *ip6, __u32 *fam,
				   __u8 *addr)
{
	if (family == 2) {
		*fam = 2;
		__builtin_memcpy(addr, &ip4, 4);
		return 1;
	}
	if (family != AF_INET6)
		return 0;
	if (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff)) {
		*fam = 2;
		__builtin_memcpy(addr, &ip6[3], 4);
	} else {
		*fam = AF_INET6;
		__builtin_memcpy(addr, ip6, 16);
	}
	return 1;
}

/* The socket's two ends (ctx fields are read by value only). */
struct ends {
	__u32 lip4, rip4;
	__u32 lip6[4], rip6[4];
};

static __always_inline void ends_of(struct bpf_sock_ops *skops, struct ends *e)
{
	e->lip4 = skops->local_ip4;
	e->rip4 = skops->remote_ip4;
	e->lip6[0] = skops->local_ip6[0];
	e->lip6[1] = skops->local_ip6[1];
	e->lip6[2] = skops->local_ip6[2];
	e->lip6[3] = skops->local_ip6[3];
	e->rip6[0] = skops->remote_ip6[0];
	e->rip6[1] = skops->remote_ip6[1];
	e->rip6[2] = skops->remote_ip6[2];
	e->rip6[3] = skops->remote_ip6[3];
}

/* The connection as (sender, receiver); `sending` says which end this socket is. */
static __always_inline int flow_key(struct bpf_sock_ops *skops, int sending,
				    struct bw_flow_key *k)
{
	struct ends e = {};
	__u32 f1 = 0, f2 = 0;
	__u16 lport = (__u16)skops->local_port;
	__u16 rport = (__u16)bpf_ntohl(skops->remote_port);

	ends_of(skops, &e);
	if (sending) {
		k->sport = lport;
		k->dport = rport;
		if (!addr_of(skops->family, e.lip4, e.lip6, &f1, k->saddr) ||
		    !addr_of(skops->family, e.rip4, e.rip6, &f2, k->daddr))
			return 0;
	} else {
		k->sport = rport;
		k->dport = lport;
		if (!addr_of(skops->family, e.rip4, e.rip6, &f1, k->saddr) ||
		    !addr_of(skops->family, e.lip4, e.lip6, &f2, k->daddr))
			return 0;
	}
	k->family = f1;
	return 1;
}

/* The remote end of a socket as a bw_dst key. */
static __always_inline int dst_key(struct bpf_sock_ops *skops, struct bw_dst_key *k)
{
	struct ends e = {};
	ends_of(skops, &e);
	return addr_of(skops->family, e.rip4, e.rip6, &k->family, k->addr);
}

/* Count this socket as active in direction `dir` for the current epoch once it has
 * moved `active_bytes` since it was last counted (so a control connection that
 * exchanges a few bytes does not halve everyone's share), and return how many
 * sockets of the attachment were active in this or the previous epoch; `*ei` is
 * the epoch slot that count comes from. */
static __always_inline __u32 active_sockets(struct bw_state *s, struct bw_sock_slot *slot,
					    int dir, __u64 now, __u64 progress, __u32 *ei)
{
	__u64 e = now >> BW_EPOCH_SHIFT;
	__u64 se = s->epoch;

	dir &= 1;
	if (se != e) {
		/* First socket of a new epoch: forget the one before the previous. */
		if (__sync_val_compare_and_swap(&s->epoch, se, e) == se) {
			for (int d = 0; d < 2; d++) {
				s->active[d][e & 1] = 0;
				s->capped[d][e & 1] = 0;
				s->capped_rate[d][e & 1] = 0;
				if (e != se + 1) {
					s->active[d][(e + 1) & 1] = 0;
					s->capped[d][(e + 1) & 1] = 0;
					s->capped_rate[d][(e + 1) & 1] = 0;
				}
			}
		}
	}
	if (slot->epoch_seen[dir] != e && progress - slot->progress[dir] >= s->active_bytes[dir]) {
		slot->epoch_seen[dir] = e;
		slot->progress[dir] = progress;
		__sync_fetch_and_add(&s->active[dir][e & 1], 1);
	}
	__u32 cur = s->active[dir][e & 1];
	__u32 prev = s->active[dir][(e + 1) & 1];
	*ei = cur >= prev ? (e & 1) : ((e + 1) & 1);
	__u32 n = cur > prev ? cur : prev;
	return n ? n : 1;
}

/* This level's share of `rate` (bytes/s) for the socket, work-conserving: sockets
 * that the other level holds lower use less than an equal share, so the others
 * split what they leave (pod 20M, one container capped at 5M: its sibling gets
 * 15M, not 10M). A socket held lower registers itself once per epoch. */
static __always_inline __u64 level_share(struct bw_state *s, struct bw_sock *ss,
					 struct bw_sock_slot *slot, int dir, __u64 rate,
					 __u64 now, __u64 progress)
{
	__u32 ei = 0;
	__u32 n = active_sockets(s, slot, dir, now, progress, &ei);
	__u64 e = now >> BW_EPOCH_SHIFT;

	dir &= 1;
	ei &= 1;
	__u32 capped = s->capped[dir][ei];
	__u64 held = s->capped_rate[dir][ei];
	__u64 share = rate / n;
	if (capped && capped < n && held < rate)
		share = (rate - held) / (n - capped);
	struct bw_sock_slot *other = slot == &ss->slot[0] ? &ss->slot[1] : &ss->slot[0];
	__u64 theirs = other->cgid ? other->share[dir] : 0;
	if (theirs && theirs < share && slot->capped_seen[dir] != e + 1) {
		slot->capped_seen[dir] = e + 1;
		__sync_fetch_and_add(&s->capped[dir][e & 1], 1);
		__sync_fetch_and_add(&s->capped_rate[dir][e & 1], theirs);
	}
	slot->share[dir] = share;
	return share;
}

/* IP + TCP header bytes per segment (timestamps assumed, as Linux negotiates them).
 * An AF_INET6 socket talking to a v4-mapped address sends IPv4. */
static __always_inline __u64 seg_header(struct bpf_sock_ops *skops)
{
	if (skops->family == AF_INET6 &&
	    !(skops->remote_ip6[0] == 0 && skops->remote_ip6[1] == 0 &&
	      skops->remote_ip6[2] == bpf_htonl(0xffff)))
		return 40 + 20 + 12;
	return 20 + 20 + 12;
}

static __always_inline struct bw_sock_slot *slot_for(struct bw_sock *ss, __u64 cgid)
{
	if (ss->slot[0].cgid == cgid)
		return &ss->slot[0];
	if (ss->slot[1].cgid == cgid)
		return &ss->slot[1];
	if (!ss->slot[0].cgid) {
		ss->slot[0].cgid = cgid;
		return &ss->slot[0];
	}
	if (!ss->slot[1].cgid) {
		ss->slot[1].cgid = cgid;
		return &ss->slot[1];
	}
	return 0; /* deeper nesting than BW_SOCK_SLOTS: only the bucket applies */
}

static __always_inline __u64 min_nonzero(__u64 a, __u64 b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	return a < b ? a : b;
}

/* Sets the socket's SO_MAX_PACING_RATE to the smallest share any level or
 * limited destination gives it (lifting it when there is none any more). */
static __always_inline void set_pacing(struct bpf_sock_ops *skops, struct bw_sock *ss,
				       __u64 *sets)
{
	__u64 want64 = min_nonzero(min_nonzero(ss->slot[0].pacing, ss->slot[1].pacing),
				   ss->dst_pacing);
	if (!want64 && !ss->pacing_applied)
		return;
	/* bpf_setsockopt takes an int here; ~0U means unpaced, which is also what a
	 * lifted limit (want64 == 0) restores. Rates beyond 34 Gbit/s are left to the
	 * bucket. */
	__u32 want = (!want64 || want64 >= 0xffffffffULL) ? 0xffffffffU : (__u32)want64;
	/* Re-read what the socket has: an application may have raised its own cap. */
	__u32 have = 0;
	if (bpf_getsockopt(skops, SOL_SOCKET, SO_MAX_PACING_RATE, &have, sizeof(have)))
		have = 0;
	if (have != want) {
		if (!bpf_setsockopt(skops, SOL_SOCKET, SO_MAX_PACING_RATE, &want, sizeof(want)))
			__sync_fetch_and_add(sets, 1);
	}
	ss->pacing_applied = want64;
}

/* Egress: pace this socket at its share of the rate, converted from wire bytes to
 * payload bytes (pacing counts payload; the bucket counts IP bytes per segment). */
static __always_inline void apply_pacing(struct bpf_sock_ops *skops, struct bw_state *s,
					 struct bw_sock *ss, struct bw_sock_slot *slot, __u64 now)
{
	struct bw_dir *d = &s->dir[BW_DIR_EGRESS];

	if (!d->rate || (s->flags & BW_F_NO_PACING)) {
		slot->pacing = 0;
		slot->share[BW_DIR_EGRESS] = 0;
	} else {
		__u64 share = level_share(s, ss, slot, BW_DIR_EGRESS, d->rate, now,
					  skops->bytes_acked);
		__u64 mss = skops->mss_cache ? skops->mss_cache : 1448;
		__u64 hdr = seg_header(skops);
		slot->pacing = share * mss / (mss + hdr);
	}
	set_pacing(skops, ss, &s->pacing_sets);
}

/* Ingress: keep at most this socket's share of one bandwidth-delay product in
 * flight, in payload bytes whose wire size is the rate: a sender clocked by our
 * ACKs then arrives at the rate by itself, and the ACK gate (which stalls it until
 * its tail-loss probe, counted as a retransmission) is left for bursts. Measured
 * through the delay line at 2 and 20 ms one way this removed most gate stalls
 * (docs/benchmarks.md). Below a millisecond of handshake RTT (mostly host latency
 * there) no window of whole segments can hold the rate; there the window is
 * rate x (RTT + 1 ms) (`clamp_budget`) and the gate does the limiting. */
static __always_inline void apply_clamp(struct bpf_sock_ops *skops, struct bw_state *s,
					struct bw_sock *ss, struct bw_sock_slot *slot, __u64 now)
{
	struct bw_dir *d = &s->dir[BW_DIR_INGRESS];

	if (!d->rate || (s->flags & BW_F_NO_CLAMP)) {
		slot->clamp = 0;
		slot->share[BW_DIR_INGRESS] = 0;
	} else {
		__u64 share = level_share(s, ss, slot, BW_DIR_INGRESS, d->rate, now,
					  skops->bytes_received);
		__u32 mss = skops->mss_cache ? skops->mss_cache : 1448;
		__u64 srtt_us = skops->srtt_us >> 3;
		if (srtt_us > 1000000)
			srtt_us = 1000000;
		/* One bandwidth-delay product of payload: a sender clocked by our ACKs
		 * then arrives at the rate by itself and the gate seldom has to stall it.
		 * Below a millisecond the handshake RTT a pure receiver keeps is mostly
		 * host latency and no window of whole segments fits, so there the slack
		 * is added and the gate does the limiting. */
		__u64 bdp = share / 1000 * srtt_us / 1000;
		__u64 slack = s->clamp_budget * share / d->rate;
		/* A sender paced on this node arrives at the rate by its pace: one BDP
		 * exactly would leave it window-bound below the rate, so it gets the slack
		 * too. A sender elsewhere gets one BDP, the gate being for its bursts. */
		struct bw_flow_key fk = {};
		int paced = flow_key(skops, 0, &fk) && bpf_map_lookup_elem(&bw_flows, &fk);
		ss->peer_paced = paced;
		__u64 w = srtt_us >= 1000 ? bdp * 1448 / 1500 + (paced ? slack : 0) : bdp + slack;
		/* Below two segments the receiver stops ACKing at once (delayed ACK). */
		if (w < 2 * mss)
			w = 2 * mss;
		if (w > 0x3fffffff)
			w = 0x3fffffff;
		slot->clamp = w;
	}
	int want = (int)min_nonzero(ss->slot[0].clamp, ss->slot[1].clamp);
	if (!want && !ss->clamp_applied)
		return;
	if (!want)
		want = MAX_WINDOW_CLAMP; /* the limit was lifted: give the window back */
	/* Receive-buffer autotuning resets the clamp: re-apply whenever it drifted. */
	int have = 0;
	if (bpf_getsockopt(skops, SOL_TCP, TCP_WINDOW_CLAMP, &have, sizeof(have)))
		have = 0;
	if (have != want) {
		if (!bpf_setsockopt(skops, SOL_TCP, TCP_WINDOW_CLAMP, &want, sizeof(want)))
			__sync_fetch_and_add(&s->clamp_sets, 1);
	}
	ss->clamp_applied = want == MAX_WINDOW_CLAMP ? 0 : want;
}

SEC("sockops")
int bw_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_RTT_CB && op != BPF_SOCK_OPS_HDR_OPT_LEN_CB)
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
	struct bw_sock *ss = bpf_sk_storage_get(&bw_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
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
						 BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		apply_pacing(skops, s, ss, slot, now);
		apply_clamp(skops, s, ss, slot, now);
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
	    op != BPF_SOCK_OPS_RTT_CB)
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
			old->dst_pacing = 0;
			__u64 ignored = 0;
			set_pacing(skops, old, &ignored);
		}
		return 1;
	}
	struct bw_sock *ss = bpf_sk_storage_get(&bw_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ss)
		return 1;
	if (op != BPF_SOCK_OPS_RTT_CB) {
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_RTT_CB_FLAG);
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
	__u64 acked = skops->bytes_acked;
	if (ss->dst_epoch_seen != e && acked - ss->dst_progress >= 3 * 1448) {
		ss->dst_epoch_seen = e;
		ss->dst_progress = acked;
		__sync_fetch_and_add(&d->active[e & 1], 1);
	}
	__u32 cur = d->active[e & 1];
	__u32 prev = d->active[(e + 1) & 1];
	__u32 n = cur > prev ? cur : prev;
	if (!n)
		n = 1;
	__u64 mss = skops->mss_cache ? skops->mss_cache : 1448;
	ss->dst_pacing = d->rate / n * mss / (mss + seg_header(skops));
	set_pacing(skops, ss, &d->pacing_sets);
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
