//! The structures and numbers shared with the kernel programs. Their one definition
//! is `ebpf/bw_maps.h`; build.rs runs bindgen on it, so the structs and constants
//! here are generated from the header (bindgen also asserts every size and offset
//! at compile time against what clang computed) and cannot drift from it. This
//! module gives them the Rust names the rest of the workspace uses.
//!
//! Program and map names are defined here once; a test holds them to what the
//! built object defines, as aya's object parser reads it.

/// The object file built from `ebpf/bw.bpf.c`, embedded so that the binary always
/// loads the programs it was compiled against.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bw.bpf.o"));

/// The same source built with `-DBW_TEST` for BPF_PROG_TEST_RUN (testkit): adds the
/// `bw_test_state` array the programs read their state from and the `bw_empty`
/// baseline program. Kept out of [`BPF_OBJECT`] so production carries none of it;
/// a binary that never names this static does not link its bytes.
#[doc(hidden)]
pub static BPF_TEST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bw_test.bpf.o"));

/// In [`BPF_TEST_OBJECT`] only: the `return 1` baseline program and the array
/// whose key 0 the test programs read their state from.
#[doc(hidden)]
pub const TEST_PROG_EMPTY: &str = "bw_empty";
#[doc(hidden)]
pub const TEST_MAP_STATE: &str = "bw_test_state";

/// Everything bindgen generated from `ebpf/bw_maps.h` (`bw_*` structs, `BW_*`
/// constants), under the C names.
#[allow(non_camel_case_types, non_upper_case_globals, dead_code)]
pub mod ffi {
    include!(concat!(env!("OUT_DIR"), "/bw_maps.rs"));
}

/// `BW_ABI_VERSION`: names the pin directory so a new layout never reuses old pins.
pub const ABI_VERSION: u32 = ffi::BW_ABI_VERSION;

/// Programs in the object, by function name.
pub const PROG_INGRESS: &str = "bw_ingress";
pub const PROG_EGRESS: &str = "bw_egress";
pub const PROG_SOCKOPS: &str = "bw_sockops";
/// Paces local senders toward limited destinations; attached to a senders' cgroup.
pub const PROG_SENDERS: &str = "bw_senders";
pub const PIN_SENDERS: &str = "prog_senders";

/// Pins of the maps user space reads and writes, below the ABI directory.
pub const PIN_STATE: &str = "map_state";
pub const PIN_META: &str = "map_meta";
/// (map name in the object, pin name)
pub const PIN_DST: &str = "map_dst";
pub const PINNED_MAPS: [(&str, &str); 3] = [
    ("bw_state", PIN_STATE),
    ("bw_meta", PIN_META),
    ("bw_dst", PIN_DST),
];

// The header's numbers are plain `#define`s, so bindgen types them u32; indices and
// array lengths are usize on this side.
pub const DIR_INGRESS: usize = ffi::BW_DIR_INGRESS as usize;
pub const DIR_EGRESS: usize = ffi::BW_DIR_EGRESS as usize;

pub const F_NO_ACK_GATE: u32 = ffi::BW_F_NO_ACK_GATE;
pub const F_NO_PACING: u32 = ffi::BW_F_NO_PACING;
pub const F_NO_CLAMP: u32 = ffi::BW_F_NO_CLAMP;
/// Set by the share exchange, never by a limit: see `BW_F_PEERS_PACED`.
pub const F_PEERS_PACED: u32 = ffi::BW_F_PEERS_PACED;

pub const PATH_MAX: usize = ffi::BW_PATH_MAX as usize;
pub const NAME_MAX: usize = ffi::BW_NAME_MAX as usize;
pub const POD_NAME_MAX: usize = ffi::BW_POD_NAME_MAX as usize;
pub const ID_MAX: usize = ffi::BW_ID_MAX as usize;

pub const SOURCE_MANUAL: u32 = ffi::BW_SOURCE_MANUAL;
pub const SOURCE_ANNOTATION: u32 = ffi::BW_SOURCE_ANNOTATION;
pub const SOURCE_HOOK: u32 = ffi::BW_SOURCE_HOOK;

/// cgroup_skb return codes as the programs return them.
pub const VERDICT_DROP: u32 = ffi::BW_VERDICT_DROP;
pub const VERDICT_PASS: u32 = ffi::BW_VERDICT_PASS;
/// Egress only: drop and tell TCP to reduce its congestion window.
pub const VERDICT_DROP_CN: u32 = ffi::BW_VERDICT_DROP_CN;
/// Egress only: pass and tell TCP to reduce its congestion window.
pub const VERDICT_PASS_CN: u32 = ffi::BW_VERDICT_PASS_CN;

/// TCP flag bits the programs look at (and tests build packets with).
pub const TCP_FIN: u8 = ffi::BW_TCP_FIN as u8;
pub const TCP_SYN: u8 = ffi::BW_TCP_SYN as u8;
pub const TCP_RST: u8 = ffi::BW_TCP_RST as u8;
pub const TCP_PSH: u8 = ffi::BW_TCP_PSH as u8;
pub const TCP_ACK: u8 = ffi::BW_TCP_ACK as u8;

/// `struct bw_dir`: one direction's configuration, bucket and counters.
pub type BwDir = ffi::bw_dir;
/// `struct bw_state`: the value of the per-attachment cgroup storage.
pub type BwState = ffi::bw_state;
/// `struct bw_meta`: what user space records about a limited cgroup.
pub type BwMeta = ffi::bw_meta;
/// `struct bw_sock`: per-socket state (sk storage), only read by tests.
pub type BwSock = ffi::bw_sock;
/// `struct bw_dst_key` / `struct bw_dst`: a destination whose ingress is limited.
pub type BwDstKey = ffi::bw_dst_key;
pub type BwDst = ffi::bw_dst;

// SAFETY: plain-old-data structs of integers and byte arrays, no padding the C side
// leaves uninitialised (explicit pad fields), valid for any bit pattern.
unsafe impl aya::Pod for BwDir {}
unsafe impl aya::Pod for BwState {}
unsafe impl aya::Pod for BwMeta {}
unsafe impl aya::Pod for BwSock {}
unsafe impl aya::Pod for BwDstKey {}
unsafe impl aya::Pod for BwDst {}

/// Copies `s` into a fixed, NUL-terminated C string field, truncating on a char
/// boundary when it does not fit.
pub fn put_cstr(field: &mut [u8], s: &str) {
    field.fill(0);
    let mut n = s.len().min(field.len() - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Reads a NUL-terminated C string field.
pub fn get_cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// What aya's object parser finds in the two objects (programs; maps with key and
/// value sizes), generated by build.rs for the tests below.
#[cfg(test)]
mod object {
    include!(concat!(env!("OUT_DIR"), "/bw_object.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Owners are matched by these fields (container removal, resync), so the
    /// longest real values must survive the round trip untruncated.
    #[test]
    fn longest_names_fit() {
        let mut m = BwMeta::default();
        let id = "f".repeat(64);
        let pod = format!("{}.example", "p".repeat(245));
        assert_eq!(pod.len(), 253);
        put_cstr(&mut m.container_id, &id);
        put_cstr(&mut m.pod_name, &pod);
        put_cstr(&mut m.container, &"c".repeat(63));
        put_cstr(&mut m.pod_namespace, &"n".repeat(63));
        put_cstr(&mut m.pod_uid, "0f0e0d0c-0b0a-0908-0706-050403020100");
        assert_eq!(get_cstr(&m.container_id), id);
        assert_eq!(get_cstr(&m.pod_name), pod);
        assert_eq!(get_cstr(&m.container).len(), 63);
        assert_eq!(get_cstr(&m.pod_namespace).len(), 63);
        assert_eq!(get_cstr(&m.pod_uid).len(), 36);
    }

    /// The names user space loads and pins by are exactly what the production
    /// object defines: a renamed program or map fails here, not at load time.
    #[test]
    fn object_defines_exactly_the_named_programs_and_maps() {
        let mut progs = vec![PROG_EGRESS, PROG_INGRESS, PROG_SENDERS, PROG_SOCKOPS];
        progs.sort();
        assert_eq!(object::production::PROGRAMS, progs.as_slice());
        let mut maps: Vec<&str> = object::production::MAPS.iter().map(|m| m.0).collect();
        maps.sort();
        let mut want: Vec<&str> = PINNED_MAPS.iter().map(|m| m.0).collect();
        // Socket storage and the paced-connection table are the maps user space
        // never touches.
        want.push("bw_sock");
        want.push("bw_flows");
        want.sort();
        assert_eq!(maps, want);
    }

    /// The test-only map and program live in the test object alone, so production
    /// programs carry no test branch and the pins no test map.
    #[test]
    fn production_object_has_no_test_objects() {
        assert!(
            object::production::MAPS
                .iter()
                .all(|m| !m.0.starts_with("bw_test") && m.0 != TEST_MAP_STATE),
            "{:?}",
            object::production::MAPS
        );
        assert!(!object::production::PROGRAMS.contains(&TEST_PROG_EMPTY));
        assert!(object::test::PROGRAMS.contains(&TEST_PROG_EMPTY));
        assert!(object::test::MAPS.iter().any(|m| m.0 == TEST_MAP_STATE));
        // Everything else is shared: the test object runs the production code.
        for p in object::production::PROGRAMS {
            assert!(object::test::PROGRAMS.contains(p));
        }
        for m in object::production::MAPS {
            assert!(object::test::MAPS.contains(m));
        }
    }

    /// The map definitions in the object (their BTF) agree with the generated
    /// structs user space reads and writes through.
    #[test]
    fn map_value_sizes_match_generated_structs() {
        let sizes = |maps: &[(&str, u32, u32)], name: &str| {
            maps.iter()
                .find(|m| m.0 == name)
                .map(|m| (m.1 as usize, m.2 as usize))
                .unwrap_or_else(|| panic!("no map {name}"))
        };
        let prod = object::production::MAPS;
        assert_eq!(sizes(prod, "bw_state"), (8, size_of::<BwState>()));
        assert_eq!(sizes(prod, "bw_meta"), (8, size_of::<BwMeta>()));
        assert_eq!(sizes(prod, "bw_sock").1, size_of::<BwSock>());
        assert_eq!(
            sizes(object::test::MAPS, TEST_MAP_STATE),
            (4, size_of::<BwState>())
        );
    }

    #[test]
    fn cstr_round_trip_and_truncation() {
        let mut f = [0u8; 8];
        put_cstr(&mut f, "abc");
        assert_eq!(get_cstr(&f), "abc");
        put_cstr(&mut f, "abcdefghij");
        assert_eq!(get_cstr(&f), "abcdefg");
        put_cstr(&mut f, "ééééé"); // 2-byte chars: must not split one
        assert_eq!(get_cstr(&f), "ééé");
    }
}
