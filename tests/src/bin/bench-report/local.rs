//! Same-node senders: the workload's ingress limit with the sending socket on
//! this node, paced toward the workload (`bw-bench --local-senders`), beside the
//! same cell with the sender elsewhere (the receiver's gate alone, from the matrix).

use serde_json::Value;

use crate::goals::misses;
use crate::values::{Out, delay_name, f, find_cell, fmt2, retr, run_ratio};

pub fn local_senders(o: &mut Out, local: &Value, cells: &[Value]) {
    let lc = local["cells"].as_array().cloned().unwrap_or_default();
    if lc.is_empty() {
        return;
    }
    o.l("");
    o.l("## Same-node senders (pod to pod on one node)");
    o.l("");
    o.l("The sender runs on this node in a cgroup of its own where the senders' program is attached \
         (`bwctl senders attach`): for the workload's ingress limit its socket is paced toward the workload's \
         address at its share, and the receiver's ACK gate stays as the backstop. \"Remote\" is the same cell \
         of the matrix above, where the sender is outside the node's view and only the gate holds it. \
         One run per cell.");
    let mut delays: Vec<f64> = lc.iter().map(|c| f(&c["delay_ms"])).collect();
    delays.dedup();
    let mut pass = 0;
    let mut valid = 0;
    for d in delays {
        o.l("");
        o.l(format!("### {} one way", delay_name(d)));
        o.l("");
        o.table("| rate | streams | cc | same-node goodput/limit | retr | first s | remote goodput/limit | remote retr | tbf goodput/limit | goals |");
        for c in lc.iter().filter(|c| f(&c["delay_ms"]) == d) {
            let remote = find_cell(
                cells,
                d,
                "ingress",
                c["rate_bps"].as_u64().unwrap_or(0),
                c["streams"].as_u64().unwrap_or(0),
                c["cc"].as_str().unwrap_or(""),
            );
            let goals = match misses(local, c) {
                None => "beyond the testbed".to_string(),
                Some(w) if w.is_empty() => {
                    valid += 1;
                    pass += 1;
                    "✓".into()
                }
                Some(w) => {
                    valid += 1;
                    w.join("; ")
                }
            };
            let null = Value::Null;
            let r = remote.map(|r| &r["ours"]).unwrap_or(&null);
            o.l(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c["rate"].as_str().unwrap_or("?"),
                c["streams"],
                c["cc"].as_str().unwrap_or("?"),
                run_ratio(&c["ours"]),
                retr(&c["ours"]),
                fmt2(f(&c["ours"]["first_second_ratio"])),
                if r.is_null() {
                    "—".into()
                } else {
                    run_ratio(r)
                },
                if r.is_null() { "—".into() } else { retr(r) },
                run_ratio(&c["tbf"]),
                goals
            ));
        }
    }
    o.l("");
    o.l(format!(
        "**{pass} of {valid} valid same-node cells meet every goal.**"
    ));
}
