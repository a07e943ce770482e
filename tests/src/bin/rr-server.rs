//! A request/response server for the benchmark's transfer times: per connection it
//! reads an 8-byte big-endian length N, then N bytes, then answers one byte and
//! closes. It runs in the workload, so the N bytes are the workload's ingress.
//!
//! usage: rr-server PORT

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(5400);
    let l = TcpListener::bind(("0.0.0.0", port))?;
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        std::thread::spawn(move || {
            let mut len = [0u8; 8];
            if c.read_exact(&mut len).is_err() {
                return;
            }
            let mut left = u64::from_be_bytes(len);
            let mut buf = vec![0u8; 64 << 10];
            while left > 0 {
                let want = buf.len().min(left as usize);
                match c.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left -= n as u64,
                }
            }
            let _ = c.write_all(b"k");
        });
    }
    Ok(())
}
