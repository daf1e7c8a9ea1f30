//! Space accounting shared by the cache and its start-up scan: the index, the downloads in flight,
//! `CACHE_MAX_SIZE`, `CACHE_INACTIVE` and `CACHE_MIN_FREE`, and eviction.
//!
//! The index is loaded by a background thread so that start-up does not depend on the number of
//! cached objects (serving never needs the index: lookups go to the file system). Until the scan
//! is done nothing is evicted (the order would be wrong), and a fill that needs eviction to fit
//! waits for it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::fill::Fill;
use super::index::Index;
use super::key::ObjectKey;
use super::{Limits, lock};

pub(super) struct Space {
    pub(super) root: PathBuf,
    pub(super) limits: Limits,
    pub(super) index: Mutex<Index>,
    /// Downloads in flight. Invariant: a blob is here from the moment its download is decided
    /// until it is committed or failed; the temp file exists all that time.
    pub(super) inflight: Mutex<HashMap<ObjectKey, Arc<Fill>>>,
    /// Objects eviction must spare besides those in flight: their upload to the object store has
    /// not completed (`bucket.rs`).
    pinned: Mutex<HashSet<PathBuf>>,
    /// True once the start-up scan has merged every file into the index.
    loaded: Mutex<bool>,
    loaded_cv: Condvar,
    /// Recently served manifests, in memory; eviction drops them with their files.
    pub(super) hot_manifests: Mutex<super::hot::HotManifests>,
    /// Entries and bytes evicted since start (for metrics).
    pub(super) evicted: AtomicU64,
    pub(super) evicted_bytes: AtomicU64,
    /// The last walk of `repos/` for the status page (`usage.rs`).
    pub(super) usage: Mutex<super::usage::UsageMemo>,
}

impl Space {
    pub(super) fn new(root: &Path, limits: Limits) -> Space {
        Space {
            root: root.to_path_buf(),
            limits,
            index: Mutex::new(Index::default()),
            inflight: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashSet::new()),
            loaded: Mutex::new(false),
            loaded_cv: Condvar::new(),
            hot_manifests: Mutex::new(super::hot::HotManifests::default()),
            evicted: AtomicU64::new(0),
            evicted_bytes: AtomicU64::new(0),
            usage: Mutex::new(None),
        }
    }

    /// Scans the store on a thread of its own, merges what it finds into the index, then evicts
    /// what the limits call for.
    pub(super) fn load_in_background(self: &Arc<Self>) {
        let space = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cache-index".into())
            .spawn(move || space.load());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the index scan thread; scanning now");
            self.load();
        }
    }

    fn load(&self) {
        let started = Instant::now();
        for shard in Index::shards(&self.root) {
            let found = Index::scan_shard(&self.root, &shard);
            let mut index = lock(&self.index);
            for (rel, size, last_used) in found {
                index.insert_scanned(rel, size, last_used);
            }
        }
        let (entries, bytes) = {
            let index = lock(&self.index);
            (index.len(), index.total())
        };
        *lock(&self.loaded) = true;
        self.loaded_cv.notify_all();
        tracing::info!(
            entries,
            bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "cache index loaded"
        );
        self.evict_bytes(self.free_shortfall());
    }

    pub(super) fn is_loaded(&self) -> bool {
        *lock(&self.loaded)
    }

    /// Blocks until the start-up scan is done.
    pub(super) fn wait_loaded(&self) {
        let mut loaded = lock(&self.loaded);
        while !*loaded {
            loaded = self
                .loaded_cv
                .wait(loaded)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Bytes available to us on the cache's file system (`None` if it cannot be asked).
    pub(super) fn free_space(&self) -> Option<u64> {
        match rustix::fs::statvfs(&self.root) {
            Ok(st) => Some(st.f_bavail.saturating_mul(st.f_frsize)),
            Err(e) => {
                tracing::warn!(root = %self.root.display(), error = %e, "cannot read free space");
                None
            }
        }
    }

    /// Bytes missing to `CACHE_MIN_FREE` on the file system right now.
    pub(super) fn free_shortfall(&self) -> u64 {
        if self.limits.min_free == 0 {
            return 0;
        }
        self.free_space()
            .map_or(0, |free| self.limits.min_free.saturating_sub(free))
    }

    /// Decides whether a blob of `len` bytes (`None`: unknown) may be cached: it must fit under
    /// `CACHE_MAX_SIZE`, and under `CACHE_MIN_FREE` after evicting least recently used entries
    /// (downloads in flight count for what they still have to write). `Err` says why not; the
    /// blob then streams uncached. Blocking (it may wait for the index and evict).
    pub(super) fn admit(&self, len: Option<u64>) -> Result<(), String> {
        let want = len.unwrap_or(0);
        if want > self.limits.max_size {
            return Err(format!(
                "blob of {want} bytes is larger than CACHE_MAX_SIZE ({})",
                self.limits.max_size
            ));
        }
        if self.limits.min_free == 0 {
            return Ok(());
        }
        let reserved: u64 = lock(&self.inflight)
            .values()
            .map(|f| f.remaining_on_disk())
            .sum();
        let need = want
            .saturating_add(reserved)
            .saturating_add(self.limits.min_free);
        let Some(free) = self.free_space() else {
            return Ok(());
        };
        if free >= need {
            return Ok(());
        }
        let shortfall = need - free;
        // Eviction needs the whole index.
        self.wait_loaded();
        let evictable = lock(&self.index).total();
        if shortfall > evictable {
            return Err(format!(
                "{want} bytes do not fit: {free} bytes free, CACHE_MIN_FREE {}, {reserved} bytes reserved by downloads in flight, {evictable} bytes evictable",
                self.limits.min_free
            ));
        }
        self.evict_bytes(shortfall);
        match self.free_space() {
            Some(free) if free < need => Err(format!(
                "{want} bytes do not fit: {free} bytes free after eviction, CACHE_MIN_FREE {}",
                self.limits.min_free
            )),
            _ => Ok(()),
        }
    }

    /// Spares `key` from eviction until [`Space::unpin`].
    pub(super) fn pin(&self, key: &ObjectKey) {
        lock(&self.pinned).insert(PathBuf::from(key.path()));
    }

    pub(super) fn unpin(&self, key: &ObjectKey) {
        lock(&self.pinned).remove(Path::new(&key.path()));
    }

    /// Adds a committed object to the index, evicting what the limits then call for.
    pub(super) fn add(&self, key: &ObjectKey, len: u64) {
        let over = {
            let mut index = lock(&self.index);
            index.insert(Path::new(&key.path()), len, SystemTime::now());
            index.over(self.limits.max_size)
        };
        if over || self.free_shortfall() > 0 {
            self.evict_bytes(self.free_shortfall());
        }
    }

    /// Removes entries unused for longer than `CACHE_INACTIVE`, then least recently used ones
    /// until the store is under its cap and at least `free` bytes are removed. Does nothing before
    /// the start-up scan is done.
    pub(super) fn evict_bytes(&self, free: u64) {
        if !self.is_loaded() {
            return;
        }
        let now = SystemTime::now();
        // Downloads in flight and uploads not done are never chosen.
        let mut spared: HashSet<PathBuf> = lock(&self.inflight)
            .keys()
            .map(|key| PathBuf::from(key.path()))
            .collect();
        spared.extend(lock(&self.pinned).iter().cloned());
        let (victims, size, freed) = {
            let mut index = lock(&self.index);
            let before = index.total();
            let victims = index.victims(
                self.limits.max_size,
                now.checked_sub(self.limits.inactive).unwrap_or(UNIX_EPOCH),
                free,
                &spared,
            );
            (victims, index.total(), before.saturating_sub(index.total()))
        };
        self.evicted
            .fetch_add(victims.len() as u64, Ordering::Relaxed);
        self.evicted_bytes.fetch_add(freed, Ordering::Relaxed);
        for rel in &victims {
            let path = self.root.join(rel);
            let _ = std::fs::remove_file(&path);
            if rel.starts_with("manifests") {
                let _ = std::fs::remove_file(path.with_extension("type"));
                if let Some(hex) = rel.file_name().and_then(|n| n.to_str()) {
                    lock(&self.hot_manifests).remove(hex);
                }
            }
        }
        if !victims.is_empty() {
            tracing::info!(evicted = victims.len(), size, "cache eviction");
        }
    }
}
