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
use nri_bandwidth::bpffs::DEFAULT_PIN_ROOT;
use nri_bandwidth::cgroup::CgroupFs;
use nri_bandwidth::limiter::Datapath;
use nri_bandwidth::nri::backend::LimiterBackend;
use nri_bandwidth::nri::config::Config;
use nri_bandwidth_hook::hook_action::{self, HookError, Plan, Stage};
use nri_bandwidth_hook::journal::{self, Priority};
use nri_bandwidth_hook::oci_state::State;

/// The settings file shared with the daemon; read when it exists.
const DEFAULT_CONFIG: &str = "/etc/nri-bandwidth/nri-bandwidth.conf";

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
    let strict = match settings(&args) {
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
        Stage::Create => create(&args, &state, strict, &log),
        Stage::Stop => stop(&args, &state, &log),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if strict => {
            log.say(
                Priority::Err,
                &format!("{e} (strict: refusing container {})", state.id),
            );
            ExitCode::from(1)
        }
        Err(e) => {
            log.say(
                Priority::Warning,
                &format!(
                    "{e}; container {} runs without a bandwidth limit ({} ms)",
                    state.id,
                    started.elapsed().as_millis()
                ),
            );
            ExitCode::SUCCESS
        }
    }
}

/// `strict` from the flag, else from the settings file.
fn settings(args: &Args) -> Result<bool, String> {
    if args.strict {
        return Ok(true);
    }
    let path = match &args.config {
        Some(p) => p.clone(),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG);
            if !p.exists() {
                return Ok(false);
            }
            p
        }
    };
    Config::from_file(&path).map(|c| c.strict)
}

fn cgroup_fs(args: &Args) -> Result<CgroupFs, String> {
    match &args.cgroup_root {
        Some(r) => Ok(CgroupFs::new(r)),
        None => CgroupFs::detect().map_err(|e| e.to_string()),
    }
}

fn create(args: &Args, state: &State, strict: bool, log: &Log) -> Result<(), HookError> {
    let (limit, owner) = match hook_action::plan_create(state, strict)? {
        Plan::Nothing { bad } => {
            for b in bad {
                log.say(
                    Priority::Warning,
                    &format!(
                        "container {}: {b}; it runs without a bandwidth limit",
                        state.id
                    ),
                );
            }
            return Ok(());
        }
        Plan::Limit { limit, owner } => (limit, owner),
    };
    let limiter = |detail: String| HookError::limiter(&state.id, detail);
    // The container's cgroup first: no program is loaded for a container we
    // cannot place.
    let cgfs = cgroup_fs(args).map_err(limiter)?;
    let cgroup = hook_action::container_cgroup(&cgfs, state)?;
    let dp = Datapath::open(&args.pin_root).map_err(|e| HookError::limiter(&state.id, e))?;
    let b = LimiterBackend { dp, cgfs };
    let cgid = hook_action::apply(&b, &state.id, &cgroup, &limit, &owner)?;
    let show = |r: Option<nri_bandwidth::rate::Rate>| r.map_or("-".to_string(), |r| r.to_string());
    log.say(
        Priority::Info,
        &format!(
            "container {}: limited cgroup {cgroup} (id {cgid}): ingress {} egress {}",
            state.id,
            show(limit.ingress),
            show(limit.egress)
        ),
    );
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
    let b = LimiterBackend {
        dp,
        cgfs: cgroup_fs(args).map_err(limiter)?,
    };
    let n = hook_action::remove(&b, &state.id)?;
    if n > 0 {
        log.say(
            Priority::Info,
            &format!("container {}: removed {n} bandwidth limit(s)", state.id),
        );
    }
    Ok(())
}
