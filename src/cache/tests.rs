//! Store behaviour that needs a real directory: uncached pass-through when the disk fails, slow
//! readers of such a download, last use across a reopen, admission.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;

use super::*;

fn limits(max_size: u64, min_free: u64) -> Limits {
    Limits {
        max_size,
        inactive: Duration::from_secs(3600),
        min_free,
    }
}

fn data(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// A body that sends `bytes` in `chunk`-sized frames.
fn body(
    bytes: &Bytes,
    chunk: usize,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Unpin> {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = bytes
        .chunks(chunk)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

async fn collect(
    stream: impl futures_util::Stream<Item = io::Result<Bytes>>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn leader(cache: &Cache, digest: &Digest) -> (Arc<Fill>, std::fs::File) {
    match cache.begin_fill(digest).unwrap() {
        FillSlot::Leader(fill, file) => (fill, file),
        FillSlot::Follower(_) => panic!("expected to lead"),
    }
}

fn tmp_is_empty(cache: &Cache) -> bool {
    std::fs::read_dir(cache.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_midway_streams_the_rest_uncached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), limits(1 << 30, 0))
        .unwrap()
        .with_disk_limit(300_000);
    let blob = data(3_000_000, 1);
    let digest = Digest::sha256_of(&blob);
    let (fill, file) = leader(&cache, &digest);
    let early = fill.reader(0, None).unwrap();
    let ranged = fill.reader(2_999_990, Some(2_999_999)).unwrap();
    let total = Some(blob.len() as u64);
    let (end, early, ranged) = tokio::join!(
        cache.run_fill(
            fill.clone(),
            file,
            total,
            body(&blob, 16 * 1024),
            Duration::from_secs(5)
        ),
        collect(early),
        collect(ranged),
    );
    assert!(
        matches!(&end, Ok(FillEnd::Uncached { len: 3_000_000, reason }) if reason.contains("cache write failed")),
        "{end:?}"
    );
    assert_eq!(early.unwrap(), blob.as_ref());
    assert_eq!(ranged.unwrap(), &blob[2_999_990..]);
    assert!(!fill.final_path.exists(), "nothing committed");
    assert!(tmp_is_empty(&cache));
    assert_eq!(cache.entries(), 0);
    // Not in flight any more: the next request leads a new download.
    assert!(matches!(
        cache.begin_fill(&digest).unwrap(),
        FillSlot::Leader(..)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_digest_through_memory_aborts_readers() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), limits(1 << 30, 0))
        .unwrap()
        .with_disk_limit(0);
    let blob = data(500_000, 2);
    let digest = Digest::sha256_of(b"something else");
    let (fill, file) = leader(&cache, &digest);
    let reader = fill.reader(0, None).unwrap();
    let total = Some(blob.len() as u64);
    let (end, read) = tokio::join!(
        cache.run_fill(
            fill.clone(),
            file,
            total,
            body(&blob, 10_000),
            Duration::from_secs(5)
        ),
        collect(reader),
    );
    assert!(end.is_err(), "{end:?}");
    assert!(read.is_err(), "a wrong digest must abort, not end cleanly");
    assert!(tmp_is_empty(&cache));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_reader_is_cut_off_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), limits(1 << 30, 0))
        .unwrap()
        .with_disk_limit(0);
    let blob = data(8 * fill::TAIL_BYTES, 3);
    let digest = Digest::sha256_of(&blob);
    let (fill, file) = leader(&cache, &digest);
    let fast = fill.reader(0, None).unwrap();
    let stalled = fill.reader(0, None).unwrap();
    let total = Some(blob.len() as u64);
    let watcher = {
        let fill = fill.clone();
        async move {
            let mut peak = 0;
            while !matches!(
                fill.state(),
                FillState::Streamed { .. } | FillState::Failed(_)
            ) {
                peak = peak.max(fill.tail_buffered());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            peak
        }
    };
    let (end, fast, peak) = tokio::join!(
        cache.run_fill(
            fill.clone(),
            file,
            total,
            body(&blob, 50_000),
            Duration::from_millis(200)
        ),
        collect(fast),
        watcher,
    );
    assert!(matches!(end, Ok(FillEnd::Uncached { .. })), "{end:?}");
    assert_eq!(fast.unwrap(), blob.as_ref());
    assert!(
        peak <= fill::TAIL_BYTES + fill::TAIL_PIECE,
        "tail held {peak} bytes"
    );
    let stalled = collect(stalled).await;
    assert!(
        stalled
            .as_ref()
            .is_err_and(|e| e.contains("too far behind")),
        "{stalled:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_joining_after_the_tail_moved_on_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), limits(1 << 30, 0))
        .unwrap()
        .with_disk_limit(0);
    let blob = data(4 * fill::TAIL_BYTES, 4);
    let digest = Digest::sha256_of(&blob);
    let (fill, file) = leader(&cache, &digest);
    let end = cache
        .run_fill(
            fill.clone(),
            file,
            Some(blob.len() as u64),
            body(&blob, 50_000),
            Duration::from_secs(5),
        )
        .await;
    assert!(matches!(end, Ok(FillEnd::Uncached { .. })), "{end:?}");
    assert!(fill.reader(0, None).is_none());
}

#[tokio::test]
async fn last_use_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), limits(1 << 30, 0))
        .unwrap()
        .with_touch_every(Duration::ZERO);
    let manifests: Vec<(Digest, Bytes)> = (0..3u8)
        .map(|i| {
            let bytes = data(1000, i);
            (Digest::sha256_of(&bytes), bytes)
        })
        .collect();
    for (digest, bytes) in &manifests {
        cache
            .put_manifest(digest, bytes, "application/json")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The oldest becomes the most recently used.
    assert!(cache.manifest(&manifests[0].0).await.is_some());
    drop(cache);

    let cache = Cache::open(dir.path(), limits(u64::MAX, 0)).unwrap();
    cache.wait_loaded();
    assert_eq!(cache.entries(), 3);
    assert_eq!(cache.size(), 3000);
    drop(cache);

    let cache = Cache::open(dir.path(), limits(2000, 0)).unwrap();
    cache.wait_loaded();
    cache.evict();
    assert_eq!(cache.entries(), 2, "the scan evicts down to the cap");
    assert!(cache.manifest(&manifests[0].0).await.is_some());
    assert!(
        cache.manifest(&manifests[1].0).await.is_none(),
        "least recently used goes first"
    );
    assert!(cache.manifest(&manifests[2].0).await.is_some());
}

#[test]
fn admission() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), limits(1000, 0)).unwrap();
    assert!(cache.admit(Some(1000)).is_ok());
    assert!(cache.admit(None).is_ok());
    let e = cache.admit(Some(1001)).unwrap_err();
    assert!(e.contains("CACHE_MAX_SIZE"), "{e}");
    let free = cache.free_space().unwrap();
    let cache = Cache::open(dir.path(), limits(u64::MAX, free.saturating_mul(2))).unwrap();
    let e = cache.admit(Some(1)).unwrap_err();
    assert!(e.contains("do not fit"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_0600_and_directories_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let cache = Cache::open(&root, limits(1 << 30, 0)).unwrap();
    // A blob through a fill, a manifest, a tag and links: every kind of file the store writes.
    let blob = data(100_000, 7);
    let digest = Digest::sha256_of(&blob);
    let (fill, file) = leader(&cache, &digest);
    let end = cache
        .run_fill(
            fill,
            file,
            Some(blob.len() as u64),
            body(&blob, 8192),
            Duration::from_secs(5),
        )
        .await;
    assert!(matches!(end, Ok(FillEnd::Committed(100_000))), "{end:?}");
    let manifest = Bytes::from_static(b"{\"schemaVersion\":2}");
    let manifest_digest = Digest::sha256_of(&manifest);
    cache
        .put_manifest(&manifest_digest, &manifest, "application/json")
        .await
        .unwrap();
    let registry = RegistryHost::parse("registry.test:5000").unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    cache.link(&registry, &repo, LinkKind::Blob, &digest);
    cache.link(&registry, &repo, LinkKind::Manifest, &manifest_digest);
    let record = TagRecord {
        digest: manifest_digest.to_string(),
        media_type: "application/json".into(),
        checked_at: 1,
    };
    cache
        .put_tag(&registry, &repo, "v1", "accept", &record)
        .await
        .unwrap();

    let (mut files, mut dirs) = (0, 0);
    let mut pending = vec![root.clone()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            dirs += 1;
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            files += 1;
        }
    }
    // blob, manifest + .type, two links, one tag, the store's marker.
    assert_eq!(files, 7);
    assert!(dirs >= 10, "{dirs}");
}
