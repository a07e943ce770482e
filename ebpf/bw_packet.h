/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Packets and buckets, for bw.bpf.c's cgroup_skb programs: the clocks, header
 * parsing (wire and payload bytes, GSO segments counted), and the GCRA bucket
 * with its charge, policer and thresholds. Included by bw.bpf.c after its maps.
 */
#ifndef BW_PACKET_H
#define BW_PACKET_H

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

/* Whether more than `ns` of the bucket's burst is spent. */
static __always_inline int bucket_spent(struct bw_dir *d, __u64 now, __u64 ns)
{
	return peek(d, now, 0) + (__s64)(d->burst_ns - ns) > 0;
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
 * policer. Returns 1 when the packet may pass (and charges it). A packet costing
 * more than the whole bucket (a GSO super-packet at a low rate) passes only when
 * the bucket is full, and its debt then holds everything else back until repaid:
 * the rate holds, and the packet is not refused forever. */
static __always_inline int police(struct bw_dir *d, __u64 now, __u64 cost, __u32 wire)
{
	int full_and_oversized = cost > d->burst_ns && !bucket_spent(d, now, 0);

	if (!full_and_oversized && peek(d, now, cost) > 0) {
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

/* The drop threshold for an egress data packet of a socket still in its first
 * ten segments, which leave unpaced: BW_YOUNG_DROP_BURSTS bursts (at least
 * BW_MIN_DROP_NS) instead of drop_ns, whose room for two super-packets is over a second at
 * 1 Mbit/s, so eight new flows' first segments went through at twice the limit
 * for a second. Its local drop is not a retransmission: TCP sends the segment
 * again once paced. */
static __always_inline int young_unpaced(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 0;
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	/* data_segs_out already counts this packet when the hook runs. */
	return tp && tp->data_segs_out <= BW_UNPACED_SEGS;
}

static __always_inline __s64 young_drop_limit(const struct bw_dir *d)
{
	__u64 ns = BW_YOUNG_DROP_BURSTS * d->burst_ns;
	if (ns < BW_MIN_DROP_NS)
		ns = BW_MIN_DROP_NS;
	return ns < d->drop_ns ? (__s64)ns : (__s64)d->drop_ns;
}

static __always_inline int is_pure_ack(const struct pkt *p)
{
	return p->tcp && p->payload == 0 && (p->flags & BW_TCP_ACK) &&
	       !(p->flags & (BW_TCP_SYN | BW_TCP_FIN | BW_TCP_RST));
}

#endif /* BW_PACKET_H */
