//! The model in the kernel's structs and back: a [`Limit`] becomes bucket
//! configuration in `bw_state` and a record in `bw_meta`; `bw_meta` and `bw_state`
//! become an [`Entry`]. Pure functions, tested without root.

use crate::datapath::abi::{self, BwMeta, BwState};
use crate::datapath::bucket;
use crate::model::{DirCounters, Entry, Limit, Owner, Source};

pub fn source_to_raw(s: Source) -> u32 {
    match s {
        Source::Manual => abi::SOURCE_MANUAL,
        Source::Annotation => abi::SOURCE_ANNOTATION,
        Source::Hook => abi::SOURCE_HOOK,
    }
}

pub fn source_from_raw(v: u32) -> Source {
    match v {
        abi::SOURCE_ANNOTATION => Source::Annotation,
        abi::SOURCE_HOOK => Source::Hook,
        _ => Source::Manual,
    }
}

/// `old` with the configuration of `limit` written in: bucket state (`tat`) and
/// counters carry over, so an update in place keeps both.
pub fn state_with_limit(old: &BwState, cgid: u64, limit: &Limit) -> BwState {
    let mut st = *old;
    let burst = limit.burst.map(|b| b.bytes());
    for (i, dir, rate) in [
        (abi::DIR_INGRESS, bucket::Direction::Ingress, limit.ingress),
        (abi::DIR_EGRESS, bucket::Direction::Egress, limit.egress),
    ] {
        let prev = old.dir[i];
        st.dir[i] = match rate {
            Some(r) => {
                let mut d = bucket::dir_config(r.bytes_per_sec(), burst, dir);
                d.tat = prev.tat;
                d
            }
            None => abi::BwDir::default(),
        };
        let d = &mut st.dir[i];
        d.packets = prev.packets;
        d.bytes = prev.bytes;
        d.drop_packets = prev.drop_packets;
        d.drop_bytes = prev.drop_bytes;
        d.mark_packets = prev.mark_packets;
    }
    st.clamp_budget = limit
        .ingress
        .map_or(0, |r| bucket::clamp_budget(r.bytes_per_sec()));
    // Bytes a socket must move in an epoch to take a share of the rate: without
    // it every socket with a callback counts, and a control connection beside one
    // bulk flow halves the flow's share.
    for (i, rate) in [
        (abi::DIR_INGRESS, limit.ingress),
        (abi::DIR_EGRESS, limit.egress),
    ] {
        st.active_bytes[i] = rate.map_or(0, |r| bucket::active_bytes(r.bytes_per_sec()));
    }
    // The share exchange's bit outlives a changed limit; a limit cannot set it.
    st.flags = (limit.flags & !abi::F_PEERS_PACED) | (old.flags & abi::F_PEERS_PACED);
    st.abi = abi::ABI_VERSION;
    // A non-zero cgid is what tells the programs the value is configured.
    st.cgid = cgid;
    st
}

/// The meta record of a limit; `created_ns` is kept from an earlier record.
/// Owner fields that removal compares (pod uid, container id) must fit whole: a
/// cut value could match another pod's, so an owner whose ids do not fit is
/// refused rather than stored cut. The path and names are only shown and may be cut.
pub fn meta_of(
    cgid: u64,
    rel: &str,
    limit: &Limit,
    owner: &Owner,
    created_ns: u64,
) -> Result<BwMeta, String> {
    for (what, v, field) in [
        ("pod uid", &owner.pod_uid, abi::NAME_MAX),
        ("container id", &owner.container_id, abi::ID_MAX),
    ] {
        if v.len() >= field {
            return Err(format!(
                "{what} {} is {} bytes; at most {} are stored, and a cut id could match another workload's",
                crate::text::quoted(v),
                v.len(),
                field - 1
            ));
        }
    }
    let mut m = BwMeta {
        cgid,
        created_ns,
        ingress_bps: limit.ingress.map_or(0, |r| r.bits_per_sec()),
        egress_bps: limit.egress.map_or(0, |r| r.bits_per_sec()),
        burst_bytes: limit.burst.map_or(0, |b| b.bytes()),
        source: source_to_raw(owner.source),
        ..BwMeta::default()
    };
    abi::put_cstr(&mut m.path, rel);
    abi::put_cstr(&mut m.pod_namespace, &owner.pod_namespace);
    abi::put_cstr(&mut m.pod_name, &owner.pod_name);
    abi::put_cstr(&mut m.pod_uid, &owner.pod_uid);
    abi::put_cstr(&mut m.container, &owner.container);
    abi::put_cstr(&mut m.container_id, &owner.container_id);
    Ok(m)
}

pub fn owner_of(m: &BwMeta) -> Owner {
    Owner {
        source: source_from_raw(m.source),
        pod_namespace: abi::get_cstr(&m.pod_namespace),
        pod_name: abi::get_cstr(&m.pod_name),
        pod_uid: abi::get_cstr(&m.pod_uid),
        container: abi::get_cstr(&m.container),
        container_id: abi::get_cstr(&m.container_id),
    }
}

/// What `list` shows of one cgroup id.
pub fn entry_of(cgid: u64, m: &BwMeta, st: &BwState, attached: bool) -> Entry {
    let counters = |d: &abi::BwDir| DirCounters {
        packets: d.packets,
        bytes: d.bytes,
        dropped_packets: d.drop_packets,
        dropped_bytes: d.drop_bytes,
        marked_packets: d.mark_packets,
    };
    let nz = |v: u64| (v != 0).then_some(v);
    Entry {
        cgroup_id: cgid,
        path: abi::get_cstr(&m.path),
        owner: owner_of(m),
        ingress_bps: nz(m.ingress_bps),
        egress_bps: nz(m.egress_bps),
        burst_bytes: nz(m.burst_bytes),
        created_unix: m.created_ns / 1_000_000_000,
        ingress: counters(&st.dir[abi::DIR_INGRESS]),
        egress: counters(&st.dir[abi::DIR_EGRESS]),
        acks_gated: st.acks_gated,
        pacing_sets: st.pacing_sets,
        clamp_sets: st.clamp_sets,
        attached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::Rate;

    #[test]
    fn source_round_trips() {
        for s in [Source::Manual, Source::Annotation, Source::Hook] {
            assert_eq!(source_from_raw(source_to_raw(s)), s);
        }
    }

    #[test]
    fn an_update_keeps_bucket_state_and_counters() {
        let mut old = BwState::default();
        old.dir[abi::DIR_INGRESS].tat = 77;
        old.dir[abi::DIR_INGRESS].packets = 5;
        old.dir[abi::DIR_EGRESS].bytes = 9;
        let limit = Limit {
            ingress: Some(Rate::parse("10M").unwrap()),
            ..Limit::default()
        };
        let st = state_with_limit(&old, 42, &limit);
        assert_eq!(st.cgid, 42);
        assert_eq!(st.dir[abi::DIR_INGRESS].rate, 1_250_000);
        assert_eq!(st.dir[abi::DIR_INGRESS].tat, 77);
        assert_eq!(st.dir[abi::DIR_INGRESS].packets, 5);
        assert_eq!(st.dir[abi::DIR_EGRESS].rate, 0, "unlimited direction");
        assert_eq!(st.dir[abi::DIR_EGRESS].bytes, 9);
        assert!(st.clamp_budget > 0);
        assert_eq!(
            st.active_bytes[abi::DIR_INGRESS],
            bucket::active_bytes(1_250_000),
            "a socket must move this much to take a share"
        );
        assert_eq!(st.active_bytes[abi::DIR_EGRESS], 0);
    }

    #[test]
    fn the_share_exchange_mark_outlives_a_limit_change_and_no_limit_sets_it() {
        let limit = Limit {
            ingress: Some(Rate::parse("10M").unwrap()),
            flags: abi::F_NO_PACING | abi::F_PEERS_PACED,
            ..Limit::default()
        };
        let st = state_with_limit(&BwState::default(), 42, &limit);
        assert_eq!(st.flags, abi::F_NO_PACING, "a limit cannot set the mark");
        let old = BwState {
            flags: abi::F_PEERS_PACED,
            ..BwState::default()
        };
        let st = state_with_limit(&old, 42, &limit);
        assert_eq!(st.flags, abi::F_NO_PACING | abi::F_PEERS_PACED);
    }

    #[test]
    fn meta_round_trips_the_owner() {
        let owner = Owner {
            source: Source::Hook,
            pod_namespace: "ns".into(),
            pod_name: "p".repeat(253),
            pod_uid: "u".into(),
            container: "c".into(),
            container_id: "f".repeat(64),
        };
        let m = meta_of(1, "/kubepods/x", &Limit::default(), &owner, 3).unwrap();
        assert_eq!(owner_of(&m), owner);
        let e = entry_of(1, &m, &BwState::default(), true);
        assert_eq!((e.path.as_str(), e.created_unix), ("/kubepods/x", 0));
    }

    #[test]
    fn ids_that_do_not_fit_whole_are_refused() {
        let long = |uid: String, id: String| Owner {
            pod_uid: uid,
            container_id: id,
            ..Owner::default()
        };
        let l = Limit::default();
        assert!(meta_of(1, "/", &l, &long("A".repeat(63), String::new()), 0).is_ok());
        let e = meta_of(1, "/", &l, &long("A".repeat(64), String::new()), 0).unwrap_err();
        assert!(e.contains("pod uid") && e.contains("64 bytes"), "{e}");
        let e = meta_of(1, "/", &l, &long(String::new(), "f".repeat(72)), 0).unwrap_err();
        assert!(e.contains("container id"), "{e}");
    }
}
