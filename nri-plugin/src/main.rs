//! nri-bandwidth: the NRI plugin daemon. Learns pods and containers from the
//! container runtime (containerd, CRI-O) and limits their bandwidth as their
//! annotations ask.
//!
//! Two modes:
//! - external (a DaemonSet or systemd service): connects to `--socket`, and
//!   reconnects with backoff whenever the runtime restarts;
//! - launched by the runtime from /opt/nri/plugins: the connected socket is fd
//!   `NRI_PLUGIN_SOCKET`, name and index come from `NRI_PLUGIN_NAME` /
//!   `NRI_PLUGIN_IDX`, stdout is discarded (so logs go to `--log-file`), and the
//!   process exits when the connection ends (the runtime relaunches it).
//!
//! Limits live in the kernel: killing this process leaves them enforced; on every
//! (re)connect the runtime's Synchronize makes the pinned state match the node.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::{DEFAULT_PIN_ROOT, Datapath};
use nri_bandwidth_core::policy::Config;
use nri_bandwidth_core::store::{NodeStore, Store};
use nri_plugin::metrics::{self, Metrics};
use nri_plugin::nri::connection::{self, Identity, Transport};
use nri_plugin::nri::proto::nri_ttrpc::Plugin;
use nri_plugin::nri::service::PluginService;
use nri_plugin::plugin::BandwidthPlugin;

/// The longest a handler waits for the pin-root lock (the runtime allows 2 s).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "nri-bandwidth",
    version,
    about = "NRI plugin: bandwidth limits from pod annotations"
)]
struct Args {
    /// The runtime's NRI socket (external mode).
    #[arg(long, default_value = "/var/run/nri/nri.sock")]
    socket: PathBuf,
    /// Plugin name (NRI_PLUGIN_NAME when launched by the runtime).
    #[arg(long, default_value = "bandwidth")]
    name: String,
    /// Plugin index, two digits (NRI_PLUGIN_IDX when launched).
    #[arg(long, default_value = "50")]
    idx: String,
    /// Settings file (`key = value`; see the README).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Fail pods whose bandwidth annotations are malformed (default: run them unlimited).
    #[arg(long)]
    strict: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9105).
    #[arg(long)]
    metrics_address: Option<String>,
    #[arg(long, default_value = DEFAULT_PIN_ROOT, env = "NRI_BANDWIDTH_PIN_ROOT")]
    pin_root: PathBuf,
    #[arg(long, env = "NRI_BANDWIDTH_CGROUP_ROOT")]
    cgroup_root: Option<PathBuf>,
    /// Pace senders on this node toward limited pods at the pods' ingress limits:
    /// attach the senders' program to this cgroup (the cgroup v2 root, `/`, reaches
    /// every local sender). Off by default.
    #[arg(long, env = "NRI_BANDWIDTH_SENDER_SCOPE")]
    sender_scope: Option<String>,
    /// Append logs to this file (launched plugins have no stdout).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Stop after the first connection ends instead of reconnecting.
    #[arg(long)]
    once: bool,
    /// Follow annotation changes of running pods and publish Events through the
    /// Kubernetes API: `auto` when a kubeconfig or the in-cluster account is there,
    /// `off` never.
    #[arg(long, value_enum, default_value_t = Switch::Auto, env = "NRI_BANDWIDTH_WATCH")]
    watch: Switch,
    /// Kubeconfig for the API (default: the in-cluster service account).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// This node's name as the API knows it (the DaemonSet passes it from the
    /// downward API); the watch follows only this node's pods.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Pace this node's senders toward limited pods on other nodes as well, at
    /// this node's share of each pod's ingress, and answer other nodes' demand
    /// for this node's pods: `auto` when --sender-scope is set and the API
    /// watch is on, `off` never.
    #[arg(long, value_enum, default_value_t = Switch::Auto, env = "NRI_BANDWIDTH_CROSS_NODE")]
    cross_node: Switch,
    /// UDP port of the share exchange between nodes, the same on every node; the
    /// daemon must be reachable on it at its node's address (host network).
    #[arg(long, default_value_t = 9106, env = "NRI_BANDWIDTH_SHARE_PORT")]
    share_port: u16,
    /// File holding the key every node's daemon shares (at least 16 bytes; the
    /// Helm chart mounts it from a Secret): the exchange seals its datagrams with
    /// it and refuses any that do not verify. Without it the exchange does not
    /// start.
    #[arg(long, env = "NRI_BANDWIDTH_SHARE_KEY_FILE")]
    share_key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    Auto,
    Off,
}

/// ttrpc logs every broken pipe at ERROR on its own; the connection loop reports
/// each failure once, in its words, so ttrpc's lines are off unless RUST_LOG asks.
fn init_logging(file: Option<&PathBuf>) -> Result<()> {
    let mut b = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,ttrpc=off"),
    );
    if let Some(p) = file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("opening log file {}", p.display()))?;
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    b.init();
    Ok(())
}

fn main() -> Result<()> {
    let launched_fd = std::env::var("NRI_PLUGIN_SOCKET").ok();
    let mut args = Args::parse();
    if launched_fd.is_some() {
        // The runtime replaced the whole environment and discards stdout.
        args.name = std::env::var("NRI_PLUGIN_NAME").unwrap_or(args.name);
        args.idx = std::env::var("NRI_PLUGIN_IDX").unwrap_or(args.idx);
        if args.log_file.is_none() {
            args.log_file = Some(PathBuf::from("/var/log/nri-bandwidth.log"));
        }
    }
    init_logging(args.log_file.as_ref())?;
    let id = Identity {
        name: args.name.clone(),
        idx: args.idx.clone(),
    };
    id.validate().map_err(anyhow::Error::msg)?;

    let mut cfg = match &args.config {
        Some(p) => Config::from_file(p).map_err(anyhow::Error::msg)?,
        None => Config::default(),
    };
    cfg.strict |= args.strict;
    if args.metrics_address.is_some() {
        cfg.metrics_address = args.metrics_address.clone();
    }

    let cgfs = match &args.cgroup_root {
        Some(r) => CgroupFs::new(r),
        None => CgroupFs::detect().context("finding the cgroup v2 mount")?,
    };
    // Handlers must answer within the runtime's 2 s: never wait on the lock past 1 s.
    let dp = Datapath::open(&args.pin_root)
        .context("loading the datapath")?
        .with_lock_wait(LOCK_WAIT);
    match &args.sender_scope {
        Some(scope) => {
            let cg = cgfs
                .lookup(scope)
                .with_context(|| format!("--sender-scope {scope}"))?;
            dp.attach_senders(&cg)
                .with_context(|| format!("pacing the senders in {}", cg.rel))?;
            log::info!("senders in {} are paced toward limited pods", cg.rel);
        }
        None => log::info!(
            "senders toward limited pods are not paced (no --sender-scope); the receivers' ACK gate holds their ingress"
        ),
    }
    let plugin = Arc::new(BandwidthPlugin::new(NodeStore::new(dp, cgfs), cfg.policy()));
    // Limits still pinned from before a restart are not announced again as new.
    plugin.seed_from_store();
    let metrics = Arc::new(Metrics::default());
    let transport = match launched_fd {
        Some(fd) => Transport::InheritedFd(fd.parse().with_context(|| {
            format!("NRI_PLUGIN_SOCKET={fd:?}: expected a file descriptor number")
        })?),
        None => Transport::Socket(args.socket.clone()),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if let Some(addr) = cfg.metrics_address.clone() {
            let p = plugin.clone();
            let entries = Arc::new(move || p.store().entries().unwrap_or_default());
            let m = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr.clone(), m, entries).await {
                    log::error!("metrics endpoint {addr}: {e}");
                }
            });
        }
        // Kept for the life of the process: dropping it stops the exchange.
        let mut _exchange = None;
        if args.watch == Switch::Off {
            log::info!("pod watch off (--watch=off): limits follow NRI events only");
        } else {
            match nri_plugin::k8s::connect(args.kubeconfig.as_deref(), args.node_name.as_deref())
                .await
            {
                Ok((client, node)) => {
                    plugin.set_notices(nri_plugin::k8s::events::start(client.clone(), &node));
                    tokio::spawn(nri_plugin::k8s::watch::run(
                        client.clone(),
                        node.clone(),
                        plugin.clone(),
                    ));
                    _exchange = cross_node(&args, client, &node);
                    if let Some(a) = &_exchange {
                        let _ = metrics.exchange.set(a.stats.clone());
                    }
                }
                Err(why) => log::info!("pod watch off: {why}; limits follow NRI events only"),
            }
        }
        let service = || -> Arc<dyn Plugin + Send + Sync> {
            Arc::new(PluginService::new(
                plugin.clone(),
                metrics.clone(),
                cfg.clone(),
            ))
        };
        let on_connect = || reconcile_gone(plugin.store());
        connection::run(&transport, &id, args.once, on_connect, service).await?;
        Ok(())
    })
}

/// Starts the share exchange and the cluster watch feeding it, when asked for and
/// possible; says once why not otherwise.
fn cross_node(
    args: &Args,
    client: kube::Client,
    node: &str,
) -> Option<nri_bandwidth_core::shares::agent::Agent> {
    use nri_bandwidth_core::shares::agent::{Agent, Config, Directory};
    use nri_bandwidth_core::shares::seal::Keyring;
    if args.cross_node == Switch::Off {
        log::info!("senders toward other nodes' pods are not paced (--cross-node=off)");
        return None;
    }
    if args.sender_scope.is_none() {
        log::info!("senders toward other nodes' pods are not paced (no --sender-scope)");
        return None;
    }
    let key = match &args.share_key_file {
        Some(p) => Keyring::from_file(p).map_err(|e| e.to_string()),
        None => Err("no --share-key-file (a key every node's daemon shares)".to_string()),
    };
    let bind = std::net::SocketAddr::from(([0u8; 16], args.share_port));
    let dir = Arc::new(std::sync::Mutex::new(Directory::default()));
    let started = key.and_then(|key| {
        let dp = Datapath::open(&args.pin_root).map_err(|e| e.to_string())?;
        Agent::start(dp, Config::new(node, bind, key), dir.clone()).map_err(|e| e.to_string())
    });
    match started {
        Ok(agent) => {
            log::info!(
                "share exchange on udp port {}: senders toward other nodes' pods are paced at this node's share",
                args.share_port
            );
            tokio::spawn(nri_plugin::k8s::cluster::run(
                client,
                node.to_string(),
                args.share_port,
                dir,
            ));
            Some(agent)
        }
        Err(e) => {
            log::error!(
                "share exchange not started: {e}; the receivers' ACK gate holds ingress from this node"
            );
            None
        }
    }
}

/// Limits whose cgroup disappeared while we were away are dropped before the
/// runtime's Synchronize tells us what still runs.
fn reconcile_gone(store: &NodeStore) {
    match store.reconcile() {
        Ok(ids) if !ids.is_empty() => {
            log::info!("removed {} limit(s) of cgroups that are gone", ids.len())
        }
        Ok(_) => {}
        Err(e) => log::error!("reconciling pinned limits: {e}"),
    }
}
