//! The whole miss, owned by the cache: [`Cache::get_or_fill`] answers with the stored blob, joins
//! the download in flight, or starts one from the caller's [`FillSource`] in a task of its own that
//! outlives the client who started it. One download per blob at a time; every concurrent client
//! streams from its growing temp file (`growing.rs`), written and verified by `writer.rs`.
//!
//! The cache never calls back into its caller beyond the source it was handed: the source opens
//! the body (the serve layer's upstream GET) and hears how the download ended; what it answers
//! instead of a body (an error status) is handed back to the caller untouched.

mod growing;
mod writer;

pub use growing::FillEnd;
pub(crate) use growing::{Fill, FillState};
#[cfg(test)]
pub(crate) use growing::{TAIL_BYTES, TAIL_PIECE};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::key::ObjectKey;
use super::space::Space;
use super::store::{ByteStream, DiskStore};
use super::{Cache, lock};
use crate::body::Body;
use crate::registry::digest::Digest;

/// Where the bytes of a blob come from on a miss, provided by the caller of
/// [`Cache::get_or_fill`]. The cache calls [`FillSource::open`] at most once, from its own task,
/// and [`FillSource::finished`] once the download it fed ended.
pub trait FillSource: Send + Sized + 'static {
    /// What the caller learns from an opened body besides its bytes (the response head).
    type Head: Send + 'static;
    /// What the source answers instead of a body (an error response); opaque to the cache.
    type Refusal: Send + 'static;

    /// Asks for the blob.
    fn open(&mut self) -> impl Future<Output = Result<Opened<Self::Head>, Self::Refusal>> + Send;

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

/// A committed blob.
#[derive(Debug)]
pub struct StoredBlob {
    disk: Arc<DiskStore>,
    key: ObjectKey,
    len: u64,
}

impl StoredBlob {
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Bytes `start..=end`.
    pub fn reader(&self, start: u64, end: u64) -> ByteStream {
        Box::pin(self.disk.read_range(&self.key, start, end))
    }
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
    /// The blob `digest`: stored, joined while in flight, or downloaded from `source` (`None`: the
    /// caller may not cause a download). Nothing is read and no byte is served until the caller
    /// asks a reader of what it got, so access checks on the answer come before any byte.
    pub async fn get_or_fill<S: FillSource>(&self, digest: &Digest, source: Option<S>) -> Got<S> {
        let key = ObjectKey::blob(digest);
        if let Some(blob) = self.stored(&key) {
            return Got::Stored(blob);
        }
        let slot = match self.slot(digest, &key, source.is_some()) {
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
            (Slot::Follow(fill), _) => match fill.started().await {
                Ok(len) => Got::Joined(Growing { fill, len }),
                // The leader got no body (an error status, no room, or it failed early).
                Err(reason) => Got::Uncached(reason),
            },
            (Slot::Lead(fill, file), Some(source)) => self.lead(fill, file, source).await,
            (Slot::Lead(fill, _), None) => {
                // `slot` leads only with a source.
                abort(&self.space, &fill, "no source");
                Got::Absent
            }
        }
    }

    /// A committed blob, marked used.
    fn stored(&self, key: &ObjectKey) -> Option<StoredBlob> {
        let len = self.disk.len(key)?;
        self.touch(key, len);
        Some(StoredBlob {
            disk: self.disk.clone(),
            key: key.clone(),
            len,
        })
    }

    /// Joins the download in flight, or registers a new one when `may_lead`; `None` if there is
    /// none and either this may not lead or the blob was committed meanwhile.
    fn slot(
        &self,
        digest: &Digest,
        key: &ObjectKey,
        may_lead: bool,
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
        let fill = Arc::new(Fill::new(digest.clone(), tmp, self.disk.path(key)));
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
        let task_fill = fill.clone();
        tokio::spawn(async move {
            let fill = task_fill;
            let opened = match source.open().await {
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
            } = opened;
            let _ = tx.send(Opening::Streaming(head));
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
