//! Reading blob files in chunks for clients, cheaply: positional reads (no seek), into a few
//! buffers per stream that are reused once the client's connection has sent them, so a warm
//! transfer touches no fresh memory (no page faults, no allocator churn) whatever its size.

use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

/// Bytes read from disk per chunk sent to a client.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// Buffers kept per stream: enough for the chunks a connection holds while sending, plus one.
const POOL: usize = 3;

/// A file and the buffers its chunks are read into. Blocking: use from a blocking thread.
#[derive(Debug)]
pub(crate) struct ChunkReader {
    file: std::fs::File,
    /// Buffers whose earlier chunks may still be in flight; reclaimed when they are not.
    pool: Vec<BytesMut>,
}

impl ChunkReader {
    pub(crate) fn new(file: std::fs::File) -> ChunkReader {
        ChunkReader {
            file,
            pool: Vec::with_capacity(POOL),
        }
    }

    /// Reads up to `want` bytes at `pos` (fewer only at the end of the file).
    pub(crate) fn read_at(&mut self, pos: u64, want: usize) -> io::Result<Bytes> {
        let mut buf = self.buffer(want);
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match self.file.read_at(&mut buf[filled..], pos + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        let chunk = buf.split().freeze();
        self.pool.push(buf);
        Ok(chunk)
    }

    /// A buffer with room for `want` bytes: a pooled one whose chunks have all been sent, else new.
    fn buffer(&mut self, want: usize) -> BytesMut {
        if let Some(i) = self.pool.iter_mut().position(|b| b.try_reclaim(want)) {
            return self.pool.swap_remove(i);
        }
        if self.pool.len() >= POOL {
            self.pool.remove(0);
        }
        BytesMut::with_capacity(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chunks_and_reuses_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut reader = ChunkReader::new(std::fs::File::open(&path).unwrap());
        let mut out = Vec::new();
        let mut pos = 0u64;
        let mut first_ptr = None;
        loop {
            let chunk = reader.read_at(pos, 8192).unwrap();
            if chunk.is_empty() {
                break;
            }
            first_ptr.get_or_insert(chunk.as_ptr() as usize);
            pos += chunk.len() as u64;
            out.extend_from_slice(&chunk);
            // `chunk` is dropped here, as a connection drops what it has sent.
        }
        assert_eq!(out, data);
        let again = reader.read_at(0, 8192).unwrap();
        assert_eq!(&again[..], &data[..8192]);
        assert!(reader.pool.len() <= POOL);
        assert_eq!(
            again.as_ptr() as usize,
            first_ptr.unwrap(),
            "buffer reused once its chunk was dropped"
        );
        // A chunk still held forces a fresh buffer instead of being overwritten.
        let held = reader.read_at(0, 8192).unwrap();
        let next = reader.read_at(8192, 8192).unwrap();
        assert_eq!(&held[..], &data[..8192]);
        assert_eq!(&next[..], &data[8192..16384]);
    }
}
