//! Zero-copy blob hits on plain-HTTP client connections: the response head is written by hyper,
//! the body is handed to the kernel with `sendfile(2)` from the cache file to the socket.
//!
//! hyper owns the connection and only writes what a body yields, so the body yields *placeholder*
//! chunks: slices of one static buffer ([`PLACEHOLDER`]) that is never sent. For every chunk it
//! yields, the body first records in the connection's [`Sink`] which file and offset those bytes
//! stand for. The connection's I/O ([`ZeroCopyIo`]) recognises placeholder slices among the
//! buffers hyper writes (by address: they lie inside [`PLACEHOLDER`]) and sends, for each such
//! byte, the byte of the file the sink names, in order, with `sendfile`.
//!
//! This rests on hyper passing body chunks to `poll_write_vectored` unchanged, which it does with
//! its queue write strategy (`hyper::proto::h1::io::WriteBuf`, strategy `Queue`), forced with
//! `http1::Builder::writev(true)`; the flatten strategy would copy the placeholder's bytes into
//! its own buffer instead. Hence the rules, each checked where it applies:
//! - only connections served with `writev(true)` and without `pipeline_flush` get a sink;
//! - placeholder bytes never reach the socket: a placeholder slice that the sink does not account
//!   for fails the connection (an I/O error, so the client sees an aborted transfer, never zeros);
//! - spans are recorded as chunks are yielded, never ahead, so a body dropped early (client gone,
//!   error) leaves nothing behind for the next response on a keep-alive connection;
//! - where `sendfile` is refused (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`: a file system that cannot do
//!   it), the bytes are read from the file and written instead, and zero-copy is switched off for
//!   later responses.

mod io;

pub use io::{TcpBacked, ZeroCopyIo};

use std::collections::VecDeque;
use std::fs::File;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::telemetry::Metrics;

/// The most bytes one placeholder chunk stands for (and one `sendfile` call sends).
pub const CHUNK: usize = 2 * 1024 * 1024;

/// The placeholder chunks' bytes. Zeros, so it lives in `.bss`; never read, never sent.
static PLACEHOLDER: [u8; CHUNK] = [0; CHUNK];

/// True if `bytes` lies inside [`PLACEHOLDER`] (an empty slice never does).
fn is_placeholder(bytes: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let at = bytes.as_ptr() as usize;
    !bytes.is_empty() && at >= start && at < start + CHUNK
}

/// True if `bytes` lies wholly inside [`PLACEHOLDER`]; a slice that only starts there is corrupt.
fn within_placeholder(bytes: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let at = bytes.as_ptr() as usize;
    at >= start && at.saturating_add(bytes.len()) <= start + CHUNK
}

/// Zero-copy for the whole proxy: whether it is on (`ZERO_COPY`, and not found unsupported), and
/// the metrics it counts into.
#[derive(Debug)]
pub struct ZeroCopy {
    /// Invariant: once false, stays false.
    on: AtomicBool,
    metrics: Arc<Metrics>,
}

impl ZeroCopy {
    /// Zero-copy as configured.
    pub fn new(enabled: bool, metrics: Arc<Metrics>) -> Arc<ZeroCopy> {
        Arc::new(ZeroCopy {
            on: AtomicBool::new(enabled),
            metrics,
        })
    }

    /// True while responses may use it.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The kernel refused `sendfile` for cache files: later responses take the ordinary path.
    fn unsupported(&self, error: &std::io::Error) {
        if self.on.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "sendfile(2) is not supported for the cache's files; ZERO_COPY off");
        }
    }

    /// A sink for a new plain-TCP connection, if zero-copy is on.
    pub fn sink(self: &Arc<Self>) -> Option<Sink> {
        self.is_on().then(|| Sink {
            shared: Arc::new(Shared {
                spans: Mutex::new(VecDeque::new()),
                zero_copy: self.clone(),
            }),
        })
    }
}

/// One connection's record of what its placeholder bytes stand for, in the order they were
/// yielded. Shared by the connection's I/O and the bodies of its responses.
#[derive(Clone, Debug)]
pub struct Sink {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Invariant: the spans' lengths sum to the placeholder bytes yielded and not yet sent.
    spans: Mutex<VecDeque<Span>>,
    zero_copy: Arc<ZeroCopy>,
}

/// `len` placeholder bytes stand for the file's bytes from `offset`.
#[derive(Debug, Clone)]
struct Span {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl Sink {
    fn spans(&self) -> std::sync::MutexGuard<'_, VecDeque<Span>> {
        self.shared
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True while responses on this connection may use zero-copy.
    pub fn is_on(&self) -> bool {
        self.shared.zero_copy.is_on()
    }

    /// A body of `len` bytes of `file` from `offset`, sent by the kernel on this connection.
    pub fn body(&self, file: File, offset: u64, len: u64) -> Body {
        self.shared.zero_copy.metrics.zero_copy_response();
        http_body_util::BodyExt::boxed(PlaceholderBody {
            sink: self.clone(),
            file: Arc::new(file),
            next: offset,
            end: offset.saturating_add(len),
        })
    }

    /// The span the next placeholder bytes stand for.
    fn front(&self) -> Option<Span> {
        self.spans().front().cloned()
    }

    /// Placeholder bytes accounted for, in all.
    fn pending(&self) -> u64 {
        self.spans().iter().map(|s| s.len).sum()
    }

    /// `n` bytes of the front span went out.
    fn consumed(&self, n: u64) {
        let mut spans = self.spans();
        if let Some(front) = spans.front_mut() {
            front.offset += n;
            front.len = front.len.saturating_sub(n);
            if front.len == 0 {
                spans.pop_front();
            }
        }
    }
}

/// Yields placeholder chunks for `next..end` of `file`, recording each in the sink first.
struct PlaceholderBody {
    sink: Sink,
    file: Arc<File>,
    next: u64,
    end: u64,
}

impl http_body::Body for PlaceholderBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let left = self.end.saturating_sub(self.next);
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let span = Span {
            file: self.file.clone(),
            offset: self.next,
            len: n as u64,
        };
        self.sink.spans().push_back(span);
        self.next += n as u64;
        let chunk = Bytes::from_static(&PLACEHOLDER[..n]);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.next))
    }
}

#[cfg(test)]
mod tests;
