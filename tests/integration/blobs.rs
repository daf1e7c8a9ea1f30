//! Blob caching: miss then hit, Range, integrity under faults, single-flight, links, restart.

use std::time::Duration;

use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{
    TestProxy, blob_gets, blob_path, random_blob, random_bytes, serve_random_blob, serve_slow_blob,
};

#[tokio::test]
async fn miss_then_hit_without_upstream() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/app", 300_000, 1);
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    let (status, headers, body) = proxy.get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    assert_eq!(headers["docker-content-digest"], digest.as_str());
    proxy.assert_serves(&url, &data).await;
    assert_eq!(
        blob_gets(&fake, &digest),
        1,
        "second GET must not reach upstream"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("registry_proxy_requests_total{registry=\"fake.test\",verdict=\"HIT\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("registry_proxy_upstream_blob_fetches_total{registry=\"fake.test\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn ranges_on_cached_and_growing_blobs() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_slow_blob(&fake, "lib/app", (100_000, 2), 10, 30);
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    // A range while the blob is still downloading.
    let (first, growing) = tokio::join!(proxy.get(&url), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy
            .request("GET", &url, &[("range", "bytes=90000-90009")])
            .await
    });
    eprintln!("first done");
    assert_eq!(first.2, data);
    assert_eq!(growing.0, 206);
    assert_eq!(growing.2, data.slice(90000..90010));
    eprintln!("growing ok");
    // Ranges on the committed blob.
    let (status, headers, body) = proxy
        .request("GET", &url, &[("range", "bytes=10-19")])
        .await;
    assert_eq!(status, 206);
    assert_eq!(headers["content-range"], "bytes 10-19/100000");
    assert_eq!(body, data.slice(10..20));
    let (status, _, body) = proxy.request("GET", &url, &[("range", "bytes=-5")]).await;
    assert_eq!(status, 206);
    assert_eq!(body, data.slice(99995..));
    let (status, _, body) = proxy
        .request("GET", &url, &[("range", "bytes=200000-")])
        .await;
    assert_eq!(status, 416);
    assert!(String::from_utf8_lossy(&body).contains("RANGE_INVALID"));
    assert_eq!(blob_gets(&fake, &digest), 1);
}

#[tokio::test]
async fn wrong_digest_aborts_and_commits_nothing() {
    let fake = Fake::start(&["fake.test"]).await;
    let data = random_bytes(50_000, 3);
    let claimed = sha256_digest(b"something else");
    fake.route(&blob_path("lib/app", &claimed), Behavior::Blob(data));
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = format!("/v2/fake.test/lib/app/blobs/{claimed}");
    let (_, body) = proxy.request_result("GET", &url).await;
    assert!(
        body.is_err(),
        "a wrong digest must abort the transfer, got a clean body"
    );
    assert!(!proxy.has_blob(&claimed));
    let (_, body) = proxy.request_result("GET", &url).await;
    assert!(body.is_err());
    assert_eq!(
        blob_gets(&fake, &claimed),
        2,
        "nothing cached, so the next request goes upstream"
    );
}

#[tokio::test]
async fn upstream_dying_midway_aborts_every_client_and_commits_nothing() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = random_blob(200_000, 4);
    fake.route(
        &blob_path("lib/app", &digest),
        Behavior::DiesAfter {
            bytes: data.clone(),
            sent: 70_000,
        },
    );
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    let (a, b) = tokio::join!(
        proxy.request_result("GET", &url),
        proxy.request_result("GET", &url)
    );
    assert!(
        a.1.is_err() && b.1.is_err(),
        "both clients must see an aborted transfer: {a:?} {b:?}"
    );
    assert!(!proxy.has_blob(&digest));
    assert_eq!(
        std::fs::read_dir(proxy.cache_dir().join("tmp"))
            .unwrap()
            .count(),
        0,
        "temp file removed"
    );
    // Upstream heals: the next request fetches again and succeeds.
    fake.route(&blob_path("lib/app", &digest), Behavior::Blob(data.clone()));
    let (status, _, body) = proxy.get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
}

#[tokio::test]
async fn concurrent_clients_share_one_upstream_download() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_slow_blob(&fake, "lib/app", (2_000_000, 5), 20, 20);
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(proxy.get(&url));
    }
    let results = futures_util::future::join_all(tasks).await;
    for (status, _, body) in results {
        assert_eq!(status, 200);
        assert_eq!(body, data);
    }
    assert_eq!(
        blob_gets(&fake, &digest),
        1,
        "exactly one upstream download"
    );
}

#[tokio::test]
async fn blob_is_served_only_to_repositories_that_have_it() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "team-a/app", 10_000, 6);
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, _, _) = proxy
        .get(&format!("/v2/fake.test/team-a/app/blobs/{digest}"))
        .await;
    assert_eq!(status, 200);
    // team-b does not have it upstream: the cached copy must not leak.
    let (status, _, body) = proxy
        .get(&format!("/v2/fake.test/team-b/app/blobs/{digest}"))
        .await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("BLOB_UNKNOWN"));
    assert_eq!(fake.hits("HEAD", &blob_path("team-b/app", &digest)), 1);
    // Once upstream confirms (HEAD), it is served from the cache without a second download.
    fake.route(
        &blob_path("team-b/app", &digest),
        Behavior::Blob(data.clone()),
    );
    proxy
        .assert_serves(&format!("/v2/fake.test/team-b/app/blobs/{digest}"), &data)
        .await;
    assert_eq!(fake.hits("GET", &blob_path("team-b/app", &digest)), 0);
}

#[tokio::test]
async fn cache_survives_restart() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/app", 40_000, 7);
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    assert_eq!(proxy.get(&url).await.2, data);
    let ca_before = std::fs::read(proxy.dir.path().join("ca/ca.crt")).unwrap();
    let mut proxy = proxy;
    proxy.restart().await;
    assert_eq!(proxy.get(&url).await.2, data);
    assert_eq!(blob_gets(&fake, &digest), 1);
    assert_eq!(
        std::fs::read(proxy.dir.path().join("ca/ca.crt")).unwrap(),
        ca_before,
        "CA reused"
    );
}

#[tokio::test]
async fn head_on_uncached_blob_stays_head_upstream() {
    let fake = Fake::start(&["fake.test"]).await;
    let (_, digest) = serve_random_blob(&fake, "lib/app", 1234, 8);
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, headers, body) = proxy
        .request(
            "HEAD",
            &format!("/v2/fake.test/lib/app/blobs/{digest}"),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], "1234");
    assert!(body.is_empty());
    assert_eq!(fake.hits("HEAD", &blob_path("lib/app", &digest)), 1);
    assert_eq!(blob_gets(&fake, &digest), 0);
}
