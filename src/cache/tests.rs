//! Store behaviour that needs a real directory: uncached pass-through when the disk fails, slow
//! readers of such a download, last use across a reopen, admission.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::fill::{FillState, TAIL_BYTES, TAIL_PIECE};
use super::*;

mod ring;

fn limits(max_size: u64, min_free: u64) -> Limits {
    Limits {
        max_size,
        inactive: Duration::from_secs(3600),
        min_free,
    }
}

/// A cache in a new temporary directory with room for 1 GiB, whose disk fails once `disk_limit`
/// bytes were written (`None`: never).
fn open_cache(disk_limit: Option<u64>) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), limits(1 << 30, 0)).unwrap();
    let cache = match disk_limit {
        Some(limit) => cache.with_disk_limit(limit),
        None => cache,
    };
    (dir, cache)
}

fn data(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn collect(stream: store::ByteStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A source whose body the test feeds (so readers can attach before the first byte), and which
/// reports how its download ended. `refuse` makes it answer without a body.
struct TestSource {
    len: Option<u64>,
    body: Option<mpsc::Receiver<Bytes>>,
    idle: Duration,
    refuse: bool,
    opened: Arc<std::sync::atomic::AtomicUsize>,
    ended: Option<oneshot::Sender<Result<FillEnd, String>>>,
}

/// The test's side of a [`TestSource`].
struct Feed {
    tx: mpsc::Sender<Bytes>,
    ended: oneshot::Receiver<Result<FillEnd, String>>,
    opened: Arc<std::sync::atomic::AtomicUsize>,
}

impl Feed {
    /// Sends `bytes` in `chunk`-sized pieces, ends the body and waits for the download's end.
    async fn send_all(self, bytes: &Bytes, chunk: usize) -> Result<FillEnd, String> {
        for piece in bytes.chunks(chunk) {
            if self.tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                break;
            }
        }
        drop(self.tx);
        self.ended.await.unwrap()
    }
}

fn source(len: Option<u64>, idle: Duration) -> (TestSource, Feed) {
    let (tx, rx) = mpsc::channel(4);
    let (end_tx, end_rx) = oneshot::channel();
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (
        TestSource {
            len,
            body: Some(rx),
            idle,
            refuse: false,
            opened: opened.clone(),
            ended: Some(end_tx),
        },
        Feed {
            tx,
            ended: end_rx,
            opened,
        },
    )
}

impl FillSource for TestSource {
    type Head = &'static str;
    type Refusal = &'static str;

    async fn open(&mut self, _download: &Arc<Fill>) -> Result<Opened<Self::Head>, Self::Refusal> {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.refuse {
            return Err("refused");
        }
        let rx = self.body.take().ok_or("opened twice")?;
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let bytes = rx.recv().await?;
            Some((
                Ok::<_, crate::body::BoxError>(hyper::body::Frame::data(bytes)),
                rx,
            ))
        });
        Ok(Opened {
            head: "head",
            len: self.len,
            body: http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames)),
            idle: self.idle,
            upload: true,
        })
    }

    fn finished(mut self, end: &Result<FillEnd, String>) {
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(end.clone());
        }
    }
}

/// Starts a download of `digest` (`len` announced) that the test feeds.
async fn start(
    cache: &Cache,
    digest: &Digest,
    len: Option<u64>,
    idle: Duration,
) -> (Growing, Feed) {
    let (source, feed) = source(len, idle);
    match cache.get_or_fill(digest, Some(source)).await {
        Got::Started { blob, head } => {
            assert_eq!(head, "head");
            (blob, feed)
        }
        _ => panic!("expected to start a download"),
    }
}

fn tmp_is_empty(cache: &Cache) -> bool {
    std::fs::read_dir(cache.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

fn stored_path(cache: &Cache, digest: &Digest) -> std::path::PathBuf {
    cache.root().join(ObjectKey::blob(digest).path())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_miss_is_downloaded_once_and_then_stored() {
    let (_dir, cache) = open_cache(None);
    let blob = data(1_000_000, 9);
    let digest = Digest::sha256_of(&blob);
    assert!(
        matches!(
            cache.get_or_fill::<TestSource>(&digest, None).await,
            Got::Absent
        ),
        "no source, nothing to join"
    );
    let (growing, feed) = start(
        &cache,
        &digest,
        Some(blob.len() as u64),
        Duration::from_secs(5),
    )
    .await;
    let opened = feed.opened.clone();
    // A second caller joins the download in flight; its own source is never opened.
    let (second, second_feed) = source(Some(blob.len() as u64), Duration::from_secs(5));
    let joined = {
        let cache = &cache;
        let digest = &digest;
        async move { cache.get_or_fill(digest, Some(second)).await }
    };
    let (joined, end, first) = tokio::join!(
        joined,
        feed.send_all(&blob, 64 * 1024),
        collect(growing.reader(0, None).unwrap())
    );
    assert_eq!(end, Ok(FillEnd::Committed(blob.len() as u64)));
    assert_eq!(first.unwrap(), blob.as_ref());
    match joined {
        Got::Joined(g) => assert_eq!(
            collect(g.reader(10, Some(19)).unwrap()).await.unwrap(),
            &blob[10..20]
        ),
        // It may also come after the commit.
        Got::Stored(s) => assert_eq!(s.size(), blob.len() as u64),
        _ => panic!("expected to join"),
    }
    assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        second_feed.opened.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Stored now: whole and in ranges, with no source needed.
    match cache.get_or_fill::<TestSource>(&digest, None).await {
        Got::Stored(stored) => {
            assert_eq!(stored.size(), blob.len() as u64);
            assert_eq!(
                collect(stored.reader(0, stored.size() - 1)).await.unwrap(),
                blob.as_ref()
            );
            assert_eq!(
                collect(stored.reader(999_990, 999_999)).await.unwrap(),
                &blob[999_990..]
            );
        }
        _ => panic!("expected a stored blob"),
    }
    assert_eq!(
        std::fs::read(stored_path(&cache, &digest)).unwrap(),
        blob.as_ref()
    );
    assert_eq!(cache.entries(), 1);
    assert!(tmp_is_empty(&cache));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_source_leaves_nothing_in_flight() {
    let (_dir, cache) = open_cache(None);
    let digest = Digest::sha256_of(b"refused");
    let (mut refusing, _feed) = source(None, Duration::from_secs(5));
    refusing.refuse = true;
    assert!(matches!(
        cache.get_or_fill(&digest, Some(refusing)).await,
        Got::Refused("refused")
    ));
    assert!(tmp_is_empty(&cache));
    // The next caller leads a new download.
    let (_growing, feed) = start(&cache, &digest, None, Duration::from_secs(5)).await;
    drop(feed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_without_room_is_handed_back_to_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), limits(1000, 0)).unwrap();
    let digest = Digest::sha256_of(b"big");
    let (big, _feed) = source(Some(1001), Duration::from_secs(5));
    match cache.get_or_fill(&digest, Some(big)).await {
        Got::Bypass(opened) => assert_eq!((opened.head, opened.len), ("head", Some(1001))),
        _ => panic!("expected the body back"),
    }
    assert!(tmp_is_empty(&cache));
    assert!(matches!(
        cache.get_or_fill::<TestSource>(&digest, None).await,
        Got::Absent
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_midway_streams_the_rest_uncached() {
    let (_dir, cache) = open_cache(Some(300_000));
    let blob = data(3_000_000, 1);
    let digest = Digest::sha256_of(&blob);
    let (growing, feed) = start(
        &cache,
        &digest,
        Some(blob.len() as u64),
        Duration::from_secs(5),
    )
    .await;
    let early = growing.reader(0, None).unwrap();
    let ranged = growing.reader(2_999_990, Some(2_999_999)).unwrap();
    let (end, early, ranged) = tokio::join!(
        feed.send_all(&blob, 16 * 1024),
        collect(early),
        collect(ranged),
    );
    assert!(
        matches!(&end, Ok(FillEnd::Uncached { len: 3_000_000, reason }) if reason.contains("cache write failed")),
        "{end:?}"
    );
    assert_eq!(early.unwrap(), blob.as_ref());
    assert_eq!(ranged.unwrap(), &blob[2_999_990..]);
    assert!(!stored_path(&cache, &digest).exists(), "nothing committed");
    assert!(tmp_is_empty(&cache));
    assert_eq!(cache.entries(), 0);
    // Not in flight any more: the next request leads a new download.
    let (_growing, feed) = start(&cache, &digest, None, Duration::from_secs(5)).await;
    drop(feed);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_digest_through_memory_aborts_readers() {
    let (_dir, cache) = open_cache(Some(0));
    let blob = data(500_000, 2);
    let digest = Digest::sha256_of(b"something else");
    let (growing, feed) = start(
        &cache,
        &digest,
        Some(blob.len() as u64),
        Duration::from_secs(5),
    )
    .await;
    let reader = growing.reader(0, None).unwrap();
    let (end, read) = tokio::join!(feed.send_all(&blob, 10_000), collect(reader));
    assert!(end.is_err(), "{end:?}");
    assert!(read.is_err(), "a wrong digest must abort, not end cleanly");
    assert!(tmp_is_empty(&cache));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_reader_is_cut_off_and_memory_stays_bounded() {
    let (_dir, cache) = open_cache(Some(0));
    let blob = data(8 * TAIL_BYTES, 3);
    let digest = Digest::sha256_of(&blob);
    let (growing, feed) = start(
        &cache,
        &digest,
        Some(blob.len() as u64),
        Duration::from_millis(200),
    )
    .await;
    let fast = growing.reader(0, None).unwrap();
    let stalled = growing.reader(0, None).unwrap();
    let watcher = {
        let fill = growing.fill().clone();
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
    let (end, fast, peak) = tokio::join!(feed.send_all(&blob, 50_000), collect(fast), watcher);
    assert!(matches!(end, Ok(FillEnd::Uncached { .. })), "{end:?}");
    assert_eq!(fast.unwrap(), blob.as_ref());
    assert!(peak <= TAIL_BYTES + TAIL_PIECE, "tail held {peak} bytes");
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
    let (_dir, cache) = open_cache(Some(0));
    let blob = data(4 * TAIL_BYTES, 4);
    let digest = Digest::sha256_of(&blob);
    let (growing, feed) = start(
        &cache,
        &digest,
        Some(blob.len() as u64),
        Duration::from_secs(5),
    )
    .await;
    let end = feed.send_all(&blob, 50_000).await;
    assert!(matches!(end, Ok(FillEnd::Uncached { .. })), "{end:?}");
    assert!(growing.reader(0, None).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disk_store_conforms() {
    let (_dir, cache) = open_cache(None);
    store::conformance::check(&DiskStore::new(cache.root())).await;
    assert!(tmp_is_empty(&cache), "no temp file left behind");
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
    assert!(cache.space.admit(Some(1000)).is_ok());
    assert!(cache.space.admit(None).is_ok());
    let e = cache.space.admit(Some(1001)).unwrap_err();
    assert!(e.contains("CACHE_MAX_SIZE"), "{e}");
    let free = cache.free_space().unwrap();
    let cache = Cache::open(dir.path(), limits(u64::MAX, free.saturating_mul(2))).unwrap();
    let e = cache.space.admit(Some(1)).unwrap_err();
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
    let (_growing, feed) = start(
        &cache,
        &digest,
        Some(blob.len() as u64),
        Duration::from_secs(5),
    )
    .await;
    let end = feed.send_all(&blob, 8192).await;
    assert!(matches!(end, Ok(FillEnd::Committed(100_000))), "{end:?}");
    let manifest = Bytes::from_static(b"{\"schemaVersion\":2}");
    let manifest_digest = Digest::sha256_of(&manifest);
    cache
        .put_manifest(&manifest_digest, &manifest, "application/json")
        .await
        .unwrap();
    let registry = RegistryHost::parse("registry.test:5000").unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    cache.link(&registry, &repo, LinkKind::Blob, &digest).await;
    cache
        .link(&registry, &repo, LinkKind::Manifest, &manifest_digest)
        .await;
    cache.set_public(&registry, &repo, true);
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
    // blob, manifest + .type, two links, one tag, the public mark, the store's marker.
    assert_eq!(files, 8);
    assert!(dirs >= 10, "{dirs}");
}
