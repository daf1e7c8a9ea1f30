//! The object-store tier behind the local disk (DESIGN §6, `STORAGE=s3://…`). Reads go local disk →
//! bucket → upstream: a blob found in the bucket is copied to the local disk by an ordinary fill
//! (clients read it as it grows), manifests, tag records and links are copied on first read.
//! Writes land on the local disk first and go up in the background:
//! - a blob downloaded from upstream is uploaded while it downloads, by one more reader of its fill
//!   ([`Bucket::upload_growing`]); the upload completes only once the bytes hashed to the digest;
//! - everything else, and any upload that failed, waits in a queue that the uploader
//!   ([`run_uploads`]) copies from the local disk, verifying content digests again.
//!
//! An object waiting for its upload is pinned: eviction skips it. When the bucket fails, it is
//! considered down: lookups skip it (misses go upstream), uploads wait, and the uploader probes it
//! until it answers again. At start the uploader compares listings and queues what only the local
//! disk holds (uploads a crash interrupted).
//!
//! Every use of a blob or manifest, read from the bucket or served from the local disk, is
//! recorded in the bucket as an access record (`gc/used/…`, see `cache/gc/`), at most every
//! [`USED_EVERY`] per object, so that the collector knows what is in use on any replica.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, Semaphore};

use super::gc::{USED_EVERY, used_path};
use super::key::{ContentKind, ObjectKey};
use super::lock;
use super::space::Space;
use super::store::{ByteStream, Condition, DiskStore, Object, SharedStore, Store, StoreError};
use crate::registry::digest::Digest;

/// How often a bucket that is down is asked again.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long the uploader sleeps with nothing queued before looking again.
const IDLE: Duration = Duration::from_secs(30);
/// Objects copied up at once.
const PARALLEL: usize = 4;
/// Objects whose last access record this process remembers; beyond it, old entries are dropped.
const USED_REMEMBERED: usize = 100_000;
/// Access-record writes under way at once.
const RECORDING: usize = 16;

/// The bucket, its health and the upload queue.
pub(super) struct Bucket {
    pub(super) store: Arc<dyn Store>,
    /// The same store, with its housekeeping records (access records, the collector's lease).
    pub(super) shared: Arc<dyn SharedStore>,
    /// When this process last wrote each object's access record.
    used: Mutex<HashMap<ObjectKey, Instant>>,
    /// Access-record writes under way, at most [`RECORDING`].
    recording: Arc<Semaphore>,
    /// Why the bucket is considered down, while it is.
    down: Mutex<Option<String>>,
    /// Local objects the bucket may lack. Invariant: each is pinned in the space until it leaves.
    pending: Mutex<HashSet<ObjectKey>>,
    /// Wakes the uploader when something is queued.
    wake: Arc<Notify>,
}

/// Why a copy to the bucket did not complete.
enum UploadError {
    /// The local side: the download failed, or the local object is gone or corrupt. Not retried.
    Local(String),
    /// The bucket failed. Retried once it answers again.
    Store(StoreError),
}

impl Bucket {
    /// The tier over `store`; [`run_uploads`] must run for it.
    pub(super) fn new(shared: Arc<dyn SharedStore>) -> Arc<Bucket> {
        let store: Arc<dyn Store> = shared.clone();
        Arc::new(Bucket {
            store,
            shared,
            used: Mutex::new(HashMap::new()),
            recording: Arc::new(Semaphore::new(RECORDING)),
            down: Mutex::new(None),
            pending: Mutex::new(HashSet::new()),
            wake: Arc::new(Notify::new()),
        })
    }

    pub(super) fn is_up(&self) -> bool {
        lock(&self.down).is_none()
    }

    /// Notes a failure: the bucket is down until the uploader's probe succeeds.
    fn failed(&self, e: &StoreError) {
        let mut down = lock(&self.down);
        if down.is_none() {
            tracing::warn!(error = %e, "object store unavailable: serving from the local disk and upstream, uploads wait");
        }
        *down = Some(e.to_string());
    }

    fn recovered(&self) {
        if lock(&self.down).take().is_some() {
            tracing::info!("object store available again; resuming uploads");
        }
    }

    /// Records in the bucket that a blob or manifest was used now, unless this process did so
    /// within [`USED_EVERY`]. In the background; a failure only costs precision.
    pub(super) fn record_use(&self, key: &ObjectKey) {
        if key.content().is_none() || !self.is_up() {
            return;
        }
        {
            let mut used = lock(&self.used);
            if used.get(key).is_some_and(|at| at.elapsed() < USED_EVERY) {
                return;
            }
            if used.len() >= USED_REMEMBERED {
                used.retain(|_, at| at.elapsed() < USED_EVERY);
            }
            used.insert(key.clone(), Instant::now());
        }
        let (Ok(runtime), Ok(permit)) = (
            tokio::runtime::Handle::try_current(),
            self.recording.clone().try_acquire_owned(),
        ) else {
            // Too many writes under way (or no runtime): the next use tries again.
            lock(&self.used).remove(key);
            return;
        };
        let (shared, path) = (self.shared.clone(), used_path(key));
        runtime.spawn(async move {
            let _permit = permit;
            if let Err(e) = shared
                .write_record(&path, Bytes::new(), Condition::Any)
                .await
            {
                tracing::debug!(error = %e, "cannot record a use in the object store");
            }
        });
    }

    /// The length of an object in the bucket; `None` if absent, or if the bucket is down.
    pub(super) async fn len(&self, key: &ObjectKey) -> Option<u64> {
        if !self.is_up() {
            return None;
        }
        match self.store.head(key).await {
            Ok(Some(meta)) => {
                self.record_use(key);
                Some(meta.len)
            }
            Ok(None) => None,
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// A small object from the bucket; `None` if absent, or if the bucket is down.
    pub(super) async fn get(&self, key: &ObjectKey) -> Option<Object> {
        if !self.is_up() {
            return None;
        }
        match self.store.get(key).await {
            Ok(object) => {
                if object.is_some() {
                    self.record_use(key);
                }
                object
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// Queues a local object for upload, pinning it against eviction until it is up.
    pub(super) fn enqueue(&self, space: &Space, key: ObjectKey) {
        space.pin(&key);
        if lock(&self.pending).insert(key) {
            self.wake.notify_one();
        }
    }

    /// Objects waiting for their upload.
    pub(super) fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Uploads a blob as it downloads, reading its fill like any client (the last byte only once
    /// the digest matched). If the bucket fails, the blob is queued and goes up from the local disk
    /// later; if the download fails, nothing is uploaded.
    pub(super) fn upload_growing(
        self: &Arc<Self>,
        space: Arc<Space>,
        digest: Digest,
        reader: ByteStream,
    ) {
        let key = ObjectKey::blob(&digest);
        if !self.is_up() {
            self.enqueue(&space, key);
            return;
        }
        space.pin(&key);
        let bucket = self.clone();
        tokio::spawn(async move {
            match upload_verified(bucket.store.as_ref(), &key, &digest, None, reader).await {
                Ok(len) => {
                    tracing::debug!(%digest, len, "blob uploaded to the object store");
                    space.unpin(&key);
                }
                Err(UploadError::Local(reason)) => {
                    tracing::debug!(%digest, %reason, "not uploading a blob whose download failed");
                    space.unpin(&key);
                }
                Err(UploadError::Store(e)) => {
                    bucket.failed(&e);
                    bucket.enqueue(&space, key);
                }
            }
        });
    }

    /// The next objects to copy up: queued, and not still downloading.
    fn next_batch(&self, space: &Space) -> Vec<ObjectKey> {
        let inflight = lock(&space.inflight);
        lock(&self.pending)
            .iter()
            .filter(|key| !inflight.contains_key(key))
            .take(PARALLEL * 4)
            .cloned()
            .collect()
    }

    fn done(&self, space: &Space, key: &ObjectKey) {
        lock(&self.pending).remove(key);
        space.unpin(key);
    }

    /// Copies one local object up.
    async fn copy_up(&self, disk: &DiskStore, key: &ObjectKey) -> Result<(), UploadError> {
        match key.content() {
            Some((ContentKind::Blob, digest)) => {
                let Some(len) = disk.len(key) else {
                    return Err(UploadError::Local("no longer on the local disk".into()));
                };
                let reader: ByteStream = if len == 0 {
                    Box::pin(futures_util::stream::empty())
                } else {
                    Box::pin(disk.read_range(key, 0, len - 1))
                };
                upload_verified(self.store.as_ref(), key, digest, None, reader)
                    .await
                    .map(|_| ())
            }
            content => {
                let object = match disk.get(key).await {
                    Ok(Some(object)) => object,
                    Ok(None) => {
                        return Err(UploadError::Local("no longer on the local disk".into()));
                    }
                    Err(e) => return Err(UploadError::Local(e.to_string())),
                };
                if let Some((_, digest)) = content
                    && Digest::sha256_of(&object.bytes) != *digest
                {
                    return Err(UploadError::Local(format!(
                        "local copy does not match {digest}"
                    )));
                }
                self.store
                    .put(key, object)
                    .await
                    .map_err(UploadError::Store)
            }
        }
    }

    /// Queues the content objects only the local disk holds. `false` if the bucket failed.
    async fn reconcile(&self, disk: &DiskStore, space: &Space) -> bool {
        for kind in [ContentKind::Blob, ContentKind::Manifest] {
            let remote = match self.store.list(kind).await {
                Ok(listed) => listed.into_iter().map(|l| l.key).collect::<HashSet<_>>(),
                Err(e) => {
                    self.failed(&e);
                    return false;
                }
            };
            let local = match disk.list(kind).await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the local disk to resume uploads");
                    continue;
                }
            };
            let mut queued = 0usize;
            for listed in local {
                if !remote.contains(&listed.key) {
                    self.enqueue(space, listed.key);
                    queued += 1;
                }
            }
            if queued > 0 {
                tracing::info!(
                    queued,
                    kind = kind.dir(),
                    "resuming uploads the object store lacks"
                );
            }
        }
        true
    }

    /// Asks the bucket whether it answers again.
    async fn probe(&self) -> bool {
        let probe = ObjectKey::blob(&Digest::sha256_of(b"registry-proxy probe"));
        match self.store.head(&probe).await {
            Ok(_) => {
                self.recovered();
                true
            }
            Err(e) => {
                *lock(&self.down) = Some(e.to_string());
                false
            }
        }
    }
}

/// Copies what is queued to the bucket, for as long as the cache holding `bucket` lives: first the
/// content only the local disk holds, then whatever is queued; while the bucket is down, probes it.
pub(super) async fn run_uploads(bucket: Weak<Bucket>, disk: Arc<DiskStore>, space: Arc<Space>) {
    let Some(wake) = bucket.upgrade().map(|b| b.wake.clone()) else {
        return;
    };
    // Comparing listings needs every local object in view.
    let loaded = {
        let space = space.clone();
        tokio::task::spawn_blocking(move || space.wait_loaded()).await
    };
    if loaded.is_err() {
        return;
    }
    let mut reconciled = false;
    loop {
        let Some(b) = bucket.upgrade() else {
            return;
        };
        if !b.is_up() && !b.probe().await {
            drop(b);
            tokio::time::sleep(PROBE_EVERY).await;
            continue;
        }
        if !reconciled {
            reconciled = b.reconcile(&disk, &space).await;
        }
        let batch = b.next_batch(&space);
        if batch.is_empty() {
            drop(b);
            let _ = tokio::time::timeout(IDLE, wake.notified()).await;
            continue;
        }
        futures_util::stream::iter(batch)
            .for_each_concurrent(PARALLEL, |key| {
                let (b, disk, space) = (&b, &disk, &space);
                async move {
                    if !b.is_up() {
                        return;
                    }
                    match b.copy_up(disk, &key).await {
                        Ok(()) => b.done(space, &key),
                        Err(UploadError::Local(reason)) => {
                            tracing::warn!(%key, %reason, "not uploading to the object store");
                            b.done(space, &key);
                        }
                        Err(UploadError::Store(e)) => b.failed(&e),
                    }
                }
            })
            .await;
    }
}

/// Streams `body` to `key`, completing the write only if the bytes hash to `digest`; an
/// incomplete write is abandoned (nothing visible).
async fn upload_verified(
    store: &dyn Store,
    key: &ObjectKey,
    digest: &Digest,
    media_type: Option<&str>,
    mut body: ByteStream,
) -> Result<u64, UploadError> {
    let mut writer = store
        .begin_write(key, media_type)
        .await
        .map_err(UploadError::Store)?;
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    while let Some(chunk) = body.next().await {
        let chunk: Bytes = chunk.map_err(|e: io::Error| UploadError::Local(e.to_string()))?;
        hasher.update(&chunk);
        writer.write(chunk).await.map_err(UploadError::Store)?;
    }
    let expected = Digest::from_ring(&hasher.finish())
        .ok_or_else(|| UploadError::Local("hash length".into()))?;
    if expected != *digest {
        return Err(UploadError::Local(format!(
            "content is {expected}, not {digest}"
        )));
    }
    writer.finish().await.map_err(UploadError::Store)
}
