//! Synchronize chunks: a runtime with many pods sends the list in several requests
//! (`more: true` on all but the last); the plugin acts on the whole list once.
//! One collector lives per connection, so a list cut short by a dropped connection
//! is never mixed into the next one.

use std::sync::Mutex;

use crate::nri::proto::nri::{Container, PodSandbox};

#[derive(Default)]
pub struct SyncCollector {
    pending: Mutex<(Vec<PodSandbox>, Vec<Container>)>,
}

impl SyncCollector {
    /// Adds a chunk; returns the whole list when this was the last one.
    pub fn add(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
        more: bool,
    ) -> Option<(Vec<PodSandbox>, Vec<Container>)> {
        let mut p = self.pending.lock().unwrap();
        p.0.extend(pods);
        p.1.extend(containers);
        (!more).then(|| std::mem::take(&mut *p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_until_the_last() {
        let s = SyncCollector::default();
        assert!(s.add(vec![PodSandbox::new()], vec![], true).is_none());
        let (p, c) = s
            .add(vec![PodSandbox::new()], vec![Container::new()], false)
            .unwrap();
        assert_eq!((p.len(), c.len()), (2, 1));
        let (p, _) = s.add(vec![], vec![], false).unwrap();
        assert!(p.is_empty(), "the next list starts empty");
    }
}
