//! Whole blobs read straight from the bucket (no local copy: the local disk had no room, or the
//! copy under way can no longer serve the bytes asked) are checked on the way out: the last chunk
//! is held back until the bytes hashed to the blob's digest, so a corrupt or truncated bucket
//! object ends its transfer with an error, never as a clean whole body. A corrupt object is
//! reported to `on_corrupt` (which removes it from the bucket, so the next request misses).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::cache::store::ByteStream;
use crate::registry::digest::Digest;

/// `stream` (all `len` bytes of the blob `digest`), released to the reader only as far as it can
/// be trusted: everything but the last chunk as it arrives, the last once the digest matched.
pub(crate) fn verified(
    stream: ByteStream,
    digest: Digest,
    len: u64,
    on_corrupt: Box<dyn FnOnce() + Send + Sync>,
) -> ByteStream {
    Box::pin(Verified {
        inner: stream,
        digest,
        len,
        seen: 0,
        hasher: ring::digest::Context::new(&ring::digest::SHA256),
        held: None,
        on_corrupt: Some(on_corrupt),
        done: false,
    })
}

struct Verified {
    inner: ByteStream,
    digest: Digest,
    len: u64,
    /// Bytes received so far (hashed).
    seen: u64,
    hasher: ring::digest::Context,
    /// The newest chunk, not yet released. Invariant: `None` only before the first chunk.
    held: Option<Bytes>,
    on_corrupt: Option<Box<dyn FnOnce() + Send + Sync>>,
    done: bool,
}

impl Verified {
    /// At the end of the stream: the held chunk if the bytes are the blob, else an error.
    fn finish(&mut self) -> Option<io::Result<Bytes>> {
        self.done = true;
        if self.seen != self.len {
            return Some(Err(io::Error::other(format!(
                "bucket object {}: {} of {} bytes",
                self.digest, self.seen, self.len
            ))));
        }
        let actual = Digest::from_ring(&self.hasher.clone().finish());
        if actual.as_ref() != Some(&self.digest) {
            if let Some(report) = self.on_corrupt.take() {
                report();
            }
            let actual = actual.map_or_else(String::new, |d| d.to_string());
            return Some(Err(io::Error::other(format!(
                "bucket object {} is corrupt: its content is {actual}",
                self.digest
            ))));
        }
        self.held.take().map(Ok)
    }
}

impl Stream for Verified {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.hasher.update(&chunk);
                    this.seen += chunk.len() as u64;
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(this.finish()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures_util::StreamExt;

    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    async fn run(stream: ByteStream) -> (Vec<u8>, Option<String>) {
        let mut stream = stream;
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    fn flag() -> (Arc<AtomicBool>, Box<dyn FnOnce() + Send + Sync>) {
        let flag = Arc::new(AtomicBool::new(false));
        let set = flag.clone();
        (flag, Box::new(move || set.store(true, Ordering::SeqCst)))
    }

    #[tokio::test]
    async fn a_good_object_comes_through_whole() {
        let (corrupt, report) = flag();
        let stream = verified(
            chunks(&[b"abc", b"", b"def", b"g"]),
            Digest::sha256_of(b"abcdefg"),
            7,
            report,
        );
        assert_eq!(run(stream).await, (b"abcdefg".to_vec(), None));
        assert!(!corrupt.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_corrupt_object_never_ends_cleanly_and_is_reported() {
        let (corrupt, report) = flag();
        let stream = verified(
            chunks(&[b"abc", b"dXf", b"g"]),
            Digest::sha256_of(b"abcdefg"),
            7,
            report,
        );
        let (out, error) = run(stream).await;
        assert_eq!(out, b"abcdXf", "the last chunk is held back");
        assert!(error.is_some_and(|e| e.contains("corrupt")));
        assert!(corrupt.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_short_object_is_an_error_not_a_corruption() {
        let (corrupt, report) = flag();
        let stream = verified(
            chunks(&[b"abc", b"def"]),
            Digest::sha256_of(b"abcdefg"),
            7,
            report,
        );
        let (out, error) = run(stream).await;
        assert_eq!(out, b"abc");
        assert!(error.is_some_and(|e| e.contains("6 of 7 bytes")));
        assert!(!corrupt.load(Ordering::SeqCst), "a cut read proves nothing");
    }
}
