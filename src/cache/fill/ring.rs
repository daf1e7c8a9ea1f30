//! The memory ring of a download in flight: the most recent chunks received from the source, as
//! the source's own buffers (no copy), shared by every reader. A reader that keeps up takes its
//! bytes from here as soon as they arrive, before they are written to the temp file; a reader that
//! falls behind the ring reads back from the temp file instead, so a stalled client never holds
//! memory and never slows the download.
//!
//! A chunk leaves the ring once the ring holds more than [`RING_BYTES`] and the chunk is in the
//! temp file: the bytes a reader cannot find here are always readable from the file. The ring
//! therefore holds at most [`RING_BYTES`] plus what the writer has not written yet (bounded by the
//! writer's queue). It is emptied for good when the disk fails: the in-memory tail of an uncached
//! download (`growing.rs`) takes over.

use std::collections::VecDeque;

use bytes::Bytes;

/// Bytes the ring keeps once they are in the temp file (the newest ones).
pub(crate) const RING_BYTES: usize = 4 * 1024 * 1024;

/// Recent chunks of one download.
#[derive(Debug, Default)]
pub(super) struct Ring {
    /// Contiguous chunks `(offset, bytes)`, oldest first, none empty.
    chunks: VecDeque<(u64, Bytes)>,
    /// Invariant: the sum of the chunks' lengths.
    held: usize,
    /// Offset after the last byte received. Invariant: the end of the last chunk, if any.
    end: u64,
    /// Bytes below this offset are in the temp file and may leave the ring.
    on_disk: u64,
    /// The disk failed: the ring takes no more chunks and holds none.
    closed: bool,
}

impl Ring {
    /// Appends the next chunk received (at offset `end`), then drops what may go.
    pub(super) fn push(&mut self, chunk: Bytes) {
        let len = chunk.len();
        if len == 0 {
            return;
        }
        let offset = self.end;
        self.end += len as u64;
        if self.closed {
            return;
        }
        self.held += len;
        self.chunks.push_back((offset, chunk));
        self.evict();
    }

    /// Offset after the last byte received.
    pub(super) fn end(&self) -> u64 {
        self.end
    }

    /// Bytes below this offset are in the temp file.
    pub(super) fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// Records that the temp file holds every byte below `on_disk`.
    pub(super) fn written(&mut self, on_disk: u64) {
        self.on_disk = self.on_disk.max(on_disk);
        self.evict();
    }

    /// The disk failed: drops every chunk and takes no more.
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.chunks.clear();
        self.held = 0;
    }

    /// Offset of the oldest byte held (the end if none).
    #[cfg(test)]
    pub(super) fn base(&self) -> u64 {
        self.chunks.front().map_or(self.end, |(offset, _)| *offset)
    }

    /// Bytes held (for tests of the bound).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held
    }

    fn evict(&mut self) {
        while self.held > RING_BYTES {
            let Some((offset, bytes)) = self.chunks.front() else {
                break;
            };
            if offset + bytes.len() as u64 > self.on_disk {
                break; // not in the file yet: it must stay readable here
            }
            self.held -= bytes.len();
            self.chunks.pop_front();
        }
    }

    /// The bytes from `pos` up to (not including) `limit`, at most to the end of the chunk that
    /// holds `pos`. `Err(())` if `pos` has left the ring (read it from the file); `Ok(None)` if
    /// nothing at `pos` has arrived below `limit` yet.
    pub(super) fn read(&self, pos: u64, limit: u64) -> Result<Option<Bytes>, Behind> {
        let limit = limit.min(self.end);
        if pos >= limit {
            return Ok(None);
        }
        let index = self
            .chunks
            .partition_point(|(offset, bytes)| offset + bytes.len() as u64 <= pos);
        let Some((offset, bytes)) = self.chunks.get(index) else {
            return Err(Behind);
        };
        if *offset > pos {
            return Err(Behind);
        }
        // Both differences are below the chunk's length, a usize.
        let from = usize::try_from(pos - offset).map_err(|_| Behind)?;
        let to =
            usize::try_from(limit.min(offset + bytes.len() as u64) - offset).map_err(|_| Behind)?;
        Ok(Some(bytes.slice(from..to)))
    }
}

/// The bytes asked for have left the ring (they are in the temp file).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Behind;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is a failed test
    use super::*;

    fn chunk(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_add(seed))
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn reads_within_and_across_chunks_up_to_the_limit() {
        let mut ring = Ring::default();
        let a = chunk(100, 0);
        let b = chunk(50, 7);
        ring.push(a.clone());
        ring.push(b.clone());
        assert_eq!(ring.end(), 150);
        assert_eq!(ring.read(0, 150).unwrap().unwrap(), a);
        assert_eq!(ring.read(10, 20).unwrap().unwrap(), a.slice(10..20));
        assert_eq!(ring.read(100, 149).unwrap().unwrap(), b.slice(0..49));
        assert_eq!(ring.read(120, u64::MAX).unwrap().unwrap(), b.slice(20..));
        assert_eq!(ring.read(150, u64::MAX), Ok(None), "not arrived yet");
        assert_eq!(ring.read(149, 149), Ok(None), "held back by the limit");
    }

    #[test]
    fn keeps_what_is_not_on_disk_and_drops_the_oldest_that_is() {
        let mut ring = Ring::default();
        let piece = RING_BYTES / 4;
        for i in 0..8 {
            ring.push(chunk(piece, i));
        }
        // Nothing written yet: everything stays, whatever the bound.
        assert_eq!(ring.held(), 8 * piece);
        assert!(ring.read(0, 1).unwrap().is_some());
        ring.written(3 * piece as u64);
        assert_eq!(ring.held(), 5 * piece, "only chunks in the file may go");
        assert_eq!(ring.read(0, 1), Err(Behind));
        assert!(ring.read(3 * piece as u64, u64::MAX).unwrap().is_some());
        ring.written(8 * piece as u64);
        assert_eq!(ring.held(), RING_BYTES);
        assert_eq!(ring.read(4 * piece as u64 - 1, u64::MAX), Err(Behind));
        assert!(ring.read(4 * piece as u64, u64::MAX).unwrap().is_some());
    }

    #[test]
    fn a_closed_ring_holds_nothing_but_counts_on() {
        let mut ring = Ring::default();
        ring.push(chunk(10, 0));
        ring.close();
        ring.push(chunk(10, 1));
        assert_eq!(ring.held(), 0);
        assert_eq!(ring.end(), 20);
        assert_eq!(ring.read(0, 20), Err(Behind));
    }
}
