//! A cell's verdict: ours against the targets and against tbf.

use crate::results::Run;

pub struct Verdict {
    pub pass: bool,
    pub text: String,
    pub failed: Vec<&'static str>,
}

pub const MIN_RATIO: f64 = 0.94;
pub const MAX_RATIO: f64 = 1.0;
/// Ours may retransmit at most this many percentage points of packets more than tbf.
pub const RETR_SLACK_PCT: f64 = 1.0;

pub fn verdict(ours: Option<&Run>, tbf: Option<&Run>, rtt: bool) -> Verdict {
    let (Some(o), Some(t)) = (ours, tbf) else {
        return Verdict {
            pass: false,
            text: "— (needs ours and tbf)".into(),
            failed: vec![],
        };
    };
    if o.error.is_some() {
        return Verdict {
            pass: false,
            text: "✗ ours failed to run".into(),
            failed: vec!["error"],
        };
    }
    if t.error.is_some() {
        return Verdict {
            pass: false,
            text: "✗ tbf failed to run: no comparison".into(),
            failed: vec!["error"],
        };
    }
    let mut why = Vec::new();
    let mut failed = Vec::new();
    let r = o.goodput_ratio.unwrap_or(f64::NAN);
    if r.is_nan() || r < MIN_RATIO {
        why.push(format!("goodput {r:.3} < {MIN_RATIO}"));
        failed.push("goodput");
    } else if r > MAX_RATIO {
        why.push(format!("goodput {r:.3} > {MAX_RATIO:.1} (over the limit)"));
        failed.push("goodput");
    }
    if o.retr_pct > t.retr_pct + RETR_SLACK_PCT {
        why.push(format!(
            "retr {:.2}% > tbf {:.2}% + {RETR_SLACK_PCT}",
            o.retr_pct, t.retr_pct
        ));
        failed.push("retransmits");
    }
    if rtt {
        match (&o.rtt, &t.rtt) {
            (Some(a), Some(b)) if a.samples > 0 && b.samples > 0 => {
                if a.p99_ms >= b.p99_ms || a.p99_ms.is_nan() || b.p99_ms.is_nan() {
                    why.push(format!("p99 RTT {:.3} ≥ tbf {:.3} ms", a.p99_ms, b.p99_ms));
                    failed.push("rtt");
                }
            }
            _ => {
                why.push("no RTT samples".into());
                failed.push("rtt");
            }
        }
    }
    if why.is_empty() {
        Verdict {
            pass: true,
            text: "✓".into(),
            failed,
        }
    } else {
        Verdict {
            pass: false,
            text: format!("✗ {}", why.join("; ")),
            failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Rtt;

    fn ok_run(ratio: f64, retr_pct: f64, p99: f64) -> Run {
        let mut r = Run::failed("x", String::new());
        r.error = None;
        r.goodput_ratio = Some(ratio);
        r.retr_pct = retr_pct;
        r.rtt = Some(Rtt {
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            samples: 100,
            sent: 100,
        });
        r
    }

    #[test]
    fn verdict_criteria() {
        let t = ok_run(0.956, 0.5, 20.0);
        assert!(verdict(Some(&ok_run(0.97, 0.2, 0.1)), Some(&t), true).pass);
        let v = verdict(Some(&ok_run(0.90, 0.2, 0.1)), Some(&t), true);
        assert_eq!(v.failed, vec!["goodput"]);
        let v = verdict(Some(&ok_run(1.02, 0.2, 0.1)), Some(&t), true);
        assert!(v.text.contains("over the limit"));
        let v = verdict(Some(&ok_run(0.97, 1.6, 0.1)), Some(&t), true);
        assert_eq!(v.failed, vec!["retransmits"]);
        let v = verdict(Some(&ok_run(0.97, 0.2, 25.0)), Some(&t), true);
        assert_eq!(v.failed, vec!["rtt"]);
        assert!(verdict(Some(&ok_run(0.97, 0.2, 25.0)), Some(&t), false).pass);
        let e = Run::failed("tbf", "boom".into());
        assert_eq!(
            verdict(Some(&ok_run(0.97, 0.2, 0.1)), Some(&e), true).failed,
            vec!["error"]
        );
        assert!(!verdict(None, Some(&t), true).pass);
    }
}
