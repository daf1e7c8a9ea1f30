//! The content store on local disk.
//!
//! Layout under the cache root:
//! - `blobs/sha256/ab/<hex>`: blob bytes, committed only after their sha256 matched;
//! - `manifests/sha256/ab/<hex>` (+ `.type`): manifest bytes exactly as upstream sent them, and
//!   their media type;
//! - `repos/<registry>/<repository>/_blobs/<hex>`, `_manifests/<hex>`: links recording that a
//!   repository is known to hold a digest (a blob is served for a repository only once linked);
//! - `repos/<registry>/<repository>/_tags/<tag>/<accept-hash>.json`: a tag's digest per Accept set;
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
//! blob streams to them through a bounded in-memory tail and nothing is committed (`fill.rs`).

/// Upstream bytes gathered into one write to the temp file, at most (when already received).
const COALESCE: usize = 256 * 1024;

pub mod catalog;
mod chunks;
mod fill;
mod hot;
mod index;
mod marker;
mod private;
pub mod purge;
mod space;
mod usage;
mod verify;

pub use catalog::{Catalog, list};
pub use fill::{Fill, FillEnd, FillState};
pub use marker::{MARKER, check_cache_dir};
pub use purge::{PurgeReport, PurgeRequest, PurgeTarget, purge};
pub use usage::{RepoSize, USAGE_EVERY};
pub use verify::{VerifyReport, verify};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::Stream;
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::registry::digest::Digest;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;
use space::Space;

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

/// The outcome of asking to download a blob.
pub enum FillSlot {
    /// Nobody is downloading it: the caller must run the download ([`Cache::run_fill`]).
    Leader(Arc<Fill>, std::fs::File),
    /// Someone is: read from their fill.
    Follower(Arc<Fill>),
}

/// The on-disk cache. One per proxy.
pub struct Cache {
    root: PathBuf,
    limits: Limits,
    /// Index, downloads in flight and eviction (shared with the start-up scan).
    space: Arc<Space>,
    tmp_counter: AtomicU64,
    /// Names this instance's temp files apart from those of any other process or instance using
    /// the store (two containers sharing the volume may both be PID 1).
    tmp_prefix: String,
    /// Minimum age of a persisted last use before a hit rewrites it.
    touch_every: Duration,
    /// Test hook: fills behave as if the disk were full after this many bytes.
    disk_limit: Option<u64>,
    /// Repository links known to exist.
    known_links: Mutex<hot::KnownLinks>,
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
        let space = Arc::new(Space::new(root, limits.clone()));
        space.load_in_background();
        Ok(Cache {
            root: root.to_path_buf(),
            limits,
            space,
            tmp_counter: AtomicU64::new(0),
            tmp_prefix: tmp_prefix(),
            touch_every: TOUCH_PERSIST_EVERY,
            disk_limit: None,
            known_links: Mutex::new(hot::KnownLinks::default()),
            _lock: lock,
        })
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

    fn blob_rel(digest: &Digest) -> PathBuf {
        let hex = digest.encoded();
        PathBuf::from(format!("blobs/sha256/{}/{hex}", &hex[..2.min(hex.len())]))
    }

    fn manifest_rel(digest: &Digest) -> PathBuf {
        let hex = digest.encoded();
        PathBuf::from(format!(
            "manifests/sha256/{}/{hex}",
            &hex[..2.min(hex.len())]
        ))
    }

    fn repo_dir(&self, registry: &RegistryHost, repo: &RepoName) -> PathBuf {
        // Both parts are validated (no `..`, no `/` in the host, lower-case name grammar).
        self.root
            .join("repos")
            .join(registry.to_string())
            .join(repo.as_str())
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}", self.tmp_prefix))
    }

    /// Length of a committed blob, marking it used.
    pub fn blob_len(&self, digest: &Digest) -> Option<u64> {
        if !digest.is_sha256() {
            return None;
        }
        let rel = Cache::blob_rel(digest);
        let len = std::fs::metadata(self.root.join(&rel))
            .ok()
            .map(|m| m.len())?;
        self.touch(&rel, len);
        Some(len)
    }

    /// Streams `start..=end` of a committed blob.
    pub fn blob_stream(
        &self,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + use<> {
        let path = self.root.join(Cache::blob_rel(digest));
        file_stream(path, start, end)
    }

    /// True if `repo` of `registry` is known to hold `digest`.
    pub fn is_linked(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) -> bool {
        let path = self
            .repo_dir(registry, repo)
            .join(kind.dir())
            .join(digest.encoded());
        let key = path.to_string_lossy().into_owned();
        if lock(&self.known_links).contains(&key) {
            return true;
        }
        let exists = path.exists();
        if exists {
            lock(&self.known_links).insert(key);
        }
        exists
    }

    /// Records that `repo` of `registry` holds `digest`.
    pub fn link(&self, registry: &RegistryHost, repo: &RepoName, kind: LinkKind, digest: &Digest) {
        let dir = self.repo_dir(registry, repo).join(kind.dir());
        let path = dir.join(digest.encoded());
        let key = path.to_string_lossy().into_owned();
        if lock(&self.known_links).contains(&key) || path.exists() {
            lock(&self.known_links).insert(key);
            return;
        }
        match private::create_dir_all(&dir).and_then(|()| private::write(&path, b"")) {
            Ok(()) => lock(&self.known_links).insert(key),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot record link"),
        }
    }

    /// Records whether upstream serves `repo` anonymously (`verify` mode), so that after a restart
    /// with upstream down a public repository is still served stale. A file `_public` in the
    /// repository's directory (no repository path component can start with `_`).
    pub fn set_public(&self, registry: &RegistryHost, repo: &RepoName, public: bool) {
        let dir = self.repo_dir(registry, repo);
        let path = dir.join("_public");
        let result = match (public, path.exists()) {
            (true, false) => {
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, b""))
            }
            (false, true) => std::fs::remove_file(&path),
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot record public repository");
        }
    }

    /// True if upstream was last seen serving `repo` anonymously (see [`Cache::set_public`]).
    pub fn was_public(&self, registry: &RegistryHost, repo: &RepoName) -> bool {
        self.repo_dir(registry, repo).join("_public").exists()
    }

    /// True if a download of `digest` is in flight (a caller of [`Cache::begin_fill`] would follow).
    pub fn fill_in_flight(&self, digest: &Digest) -> bool {
        lock(&self.space.inflight).contains_key(digest.encoded())
    }

    /// Decides who downloads `digest`: the first caller leads, later callers follow.
    pub fn begin_fill(&self, digest: &Digest) -> Result<FillSlot, CacheError> {
        let mut inflight = lock(&self.space.inflight);
        if let Some(fill) = inflight.get(digest.encoded()) {
            return Ok(FillSlot::Follower(fill.clone()));
        }
        let tmp = self.tmp_path();
        let file = private::create_new(&tmp).map_err(io_err(&tmp))?;
        let fill = Arc::new(Fill::new(
            digest.clone(),
            tmp,
            self.root.join(Cache::blob_rel(digest)),
        ));
        inflight.insert(digest.encoded().to_owned(), fill.clone());
        Ok(FillSlot::Leader(fill, file))
    }

    /// Decides whether a blob of `len` bytes (`None`: unknown) may be cached: it must fit under
    /// `CACHE_MAX_SIZE`, and under `CACHE_MIN_FREE` after evicting least recently used entries
    /// (downloads in flight count for what they still have to write). `Err` says why not; the
    /// caller then streams the blob uncached.
    pub fn admit(&self, len: Option<u64>) -> Result<(), String> {
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
        let reserved: u64 = lock(&self.space.inflight)
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
        self.space.wait_loaded();
        let evictable = lock(&self.space.index).total();
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

    /// Bytes available to us on the cache's file system (`None` if it cannot be asked).
    pub fn free_space(&self) -> Option<u64> {
        self.space.free_space()
    }

    /// Runs a download: writes `body` into the fill's temp file on a blocking thread, verifies the
    /// digest and commits, or fails the fill (readers abort) and removes the temp file. If the
    /// disk fails meanwhile, the download goes on to the attached readers uncached
    /// (`FillEnd::Uncached`). `total` is the upstream's `Content-Length`.
    pub async fn run_fill<B>(
        &self,
        fill: Arc<Fill>,
        file: std::fs::File,
        total: Option<u64>,
        body: B,
        read_timeout: Duration,
    ) -> Result<FillEnd, String>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        fill.set_total(total);
        fill.set_state(FillState::Growing(0));
        let result = self
            .write_fill(fill.clone(), file, body, read_timeout)
            .await;
        lock(&self.space.inflight).remove(fill.digest.encoded());
        match &result {
            Ok(FillEnd::Committed(len)) => {
                self.add_to_index(&Cache::blob_rel(&fill.digest), *len);
                fill.set_state(FillState::Done(*len));
            }
            Ok(FillEnd::Uncached { .. }) => {
                // Readers opened the temp file when they attached; nothing else needs it.
                let _ = std::fs::remove_file(&fill.tmp_path);
            }
            Err(reason) => {
                let _ = std::fs::remove_file(&fill.tmp_path);
                fill.set_state(FillState::Failed(reason.clone()));
            }
        }
        result
    }

    /// Fails a fill that never started streaming (upstream refused or was unreachable).
    pub fn abort_fill(&self, fill: &Fill, reason: &str) {
        lock(&self.space.inflight).remove(fill.digest.encoded());
        let _ = std::fs::remove_file(&fill.tmp_path);
        fill.set_state(FillState::Failed(reason.to_owned()));
    }

    async fn write_fill<B>(
        &self,
        fill: Arc<Fill>,
        file: std::fs::File,
        mut body: B,
        read_timeout: Duration,
    ) -> Result<FillEnd, String>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let runtime = tokio::runtime::Handle::current();
        let disk_limit = self.disk_limit;
        let writer = tokio::task::spawn_blocking(move || {
            let mut writer = fill::FillWriter::new(fill, file, read_timeout, runtime, disk_limit);
            while let Some(chunk) = rx.blocking_recv() {
                let more_queued = !rx.is_empty();
                writer.write(chunk, more_queued);
            }
            writer.finish()
        });
        let feed = async {
            loop {
                let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
                    Err(_) => return Err(format!("upstream sent nothing for {read_timeout:?}")),
                    Ok(None) => return Ok(()),
                    Ok(Some(Err(e))) => return Err(format!("upstream body: {e}")),
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                // Coalesce the frames that are already here (HTTP/2 delivers 16 KiB at a time) so
                // the writer makes one write and one announcement per ~256 KiB, not per frame.
                let mut batch = BytesMut::new();
                let mut pending = Some(data);
                let mut ended = false;
                while let Some(data) = pending.take() {
                    if batch.is_empty() && data.len() >= COALESCE {
                        batch = BytesMut::from(data);
                        break;
                    }
                    batch.extend_from_slice(&data);
                    if batch.len() >= COALESCE {
                        break;
                    }
                    match body.frame().now_or_never() {
                        Some(Some(Ok(frame))) => {
                            pending = frame.into_data().ok().or(Some(Bytes::new()))
                        }
                        Some(Some(Err(e))) => return Err(format!("upstream body: {e}")),
                        Some(None) => ended = true,
                        None => {}
                    }
                }
                if !batch.is_empty() && tx.send(batch.freeze()).await.is_err() {
                    return Err("cache writer stopped".to_owned());
                }
                if ended {
                    return Ok(());
                }
            }
        };
        let fed = feed.await;
        drop(tx);
        let written = writer.await.map_err(|e| format!("writer task: {e}"))?;
        // A verified blob is good whatever happened after its last byte; otherwise the upstream's
        // error says more than the writer's.
        match written {
            Ok(end) => Ok(end),
            Err(reason) => Err(fed.err().unwrap_or(reason)),
        }
    }

    /// A committed manifest and its media type.
    pub async fn manifest(&self, digest: &Digest) -> Option<(Bytes, String)> {
        if !digest.is_sha256() {
            return None;
        }
        let rel = Cache::manifest_rel(digest);
        if let Some((bytes, media_type)) = lock(&self.space.hot_manifests).get(digest.encoded()) {
            self.touch(&rel, bytes.len() as u64);
            return Some((bytes, media_type));
        }
        let path = self.root.join(&rel);
        let bytes = Bytes::from(tokio::fs::read(&path).await.ok()?);
        let media_type = tokio::fs::read_to_string(path.with_extension("type"))
            .await
            .ok()?;
        self.touch(&rel, bytes.len() as u64);
        lock(&self.space.hot_manifests).insert(digest.encoded(), bytes.clone(), media_type.clone());
        Some((bytes, media_type))
    }

    /// Stores a manifest (caller verified its digest) with its media type.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        bytes: &Bytes,
        media_type: &str,
    ) -> Result<(), CacheError> {
        let rel = Cache::manifest_rel(digest);
        let path = self.root.join(&rel);
        self.write_atomic(&path.with_extension("type"), media_type.as_bytes())
            .await?;
        self.write_atomic(&path, bytes).await?;
        self.add_to_index(&rel, bytes.len() as u64);
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
        let path = self.tag_path(registry, repo, tag, accept_key);
        let bytes = tokio::fs::read(&path).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores a tag's resolution for an Accept set.
    pub async fn put_tag(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        tag: &str,
        accept_key: &str,
        record: &TagRecord,
    ) -> Result<(), CacheError> {
        let path = self.tag_path(registry, repo, tag, accept_key);
        let bytes = serde_json::to_vec(record).map_err(|e| CacheError::Io {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        self.write_atomic(&path, &bytes).await
    }

    fn tag_path(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        tag: &str,
        accept_key: &str,
    ) -> PathBuf {
        let hash = ring::digest::digest(&ring::digest::SHA256, accept_key.as_bytes());
        let mut hex = String::new();
        for b in &hash.as_ref()[..8] {
            hex.push_str(&format!("{b:02x}"));
        }
        self.repo_dir(registry, repo)
            .join("_tags")
            .join(tag)
            .join(format!("{hex}.json"))
    }

    async fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
        let tmp = self.tmp_path();
        let (target, bytes) = (path.to_path_buf(), bytes.to_vec());
        let written = tokio::task::spawn_blocking(move || {
            // A new file: never another writer's temp file.
            private::create_new(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
                .map_err(io_err(&tmp))?;
            if let Some(parent) = target.parent()
                && let Err(e) = private::create_dir_all(parent)
            {
                let _ = std::fs::remove_file(&tmp);
                return Err(CacheError::Io {
                    path: parent.to_path_buf(),
                    source: e,
                });
            }
            if let Err(e) = std::fs::rename(&tmp, &target) {
                let _ = std::fs::remove_file(&tmp);
                return Err(CacheError::Io {
                    path: target,
                    source: e,
                });
            }
            Ok(())
        })
        .await;
        written.map_err(|e| CacheError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?
    }

    /// Marks an entry used; every [`TOUCH_PERSIST_EVERY`] at most, also on disk (its mtime), so
    /// the order survives a restart.
    fn touch(&self, rel: &Path, len: u64) {
        let now = SystemTime::now();
        let persist = lock(&self.space.index).touch(rel, len, now, self.touch_every);
        if persist {
            let path = self.root.join(rel);
            if let Err(e) = std::fs::File::open(&path).and_then(|f| f.set_modified(now)) {
                tracing::debug!(path = %path.display(), error = %e, "cannot record last use");
            }
        }
    }

    fn add_to_index(&self, rel: &Path, len: u64) {
        let over = {
            let mut index = lock(&self.space.index);
            index.insert(rel, len, SystemTime::now());
            index.over(self.limits.max_size)
        };
        if over || self.space.free_shortfall() > 0 {
            self.evict();
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

/// Which kind of object a repository link records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Blob,
    Manifest,
}

impl LinkKind {
    fn dir(self) -> &'static str {
        match self {
            LinkKind::Blob => "_blobs",
            LinkKind::Manifest => "_manifests",
        }
    }
}

/// Streams `start..=end` of a file in chunks read on blocking threads.
pub fn file_stream(
    path: PathBuf,
    start: u64,
    end: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    struct S {
        path: PathBuf,
        file: Option<chunks::ChunkReader>,
        pos: u64,
        end: u64,
    }
    futures_util::stream::unfold(
        S {
            path,
            file: None,
            pos: start,
            end,
        },
        |mut s| async move {
            if s.pos > s.end {
                return None;
            }
            let want = usize::try_from(s.end - s.pos + 1)
                .unwrap_or(fill::READ_CHUNK)
                .min(fill::READ_CHUNK);
            let file = s.file.take();
            let path = s.path.clone();
            let pos = s.pos;
            let joined = tokio::task::spawn_blocking(move || {
                let mut file = match file {
                    Some(f) => f,
                    None => chunks::ChunkReader::new(std::fs::File::open(&path)?),
                };
                let bytes = file.read_at(pos, want)?;
                Ok::<_, io::Error>((file, bytes))
            })
            .await;
            match joined {
                Ok(Ok((file, bytes))) if !bytes.is_empty() => {
                    s.pos += bytes.len() as u64;
                    s.file = Some(file);
                    Some((Ok(bytes), s))
                }
                Ok(Ok(_)) => {
                    s.pos = u64::MAX;
                    Some((
                        Err(io::Error::other("cached file shorter than expected")),
                        s,
                    ))
                }
                Ok(Err(e)) => {
                    s.pos = u64::MAX;
                    Some((Err(e), s))
                }
                Err(e) => {
                    s.pos = u64::MAX;
                    Some((Err(io::Error::other(e)), s))
                }
            }
        },
    )
}

/// `<pid>-<random>`: unique to one open store.
fn tmp_prefix() -> String {
    let mut random = [0u8; 6];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).is_err() {
        // No randomness: the time still tells instances of one process apart.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        random[..4].copy_from_slice(&nanos.to_le_bytes());
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", std::process::id())
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
