//! Plain-TCP client connections between requests: parked outside hyper. hyper keeps an 8 KiB read
//! buffer and an 8 KiB write buffer for every HTTP/1 connection it runs (`INIT_BUFFER_SIZE`, not
//! configurable), so 10,000 idle keep-alive clients cost over 100 MiB. Here an idle connection is
//! only its socket and this task: each request is served by a hyper connection of its own on the
//! same socket, which ends (without closing the socket) once the response is written, and the next
//! one starts when the client sends its next byte. nginx frees its buffers on idle keep-alive
//! connections the same way.
//!
//! A segment ends after its response only when keeping the connection is what hyper would have
//! done anyway: an HTTP/1.1 request without `Connection: close` and without a body (so nothing of
//! it can be left unread). Otherwise hyper finishes the connection as it always does, and so does a
//! connection whose next request starts with `C` (`CONNECT`: the rest of it is served by
//! `serve_front`, with hyper's upgrades). Bytes a client pipelined behind a request are handed to
//! the next segment first ([`Rewind`]).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::CONNECTION;
use http::{Method, Request, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{Answer, Conn, front, http1_builder, serve_front};
use crate::serve::State;
use crate::zero_copy::TcpBacked;

/// What the client does next.
enum Next {
    /// Sends a request hyper may serve in a segment.
    Request,
    /// Sends something that may be a `CONNECT` (or a head starting with empty lines).
    Connect,
    /// Closed, failed, or stayed silent past the header timeout.
    Gone,
}

/// Serves a plain-TCP client connection, parking it between requests.
pub(super) async fn serve_parked<T>(state: Arc<State>, conn: Conn, io: T)
where
    T: TcpBacked + Send + 'static,
{
    let header_timeout = state.config.timeouts.client_header;
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let mut io = Rewind::new(io);
    loop {
        match next(&io, header_timeout).await {
            Next::Request => {}
            Next::Connect => return serve_front(state, (*conn).clone(), io).await,
            Next::Gone => return,
        }
        let park = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let service = {
            let (state, conn, park) = (state.clone(), conn.clone(), park.clone());
            service_fn(move |req: Request<Incoming>| {
                let (state, conn, park) = (state.clone(), conn.clone(), park.clone());
                // Only a segment's first request may end it: a request pipelined behind it that
                // hyper started meanwhile leaves the connection to hyper, as it always was.
                let first = requests.fetch_add(1, Ordering::Relaxed) == 0;
                if !first {
                    park.store(false, Ordering::Relaxed);
                }
                Box::pin(async move {
                    let keep = first && may_park(&req);
                    let response = front(state, &conn, req).await;
                    // hyper writes the head as soon as this future is ready: the segment ends
                    // after this response, which went out as a keep-alive one.
                    if first {
                        park.store(keep, Ordering::Relaxed);
                    }
                    Ok::<_, Infallible>(response)
                }) as Answer
            })
        };
        let mut segment = http1_builder(header_timeout).serve_connection(TokioIo::new(io), service);
        let mut ending = false;
        let served = std::future::poll_fn(|cx| {
            loop {
                let polled = segment.poll_without_shutdown(cx);
                if !ending && park.load(Ordering::Relaxed) {
                    ending = true;
                    Pin::new(&mut segment).graceful_shutdown();
                    continue;
                }
                return polled;
            }
        })
        .await;
        if let Err(e) = served {
            tracing::debug!(%peer, error = %e, "client connection ended with an error");
            return;
        }
        let parts = segment.into_parts();
        let mut rest = parts.io.into_inner();
        if !park.load(Ordering::Relaxed) {
            // hyper chose to close (the client asked for it, or a body was left unread).
            let _ = rest.shutdown().await;
            return;
        }
        rest.unread(parts.read_buf);
        io = rest;
    }
}

/// True if the connection can be parked after answering `req`.
fn may_park(req: &Request<Incoming>) -> bool {
    let close = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"));
    req.version() == Version::HTTP_11
        && !close
        && req.method() != Method::CONNECT
        && req.body().is_end_stream()
}

/// Waits, holding no buffer, until the client sends its next request (or closes, or times out).
async fn next<T: TcpBacked>(io: &Rewind<T>, timeout: Duration) -> Next {
    let classify = |first: u8| match first {
        b'C' | b'\r' | b'\n' => Next::Connect,
        _ => Next::Request,
    };
    if let Some(first) = io.prefix.first() {
        return classify(*first);
    }
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, io.tcp().peek(&mut first)).await {
        Ok(Ok(1)) => classify(first[0]),
        _ => Next::Gone,
    }
}

/// A connection's I/O with bytes already read from it in front (what the last segment read ahead).
pub(super) struct Rewind<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Rewind<T> {
    fn new(io: T) -> Rewind<T> {
        Rewind {
            prefix: Bytes::new(),
            io,
        }
    }

    /// Puts `bytes` back in front of what the socket delivers next.
    fn unread(&mut self, bytes: Bytes) {
        self.prefix = bytes;
    }
}

impl<T: TcpBacked> TcpBacked for Rewind<T> {
    fn tcp(&self) -> &TcpStream {
        self.io.tcp()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
