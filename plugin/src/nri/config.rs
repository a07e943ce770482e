//! Daemon settings: a small `key = value` file (the format of the NRI
//! `/etc/nri/conf.d/NN-name.conf` snippets the runtime hands us in Configure), the
//! same keys on the command line, the Configure payload layered on top.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `strict` | `false` | fail pod / container creation on a malformed annotation or a limit that cannot be set, instead of running the workload unlimited |
//! | `metrics_address` | unset | `host:port` for the Prometheus text endpoint (`/metrics`); unset = off |

use crate::nri::handler::Policy;

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
