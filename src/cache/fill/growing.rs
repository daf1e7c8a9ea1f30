//! The reading side of a download in flight. A [`Fill`] is one download of one blob into a temp file
//! of the local disk; every client that wants the blob meanwhile reads it as it arrives: from the
//! fill's memory ring of recent chunks (`ring.rs`) while it keeps up, from the temp file once it
//! falls behind. Time to first byte never waits for the disk or the whole blob, and a slow client
//! never slows the download or holds memory.
//!
//! What a reader may send is decided by [`FillState`]: while the download is growing, everything
//! written except the final byte of a known-length blob; the final byte only once the digest has
//! been verified (`Done`). A `Failed` fill ends every reader's body with an error, so a client sees
//! an aborted transfer, never a clean end of a short or wrong body.
//!
//! When the disk fails under a download (ENOSPC, EIO), the fill turns `Uncached`: the bytes already
//! on disk stay readable from the temp file, and the rest goes to the attached readers through a
//! bounded in-memory tail ([`TAIL_BYTES`]). The writer waits for the slowest
//! reader while the tail is full, but no longer than the stall limit without progress; a reader that
//! stays behind is then cut off with an error (an aborted transfer, which clients retry) instead of
//! holding memory or the other clients. The digest is still verified and the final byte still held
//! back until it matches; nothing is ever committed from such a download.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{Notify, watch};

use super::ring::Ring;
use crate::cache::chunks::{ChunkReader, READ_CHUNK};
use crate::registry::digest::Digest;

/// Bytes the in-memory tail of an uncached download holds at most (plus one piece), whatever the
/// blob size or client count.
pub(crate) const TAIL_BYTES: usize = 2 * 1024 * 1024;

/// Largest piece of the in-memory tail.
pub(crate) const TAIL_PIECE: usize = 64 * 1024;

/// Progress of a fill, broadcast to readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillState {
    /// Waiting for the source's response headers.
    Pending,
    /// Bytes written to the temp file so far.
    Growing(u64),
    /// The disk failed after `on_disk` bytes had been written: the rest streams through memory,
    /// and nothing will be committed.
    Uncached { on_disk: u64 },
    /// Verified and committed at the blob's final path; the length.
    Done(u64),
    /// Verified but not committed (the disk failed): `on_disk` bytes are in the temp file, the
    /// rest of the `len` bytes went through memory.
    Streamed { len: u64, on_disk: u64 },
    /// Nothing was committed; readers must abort. The reason is for logs.
    Failed(String),
}

/// The in-memory tail of an uncached download.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// Contiguous pieces `(offset, bytes)` not yet taken by every attached reader.
    pub(super) pieces: VecDeque<(u64, Bytes)>,
    /// Invariant: the sum of the pieces' lengths; at most `TAIL_BYTES + TAIL_PIECE`.
    pub(super) buffered: usize,
    /// Offset of the next byte the writer will send. Invariant: zero until the fill is `Uncached`,
    /// then at least `on_disk`.
    pub(super) next: u64,
    /// Attached readers: id → offset of the next byte each wants.
    pub(super) readers: HashMap<u64, u64>,
    /// Readers cut off for staying behind a full tail.
    pub(super) cut: HashSet<u64>,
    next_id: u64,
}

impl Tail {
    /// Offset of the oldest byte still held.
    fn base(&self) -> u64 {
        self.pieces.front().map_or(self.next, |(offset, _)| *offset)
    }

    /// Drops the pieces every attached reader is past.
    pub(super) fn trim(&mut self) {
        let min = self.readers.values().min().copied().unwrap_or(u64::MAX);
        while let Some((offset, bytes)) = self.pieces.front() {
            if offset + bytes.len() as u64 > min {
                break;
            }
            self.buffered -= bytes.len();
            self.pieces.pop_front();
        }
    }

    /// Cuts off the readers furthest behind.
    pub(super) fn cut_slowest(&mut self) {
        let Some(min) = self.readers.values().min().copied() else {
            return;
        };
        let slow: Vec<u64> = self
            .readers
            .iter()
            .filter(|(_, pos)| **pos == min)
            .map(|(id, _)| *id)
            .collect();
        for id in slow {
            self.readers.remove(&id);
            self.cut.insert(id);
        }
        tracing::warn!(
            behind = self.next.saturating_sub(min),
            "client too slow for an uncached download; cutting it off"
        );
        self.trim();
    }
}

/// One in-flight download.
#[derive(Debug)]
pub struct Fill {
    pub digest: Digest,
    /// Temp file the download writes to. Invariant: exists from creation until commit or failure.
    pub(crate) tmp_path: PathBuf,
    /// Where the blob lives once committed.
    pub(crate) final_path: PathBuf,
    /// True if this copies a blob the cache already holds in its bucket to the local disk, rather
    /// than downloading it from upstream.
    pub(crate) from_bucket: bool,
    /// Total length announced by the upstream (`Content-Length`), once known.
    total: watch::Sender<Option<u64>>,
    state: watch::Sender<FillState>,
    /// The most recent chunks received, for readers that keep up.
    pub(super) ring: Mutex<Ring>,
    /// Bumped each time chunks are added to the ring (readers wait on it).
    pub(super) arrived: watch::Sender<u64>,
    pub(super) tail: Mutex<Tail>,
    /// Bumped each time the writer adds to the tail (readers wait on it).
    pub(super) sent: watch::Sender<u64>,
    /// Readers signal here each time they advance or leave (the writer waits on it).
    pub(super) taken: Notify,
}

impl Fill {
    pub(crate) fn new(
        digest: Digest,
        tmp_path: PathBuf,
        final_path: PathBuf,
        from_bucket: bool,
    ) -> Fill {
        Fill {
            digest,
            tmp_path,
            final_path,
            from_bucket,
            total: watch::Sender::new(None),
            state: watch::Sender::new(FillState::Pending),
            ring: Mutex::new(Ring::default()),
            arrived: watch::Sender::new(0),
            tail: Mutex::new(Tail::default()),
            sent: watch::Sender::new(0),
            taken: Notify::new(),
        }
    }

    pub fn state(&self) -> FillState {
        self.state.borrow().clone()
    }

    pub fn total(&self) -> Option<u64> {
        *self.total.borrow()
    }

    pub(crate) fn set_total(&self, total: Option<u64>) {
        self.total.send_replace(total);
    }

    pub(crate) fn set_state(&self, state: FillState) {
        self.state.send_replace(state);
    }

    /// Bytes held in memory for readers of an uncached download.
    #[cfg(test)]
    pub(crate) fn tail_buffered(&self) -> usize {
        lock(&self.tail).buffered
    }

    /// Offset of the oldest byte in the memory ring, and the bytes it holds.
    #[cfg(test)]
    pub(crate) fn ring_window(&self) -> (u64, usize) {
        let ring = lock(&self.ring);
        (ring.base(), ring.held())
    }

    /// Bytes this fill may still add to the disk (for the free-space reserve).
    pub(crate) fn remaining_on_disk(&self) -> u64 {
        match (self.state(), self.total()) {
            (FillState::Growing(w), Some(t)) => t.saturating_sub(w),
            (FillState::Pending, Some(t)) => t,
            _ => 0,
        }
    }

    /// Waits until the source has answered: `Ok(total)` once bytes flow (or are done), `Err` if the
    /// fill failed before that.
    pub(crate) async fn started(&self) -> Result<Option<u64>, String> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                FillState::Pending => {}
                FillState::Failed(reason) => return Err(reason.clone()),
                _ => return Ok(self.total()),
            }
            if rx.changed().await.is_err() {
                return Err("download abandoned".into());
            }
        }
    }

    /// A stream of the bytes `start..=end` (or to the end), read as the blob grows; `None` if this
    /// fill can no longer serve them (it failed, or went uncached and the bytes needed are gone
    /// from memory): the caller should fetch on its own.
    pub(crate) fn reader(
        self: &Arc<Self>,
        start: u64,
        end: Option<u64>,
    ) -> Option<impl Stream<Item = io::Result<Bytes>> + Send + use<>> {
        let fill = self.clone();
        // Opened now so that a temp file removed when the download ends stays readable.
        let file = open_fill_file(&fill).ok().map(ChunkReader::new);
        // Attach before looking at the state, so no piece of the tail can be dropped unseen.
        let (id, base) = {
            let mut tail = lock(&fill.tail);
            let id = tail.next_id;
            tail.next_id += 1;
            tail.readers.insert(id, start);
            (id, tail.base())
        };
        let state = ReaderState {
            rx: fill.state.subscribe(),
            arrived: fill.arrived.subscribe(),
            sent: fill.sent.subscribe(),
            fill,
            id,
            file,
            pos: start,
            end,
        };
        let servable = match state.fill.state() {
            FillState::Uncached { on_disk } | FillState::Streamed { on_disk, .. } => {
                base <= start.max(on_disk) && (start >= on_disk || state.file.is_some())
            }
            FillState::Failed(_) => false,
            _ => true,
        };
        if !servable {
            return None; // dropping `state` detaches it
        }
        Some(futures_util::stream::unfold(state, |mut s| async move {
            match s.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), s)),
                Ok(None) => None,
                Err(e) => {
                    // End the stream after the error.
                    s.pos = u64::MAX;
                    s.end = Some(0);
                    Some((Err(e), s))
                }
            }
        }))
    }
}

struct ReaderState {
    fill: Arc<Fill>,
    /// This reader's id in the fill's tail.
    id: u64,
    rx: watch::Receiver<FillState>,
    arrived: watch::Receiver<u64>,
    sent: watch::Receiver<u64>,
    file: Option<ChunkReader>,
    pos: u64,
    /// Inclusive last byte wanted, if a range.
    end: Option<u64>,
}

impl Drop for ReaderState {
    fn drop(&mut self) {
        let mut tail = lock(&self.fill.tail);
        tail.readers.remove(&self.id);
        tail.cut.remove(&self.id);
        drop(tail);
        self.fill.taken.notify_one();
    }
}

/// What a reader may do next, given the fill's state.
struct Allowed {
    /// Bytes below this may be taken from the memory ring (those that left it, from the file).
    memory: u64,
    /// Bytes below this may be read from the file.
    disk: u64,
    /// Bytes from `disk` on come from the in-memory tail.
    tail: bool,
    /// The blob's verified length, once known.
    done: Option<u64>,
}

impl ReaderState {
    fn allowed(&self, state: &FillState) -> io::Result<Allowed> {
        let total = self.fill.total();
        // Hold back the last byte of a known-length blob until the digest is verified.
        let hold = |written: u64| match total {
            Some(t) => written.min(t.saturating_sub(1)),
            None => written,
        };
        let (memory, disk, tail, done) = match state {
            FillState::Pending => (0, 0, false, None),
            FillState::Growing(_) => {
                let (arrived, on_disk) = {
                    let ring = lock(&self.fill.ring);
                    (ring.end(), ring.on_disk())
                };
                (hold(arrived), hold(on_disk), false, None)
            }
            FillState::Uncached { on_disk } => (0, hold(*on_disk), true, None),
            FillState::Done(len) => (*len, *len, false, Some(*len)),
            FillState::Streamed { len, on_disk } => (0, *on_disk, true, Some(*len)),
            FillState::Failed(reason) => {
                return Err(io::Error::other(format!(
                    "upstream download failed: {reason}"
                )));
            }
        };
        Ok(Allowed {
            memory,
            disk,
            tail,
            done,
        })
    }

    /// `limit` (exclusive), capped at the end of what this reader wants.
    fn cap(&self, limit: u64) -> u64 {
        match self.end {
            Some(end) => limit.min(end.saturating_add(1)),
            None => limit,
        }
    }

    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if let Some(end) = self.end
                && self.pos > end
            {
                return Ok(None);
            }
            let state = self.rx.borrow_and_update().clone();
            self.arrived.borrow_and_update();
            let allowed = self.allowed(&state)?;
            if let Some(len) = allowed.done
                && self.pos >= len
            {
                return Ok(None);
            }
            let limit = self.cap(allowed.memory);
            if self.pos < limit
                && let Ok(Some(bytes)) = lock(&self.fill.ring).read(self.pos, limit)
            {
                // Fresh bytes straight from memory; behind the ring, the file below.
                self.pos += bytes.len() as u64;
                return Ok(Some(bytes));
            }
            let limit = self.cap(allowed.disk);
            if self.pos < limit {
                let want = usize::try_from(limit - self.pos)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let bytes = self.read(want).await?;
                if bytes.is_empty() {
                    return Err(io::Error::other("blob file shorter than announced"));
                }
                self.pos += bytes.len() as u64;
                if allowed.tail {
                    self.report();
                }
                return Ok(Some(bytes));
            }
            if allowed.tail && self.pos >= allowed.disk {
                self.sent.borrow_and_update();
                if let Some(bytes) = self.take()? {
                    return Ok(Some(bytes));
                }
                if allowed.done.is_some() {
                    // Every piece is in the tail before `Streamed` is announced.
                    return Err(io::Error::other("uncached download ended short"));
                }
                tokio::select! {
                    changed = self.sent.changed() => changed.map_err(|_| abandoned())?,
                    changed = self.rx.changed() => changed.map_err(|_| abandoned())?,
                }
                continue;
            }
            tokio::select! {
                changed = self.rx.changed() => changed.map_err(|_| abandoned())?,
                changed = self.arrived.changed() => changed.map_err(|_| abandoned())?,
            }
        }
    }

    /// Records this reader's position in the tail, so the writer may drop what it is past.
    fn report(&self) {
        let mut tail = lock(&self.fill.tail);
        if let Some(pos) = tail.readers.get_mut(&self.id) {
            *pos = self.pos;
        }
        drop(tail);
        self.fill.taken.notify_one();
    }

    /// The next bytes from the in-memory tail, if they have arrived.
    fn take(&mut self) -> io::Result<Option<Bytes>> {
        let mut tail = lock(&self.fill.tail);
        if tail.cut.contains(&self.id) || self.pos < tail.base() {
            return Err(lagged());
        }
        // A reader that took bytes from the ring before the disk failed may be ahead of the
        // tail: its position, not where it started, is what the tail must keep.
        if let Some(pos) = tail.readers.get_mut(&self.id) {
            *pos = self.pos;
        }
        let index = tail
            .pieces
            .partition_point(|(offset, bytes)| offset + bytes.len() as u64 <= self.pos);
        let Some((offset, bytes)) = tail.pieces.get(index) else {
            drop(tail);
            self.fill.taken.notify_one();
            return Ok(None);
        };
        let from = usize::try_from(self.pos - offset).map_err(io::Error::other)?;
        let to = usize::try_from(self.cap(offset + bytes.len() as u64) - offset)
            .map_err(io::Error::other)?;
        if to <= from {
            return Ok(None);
        }
        let out = bytes.slice(from..to);
        self.pos += out.len() as u64;
        if let Some(pos) = tail.readers.get_mut(&self.id) {
            *pos = self.pos;
        }
        drop(tail);
        self.fill.taken.notify_one();
        Ok(Some(out))
    }

    async fn read(&mut self, want: usize) -> io::Result<Bytes> {
        let file = match self.file.take() {
            Some(f) => f,
            None => ChunkReader::new(open_fill_file(&self.fill)?),
        };
        let pos = self.pos;
        let (file, result) = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let result = file.read_at(pos, want);
            (file, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.file = Some(file);
        result
    }
}

fn abandoned() -> io::Error {
    io::Error::other("download abandoned")
}

fn lagged() -> io::Error {
    io::Error::other("client fell too far behind an uncached download")
}

/// Opens the temp file, or the final file if the fill was committed meanwhile (the rename happens
/// just before `Done` is announced; a file at the final path is always complete and verified).
fn open_fill_file(fill: &Fill) -> io::Result<std::fs::File> {
    match std::fs::File::open(&fill.tmp_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::File::open(&fill.final_path),
        other => other,
    }
}

/// How a download that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillEnd {
    /// Verified and committed; the length.
    Committed(u64),
    /// Verified and delivered to its readers, but not cached because the disk failed.
    Uncached { len: u64, reason: String },
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
