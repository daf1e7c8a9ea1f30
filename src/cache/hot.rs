//! Small in-memory caches in front of the store for the hottest reads: manifests (served whole on
//! every pull) and repository links (checked on every hit). Both are bounded; losing an entry only
//! means one more read of the file system. Neither can serve anything the store would not: manifests
//! are content-addressed, and links are removed only by a purge, which clears them here too
//! ([`super::Cache::forget_purged`]; a `cache purge` run from the command line beside a running
//! proxy cannot, so that proxy may serve a purged manifest from memory until it drops it).

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

/// Manifest bytes held in memory at most.
const MANIFEST_BYTES: usize = 8 << 20;
/// Link entries remembered at most (a few MB).
const LINKS: usize = 100_000;

/// Recently used manifests by hex digest, oldest insertion first out.
#[derive(Debug, Default)]
pub(super) struct HotManifests {
    map: HashMap<String, (Bytes, String)>,
    order: VecDeque<String>,
    /// Invariant: the sum of the byte lengths in `map`.
    bytes: usize,
}

impl HotManifests {
    pub(super) fn get(&self, hex: &str) -> Option<(Bytes, String)> {
        self.map.get(hex).cloned()
    }

    /// Forgets a manifest (its file was evicted).
    pub(super) fn remove(&mut self, hex: &str) {
        if let Some((bytes, _)) = self.map.remove(hex) {
            self.bytes -= bytes.len();
            self.order.retain(|h| h != hex);
        }
    }

    pub(super) fn insert(&mut self, hex: &str, bytes: Bytes, media_type: String) {
        if bytes.len() > MANIFEST_BYTES / 16 || self.map.contains_key(hex) {
            return;
        }
        self.bytes += bytes.len();
        self.map.insert(hex.to_owned(), (bytes, media_type));
        self.order.push_back(hex.to_owned());
        while self.bytes > MANIFEST_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((b, _)) = self.map.remove(&oldest) {
                self.bytes -= b.len();
            }
        }
    }
}

/// Link paths known to exist.
#[derive(Debug, Default)]
pub(super) struct KnownLinks {
    set: HashSet<String>,
}

impl KnownLinks {
    pub(super) fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    /// Forgets every link (a purge removed some).
    pub(super) fn clear(&mut self) {
        self.set.clear();
    }

    pub(super) fn insert(&mut self, key: String) {
        if self.set.len() >= LINKS {
            // Start over rather than track recency: every entry can be re-learned from disk.
            self.set.clear();
        }
        self.set.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_stay_under_their_budget() {
        let mut hot = HotManifests::default();
        let big = Bytes::from(vec![0u8; MANIFEST_BYTES / 16]);
        for i in 0..40 {
            hot.insert(&format!("{i:064x}"), big.clone(), "t".into());
        }
        assert!(hot.bytes <= MANIFEST_BYTES);
        assert!(hot.get(&format!("{:064x}", 39)).is_some(), "newest kept");
        assert!(hot.get(&format!("{:064x}", 0)).is_none(), "oldest dropped");
        hot.insert("huge", Bytes::from(vec![0u8; MANIFEST_BYTES]), "t".into());
        assert!(hot.get("huge").is_none(), "too large to hold");
    }

    #[test]
    fn links_are_bounded() {
        let mut links = KnownLinks::default();
        for i in 0..(LINKS + 10) {
            links.insert(i.to_string());
        }
        assert!(links.set.len() <= LINKS);
        assert!(links.contains(&(LINKS + 9).to_string()));
    }
}
