//! Notices published as Kubernetes Events on the pod (events.k8s.io/v1, shown by
//! `kubectl describe pod` and `kubectl get events`). Handlers only queue them; one
//! task publishes, so a slow or failing API never delays an answer to the runtime.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::notices::{Notice, NoticeSink, Severity};

/// Notices waiting to be published; past this many they are dropped (and logged).
const QUEUE: usize = 1024;
/// events.k8s.io caps a note at 1 KiB.
const NOTE_MAX: usize = 1000;

pub struct EventSink {
    tx: mpsc::Sender<Notice>,
}

impl NoticeSink for EventSink {
    fn notice(&self, n: Notice) {
        if let Err(e) = self.tx.try_send(n) {
            log::warn!("event not published (queue full or closed): {e}");
        }
    }
}

fn reference(n: &Notice) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(n.pod.clone()),
        namespace: Some(n.namespace.clone()),
        uid: Some(n.uid.clone()),
        ..ObjectReference::default()
    }
}

fn event(n: &Notice) -> Event {
    let mut note = n.message.clone();
    if note.len() > NOTE_MAX {
        let mut cut = NOTE_MAX;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    Event {
        type_: match n.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: n.reason.into(),
        note: Some(note),
        action: "Limit".into(),
        secondary: None,
    }
}

/// Starts the publishing task; the sink goes to the plugin.
pub fn start(client: Client, node: &str) -> Arc<EventSink> {
    let (tx, mut rx) = mpsc::channel::<Notice>(QUEUE);
    let reporter = Reporter {
        controller: "nri-bandwidth".into(),
        // The API caps reportingInstance at 128 characters; node names may be longer.
        instance: Some(node.chars().take(128).collect()),
    };
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            if n.uid.is_empty() || n.pod.is_empty() {
                continue;
            }
            // A recorder folds events of the same pod, type and reason into one
            // series and keeps the first note; the plugin already drops repeats,
            // so each notice gets a recorder (and an Event) of its own.
            let recorder = Recorder::new(client.clone(), reporter.clone());
            if let Err(e) = recorder.publish(&event(&n), &reference(&n)).await {
                log::warn!(
                    "publishing event {} on pod {}/{}: {e}",
                    n.reason,
                    n.namespace,
                    n.pod
                );
            }
        }
    });
    Arc::new(EventSink { tx })
}
