//! Single-flight blob downloads. A [`Fill`] is one upstream download of one blob into a temp file;
//! every client that wants the blob meanwhile reads the temp file as it grows, so time to first byte
//! never waits for the whole blob and a slow client never slows the download.
//!
//! What a reader may send is decided by [`FillState`]: while the download is growing, everything
//! written except the final byte of a known-length blob; the final byte only once the digest has
//! been verified (`Done`). A `Failed` fill ends every reader's body with an error, so a client sees
//! an aborted transfer, never a clean end of a short or wrong body.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use crate::registry::digest::Digest;

/// Bytes read from disk per chunk sent to a client.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// Progress of a fill, broadcast to readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillState {
    /// Waiting for the upstream's response headers.
    Pending,
    /// Bytes written to the temp file so far.
    Growing(u64),
    /// Verified and committed at the blob's final path; the length.
    Done(u64),
    /// Nothing was committed; readers must abort. The reason is for logs.
    Failed(String),
}

/// One in-flight download.
#[derive(Debug)]
pub struct Fill {
    pub digest: Digest,
    /// Temp file the download writes to. Invariant: exists from creation until commit or failure.
    pub(crate) tmp_path: PathBuf,
    /// Where the blob lives once committed.
    pub(crate) final_path: PathBuf,
    /// Total length announced by the upstream (`Content-Length`), once known.
    total: watch::Sender<Option<u64>>,
    state: watch::Sender<FillState>,
}

impl Fill {
    pub(crate) fn new(digest: Digest, tmp_path: PathBuf, final_path: PathBuf) -> Fill {
        Fill {
            digest,
            tmp_path,
            final_path,
            total: watch::Sender::new(None),
            state: watch::Sender::new(FillState::Pending),
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

    /// Waits until the upstream has answered: `Ok(total)` once bytes flow (or are done), `Err` if the
    /// fill failed before that.
    pub async fn started(&self) -> Result<Option<u64>, String> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                FillState::Pending => {}
                FillState::Growing(_) | FillState::Done(_) => return Ok(self.total()),
                FillState::Failed(reason) => return Err(reason.clone()),
            }
            if rx.changed().await.is_err() {
                return Err("download abandoned".into());
            }
        }
    }

    /// A stream of the bytes `start..=end` (or to the end), read as the blob grows.
    pub fn reader(
        self: &Arc<Self>,
        start: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + use<> {
        let fill = self.clone();
        let state = ReaderState {
            rx: fill.state.subscribe(),
            fill,
            file: None,
            pos: start,
            end,
        };
        futures_util::stream::unfold(state, |mut s| async move {
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
        })
    }
}

struct ReaderState {
    fill: Arc<Fill>,
    rx: watch::Receiver<FillState>,
    file: Option<std::fs::File>,
    pos: u64,
    /// Inclusive last byte wanted, if a range.
    end: Option<u64>,
}

impl ReaderState {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if let Some(end) = self.end
                && self.pos > end
            {
                return Ok(None);
            }
            let state = self.rx.borrow_and_update().clone();
            let total = self.fill.total();
            // How far this reader may go now.
            let limit = match &state {
                FillState::Pending => 0,
                FillState::Growing(written) => match total {
                    // Hold back the last byte until the digest is verified.
                    Some(t) => (*written).min(t.saturating_sub(1)),
                    None => *written,
                },
                FillState::Done(len) => *len,
                FillState::Failed(reason) => {
                    return Err(io::Error::other(format!(
                        "upstream download failed: {reason}"
                    )));
                }
            };
            let limit = match self.end {
                Some(end) => limit.min(end.saturating_add(1)),
                None => limit,
            };
            if self.pos < limit {
                let want = usize::try_from(limit - self.pos)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let bytes = self.read(want).await?;
                if bytes.is_empty() {
                    return Err(io::Error::other("blob file shorter than announced"));
                }
                self.pos += bytes.len() as u64;
                return Ok(Some(bytes));
            }
            if let FillState::Done(len) = state
                && (self.pos >= len || self.end.is_some_and(|e| self.pos > e))
            {
                return Ok(None);
            }
            if self.rx.changed().await.is_err() {
                return Err(io::Error::other("download abandoned"));
            }
        }
    }

    async fn read(&mut self, want: usize) -> io::Result<Bytes> {
        let file = match self.file.take() {
            Some(f) => f,
            None => open_fill_file(&self.fill)?,
        };
        let pos = self.pos;
        let (file, result) = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let result = read_at(&mut file, pos, want);
            (file, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.file = Some(file);
        result
    }
}

/// Opens the temp file, or the final file if the fill was committed meanwhile (the rename happens
/// just before `Done` is announced; a file at the final path is always complete and verified).
fn open_fill_file(fill: &Fill) -> io::Result<std::fs::File> {
    match std::fs::File::open(&fill.tmp_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::File::open(&fill.final_path),
        other => other,
    }
}

pub(crate) fn read_at(file: &mut std::fs::File, pos: u64, want: usize) -> io::Result<Bytes> {
    file.seek(SeekFrom::Start(pos))?;
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// The writing side of a fill: appends chunks, hashes them, verifies and commits.
pub(crate) struct FillWriter {
    pub(crate) fill: Arc<Fill>,
    file: std::fs::File,
    hasher: ring::digest::Context,
    written: u64,
}

impl FillWriter {
    pub(crate) fn new(fill: Arc<Fill>, file: std::fs::File) -> FillWriter {
        FillWriter {
            fill,
            file,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            written: 0,
        }
    }

    /// Appends a chunk (blocking I/O: call from a blocking thread) and announces it to readers.
    pub(crate) fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        self.fill.set_state(FillState::Growing(self.written));
        Ok(())
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Checks length and digest; on success renames the temp file into place (blocking I/O).
    pub(crate) fn finish(self) -> Result<u64, String> {
        if let Some(total) = self.fill.total()
            && total != self.written
        {
            return Err(format!("upstream sent {} of {total} bytes", self.written));
        }
        let actual = self.hasher.finish();
        let mut hex = String::with_capacity(64);
        for b in actual.as_ref() {
            hex.push_str(&format!("{b:02x}"));
        }
        if hex != self.fill.digest.encoded() {
            return Err(format!("digest mismatch: upstream content is sha256:{hex}"));
        }
        drop(self.file);
        if let Some(parent) = self.fill.final_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        std::fs::rename(&self.fill.tmp_path, &self.fill.final_path)
            .map_err(|e| format!("commit: {e}"))?;
        Ok(self.written)
    }
}
