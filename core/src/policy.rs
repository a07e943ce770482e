//! Settings and the one decision every front end makes the same way: what to do
//! when a workload asks for a limit badly, or when its limit cannot be set.
//!
//! Settings are a small `key = value` file (the format of the NRI
//! `/etc/nri/conf.d/NN-name.conf` snippets the runtime hands the daemon in
//! Configure), shared by the daemon and the OCI hook; the same keys exist on the
//! command line, and the daemon layers the Configure payload on top.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `strict` | `false` | fail pod / container creation on a malformed annotation or a limit that cannot be set, instead of running the workload unlimited |
//! | `metrics_address` | unset | `host:port` for the Prometheus text endpoint (`/metrics`); unset = off |

use std::fmt::Display;

use crate::annotations::BadAnnotation;

/// The settings file shared by the daemon and the hook.
pub const DEFAULT_CONFIG: &str = "/etc/nri-bandwidth/nri-bandwidth.conf";

/// Strict or fail open, from the settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Fail pod / container creation on a malformed annotation or a limit that
    /// cannot be set, instead of running the workload unlimited.
    pub strict: bool,
}

/// What a front end does about a problem with one workload's limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong.
    Proceed,
    /// Fail open: the workload runs unlimited; log this line as a warning.
    RunUnlimited(String),
    /// Strict: refuse the workload with this message (for the runtime and the log).
    Refuse(String),
}

impl Policy {
    /// Malformed values of `what` (`pod ns/name`, `container ...`).
    pub fn on_bad_values(&self, what: &str, bad: &[BadAnnotation]) -> Verdict {
        if bad.is_empty() {
            return Verdict::Proceed;
        }
        let reasons: Vec<String> = bad.iter().map(|b| b.to_string()).collect();
        self.on_failure(what, &reasons.join("; "))
    }

    /// The limit of `what` could not be set (cgroup gone or refused, kernel error):
    /// never block a healthy workload for it, unless strict mode promised enforcement.
    pub fn on_failure(&self, what: &str, err: &dyn Display) -> Verdict {
        if self.strict {
            Verdict::Refuse(format!("nri-bandwidth: {what}: {err}"))
        } else {
            Verdict::RunUnlimited(format!("{what} runs without a bandwidth limit: {err}"))
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub strict: bool,
    pub metrics_address: Option<String>,
}

impl Config {
    pub fn from_file(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut c = Config::default();
        c.merge_text(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }

    /// Applies `key = value` lines (`#` starts a comment; values may be quoted).
    /// An unknown key or a bad value is an error naming the line, so a typo is
    /// never silently ignored.
    pub fn merge_text(&mut self, text: &str) -> Result<(), String> {
        let mut next = self.clone();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!(
                    "line {}: expected `key = value`, found {raw:?}",
                    n + 1
                ));
            };
            let (key, value) = (key.trim(), value.trim().trim_matches('"'));
            match key {
                "strict" => {
                    next.strict = match value {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(format!(
                                "line {}: strict = {value:?}: expected true or false",
                                n + 1
                            ));
                        }
                    }
                }
                "metrics_address" => {
                    next.metrics_address = (!value.is_empty()).then(|| value.to_string());
                }
                _ => {
                    return Err(format!(
                        "line {}: unknown key {key:?} (known: strict, metrics_address)",
                        n + 1
                    ));
                }
            }
        }
        *self = next;
        Ok(())
    }

    /// The settings at `path`, or the defaults when `path` is the default file and
    /// it does not exist (a node that never wrote one).
    pub fn from_file_or_default(path: Option<&std::path::Path>) -> Result<Config, String> {
        match path {
            Some(p) => Config::from_file(p),
            None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
                Config::from_file(std::path::Path::new(DEFAULT_CONFIG))
            }
            None => Ok(Config::default()),
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            strict: self.strict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_fail_open_or_refuse_with_key_and_value() {
        let bad = [BadAnnotation {
            key: "kubernetes.io/ingress-bandwidth".into(),
            value: "10Mbps".into(),
            error: "expected a quantity".into(),
        }];
        assert_eq!(
            Policy::default().on_bad_values("pod a/b", &[]),
            Verdict::Proceed
        );
        match Policy::default().on_bad_values("pod a/b", &bad) {
            Verdict::RunUnlimited(m) => assert!(
                m.starts_with("pod a/b runs without a bandwidth limit")
                    && m.contains("10Mbps")
                    && m.contains("kubernetes.io/ingress-bandwidth"),
                "{m}"
            ),
            v => panic!("{v:?}"),
        }
        match (Policy { strict: true }).on_failure("pod a/b", &"cgroup gone") {
            Verdict::Refuse(m) => assert_eq!(m, "nri-bandwidth: pod a/b: cgroup gone"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn parses_keys_comments_and_quotes() {
        let mut c = Config::default();
        c.merge_text(
            "# settings\nstrict = true  # fail pods\nmetrics_address = \"127.0.0.1:9105\"\n\n",
        )
        .unwrap();
        assert_eq!(
            c,
            Config {
                strict: true,
                metrics_address: Some("127.0.0.1:9105".into())
            }
        );
        c.merge_text("").unwrap();
        assert!(c.strict, "an empty payload changes nothing");
    }

    #[test]
    fn errors_name_the_line_and_leave_the_config_unchanged() {
        let mut c = Config::default();
        let e = c.merge_text("strict = true\nstirct = true").unwrap_err();
        assert!(e.contains("line 2") && e.contains("stirct"), "{e}");
        assert_eq!(
            c,
            Config::default(),
            "a bad payload must not be half applied"
        );
        let e = c.merge_text("strict = yes").unwrap_err();
        assert!(e.contains("true or false"), "{e}");
        assert!(
            c.merge_text("just words")
                .unwrap_err()
                .contains("key = value")
        );
    }
}
