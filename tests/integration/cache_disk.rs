//! The cache's own disk: a file system that fills up mid-download, `CACHE_MIN_FREE`, and the
//! `CACHE_MAX_SIZE` cap (least recently used blobs and manifests go first).
//!
//! The full-disk tests mount a small tmpfs (they need root; without it they say so and pass).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;

use crate::cache_crash::blob_file;
use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{
    TestProxy, blob_gets, serve_random_blob, serve_random_blobs, serve_slow_blob,
};

fn stored(cache: &Path, digest: &str) -> bool {
    blob_file(cache, digest).exists()
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk { _dir: dir, path })
    }

    fn cache_dir(&self) -> String {
        self.cache_path().display().to_string()
    }

    fn cache_path(&self) -> PathBuf {
        self.path.join("cache")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_fills_up_mid_download_streams_uncached() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_slow_blob(&fake, "lib/app", (4_000_000, 21), 40, 10);
    let proxy = TestProxy::start(
        &fake,
        &[("CACHE_DIR", &disk.cache_dir()), ("CACHE_MIN_FREE", "0")],
    )
    .await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    // Two clients on the same download: the disk fills up under both of them.
    let (a, b) = tokio::join!(proxy.request_result("GET", &url), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        proxy.request_result("GET", &url).await
    });
    assert_eq!(a.0, 200);
    assert_eq!(a.1.as_deref(), Ok(data.as_ref()), "first client");
    assert_eq!(b.0, 200);
    assert_eq!(b.1.as_deref(), Ok(data.as_ref()), "second client");
    assert_eq!(
        blob_gets(&fake, &digest),
        1,
        "both clients were served from the one download"
    );
    assert!(!stored(&disk.cache_path(), &digest), "no partial blob");
    assert_eq!(
        std::fs::read_dir(disk.cache_path().join("tmp"))
            .unwrap()
            .count(),
        0,
        "temp file removed"
    );
    // Not cached, so the next client goes upstream again, and is served.
    let before = blob_gets(&fake, &digest);
    let (status, body) = proxy.request_result("GET", &url).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_deref(), Ok(data.as_ref()));
    assert!(blob_gets(&fake, &digest) > before);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn min_free_refuses_a_blob_that_cannot_fit_and_streams_it() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/app", 700_000, 22);
    let proxy = TestProxy::start(
        &fake,
        &[("CACHE_DIR", &disk.cache_dir()), ("CACHE_MIN_FREE", "512k")],
    )
    .await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    for round in 1..=2 {
        let (status, body) = proxy.request_result("GET", &url).await;
        assert_eq!(status, 200);
        assert_eq!(body.as_deref(), Ok(data.as_ref()));
        assert!(!stored(&disk.cache_path(), &digest));
        assert_eq!(blob_gets(&fake, &digest), round);
    }
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn min_free_evicts_least_recently_used() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let fake = Fake::start(&["fake.test"]).await;
    let blobs = serve_random_blobs(&fake, 3, 300_000, 30);
    let proxy = TestProxy::start(
        &fake,
        &[("CACHE_DIR", &disk.cache_dir()), ("CACHE_MIN_FREE", "300k")],
    )
    .await;
    let get = |i: usize| {
        let url = format!("/v2/fake.test/lib/app/blobs/{}", blobs[i].1);
        let proxy = &proxy;
        async move { proxy.request_result("GET", &url).await }
    };
    for i in [0, 1, 2] {
        let (status, body) = get(i).await;
        assert_eq!(status, 200);
        assert_eq!(body.as_deref(), Ok(blobs[i].0.as_ref()));
    }
    let cache = disk.cache_path();
    assert!(!stored(&cache, &blobs[0].1), "least recently used evicted");
    assert!(stored(&cache, &blobs[1].1));
    assert!(stored(&cache, &blobs[2].1));
    let (_, body) = get(0).await;
    assert_eq!(body.as_deref(), Ok(blobs[0].0.as_ref()));
    assert_eq!(blob_gets(&fake, &blobs[0].1), 2);
    drop(proxy);
}

#[tokio::test]
async fn size_cap_evicts_least_recently_used_blobs_and_manifests() {
    const MEDIA: &str = "application/vnd.oci.image.manifest.v1+json";
    let fake = Fake::start(&["fake.test"]).await;
    let manifest = Bytes::from_static(b"{\"schemaVersion\":2,\"n\":\"cap\"}");
    let manifest_digest = sha256_digest(&manifest);
    fake.route(
        &format!("/v2/lib/app/manifests/{manifest_digest}"),
        Behavior::Manifest {
            bytes: manifest.clone(),
            media_type: MEDIA.into(),
        },
    );
    let blobs = serve_random_blobs(&fake, 3, 100_000, 40);
    let proxy = TestProxy::start(
        &fake,
        &[("CACHE_MAX_SIZE", "250k"), ("CACHE_MIN_FREE", "0")],
    )
    .await;
    let manifest_url = format!("/v2/fake.test/lib/app/manifests/{manifest_digest}");
    let get = |i: usize| {
        let url = format!("/v2/fake.test/lib/app/blobs/{}", blobs[i].1);
        let proxy = &proxy;
        async move { proxy.get(&url).await.2 }
    };
    let hits = |i: usize| blob_gets(&fake, &blobs[i].1);
    let accept = [("accept", MEDIA)];
    assert_eq!(
        proxy.request("GET", &manifest_url, &accept).await.2,
        manifest
    );
    assert_eq!(get(0).await, blobs[0].0);
    assert_eq!(get(1).await, blobs[1].0);
    assert_eq!(get(0).await, blobs[0].0, "a hit makes blob 0 recent");
    assert_eq!(hits(0), 1);
    // 3 × 100k + the manifest > 250k: the manifest and blob 1 (least recently used) go.
    assert_eq!(get(2).await, blobs[2].0);
    let cache = proxy.cache_dir();
    assert!(stored(&cache, &blobs[0].1));
    assert!(!stored(&cache, &blobs[1].1), "least recently used evicted");
    assert!(stored(&cache, &blobs[2].1));
    let manifest_hits = || fake.hits_containing(&format!("manifests/{manifest_digest}"));
    let before = manifest_hits();
    assert_eq!(get(0).await, blobs[0].0);
    assert_eq!(get(2).await, blobs[2].0);
    assert_eq!((hits(0), hits(2)), (1, 1), "kept blobs are hits");
    assert_eq!(get(1).await, blobs[1].0);
    assert_eq!(hits(1), 2, "the evicted blob is fetched again");
    assert_eq!(
        proxy.request("GET", &manifest_url, &accept).await.2,
        manifest
    );
    assert!(
        manifest_hits() > before,
        "the evicted manifest is fetched again"
    );
}
