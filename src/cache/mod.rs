//! The cache: blobs, manifests, links and tag records behind one object key (`key.rs`) and a store
//! interface (`store/`), and the whole miss of a blob (`fill/`: [`Cache::get_or_fill`]).
//!
//! Layout under the cache root (the disk store; see `key.rs` for what each object means):
//! - `blobs/sha256/ab/<hex>`: blob bytes, committed only after their sha256 matched;
//! - `manifests/sha256/ab/<hex>` (+ `.type`): manifest bytes exactly as upstream sent them, and
//!   their media type;
//! - `repos/<registry>/<repository>/_blobs/<hex>`, `_manifests/<hex>`: links recording that a
//!   repository is known to hold a digest (a blob is served for a repository only once linked);
//! - `repos/<registry>/<repository>/_tags/<tag>/<accept-hash>.json`: a tag's digest per Accept set;
//! - `repos/<registry>/<repository>/_public`: upstream served the repository anonymously;
//! - `tmp/`: downloads in flight, removed at start-up by the first process to open the store;
//! - `.registry-proxy-cache`: the marker that says this directory is a cache (`cache verify`, `ls`
//!   and `purge` refuse a directory without it or the layout above), and the lock every process
//!   using the store holds shared, so that a second one (`warm --cache-dir` beside a running proxy)
//!   leaves the first one's downloads in `tmp/` alone.
//!
//! Every file appears by rename from `tmp/`, so a crash never leaves a partial file visible.
//! Files are mode 0600 and directories 0700 whatever the umask (`private.rs`).
//!
//! Space: the index (`index.rs`) knows every committed object's size and last use; the store is
//! kept under `CACHE_MAX_SIZE` (least recently used first; only downloads in flight can exceed it)
//! and at least `CACHE_MIN_FREE` is kept free on the file system (a fill that cannot fit even after
//! eviction is refused, and the blob streams uncached). Last use survives restarts as the file's
//! mtime, written at most once per [`TOUCH_PERSIST_EVERY`] per entry; the index is rebuilt from
//! the files by a background thread at start-up (`space.rs`), so start-up time does not grow
//! with the number of cached objects.
//!
//! A disk that fails under a download (full, I/O error) does not fail its clients: the rest of the
//! blob streams to them through a bounded in-memory tail and nothing is committed (`fill/`).

mod bucket;
pub mod bucket_ops;
pub mod catalog;
mod chunks;
mod fill;
pub mod gc;
mod hot;
mod index;
pub mod key;
mod marker;
mod private;
pub mod purge;
mod space;
pub mod store;
mod usage;
mod verify;

pub use catalog::{Catalog, list};
pub use fill::{Fill, FillEnd, FillSource, FillState, Got, Growing, Opened, StoredBlob};
pub use key::{LinkKind, ObjectKey};
pub use marker::{MARKER, check_cache_dir};
pub use purge::{PurgeReport, PurgeRequest, PurgeTarget, purge};
pub use store::{DiskStore, Store, StoreError};
pub use usage::{RepoSize, USAGE_EVERY};
pub use verify::{VerifyReport, verify};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::registry::digest::Digest;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;
use space::Space;
use store::Object;

/// Store errors (all internal: a client never caused them).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A directory given as the cache holds neither the marker nor the store's layout (a mistyped
    /// `--cache-dir`).
    #[error(
        "{path} is not a registry-proxy cache (no {MARKER} marker and no blobs/, manifests/, repos/ layout); check --cache-dir or CACHE_DIR"
    )]
    NotACache { path: PathBuf },
    /// `cache purge` was asked for something the cache does not hold, or for nothing at all.
    #[error("{0}")]
    Purge(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How often at most a hit rewrites an entry's mtime (its persisted last use).
pub const TOUCH_PERSIST_EVERY: Duration = Duration::from_secs(60);

/// Limits the store keeps to.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_size: u64,
    pub inactive: Duration,
    pub min_free: u64,
}

/// A tag's resolution, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    /// Seconds since the epoch when upstream last confirmed this digest.
    pub checked_at: u64,
}

/// The on-disk cache. One per proxy.
pub struct Cache {
    root: PathBuf,
    /// The local disk: every object, and the temp files of downloads in flight.
    disk: Arc<DiskStore>,
    /// Index, downloads in flight and eviction (shared with the start-up scan).
    space: Arc<Space>,
    /// Minimum age of a persisted last use before a hit rewrites it.
    touch_every: Duration,
    /// Test hook: fills behave as if the disk were full after this many bytes.
    disk_limit: Option<u64>,
    /// Repository links known to exist.
    known_links: Mutex<hot::KnownLinks>,
    /// The object-store tier behind the local disk (`STORAGE=s3://…`), if any.
    bucket: Option<Arc<bucket::Bucket>>,
    /// What the bucket's collector removed; the collector runs while this lives.
    collected: Arc<gc::Collected>,
    /// The marker file, locked shared for as long as the store is open (see `marker.rs`).
    _lock: std::fs::File,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Opens (creating if needed) the store at `root`, removes leftovers of interrupted downloads
    /// and starts loading the index in the background (see [`Cache::wait_loaded`]).
    pub fn open(root: &Path, limits: Limits) -> Result<Cache, CacheError> {
        for dir in ["blobs/sha256", "manifests/sha256", "repos", "tmp"] {
            let path = root.join(dir);
            private::create_dir_all(&path).map_err(io_err(&path))?;
        }
        // The store's own top directories, also when an older version made them with the umask's
        // mode (the files below are then out of reach of other users too).
        for dir in [
            "blobs",
            "blobs/sha256",
            "manifests",
            "manifests/sha256",
            "repos",
            "tmp",
        ] {
            let path = root.join(dir);
            if let Err(e) = private::restrict_dir(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot make a cache directory private (mode 0700)");
            }
        }
        let tmp = root.join("tmp");
        // Leftovers are removed only when no other process has the store open: the temp files of
        // a running proxy are its downloads in flight.
        let (lock, alone) = marker::open_and_lock(root)?;
        if alone {
            let mut removed = 0usize;
            for entry in std::fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
                if std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
            if removed > 0 {
                tracing::info!(removed, "removed leftovers of interrupted downloads");
            }
        } else {
            tracing::info!(
                "another process has this cache open; leaving its downloads in tmp/ alone"
            );
        }
        let space = Arc::new(Space::new(root, limits));
        space.load_in_background();
        Ok(Cache {
            root: root.to_path_buf(),
            disk: Arc::new(DiskStore::new(root)),
            space,
            touch_every: TOUCH_PERSIST_EVERY,
            disk_limit: None,
            known_links: Mutex::new(hot::KnownLinks::default()),
            bucket: None,
            collected: Arc::default(),
            _lock: lock,
        })
    }

    /// Puts an object store behind the local disk (see `bucket.rs`) and starts its uploader, which
    /// runs as long as this cache. Call from within the runtime.
    pub fn with_bucket(mut self, store: Arc<dyn store::SharedStore>) -> Cache {
        let bucket = bucket::Bucket::new(store);
        tokio::spawn(bucket::run_uploads(
            Arc::downgrade(&bucket),
            self.disk.clone(),
            self.space.clone(),
        ));
        self.bucket = Some(bucket);
        self
    }

    /// Starts the bucket's collector (`gc/`: `S3_MAX_SIZE`, `CACHE_INACTIVE` on the bucket), which
    /// runs as long as this cache. Without a bucket, does nothing. Call from within the runtime.
    pub fn with_collector(self, settings: gc::GcSettings) -> Cache {
        if let Some(bucket) = &self.bucket {
            tokio::spawn(gc::run(
                bucket.shared.clone(),
                settings,
                Arc::downgrade(&self.collected),
            ));
        }
        self
    }

    /// Blobs and manifests this process's collector removed from the bucket, and their bytes.
    pub fn bucket_collected(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.collected.objects.load(Relaxed),
            self.collected.bytes.load(Relaxed),
        )
    }

    /// The shared bucket behind the local disk, if there is one (for `cache purge` and `ls`).
    pub fn bucket_store(&self) -> Option<Arc<dyn store::SharedStore>> {
        self.bucket.as_ref().map(|b| b.shared.clone())
    }

    /// Objects waiting for their upload to the object store (0 without one).
    pub fn pending_uploads(&self) -> usize {
        self.bucket.as_ref().map_or(0, |b| b.pending())
    }

    /// Queues a local object for the object store, if there is one.
    fn upload(&self, key: ObjectKey) {
        if let Some(bucket) = &self.bucket {
            bucket.enqueue(&self.space, key);
        }
    }

    #[cfg(test)]
    fn with_touch_every(mut self, every: Duration) -> Cache {
        self.touch_every = every;
        self
    }

    #[cfg(test)]
    fn with_disk_limit(mut self, limit: u64) -> Cache {
        self.disk_limit = Some(limit);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Blocks until the index holds every object found on disk at start-up.
    pub fn wait_loaded(&self) {
        self.space.wait_loaded();
    }

    /// Total bytes of committed blobs and manifests.
    pub fn size(&self) -> u64 {
        lock(&self.space.index).total()
    }

    /// Number of committed blobs and manifests.
    pub fn entries(&self) -> usize {
        lock(&self.space.index).len()
    }

    /// Bytes available to us on the cache's file system (`None` if it cannot be asked).
    pub fn free_space(&self) -> Option<u64> {
        self.space.free_space()
    }

    /// The committed local file of blob `digest`, opened for reading, if it is there and holds
    /// `len` bytes (committed files appear whole, by rename, so this is the blob). `None`: not on
    /// the local disk (the bucket tier, a copy still in flight, evicted meanwhile).
    pub fn open_local_blob(&self, digest: &Digest, len: u64) -> Option<std::fs::File> {
        let file = std::fs::File::open(self.disk.path(&ObjectKey::blob(digest))).ok()?;
        let meta = file.metadata().ok()?;
        (meta.is_file() && meta.len() == len).then_some(file)
    }

    /// True if `repo` of `registry` is known to hold `digest`.
    pub async fn is_linked(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) -> bool {
        let key = ObjectKey::link(registry, repo, kind, digest);
        if lock(&self.known_links).contains(&key.path()) {
            return true;
        }
        if self.disk.exists(&key) {
            lock(&self.known_links).insert(key.path());
            return true;
        }
        // Another replica may have seen it: keep a local copy of its link.
        let Some(bucket) = &self.bucket else {
            return false;
        };
        if bucket.len(&key).await.is_none() {
            return false;
        }
        if let Err(e) = self.disk.put(&key, Object::default()).await {
            tracing::warn!(error = %e, "cannot copy a link from the object store");
        }
        lock(&self.known_links).insert(key.path());
        true
    }

    /// Records that `repo` of `registry` holds `digest`.
    pub async fn link(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) {
        let key = ObjectKey::link(registry, repo, kind, digest);
        if lock(&self.known_links).contains(&key.path()) || self.disk.exists(&key) {
            lock(&self.known_links).insert(key.path());
            return;
        }
        match self.disk.put(&key, Object::default()).await {
            Ok(()) => {
                lock(&self.known_links).insert(key.path());
                self.upload(key);
            }
            Err(e) => tracing::warn!(error = %e, "cannot record link"),
        }
    }

    /// Records whether upstream serves `repo` anonymously (`verify` mode), so that after a restart
    /// with upstream down a public repository is still served stale. Blocking (a tiny file).
    pub fn set_public(&self, registry: &RegistryHost, repo: &RepoName, public: bool) {
        let key = ObjectKey::public(registry, repo);
        let result = match (public, self.disk.exists(&key)) {
            (true, false) => self.disk.put_blocking(&key, b""),
            (false, true) => self.disk.delete_blocking(&key),
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record public repository");
        }
    }

    /// True if upstream was last seen serving `repo` anonymously (see [`Cache::set_public`]).
    pub fn was_public(&self, registry: &RegistryHost, repo: &RepoName) -> bool {
        self.disk.exists(&ObjectKey::public(registry, repo))
    }

    /// A committed manifest and its media type.
    pub async fn manifest(&self, digest: &Digest) -> Option<(Bytes, String)> {
        if !digest.is_sha256() {
            return None;
        }
        let key = ObjectKey::manifest(digest);
        if let Some((bytes, media_type)) = lock(&self.space.hot_manifests).get(digest.encoded()) {
            self.touch(&key, bytes.len() as u64);
            return Some((bytes, media_type));
        }
        let object = match self.disk.get(&key).await {
            Ok(Some(object)) => object,
            Ok(None) => return self.manifest_from_bucket(digest).await,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read a cached manifest");
                return None;
            }
        };
        let (bytes, media_type) = (object.bytes, object.media_type?);
        self.touch(&key, bytes.len() as u64);
        lock(&self.space.hot_manifests).insert(digest.encoded(), bytes.clone(), media_type.clone());
        Some((bytes, media_type))
    }

    /// A manifest the object store holds, copied to the local disk.
    async fn manifest_from_bucket(&self, digest: &Digest) -> Option<(Bytes, String)> {
        let object = self
            .bucket
            .as_ref()?
            .get(&ObjectKey::manifest(digest))
            .await?;
        let media_type = object.media_type?;
        if Digest::sha256_of(&object.bytes) != *digest {
            tracing::warn!(%digest, "the object store holds a manifest that does not match its digest");
            return None;
        }
        if let Err(e) = self.keep_manifest(digest, &object.bytes, &media_type).await {
            tracing::warn!(error = %e, "cannot copy a manifest from the object store");
        }
        Some((object.bytes, media_type))
    }

    /// Stores a manifest (caller verified its digest) with its media type.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        bytes: &Bytes,
        media_type: &str,
    ) -> Result<(), StoreError> {
        self.keep_manifest(digest, bytes, media_type).await?;
        self.upload(ObjectKey::manifest(digest));
        Ok(())
    }

    /// Stores a manifest on the local disk.
    async fn keep_manifest(
        &self,
        digest: &Digest,
        bytes: &Bytes,
        media_type: &str,
    ) -> Result<(), StoreError> {
        let key = ObjectKey::manifest(digest);
        let object = Object {
            bytes: bytes.clone(),
            media_type: Some(media_type.to_owned()),
        };
        self.disk.put(&key, object).await?;
        self.space.add(&key, bytes.len() as u64);
        lock(&self.space.hot_manifests).insert(
            digest.encoded(),
            bytes.clone(),
            media_type.to_owned(),
        );
        Ok(())
    }

    /// A tag's stored resolution for an Accept set.
    pub async fn tag(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        tag: &str,
        accept_key: &str,
    ) -> Option<TagRecord> {
        let key = ObjectKey::tag(registry, repo, tag, accept_key);
        let object = match self.disk.get(&key).await.ok()? {
            Some(object) => object,
            None => {
                // Another replica may have resolved it: keep a local copy.
                let object = self.bucket.as_ref()?.get(&key).await?;
                if let Err(e) = self.disk.put(&key, object.clone()).await {
                    tracing::warn!(error = %e, "cannot copy a tag record from the object store");
                }
                object
            }
        };
        serde_json::from_slice(&object.bytes).ok()
    }

    /// Stores a tag's resolution for an Accept set.
    pub async fn put_tag(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        tag: &str,
        accept_key: &str,
        record: &TagRecord,
    ) -> Result<(), StoreError> {
        let key = ObjectKey::tag(registry, repo, tag, accept_key);
        let bytes = serde_json::to_vec(record)
            .map_err(|e| StoreError::io(self.disk.name(), &key)(io::Error::other(e)))?;
        let object = Object {
            bytes: bytes.into(),
            media_type: None,
        };
        self.disk.put(&key, object).await?;
        self.upload(key);
        Ok(())
    }

    /// Marks an entry used; every [`TOUCH_PERSIST_EVERY`] at most, also on disk (its mtime), so
    /// the order survives a restart.
    fn touch(&self, key: &ObjectKey, len: u64) {
        let now = SystemTime::now();
        let persist =
            lock(&self.space.index).touch(Path::new(&key.path()), len, now, self.touch_every);
        if let Some(bucket) = &self.bucket {
            bucket.record_use(key);
        }
        if persist && let Err(e) = self.disk.set_modified(key, now) {
            tracing::debug!(key = %key, error = %e, "cannot record last use");
        }
    }

    /// Forgets what a purge removed from the store: index entries, manifests held in memory and
    /// known links (re-learned from the files on the next request).
    pub fn forget_purged(&self, report: &PurgeReport) {
        {
            let mut index = lock(&self.space.index);
            for object in &report.removed_objects {
                index.remove(&object.rel_path());
            }
        }
        {
            let mut hot = lock(&self.space.hot_manifests);
            for object in &report.removed_objects {
                if object.kind == catalog::ObjectKind::Manifest
                    && let Some(hex) = object.digest.strip_prefix("sha256:")
                {
                    hot.remove(hex);
                }
            }
        }
        if report.removed_links > 0 {
            lock(&self.known_links).clear();
        }
    }

    /// Removes entries unused for longer than `CACHE_INACTIVE`, then least recently used entries
    /// until the store is under its cap and `CACHE_MIN_FREE` is free on the file system.
    pub fn evict(&self) {
        self.evict_bytes(self.space.free_shortfall());
    }

    /// Like [`Cache::evict`], also freeing at least `free` bytes.
    fn evict_bytes(&self, free: u64) {
        self.space.evict_bytes(free);
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
