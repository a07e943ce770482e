//! bwctl: set, change, remove and watch bandwidth limits on cgroups by hand, and show
//! the limiter working in a demo. Works with or without the daemon: it reads and
//! writes the pinned state directly.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error (clap's own, and values
//! such as a malformed rate).

mod demo;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::{DEFAULT_PIN_ROOT, Datapath, DatapathError, abi};
use nri_bandwidth_core::model::{Limit, Owner, Source};
use nri_bandwidth_core::rate::{ByteSize, Rate};

#[derive(Parser)]
#[command(
    name = "bwctl",
    version,
    about = "Bandwidth limits for cgroups, enforced by eBPF"
)]
struct Cli {
    /// bpffs directory holding nri-bandwidth's pinned programs, maps and links.
    #[arg(long, global = true, default_value = DEFAULT_PIN_ROOT, env = "NRI_BANDWIDTH_PIN_ROOT")]
    pin_root: PathBuf,
    /// cgroup v2 mount (detected from /proc/self/mountinfo when not given).
    #[arg(long, global = true, env = "NRI_BANDWIDTH_CGROUP_ROOT")]
    cgroup_root: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum SendersOp {
    Attach {
        #[arg(long)]
        cgroup: String,
    },
    Detach {
        #[arg(long)]
        cgroup: String,
    },
    /// The destinations this node's senders are paced toward: limited pods here
    /// (by cgroup id) and on other nodes (the share this node was given).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Limit a cgroup (or change its limit in place).
    Limit {
        /// cgroup v2 directory: absolute, relative to the mount, or a systemd
        /// `slice:prefix:name`.
        #[arg(long)]
        cgroup: String,
        /// Receive rate, a Kubernetes quantity in bits per second (10M, 1.5G, 500k).
        #[arg(long, value_parser = parse_rate)]
        ingress: Option<Rate>,
        /// Send rate, a Kubernetes quantity in bits per second.
        #[arg(long, value_parser = parse_rate)]
        egress: Option<Rate>,
        /// Bucket size in bytes (64Ki, 1Mi); default 20 ms of the rate, at least 68 KiB ingress and 4 KiB egress.
        #[arg(long, value_parser = parse_size)]
        burst: Option<ByteSize>,
        /// The workload's address (repeatable): senders on this node toward it are
        /// paced at its ingress limit where `bwctl senders attach` reaches them.
        #[arg(long = "ip", value_name = "ADDRESS")]
        ips: Vec<std::net::IpAddr>,
        /// Ablation switches for experiments: police ingress without withholding ACKs.
        #[arg(long, hide = true)]
        no_ack_gate: bool,
        #[arg(long, hide = true)]
        no_pacing: bool,
        #[arg(long, hide = true)]
        no_clamp: bool,
    },
    /// Pace this node's senders toward limited workloads: attach (or detach) the
    /// senders' program on the cgroup holding them (the cgroup v2 root on a node).
    Senders {
        #[command(subcommand)]
        op: SendersOp,
    },
    /// Remove the limit of a cgroup.
    Unlimit {
        #[arg(long, required_unless_present_any = ["id", "all"])]
        cgroup: Option<String>,
        /// Remove by cgroup id (for cgroups that no longer exist).
        #[arg(long, conflicts_with = "cgroup")]
        id: Option<u64>,
        /// Remove every limit on this host.
        #[arg(long, conflicts_with_all = ["cgroup", "id"])]
        all: bool,
        /// With --all: also unload the programs and maps (uninstall).
        #[arg(long, requires = "all")]
        purge: bool,
    },
    /// List limited cgroups with their limits and counters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Live rates per limited cgroup.
    Stats {
        #[arg(long)]
        json: bool,
        /// Keep printing every interval until interrupted.
        #[arg(long)]
        watch: bool,
        /// Sampling interval in seconds (0.1 to 3600).
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
    },
    /// Remove limits whose cgroup is gone.
    Reconcile,
    /// Show the limiter on real TCP traffic in a namespace it creates, then clean up.
    Demo {
        /// Limit used in both directions.
        #[arg(long, default_value = "100M", value_parser = parse_rate)]
        rate: Rate,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    Rate::parse(s).map_err(|e| e.to_string())
}

fn parse_size(s: &str) -> Result<ByteSize, String> {
    ByteSize::parse(s).map_err(|e| e.to_string())
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{}: expected a number of seconds from 0.1 to 3600",
            nri_bandwidth_core::text::quoted(s)
        )),
    }
}

fn cgroup_fs(cli: &Cli) -> Result<CgroupFs> {
    match &cli.cgroup_root {
        Some(r) => Ok(CgroupFs::new(r)),
        None => CgroupFs::detect().context("finding the cgroup v2 mount"),
    }
}

fn main() -> ExitCode {
    // A closed pipe (`bwctl list | head`) ends the process quietly, as for any
    // command-line tool, instead of a panic in println!.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bwctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Limit {
            cgroup,
            ingress,
            egress,
            burst,
            ips,
            no_ack_gate,
            no_pacing,
            no_clamp,
        } => {
            let cgfs = cgroup_fs(cli)?;
            let cg = cgfs.lookup(cgroup)?;
            cgfs.check_landing(&cg)?;
            if ingress.is_none() && egress.is_none() {
                eprintln!("bwctl: limit needs --ingress, --egress or both");
                std::process::exit(2);
            }
            let mut flags = 0;
            if *no_ack_gate {
                flags |= abi::F_NO_ACK_GATE;
            }
            if *no_pacing {
                flags |= abi::F_NO_PACING;
            }
            if *no_clamp {
                flags |= abi::F_NO_CLAMP;
            }
            let limit = Limit {
                ingress: *ingress,
                egress: *egress,
                burst: *burst,
                flags,
            };
            let dp = Datapath::open(&cli.pin_root)?;
            let owner = Owner {
                source: Source::Manual,
                ..Owner::default()
            };
            dp.limit(&cg, &limit, &owner)?;
            dp.set_destinations(cg.id, ips, ingress.map(|r| r.bytes_per_sec()))?;
            println!(
                "limited {} (cgroup id {}): ingress {}, egress {}",
                cg.rel,
                cg.id,
                ingress.map_or("unlimited".into(), |r| r.to_string()),
                egress.map_or("unlimited".into(), |r| r.to_string())
            );
            Ok(())
        }
        Cmd::Senders { op } => {
            let cgfs = cgroup_fs(cli)?;
            match op {
                SendersOp::List { json } => {
                    let rows = match Datapath::open_existing(&cli.pin_root)? {
                        Some(dp) => output::destinations(&dp)?,
                        None => Vec::new(),
                    };
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    } else {
                        print!("{}", output::destinations_table(&rows));
                    }
                }
                SendersOp::Attach { cgroup } => {
                    let cg = cgfs.lookup(cgroup)?;
                    Datapath::open(&cli.pin_root)?.attach_senders(&cg)?;
                    println!("senders in {} are paced toward limited workloads", cg.rel);
                }
                SendersOp::Detach { cgroup } => {
                    let cg = cgfs.lookup(cgroup)?;
                    let detached = match Datapath::open_existing(&cli.pin_root)? {
                        Some(dp) => dp.detach_senders(cg.id)?,
                        None => false,
                    };
                    println!(
                        "{}",
                        if detached {
                            "detached"
                        } else {
                            "was not attached"
                        }
                    );
                }
            }
            Ok(())
        }
        Cmd::Unlimit {
            cgroup,
            id,
            all,
            purge,
        } => {
            if *purge && !*all {
                // clap counts the flag's default as present, so `requires` lets this by.
                eprintln!(
                    "bwctl: --purge goes with --all (it unloads the datapath once nothing is limited)"
                );
                std::process::exit(2);
            }
            let Some(dp) = Datapath::open_existing(&cli.pin_root)? else {
                if *all {
                    return Ok(());
                }
                return Err(DatapathError::NotLoaded.into());
            };
            let ids: Vec<(u64, String)> = if *all {
                dp.list()?
                    .into_iter()
                    .map(|e| (e.cgroup_id, e.path))
                    .collect()
            } else if let Some(id) = id {
                vec![(*id, format!("cgroup id {id}"))]
            } else {
                let cgfs = cgroup_fs(cli)?;
                let cg = cgfs.lookup(cgroup.as_deref().unwrap_or_default())?;
                vec![(cg.id, cg.rel)]
            };
            // One grace period for all: open sockets get their pacing and
            // window back before the programs go.
            let cgids: Vec<u64> = ids.iter().map(|(id, _)| *id).collect();
            let done = dp.unlimit_many(&cgids, Duration::from_millis(200))?;
            for ((_, name), was) in ids.into_iter().zip(done) {
                if !was {
                    return Err(DatapathError::NotLimited(name).into());
                }
                println!("unlimited {name}");
            }
            if *purge {
                dp.purge()?;
                println!("removed the datapath from {}", cli.pin_root.display());
            }
            Ok(())
        }
        Cmd::List { json } => {
            let entries = match Datapath::open_existing(&cli.pin_root)? {
                Some(dp) => dp.list()?,
                None => Vec::new(),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print!("{}", output::list_table(&entries));
            }
            Ok(())
        }
        Cmd::Stats {
            json,
            watch,
            interval,
        } => {
            let Some(dp) = Datapath::open_existing(&cli.pin_root)? else {
                if *json {
                    println!("[]");
                } else {
                    println!("nothing is limited on this host");
                }
                return Ok(());
            };
            let dt = Duration::from_secs_f64(*interval);
            let mut before = dp.list()?;
            loop {
                std::thread::sleep(dt);
                let after = dp.list()?;
                let rows = output::rates(&before, &after, dt);
                if *json {
                    println!("{}", serde_json::to_string(&rows)?);
                } else {
                    print!("{}", output::stats_table(&rows));
                }
                if !*watch {
                    return Ok(());
                }
                before = after;
            }
        }
        Cmd::Reconcile => {
            let Some(dp) = Datapath::open_existing(&cli.pin_root)? else {
                return Ok(());
            };
            for id in dp.reconcile()? {
                println!("removed stale limit of cgroup id {id}");
            }
            Ok(())
        }
        Cmd::Demo { rate, seconds } => demo::run(&cli.pin_root, &cgroup_fs(cli)?, *rate, *seconds),
    }
}
