//! A throw-away network for the demo, the traffic tests and the benchmark: one
//! network namespace joined to the root namespace by a veth pair (IPv4 and IPv6), and
//! a cgroup v2 directory standing in for a pod. Processes started "in the workload"
//! join both before they exec, so their sockets belong to the cgroup from birth.
//!
//! Everything is removed on drop, also when a test panics: processes are killed, the
//! namespace, veth, tc state and cgroup are deleted.

use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;

use nri_bandwidth_core::cgroup::{Cgroup, CgroupFs};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Testbed {
    pub ns: String,
    pub host_if: String,
    pub peer_if: String,
    pub host_v4: IpAddr,
    pub peer_v4: IpAddr,
    pub host_v6: IpAddr,
    pub peer_v6: IpAddr,
    pub cgroup: PathBuf,
    pub cgroup_rel: String,
    /// Set by [`Testbed::create_split`]: the namespace cutting the veth in two.
    pub middle: Option<Middle>,
    cgfs: CgroupFs,
    children: Vec<Child>,
}

/// A namespace between the host and the workload: `host_if` ═ `a` [ns] `b` ═
/// `peer_if`. Nothing crosses it until something bridges `a` and `b` (the
/// benchmark's delay line); its interfaces carry no addresses, so its own stack
/// stays out of the way.
#[derive(Clone, Debug)]
pub struct Middle {
    pub ns: String,
    pub a: String,
    pub b: String,
}

fn sh(args: &[&str]) -> io::Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// Runs a command; a missing binary becomes an error naming the package to install.
fn need(bin: &str, package: &str) -> io::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "`{bin}` not found: install {package} (apt-get install {package}, or `make deps`)"
            ),
        ))
    }
}

impl Testbed {
    /// The workload's cgroup as the datapath takes it.
    pub fn cg(&self) -> Cgroup {
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::metadata(&self.cgroup).map_or(0, |m| m.ino());
        Cgroup {
            dir: self.cgroup.clone(),
            rel: self.cgroup_rel.clone(),
            id,
        }
    }

    /// Creates the namespace, veth pair and cgroup. `tag` (a few letters) makes the
    /// names recognisable; a per-process sequence keeps parallel tests apart.
    pub fn create(cgfs: &CgroupFs, tag: &str) -> io::Result<Self> {
        Self::build(cgfs, tag, false)
    }

    /// Like [`Testbed::create`], with a [`Middle`] namespace cutting the veth.
    pub fn create_split(cgfs: &CgroupFs, tag: &str) -> io::Result<Self> {
        Self::build(cgfs, tag, true)
    }

    fn build(cgfs: &CgroupFs, tag: &str, split: bool) -> io::Result<Self> {
        need("ip", "iproute2")?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names are limited to 15 bytes.
        let id = format!("{}{}", pid % 100_000, n);
        let subnet = ((pid as u64 * 7 + n as u64) % 200 + 20) as u8;
        let ns = format!("nbw-{tag}-{id}");
        let host_if = format!("nbh{id}");
        let peer_if = format!("nbp{id}");
        let cgroup_rel = format!("/nri-bandwidth-test/{tag}-{id}");
        let mut tb = Testbed {
            ns: ns.clone(),
            host_if: host_if.clone(),
            peer_if: peer_if.clone(),
            host_v4: format!("10.251.{subnet}.1").parse().unwrap(),
            peer_v4: format!("10.251.{subnet}.2").parse().unwrap(),
            host_v6: format!("fd00:251:{subnet}::1").parse().unwrap(),
            peer_v6: format!("fd00:251:{subnet}::2").parse().unwrap(),
            cgroup: PathBuf::new(),
            cgroup_rel: cgroup_rel.clone(),
            middle: split.then(|| Middle {
                ns: format!("nbw-{tag}-{id}-mid"),
                a: format!("nbma{id}"),
                b: format!("nbmb{id}"),
            }),
            cgfs: cgfs.clone(),
            children: Vec::new(),
        };
        // From here on, Drop cleans up whatever part was made.
        sh(&["ip", "netns", "add", &ns])?;
        match tb.middle.clone() {
            None => {
                sh(&[
                    "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
                ])?;
            }
            Some(m) => {
                sh(&["ip", "netns", "add", &m.ns])?;
                sh(&[
                    "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &m.a,
                ])?;
                sh(&[
                    "ip", "link", "add", &m.b, "type", "veth", "peer", "name", &peer_if,
                ])?;
                sh(&["ip", "link", "set", &m.a, "netns", &m.ns])?;
                sh(&["ip", "link", "set", &m.b, "netns", &m.ns])?;
                let mx = |a: &[&str]| {
                    let mut v = vec!["ip", "netns", "exec", &m.ns];
                    v.extend_from_slice(a);
                    sh(&v)
                };
                // No addresses and no IPv6 autoconfiguration: the middle's stack
                // must neither answer nor send anything.
                mx(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
                mx(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
                for dev in [&m.a, &m.b] {
                    mx(&["ip", "link", "set", dev, "up"])?;
                }
            }
        }
        sh(&["ip", "link", "set", &peer_if, "netns", &ns])?;
        let (h4, p4, h6, p6) = (tb.host_v4, tb.peer_v4, tb.host_v6, tb.peer_v6);
        sh(&["ip", "addr", "add", &format!("{h4}/24"), "dev", &host_if])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{h6}/64"),
            "dev",
            &host_if,
            "nodad",
        ])?;
        sh(&["ip", "link", "set", &host_if, "up"])?;
        let nsx = |a: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend_from_slice(a);
            sh(&v)
        };
        nsx(&["ip", "addr", "add", &format!("{p4}/24"), "dev", &peer_if])?;
        nsx(&[
            "ip",
            "addr",
            "add",
            &format!("{p6}/64"),
            "dev",
            &peer_if,
            "nodad",
        ])?;
        nsx(&["ip", "link", "set", &peer_if, "up"])?;
        nsx(&["ip", "link", "set", "lo", "up"])?;
        tb.cgroup = cgfs
            .create(&cgroup_rel)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(tb)
    }

    /// A command that will run inside the workload: in the cgroup and the namespace.
    pub fn workload_command(&self, program: &str) -> io::Result<Command> {
        self.command_in(&self.cgroup, program)
    }

    /// A command that will run in the workload's namespace and in `cgroup` (for
    /// example a child cgroup standing in for one container of a pod).
    pub fn command_in(&self, cgroup: &std::path::Path, program: &str) -> io::Result<Command> {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.ns))?;
        let mut cmd = Command::new(program);
        enter_on_exec(&mut cmd, cgroup, Some(ns))?;
        Ok(cmd)
    }

    /// Starts a long-running process in the workload; it is killed on drop.
    pub fn spawn_in_workload(&mut self, program: &str, args: &[&str]) -> io::Result<u32> {
        let cg = self.cgroup.clone();
        self.spawn_in(&cg, program, args)
    }

    /// Starts a long-running process in the workload's namespace and `cgroup`.
    pub fn spawn_in(
        &mut self,
        cgroup: &std::path::Path,
        program: &str,
        args: &[&str],
    ) -> io::Result<u32> {
        let child = self
            .command_in(cgroup, program)?
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Starts `iperf3 -s` in the workload and waits until it listens.
    pub fn start_iperf3_server(&mut self, port: u16) -> io::Result<()> {
        let cg = self.cgroup.clone();
        self.start_iperf3_server_in(&cg, port)
    }

    /// Starts `iperf3 -s` in the workload's namespace and `cgroup`.
    pub fn start_iperf3_server_in(
        &mut self,
        cgroup: &std::path::Path,
        port: u16,
    ) -> io::Result<()> {
        need("iperf3", "iperf3")?;
        // JSON with 100 ms intervals: what a client asking --get-server-output
        // gets back as the receiver's series.
        self.spawn_in(
            cgroup,
            "iperf3",
            &["-s", "-J", "-i", "0.1", "-p", &port.to_string()],
        )?;
        for _ in 0..100 {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns,
                    "ss",
                    "-ltnH",
                    &format!("sport = :{port}"),
                ])
                .output()?;
            if !out.stdout.is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "iperf3 server on port {port} did not start"
        )))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        if let Some(m) = &self.middle {
            let _ = Command::new("ip").args(["netns", "del", &m.ns]).output();
        }
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", &self.host_if, "root"])
            .output();
        if !self.cgroup.as_os_str().is_empty() {
            if let Ok(rd) = std::fs::read_dir(&self.cgroup) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            // Processes may take a moment to leave after being killed.
            for _ in 0..50 {
                if self.cgfs.remove(&self.cgroup).is_ok() || !self.cgroup.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(parent) = self.cgroup.parent() {
                let _ = std::fs::remove_dir(parent); // only succeeds once empty
            }
        }
    }
}

/// One iperf3 client run.
#[derive(Clone, Debug)]
pub struct Iperf3 {
    pub target: IpAddr,
    pub port: u16,
    pub seconds: u32,
    pub omit: u32,
    pub streams: u32,
    /// true: the workload sends (its egress); false: it receives (its ingress).
    pub reverse: bool,
    pub congestion: Option<String>,
    /// Report interval in seconds (iperf3 -i; 0.1 is its smallest).
    pub interval: Option<f64>,
    /// Run the client in this cgroup (still in the root namespace): a sender on
    /// this node that the senders' program can see.
    pub cgroup: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Iperf3Result {
    /// Goodput seen by the receiver, bits per second.
    pub received_bps: f64,
    /// Segments the sender retransmitted.
    pub retransmits: u64,
    /// Per-interval goodput, bits per second (omitted seconds excluded).
    pub intervals_bps: Vec<f64>,
    pub congestion: String,
    /// The receiver's goodput per report interval from the start of the run,
    /// omitted seconds included: (seconds since start at the interval's end, bit/s).
    /// For a normal run the receiver is the server (iperf3 --get-server-output).
    pub receiver_series: Vec<(f64, f64)>,
}

impl Iperf3Result {
    /// The receiver's goodput in each report interval of the run's first second
    /// (bit/s; empty without a report interval).
    pub fn first_second(&self) -> Vec<f64> {
        self.receiver_series
            .iter()
            .filter(|(t, _)| *t <= 1.0 + 1e-6)
            .map(|(_, bps)| *bps)
            .collect()
    }
}

impl Iperf3 {
    pub fn new(target: IpAddr, port: u16) -> Self {
        Iperf3 {
            target,
            port,
            seconds: 5,
            omit: 1,
            streams: 1,
            reverse: false,
            congestion: None,
            interval: None,
            cgroup: None,
        }
    }

    /// Runs the client in the root namespace (in `cgroup` if set) and parses its
    /// JSON report.
    pub fn run(&self) -> io::Result<Iperf3Result> {
        need("iperf3", "iperf3")?;
        let mut cmd = Command::new("iperf3");
        if let Some(cg) = &self.cgroup {
            enter_on_exec(&mut cmd, cg, None)?;
        }
        cmd.args([
            "-c",
            &self.target.to_string(),
            "-p",
            &self.port.to_string(),
            "-J",
        ])
        .args([
            "-t",
            &self.seconds.to_string(),
            "-O",
            &self.omit.to_string(),
        ])
        .args(["-P", &self.streams.to_string()]);
        if self.reverse {
            cmd.arg("-R");
        }
        if let Some(cc) = &self.congestion {
            cmd.args(["-C", cc]);
        }
        if let Some(i) = self.interval {
            cmd.args(["-i", &i.to_string()]);
            if !self.reverse {
                cmd.arg("--get-server-output");
            }
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        let mut r = parse_iperf3(&String::from_utf8_lossy(&out.stdout))?;
        if self.interval.is_some() {
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            let intervals = if self.reverse {
                &v["intervals"]
            } else {
                &v["server_output_json"]["intervals"]
            };
            r.receiver_series = series(intervals);
        }
        Ok(r)
    }
}

/// Makes `cmd`'s process join `cgroup` (and the network namespace `ns`, if given)
/// between fork and exec.
fn enter_on_exec(
    cmd: &mut Command,
    cgroup: &std::path::Path,
    ns: Option<std::fs::File>,
) -> io::Result<()> {
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_encoded_bytes())
        .map_err(io::Error::other)?;
    // SAFETY: only async-signal-safe calls (open, write, close, setns) on data
    // prepared before fork; the File is kept alive by the closure.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if !ok {
                return Err(io::Error::last_os_error());
            }
            if let Some(ns) = &ns
                && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Extracts what we need from `iperf3 -J` output.
pub fn parse_iperf3(json: &str) -> io::Result<Iperf3Result> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| io::Error::other(format!("iperf3 printed no JSON report: {e}")))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(io::Error::other(format!("iperf3: {err}")));
    }
    let end = &v["end"];
    let received_bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| io::Error::other("iperf3 report lacks end.sum_received"))?;
    let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    let intervals_bps = v["intervals"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| !i["sum"]["omitted"].as_bool().unwrap_or(false))
                .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                .collect()
        })
        .unwrap_or_default();
    let congestion = end["sender_tcp_congestion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    Ok(Iperf3Result {
        received_bps,
        retransmits,
        intervals_bps,
        congestion,
        receiver_series: Vec::new(),
    })
}

/// (time since start at each interval's end, bit/s) from an iperf3 `intervals`
/// array. Times accumulate interval lengths, because iperf3 restarts its clock
/// after the omitted seconds.
pub fn series(intervals: &serde_json::Value) -> Vec<(f64, f64)> {
    let mut t = 0.0;
    intervals
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    let sum = &i["sum"];
                    let len = sum["seconds"].as_f64()?;
                    t += len;
                    Some((t, sum["bits_per_second"].as_f64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Round-trip times of `count` pings at `interval` from the root namespace, in ms.
pub fn ping_rtts(target: IpAddr, count: u32, interval: f64) -> io::Result<Vec<f64>> {
    need("ping", "iputils-ping")?;
    let out = Command::new("ping")
        .args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            &interval.to_string(),
            "-W",
            "1",
        ])
        .arg(target.to_string())
        .stdin(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect())
}

/// Removes a test's cgroup directory, then the shared parent the tests create
/// theirs in (`/nri-bandwidth-test`) once it is empty, so a run leaves nothing at
/// the top of the cgroup mount. Errors are ignored: another test may still hold
/// the parent, and a cgroup with processes left is reported by its owner.
pub fn remove_test_cgroup(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent); // only succeeds once empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_json_is_parsed() {
        let j = r#"{"intervals":[{"sum":{"bits_per_second":9.0e6,"omitted":true}},
                     {"sum":{"bits_per_second":9.5e6,"omitted":false}}],
                    "end":{"sum_received":{"bits_per_second":9.4e6},
                           "sum_sent":{"retransmits":3},"sender_tcp_congestion":"cubic"}}"#;
        let r = parse_iperf3(j).unwrap();
        assert_eq!(r.received_bps, 9.4e6);
        assert_eq!(r.retransmits, 3);
        assert_eq!(r.intervals_bps, vec![9.5e6]);
        assert_eq!(r.congestion, "cubic");
    }

    #[test]
    fn series_accumulates_across_the_omitted_part() {
        let j: serde_json::Value = serde_json::from_str(
            r#"[{"sum":{"seconds":0.5,"bits_per_second":2e6,"omitted":true}},
                {"sum":{"seconds":0.5,"bits_per_second":1e6,"omitted":true}},
                {"sum":{"seconds":0.5,"bits_per_second":3e6}}]"#,
        )
        .unwrap();
        assert_eq!(series(&j), vec![(0.5, 2e6), (1.0, 1e6), (1.5, 3e6)]);
        assert!(series(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn iperf3_error_is_reported() {
        let e = parse_iperf3(r#"{"error":"unable to connect"}"#).unwrap_err();
        assert!(e.to_string().contains("unable to connect"));
        assert!(parse_iperf3("garbage").is_err());
    }
}
