//! NRI's socket multiplexer: one stream socket carries several logical byte
//! streams, each frame being `u32 BE conn id | u32 BE length | payload`.
//! Conn 1 carries the Plugin service (we are the ttrpc server), conn 2 the Runtime
//! service (we are the client).
//!
//! Frames we send carry at most 4096 payload bytes and never zero: the Go side reads
//! each frame into a 4096-byte buffer and fails the whole connection (ENOMEM) on a
//! larger one. Frames we receive may be up to 4 MiB + 10 bytes.

use std::collections::HashMap;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const PLUGIN_SERVICE_CONN: u32 = 1;
pub const RUNTIME_SERVICE_CONN: u32 = 2;

/// Largest payload we put in one frame.
pub const MAX_SEND_PAYLOAD: usize = 4096;
/// Largest payload we accept (the runtime splits above 4 MiB + 10 bytes).
pub const MAX_RECV_PAYLOAD: usize = (4 << 20) + 10;

const PIPE_CAPACITY: usize = 256 * 1024;

/// The logical connections of one trunk, and the tasks that move their bytes.
pub struct Mux {
    conns: HashMap<u32, DuplexStream>,
    /// Finishes when the trunk closes (EOF or error) in either direction.
    pub done: JoinHandle<io::Result<()>>,
}

impl Mux {
    /// Starts multiplexing `trunk` for the given connection ids.
    pub fn new<T>(trunk: T, ids: &[u32]) -> Mux
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(trunk);
        let (tx, mut rx) = mpsc::channel::<(u32, Vec<u8>)>(64);
        let mut conns = HashMap::new();
        let mut inbound = HashMap::new();
        let mut pumps = Vec::new();
        for &id in ids {
            let (ours, theirs) = tokio::io::duplex(PIPE_CAPACITY);
            conns.insert(id, ours);
            let (mut from_user, to_user) = tokio::io::split(theirs);
            inbound.insert(id, to_user);
            let tx = tx.clone();
            // One pump per connection: what its user writes becomes frames.
            pumps.push(tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_SEND_PAYLOAD];
                loop {
                    match from_user.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tx.send((id, buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }));
        }
        drop(tx);

        let writer = async move {
            while let Some((id, payload)) = rx.recv().await {
                wr.write_all(&encode_header(id, payload.len())).await?;
                wr.write_all(&payload).await?;
                wr.flush().await?;
            }
            let _ = wr.shutdown().await;
            Ok::<(), io::Error>(())
        };
        let reader = async move {
            let r = read_frames(&mut rd, &mut inbound).await;
            // Closing our ends tells ttrpc on both connections that the peer is gone.
            for (_, mut w) in inbound.drain() {
                let _ = w.shutdown().await;
            }
            r
        };
        let done = tokio::spawn(async move {
            let r = tokio::select! {
                r = reader => r,
                r = writer => r,
            };
            for p in pumps {
                p.abort();
            }
            r
        });
        Mux { conns, done }
    }

    /// Takes the stream of logical connection `id` (once).
    pub fn take(&mut self, id: u32) -> Option<DuplexStream> {
        self.conns.remove(&id)
    }
}

fn encode_header(id: u32, len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&id.to_be_bytes());
    h[4..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

async fn read_frames<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rd: &mut R,
    conns: &mut HashMap<u32, W>,
) -> io::Result<()> {
    let mut header = [0u8; 8];
    loop {
        match rd.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let id = u32::from_be_bytes(header[..4].try_into().unwrap());
        let len = u32::from_be_bytes(header[4..].try_into().unwrap()) as usize;
        if len > MAX_RECV_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "NRI mux frame for conn {id} is {len} bytes; at most {MAX_RECV_PAYLOAD} expected"
                ),
            ));
        }
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("NRI mux frame for conn {id} truncated: {e}"),
            )
        })?;
        match conns.get_mut(&id) {
            Some(w) => w.write_all(&payload).await?,
            // As the Go side does: frames for a connection nobody opened are dropped.
            None => log::debug!("dropping {len}-byte NRI frame for unknown conn {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> (u32, Vec<u8>) {
        let mut h = [0u8; 8];
        r.read_exact(&mut h).await.unwrap();
        let id = u32::from_be_bytes(h[..4].try_into().unwrap());
        let len = u32::from_be_bytes(h[4..].try_into().unwrap()) as usize;
        let mut p = vec![0u8; len];
        r.read_exact(&mut p).await.unwrap();
        (id, p)
    }

    #[tokio::test]
    async fn large_writes_become_frames_of_at_most_4096_bytes_never_empty() {
        let (trunk, mut peer) = tokio::io::duplex(1 << 20);
        let mut mux = Mux::new(trunk, &[1, 2]);
        let mut c2 = mux.take(2).unwrap();
        let msg: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        c2.write_all(&msg).await.unwrap();
        let mut got = Vec::new();
        while got.len() < msg.len() {
            let (id, p) = read_frame(&mut peer).await;
            assert_eq!(id, 2);
            assert!(
                !p.is_empty() && p.len() <= MAX_SEND_PAYLOAD,
                "frame of {} bytes",
                p.len()
            );
            got.extend(p);
        }
        assert_eq!(got, msg);
    }

    #[tokio::test]
    async fn frames_are_routed_by_connection_and_unknown_ids_dropped() {
        let (trunk, mut peer) = tokio::io::duplex(1 << 20);
        let mut mux = Mux::new(trunk, &[1, 2]);
        let (mut c1, mut c2) = (mux.take(1).unwrap(), mux.take(2).unwrap());
        for (id, data) in [
            (2u32, &b"two"[..]),
            (7, b"nobody"),
            (1, b"one"),
            (2, b"more"),
        ] {
            peer.write_all(&encode_header(id, data.len()))
                .await
                .unwrap();
            peer.write_all(data).await.unwrap();
        }
        let mut b = [0u8; 3];
        c1.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"one");
        let mut b = [0u8; 7];
        c2.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"twomore");
    }

    #[tokio::test]
    async fn a_frame_larger_than_4096_from_the_runtime_is_accepted() {
        let (trunk, mut peer) = tokio::io::duplex(1 << 20);
        let mut mux = Mux::new(trunk, &[1]);
        let mut c1 = mux.take(1).unwrap();
        let data = vec![7u8; 100_000];
        peer.write_all(&encode_header(1, data.len())).await.unwrap();
        peer.write_all(&data).await.unwrap();
        let mut got = vec![0u8; data.len()];
        c1.read_exact(&mut got).await.unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_truncated_frame_ends_the_mux_with_a_clear_error_and_eof_to_users() {
        let (trunk, mut peer) = tokio::io::duplex(1 << 20);
        let mut mux = Mux::new(trunk, &[1]);
        let mut c1 = mux.take(1).unwrap();
        peer.write_all(&encode_header(1, 100)).await.unwrap();
        peer.write_all(&[1u8; 10]).await.unwrap();
        drop(peer);
        let err = mux.done.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let mut rest = Vec::new();
        c1.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "a truncated frame must not be delivered in part"
        );
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused() {
        let (trunk, mut peer) = tokio::io::duplex(1 << 20);
        let mux = Mux::new(trunk, &[1]);
        peer.write_all(&encode_header(1, MAX_RECV_PAYLOAD + 1))
            .await
            .unwrap();
        let err = mux.done.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[tokio::test]
    async fn trunk_eof_closes_every_connection() {
        let (trunk, peer) = tokio::io::duplex(1 << 20);
        let mut mux = Mux::new(trunk, &[1, 2]);
        let (mut c1, mut c2) = (mux.take(1).unwrap(), mux.take(2).unwrap());
        drop(peer);
        let mut v = Vec::new();
        assert_eq!(c1.read_to_end(&mut v).await.unwrap(), 0);
        assert_eq!(c2.read_to_end(&mut v).await.unwrap(), 0);
        assert!(mux.done.await.unwrap().is_ok());
    }
}
