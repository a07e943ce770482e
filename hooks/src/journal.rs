//! Messages to the systemd journal through its native datagram socket, so what
//! the hook decided is on record even when the runtime drops hook stderr (podman
//! and CRI-O show it only when the hook fails).
//!
//! The native protocol is newline-separated `FIELD=value` pairs in one datagram;
//! values with a newline would need the binary form, so newlines are flattened.
//! No journal (a container, a non-systemd host) means no journal message: the
//! hook never fails because of logging.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";
/// Overrides the socket (tests listen on their own).
pub const SOCKET_ENV: &str = "NRI_BANDWIDTH_JOURNAL_SOCKET";
pub const IDENTIFIER: &str = "nri-bandwidth-hook";

/// syslog priorities used by the hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Err = 3,
    Warning = 4,
    Info = 6,
}

pub fn socket_path() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The datagram for one message, with the container it concerns.
pub fn encode(priority: Priority, message: &str, container_id: &str) -> Vec<u8> {
    let flat = |s: &str| s.replace('\n', " ");
    format!(
        "MESSAGE={}\nPRIORITY={}\nSYSLOG_IDENTIFIER={IDENTIFIER}\nCONTAINER_ID_FULL={}\n",
        flat(message),
        priority as u8,
        flat(container_id)
    )
    .into_bytes()
}

/// Sends one message; false when there is no journal to send to.
pub fn send(socket: &Path, priority: Priority, message: &str, container_id: &str) -> bool {
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    sock.send_to(&encode(priority, message, container_id), socket)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_native_fields() {
        let d = String::from_utf8(encode(Priority::Warning, "a\nb", "c1")).unwrap();
        assert_eq!(
            d,
            "MESSAGE=a b\nPRIORITY=4\nSYSLOG_IDENTIFIER=nri-bandwidth-hook\nCONTAINER_ID_FULL=c1\n"
        );
    }

    #[test]
    fn delivers_to_a_listening_socket_and_tolerates_none() {
        let dir = std::env::temp_dir().join(format!("hook-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        assert!(send(&path, Priority::Info, "hello", "id"));
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("MESSAGE=hello\n"));
        drop(rx);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!send(&path, Priority::Info, "nobody listens", "id"));
    }
}
