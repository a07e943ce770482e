//! Untrusted text in messages: annotation keys and values, pod names, cgroup specs
//! come from whoever created the pod. In logs, stderr, the journal and Events they
//! are quoted with control characters escaped (no forged log lines, no terminal
//! escapes) and cut (a 1 MiB value must not become a 1 MiB log line).

/// The most characters of one untrusted value a message shows.
pub const MAX_SHOWN: usize = 128;

/// `s` quoted and escaped, cut to [`MAX_SHOWN`] characters with the full length said.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", escaped(s))
}

/// `s` escaped (no quotes) and cut like [`quoted`]: for names inside a message.
pub fn escaped(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == MAX_SHOWN {
            out.push_str(&format!("…({} bytes)", s.len()));
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_cuts() {
        assert_eq!(quoted("10M"), "\"10M\"");
        assert_eq!(quoted("a\nb\u{1b}[31m"), "\"a\\nb\\u{1b}[31m\"");
        let long = "x".repeat(1 << 20);
        let q = quoted(&long);
        assert!(
            q.len() < 200 && q.ends_with(&format!("…({} bytes)\"", 1 << 20)),
            "{q}"
        );
        assert_eq!(escaped("pod/ns"), "pod/ns");
    }
}
