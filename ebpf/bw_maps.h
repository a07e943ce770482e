/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * The one definition of every structure and number shared between the kernel
 * programs (bw.bpf.c) and user space. core/build.rs runs bindgen on this header,
 * so the Rust structs and constants (core/src/datapath/abi.rs) are generated from
 * it and cannot disagree with it.
 *
 * Bump BW_ABI_VERSION whenever a layout or a map changes: the pin directory is
 * named after it, so a new binary never reuses programs whose maps it misreads.
 */
#ifndef BW_MAPS_H
#define BW_MAPS_H

#include <linux/types.h>

#define BW_ABI_VERSION 3

#define BW_DIR_INGRESS 0
#define BW_DIR_EGRESS 1

/* cgroup_skb return codes (the kernel's, named once for the programs and the tests). */
#define BW_VERDICT_DROP 0
#define BW_VERDICT_PASS 1
#define BW_VERDICT_DROP_CN 2 /* egress only: drop and tell TCP to reduce cwnd */
#define BW_VERDICT_PASS_CN 3 /* egress only: pass and tell TCP to reduce cwnd */

/* TCP flag bits of the flags byte (offset 13 of the TCP header). */
#define BW_TCP_FIN 0x01
#define BW_TCP_SYN 0x02
#define BW_TCP_RST 0x04
#define BW_TCP_PSH 0x08
#define BW_TCP_ACK 0x10

/*
 * One direction of one limited cgroup: configuration (written by user space),
 * bucket state and counters (written by the programs with atomics).
 *
 * The bucket is a GCRA ("virtual scheduling") token bucket: `tat` is the time at
 * which everything admitted so far would have left at exactly `rate`. A packet
 * costing c ns moves tat to max(tat, now - burst_ns) + c. `debt = tat - now`:
 *   debt <= 0          within the rate (up to burst_ns of saved credit)
 *   0 < debt           over the rate: ingress gates the receiver's pure ACKs
 *   debt > mark_ns     ECT packets get CE, egress TCP also gets congestion notification
 *   debt > drop_ns     TCP packets are dropped (never happens while pacing works;
 *                      a new flow's first ten segments, unpaced, meet a lower one)
 * Non-TCP packets are policed: dropped when they would put the bucket in debt.
 * In the busy state the update is one atomic add, so two CPUs never lose tokens.
 */
struct bw_dir {
	__u64 rate;       /* bytes per second counted as IP bytes per segment; 0 = unlimited */
	__u64 cost_mult;  /* cost in ns of n bytes = (n * cost_mult) >> cost_shift */
	__u32 cost_shift;
	__u32 pad0;
	__u64 burst_ns;   /* credit that accumulates while idle, as time at `rate` */
	__u64 mark_ns;    /* debt from which CE marks / congestion notification start */
	__u64 drop_ns;    /* debt from which TCP packets are dropped */
	__u64 tat;        /* bucket state, CLOCK_MONOTONIC ns; 0 = full bucket */
	__u64 packets;    /* passed */
	__u64 bytes;      /* passed, counted as `rate` counts them */
	__u64 drop_packets;
	__u64 drop_bytes;
	__u64 mark_packets; /* CE-marked or congestion-notified */
};

/*
 * Per-attachment state, kept in a BPF_MAP_TYPE_CGROUP_STORAGE map with a u64 key
 * (the cgroup id), so every program attached to the same cgroup (ingress, egress,
 * sock_ops) shares one value, and sockets of descendant cgroups charge the budget
 * of the cgroup the limit was attached to: a pod-level limit is shared by all of
 * its containers.
 */
struct bw_state {
	__u64 cgid;        /* cgroup id of the attachment; 0 until user space configured it */
	__u32 abi;         /* BW_ABI_VERSION of the writer */
	__u32 flags;       /* BW_F_* */
	struct bw_dir dir[2];
	__u64 clamp_budget; /* receive-window slack beyond rate x RTT, shared by receiving sockets, bytes */
	__u64 acks_gated;   /* pure ACKs withheld to slow a remote sender */
	__u64 pacing_sets;  /* SO_MAX_PACING_RATE changes made */
	__u64 clamp_sets;   /* TCP_WINDOW_CLAMP changes made */
	__u64 epoch;        /* active-socket epoch number (ns >> BW_EPOCH_SHIFT) */
	__u32 active[2][2]; /* [direction][epoch & 1]: sockets seen receiving / sending */
	__u64 active_bytes[2]; /* bytes a socket must move in an epoch to count as active */
	/* Work conservation, [direction][epoch & 1]: active sockets that another
	 * (nested or enclosing) limit holds below their share here, and the sum of
	 * the rates they are held to (bytes/s); the other sockets share the rest. */
	__u32 capped[2][2];
	__u64 capped_rate[2][2];
};

#define BW_F_NO_ACK_GATE (1u << 0) /* ingress: police only, never withhold ACKs */
#define BW_F_NO_PACING (1u << 1)   /* egress: bucket only, no socket pacing */
#define BW_F_NO_CLAMP (1u << 2)    /* ingress: no receive-window clamp */
/* ingress: other nodes pace their senders toward this workload (set by the share
 * exchange while they report demand): its senders are treated as paced */
#define BW_F_PEERS_PACED (1u << 3)

/* The most a socket must move in an epoch to count as active (three segments: a
 * new bulk flow is counted within its first round trips); user space writes a
 * smaller bw_state.active_bytes for low rates. */
#define BW_MAX_ACTIVE_BYTES (3 * 1448)

/* Debt past which TCP packets are dropped is at least this (ns); user space
 * writes bw_dir.drop_ns from it. */
#define BW_MIN_DROP_NS 100000000ULL

/* Bursts of debt a new flow's unpaced first segments may run up before the egress
 * hook drops them (at least BW_MIN_DROP_NS; see bw_packet.h young_drop_limit). */
#define BW_YOUNG_DROP_BURSTS 4

/* The kernel paces a TCP socket from its eleventh data segment on (as sch_fq
 * does): the first ten leave at once whatever SO_MAX_PACING_RATE says. */
#define BW_UNPACED_SEGS 10

/* A paced socket's congestion window holds at most this much of its pace
 * (or two round trips, when longer), and only while that is under
 * BW_CWND_CLAMP_SEGS segments: beyond that a super-packet (64 KB at most)
 * never spans it. */
#define BW_PACED_BURST_NS 100000000ULL
#define BW_CWND_CLAMP_SEGS 64

/* 2^29 ns ~ 537 ms: long enough that sparse bbr flows are seen in every epoch. */
#define BW_EPOCH_SHIFT 29

/* Nested limits a socket can be under at once (a pod and one of its containers). */
#define BW_SOCK_SLOTS 2

struct bw_sock_slot {
	__u64 cgid;
	__u64 epoch_seen[2]; /* last epoch this socket was counted in, per direction */
	__u64 progress[2];   /* bytes acked / received when it was last counted */
	__u64 pacing;        /* this level's share, bytes/s of payload; 0 = none */
	__u32 clamp;         /* this level's window, bytes; 0 = none */
	__u32 cwnd_clamp;    /* this level's congestion-window clamp, segments; 0 = none */
	__u64 share[2];      /* this level's share of its rate per direction, bytes/s; 0 = none */
	__u64 capped_seen[2]; /* 1 + the last epoch this socket was counted as capped here */
};

/* Per-socket state (BPF_MAP_TYPE_SK_STORAGE). */
struct bw_sock {
	struct bw_sock_slot slot[BW_SOCK_SLOTS];
	__u64 pacing_applied;
	__u32 clamp_applied;
	__u32 peer_paced;    /* receiving: the sender is paced on this node (bw_flows) */
	/* Receiving: rcv_nxt at the last ACK sent, and a score of how often the
	 * sender's data ended mid-segment (it fills the window by bytes). */
	__u32 ack_rcv_nxt;
	__u32 byte_fill;
	/* As a local sender to a destination whose ingress is limited (bw_dst): its
	 * share of that limit, bytes/s of payload (0 = none), and its epoch counting. */
	__u64 dst_pacing;
	__u64 dst_epoch_seen;
	__u64 dst_progress;
	/* Sending: the payload its data segments carried on average over the last
	 * BW_SEG_SAMPLE or more (0 = not measured yet), and where that count began
	 * (snd_nxt, new data segments sent). */
	__u32 seg_avg;
	__u32 seg_mark_nxt;
	__u32 seg_mark_segs;
	__u32 seg_pad;
};

/* New data segments between two measurements of a sender's payload per segment. */
#define BW_SEG_SAMPLE 32

/*
 * Sender-side ingress for local senders: the addresses of workloads whose
 * ingress is limited, so that a socket on this node sending to one is paced at
 * its share of that limit and never needs the receiver's ACK gate. Written by
 * user space with the limit; read by bw_senders, attached to the cgroup that holds
 * the node's senders.
 */
struct bw_dst_key {
	__u32 family; /* AF_INET (2) or AF_INET6 (10) */
	__u32 pad0;
	__u8 addr[16]; /* network order; IPv4 in the first four bytes */
};

/* A connection a local sender is paced on, as (sender, receiver): the receiver's
 * window clamp may then leave the paced sender room, since the pace holds it. */
struct bw_flow_key {
	__u32 family;
	__u16 sport;     /* sender's port, host order */
	__u16 dport;     /* receiver's port, host order */
	__u8 saddr[16];
	__u8 daddr[16];
};

struct bw_dst {
	__u64 cgid;        /* the receiving limit's cgroup id */
	__u64 rate;        /* its ingress rate, bytes/s counted as IP bytes per segment */
	__u64 epoch;       /* active-sender epoch (ns >> BW_EPOCH_SHIFT) */
	__u32 active[2];   /* [epoch & 1]: local sockets seen sending to it */
	__u64 pacing_sets; /* SO_MAX_PACING_RATE changes made for it */
};

/*
 * What user space records about each limited cgroup (BPF_MAP_TYPE_HASH keyed by
 * cgroup id, pinned): the kernel is the state, so `bwctl list` and a restarted
 * daemon learn everything from here.
 */
#define BW_PATH_MAX 256
#define BW_NAME_MAX 64        /* DNS labels: namespace, container name; a pod uid */
#define BW_POD_NAME_MAX 256   /* pod names are DNS subdomains, up to 253 */
#define BW_ID_MAX 72          /* container ids: 64 hex digits in every runtime */

#define BW_SOURCE_MANUAL 1
#define BW_SOURCE_ANNOTATION 2
#define BW_SOURCE_HOOK 3

struct bw_meta {
	__u64 cgid;
	__u64 created_ns;     /* CLOCK_REALTIME */
	__u64 ingress_bps;    /* configured, bits per second */
	__u64 egress_bps;
	__u64 burst_bytes;    /* 0 = default */
	__u32 source;         /* BW_SOURCE_* */
	__u32 pad0;
	/* NUL-terminated UTF-8; __u8 rather than char so the generated Rust
	 * fields are byte arrays. */
	__u8 path[BW_PATH_MAX];       /* relative to the cgroup v2 mount */
	__u8 pod_namespace[BW_NAME_MAX];
	__u8 pod_name[BW_POD_NAME_MAX];
	__u8 pod_uid[BW_NAME_MAX];
	__u8 container[BW_NAME_MAX];  /* empty for a pod-level limit */
	__u8 container_id[BW_ID_MAX];
};

#endif /* BW_MAPS_H */
