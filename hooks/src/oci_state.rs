//! The OCI runtime state a hook receives on stdin, and the one field of the
//! bundle's `config.json` the hook may need (`linux.cgroupsPath`).
//!
//! Only the fields we use are read; unknown fields are ignored, as the runtime
//! spec asks of consumers. Every parse error names what was read and what was
//! expected, so a runtime that hands us something odd is easy to diagnose.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// More than any real state document (a few KiB even with many annotations);
/// a hook must not buffer without bound whatever is piped to it.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// The runtime-spec state object (`ociVersion`, `id`, `status`, `pid`, `bundle`,
/// `annotations`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: String,
    /// Absent (or 0) once the container has stopped.
    #[serde(default)]
    pub pid: Option<u32>,
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading the OCI state from stdin: {0}")]
    Read(#[source] std::io::Error),
    #[error(
        "the OCI state on stdin is empty: expected a JSON object with ociVersion, id, status, bundle"
    )]
    Empty,
    #[error(
        "the OCI state on stdin is larger than {MAX_STATE_BYTES} bytes: expected one JSON object"
    )]
    TooLarge,
    #[error(
        "the OCI state on stdin is not valid ({0}): expected a JSON object with ociVersion, id, status, bundle (and pid, annotations)"
    )]
    Json(#[source] serde_json::Error),
    #[error("the OCI state on stdin has an empty {0:?}: expected the container's {0}")]
    Missing(&'static str),
    #[error("reading {path}: {err}")]
    Bundle { path: PathBuf, err: String },
}

impl State {
    /// Reads one state object from `input` (stdin in the hook).
    pub fn read(input: impl Read) -> Result<State, StateError> {
        let mut buf = Vec::new();
        input
            .take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(StateError::Read)?;
        if buf.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::TooLarge);
        }
        Self::parse(&buf)
    }

    pub fn parse(bytes: &[u8]) -> Result<State, StateError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(StateError::Empty);
        }
        let s: State = serde_json::from_slice(bytes).map_err(StateError::Json)?;
        if s.id.is_empty() {
            return Err(StateError::Missing("id"));
        }
        if s.status.is_empty() {
            return Err(StateError::Missing("status"));
        }
        Ok(s)
    }

    /// The container's init process, when it still runs.
    pub fn live_pid(&self) -> Option<u32> {
        self.pid.filter(|&p| p > 0)
    }

    /// `linux.cgroupsPath` from the bundle's config.json (None when the spec
    /// leaves it to the runtime).
    pub fn cgroups_path(&self) -> Result<Option<String>, StateError> {
        cgroups_path_of(&self.bundle.join("config.json"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    linux: Option<LinuxSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinuxSpec {
    #[serde(default)]
    cgroups_path: Option<String>,
}

fn cgroups_path_of(config: &Path) -> Result<Option<String>, StateError> {
    let bundle_err = |err: String| StateError::Bundle {
        path: config.to_path_buf(),
        err,
    };
    let text = std::fs::read(config).map_err(|e| bundle_err(e.to_string()))?;
    let spec: Spec = serde_json::from_slice(&text)
        .map_err(|e| bundle_err(format!("{e}: expected an OCI runtime spec")))?;
    Ok(spec
        .linux
        .and_then(|l| l.cgroups_path)
        .filter(|p| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What podman 4.3 with runc hands a createRuntime hook (trimmed).
    const PODMAN: &str = r#"{"ociVersion":"1.0.2-dev","id":"1492120fa8ee","status":"creating","pid":10116,"bundle":"/var/lib/containers/storage/overlay-containers/1492120fa8ee/userdata","annotations":{"io.container.manager":"libpod","kubernetes.io/ingress-bandwidth":"10M"}}"#;

    #[test]
    fn parses_podman_state() {
        let s = State::parse(PODMAN.as_bytes()).unwrap();
        assert_eq!(s.id, "1492120fa8ee");
        assert_eq!(s.status, "creating");
        assert_eq!(s.live_pid(), Some(10116));
        assert_eq!(s.annotations["kubernetes.io/ingress-bandwidth"], "10M");
    }

    #[test]
    fn stopped_state_has_no_pid() {
        let s = State::parse(
            br#"{"ociVersion":"1.0.2","id":"a","status":"stopped","bundle":"/b","annotations":{}}"#,
        )
        .unwrap();
        assert_eq!(s.live_pid(), None);
        let s = State::parse(
            br#"{"ociVersion":"1.0.2","id":"a","status":"stopped","pid":0,"bundle":"/b"}"#,
        )
        .unwrap();
        assert_eq!(s.live_pid(), None);
        assert!(s.annotations.is_empty());
    }

    #[test]
    fn every_truncation_is_a_clear_error() {
        // Cutting the document anywhere must give an error that says what was
        // expected, never a panic and never a half-read state.
        for cut in 0..PODMAN.len() {
            let err = State::parse(&PODMAN.as_bytes()[..cut]).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("expected"),
                "cut at {cut}: message {msg:?} does not say what was expected"
            );
        }
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        for (input, want) in [
            ("", "empty"),
            ("  \n", "empty"),
            ("[]", "not valid"),
            ("{}", "not valid"),
            (
                r#"{"ociVersion":"1","id":"","status":"creating","bundle":"/b"}"#,
                "\"id\"",
            ),
            (
                r#"{"ociVersion":"1","id":"x","status":"creating","pid":-1,"bundle":"/b"}"#,
                "not valid",
            ),
            (
                r#"{"ociVersion":"1","id":"x","status":"creating","bundle":"/b","annotations":{"k":1}}"#,
                "not valid",
            ),
        ] {
            let msg = State::parse(input.as_bytes()).unwrap_err().to_string();
            assert!(msg.contains(want), "{input:?}: {msg}");
        }
    }

    #[test]
    fn oversized_input_is_refused() {
        let big = vec![b' '; MAX_STATE_BYTES as usize + 10];
        assert!(matches!(State::read(&big[..]), Err(StateError::TooLarge)));
    }

    #[test]
    fn cgroups_path_from_bundle() {
        let dir = std::env::temp_dir().join(format!("hook-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = State {
            oci_version: "1.0.2".into(),
            id: "x".into(),
            status: "creating".into(),
            pid: None,
            bundle: dir.clone(),
            annotations: HashMap::new(),
        };
        let cfg = dir.join("config.json");
        std::fs::write(
            &cfg,
            r#"{"linux":{"cgroupsPath":"machine.slice:libpod:abc"}}"#,
        )
        .unwrap();
        assert_eq!(
            state.cgroups_path().unwrap().as_deref(),
            Some("machine.slice:libpod:abc")
        );
        std::fs::write(&cfg, r#"{"process":{}}"#).unwrap();
        assert_eq!(state.cgroups_path().unwrap(), None);
        std::fs::write(&cfg, r#"{"linux":"#).unwrap();
        let msg = state.cgroups_path().unwrap_err().to_string();
        assert!(
            msg.contains("config.json") && msg.contains("expected"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            state
                .cgroups_path()
                .unwrap_err()
                .to_string()
                .contains("config.json")
        );
    }
}
