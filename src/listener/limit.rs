//! `MAX_CONNECTIONS`: a cap on open client connections across both listeners, and (a cap of its
//! own, of the same size) on the peer port (`PEER_LISTEN`, `peer/listen.rs`). A connection holds
//! its slot until it closes — also after it became a tunnel or an intercepted TLS session, because
//! the slot travels inside the connection's I/O object ([`Counted`]).
//!
//! Beyond the cap a small reserve of connections is still read: `GET /healthz` answers `200 ok`
//! (a liveness probe must not fail because clients are busy), anything else a minimal `503`. When
//! the reserve is used up too, a `503` is written without reading and the connection is closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Over-cap connections read at the same time, at most.
const RESERVE: usize = 32;
/// The most of an over-cap request head we read.
const MAX_OVER_CAP_HEAD: usize = 8 * 1024;
/// The longest an over-cap connection is given to send its request head (or TLS handshake).
pub(crate) const OVER_CAP_TIMEOUT: Duration = Duration::from_secs(5);

const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n";
const HEALTHY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";

/// The connection cap shared by the listeners.
#[derive(Debug)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    /// Set while connections are being turned away, so that the cap is logged once per episode.
    full: AtomicBool,
}

/// What to do with a newly accepted connection.
pub(crate) enum Admission {
    /// Serve it; the permit is its slot.
    Admitted(OwnedSemaphorePermit),
    /// Over the cap: answer `/healthz` or `503` (the permit is a reserve place).
    OverCap(OwnedSemaphorePermit),
    /// Over the cap and the reserve: `503` at once.
    Rejected,
}

impl ConnectionLimit {
    /// A cap of `max` connections (at least one).
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            reserve: Arc::new(Semaphore::new(RESERVE)),
            full: AtomicBool::new(false),
        }
    }

    pub(crate) fn admit(&self) -> Admission {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            if self.full.swap(false, Ordering::Relaxed) {
                tracing::info!("below MAX_CONNECTIONS again");
            }
            return Admission::Admitted(slot);
        }
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!("MAX_CONNECTIONS reached: new connections get 503 until some close");
        }
        match self.reserve.clone().try_acquire_owned() {
            Ok(place) => Admission::OverCap(place),
            Err(_) => Admission::Rejected,
        }
    }
}

/// A client connection's I/O holding its slot; the slot is released when this is dropped.
pub(crate) struct Counted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
}

impl<IO> Counted<IO> {
    pub(crate) fn new(io: IO, slot: OwnedSemaphorePermit) -> Counted<IO> {
        Counted { io, _slot: slot }
    }
}

impl crate::zero_copy::TcpBacked for Counted<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
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

/// Turns a connection away without reading from it (the reserve is used up too).
pub(crate) fn reject_now(stream: &TcpStream) {
    // Best effort: a full socket buffer or a reset just means the client sees the close.
    let _ = stream.try_write(UNAVAILABLE);
}

/// Answers one request on an over-cap connection: `GET`/`HEAD /healthz` → `200 ok`, anything else
/// `503`; then closes. The whole exchange is bounded by [`OVER_CAP_TIMEOUT`].
pub(crate) async fn answer_over_cap<IO>(mut io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_OVER_CAP_HEAD {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let reply = if is_health_check(&head) {
            HEALTHY
        } else {
            UNAVAILABLE
        };
        if io.write_all(reply).await.is_ok() {
            let _ = io.shutdown().await;
            // Read what the client still sends until it closes, so the close is not a reset
            // that could destroy the reply in flight.
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(OVER_CAP_TIMEOUT, exchange).await;
}

/// True if the request line is `GET /healthz` or `HEAD /healthz` (HTTP/1.x).
fn is_health_check(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.trim_ascii().split(|b| *b == b' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let version = words.next().unwrap_or_default();
    matches!(method, b"GET" | b"HEAD")
        && target == b"/healthz"
        && version.starts_with(b"HTTP/1.")
        && words.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_are_recognised() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", true),
            (b"HEAD /healthz HTTP/1.0\r\n\r\n", true),
            (b"GET /healthz HTTP/1.1", true),
            (b"GET /healthz?x HTTP/1.1\r\n\r\n", false),
            (b"GET /healthzz HTTP/1.1\r\n\r\n", false),
            (b"POST /healthz HTTP/1.1\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\n\r\n", false),
            (b"CONNECT a:443 HTTP/1.1\r\n\r\n", false),
            (b"GET /healthz\r\n\r\n", false),
            (b"", false),
        ];
        for (head, expected) in cases {
            assert_eq!(
                is_health_check(head),
                *expected,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn slots_are_released_on_drop() {
        let limit = ConnectionLimit::new(1);
        let first = match limit.admit() {
            Admission::Admitted(slot) => slot,
            _ => panic!("the first connection is admitted"),
        };
        assert!(matches!(limit.admit(), Admission::OverCap(_)));
        drop(first);
        assert!(matches!(limit.admit(), Admission::Admitted(_)));
        // The reserve is bounded too.
        let _slot = limit.admit();
        let places: Vec<Admission> = (0..RESERVE).map(|_| limit.admit()).collect();
        assert!(places.iter().all(|a| matches!(a, Admission::OverCap(_))));
        assert!(matches!(limit.admit(), Admission::Rejected));
    }

    #[tokio::test]
    async fn over_cap_answers() {
        for (request, expected) in [
            (&b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"[..], HEALTHY),
            (&b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n"[..], UNAVAILABLE),
        ] {
            let (mut client, server) = tokio::io::duplex(4096);
            let task = tokio::spawn(answer_over_cap(server));
            client.write_all(request).await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            assert_eq!(reply, expected);
            drop(client);
            task.await.unwrap();
        }
    }
}
