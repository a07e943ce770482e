//! The ttrpc `Plugin` service: answers Configure, collects Synchronize, and turns
//! each event — a dedicated RPC (NRI v0.12+) or a `StateChange` (older runtimes,
//! and the fallback of newer ones) — into one [`Event`], timed and dispatched once.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use nri_bandwidth_core::policy::Config;
use ttrpc::r#async::TtrpcContext;
use ttrpc::{Code, get_status};

use crate::metrics::Metrics;
use crate::nri::proto::nri::Event as Event_;
use crate::nri::proto::nri::*;
use crate::nri::proto::nri_ttrpc::Plugin;
use crate::nri::sync::SyncCollector;
use crate::nri::{Event, Handler, Refusal};

/// Events we subscribe to (enum Event numbers).
pub const SUBSCRIBED: [Event_; 6] = [
    Event_::RUN_POD_SANDBOX,
    Event_::REMOVE_POD_SANDBOX,
    Event_::CREATE_CONTAINER,
    Event_::POST_CREATE_CONTAINER,
    Event_::START_CONTAINER,
    Event_::REMOVE_CONTAINER,
];

/// Parses `v0.12.1` / `0.8.0` into (major, minor).
pub fn parse_nri_version(v: &str) -> Option<(u32, u32)> {
    let v = v.trim().trim_start_matches('v');
    let mut it = v.split(['.', '-', '+']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The runtime's NRI version: what it says (v0.12+), else inferred from containerd's
/// version (the table in the NRI reference), else unknown.
pub fn runtime_nri_version(req: &ConfigureRequest) -> Option<(u32, u32)> {
    if let Some(v) = parse_nri_version(&req.NRI_version) {
        return Some(v);
    }
    if req.runtime_name == "containerd" {
        let (maj, min) = parse_nri_version(&req.runtime_version)?;
        return Some(match (maj, min) {
            (1, _) | (2, 0) | (2, 1) => (0, 8),
            (2, 2) => (0, 11),
            _ => (0, 12),
        });
    }
    None
}

/// The subscription mask for `events`, leaving out events the runtime's NRI version
/// does not know (an unknown bit makes it reject the plugin).
pub fn event_mask(events: &[Event_], nri: Option<(u32, u32)>) -> i32 {
    // v0.2-v0.9 know events 1..=11; from v0.10 on, 1..=14. Unknown: assume oldest.
    let last = match nri {
        Some((0, minor)) if minor >= 10 => 14,
        Some((major, _)) if major >= 1 => 14,
        _ => 11,
    };
    events
        .iter()
        .map(|e| *e as i32)
        .filter(|&n| (1..=last).contains(&n))
        .fold(0, |m, n| m | 1 << (n - 1))
}

/// One connection's service. Made anew for every connection, so nothing of a
/// connection that dropped (a half-sent Synchronize) carries over.
pub struct PluginService {
    handler: Arc<dyn Handler>,
    metrics: Arc<Metrics>,
    /// Settings from the config file; the Configure payload is layered on top.
    base: Config,
    sync: SyncCollector,
}

impl PluginService {
    pub fn new(handler: Arc<dyn Handler>, metrics: Arc<Metrics>, base: Config) -> Self {
        // In force from the start, not only once the runtime has sent Configure.
        handler.configure(base.policy());
        PluginService {
            handler,
            metrics,
            base,
            sync: SyncCollector::default(),
        }
    }

    /// Runs one event inline and records its latency. Inline, not on the blocking
    /// pool: the work is a few BPF syscalls (well under a millisecond), the runtime
    /// sends one call at a time, and a thread hand-off under load cost more (p99)
    /// than the work itself.
    fn handle(&self, ev: Event) -> ttrpc::Result<()> {
        let start = Instant::now();
        let r = ev.dispatch(self.handler.as_ref());
        self.metrics.observe(ev.method(), start.elapsed());
        r.map_err(|Refusal(msg)| {
            ttrpc::Error::RpcStatus(get_status(Code::FAILED_PRECONDITION, msg))
        })
    }
}

fn pod_of(p: &protobuf::MessageField<PodSandbox>) -> PodSandbox {
    p.as_ref().cloned().unwrap_or_default()
}

fn container_of(c: &protobuf::MessageField<Container>) -> Container {
    c.as_ref().cloned().unwrap_or_default()
}

/// The event a `StateChange` carries, if it is one we handle.
fn state_change_event(ev: &StateChangeEvent) -> Option<Event> {
    let (pod, c) = (pod_of(&ev.pod), container_of(&ev.container));
    Some(match ev.event.enum_value() {
        Ok(Event_::RUN_POD_SANDBOX) => Event::RunPodSandbox(pod),
        Ok(Event_::CREATE_CONTAINER) => Event::CreateContainer(pod, c),
        Ok(Event_::POST_CREATE_CONTAINER) => Event::PostCreateContainer(pod, c),
        Ok(Event_::START_CONTAINER) => Event::StartContainer(pod, c),
        Ok(Event_::REMOVE_CONTAINER) => Event::RemoveContainer(pod, c),
        Ok(Event_::REMOVE_POD_SANDBOX) => Event::RemovePodSandbox(pod),
        _ => return None,
    })
}

#[async_trait]
impl Plugin for PluginService {
    async fn configure(
        &self,
        _ctx: &TtrpcContext,
        req: ConfigureRequest,
    ) -> ttrpc::Result<ConfigureResponse> {
        let start = Instant::now();
        let mut cfg = self.base.clone();
        if let Err(e) = cfg.merge_text(&req.config) {
            // A bad payload must not reject the plugin (that would leave every pod
            // unlimited without a trace): keep the file's settings and say why.
            log::error!("ignoring the NRI Configure payload: {e}");
        }
        self.handler.configure(cfg.policy());
        let nri = runtime_nri_version(&req);
        let mut resp = ConfigureResponse::new();
        resp.events = event_mask(&SUBSCRIBED, nri);
        log::info!(
            "configured by {} {} (NRI {}), events 0x{:x}, strict={}",
            req.runtime_name,
            req.runtime_version,
            nri.map_or("unknown".into(), |(a, b)| format!("v{a}.{b}")),
            resp.events,
            cfg.strict
        );
        self.metrics.observe("Configure", start.elapsed());
        Ok(resp)
    }

    async fn synchronize(
        &self,
        _ctx: &TtrpcContext,
        req: SynchronizeRequest,
    ) -> ttrpc::Result<SynchronizeResponse> {
        let start = Instant::now();
        let n = (req.pods.len(), req.containers.len());
        let more = req.more;
        match self.sync.add(req.pods, req.containers, more) {
            Ok(Some((pods, containers))) => self.handler.synchronize(&pods, &containers),
            Ok(None) => {}
            Err(e) => {
                log::error!("synchronize: {e}");
                return Err(ttrpc::Error::RpcStatus(get_status(
                    Code::RESOURCE_EXHAUSTED,
                    format!("nri-bandwidth: {e}"),
                )));
            }
        }
        self.metrics.observe("Synchronize", start.elapsed());
        log::info!(
            "synchronize: {} pods, {} containers{}",
            n.0,
            n.1,
            if more { " (more to come)" } else { "" }
        );
        let mut resp = SynchronizeResponse::new();
        // Echoed as the protocol requires: the runtime sends the next chunk.
        resp.more = more;
        Ok(resp)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: Empty) -> ttrpc::Result<Empty> {
        log::info!("runtime asked us to shut down");
        Ok(Empty::new())
    }

    async fn run_pod_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: RunPodSandboxRequest,
    ) -> ttrpc::Result<RunPodSandboxResponse> {
        self.handle(Event::RunPodSandbox(pod_of(&req.pod)))?;
        Ok(RunPodSandboxResponse::new())
    }

    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<CreateContainerResponse> {
        self.handle(Event::CreateContainer(
            pod_of(&req.pod),
            container_of(&req.container),
        ))?;
        Ok(CreateContainerResponse::new())
    }

    async fn post_create_container(
        &self,
        _ctx: &TtrpcContext,
        req: PostCreateContainerRequest,
    ) -> ttrpc::Result<PostCreateContainerResponse> {
        self.handle(Event::PostCreateContainer(
            pod_of(&req.pod),
            container_of(&req.container),
        ))?;
        Ok(PostCreateContainerResponse::new())
    }

    async fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: StartContainerRequest,
    ) -> ttrpc::Result<StartContainerResponse> {
        self.handle(Event::StartContainer(
            pod_of(&req.pod),
            container_of(&req.container),
        ))?;
        Ok(StartContainerResponse::new())
    }

    async fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<RemoveContainerResponse> {
        self.handle(Event::RemoveContainer(
            pod_of(&req.pod),
            container_of(&req.container),
        ))?;
        Ok(RemoveContainerResponse::new())
    }

    async fn remove_pod_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: RemovePodSandboxRequest,
    ) -> ttrpc::Result<RemovePodSandboxResponse> {
        self.handle(Event::RemovePodSandbox(pod_of(&req.pod)))?;
        Ok(RemovePodSandboxResponse::new())
    }

    async fn state_change(
        &self,
        _ctx: &TtrpcContext,
        ev: StateChangeEvent,
    ) -> ttrpc::Result<Empty> {
        match state_change_event(&ev) {
            Some(e) => self.handle(e)?,
            // Events we did not subscribe to: nothing to do.
            None => log::debug!("ignoring state change {:?}", ev.event),
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_has_our_events_and_nothing_an_old_runtime_rejects() {
        // RUN(1) REMOVE_POD(3) CREATE(4) POST_CREATE(5) START(6) REMOVE_CONTAINER(11)
        let want = 0x1 | 0x4 | 0x8 | 0x10 | 0x20 | 0x400;
        for v in [
            None,
            Some((0, 3)),
            Some((0, 8)),
            Some((0, 10)),
            Some((0, 12)),
            Some((1, 0)),
        ] {
            let m = event_mask(&SUBSCRIBED, v);
            assert_eq!(m, want, "{v:?}");
            assert_eq!(m & !0x7ff, 0, "only events every runtime knows");
        }
        // Newer events are dropped for runtimes that do not know them.
        assert_eq!(event_mask(&[Event_::UPDATE_POD_SANDBOX], Some((0, 8))), 0);
        assert_eq!(
            event_mask(&[Event_::UPDATE_POD_SANDBOX], Some((0, 10))),
            0x800
        );
        assert_eq!(event_mask(&[Event_::UPDATE_POD_SANDBOX], None), 0);
    }

    #[test]
    fn nri_version_from_the_request_or_from_containerd() {
        let mut r = ConfigureRequest::new();
        r.NRI_version = "v0.12.2".into();
        assert_eq!(runtime_nri_version(&r), Some((0, 12)));
        let mut r = ConfigureRequest::new();
        r.runtime_name = "containerd".into();
        for (v, want) in [
            ("v1.7.20", (0, 8)),
            ("2.1.4", (0, 8)),
            ("v2.2.1", (0, 11)),
            ("2.4.2", (0, 12)),
        ] {
            r.runtime_version = v.into();
            assert_eq!(runtime_nri_version(&r), Some(want), "{v}");
        }
        r.runtime_name = "cri-o".into();
        assert_eq!(runtime_nri_version(&r), None);
    }
}
