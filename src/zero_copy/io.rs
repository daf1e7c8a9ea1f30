//! The I/O of a plain-TCP client connection that turns placeholder bytes into `sendfile(2)` calls
//! (see the parent module for the scheme and its rules).

use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::{Sink, Span, is_placeholder, within_placeholder};

/// Bytes read per write when `sendfile` is refused and the file is copied instead.
const COPY_CHUNK: usize = 64 * 1024;

/// A connection's I/O that is a TCP socket underneath (possibly wrapped, e.g. with its
/// connection-limit slot).
pub trait TcpBacked: AsyncRead + AsyncWrite + Unpin {
    /// The socket, for readiness and as `sendfile`'s target.
    fn tcp(&self) -> &TcpStream;
}

impl TcpBacked for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// A plain-TCP connection's I/O: ordinary bytes are written as they are; placeholder bytes are
/// replaced by the file bytes its [`Sink`] records, sent with `sendfile`.
pub struct ZeroCopyIo<T> {
    io: T,
    sink: Sink,
    /// Set once `sendfile` was refused on this connection: copy through `buf` instead.
    pub(super) copying: bool,
    /// The copying fallback's buffer; empty unless it was needed.
    buf: Vec<u8>,
}

impl<T: TcpBacked> ZeroCopyIo<T> {
    /// Wraps a connection's I/O; `sink` is shared with its responses' bodies.
    pub fn new(io: T, sink: Sink) -> ZeroCopyIo<T> {
        ZeroCopyIo {
            io,
            sink,
            copying: false,
            buf: Vec::new(),
        }
    }

    fn poll_write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| is_placeholder(b)) else {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        };
        // Every placeholder byte offered must be accounted for by the sink, or none is sent.
        let mut offered = 0u64;
        for b in bufs.iter().filter(|b| is_placeholder(b)) {
            if !within_placeholder(b) {
                return Poll::Ready(Err(out_of_step("a placeholder slice runs past its buffer")));
            }
            offered += b.len() as u64;
        }
        if offered > self.sink.pending() {
            return Poll::Ready(Err(out_of_step(
                "placeholder bytes with no cache file recorded for them",
            )));
        }
        // What comes before the placeholder (a response head) goes out first, as it is.
        if bufs[..first].iter().any(|b| !b.is_empty()) {
            return Pin::new(&mut self.io).poll_write_vectored(cx, &bufs[..first]);
        }
        self.poll_send(cx, bufs[first].len())
    }

    /// Sends up to `want` bytes of the sink's front span.
    fn poll_send(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let Some(span) = self.sink.front() else {
            return Poll::Ready(Err(out_of_step("no cache file recorded")));
        };
        let count = usize::try_from(span.len).unwrap_or(usize::MAX).min(want);
        if self.copying {
            return self.poll_copy(cx, &span, count);
        }
        loop {
            let tcp = self.io.tcp();
            ready!(tcp.poll_write_ready(cx))?;
            let mut offset = span.offset;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(tcp, &*span.file, Some(&mut offset), count)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Poll::Ready(Err(shorter())),
                Ok(n) => {
                    self.sink.consumed(n as u64);
                    self.sink.shared.zero_copy.metrics.zero_copy_sent(n as u64);
                    return Poll::Ready(Ok(n));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if refused(&e) => {
                    self.sink.shared.zero_copy.unsupported(&e);
                    self.copying = true;
                    return self.poll_copy(cx, &span, count);
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The fallback where the kernel refuses `sendfile`: reads the span's next bytes from the
    /// file (a positional read, blocking briefly) and writes them.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        span: &Span,
        count: usize,
    ) -> Poll<io::Result<usize>> {
        let want = count.min(COPY_CHUNK);
        self.buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match span
                .file
                .read_at(&mut self.buf[filled..], span.offset + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if filled == 0 {
            return Poll::Ready(Err(shorter()));
        }
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[..filled]))?;
        self.sink.consumed(n as u64);
        Poll::Ready(Ok(n))
    }
}

/// `sendfile` cannot be used for this file (its file system, or the kernel, does not offer it).
fn refused(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    [
        rustix::io::Errno::INVAL,
        rustix::io::Errno::NOSYS,
        rustix::io::Errno::OPNOTSUPP,
    ]
    .iter()
    .any(|errno| code == Some(errno.raw_os_error()))
}

fn out_of_step(what: &str) -> io::Error {
    tracing::error!(
        what,
        "zero-copy response out of step; closing the connection"
    );
    io::Error::other(format!("zero-copy response out of step: {what}"))
}

fn shorter() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "cached file shorter than expected",
    )
}

impl<T: TcpBacked> TcpBacked for ZeroCopyIo<T> {
    fn tcp(&self) -> &TcpStream {
        self.io.tcp()
    }
}

impl<T: TcpBacked> AsyncRead for ZeroCopyIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: TcpBacked> AsyncWrite for ZeroCopyIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
