//! Prometheus text exposition: per pod / container limits and counters read from the
//! pinned state, a latency histogram of the NRI handlers, and the share exchange's
//! datagram counters when it runs. Opt-in (the daemon serves it only when
//! `metrics_address` is set).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nri_bandwidth_core::model::Entry;
use nri_bandwidth_core::shares::agent::Stats as ExchangeStats;
use nri_bandwidth_core::stats::quantile;

/// Histogram bucket bounds in seconds: the runtime's budget is 2 s per call; the
/// goal is a p99 in single milliseconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
    /// Exact samples for quantiles (bounded: the oldest are dropped).
    recent: Vec<f64>,
}

#[derive(Default)]
pub struct Metrics {
    handlers: Mutex<BTreeMap<&'static str, Histogram>>,
    /// The share exchange's counters, once it started.
    pub exchange: OnceLock<Arc<ExchangeStats>>,
}

const RECENT: usize = 10_000;

impl Metrics {
    pub fn observe(&self, method: &'static str, d: Duration) {
        let s = d.as_secs_f64();
        let mut h = self.handlers.lock().unwrap();
        let h = h.entry(method).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
        if h.recent.len() == RECENT {
            h.recent.remove(0);
        }
        h.recent.push(s);
    }

    /// The q-quantile (seconds) of the recent latencies of `method`, or of all
    /// methods with `None`.
    pub fn quantile(&self, method: Option<&str>, q: f64) -> Option<f64> {
        let h = self.handlers.lock().unwrap();
        let v: Vec<f64> = h
            .iter()
            .filter(|(m, _)| method.is_none_or(|x| x == **m))
            .flat_map(|(_, h)| h.recent.iter().copied())
            .collect();
        (!v.is_empty()).then(|| quantile(&v, q))
    }

    /// The whole exposition.
    pub fn render(&self, entries: &[Entry]) -> String {
        let mut out = String::new();
        render_entries(&mut out, entries);
        if let Some(x) = self.exchange.get() {
            render_exchange(&mut out, x);
        }
        let methods: Vec<&'static str> = self.handlers.lock().unwrap().keys().copied().collect();
        out += "# HELP nri_bandwidth_handler_latency_recent_seconds Quantiles of the last 10,000 calls.\n";
        out += "# TYPE nri_bandwidth_handler_latency_recent_seconds gauge\n";
        for m in methods {
            for q in [0.5, 0.99] {
                if let Some(v) = self.quantile(Some(m), q) {
                    let _ = writeln!(
                        out,
                        "nri_bandwidth_handler_latency_recent_seconds{{method=\"{m}\",quantile=\"{q}\"}} {v}"
                    );
                }
            }
        }
        let h = self.handlers.lock().unwrap();
        out += "# HELP nri_bandwidth_handler_duration_seconds Time spent handling NRI calls.\n";
        out += "# TYPE nri_bandwidth_handler_duration_seconds histogram\n";
        for (m, h) in h.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "nri_bandwidth_handler_duration_seconds_bucket{{method=\"{m}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "nri_bandwidth_handler_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "nri_bandwidth_handler_duration_seconds_sum{{method=\"{m}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "nri_bandwidth_handler_duration_seconds_count{{method=\"{m}\"}} {}",
                h.count
            );
        }
        out
    }
}

fn render_exchange(out: &mut String, x: &ExchangeStats) {
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    out.push_str(
        "# HELP nri_bandwidth_share_exchange_datagrams_total Share-exchange datagrams sent and received, by kind.\n\
         # TYPE nri_bandwidth_share_exchange_datagrams_total counter\n",
    );
    for (kind, way, v) in [
        ("demand", "sent", n(&x.demands_sent)),
        ("demand", "received", n(&x.demands_received)),
        ("shares", "sent", n(&x.shares_sent)),
        ("shares", "received", n(&x.shares_received)),
    ] {
        let _ = writeln!(
            out,
            "nri_bandwidth_share_exchange_datagrams_total{{kind=\"{kind}\",way=\"{way}\"}} {v}"
        );
    }
    let auth = n(&x.unauthenticated);
    out.push_str(
        "# HELP nri_bandwidth_share_exchange_refused_total Datagrams refused: a seal that does not verify or a stale stamp (unauthenticated), or a failed check or an answer for another node's pod (invalid).\n\
         # TYPE nri_bandwidth_share_exchange_refused_total counter\n",
    );
    let _ = writeln!(
        out,
        "nri_bandwidth_share_exchange_refused_total{{reason=\"unauthenticated\"}} {auth}"
    );
    let _ = writeln!(
        out,
        "nri_bandwidth_share_exchange_refused_total{{reason=\"invalid\"}} {}",
        n(&x.refused).saturating_sub(auth)
    );
    out.push_str(
        "# HELP nri_bandwidth_share_exchange_send_errors_total Datagrams the socket could not send.\n\
         # TYPE nri_bandwidth_share_exchange_send_errors_total counter\n",
    );
    let _ = writeln!(
        out,
        "nri_bandwidth_share_exchange_send_errors_total {}",
        n(&x.send_errors)
    );
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_entries(out: &mut String, entries: &[Entry]) {
    type Field = fn(&Entry, bool) -> Option<u64>;
    let series: [(&str, &str, &str, Field); 7] = [
        (
            "nri_bandwidth_limit_bits_per_second",
            "gauge",
            "Configured limit.",
            |e, i| if i { e.ingress_bps } else { e.egress_bps },
        ),
        (
            "nri_bandwidth_bytes_total",
            "counter",
            "Bytes passed (IP bytes per segment).",
            |e, i| Some(if i { e.ingress.bytes } else { e.egress.bytes }),
        ),
        (
            "nri_bandwidth_packets_total",
            "counter",
            "Packets passed.",
            |e, i| {
                Some(if i {
                    e.ingress.packets
                } else {
                    e.egress.packets
                })
            },
        ),
        (
            "nri_bandwidth_dropped_packets_total",
            "counter",
            "Packets dropped.",
            |e, i| {
                Some(if i {
                    e.ingress.dropped_packets
                } else {
                    e.egress.dropped_packets
                })
            },
        ),
        (
            "nri_bandwidth_dropped_bytes_total",
            "counter",
            "Bytes dropped.",
            |e, i| {
                Some(if i {
                    e.ingress.dropped_bytes
                } else {
                    e.egress.dropped_bytes
                })
            },
        ),
        (
            "nri_bandwidth_marked_packets_total",
            "counter",
            "Packets CE-marked or congestion-notified.",
            |e, i| {
                Some(if i {
                    e.ingress.marked_packets
                } else {
                    e.egress.marked_packets
                })
            },
        ),
        (
            "nri_bandwidth_acks_withheld_total",
            "counter",
            "Pure ACKs withheld to slow a remote sender (ingress).",
            |e, i| i.then_some(e.acks_gated),
        ),
    ];
    for (name, kind, help, f) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for e in entries {
            for (dir, ingress) in [("ingress", true), ("egress", false)] {
                if let Some(v) = f(e, ingress) {
                    let o = &e.owner;
                    let _ = writeln!(
                        out,
                        "{name}{{direction=\"{dir}\",namespace=\"{}\",pod=\"{}\",container=\"{}\",cgroup=\"{}\"}} {v}",
                        esc(&o.pod_namespace),
                        esc(&o.pod_name),
                        esc(&o.container),
                        esc(&e.path)
                    );
                }
            }
        }
    }
}

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `addr` until the process ends. A hand-written HTTP/1.1
/// answer to one GET: the endpoint needs nothing more, and an HTTP server crate
/// would bring dozens of dependencies into a privileged daemon. A failed accept
/// (EMFILE under fd exhaustion) pauses instead of ending the endpoint; idle or slow
/// clients are cut after a timeout and their number is capped.
pub async fn serve(
    addr: String,
    metrics: std::sync::Arc<Metrics>,
    entries: std::sync::Arc<dyn Fn() -> Vec<Entry> + Send + Sync>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    log::info!("metrics on http://{addr}/metrics");
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut failing = false;
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let sock = match listener.accept().await {
            Ok((sock, _)) => {
                failing = false;
                sock
            }
            Err(e) => {
                if !failing {
                    log::error!("metrics endpoint {addr}: accepting: {e}; retrying");
                }
                failing = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, entries) = (metrics.clone(), entries.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(IO_TIMEOUT, answer(sock, metrics, entries)).await;
        });
    }
}

async fn answer(
    mut sock: tokio::net::TcpStream,
    metrics: std::sync::Arc<Metrics>,
    entries: std::sync::Arc<dyn Fn() -> Vec<Entry> + Send + Sync>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 1024];
    let n = sock.read(&mut buf).await.unwrap_or(0);
    let req = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = if req.starts_with("GET /metrics") {
        let e = tokio::task::spawn_blocking(move || entries())
            .await
            .unwrap_or_default();
        ("200 OK", metrics.render(&e))
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use nri_bandwidth_core::model::{DirCounters, Owner, Source};

    #[test]
    fn exposition_has_labels_counters_and_histogram() {
        let m = Metrics::default();
        m.observe("RunPodSandbox", Duration::from_micros(700));
        m.observe("RunPodSandbox", Duration::from_millis(3));
        let e = Entry {
            cgroup_id: 7,
            path: "/kubepods/pod\"x".into(),
            owner: Owner {
                source: Source::Annotation,
                pod_namespace: "ns".into(),
                pod_name: "web".into(),
                ..Owner::default()
            },
            ingress_bps: Some(10_000_000),
            egress_bps: None,
            burst_bytes: None,
            created_unix: 0,
            ingress: DirCounters {
                bytes: 1234,
                packets: 5,
                ..DirCounters::default()
            },
            egress: DirCounters::default(),
            acks_gated: 9,
            pacing_sets: 0,
            clamp_sets: 0,
            attached: true,
        };
        let t = m.render(&[e]);
        assert!(t.contains("nri_bandwidth_limit_bits_per_second{direction=\"ingress\",namespace=\"ns\",pod=\"web\",container=\"\",cgroup=\"/kubepods/pod\\\"x\"} 10000000"), "{t}");
        assert!(
            !t.contains("nri_bandwidth_limit_bits_per_second{direction=\"egress\""),
            "no egress limit"
        );
        assert!(t.contains(
            "nri_bandwidth_bytes_total{direction=\"ingress\",namespace=\"ns\",pod=\"web\""
        ));
        assert!(
            t.contains("nri_bandwidth_acks_withheld_total{direction=\"ingress\"")
                && t.contains("} 9")
        );
        assert!(t.contains(
            "nri_bandwidth_handler_duration_seconds_bucket{method=\"RunPodSandbox\",le=\"0.001\"} 1"
        ));
        assert!(t.contains(
            "nri_bandwidth_handler_duration_seconds_bucket{method=\"RunPodSandbox\",le=\"0.005\"} 2"
        ));
        assert!(
            t.contains("nri_bandwidth_handler_duration_seconds_count{method=\"RunPodSandbox\"} 2")
        );
        assert_eq!(m.quantile(Some("RunPodSandbox"), 1.0), Some(0.003));
        assert!(t.contains("nri_bandwidth_handler_latency_recent_seconds{method=\"RunPodSandbox\",quantile=\"0.99\"} 0.003"), "{t}");
        assert_eq!(m.quantile(Some("Other"), 0.5), None);
        assert!(!t.contains("share_exchange"), "no exchange, no series");
    }

    #[test]
    fn the_share_exchange_counters_appear_once_it_runs() {
        let m = Metrics::default();
        let x = Arc::new(ExchangeStats::default());
        x.demands_sent.store(12, Ordering::Relaxed);
        x.shares_received.store(11, Ordering::Relaxed);
        x.refused.store(5, Ordering::Relaxed);
        x.unauthenticated.store(3, Ordering::Relaxed);
        m.exchange.set(x).unwrap();
        let t = m.render(&[]);
        for line in [
            "nri_bandwidth_share_exchange_datagrams_total{kind=\"demand\",way=\"sent\"} 12",
            "nri_bandwidth_share_exchange_datagrams_total{kind=\"shares\",way=\"received\"} 11",
            "nri_bandwidth_share_exchange_refused_total{reason=\"unauthenticated\"} 3",
            "nri_bandwidth_share_exchange_refused_total{reason=\"invalid\"} 2",
            "nri_bandwidth_share_exchange_send_errors_total 0",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} in:\n{t}");
        }
    }

    /// Idle clients beyond the cap hold nothing for long: a scrape still gets its
    /// answer once their timeout cuts them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_clients_cannot_hold_the_endpoint() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = "127.0.0.1:19299";
        let entries: std::sync::Arc<dyn Fn() -> Vec<Entry> + Send + Sync> =
            std::sync::Arc::new(Vec::new);
        tokio::spawn(serve(addr.into(), Default::default(), entries));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 8 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let t = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(IO_TIMEOUT * 3, s.read_to_string(&mut out))
            .await
            .expect("answered")
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(t.elapsed() < IO_TIMEOUT * 2, "{:?}", t.elapsed());
        // And an idle client is cut, not kept forever.
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(IO_TIMEOUT * 2, idle[0].read(&mut buf))
            .await
            .expect("an idle client is cut after the timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
