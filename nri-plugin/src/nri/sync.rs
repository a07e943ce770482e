//! Synchronize chunks: a runtime with many pods sends the list in several requests
//! (`more: true` on all but the last); the plugin acts on the whole list once.
//! One collector lives per connection, so a list cut short by a dropped connection
//! is never mixed into the next one.

use std::sync::Mutex;

use protobuf::Message;

use crate::nri::proto::nri::{Container, PodSandbox};

/// The most a list may hold, in encoded bytes: far beyond any node's pods, and a
/// bound on what a runtime that never sends the last chunk can make us keep.
pub const MAX_SYNC_BYTES: u64 = 64 << 20;

#[derive(Default)]
pub struct SyncCollector {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    pods: Vec<PodSandbox>,
    containers: Vec<Container>,
    bytes: u64,
}

pub type SyncList = (Vec<PodSandbox>, Vec<Container>);

impl SyncCollector {
    /// Adds a chunk; returns the whole list when this was the last one. A list
    /// that grows past [`MAX_SYNC_BYTES`] is dropped whole (its memory returned)
    /// and the error says so.
    pub fn add(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
        more: bool,
    ) -> Result<Option<SyncList>, String> {
        let mut p = self.pending.lock().unwrap();
        p.bytes += pods.iter().map(|x| x.compute_size()).sum::<u64>()
            + containers.iter().map(|x| x.compute_size()).sum::<u64>();
        if p.bytes > MAX_SYNC_BYTES {
            let (n, bytes) = (p.pods.len() + pods.len(), p.bytes);
            *p = Pending::default();
            return Err(format!(
                "the Synchronize list grew past {} MiB ({bytes} bytes, {n} pods so far); dropped it",
                MAX_SYNC_BYTES >> 20
            ));
        }
        p.pods.extend(pods);
        p.containers.extend(containers);
        if more {
            return Ok(None);
        }
        let done = std::mem::take(&mut *p);
        Ok(Some((done.pods, done.containers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_until_the_last() {
        let s = SyncCollector::default();
        assert!(
            s.add(vec![PodSandbox::new()], vec![], true)
                .unwrap()
                .is_none()
        );
        let (p, c) = s
            .add(vec![PodSandbox::new()], vec![Container::new()], false)
            .unwrap()
            .unwrap();
        assert_eq!((p.len(), c.len()), (2, 1));
        let (p, _) = s.add(vec![], vec![], false).unwrap().unwrap();
        assert!(p.is_empty(), "the next list starts empty");
    }

    #[test]
    fn an_endless_list_is_dropped_at_the_bound() {
        let s = SyncCollector::default();
        let mut big = PodSandbox::new();
        big.name = "x".repeat(1 << 20);
        let mut err = None;
        for _ in 0..(MAX_SYNC_BYTES >> 20) + 2 {
            if let Err(e) = s.add(vec![big.clone()], vec![], true) {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("the bound was never hit");
        assert!(e.contains("64 MiB"), "{e}");
        let (p, _) = s.add(vec![], vec![], false).unwrap().unwrap();
        assert!(p.is_empty(), "nothing of the dropped list is kept");
    }
}
