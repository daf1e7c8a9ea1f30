//! The in-memory index of committed blobs and manifests: sizes and last use, for the size cap and
//! expiry. Rebuilt in the background after start-up from the store's files: their mtime is the
//! last use, which [`Index::touch`] asks the cache to rewrite at most once per interval per entry.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    last_used: SystemTime,
    /// Last use as recorded on disk (the file's mtime).
    persisted: SystemTime,
}

/// Sizes and last use of every committed object, keyed by path relative to the cache root.
#[derive(Debug, Default)]
pub(super) struct Index {
    entries: HashMap<PathBuf, Entry>,
    /// Invariant: the sum of `entries[*].size`.
    total: u64,
}

impl Index {
    /// Lists the committed objects under one shard directory of `root` (e.g. `blobs/sha256/ab`):
    /// path relative to `root`, size, and last use (the file's mtime).
    pub(super) fn scan_shard(root: &Path, shard: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
        let Ok(files) = std::fs::read_dir(root.join(shard)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for file in files.flatten() {
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.contains('.') {
                continue; // `.type` side files belong to their manifest
            }
            let Ok(meta) = file.metadata() else { continue };
            let last_used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((shard.join(name), meta.len(), last_used));
        }
        out
    }

    /// The shard directories of the store, relative to `root`.
    pub(super) fn shards(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for top in ["blobs/sha256", "manifests/sha256"] {
            let Ok(shards) = std::fs::read_dir(root.join(top)) else {
                continue;
            };
            out.extend(
                shards
                    .flatten()
                    .map(|shard| Path::new(top).join(shard.file_name())),
            );
        }
        out
    }

    /// Adds an entry found on disk, unless the running cache already knows it (it then knows
    /// better: it was committed or used since start).
    pub(super) fn insert_scanned(&mut self, rel: PathBuf, size: u64, last_used: SystemTime) {
        if self.entries.contains_key(&rel) {
            return;
        }
        self.entries.insert(
            rel,
            Entry {
                size,
                last_used,
                persisted: last_used,
            },
        );
        self.total += size;
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn total(&self) -> u64 {
        self.total
    }

    pub(super) fn insert(&mut self, rel: &Path, size: u64, now: SystemTime) {
        if let Some(old) = self.entries.insert(
            rel.to_path_buf(),
            Entry {
                size,
                last_used: now,
                persisted: now,
            },
        ) {
            self.total -= old.size;
        }
        self.total += size;
    }

    /// Forgets an entry whose file was removed (by a purge).
    pub(super) fn remove(&mut self, rel: &Path) {
        if let Some(old) = self.entries.remove(rel) {
            self.total -= old.size;
        }
    }

    /// Marks an entry used; adds it if it was missing (a file committed by another process).
    /// True when the caller should record the use on disk: the recorded one is `every` old or more.
    pub(super) fn touch(
        &mut self,
        rel: &Path,
        size: u64,
        now: SystemTime,
        every: std::time::Duration,
    ) -> bool {
        match self.entries.get_mut(rel) {
            Some(e) => {
                e.last_used = now;
                let stale = now
                    .duration_since(e.persisted)
                    .is_ok_and(|age| age >= every);
                if stale {
                    e.persisted = now;
                }
                stale
            }
            None => {
                self.insert(rel, size, now);
                false
            }
        }
    }

    /// The size of a committed object, if the index knows it.
    pub(super) fn size_of(&self, rel: &Path) -> Option<u64> {
        self.entries.get(rel).map(|e| e.size)
    }

    pub(super) fn over(&self, max: u64) -> bool {
        self.total > max
    }

    /// Removes from the index, and returns, the entries to delete: all unused since
    /// `inactive_before`, then least recently used ones until the total is at most `max` and at
    /// least `free` bytes are chosen. Entries in `spared` (downloads in flight, uploads not done)
    /// are never chosen.
    pub(super) fn victims(
        &mut self,
        max: u64,
        inactive_before: SystemTime,
        free: u64,
        spared: &HashSet<PathBuf>,
    ) -> Vec<PathBuf> {
        let mut candidates: Vec<(PathBuf, Entry)> = self
            .entries
            .iter()
            .filter(|(rel, _)| !spared.contains(*rel))
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        candidates.sort_by_key(|(_, e)| e.last_used);
        let mut victims = Vec::new();
        let mut total = self.total;
        let mut freed = 0u64;
        for (rel, entry) in candidates {
            if entry.last_used < inactive_before || total > max || freed < free {
                total -= entry.size;
                freed += entry.size;
                victims.push(rel);
            } else {
                break;
            }
        }
        for rel in &victims {
            if let Some(e) = self.entries.remove(rel) {
                self.total -= e.size;
            }
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn evicts_least_recently_used_first() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut index = Index::default();
        index.insert(Path::new("blobs/sha256/aa/a"), 100, t0);
        index.insert(
            Path::new("blobs/sha256/bb/b"),
            100,
            t0 + Duration::from_secs(10),
        );
        index.insert(
            Path::new("blobs/sha256/cc/c"),
            100,
            t0 + Duration::from_secs(20),
        );
        assert!(!index.touch(
            Path::new("blobs/sha256/aa/a"),
            100,
            t0 + Duration::from_secs(30),
            Duration::from_secs(60),
        ));
        assert!(index.touch(
            Path::new("blobs/sha256/aa/a"),
            100,
            t0 + Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        assert_eq!(index.total(), 300);
        let victims = index.victims(150, SystemTime::UNIX_EPOCH, 0, &HashSet::new());
        assert_eq!(
            victims,
            vec![
                PathBuf::from("blobs/sha256/bb/b"),
                PathBuf::from("blobs/sha256/cc/c")
            ]
        );
        assert_eq!(index.total(), 100);
    }

    #[test]
    fn expires_inactive_and_spares_inflight() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut index = Index::default();
        index.insert(Path::new("blobs/sha256/aa/a"), 10, t0);
        index.insert(Path::new("blobs/sha256/bb/b"), 10, t0);
        index.insert(
            Path::new("blobs/sha256/cc/c"),
            10,
            t0 + Duration::from_secs(100),
        );
        let victims = index.victims(
            1000,
            t0 + Duration::from_secs(50),
            0,
            &HashSet::from([PathBuf::from("blobs/sha256/bb/b")]),
        );
        assert_eq!(victims, vec![PathBuf::from("blobs/sha256/aa/a")]);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn frees_at_least_the_bytes_asked() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut index = Index::default();
        for (i, name) in ["aa/a", "bb/b", "cc/c"].iter().enumerate() {
            index.insert(
                &Path::new("blobs/sha256").join(name),
                100,
                t0 + Duration::from_secs(i as u64),
            );
        }
        let victims = index.victims(1000, SystemTime::UNIX_EPOCH, 150, &HashSet::new());
        assert_eq!(
            victims,
            vec![
                PathBuf::from("blobs/sha256/aa/a"),
                PathBuf::from("blobs/sha256/bb/b")
            ]
        );
        assert_eq!(index.total(), 100);
    }

    #[test]
    fn scanned_entries_never_override_live_ones() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut index = Index::default();
        index.insert(
            Path::new("blobs/sha256/aa/a"),
            100,
            t0 + Duration::from_secs(5),
        );
        index.insert_scanned(PathBuf::from("blobs/sha256/aa/a"), 100, t0);
        index.insert_scanned(PathBuf::from("blobs/sha256/bb/b"), 50, t0);
        assert_eq!((index.len(), index.total()), (2, 150));
        let victims = index.victims(100, SystemTime::UNIX_EPOCH, 0, &HashSet::new());
        assert_eq!(victims, vec![PathBuf::from("blobs/sha256/bb/b")]);
    }
}
