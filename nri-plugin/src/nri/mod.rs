//! The NRI stub: everything about containerd's Node Resource Interface that is not
//! about bandwidth. It connects (a socket, or the fd a runtime launched us with),
//! registers, reconnects with backoff, answers Configure, collects Synchronize
//! chunks, and turns both the dedicated event RPCs and `StateChange` into one
//! [`Event`] dispatched once to a [`Handler`]: the plugin implements one method
//! per event and never sees the protocol.
//!
//! | module | its one job |
//! |---|---|
//! | `proto` | types and services generated from `nri-plugin/proto/nri.proto` |
//! | `mux` | the socket multiplexer (conn 1: plugin service, conn 2: runtime service) |
//! | `connection` | connect or adopt the fd, register, serve, reconnect with backoff |
//! | `service` | the ttrpc `Plugin` service: Configure, Synchronize, events → [`Event`] |
//! | `sync` | Synchronize chunks collected until the last one |

/// Types and services generated at build time from `nri-plugin/proto/nri.proto`.
#[allow(
    clippy::all,
    unused_mut,
    non_upper_case_globals,
    unused_qualifications,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    unreachable_pub,
    missing_docs,
    renamed_and_removed_lints,
    unknown_lints
)]
pub mod proto {
    pub mod nri {
        include!(concat!(env!("OUT_DIR"), "/nri.rs"));
    }
    pub mod nri_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/nri_ttrpc.rs"));
    }
}

pub mod connection;
pub mod mux;
pub mod service;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use nri_bandwidth_core::policy::Policy;
use proto::nri::{Container, PodSandbox};

/// A refusal to return to the runtime (it fails the pod or container).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// What a plugin does at each event; every method defaults to nothing. Handlers run
/// inline on the connection (a few syscalls) and never call the runtime back.
pub trait Handler: Send + Sync + 'static {
    /// The settings in force after the runtime's Configure (file + payload).
    fn configure(&self, _policy: Policy) {}
    /// The whole list of pods and containers, once all chunks arrived.
    fn synchronize(&self, _pods: &[PodSandbox], _containers: &[Container]) {}
    fn run_pod_sandbox(&self, _pod: &PodSandbox) -> Result<(), Refusal> {
        Ok(())
    }
    fn create_container(&self, _pod: &PodSandbox, _c: &Container) -> Result<(), Refusal> {
        Ok(())
    }
    fn post_create_container(&self, _pod: &PodSandbox, _c: &Container) -> Result<(), Refusal> {
        Ok(())
    }
    fn start_container(&self, _pod: &PodSandbox, _c: &Container) -> Result<(), Refusal> {
        Ok(())
    }
    fn remove_container(&self, _pod: &PodSandbox, _c: &Container) {}
    fn remove_pod_sandbox(&self, _pod: &PodSandbox) {}
}

/// One pod or container event, however the runtime delivered it.
#[derive(Clone, Debug)]
pub enum Event {
    RunPodSandbox(PodSandbox),
    CreateContainer(PodSandbox, Container),
    PostCreateContainer(PodSandbox, Container),
    StartContainer(PodSandbox, Container),
    RemoveContainer(PodSandbox, Container),
    RemovePodSandbox(PodSandbox),
}

impl Event {
    /// The NRI method name (for metrics and logs).
    pub fn method(&self) -> &'static str {
        match self {
            Event::RunPodSandbox(_) => "RunPodSandbox",
            Event::CreateContainer(..) => "CreateContainer",
            Event::PostCreateContainer(..) => "PostCreateContainer",
            Event::StartContainer(..) => "StartContainer",
            Event::RemoveContainer(..) => "RemoveContainer",
            Event::RemovePodSandbox(_) => "RemovePodSandbox",
        }
    }

    /// Calls the handler's method for this event.
    pub fn dispatch(&self, h: &dyn Handler) -> Result<(), Refusal> {
        match self {
            Event::RunPodSandbox(p) => h.run_pod_sandbox(p),
            Event::CreateContainer(p, c) => h.create_container(p, c),
            Event::PostCreateContainer(p, c) => h.post_create_container(p, c),
            Event::StartContainer(p, c) => h.start_container(p, c),
            Event::RemoveContainer(p, c) => {
                h.remove_container(p, c);
                Ok(())
            }
            Event::RemovePodSandbox(p) => {
                h.remove_pod_sandbox(p);
                Ok(())
            }
        }
    }
}
