//! Rates and sizes written as Kubernetes quantities.
//!
//! Users put the very same `kubernetes.io/ingress-bandwidth` and
//! `kubernetes.io/egress-bandwidth` annotations on a pod whether the CNI `bandwidth`
//! plugin (fed by containerd or CRI-O) or this plugin enforces them, and they move pods
//! between clusters that use either. A value must therefore mean exactly what it means to
//! Kubernetes (`resource.ParseQuantity` followed by `Quantity.Value()`, then the 1k..1P
//! check of `pkg/util/bandwidth`): `10M` is ten million bits per second, `1Gi` is 2^30,
//! `m` is milli, fractions round up, and anything containerd would refuse (`10K`, `10Mbps`,
//! `0.5k`, `1E`, surrounding spaces) is refused here too, with Kubernetes' own words, so a
//! pod never gets a different limit, or a limit at all, just because the enforcer changed.
//!
//! The arithmetic is exact (decimal digits, a power of ten and a power of two, never a
//! float), because a float would turn `1000.0000000000000001` into 1000 where Kubernetes
//! says 1001, and would wrap or panic on `99999999999999999999E`.
//!
//! Where Kubernetes' Go code has integer bugs we keep its accept/reject decision but not
//! its accident, and say why:
//! - a value that overflows `int64` in its fast path (`10E`, `1e19`) reads as 0 there and is
//!   reported "unreasonably small"; it is rejected here too, as "unreasonably large";
//! - an exponent beyond 32 bits is truncated there (`1000e4294967296` becomes 1000, audit
//!   finding TOB-K8S-015); here it means what it says and is rejected as too large;
//! - a negative value is "unreasonably small" there; here it gets its own message, because
//!   "small" is a confusing thing to tell someone who wrote `-5M`.
//!
//! Inside the limiter rates are bytes per second ([`Rate::bytes_per_sec`]); bits per second
//! stay the unit of everything a user reads or writes, as in Kubernetes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Smallest rate Kubernetes accepts in a bandwidth annotation (`1k`).
pub const MIN_BITS_PER_SEC: u64 = 1_000;
/// Largest rate Kubernetes accepts in a bandwidth annotation (`1P`).
pub const MAX_BITS_PER_SEC: u64 = 1_000_000_000_000_000;
/// Smallest burst value accepted: a bucket that cannot hold one full-size Ethernet-MTU
/// packet would never let such a packet through. (The datapath raises every bucket
/// further, to `datapath::bucket::Direction::min_burst_bytes`; this is only what parses.)
pub const MIN_BURST_ACCEPTED: u64 = 1_500;
/// Largest burst: beyond this a "burst" is seconds of line rate, the runtime-default
/// mistake (256 MiB to 4 GiB) this project exists to avoid repeating.
pub const MAX_BURST_BYTES: u64 = 1 << 30;

/// Kubernetes' `ErrFormatWrong` text, kept verbatim so users can search for it.
const K8S_FORMAT_WRONG: &str = "quantities must match the regular expression \
     '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// What a quantity was meant to be; it picks the words and the bounds of an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantityKind {
    /// A rate in bits per second ([`Rate`]).
    Rate,
    /// A size in bytes ([`ByteSize`]).
    ByteSize,
}

impl QuantityKind {
    fn noun(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::ByteSize => "size",
        }
    }

    fn expected_format(self) -> &'static str {
        match self {
            Self::Rate => {
                "expected a Kubernetes quantity in bits per second such as 10M, 1.5G or 500k"
            }
            Self::ByteSize => "expected a Kubernetes quantity in bytes such as 64Ki, 1Mi or 500k",
        }
    }

    fn too_small(self) -> &'static str {
        match self {
            Self::Rate => "resource is unreasonably small (< 1kbit)",
            Self::ByteSize => "size is unreasonably small (< 1500 bytes)",
        }
    }

    fn expected_min(self) -> &'static str {
        match self {
            Self::Rate => "expected at least 1k, i.e. 1000 bits per second",
            Self::ByteSize => "expected at least 1500 bytes, one full-size packet",
        }
    }

    fn too_large(self) -> &'static str {
        match self {
            Self::Rate => "resource is unreasonably large (> 1Pbit)",
            Self::ByteSize => "size is unreasonably large (> 1Gi)",
        }
    }

    fn expected_max(self) -> &'static str {
        match self {
            Self::Rate => "expected at most 1P, i.e. 10^15 bits per second",
            Self::ByteSize => "expected at most 1Gi, i.e. 1073741824 bytes",
        }
    }
}

impl fmt::Display for QuantityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// Why a rate or size was refused. Every message names the input and what was expected,
/// because it ends up in one log line (or a failed pod) read by someone who only sees that.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RateError {
    /// Not shaped like a quantity at all (Kubernetes' `ErrFormatWrong`): empty, spaces,
    /// unit letters Kubernetes does not know such as `b`, `B` or `ps`.
    #[error("invalid {kind} {}: {K8S_FORMAT_WRONG} ({})", crate::text::quoted(.input), .kind.expected_format())]
    Malformed { kind: QuantityKind, input: String },
    /// Shaped like a quantity but the suffix is unknown (Kubernetes' `ErrSuffix`), e.g. `10K`.
    #[error("invalid {kind} {}: unable to parse quantity's suffix ({})", crate::text::quoted(.input), .kind.expected_format())]
    BadSuffix { kind: QuantityKind, input: String },
    /// A negative amount.
    #[error("invalid {kind} {}: must not be negative ({})", crate::text::quoted(.input), .kind.expected_format())]
    Negative { kind: QuantityKind, input: String },
    /// Below the lower bound after rounding up.
    #[error("invalid {kind} {}: {} ({})", crate::text::quoted(.input), .kind.too_small(), .kind.expected_min())]
    TooSmall { kind: QuantityKind, input: String },
    /// Above the upper bound after rounding up.
    #[error("invalid {kind} {}: {} ({})", crate::text::quoted(.input), .kind.too_large(), .kind.expected_max())]
    TooLarge { kind: QuantityKind, input: String },
}

impl RateError {
    /// The text that was refused, exactly as given.
    pub fn input(&self) -> &str {
        match self {
            Self::Malformed { input, .. }
            | Self::BadSuffix { input, .. }
            | Self::Negative { input, .. }
            | Self::TooSmall { input, .. }
            | Self::TooLarge { input, .. } => input,
        }
    }

    /// Whether the input was meant as a rate or a size.
    pub fn kind(&self) -> QuantityKind {
        match self {
            Self::Malformed { kind, .. }
            | Self::BadSuffix { kind, .. }
            | Self::Negative { kind, .. }
            | Self::TooSmall { kind, .. }
            | Self::TooLarge { kind, .. } => *kind,
        }
    }
}

/// A bandwidth limit, within Kubernetes' bounds (1k to 1P bits per second).
///
/// Serialized as the plain bits-per-second integer; deserializing checks the bounds again
/// so that a hand-edited or stale state file cannot smuggle in a zero rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Rate {
    bits_per_sec: u64,
}

impl Rate {
    /// Parses a Kubernetes quantity in bits per second and applies Kubernetes' bounds.
    pub fn parse(s: &str) -> Result<Rate, RateError> {
        let bits = parse_quantity(s, QuantityKind::Rate)?;
        Self::checked(bits, s)
    }

    /// Applies the same bounds as [`Rate::parse`] to a number of bits per second.
    pub fn from_bits_per_sec(bits_per_sec: u64) -> Result<Rate, RateError> {
        Self::checked(bits_per_sec, &bits_per_sec.to_string())
    }

    fn checked(bits_per_sec: u64, input: &str) -> Result<Rate, RateError> {
        check_bounds(
            bits_per_sec,
            MIN_BITS_PER_SEC,
            MAX_BITS_PER_SEC,
            QuantityKind::Rate,
            input,
        )?;
        Ok(Rate { bits_per_sec })
    }

    pub fn bits_per_sec(&self) -> u64 {
        self.bits_per_sec
    }

    /// Rounded up, so that a limit is never enforced below what the user asked for.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bits_per_sec.div_ceil(8)
    }
}

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rate::parse(s)
    }
}

impl TryFrom<u64> for Rate {
    type Error = RateError;
    fn try_from(bits_per_sec: u64) -> Result<Self, Self::Error> {
        Rate::from_bits_per_sec(bits_per_sec)
    }
}

impl From<Rate> for u64 {
    fn from(rate: Rate) -> u64 {
        rate.bits_per_sec
    }
}

impl fmt::Display for Rate {
    /// The shortest exact quantity (`10M`, `1Gi`, `1500k`), so that what `bwctl` prints can
    /// be pasted back into an annotation unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&human(self.bits_per_sec))
    }
}

/// A burst size in bytes, between one full-size packet (1500 bytes) and 1 GiB.
///
/// Written like a Kubernetes quantity (`64Ki`, `1Mi`, `500k`, `65536`) so that rates and
/// bursts follow one syntax; unlike rates the unit is bytes, since a bucket holds bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct ByteSize(u64);

impl ByteSize {
    /// Parses a Kubernetes quantity in bytes and applies the burst bounds.
    pub fn parse(s: &str) -> Result<ByteSize, RateError> {
        let bytes = parse_quantity(s, QuantityKind::ByteSize)?;
        Self::checked(bytes, s)
    }

    /// Applies the same bounds as [`ByteSize::parse`] to a number of bytes.
    pub fn from_bytes(bytes: u64) -> Result<ByteSize, RateError> {
        Self::checked(bytes, &bytes.to_string())
    }

    fn checked(bytes: u64, input: &str) -> Result<ByteSize, RateError> {
        check_bounds(
            bytes,
            MIN_BURST_ACCEPTED,
            MAX_BURST_BYTES,
            QuantityKind::ByteSize,
            input,
        )?;
        Ok(ByteSize(bytes))
    }

    pub fn bytes(&self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ByteSize::parse(s)
    }
}

impl TryFrom<u64> for ByteSize {
    type Error = RateError;
    fn try_from(bytes: u64) -> Result<Self, Self::Error> {
        ByteSize::from_bytes(bytes)
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> u64 {
        size.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&human(self.0))
    }
}

fn check_bounds(
    value: u64,
    min: u64,
    max: u64,
    kind: QuantityKind,
    input: &str,
) -> Result<(), RateError> {
    let input = input.to_owned();
    if value < min {
        Err(RateError::TooSmall { kind, input })
    } else if value > max {
        Err(RateError::TooLarge { kind, input })
    } else {
        Ok(())
    }
}

/// Shortest exact spelling; on a tie the decimal suffix wins, as rates are usually decimal.
fn human(value: u64) -> String {
    const UNITS: [(&str, u64); 12] = [
        ("E", 1_000_000_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("T", 1_000_000_000_000),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("k", 1_000),
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    let mut best = value.to_string();
    if value == 0 {
        return best;
    }
    for (suffix, unit) in UNITS {
        if value.is_multiple_of(unit) {
            let candidate = format!("{}{suffix}", value / unit);
            if candidate.len() < best.len() {
                best = candidate;
            }
        }
    }
    best
}

/// `Quantity.Value()` of `s`: the exact value rounded up to an integer, saturated at
/// `u64::MAX` (far above every bound, so saturation never changes a decision).
fn parse_quantity(s: &str, kind: QuantityKind) -> Result<u64, RateError> {
    let error = |make: fn(QuantityKind, String) -> RateError| make(kind, s.to_owned());
    let scanned = scan(s.as_bytes())
        .ok_or_else(|| error(|kind, input| RateError::Malformed { kind, input }))?;
    let (exp10, exp2) = interpret_suffix(scanned.suffix)
        .ok_or_else(|| error(|kind, input| RateError::BadSuffix { kind, input }))?;

    // Significant digits only: leading zeros carry nothing and trailing zeros move into
    // the exponent, which keeps the arithmetic below bounded by the number's magnitude
    // rather than by how many zeros somebody typed.
    let mut digits: Vec<u8> = scanned
        .int
        .iter()
        .chain(scanned.frac)
        .map(|d| d - b'0')
        .skip_while(|&d| d == 0)
        .collect();
    let mut exp10 = i128::from(exp10) - scanned.frac.len() as i128;
    while digits.last() == Some(&0) {
        digits.pop();
        exp10 += 1;
    }

    let value = ceil_value(&digits, exp10, exp2);
    if scanned.negative && value != 0 {
        return Err(error(|kind, input| RateError::Negative { kind, input }));
    }
    Ok(value)
}

struct Scanned<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    suffix: &'a [u8],
}

/// Mirrors `parseQuantityString` step by step, quirks included (`1.`, `.5`, a bare `-`
/// or `.` are zero; `10K` and `1M5` get as far as the suffix check while `10Mb` does not),
/// so that each input gets the same Kubernetes error it would get from kubelet.
fn scan(s: &[u8]) -> Option<Scanned<'_>> {
    if s.is_empty() {
        return None;
    }
    let end = s.len();
    let digits_from = |mut pos: usize| {
        while pos < end && s[pos].is_ascii_digit() {
            pos += 1;
        }
        pos
    };

    let (negative, int_start) = match s[0] {
        b'-' => (true, 1),
        b'+' => (false, 1),
        _ => (false, 0),
    };
    let mut pos = digits_from(int_start);
    let int = &s[int_start..pos];
    let mut frac: &[u8] = &[];
    if pos < end && s[pos] == b'.' {
        let frac_start = pos + 1;
        pos = digits_from(frac_start);
        frac = &s[frac_start..pos];
    }

    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&s[pos]) {
        pos += 1;
    }
    if pos < end && (s[pos] == b'-' || s[pos] == b'+') {
        pos += 1;
    }
    pos = digits_from(pos);
    (pos == end).then_some(Scanned {
        negative,
        int,
        frac,
        suffix: &s[suffix_start..],
    })
}

/// Kubernetes' `suffixHandler.interpret`: (power of ten, power of two), or None for an
/// unknown suffix.
fn interpret_suffix(suffix: &[u8]) -> Option<(i64, u32)> {
    Some(match suffix {
        b"n" => (-9, 0),
        b"u" => (-6, 0),
        b"m" => (-3, 0),
        b"" => (0, 0),
        b"k" => (3, 0),
        b"M" => (6, 0),
        b"G" => (9, 0),
        b"T" => (12, 0),
        b"P" => (15, 0),
        b"E" => (18, 0),
        b"Ki" => (0, 10),
        b"Mi" => (0, 20),
        b"Gi" => (0, 30),
        b"Ti" => (0, 40),
        b"Pi" => (0, 50),
        b"Ei" => (0, 60),
        // Go's ParseInt(…, 10, 64) and Rust's i64 parser agree: optional sign, ASCII
        // digits, no overflow; out-of-range exponents are a suffix error in both.
        [b'e' | b'E', exponent @ ..] if !exponent.is_empty() => {
            (std::str::from_utf8(exponent).ok()?.parse().ok()?, 0)
        }
        _ => return None,
    })
}

/// ceil(digits × 10^exp10 × 2^exp2), saturated at `u64::MAX`.
///
/// `digits` has no leading or trailing zeros; `exp2` is at most 60.
fn ceil_value(digits: &[u8], exp10: i128, exp2: u32) -> u64 {
    if digits.is_empty() {
        return 0;
    }
    let len = digits.len() as i128;
    // The value is at least 10^(len-1+exp10): from 10^20 on it cannot fit a u64.
    if len - 1 + exp10 >= 20 {
        return u64::MAX;
    }
    // The value is below 10^(len+exp10) × 2^60 < 10^(len+exp10+19): a positive amount below
    // one, which Kubernetes rounds up to one.
    if len + exp10 + 19 <= 0 {
        return 1;
    }

    // From here the integer part has at most 20 digits (fits u128 even after << 60) and
    // the fraction at most len + 19 digits, so the work is bounded by the input's length.
    let int_len = len + exp10;
    let (int_digits, frac_digits, frac_leading_zeros) = if exp10 >= 0 {
        (digits, &[][..], 0)
    } else if int_len > 0 {
        let (int, frac) = digits.split_at(int_len as usize);
        (int, frac, 0)
    } else {
        (&[][..], digits, (-int_len) as u32)
    };

    let mut int: u128 = int_digits
        .iter()
        .fold(0, |acc, &d| acc * 10 + u128::from(d));
    if exp10 > 0 {
        int *= 10u128.pow(exp10 as u32);
    }
    let int = int << exp2;

    // Multiplying the fraction by 2^exp2 digit by digit from the right: the carry out of
    // the top is the whole part, and any non-zero digit left behind means rounding up.
    let mut carry: u128 = 0;
    let mut inexact = false;
    for &d in frac_digits.iter().rev() {
        let t = (u128::from(d) << exp2) + carry;
        inexact |= !t.is_multiple_of(10);
        carry = t / 10;
    }
    for _ in 0..frac_leading_zeros {
        inexact |= !carry.is_multiple_of(10);
        carry /= 10;
    }
    let total = int + carry + u128::from(inexact);
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// A rate in bits per second for people: `12.34 Mbit/s`, `1.00 Gbit/s`,
/// `950.0 kbit/s`, `12 bit/s`; `—` for NaN or infinity (a value never measured).
pub fn human_bps(bits_per_sec: f64) -> String {
    let v = bits_per_sec;
    if !v.is_finite() {
        "—".into()
    } else if v >= 1e9 {
        format!("{:.2} Gbit/s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} Mbit/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kbit/s", v / 1e3)
    } else {
        format!("{v:.0} bit/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_rates() {
        assert_eq!(human_bps(12_340_000.0), "12.34 Mbit/s");
        assert_eq!(human_bps(1e9), "1.00 Gbit/s");
        assert_eq!(human_bps(950_000.0), "950.0 kbit/s");
        assert_eq!(human_bps(12.0), "12 bit/s");
        assert_eq!(human_bps(f64::NAN), "—");
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Want {
        Ok(u64),
        Malformed,
        BadSuffix,
        Negative,
        TooSmall,
        TooLarge,
    }
    use Want::*;

    fn outcome<T>(result: Result<T, RateError>, value: impl Fn(&T) -> u64) -> Want {
        match result {
            Result::Ok(v) => Ok(value(&v)),
            Err(RateError::Malformed { .. }) => Malformed,
            Err(RateError::BadSuffix { .. }) => BadSuffix,
            Err(RateError::Negative { .. }) => Negative,
            Err(RateError::TooSmall { .. }) => TooSmall,
            Err(RateError::TooLarge { .. }) => TooLarge,
        }
    }

    const RATE_CASES: &[(&str, Want)] = &[
        // The documented examples.
        ("10M", Ok(10_000_000)),
        ("500k", Ok(500_000)),
        ("1.5M", Ok(1_500_000)),
        ("2.5e6", Ok(2_500_000)),
        ("1Gi", Ok(1_073_741_824)),
        ("100Mi", Ok(104_857_600)),
        // Every decimal suffix, and every binary one, at a value inside the bounds.
        ("1000000000000n", Ok(1_000)),
        ("1000000000u", Ok(1_000)),
        ("1000000m", Ok(1_000)),
        ("1000", Ok(1_000)),
        ("1k", Ok(1_000)),
        ("1G", Ok(1_000_000_000)),
        ("1T", Ok(1_000_000_000_000)),
        ("1P", Ok(MAX_BITS_PER_SEC)),
        ("0.001E", Ok(MAX_BITS_PER_SEC)),
        ("1Ki", Ok(1_024)),
        ("1Mi", Ok(1_048_576)),
        ("909Ti", Ok(909 << 40)),
        ("0.0000001Ei", Ok(115_292_150_461)),
        // Exponent forms.
        ("1e3", Ok(1_000)),
        ("1E3", Ok(1_000)),
        ("1e+3", Ok(1_000)),
        ("1000e-0", Ok(1_000)),
        ("10000e-1", Ok(1_000)),
        ("0.01e6", Ok(10_000)),
        ("1e15", Ok(MAX_BITS_PER_SEC)),
        // Signs, zeros and the number shapes Kubernetes accepts.
        ("+10M", Ok(10_000_000)),
        ("0010M", Ok(10_000_000)),
        ("10.M", Ok(10_000_000)),
        (".5M", Ok(500_000)),
        ("1000.000", Ok(1_000)),
        ("0000000000000000000000000000001k", Ok(1_000)),
        // Rounding up, exactly.
        ("1000.1", Ok(1_001)),
        ("1000.0000000000000000000000000000001", Ok(1_001)),
        ("999.5", Ok(1_000)),
        ("999999999m", Ok(1_000_000)),
        ("0.999999999999999999999k", Ok(1_000)),
        ("0.98Ki", Ok(1_004)),
        ("1.0000000000000000000000001Ki", Ok(1_025)),
        ("1.5Ki", Ok(1_536)),
        ("12345.678e-1", Ok(1_235)),
        // Traps: unit spellings Kubernetes does not know.
        ("10K", BadSuffix),
        ("10Mb", Malformed),
        ("10MB", Malformed),
        ("10Mbps", Malformed),
        ("10mbit", Malformed),
        ("10 M", Malformed),
        ("1KiB", Malformed),
        ("10ki", BadSuffix),
        ("1M5", BadSuffix),
        ("1e", BadSuffix),
        ("1Ee3", BadSuffix),
        ("1-", BadSuffix),
        ("--1", BadSuffix),
        ("1e3.5", Malformed),
        ("1..5", Malformed),
        ("", Malformed),
        ("abc", Malformed),
        ("0x10", Malformed),
        ("１０M", Malformed),
        // Kubernetes does not trim, so neither do we.
        (" 10M", Malformed),
        ("10M ", Malformed),
        ("10M\n", Malformed),
        // Negative amounts.
        ("-5M", Negative),
        ("-1.5k", Negative),
        ("-1m", Negative),
        // Out of bounds, including the milli trap.
        ("10m", TooSmall),
        ("1001m", TooSmall),
        ("0.5k", TooSmall),
        ("999", TooSmall),
        ("0.9Ki", TooSmall),
        ("0", TooSmall),
        ("-0", TooSmall),
        ("-", TooSmall),
        (".", TooSmall),
        ("M", TooSmall),
        ("1e-1000000000000000000", TooSmall),
        ("1E", TooLarge),
        ("2P", TooLarge),
        ("1Pi", TooLarge),
        ("910Ti", TooLarge),
        ("1000000000000001", TooLarge),
        ("1000000000000000.1", TooLarge),
        ("1Ei", TooLarge),
        // Overflow: must be "too large", never a wrap-around or a panic.
        ("10E", TooLarge),
        ("1e19", TooLarge),
        ("99999999999999999999E", TooLarge),
        ("99999999999999999999999999999999999999999999Ei", TooLarge),
        ("1e1000000000000000000", TooLarge),
        ("1000e4294967296", TooLarge),
        ("9223372036854775807e9223372036854775807", TooLarge),
        // An exponent that does not fit an int64 is a suffix error in Kubernetes too.
        ("1e10000000000000000000", BadSuffix),
        ("1e-99999999999999999999", BadSuffix),
    ];

    #[test]
    fn rate_parse_table() {
        for &(input, want) in RATE_CASES {
            let got = outcome(Rate::parse(input), Rate::bits_per_sec);
            assert_eq!(got, want, "Rate::parse({input:?})");
            let via_from_str = outcome(input.parse::<Rate>(), Rate::bits_per_sec);
            assert_eq!(via_from_str, want, "{input:?}.parse::<Rate>()");
        }
    }

    #[test]
    fn every_error_names_the_input_and_the_expectation() {
        let failures = RATE_CASES
            .iter()
            .filter_map(|(input, _)| Rate::parse(input).err().map(|e| (*input, e)));
        let size_failures = SIZE_CASES
            .iter()
            .filter_map(|(input, _)| ByteSize::parse(input).err().map(|e| (*input, e)));
        for (input, err) in failures.chain(size_failures) {
            assert_eq!(err.input(), input);
            let message = err.to_string();
            assert!(
                message.contains(&format!("{input:?}")),
                "{message:?} does not name {input:?}"
            );
            assert!(
                message.contains("(expected "),
                "{message:?} has no expectation"
            );
        }
    }

    #[test]
    fn error_messages_keep_kubernetes_words() {
        let cases = [
            (
                "10K",
                "invalid rate \"10K\": unable to parse quantity's suffix (expected a \
                 Kubernetes quantity in bits per second such as 10M, 1.5G or 500k)",
            ),
            (
                "10Mbps",
                "invalid rate \"10Mbps\": quantities must match the regular expression \
                 '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (expected a Kubernetes \
                 quantity in bits per second such as 10M, 1.5G or 500k)",
            ),
            (
                "0.5k",
                "invalid rate \"0.5k\": resource is unreasonably small (< 1kbit) \
                 (expected at least 1k, i.e. 1000 bits per second)",
            ),
            (
                "1E",
                "invalid rate \"1E\": resource is unreasonably large (> 1Pbit) \
                 (expected at most 1P, i.e. 10^15 bits per second)",
            ),
            (
                "-5M",
                "invalid rate \"-5M\": must not be negative (expected a Kubernetes \
                 quantity in bits per second such as 10M, 1.5G or 500k)",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Rate::parse(input).unwrap_err().to_string(), want);
        }
        assert_eq!(
            ByteSize::parse("1KB").unwrap_err().to_string(),
            "invalid size \"1KB\": quantities must match the regular expression \
             '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (expected a Kubernetes \
             quantity in bytes such as 64Ki, 1Mi or 500k)",
        );
        assert_eq!(
            ByteSize::parse("1k").unwrap_err().to_string(),
            "invalid size \"1k\": size is unreasonably small (< 1500 bytes) \
             (expected at least 1500 bytes, one full-size packet)",
        );
    }

    #[test]
    fn from_bits_per_sec_applies_the_same_bounds() {
        let cases = [
            (0, TooSmall),
            (999, TooSmall),
            (1_000, Ok(1_000)),
            (MAX_BITS_PER_SEC, Ok(MAX_BITS_PER_SEC)),
            (MAX_BITS_PER_SEC + 1, TooLarge),
            (u64::MAX, TooLarge),
        ];
        for (bits, want) in cases {
            let result = Rate::from_bits_per_sec(bits);
            if let Err(err) = &result {
                assert_eq!(err.input(), bits.to_string());
                assert_eq!(err.kind(), QuantityKind::Rate);
            }
            assert_eq!(outcome(result, Rate::bits_per_sec), want, "{bits}");
        }
    }

    #[test]
    fn bytes_per_sec_rounds_up() {
        let cases = [
            (1_000, 125),
            (1_001, 126),
            (1_007, 126),
            (1_008, 126),
            (1_009, 127),
            (10_000_000, 1_250_000),
            (MAX_BITS_PER_SEC, 125_000_000_000_000),
        ];
        for (bits, bytes) in cases {
            let rate = Rate::from_bits_per_sec(bits).unwrap();
            assert_eq!(rate.bytes_per_sec(), bytes, "{bits} bit/s");
        }
    }

    #[test]
    fn display_is_short_and_parses_back() {
        let cases = [
            (1_000, "1k"),
            (1_024, "1Ki"),
            (1_500, "1500"),
            (1_536, "1536"),
            (65_536, "64Ki"),
            (1_500_000, "1500k"),
            (10_000_000, "10M"),
            (1_024_000, "1024k"),
            (2_048_000, "2048k"),
            (104_857_600, "100Mi"),
            (1_073_741_824, "1Gi"),
            (2_500_000_000, "2500M"),
            (123_456_789, "123456789"),
            (MAX_BITS_PER_SEC, "1P"),
            (909 << 40, "909Ti"),
        ];
        for (bits, text) in cases {
            let rate = Rate::from_bits_per_sec(bits).unwrap();
            assert_eq!(rate.to_string(), text, "{bits}");
            assert_eq!(Rate::parse(text).unwrap(), rate, "{text}");
        }
        assert_eq!(format!("{:>6}", Rate::parse("10M").unwrap()), "   10M");
    }

    #[test]
    fn display_round_trips_across_the_range() {
        // A deterministic walk over mantissas × units, plus plain odd values, so every
        // suffix choice and the "no suffix fits" path are exercised.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![MIN_BITS_PER_SEC, MAX_BITS_PER_SEC];
        for unit in [1, 1_000, 1 << 10, 1_000_000, 1 << 20, 1 << 30, 1 << 40] {
            for _ in 0..200 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let v = (x >> 20) % (MAX_BITS_PER_SEC / unit) * unit;
                if v >= MIN_BITS_PER_SEC {
                    values.push(v);
                }
            }
        }
        for bits in values {
            let rate = Rate::from_bits_per_sec(bits).unwrap();
            let text = rate.to_string();
            assert_eq!(Rate::parse(&text), Result::Ok(rate), "{bits} -> {text}");
            assert!(text.len() <= bits.to_string().len(), "{bits} -> {text}");
        }
    }

    #[test]
    fn plain_decimals_match_integer_arithmetic() {
        // "int.frac" with up to 3 fraction digits against ceil computed on integers.
        for milli in (999_000u64..1_003_000).step_by(7) {
            let text = format!("{}.{:03}", milli / 1_000, milli % 1_000);
            let want = milli.div_ceil(1_000);
            let got = outcome(Rate::parse(&text), Rate::bits_per_sec);
            let want = if want < MIN_BITS_PER_SEC {
                TooSmall
            } else {
                Ok(want)
            };
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn serde_is_the_bits_per_second_integer() {
        let rate = Rate::parse("10M").unwrap();
        assert_eq!(serde_json::to_string(&rate).unwrap(), "10000000");
        assert_eq!(serde_json::from_str::<Rate>("10000000").unwrap(), rate);
        let err = serde_json::from_str::<Rate>("0").unwrap_err().to_string();
        assert!(err.contains("unreasonably small"), "{err}");
        assert!(serde_json::from_str::<Rate>("\"10M\"").is_err());

        let size = ByteSize::parse("64Ki").unwrap();
        assert_eq!(serde_json::to_string(&size).unwrap(), "65536");
        assert_eq!(serde_json::from_str::<ByteSize>("65536").unwrap(), size);
        assert!(serde_json::from_str::<ByteSize>("10").is_err());
    }

    #[test]
    fn rates_order_by_value() {
        let mut rates: Vec<Rate> = ["1Gi", "1k", "10M", "1G", "1.5M"]
            .iter()
            .map(|s| Rate::parse(s).unwrap())
            .collect();
        rates.sort();
        let texts: Vec<String> = rates.iter().map(Rate::to_string).collect();
        assert_eq!(texts, ["1k", "1500k", "10M", "1G", "1Gi"]);
    }

    const SIZE_CASES: &[(&str, Want)] = &[
        ("64Ki", Ok(65_536)),
        ("1Mi", Ok(1_048_576)),
        ("500k", Ok(500_000)),
        ("1M", Ok(1_000_000)),
        ("65536", Ok(65_536)),
        ("1500", Ok(MIN_BURST_ACCEPTED)),
        ("1.5k", Ok(1_500)),
        ("1.4999k", Ok(1_500)),
        ("1Gi", Ok(MAX_BURST_BYTES)),
        ("1024Mi", Ok(MAX_BURST_BYTES)),
        ("1G", Ok(1_000_000_000)),
        ("1e6", Ok(1_000_000)),
        ("1499", TooSmall),
        ("1Ki", TooSmall),
        ("1k", TooSmall),
        ("0", TooSmall),
        ("1073741825", TooLarge),
        ("1.0000001Gi", TooLarge),
        ("2G", TooLarge),
        ("1Ti", TooLarge),
        ("99999999999999999999E", TooLarge),
        ("-64Ki", Negative),
        ("64KB", Malformed),
        ("64 Ki", Malformed),
        ("", Malformed),
        ("64K", BadSuffix),
        ("64kb", Malformed),
    ];

    #[test]
    fn byte_size_parse_table() {
        for &(input, want) in SIZE_CASES {
            let got = outcome(ByteSize::parse(input), ByteSize::bytes);
            assert_eq!(got, want, "ByteSize::parse({input:?})");
            if let Err(err) = ByteSize::parse(input) {
                assert_eq!(err.kind(), QuantityKind::ByteSize);
            }
            assert_eq!(
                outcome(input.parse::<ByteSize>(), ByteSize::bytes),
                want,
                "{input:?}.parse::<ByteSize>()"
            );
        }
    }

    #[test]
    fn byte_size_bounds_and_display() {
        let cases = [
            (1_499, TooSmall),
            (1_500, Ok(1_500)),
            (MAX_BURST_BYTES, Ok(MAX_BURST_BYTES)),
            (MAX_BURST_BYTES + 1, TooLarge),
        ];
        for (bytes, want) in cases {
            assert_eq!(outcome(ByteSize::from_bytes(bytes), ByteSize::bytes), want);
        }
        for (bytes, text) in [
            (1_500, "1500"),
            (65_536, "64Ki"),
            (1_000_000, "1M"),
            (1 << 30, "1Gi"),
            (123_457, "123457"),
        ] {
            let size = ByteSize::from_bytes(bytes).unwrap();
            assert_eq!(size.to_string(), text);
            assert_eq!(ByteSize::parse(text).unwrap(), size);
        }
    }
}
