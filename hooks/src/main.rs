//! nri-bandwidth-hook: reads the OCI state on stdin; at a create stage limits the
//! container's cgroup as its annotations ask, at `poststop` removes what it set.
//!
//! Exit status: 0 when done or when failing open (malformed annotation, a limit
//! that cannot be set: the container runs unlimited and the reason is logged to
//! stderr and the journal); 1 when `strict` refuses the container; 2 for bad input
//! (unparsable state JSON, bad arguments or settings), before anything is touched.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::{DEFAULT_PIN_ROOT, Datapath};
use nri_bandwidth_core::model::Source;
use nri_bandwidth_core::policy::{Config, Policy, Verdict};
use nri_bandwidth_core::store::NodeStore;
use nri_bandwidth_core::store::Store;
use nri_bandwidth_hook::crio_pod;
use nri_bandwidth_hook::hook_action::{self, HookError, Plan, Stage};
use nri_bandwidth_hook::journal::{self, Priority};
use nri_bandwidth_hook::oci_state::State;

/// The longest the hook waits for the pin-root lock: runtimes give hooks a few
/// seconds, and failing open in time beats being killed.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Parser)]
#[command(
    name = "nri-bandwidth-hook",
    version,
    about = "OCI hook: bandwidth limits from container annotations (state JSON on stdin)"
)]
struct Args {
    /// The hook stage; by default inferred from the state's status
    /// (creating/created → limit, stopped → remove).
    #[arg(long)]
    stage: Option<String>,
    /// Refuse to create a container whose bandwidth annotations are malformed or
    /// whose limit cannot be set (default: run it unlimited and log why).
    #[arg(long)]
    strict: bool,
    /// Settings file (`strict = true|false`); a missing default file is fine.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_PIN_ROOT, env = "NRI_BANDWIDTH_PIN_ROOT")]
    pin_root: PathBuf,
    #[arg(long, env = "NRI_BANDWIDTH_CGROUP_ROOT")]
    cgroup_root: Option<PathBuf>,
}

/// One line to stderr and, when there is one, the journal.
struct Log {
    id: String,
    socket: PathBuf,
}

impl Log {
    fn say(&self, p: Priority, msg: &str) {
        eprintln!("nri-bandwidth-hook: {msg}");
        journal::send(&self.socket, p, msg, &self.id);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut log = Log {
        id: String::new(),
        socket: journal::socket_path(),
    };
    let policy = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            log.say(Priority::Err, &e);
            return ExitCode::from(2);
        }
    };
    let state = match State::read(std::io::stdin().lock()) {
        Ok(s) => s,
        Err(e) => {
            log.say(Priority::Err, &e.to_string());
            return ExitCode::from(2);
        }
    };
    log.id = state.id.clone();
    let stage = match args.stage.as_deref() {
        Some(name) => Stage::from_name(name),
        None => Stage::from_status(&state.status),
    };
    let stage = match stage {
        Ok(s) => s,
        Err(e) => {
            log.say(Priority::Err, &e.to_string());
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = match stage {
        Stage::Create => create(&args, &state, policy, &log),
        Stage::Stop => stop(&args, &state, &log),
    };
    let refuse = |msg: &str| {
        log.say(
            Priority::Err,
            &format!("{msg} (strict: refusing container {})", state.id),
        );
        ExitCode::from(1)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(HookError::Refused(msg)) => refuse(&msg),
        Err(e) => match policy.on_failure(&hook_action::describe(&state), &e) {
            Verdict::Refuse(msg) => refuse(&msg),
            Verdict::Proceed => ExitCode::SUCCESS,
            Verdict::RunUnlimited(msg) => {
                log.say(
                    Priority::Warning,
                    &format!("{msg} ({} ms)", started.elapsed().as_millis()),
                );
                ExitCode::SUCCESS
            }
        },
    }
}

/// The policy from the flag, else from the settings file shared with the daemon.
fn settings(args: &Args) -> Result<Policy, String> {
    let mut cfg = Config::from_file_or_default(args.config.as_deref())?;
    cfg.strict |= args.strict;
    Ok(cfg.policy())
}

fn cgroup_fs(args: &Args) -> Result<CgroupFs, String> {
    match &args.cgroup_root {
        Some(r) => Ok(CgroupFs::new(r)),
        None => CgroupFs::detect().map_err(|e| e.to_string()),
    }
}

fn create(args: &Args, state: &State, policy: Policy, log: &Log) -> Result<(), HookError> {
    // The container's own limit, and under CRI-O its pod's (see crio_pod).
    let mut todo = Vec::new();
    for (is_pod, plan) in [
        (false, hook_action::plan_create(state, policy)?),
        (true, hook_action::plan_crio_pod(state, policy)?),
    ] {
        match plan {
            Plan::Nothing { warning: Some(w) } => log.say(Priority::Warning, &w),
            Plan::Nothing { warning: None } => {}
            Plan::Limit { limit, owner } => todo.push((is_pod, limit, owner)),
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let limiter = |detail: String| HookError::limiter(&state.id, detail);
    // The cgroups first: no program is loaded for a container we cannot place.
    let cgfs = cgroup_fs(args).map_err(limiter)?;
    let container = hook_action::container_cgroup(&cgfs, state)?;
    let mut placed = Vec::new();
    for (is_pod, limit, owner) in todo {
        let cgroup = if is_pod {
            hook_action::pod_cgroup(&cgfs, &container, &state.id)?
        } else {
            container.clone()
        };
        placed.push((cgroup, limit, owner));
    }
    let dp = Datapath::open(&args.pin_root)
        .map_err(|e| HookError::limiter(&state.id, e))?
        .with_lock_wait(LOCK_WAIT);
    let store = NodeStore::new(dp, cgfs);
    for (cgroup, limit, owner) in placed {
        hook_action::apply(&store, &state.id, &cgroup, &limit, &owner)?;
        let whose = if owner.container_id == state.id {
            format!("container {}", state.id)
        } else {
            format!(
                "pod sandbox {} (container {})",
                owner.container_id, state.id
            )
        };
        log.say(
            Priority::Info,
            &format!(
                "{whose}: limited cgroup {} (id {}): {}",
                cgroup.rel,
                cgroup.id,
                limit.describe()
            ),
        );
    }
    Ok(())
}

fn stop(args: &Args, state: &State, log: &Log) -> Result<(), HookError> {
    let limiter = |detail: String| HookError::limiter(&state.id, detail);
    // Nothing pinned means nothing of ours to remove; never load programs here.
    let Some(dp) =
        Datapath::open_existing(&args.pin_root).map_err(|e| HookError::limiter(&state.id, e))?
    else {
        return Ok(());
    };
    let cgfs = cgroup_fs(args).map_err(limiter)?;
    let root = cgfs.root().to_path_buf();
    let store = NodeStore::new(dp.with_lock_wait(LOCK_WAIT), cgfs);
    let n = hook_action::remove(&store, &state.id)?;
    if n > 0 {
        log.say(
            Priority::Info,
            &format!("container {}: removed {n} bandwidth limit(s)", state.id),
        );
    }
    // Under CRI-O the pod's limit goes with the last of its containers.
    if let Ok(Some(split)) = crio_pod::split(&state.annotations) {
        let sb = split.sandbox_id;
        let pod_dirs: Vec<PathBuf> = store
            .entries()
            .map_err(|e| HookError::limiter(&state.id, e))?
            .into_iter()
            .filter(|e| e.owner.source == Source::Hook && e.owner.container_id == sb)
            .map(|e| root.join(e.path.trim_start_matches('/')))
            .collect();
        if !pod_dirs.is_empty()
            && !pod_dirs
                .iter()
                .any(|d| crio_pod::others_running(d, &state.id, &sb))
        {
            let n = hook_action::remove(&store, &sb)?;
            log.say(
                Priority::Info,
                &format!(
                    "pod sandbox {sb}: its last container {} stopped; removed {n} bandwidth limit(s)",
                    state.id
                ),
            );
        }
    }
    Ok(())
}
