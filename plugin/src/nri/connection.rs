//! One NRI connection: multiplex the socket, serve the Plugin service on conn 1,
//! register through the Runtime service on conn 2, and run until the runtime goes
//! away. The caller reconnects (external plugin) or exits (launched plugin).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use ttrpc::r#async::transport::{Listener, Socket};
use ttrpc::r#async::{Client, Server};

use crate::nri::mux::{Mux, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
use crate::nri::proto::nri::RegisterPluginRequest;
use crate::nri::proto::nri_ttrpc::{Plugin, RuntimeClient, create_plugin};

/// Default registration timeout of NRI runtimes (v0.3+).
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Identity the plugin registers with.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    /// Two digits: the runtime calls plugins in ascending index order.
    pub idx: String,
}

impl Identity {
    /// Checks what runtimes check, so a bad name fails here with a clear message
    /// instead of as a dropped connection.
    pub fn validate(&self) -> Result<(), String> {
        if self.idx.len() != 2 || !self.idx.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "plugin index {:?}: expected exactly two digits, such as 50",
                self.idx
            ));
        }
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
        {
            return Err(format!(
                "plugin name {:?}: expected letters, digits and _.+- only",
                self.name
            ));
        }
        Ok(())
    }
}

/// Serves one connection until it closes. Returns Ok when the runtime hung up
/// after a successful registration.
pub async fn serve<T>(
    trunk: T,
    plugin: Arc<dyn Plugin + Send + Sync>,
    id: &Identity,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut mux = Mux::new(trunk, &[PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN]);
    let plugin_conn = mux.take(PLUGIN_SERVICE_CONN).expect("conn 1");
    let runtime_conn = mux.take(RUNTIME_SERVICE_CONN).expect("conn 2");

    // The server must be up before registering: Configure may arrive before the
    // RegisterPlugin reply. A listener that ends would stop the accept loop (and
    // make shutdown panic), so it stays pending after yielding the one connection.
    let incoming = futures::stream::once(async move { Ok::<_, io::Error>(plugin_conn) })
        .chain(futures::stream::pending());
    let mut server = Server::new()
        .register_service(create_plugin(plugin))
        .add_listener(Listener::new(incoming));
    server
        .start()
        .await
        .map_err(|e| io::Error::other(format!("starting the NRI plugin server: {e}")))?;

    let client = RuntimeClient::new(Client::new(Socket::new(runtime_conn)));
    let mut req = RegisterPluginRequest::new();
    req.plugin_name = id.name.clone();
    req.plugin_idx = id.idx.clone();
    req.NRI_version = "v0.12.0".into();
    let ctx = ttrpc::context::with_timeout(REGISTRATION_TIMEOUT.as_nanos() as i64);
    if let Err(e) = client.register_plugin(ctx, &req).await {
        let _ = server.shutdown().await;
        mux.done.abort();
        return Err(io::Error::other(format!(
            "registering with the runtime as {}-{}: {e}",
            id.idx, id.name
        )));
    }
    log::info!("registered as {}-{}", id.idx, id.name);

    let r = (&mut mux.done).await;
    let _ = server.shutdown().await;
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_validated_like_the_runtime_does() {
        let ok = Identity {
            name: "bandwidth".into(),
            idx: "50".into(),
        };
        assert!(ok.validate().is_ok());
        for (name, idx) in [
            ("bandwidth", "5"),
            ("bandwidth", "ab"),
            ("", "50"),
            ("band width", "50"),
            ("a/b", "10"),
        ] {
            let e = Identity {
                name: name.into(),
                idx: idx.into(),
            }
            .validate()
            .unwrap_err();
            assert!(
                e.contains(
                    if idx.len() != 2 || !idx.bytes().all(|b| b.is_ascii_digit()) {
                        idx
                    } else {
                        name
                    }
                ),
                "{e}"
            );
        }
    }
}
