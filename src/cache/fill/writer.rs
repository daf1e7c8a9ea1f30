//! The writing side of a download: the leader's task reads the source's body, puts each batch of
//! buffers into the fill's memory ring (readers that keep up take them from there at once) and
//! hands it to a [`FillWriter`] on a blocking thread, which hashes it and appends it to the temp
//! file while the network read goes on, announces progress, and on a matching digest commits the
//! file to the blob's key on the local disk. The last byte of a known-length blob reaches no reader
//! before that.
//! After a disk failure the writer hands the rest to the readers through the fill's in-memory tail
//! (see `growing.rs`) and commits nothing.

use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body::Body as HttpBody;
use http_body_util::BodyExt;

use super::growing::{Fill, FillEnd, FillState, TAIL_BYTES, TAIL_PIECE, lock};
use crate::cache::chunks::READ_CHUNK;
use crate::cache::store::DiskStore;
use crate::registry::digest::Digest;

/// How a failure whose bytes did not hash to the digest begins (the source's content is wrong,
/// not merely cut short).
pub(super) const DIGEST_MISMATCH: &str = "digest mismatch";

/// Source bytes gathered before one announcement to the readers, at most (when already received).
const COALESCE: usize = 256 * 1024;

/// Source bytes handed to the writer at once (one wake-up of its thread, one `writev`).
const WRITE_BATCH: usize = 1024 * 1024;

/// Source buffers handed to the writer at once, at most (`writev` takes 1024).
const MAX_BATCH: usize = 256;

/// Batches queued for the writer, at most: with the ring, the bound on a download's memory while
/// the disk is slower than the source (about `QUEUE * WRITE_BATCH` beyond the ring's own).
const QUEUE: usize = 4;

/// Writes `body` into the fill's temp file on a blocking thread and verifies its digest; `Ok` once
/// the blob was verified (committed, or delivered uncached when the disk failed). `idle` bounds the
/// wait for each piece of the body, and the writer's wait for a reader that keeps the tail full.
pub(super) async fn write<B>(
    fill: Arc<Fill>,
    file: std::fs::File,
    mut body: B,
    idle: Duration,
    disk_limit: Option<u64>,
) -> Result<FillEnd, String>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(QUEUE);
    let runtime = tokio::runtime::Handle::current();
    let ring_fill = fill.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut writer = FillWriter::new(fill, file, idle, runtime, disk_limit);
        while let Some(batch) = rx.blocking_recv() {
            let more_queued = !rx.is_empty();
            writer.write(&batch, more_queued);
        }
        writer.finish()
    });
    let fill = ring_fill;
    let feed = async {
        // Buffers received but not yet handed to the writer. Readers take them from the ring at
        // once; the writer, which nobody waits for until the end, gets them in large batches, so
        // the hand-over (a thread wake-up) and the `writev` happen once per ~1 MiB.
        let mut pending: Vec<Bytes> = Vec::with_capacity(MAX_BATCH);
        let mut pending_len = 0;
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(format!("the source sent nothing for {idle:?}")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(format!("source body: {e}")),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            // Gather the frames that are already here (HTTP/2 delivers 16 KiB at a time), as the
            // source's own buffers (no copy): one lock and one announcement to the readers each.
            let mut next = Some(data);
            let mut ended = false;
            let mut gathered = 0;
            let first = pending.len();
            while let Some(data) = next.take() {
                if !data.is_empty() {
                    gathered += data.len();
                    pending.push(data);
                }
                if gathered >= COALESCE || pending.len() >= MAX_BATCH {
                    break;
                }
                match body.frame().now_or_never() {
                    Some(Some(Ok(frame))) => next = frame.into_data().ok().or(Some(Bytes::new())),
                    Some(Some(Err(e))) => return Err(format!("source body: {e}")),
                    Some(None) => ended = true,
                    None => {}
                }
            }
            pending_len += gathered;
            // Readers that keep up take these from memory now, before the disk has them.
            let end = {
                let mut ring = lock(&fill.ring);
                for data in &pending[first..] {
                    ring.push(data.clone());
                }
                ring.end()
            };
            fill.arrived.send_replace(end);
            if pending_len >= WRITE_BATCH || pending.len() >= MAX_BATCH {
                pending_len = 0;
                let batch = std::mem::replace(&mut pending, Vec::with_capacity(MAX_BATCH));
                if tx.send(batch).await.is_err() {
                    return Err("cache writer stopped".to_owned());
                }
            }
            if ended {
                break;
            }
        }
        if !pending.is_empty() && tx.send(pending).await.is_err() {
            return Err("cache writer stopped".to_owned());
        }
        Ok(())
    };
    let fed = feed.await;
    drop(tx);
    let written = writer.await.map_err(|e| format!("writer task: {e}"))?;
    // A verified blob is good whatever happened after its last byte; otherwise the source's
    // error says more than the writer's.
    match written {
        Ok(end) => Ok(end),
        Err(reason) => Err(fed.err().unwrap_or(reason)),
    }
}

/// The writing side of a fill: appends chunks, hashes them, verifies and commits. After a disk
/// failure it passes chunks to the readers through the fill's in-memory tail instead.
struct FillWriter {
    fill: Arc<Fill>,
    file: std::fs::File,
    hasher: ring::digest::Context,
    /// Bytes received from upstream.
    received: u64,
    /// Bytes written to the temp file. Invariant: equals `received` unless `disk_error` is set.
    on_disk: u64,
    /// Bytes announced to readers as `Growing`. Announcing every network frame (16 KiB on HTTP/2)
    /// would wake every reader for a tiny read each time; see [`FillWriter::write`].
    announced: u64,
    /// Why the disk is no longer used, once it failed.
    disk_error: Option<String>,
    /// The final byte of a known-length blob, held back from the tail until the digest matches.
    held: Option<(u64, Bytes)>,
    /// How long the writer waits for a reader that keeps the tail full.
    stall: Duration,
    runtime: tokio::runtime::Handle,
    /// Test hook: the disk "fills up" after this many bytes.
    disk_limit: Option<u64>,
}

impl FillWriter {
    /// Call from a blocking thread spawned by the runtime (the writer may wait for readers).
    fn new(
        fill: Arc<Fill>,
        file: std::fs::File,
        stall: Duration,
        runtime: tokio::runtime::Handle,
        disk_limit: Option<u64>,
    ) -> FillWriter {
        FillWriter {
            fill,
            file,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            received: 0,
            on_disk: 0,
            announced: 0,
            disk_error: None,
            held: None,
            stall,
            runtime,
            disk_limit,
        }
    }

    /// Appends a batch of chunks (blocking I/O: call from a blocking thread), hashes them and
    /// announces them to readers. A disk failure is not an error: the download goes on uncached.
    /// `more_queued` says another batch is already waiting: progress is then announced only once
    /// a read chunk's worth has accumulated (the status page and readers behind the memory ring
    /// read it).
    fn write(&mut self, batch: &[Bytes], more_queued: bool) {
        let offset = self.received;
        for chunk in batch {
            self.hasher.update(chunk);
            self.received += chunk.len() as u64;
        }
        if self.disk_error.is_none() {
            match self.write_disk(batch) {
                Ok(()) => {
                    lock(&self.fill.ring).written(self.on_disk);
                    if !more_queued || self.on_disk - self.announced >= READ_CHUNK as u64 {
                        self.announced = self.on_disk;
                        self.fill.set_state(FillState::Growing(self.on_disk));
                    }
                    return;
                }
                Err(e) => {
                    let reason = format!("cache write failed: {e}");
                    tracing::warn!(
                        digest = %self.fill.digest,
                        on_disk = self.on_disk,
                        %reason,
                        "cache disk failed; streaming the rest of the blob uncached"
                    );
                    self.disk_error = Some(reason);
                    // The tail takes over from the first byte not on disk; the ring, which
                    // relies on the file for what it drops, holds nothing from now on.
                    lock(&self.fill.ring).close();
                    lock(&self.fill.tail).next = self.on_disk;
                    self.fill.set_state(FillState::Uncached {
                        on_disk: self.on_disk,
                    });
                }
            }
        }
        // What the disk did not take goes to the readers through the tail.
        let mut at = offset;
        for chunk in batch {
            let len = chunk.len() as u64;
            if at + len > self.on_disk {
                let skip = usize::try_from(self.on_disk.saturating_sub(at)).unwrap_or(0);
                self.send_tail(at + skip as u64, chunk.slice(skip..));
            }
            at += len;
        }
    }

    /// Writes a batch to the temp file with vectored writes, advancing `on_disk` by what the file
    /// took (also when it then fails).
    fn write_disk(&mut self, batch: &[Bytes]) -> io::Result<()> {
        if let Some(limit) = self.disk_limit {
            // Test hook: the disk "fills up" at `limit`; the chunk that would cross it fails.
            for chunk in batch {
                if self.on_disk + chunk.len() as u64 > limit {
                    return Err(io::Error::from_raw_os_error(28)); // ENOSPC
                }
                self.file.write_all(chunk)?;
                self.on_disk += chunk.len() as u64;
            }
            return Ok(());
        }
        let mut index = 0;
        let mut within = 0;
        while index < batch.len() {
            let slices: Vec<IoSlice<'_>> = std::iter::once(&batch[index][within..])
                .chain(batch[index + 1..].iter().map(|c| &c[..]))
                .map(IoSlice::new)
                .collect();
            let mut n = match self.file.write_vectored(&slices) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.on_disk += n as u64;
            while index < batch.len() && n >= batch[index].len() - within {
                n -= batch[index].len() - within;
                index += 1;
                within = 0;
            }
            within += n;
        }
        Ok(())
    }

    /// Sends `chunk` (at `offset`) to the readers in pieces, holding back a known-length blob's
    /// final byte.
    fn send_tail(&mut self, offset: u64, chunk: Bytes) {
        let mut chunk = chunk;
        let mut offset = offset;
        if let Some(total) = self.fill.total()
            && offset + chunk.len() as u64 == total
            && !chunk.is_empty()
        {
            let last = chunk.split_off(chunk.len() - 1);
            self.held = Some((total - 1, last));
        }
        while !chunk.is_empty() {
            let piece = chunk.split_to(chunk.len().min(TAIL_PIECE));
            let len = piece.len() as u64;
            self.send_piece(offset, piece);
            offset += len;
        }
    }

    /// Adds one piece to the tail, first waiting while the tail is full for a reader that is still
    /// progressing; a reader that makes no progress for the stall limit is cut off.
    fn send_piece(&self, offset: u64, piece: Bytes) {
        loop {
            let mut tail = lock(&self.fill.tail);
            tail.trim();
            if tail.pieces.is_empty() || tail.buffered + piece.len() <= TAIL_BYTES {
                tail.buffered += piece.len();
                tail.next = offset + piece.len() as u64;
                tail.pieces.push_back((offset, piece));
                let next = tail.next;
                drop(tail);
                self.fill.sent.send_replace(next);
                return;
            }
            drop(tail);
            let taken = self.fill.taken.notified();
            let progressed = self
                .runtime
                .block_on(async { tokio::time::timeout(self.stall, taken).await.is_ok() });
            if !progressed {
                lock(&self.fill.tail).cut_slowest();
            }
        }
    }

    /// Checks length and digest; on success renames the temp file into place (blocking I/O), or,
    /// if the disk failed, releases the held-back byte to the readers.
    fn finish(mut self) -> Result<FillEnd, String> {
        if let Some(total) = self.fill.total()
            && total != self.received
        {
            return Err(format!(
                "the source sent {} of {total} bytes",
                self.received
            ));
        }
        let actual = Digest::from_ring(&self.hasher.clone().finish());
        if actual.as_ref() != Some(&self.fill.digest) {
            let actual = actual.map_or_else(String::new, |d| d.to_string());
            return Err(format!("{DIGEST_MISMATCH}: the content is {actual}"));
        }
        if self.disk_error.is_none() {
            match self.commit() {
                Ok(()) => return Ok(FillEnd::Committed(self.received)),
                Err(reason) => {
                    tracing::warn!(digest = %self.fill.digest, %reason, "cannot commit a verified blob; serving it uncached");
                    self.disk_error = Some(reason);
                }
            }
        }
        if let Some((offset, last)) = self.held.take() {
            self.send_piece(offset, last);
        }
        self.fill.set_state(FillState::Streamed {
            len: self.received,
            on_disk: self.on_disk,
        });
        Ok(FillEnd::Uncached {
            len: self.received,
            reason: self.disk_error.unwrap_or_default(),
        })
    }

    fn commit(&mut self) -> Result<(), String> {
        self.file
            .flush()
            .map_err(|e| format!("flush {}: {e}", self.fill.tmp_path.display()))?;
        DiskStore::commit(&self.fill.tmp_path, &self.fill.final_path)
            .map_err(|e| format!("commit: {e}"))
    }
}
