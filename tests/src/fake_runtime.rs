//! The runtime's side of NRI, played against the plugin over one socket: the
//! multiplexer, a ttrpc server for the `Runtime` service on connection 2 that
//! records every RegisterPlugin, and a `Plugin` client on connection 1. The
//! protocol test (plugin in-process) and nri-synth (the real plugin binary) both
//! stand in for containerd with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use nri_plugin::nri::mux::Mux;
use nri_plugin::nri::proto::nri::{Empty, PodSandbox, RegisterPluginRequest};
use nri_plugin::nri::proto::nri_ttrpc::{PluginClient, Runtime, create_runtime};
use ttrpc::r#async::TtrpcContext;
use ttrpc::r#async::transport::{Listener, Socket};
use ttrpc::r#async::{Client, Server};

/// What a runtime allows a plugin per call (containerd's default budget).
const CALL_TIMEOUT_NS: i64 = 2_000_000_000;

/// The plugins that registered: (name, index), in order.
#[derive(Default, Clone)]
pub struct Registered(Arc<Mutex<Vec<(String, String)>>>);

impl Registered {
    pub fn plugins(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl Runtime for Registered {
    async fn register_plugin(
        &self,
        _ctx: &TtrpcContext,
        req: RegisterPluginRequest,
    ) -> ttrpc::Result<Empty> {
        self.0
            .lock()
            .unwrap()
            .push((req.plugin_name, req.plugin_idx));
        Ok(Empty::new())
    }
}

/// A runtime connected to one plugin; the server stops when this is dropped.
pub struct FakeRuntime {
    /// Typed calls into the plugin.
    pub client: PluginClient,
    /// The same connection for hand-built requests (methods the client lacks).
    pub raw: Client,
    pub registered: Registered,
    _server: Server,
}

impl FakeRuntime {
    /// Serves the runtime's side on `stream`, whose other end is the plugin's.
    pub async fn start(stream: tokio::net::UnixStream) -> ttrpc::Result<FakeRuntime> {
        let mut mux = Mux::new(stream, &[1, 2]);
        let (to_plugin, runtime_conn) = (mux.take(1).unwrap(), mux.take(2).unwrap());
        let registered = Registered::default();
        // One connection, then nothing: the server must not see the stream end.
        let incoming = futures::stream::once(async move { Ok::<_, std::io::Error>(runtime_conn) })
            .chain(futures::stream::pending());
        let mut server = Server::new()
            .register_service(create_runtime(Arc::new(registered.clone())))
            .add_listener(Listener::new(incoming));
        server.start().await?;
        let raw = Client::new(Socket::new(to_plugin));
        Ok(FakeRuntime {
            client: PluginClient::new(raw.clone()),
            raw,
            registered,
            _server: server,
        })
    }

    /// Whether a plugin registered within `within`.
    pub async fn wait_registered(&self, within: Duration) -> bool {
        let t = Instant::now();
        while self.registered.plugins().is_empty() {
            if t.elapsed() >= within {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Calls `method` of the Plugin service with an empty request, by name.
    pub async fn call_by_name(&self, method: &str) -> ttrpc::Result<ttrpc::Response> {
        let mut req = ttrpc::Request::new();
        req.service = "nri.pkg.api.v1alpha1.Plugin".into();
        req.method = method.into();
        req.timeout_nano = CALL_TIMEOUT_NS;
        self.raw.request(req).await
    }
}

/// The context of every typed call.
pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(CALL_TIMEOUT_NS)
}

/// A pod `uid` in namespace "default" under /kubepods/pod<uid>, with annotations.
pub fn pod(uid: &str, annotations: &[(&str, &str)]) -> PodSandbox {
    nri_plugin::nri::testing::pod(uid, &format!("/kubepods/pod{uid}"), annotations)
}
