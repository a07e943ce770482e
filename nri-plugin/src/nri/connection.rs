//! NRI connections: multiplex the socket, serve the Plugin service on conn 1,
//! register through the Runtime service on conn 2, and run until the runtime goes
//! away ([`serve`]); connect and reconnect with backoff, or adopt the socket a
//! runtime launched us with ([`run`]).

use std::io;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
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

/// How the plugin reaches the runtime.
#[derive(Clone, Debug)]
pub enum Transport {
    /// External plugin: connect to this socket, reconnect whenever it goes away.
    Socket(PathBuf),
    /// Launched by the runtime: this inherited, connected fd (`NRI_PLUGIN_SOCKET`);
    /// one connection, then exit (the runtime relaunches us).
    InheritedFd(i32),
}

/// First and longest pause between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

/// Runs the plugin over `transport`: `service()` makes a fresh service for each
/// connection, `on_connect()` runs before it registers. With `once`, or an
/// inherited fd, returns when the first connection ends.
pub async fn run(
    transport: &Transport,
    id: &Identity,
    once: bool,
    on_connect: impl Fn(),
    service: impl Fn() -> Arc<dyn Plugin + Send + Sync>,
) -> io::Result<()> {
    let path = match transport {
        Transport::InheritedFd(fd) => {
            let sock = adopt(*fd)?;
            on_connect();
            serve(sock, service(), id).await?;
            log::info!("the runtime closed the connection; exiting (it relaunches us)");
            return Ok(());
        }
        Transport::Socket(p) => p,
    };
    let mut backoff = BACKOFF_MIN;
    // Consecutive connections that ended early: a runtime that accepts and drops
    // us must not get a reconnect every 250 ms forever, nor an ERROR line each time.
    let mut failures = 0u32;
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(sock) => {
                let started = std::time::Instant::now();
                if failures == 0 {
                    log::info!("connected to {}", path.display());
                }
                on_connect();
                let r = serve(sock, service(), id).await;
                if started.elapsed() >= STABLE {
                    failures = 0;
                    backoff = BACKOFF_MIN;
                }
                match r {
                    Ok(()) if failures == 0 => log::warn!("the runtime closed the connection"),
                    Err(e) if failures == 0 => log::error!("NRI connection: {e}"),
                    Ok(()) => log::debug!("the runtime closed the connection again"),
                    Err(e) => log::debug!("NRI connection (again): {e}"),
                }
                if started.elapsed() < STABLE {
                    if failures == 0 {
                        log::warn!(
                            "the connection lasted under {} s; retrying with backoff up to {} s (repeats are logged at debug level)",
                            STABLE.as_secs(),
                            BACKOFF_MAX.as_secs()
                        );
                    }
                    failures += 1;
                }
                if once {
                    return Err(io::Error::other("connection ended (--once)"));
                }
            }
            Err(e) => log::debug!("connecting to {}: {e}", path.display()),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Takes ownership of the connected socket a runtime passed us.
fn adopt(fd: i32) -> io::Result<tokio::net::UnixStream> {
    // SAFETY: the runtime passed us this connected socket; we own it from here.
    let std_sock = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    // Inherited without CLOEXEC: do not leak it into anything we exec.
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    std_sock.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(std_sock)
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
