//! The share exchange's authentication: every datagram carries an HMAC-SHA256
//! over its contents with a key every node's daemon shares (a Kubernetes Secret),
//! and a time stamp that must grow from each source and lie near this node's
//! clock. A datagram without a valid seal is refused before it is parsed, so a
//! process that can reach the port but has no key cannot report demand or answer
//! for a pod; a recorded datagram cannot be played again.
//!
//! The key proves that the sender is one of the cluster's daemons, not which one:
//! the receiving side still checks that answers come from the pod's own node.
//!
//! Layout: `MAGIC` (4 bytes), stamp (ns since the Unix epoch, 8 bytes big-endian),
//! tag (32 bytes), then the message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::hmac;

/// Marks a sealed datagram of this version of the exchange.
pub const MAGIC: &[u8; 4] = b"NBS1";
const TAG_LEN: usize = 32;
/// Bytes a seal adds to a message.
pub const OVERHEAD: usize = MAGIC.len() + 8 + TAG_LEN;
/// The shortest key accepted: 128 bits, as random bytes or their text.
pub const MIN_KEY_BYTES: usize = 16;
/// How far a stamp may lie from this node's clock: the nodes' clocks must agree
/// this well (NTP does far better), and a datagram older than this is refused.
pub const CLOCK_WINDOW: Duration = Duration::from_secs(30);
/// How often a key file is read again (a rotated Secret reaches the mounted file
/// within the kubelet's sync period, a minute or so).
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// How long the key before a rotation still opens datagrams: the nodes pick up a
/// new Secret one by one, and meanwhile the exchange keeps working both ways.
pub const ROTATION_GRACE: Duration = Duration::from_secs(300);

/// The shared key.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("share-exchange key file {path}: {err}")]
    Read { path: String, err: String },
    #[error(
        "share-exchange key {what}: {len} bytes, expected at least {MIN_KEY_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)"
    )]
    Short { what: String, len: usize },
}

impl Key {
    /// A key from its bytes; surrounding white space (a trailing newline of a
    /// file or Secret) is not part of it.
    pub fn new(what: &str, bytes: &[u8]) -> Result<Key, KeyError> {
        let b = bytes.trim_ascii();
        if b.len() < MIN_KEY_BYTES {
            return Err(KeyError::Short {
                what: what.to_string(),
                len: b.len(),
            });
        }
        Ok(Key(hmac::Key::new(hmac::HMAC_SHA256, b)))
    }
}

/// The key this node seals with, the one before it for a while after a
/// rotation, and the file they come from.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: Key,
    previous: Option<(Key, Instant)>,
    file: Option<(PathBuf, Vec<u8>)>,
    read_at: Instant,
}

impl From<Key> for Keyring {
    fn from(k: Key) -> Keyring {
        Keyring {
            current: k,
            previous: None,
            file: None,
            read_at: Instant::now(),
        }
    }
}

impl Keyring {
    /// The key in `path`, read again every [`RELOAD_EVERY`].
    pub fn from_file(path: &Path) -> Result<Keyring, KeyError> {
        let bytes = read_key(path)?;
        let mut k = Keyring::from(Key::new(&format!("in {}", path.display()), &bytes)?);
        k.file = Some((path.to_path_buf(), bytes));
        Ok(k)
    }

    pub fn sealing(&self) -> &Key {
        &self.current
    }

    /// Opens `dg` with the current key, or with the previous one within its grace.
    pub fn open<'a>(&self, dg: &'a [u8], now: Instant) -> Result<(u64, &'a [u8]), SealError> {
        match open(&self.current, dg) {
            Err(SealError::BadTag) => match &self.previous {
                Some((k, until)) if now < *until => open(k, dg),
                _ => Err(SealError::BadTag),
            },
            r => r,
        }
    }

    /// Reads the key file again when due. A file that is unreadable or holds
    /// too short a key leaves the current key in place.
    pub fn reload(&mut self, now: Instant) -> Reload {
        let Some((path, had)) = self.file.as_ref() else {
            return Reload::NotDue;
        };
        if now.saturating_duration_since(self.read_at) < RELOAD_EVERY {
            return Reload::NotDue;
        }
        self.read_at = now;
        let new = match read_key(path) {
            Ok(b) if b.trim_ascii() == had.trim_ascii() => return Reload::Same,
            Ok(b) => b,
            Err(e) => return Reload::Failed(e),
        };
        let key = match Key::new(&format!("in {}", path.display()), &new) {
            Ok(k) => k,
            Err(e) => return Reload::Failed(e),
        };
        let old = std::mem::replace(&mut self.current, key);
        self.previous = Some((old, now + ROTATION_GRACE));
        self.file = Some((path.clone(), new));
        Reload::Changed
    }
}

/// What [`Keyring::reload`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// Not read: no key file, or read less than `RELOAD_EVERY` ago.
    NotDue,
    /// Read, and the key is the one in use.
    Same,
    /// Read, and the new key is in use (the previous one opens for a while).
    Changed,
    /// Unreadable or unusable: the current key stays.
    Failed(KeyError),
}

fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::Read {
        path: path.display().to_string(),
        err: e.to_string(),
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "not a sealed share-exchange datagram (expected {OVERHEAD} bytes of seal starting {MAGIC:?})"
    )]
    NotSealed,
    #[error("seal does not verify: the sender has another key, or the datagram was altered")]
    BadTag,
    #[error(
        "stamp {0} s away from this node's clock: expected within {CLOCK_WINDOW:?} (are the nodes' clocks synchronized?)"
    )]
    Clock(i64),
    #[error("stamp not newer than the last one from this source: a replayed or reordered datagram")]
    Replayed,
}

fn signed(stamp: u64, msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(MAGIC.len() + 8 + msg.len());
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&stamp.to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// `msg` sealed with `key` at `stamp`.
pub fn seal(key: &Key, stamp: u64, msg: &[u8]) -> Vec<u8> {
    let tag = hmac::sign(&key.0, &signed(stamp, msg));
    let mut out = Vec::with_capacity(OVERHEAD + msg.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&stamp.to_be_bytes());
    out.extend_from_slice(tag.as_ref());
    out.extend_from_slice(msg);
    out
}

/// The stamp and message of a datagram whose seal verifies with `key`.
pub fn open<'a>(key: &Key, dg: &'a [u8]) -> Result<(u64, &'a [u8]), SealError> {
    if dg.len() < OVERHEAD || &dg[..MAGIC.len()] != MAGIC {
        return Err(SealError::NotSealed);
    }
    let stamp = u64::from_be_bytes(dg[4..12].try_into().expect("8 bytes"));
    let (tag, msg) = dg[12..].split_at(TAG_LEN);
    hmac::verify(&key.0, &signed(stamp, msg), tag).map_err(|_| SealError::BadTag)?;
    Ok((stamp, msg))
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Stamps for outgoing datagrams: the wall clock, but always growing.
#[derive(Debug, Default)]
pub struct Stamper {
    last: u64,
}

impl Stamper {
    pub const fn new() -> Stamper {
        Stamper { last: 0 }
    }

    pub fn stamp(&mut self) -> u64 {
        self.last = wall_ns().max(self.last + 1);
        self.last
    }
}

/// The receiving side's check of stamps: near this node's clock, and growing from
/// each source. Sources quiet for longer than the window are forgotten (their
/// next datagram is judged by the clock alone), so this stays as small as the set
/// of nodes that sent lately.
#[derive(Debug, Default)]
pub struct Freshness {
    last: HashMap<SocketAddr, u64>,
    swept_at: u64,
}

impl Freshness {
    pub fn check(&mut self, src: SocketAddr, stamp: u64) -> Result<(), SealError> {
        self.check_at(src, stamp, wall_ns())
    }

    fn check_at(&mut self, src: SocketAddr, stamp: u64, now: u64) -> Result<(), SealError> {
        let window = CLOCK_WINDOW.as_nanos() as u64;
        if stamp.abs_diff(now) > window {
            let off = (i128::from(stamp) - i128::from(now)) / 1_000_000_000;
            return Err(SealError::Clock(off as i64));
        }
        if now.saturating_sub(self.swept_at) > window {
            self.last
                .retain(|_, s| now.saturating_sub(*s) <= window || *s > now);
            self.swept_at = now;
        }
        match self.last.get_mut(&src) {
            Some(last) if stamp <= *last => Err(SealError::Replayed),
            Some(last) => {
                *last = stamp;
                Ok(())
            }
            None => {
                self.last.insert(src, stamp);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> Key {
        Key::new("test", s.as_bytes()).unwrap()
    }

    #[test]
    fn a_sealed_message_opens_only_with_its_key_and_unaltered() {
        let k = key("0123456789abcdef0123");
        let dg = seal(&k, 42, b"{\"kind\":\"demand\"}");
        assert_eq!(dg.len(), OVERHEAD + 17);
        assert_eq!(open(&k, &dg), Ok((42, &b"{\"kind\":\"demand\"}"[..])));
        assert_eq!(
            open(&key("another key of enough length"), &dg),
            Err(SealError::BadTag)
        );
        for i in [4, 11, 12, 43, dg.len() - 1] {
            let mut bad = dg.clone();
            bad[i] ^= 1;
            assert_eq!(open(&k, &bad), Err(SealError::BadTag), "byte {i}");
        }
        assert_eq!(
            open(&k, b"{\"kind\":\"demand\"}"),
            Err(SealError::NotSealed)
        );
        assert_eq!(open(&k, &dg[..OVERHEAD - 1]), Err(SealError::NotSealed));
    }

    #[test]
    fn short_keys_are_refused_and_white_space_is_not_key() {
        let e = Key::new("in /x", b"short\n").unwrap_err();
        assert!(
            e.to_string().contains("5 bytes, expected at least 16"),
            "{e}"
        );
        let a = key("0123456789abcdef");
        let b = Key::new("t", b"  0123456789abcdef\n").unwrap();
        assert!(open(&b, &seal(&a, 1, b"m")).is_ok());
        let e = Keyring::from_file(Path::new("/nonexistent/key")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/key"), "{e}");
    }

    #[test]
    fn a_rotated_key_file_is_picked_up_and_the_old_key_opens_for_a_while() {
        let dir = std::env::temp_dir().join(format!("nbw-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "first key, long enough\n").unwrap();
        let mut ring = Keyring::from_file(&path).unwrap();
        let t0 = Instant::now();
        let old = seal(ring.sealing(), 1, b"m");
        assert_eq!(ring.reload(t0 + RELOAD_EVERY), Reload::Same);
        std::fs::write(&path, "second key, long enough").unwrap();
        assert_eq!(ring.reload(t0 + RELOAD_EVERY), Reload::NotDue);
        let t1 = t0 + 2 * RELOAD_EVERY;
        assert_eq!(ring.reload(t1), Reload::Changed);
        let new = seal(ring.sealing(), 2, b"m");
        assert!(ring.open(&new, t1).is_ok());
        assert!(ring.open(&old, t1).is_ok(), "the old key within its grace");
        assert_eq!(ring.open(&old, t1 + ROTATION_GRACE), Err(SealError::BadTag));
        // A short or missing key keeps the current one.
        std::fs::write(&path, "short").unwrap();
        let t2 = t1 + RELOAD_EVERY;
        assert!(matches!(
            ring.reload(t2),
            Reload::Failed(KeyError::Short { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            ring.reload(t2 + RELOAD_EVERY),
            Reload::Failed(KeyError::Read { .. })
        ));
        assert!(ring.open(&new, t2).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stamps_must_grow_per_source_and_sit_near_the_clock() {
        let s = |p: u16| SocketAddr::from(([10, 0, 0, 1], p));
        let now = 1_000 * 1_000_000_000u64;
        let mut f = Freshness::default();
        assert_eq!(f.check_at(s(1), now, now), Ok(()));
        assert_eq!(f.check_at(s(1), now, now), Err(SealError::Replayed));
        assert_eq!(f.check_at(s(1), now - 1, now), Err(SealError::Replayed));
        assert_eq!(f.check_at(s(1), now + 1, now), Ok(()));
        // Another source has its own sequence.
        assert_eq!(f.check_at(s(2), now - 5, now), Ok(()));
        let w = CLOCK_WINDOW.as_nanos() as u64;
        assert_eq!(
            f.check_at(s(3), now - w - 1_000_000_000, now),
            Err(SealError::Clock(-31))
        );
        assert!(matches!(
            f.check_at(s(3), now + w + 1, now),
            Err(SealError::Clock(_))
        ));
        // Quiet sources are forgotten after the window; the clock still bounds them.
        let later = now + 2 * w;
        assert_eq!(f.check_at(s(2), later, later), Ok(()));
        assert!(!f.last.contains_key(&s(1)));
    }

    #[test]
    fn the_stamper_grows_even_when_the_clock_does_not() {
        let mut st = Stamper {
            last: u64::MAX - 10,
        };
        let a = st.stamp();
        assert!(st.stamp() > a);
    }

    proptest! {
        /// Any bytes open to a message or an error; nothing panics.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = open(&key("0123456789abcdef"), &b);
        }
    }
}
