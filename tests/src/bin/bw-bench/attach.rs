//! How long attaching, updating and detaching a limit takes, over fresh cgroups
//! one at a time, through the library.

use std::time::Duration;

use anyhow::Result;

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_core::model::{Limit, Owner};
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_testkit::quantile;

use crate::results::{AttachStats, Report, Results};

/// Times `n` cgroups and adds their table to the report.
pub fn attach_section(
    dp: &Datapath,
    cgfs: &CgroupFs,
    n: u32,
    results: &mut Results,
    report: &mut Report,
) -> Result<()> {
    let st = attach_timing(dp, cgfs, n)?;
    report.line("");
    report.line(format!("## Attach and detach ({n} cgroups, one at a time)"));
    report.line("");
    report.line("| attach p50 / p99 ms | update in place p50 ms | detach p50 / p99 ms |");
    report.line("|---|---|---|");
    report.line(format!(
        "| {:.3} / {:.3} | {:.3} | {:.3} / {:.3} |",
        st.attach_p50_ms, st.attach_p99_ms, st.update_p50_ms, st.detach_p50_ms, st.detach_p99_ms
    ));
    results.attach = Some(st);
    Ok(())
}

/// Attach, update and detach times over `n` fresh cgroups, one at a time.
fn attach_timing(dp: &Datapath, cgfs: &CgroupFs, n: u32) -> Result<AttachStats> {
    let base = format!("/nri-bandwidth-test/attach-{}", std::process::id());
    let limit = Limit {
        ingress: Some(Rate::parse("10M").unwrap()),
        egress: Some(Rate::parse("10M").unwrap()),
        ..Limit::default()
    };
    let update = Limit {
        ingress: Some(Rate::parse("20M").unwrap()),
        ..limit.clone()
    };
    let owner = Owner {
        pod_name: "bw-bench-attach".into(),
        ..Owner::default()
    };
    let (mut att, mut upd, mut det) = (Vec::new(), Vec::new(), Vec::new());
    let mut made = Vec::new();
    let mut outcome = Ok(());
    for i in 0..n {
        let rel = format!("{base}/cg{i}");
        let dir = match cgfs.create(&rel) {
            Ok(d) => d,
            Err(e) => {
                outcome = Err(anyhow::anyhow!("creating {rel}: {e}"));
                break;
            }
        };
        made.push(dir.clone());
        let t = std::time::Instant::now();
        let cg = match cgfs.cgroup(dir.clone()) {
            Ok(cg) => cg,
            Err(e) => {
                outcome = Err(anyhow::anyhow!("reading {rel}: {e}"));
                break;
            }
        };
        let cgid = match dp.limit(&cg, &limit, &owner) {
            Ok(()) => cg.id,
            Err(e) => {
                outcome = Err(anyhow::anyhow!("limiting {rel}: {e}"));
                break;
            }
        };
        att.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        let _ = dp.limit(&cg, &update, &owner);
        upd.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        let _ = dp.unlimit(cgid, Duration::ZERO);
        det.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for d in made.iter().rev() {
        let _ = cgfs.remove(d);
    }
    if let Ok(base) = cgfs.resolve(&base) {
        nri_bandwidth_testkit::testbed::remove_test_cgroup(&base);
    }
    outcome?;
    Ok(AttachStats {
        cgroups: n,
        attach_p50_ms: quantile(&att, 0.5),
        attach_p99_ms: quantile(&att, 0.99),
        update_p50_ms: quantile(&upd, 0.5),
        detach_p50_ms: quantile(&det, 0.5),
        detach_p99_ms: quantile(&det, 0.99),
    })
}
