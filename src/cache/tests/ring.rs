//! Readers of a download in flight and the memory ring: bytes from memory before the disk has
//! them, a reader that falls behind the ring and catches up from the temp file, followers joining
//! at different times, and failures (a wrong digest, a source dying) once the ring has wrapped.

use super::*;
use crate::cache::fill::RING_BYTES;

/// Sends `bytes` in `chunk`-sized pieces without ending the body.
async fn send_part(feed: &Feed, bytes: &[u8], chunk: usize) {
    for piece in bytes.chunks(chunk) {
        feed.tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
    }
}

/// Waits until `ready` holds (a condition, not a time limit: the test harness bounds the test).
async fn until(mut ready: impl FnMut() -> bool) {
    while !ready() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads `n` bytes from `stream`.
async fn read_n(stream: &mut store::ByteStream, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let chunk = stream.next().await.unwrap().unwrap();
        out.extend_from_slice(&chunk);
    }
    out
}

/// Everything a stream yields before it ends, and the error it ended with, if any.
async fn drain(mut stream: store::ByteStream) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
    (out, None)
}

fn temp_len(growing: &Growing) -> u64 {
    std::fs::metadata(&growing.fill().tmp_path)
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_bytes_reach_readers_from_memory_before_the_disk() {
    let (_dir, cache) = open_cache(None);
    let blob = data(3 * RING_BYTES, 5);
    let digest = Digest::sha256_of(&blob);
    let len = blob.len() as u64;
    let (growing, feed) = start(&cache, &digest, Some(len), Duration::from_secs(5)).await;
    let mut reader = growing.reader(0, None).unwrap();
    // Less than the writer takes at once: nothing of it is in the temp file yet.
    send_part(&feed, &blob[..100_000], 10_000).await;
    let first = read_n(&mut reader, 100_000).await;
    assert_eq!(first, &blob[..100_000]);
    assert_eq!(temp_len(&growing), 0, "served before the disk had it");
    send_part(&feed, &blob[100_000..], 64 * 1024).await;
    drop(feed.tx);
    let (rest, error) = drain(reader).await;
    assert_eq!(error, None);
    assert_eq!(rest, &blob[100_000..]);
    assert_eq!(feed.ended.await.unwrap(), Ok(FillEnd::Committed(len)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_behind_the_ring_catches_up_from_the_file() {
    let (_dir, cache) = open_cache(None);
    let blob = data(6 * RING_BYTES, 6);
    let digest = Digest::sha256_of(&blob);
    let len = blob.len() as u64;
    let (growing, feed) = start(&cache, &digest, Some(len), Duration::from_secs(5)).await;
    // Attached from the start, but reading nothing while half the blob arrives.
    let mut slow = growing.reader(0, None).unwrap();
    let half = blob.len() / 2;
    send_part(&feed, &blob[..half], 64 * 1024).await;
    let fill = growing.fill().clone();
    until(|| fill.ring_window().0 > 0).await;
    let (base, held) = fill.ring_window();
    // The ring's bound, plus what the writer has not written yet (its queue and batch).
    assert!(
        held <= RING_BYTES + 7 * 1024 * 1024,
        "ring held {held} bytes"
    );
    // The start has left memory: it comes from the file, while the download is still running.
    let early = read_n(&mut slow, usize::try_from(base).unwrap()).await;
    assert_eq!(early, &blob[..early.len()]);
    assert!(matches!(fill.state(), FillState::Growing(_)));
    // Caught up: the rest as it arrives.
    let (rest, error, end) = {
        let sending = async {
            send_part(&feed, &blob[half..], 64 * 1024).await;
            drop(feed.tx);
            feed.ended.await.unwrap()
        };
        let ((rest, error), end) = tokio::join!(drain(slow), sending);
        (rest, error, end)
    };
    assert_eq!(error, None);
    assert_eq!(end, Ok(FillEnd::Committed(len)));
    let mut whole = early;
    whole.extend_from_slice(&rest);
    assert!(whole == blob.as_ref(), "byte-exact after catching up");
}

#[tokio::test(flavor = "multi_thread")]
async fn herd_followers_joining_at_different_times_get_exact_bytes() {
    let (_dir, cache) = open_cache(None);
    let blob = data(5 * RING_BYTES + 12_345, 7);
    let digest = Digest::sha256_of(&blob);
    let len = blob.len() as u64;
    let (growing, feed) = start(&cache, &digest, Some(len), Duration::from_secs(5)).await;
    let fill = growing.fill().clone();
    let leader = tokio::spawn(drain(growing.reader(0, None).unwrap()));
    let mut followers = Vec::new();
    let steps = [0, RING_BYTES / 3, 2 * RING_BYTES, 4 * RING_BYTES];
    for (i, window) in steps.windows(2).enumerate() {
        send_part(&feed, &blob[window[0]..window[1]], 50_000).await;
        if i == 2 {
            // This one joins after the ring moved past the start.
            until(|| fill.ring_window().0 > 0).await;
        }
        let (joiner, _unused) = source(Some(len), Duration::from_secs(5));
        let growing = match cache.get_or_fill(&digest, Some(joiner)).await {
            Got::Joined(growing) => growing,
            _ => panic!("expected to join the download in flight"),
        };
        followers.push(tokio::spawn(drain(growing.reader(0, None).unwrap())));
        // And one that wants a range across what has arrived and what has not.
        let from = window[1] as u64 - 1000;
        followers.push(tokio::spawn(drain(
            growing.reader(from, Some(from + 2 * 1024 * 1024)).unwrap(),
        )));
    }
    send_part(&feed, &blob[steps[3]..], 50_000).await;
    drop(feed.tx);
    assert_eq!(feed.ended.await.unwrap(), Ok(FillEnd::Committed(len)));
    let (bytes, error) = leader.await.unwrap();
    assert_eq!(error, None);
    assert!(bytes == blob.as_ref(), "leader byte-exact");
    for (i, follower) in followers.into_iter().enumerate() {
        let (bytes, error) = follower.await.unwrap();
        assert_eq!(error, None, "follower {i}");
        let expected = if i % 2 == 0 {
            &blob[..]
        } else {
            let from = steps[i / 2 + 1] - 1000;
            &blob[from..=from + 2 * 1024 * 1024]
        };
        assert!(bytes == expected, "follower {i} byte-exact");
    }
    // And one after the commit.
    match cache.get_or_fill::<TestSource>(&digest, None).await {
        Got::Stored(stored) => {
            assert!(collect(stored.reader(0, len - 1)).await.unwrap() == blob.as_ref());
        }
        _ => panic!("expected the stored blob"),
    }
}

/// Feeds a 4-ring blob whose digest is `digest` until the ring has wrapped, then ends it with
/// `finish`; a reader that keeps up and one that starts behind the ring must both end with an
/// error, never a clean (short or wrong) body, having received no more than all bytes but the last.
async fn fails_after_the_ring_wrapped(
    digest: &Digest,
    blob: &Bytes,
    finish: impl FnOnce(Feed) -> tokio::task::JoinHandle<Result<FillEnd, String>>,
) -> Result<FillEnd, String> {
    let (_dir, cache) = open_cache(None);
    let len = 4 * RING_BYTES as u64;
    let (growing, feed) = start(&cache, digest, Some(len), Duration::from_secs(5)).await;
    let keeping_up = tokio::spawn(drain(growing.reader(0, None).unwrap()));
    let behind = growing.reader(0, None).unwrap();
    send_part(&feed, &blob[..3 * RING_BYTES], 64 * 1024).await;
    let fill = growing.fill().clone();
    until(|| fill.ring_window().0 > 0).await;
    let end = finish(feed).await.unwrap();
    for (name, (bytes, error)) in [
        ("keeping up", keeping_up.await.unwrap()),
        ("behind", drain(behind).await),
    ] {
        assert!(
            error.is_some(),
            "{name}: ended cleanly after {} bytes",
            bytes.len()
        );
        assert!(bytes.len() < blob.len(), "{name}: got the last byte");
        assert!(bytes == blob[..bytes.len()], "{name}: wrong bytes");
    }
    assert!(tmp_is_empty(&cache));
    assert!(!stored_path(&cache, digest).exists(), "nothing committed");
    end
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_digest_after_the_ring_wrapped_fails_every_reader() {
    let blob = data(4 * RING_BYTES, 8);
    let digest = Digest::sha256_of(b"not these bytes");
    let rest = blob.slice(3 * RING_BYTES..);
    let end = fails_after_the_ring_wrapped(&digest, &blob, move |feed| {
        tokio::spawn(async move {
            send_part(&feed, &rest, 64 * 1024).await;
            drop(feed.tx);
            feed.ended.await.unwrap()
        })
    })
    .await;
    assert!(
        end.as_ref().is_err_and(|e| e.contains("digest mismatch")),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_dying_after_the_ring_wrapped_fails_every_reader() {
    let blob = data(4 * RING_BYTES, 9);
    let digest = Digest::sha256_of(&blob);
    let end = fails_after_the_ring_wrapped(&digest, &blob, |feed| {
        // The body ends three quarters through: the connection is gone.
        tokio::spawn(async move {
            drop(feed.tx);
            feed.ended.await.unwrap()
        })
    })
    .await;
    assert!(end.as_ref().is_err_and(|e| e.contains("bytes")), "{end:?}");
}
