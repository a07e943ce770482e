/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Sockets, for bw.bpf.c's sock_ops programs: connection keys, active-socket
 * epochs, each level's work-conserving share, pacing and the receive-window
 * clamp, and the egress hook's count of sockets its drops stall. Included by
 * bw.bpf.c after its maps and packet helpers.
 */
#ifndef BW_SOCKETS_H
#define BW_SOCKETS_H

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

/* Counts a socket in `counts` (an [epoch & 1] pair) for epoch `e` once it has moved
 * `threshold` since it was last counted (`*seen`, `*last`), and returns the larger of
 * this and the previous epoch's count, at least 1; `*ei` is the slot it comes from.
 * Shared by the workload's levels and by local senders to an address. */
static __always_inline __u32 count_active(__u32 *counts, __u64 *seen, __u64 *last,
					  __u64 progress, __u64 threshold, __u64 e, __u32 *ei)
{
	if (*seen != e && progress - *last >= threshold) {
		*seen = e;
		*last = progress;
		__sync_fetch_and_add(&counts[e & 1], 1);
	}
	__u32 cur = counts[e & 1];
	__u32 prev = counts[(e + 1) & 1];
	*ei = cur >= prev ? (e & 1) : ((e + 1) & 1);
	__u32 n = cur > prev ? cur : prev;
	return n ? n : 1;
}

/* The socket's slot for the attachment `cgid`, or NULL when it has none yet. */
static __always_inline struct bw_sock_slot *slot_find(struct bw_sock *ss, __u64 cgid)
{
	if (ss->slot[0].cgid == cgid)
		return &ss->slot[0];
	if (ss->slot[1].cgid == cgid)
		return &ss->slot[1];
	return 0;
}

/* Starts epoch `e` if it is new: the first socket of an epoch forgets the one
 * before the previous. */
static __always_inline void roll_epoch(struct bw_state *s, __u64 e)
{
	__u64 se = s->epoch;

	if (se != e) {
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

	roll_epoch(s, e);
	dir &= 1;
	return count_active(s->active[dir], &slot->epoch_seen[dir], &slot->progress[dir],
			    progress, s->active_bytes[dir], e, ei);
}

/* Egress: this socket's data packet was just dropped here (past the drop
 * threshold). TCP keeps the segment queued and, with nothing in flight, retries
 * only from its probe timer (200 ms, then every 500 ms while the drops last), so no
 * ACK brings a sock_ops callback that counts it as active. It is still
 * backlogged, so it is counted here: otherwise the other sockets' shares grow by
 * its share while our own drop holds it. */
static __always_inline void count_stalled(struct bw_state *s, struct __sk_buff *skb, __u64 now)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return;
	struct bw_sock *ss = bpf_sk_storage_get(&bw_sock, sk, 0, 0);
	if (!ss)
		return;
	struct bw_sock_slot *slot = slot_find(ss, s->cgid);
	if (!slot)
		return;
	__u64 e = now >> BW_EPOCH_SHIFT;
	roll_epoch(s, e);
	if (slot->epoch_seen[BW_DIR_EGRESS] != e) {
		slot->epoch_seen[BW_DIR_EGRESS] = e;
		__sync_fetch_and_add(&s->active[BW_DIR_EGRESS][e & 1], 1);
	}
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

/* The socket's MSS, or the usual 1448 before the kernel has one. */
static __always_inline __u64 sock_mss(struct bpf_sock_ops *skops)
{
	return skops->mss_cache ? skops->mss_cache : 1448;
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

/* Payload bytes per data segment this socket sends, for converting a share of
 * wire bytes into a pace of payload bytes: the MSS until measured, then the
 * average over its last BW_SEG_SAMPLE or more new segments. A sender that fills a
 * receive window which is not a whole number of segments (a window-scale unit of
 * 1 KB advertises 3,072 B for two segments' worth) sends a short segment every
 * round, and an application writing small messages sends only short ones (counted
 * down to half a segment); each costs a full header on the wire, and a pace that
 * assumed full segments ran past the rate until the receiver's bucket was deep in
 * debt and its gate held ACKs (docs/design.md, "Short segments"). Retransmitted
 * segments are left out: they carry no new bytes. */
static __always_inline __u64 seg_payload(struct bpf_sock_ops *skops, struct bw_sock *ss)
{
	__u64 mss = sock_mss(skops);
	__u32 segs = skops->data_segs_out - skops->total_retrans;
	__u32 nxt = skops->snd_nxt;
	if (!ss->seg_mark_segs && !ss->seg_mark_nxt) {
		ss->seg_mark_segs = segs;
		ss->seg_mark_nxt = nxt;
	} else if (segs - ss->seg_mark_segs >= BW_SEG_SAMPLE &&
		   segs - ss->seg_mark_segs < 0x80000000U) {
		__u64 avg = (__u64)(nxt - ss->seg_mark_nxt) / (segs - ss->seg_mark_segs);
		/* Floored at half a segment: a connection that sent small messages
		 * and then starts a bulk transfer would otherwise be paced for its
		 * first BW_SEG_SAMPLE full segments as if each still carried a few
		 * bytes (a pace of share / 53 at one byte each). Short segments from
		 * filling a window sit well above the floor. */
		ss->seg_avg = avg < mss / 2 ? (__u32)(mss / 2) : avg > mss ? (__u32)mss : (__u32)avg;
		ss->seg_mark_segs = segs;
		ss->seg_mark_nxt = nxt;
	}
	return ss->seg_avg ? ss->seg_avg : mss;
}

static __always_inline struct bw_sock_slot *slot_for(struct bw_sock *ss, __u64 cgid)
{
	struct bw_sock_slot *found = slot_find(ss, cgid);
	if (found)
		return found;
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

/* This level's congestion-window clamp for a socket paced at `pace` (bytes/s of
 * payload), in segments, or 0 for none. Under a millisecond of RTT the kernel
 * sizes a super-packet by up to 64 KB whatever the pace (tcp_tso_rtt_log), and
 * paces the gap after it: a bbr socket at 1M x 8 sent 7-30 KB at once, then
 * nothing for up to 1.9 s, so it was missing from the active count of whole
 * epochs, the other sockets' shares grew by its share and their paces summed
 * past the rate (measured: paces set from 4-7 of 8 sockets). Holding the window
 * to BW_PACED_BURST_NS of the pace bounds both the burst and the gap. */
static __always_inline __u32 cwnd_clamp_for(struct bpf_sock_ops *skops, __u64 pace, __u64 mss)
{
	__u64 span = BW_PACED_BURST_NS;
	__u64 rtt2 = (__u64)(skops->srtt_us >> 3) * 2000;
	if (rtt2 > span)
		span = rtt2;
	__u64 segs = pace / 1000 * (span / 1000000) / mss + 1;
	if (segs < 2)
		segs = 2;
	return segs >= BW_CWND_CLAMP_SEGS ? 0 : (__u32)segs;
}

/* The congestion-window clamp the socket should have: the smallest its levels
 * and the limited destination it sends to (bw_senders) give it; 0 = none. */
static __always_inline __u32 cwnd_want(struct bpf_sock_ops *skops, struct bw_sock *ss)
{
	__u64 w = min_nonzero(ss->slot[0].cwnd_clamp, ss->slot[1].cwnd_clamp);
	if (ss->dst_pacing) {
		__u64 mss = sock_mss(skops);
		w = min_nonzero(w, cwnd_clamp_for(skops, ss->dst_pacing, mss));
	}
	return (__u32)w;
}

/* Sets TCP_BPF_SNDCWND_CLAMP when cwnd_want moved from `was` (the kernel sets
 * ssthresh with it, so it is set only on a change; 0 lifts it). */
static __always_inline void set_cwnd_clamp(struct bpf_sock_ops *skops, struct bw_sock *ss,
					   __u32 was)
{
	__u32 want = cwnd_want(skops, ss);
	if (want == was)
		return;
	int v = want ? (int)want : 0x7fffffff;
	bpf_setsockopt(skops, SOL_TCP, TCP_BPF_SNDCWND_CLAMP, &v, sizeof(v));
}

/* Egress: pace this socket at its share of the rate, converted from wire bytes to
 * payload bytes (pacing counts payload; the bucket counts IP bytes per segment). */
static __always_inline void apply_pacing(struct bpf_sock_ops *skops, struct bw_state *s,
					 struct bw_sock *ss, struct bw_sock_slot *slot, __u64 now)
{
	struct bw_dir *d = &s->dir[BW_DIR_EGRESS];
	__u32 was = cwnd_want(skops, ss);

	if (!d->rate || (s->flags & BW_F_NO_PACING)) {
		slot->pacing = 0;
		slot->cwnd_clamp = 0;
		slot->share[BW_DIR_EGRESS] = 0;
	} else {
		__u64 share = level_share(s, ss, slot, BW_DIR_EGRESS, d->rate, now,
					  skops->bytes_acked);
		__u64 mss = sock_mss(skops);
		__u64 pay = seg_payload(skops, ss);
		slot->pacing = share * pay / (pay + seg_header(skops));
		slot->cwnd_clamp = cwnd_clamp_for(skops, slot->pacing, mss);
	}
	set_pacing(skops, ss, &s->pacing_sets);
	set_cwnd_clamp(skops, ss, was);
}

/* Whether the sender fills the receive window by bytes rather than whole
 * segments: the data an ACK covers then often ends mid-segment. A score rises by
 * two on such an ACK and falls by one on a whole-segment one, so a sender whose
 * writes only now and then end short stays a whole-segment one. */
static __always_inline int byte_filler(struct bpf_sock_ops *skops, struct bw_sock *ss, __u32 mss)
{
	__u32 moved = skops->rcv_nxt - ss->ack_rcv_nxt;

	ss->ack_rcv_nxt = skops->rcv_nxt;
	if (moved && moved < (1u << 30)) {
		if (moved % mss)
			ss->byte_fill = ss->byte_fill + 2 > 16 ? 16 : ss->byte_fill + 2;
		else if (ss->byte_fill)
			ss->byte_fill--;
	}
	return ss->byte_fill >= 4;
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
		__u32 mss = (__u32)sock_mss(skops);
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
		/* A sender paced on this node (or, while other nodes report demand
		 * through the share exchange, on theirs) arrives at the rate by its
		 * pace: one BDP exactly would leave it window-bound below the rate, so
		 * it gets the slack too. Any other sender gets one BDP, the gate being
		 * for its bursts. */
		struct bw_flow_key fk = {};
		int paced = (s->flags & BW_F_PEERS_PACED) ||
			    (flow_key(skops, 0, &fk) && bpf_map_lookup_elem(&bw_flows, &fk));
		ss->peer_paced = paced;
		/* From 1 ms on the BDP is counted in payload, the rate being on the wire. */
		__u64 w = srtt_us >= 1000 ? bdp * 1448 / 1500 : bdp;
		if (srtt_us < 1000 || paced) {
			w = (w + slack + mss - 1) / mss * mss;
		} else if (w < CLAMP_WHOLE_SEGS * mss) {
			/* A BDP of a few segments sits between two of them (10M at
			 * 4 ms RTT: 3.45 segments; 3 hold the flow at 0.87, 4 at
			 * 1.16 and the gate stalls it). So each ACK offers the
			 * segment above or below at random, weighted so the window
			 * averages just under one BDP: the flow then runs just under
			 * the rate and the gate stays for bursts. */
			w = w * CLAMP_TARGET_PCT / 100;
			__u64 below = w / mss * mss;
			/* Feedback from the bucket, for senders that outrun that
			 * average: while an eighth of it is spent only the segment
			 * below is offered. A sender that fills the window by bytes
			 * uses all of what is advertised, which the kernel rounds up
			 * to its window-scale unit (1 KB with large buffers): for it
			 * the segment below is rounded down to 1 KB. The precise
			 * clock: the coarse one lags by up to a tick. */
			int filler = byte_filler(skops, ss, mss);
			if (bucket_spent(d, clock_precise(), d->burst_ns / CLAMP_SPENT_DIV))
				w = filler ? below / 1024 * 1024 : below;
			else
				w = below + (bpf_get_prandom_u32() % mss < w - below ? mss : 0);
		}
		/* From CLAMP_WHOLE_SEGS on, one BDP as it is: a sender truncating it
		 * to whole segments loses under one of them. */
		/* Below two segments the receiver stops ACKing at once. */
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

/* Segments of receive window offered in the handshake (SYN or SYN-ACK), or 0 for
 * the kernel's default. Once offered a window cannot be taken back, and the
 * default (about 64 KB) is seconds of a low limit: many flows opening together
 * would each send it at once, the gate would hold their ACKs and their
 * retransmission timers would back off for a second or more. So the handshake
 * offers what the bucket holds (20 ms of the rate, `clamp_budget` being 1 ms), at
 * least two segments (the receiver ACKs at once from two) and at most ten (a
 * sender's initial window, so a high limit loses nothing: the window grows with
 * the data from there). */
static __always_inline __u32 initial_window(struct bpf_sock_ops *skops, struct bw_state *s)
{
	if (!s->dir[BW_DIR_INGRESS].rate || (s->flags & BW_F_NO_CLAMP))
		return 0;
	__u64 mss = sock_mss(skops);
	/* 20 ms of the rate (the default bucket): at 1M two segments, from 10M a
	 * full initial window, so a short transfer is not held to two segments. */
	__u64 segs = s->clamp_budget * 20 / mss;
	if (segs < 2)
		segs = 2;
	if (segs > 10)
		segs = 10;
	return (__u32)segs;
}

/* The sender's initial congestion window for an egress-limited socket, set while
 * no data has left (TCP_BPF_IW): 20 ms of the egress rate in segments, two to ten,
 * as initial_window sizes the receive side, so a new flow's opening burst is what
 * the bucket holds rather than ten segments. Its first ten segments still leave
 * unpaced within a few round trips; the egress hook's lower drop threshold for
 * them (young_drop_limit) is what holds those to the limit. */
static __always_inline void egress_initial_window(struct bpf_sock_ops *skops, struct bw_state *s)
{
	__u64 rate = s->dir[BW_DIR_EGRESS].rate;
	if (!rate || (s->flags & BW_F_NO_PACING))
		return;
	__u64 mss = sock_mss(skops);
	__u64 segs = rate / 50 / (mss + seg_header(skops));
	if (segs >= 10)
		return;
	__u32 iw = segs < 2 ? 2 : (__u32)segs;
	bpf_setsockopt(skops, SOL_TCP, TCP_BPF_IW, &iw, sizeof(iw));
}

/* Takes one off an epoch's count unless another CPU moved it meanwhile (then the
 * count stays one high until the epoch ends, never wraps below zero). */
static __always_inline void count_down(__u32 *c)
{
	__u32 v = *c;
	if (v)
		__sync_val_compare_and_swap(c, v, v - 1);
}

/* A closing socket leaves the count (`counts`, an [epoch & 1] pair) it is in, so a
 * finished connection does not halve the share of the one that follows it
 * (request/response traffic). */
static __always_inline void uncount(__u32 *counts, __u64 *seen, __u64 e)
{
	__u64 was = *seen;
	if (was == e || was + 1 == e) {
		count_down(&counts[was & 1]);
		*seen = 0;
	}
}

static __always_inline void forget_socket(struct bw_state *s, struct bw_sock_slot *slot,
					  __u64 now)
{
	__u64 e = now >> BW_EPOCH_SHIFT;
	for (int d = 0; d < 2; d++)
		uncount(s->active[d], &slot->epoch_seen[d], e);
}

#endif /* BW_SOCKETS_H */
