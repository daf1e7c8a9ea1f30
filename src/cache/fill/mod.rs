//! The whole miss, owned by the cache: [`Cache::get_or_fill`] answers with the stored blob, joins
//! the download in flight, or starts one from the caller's [`FillSource`] in a task of its own that
//! outlives the client who started it. One download per blob at a time; every concurrent client
//! streams it as it arrives (`growing.rs`): from a memory ring of the newest chunks (`ring.rs`),
//! or from the temp file that `writer.rs` writes and verifies, once the client fell behind.
//!
//! The cache never calls back into its caller beyond the source it was handed: the source opens
//! the body (the serve layer's upstream GET) and hears how the download ended; what it answers
//! instead of a body (an error status) is handed back to the caller untouched.

mod growing;
mod ring;
mod verified;
mod writer;

pub use growing::{Fill, FillEnd, FillState};
#[cfg(test)]
pub(crate) use growing::{TAIL_BYTES, TAIL_PIECE};
#[cfg(test)]
pub(crate) use ring::RING_BYTES;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::bucket::Bucket;
use super::key::{ContentKind, ObjectKey};
use super::space::Space;
use super::store::{ByteStream, DiskStore, Store};
use super::{Cache, lock};
use crate::body::{Body, BoxError};
use crate::registry::digest::Digest;

/// Where the bytes of a blob come from on a miss, provided by the caller of
/// [`Cache::get_or_fill`]. The cache calls [`FillSource::open`] at most once, from its own task,
/// and [`FillSource::finished`] once the download it fed ended.
pub trait FillSource: Send + Sized + 'static {
    /// What the caller learns from an opened body besides its bytes (the response head).
    type Head: Send + 'static;
    /// What the source answers instead of a body (an error response); opaque to the cache.
    type Refusal: Send + 'static;

    /// Asks for the blob. `download` is the fill it will feed, to watch (progress, the status
    /// page), never to write.
    fn open(
        &mut self,
        download: &Arc<Fill>,
    ) -> impl Future<Output = Result<Opened<Self::Head>, Self::Refusal>> + Send;

    /// The download ended: verified (committed or streamed uncached), or failed with a reason.
    fn finished(self, end: &Result<FillEnd, String>);
}

/// A body the source opened.
pub struct Opened<H> {
    pub head: H,
    /// The length the source announced (`Content-Length`).
    pub len: Option<u64>,
    pub body: Body,
    /// Longest wait for the next piece of the body; also how long the download waits for a
    /// reader that holds a full in-memory tail (see `growing.rs`).
    pub idle: Duration,
    /// Upload the blob to the object store, if there is one (`false`: the source's side does, as a
    /// peer replica downloading it from upstream).
    pub upload: bool,
}

/// What [`Cache::get_or_fill`] found or did.
pub enum Got<S: FillSource> {
    /// The blob is stored: read it.
    Stored(StoredBlob),
    /// Someone else's download is in flight and streaming: read it as it grows.
    Joined(Growing),
    /// This call started the download; the source's head.
    Started { blob: Growing, head: S::Head },
    /// The source answered without a body.
    Refused(S::Refusal),
    /// The source's body, which the cache has no room for: pass it through.
    Bypass(Opened<S::Head>),
    /// Neither stored nor in flight, and no source was given.
    Absent,
    /// The cache cannot serve it (the download joined failed before its first byte, or the disk
    /// refused a temp file): the caller fetches it on its own, uncached.
    Uncached(String),
}

/// A blob the cache holds: on the local disk, being copied there from the bucket, or (when the
/// local disk has no room for it) in the bucket only.
pub struct StoredBlob {
    len: u64,
    at: Where,
}

enum Where {
    Local(Arc<DiskStore>, ObjectKey),
    /// Being copied from the bucket; read from the bucket itself what the copy cannot serve.
    Copying(Growing, Arc<dyn Store>, ObjectKey),
    Bucket(Arc<dyn Store>, ObjectKey),
}

impl StoredBlob {
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Bytes `start..=end`.
    pub fn reader(&self, start: u64, end: u64) -> ByteStream {
        match &self.at {
            Where::Local(disk, key) => Box::pin(disk.read_range(key, start, end)),
            Where::Copying(growing, store, key) => growing
                .reader(start, Some(end))
                .unwrap_or_else(|| self.read_bucket(store, key, start, end)),
            Where::Bucket(store, key) => self.read_bucket(store, key, start, end),
        }
    }

    /// Bytes `start..=end` read from the bucket itself; the whole blob is verified on the way out
    /// (a range cannot be: it is served as the bucket holds it).
    fn read_bucket(
        &self,
        store: &Arc<dyn Store>,
        key: &ObjectKey,
        start: u64,
        end: u64,
    ) -> ByteStream {
        let stream = store.read(key, start, end);
        match key.content() {
            Some((ContentKind::Blob, digest))
                if start == 0 && end.saturating_add(1) == self.len =>
            {
                let (store, corrupt) = (store.clone(), key.clone());
                verified::verified(
                    stream,
                    digest.clone(),
                    self.len,
                    Box::new(move || remove_corrupt(store, corrupt)),
                )
            }
            _ => stream,
        }
    }
}

/// Removes a bucket object whose content does not match its digest, in the background, so that
/// the next request for it misses the bucket (and goes to the owner replica or upstream).
fn remove_corrupt(store: Arc<dyn Store>, key: ObjectKey) {
    tracing::warn!(%key, "the bucket's copy of a blob is corrupt; removing it");
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        if let Err(error) = store.delete(&key).await {
            tracing::warn!(%key, %error, "cannot remove a corrupt object from the bucket");
        }
    });
}

/// A blob being downloaded.
pub struct Growing {
    fill: Arc<Fill>,
    /// Invariant: the fill's announced total, read once it started.
    len: Option<u64>,
}

impl Growing {
    #[cfg(test)]
    pub(crate) fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// The announced length, if the source gave one.
    pub fn size(&self) -> Option<u64> {
        self.len
    }

    /// Bytes `start..=end` (or to the end), as they arrive; the last byte only once the digest
    /// matched, and an error instead of a clean end if the download fails. `None` if the download
    /// can no longer serve them (it went uncached and they are gone from memory).
    pub fn reader(&self, start: u64, end: Option<u64>) -> Option<ByteStream> {
        let stream = self.fill.reader(start, end)?;
        Some(Box::pin(stream))
    }
}

/// Who takes care of a blob that is not stored.
enum Slot {
    Follow(Arc<Fill>),
    Lead(Arc<Fill>, std::fs::File),
}

/// What the leader's task tells the call that started it.
enum Opening<S: FillSource> {
    Streaming(S::Head),
    Refused(S::Refusal),
    Bypass(Opened<S::Head>),
}

impl Cache {
    /// The blob `digest`: stored (on the local disk, else in the bucket), joined while in flight,
    /// or downloaded from `source` (`None`: the caller may not cause a download). Nothing is read
    /// and no byte is served until the caller asks a reader of what it got, so access checks on
    /// the answer come before any byte.
    pub async fn get_or_fill<S: FillSource>(&self, digest: &Digest, source: Option<S>) -> Got<S> {
        let key = ObjectKey::blob(digest);
        if let Some(blob) = self.stored(&key) {
            return Got::Stored(blob);
        }
        if let Some(fill) = self.in_flight(&key) {
            return self.follow(fill).await;
        }
        if let Some(bucket) = &self.bucket
            && let Some(len) = bucket.len(&key).await
            && let Some(got) = self.copy_from_bucket(bucket, digest, &key, len).await
        {
            return got;
        }
        let slot = match self.slot(digest, &key, source.is_some(), false) {
            Ok(Some(slot)) => slot,
            // Committed between the lookup and the slot.
            Ok(None) => match self.stored(&key) {
                Some(blob) => return Got::Stored(blob),
                None => return Got::Absent,
            },
            Err(reason) => {
                tracing::warn!(%digest, %reason, "cannot start a cache fill; streaming uncached");
                return Got::Uncached(reason);
            }
        };
        match (slot, source) {
            (Slot::Follow(fill), _) => self.follow(fill).await,
            (Slot::Lead(fill, file), Some(source)) => self.lead(fill, file, source).await,
            (Slot::Lead(fill, _), None) => {
                // `slot` leads only with a source.
                abort(&self.space, &fill, "no source");
                Got::Absent
            }
        }
    }

    /// A blob the bucket holds (`len` bytes): copied to the local disk by a fill of its own, or
    /// read from the bucket directly when the local disk has no room. `None`: the bucket could not
    /// serve it after all; the caller goes on as for a miss.
    async fn copy_from_bucket<S: FillSource>(
        &self,
        bucket: &Arc<Bucket>,
        digest: &Digest,
        key: &ObjectKey,
        len: u64,
    ) -> Option<Got<S>> {
        let remote = || StoredBlob {
            len,
            at: Where::Bucket(bucket.store.clone(), key.clone()),
        };
        let admitted = {
            let space = self.space.clone();
            tokio::task::spawn_blocking(move || space.admit(Some(len)))
                .await
                .unwrap_or_else(|e| Err(format!("admission task: {e}")))
        };
        if admitted.is_err() {
            return Some(Got::Stored(remote()));
        }
        let (fill, file) = match self.slot(digest, key, true, true) {
            Ok(Some(Slot::Lead(fill, file))) => (fill, file),
            Ok(Some(Slot::Follow(fill))) => return Some(self.follow(fill).await),
            Ok(None) => return self.stored(key).map(Got::Stored),
            Err(_) => return Some(Got::Stored(remote())),
        };
        let source = BucketCopy {
            store: bucket.store.clone(),
            key: key.clone(),
            len,
        };
        match self.lead(fill, file, source).await {
            Got::Started { blob, .. } => Some(Got::Stored(StoredBlob {
                len,
                at: Where::Copying(blob, bucket.store.clone(), key.clone()),
            })),
            Got::Bypass(_) => Some(Got::Stored(remote())),
            Got::Refused(reason) | Got::Uncached(reason) => {
                tracing::warn!(%digest, %reason, "cannot copy a blob from the object store");
                None
            }
            Got::Stored(blob) => Some(Got::Stored(blob)),
            Got::Joined(growing) => Some(Got::Joined(growing)),
            Got::Absent => None,
        }
    }

    /// Waits until a download in flight streams: a copy from the bucket is a stored blob, anything
    /// else a joined download.
    async fn follow<S: FillSource>(&self, fill: Arc<Fill>) -> Got<S> {
        let len = match fill.started().await {
            Ok(len) => len,
            // The leader got no body (an error status, no room, or it failed early).
            Err(reason) => return Got::Uncached(reason),
        };
        let key = ObjectKey::blob(&fill.digest);
        let growing = Growing { fill, len };
        match (&self.bucket, len) {
            (Some(bucket), Some(len)) if growing.fill.from_bucket => Got::Stored(StoredBlob {
                len,
                at: Where::Copying(growing, bucket.store.clone(), key),
            }),
            _ => Got::Joined(growing),
        }
    }

    /// The download of `key` in flight, if any.
    fn in_flight(&self, key: &ObjectKey) -> Option<Arc<Fill>> {
        lock(&self.space.inflight).get(key).cloned()
    }

    /// A committed blob, marked used.
    fn stored(&self, key: &ObjectKey) -> Option<StoredBlob> {
        let len = self.disk.len(key)?;
        self.touch(key, len);
        Some(StoredBlob {
            len,
            at: Where::Local(self.disk.clone(), key.clone()),
        })
    }

    /// Joins the download in flight, or registers a new one when `may_lead` (`from_bucket`: a copy
    /// from the bucket); `None` if there is none and either this may not lead or the blob was
    /// committed meanwhile.
    fn slot(
        &self,
        digest: &Digest,
        key: &ObjectKey,
        may_lead: bool,
        from_bucket: bool,
    ) -> Result<Option<Slot>, String> {
        let mut inflight = lock(&self.space.inflight);
        if let Some(fill) = inflight.get(key) {
            return Ok(Some(Slot::Follow(fill.clone())));
        }
        // A fill leaves the map only after its commit, so a blob absent from both was not stored.
        if !may_lead || self.disk.exists(key) {
            return Ok(None);
        }
        let (tmp, file) = self
            .disk
            .create_temp()
            .map_err(|e| format!("temp file: {e}"))?;
        let fill = Arc::new(Fill::new(
            digest.clone(),
            tmp,
            self.disk.path(key),
            from_bucket,
        ));
        inflight.insert(key.clone(), fill.clone());
        Ok(Some(Slot::Lead(fill, file)))
    }

    /// Starts the download in a task of its own and waits until it streams (or will not).
    async fn lead<S: FillSource>(
        &self,
        fill: Arc<Fill>,
        file: std::fs::File,
        mut source: S,
    ) -> Got<S> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Opening<S>>();
        let space = self.space.clone();
        let disk_limit = self.disk_limit;
        let bucket = self.bucket.clone().filter(|_| !fill.from_bucket);
        let task_fill = fill.clone();
        tokio::spawn(async move {
            let fill = task_fill;
            let opened = match source.open(&fill).await {
                Ok(opened) => opened,
                Err(refusal) => {
                    abort(&space, &fill, "the source answered without a body");
                    let _ = tx.send(Opening::Refused(refusal));
                    return;
                }
            };
            let admitted = {
                let space = space.clone();
                let len = opened.len;
                tokio::task::spawn_blocking(move || space.admit(len))
                    .await
                    .unwrap_or_else(|e| Err(format!("admission task: {e}")))
            };
            if let Err(reason) = admitted {
                // No room: the caller passes the body through; followers fetch on their own.
                tracing::warn!(digest = %fill.digest, %reason, "not caching blob; streaming uncached");
                abort(&space, &fill, &reason);
                let _ = tx.send(Opening::Bypass(opened));
                return;
            }
            let Opened {
                head,
                len,
                body,
                idle,
                upload,
            } = opened;
            let bucket = bucket.filter(|_| upload);
            let _ = tx.send(Opening::Streaming(head));
            // The upload to the bucket is one more reader, attached before the first byte.
            if let Some(bucket) = bucket
                && let Some(reader) = fill.reader(0, None)
            {
                bucket.upload_growing(space.clone(), fill.digest.clone(), Box::pin(reader));
            }
            let end = run(&space, &fill, file, len, body, idle, disk_limit).await;
            match &end {
                Ok(FillEnd::Committed(len)) => {
                    tracing::debug!(digest = %fill.digest, len, "blob committed");
                }
                Ok(FillEnd::Uncached { len, reason }) => {
                    tracing::warn!(digest = %fill.digest, len, %reason, "blob streamed uncached: the cache disk failed");
                }
                Err(reason) => {
                    tracing::warn!(digest = %fill.digest, %reason, "blob download failed; nothing cached");
                }
            }
            source.finished(&end);
        });
        match rx.await {
            Ok(Opening::Streaming(head)) => {
                let len = fill.started().await.ok().flatten();
                Got::Started {
                    blob: Growing { fill, len },
                    head,
                }
            }
            Ok(Opening::Refused(refusal)) => Got::Refused(refusal),
            Ok(Opening::Bypass(opened)) => Got::Bypass(opened),
            Err(_) => Got::Uncached("download task ended unexpectedly".into()),
        }
    }
}

/// How long a copy from the bucket waits for its next bytes.
const BUCKET_IDLE: Duration = Duration::from_secs(60);

/// The bucket as the source of a fill: copies a blob it holds to the local disk.
struct BucketCopy {
    store: Arc<dyn Store>,
    key: ObjectKey,
    len: u64,
}

impl FillSource for BucketCopy {
    type Head = ();
    type Refusal = String;

    async fn open(&mut self, _download: &Arc<Fill>) -> Result<Opened<()>, String> {
        let mut stream = if self.len == 0 {
            Box::pin(futures_util::stream::empty())
        } else {
            self.store.read(&self.key, 0, self.len - 1)
        };
        // The first bytes tell whether the bucket serves it at all (else the caller goes upstream).
        let first = match stream.next().await {
            Some(Err(e)) => return Err(e.to_string()),
            first => first,
        };
        let frames = futures_util::stream::iter(first)
            .chain(stream)
            .map_ok(Frame::data)
            .map_err(|e| -> BoxError { Box::new(e) });
        Ok(Opened {
            head: (),
            len: Some(self.len),
            body: BodyExt::boxed(StreamBody::new(frames)),
            idle: BUCKET_IDLE,
            upload: false,
        })
    }

    fn finished(self, end: &Result<FillEnd, String>) {
        if let Err(reason) = end {
            tracing::warn!(key = %self.key, %reason, "copy from the object store failed");
            if reason.starts_with(writer::DIGEST_MISMATCH) {
                remove_corrupt(self.store, self.key);
            }
        }
    }
}

/// Runs a download: writes `body` into the fill's temp file, verifies and commits, or fails the
/// fill (readers abort) and removes the temp file; if the disk fails meanwhile, the download goes
/// on to the attached readers uncached. Either way the fill leaves the map of downloads in flight.
async fn run(
    space: &Space,
    fill: &Arc<Fill>,
    file: std::fs::File,
    len: Option<u64>,
    body: Body,
    idle: Duration,
    disk_limit: Option<u64>,
) -> Result<FillEnd, String> {
    fill.set_total(len);
    fill.set_state(FillState::Growing(0));
    let result = writer::write(fill.clone(), file, body, idle, disk_limit).await;
    let key = ObjectKey::blob(&fill.digest);
    lock(&space.inflight).remove(&key);
    match &result {
        Ok(FillEnd::Committed(len)) => {
            space.add(&key, *len);
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

/// Fails a fill that never started streaming.
fn abort(space: &Space, fill: &Fill, reason: &str) {
    lock(&space.inflight).remove(&ObjectKey::blob(&fill.digest));
    let _ = std::fs::remove_file(&fill.tmp_path);
    fill.set_state(FillState::Failed(reason.to_owned()));
}
