//! Manifests: byte-exact storage, tag revalidation with HEAD, TTL tiers, stale serving.

use bytes::Bytes;

use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{TestProxy, random_blob};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest(n: u8) -> Bytes {
    // Deliberately odd formatting: the proxy must return these exact bytes.
    Bytes::from(format!(
        "{{\"schemaVersion\":2,  \"mediaType\":\"{OCI_MANIFEST}\", \"n\":{n}}}\n"
    ))
}

/// Serves `bytes` as an OCI image manifest.
fn oci(bytes: Bytes) -> Behavior {
    Behavior::Manifest {
        bytes,
        media_type: OCI_MANIFEST.into(),
    }
}

#[tokio::test]
async fn tag_is_revalidated_with_head_and_served_byte_exact() {
    let fake = Fake::start(&["fake.test"]).await;
    let bytes = manifest(1);
    fake.route("/v2/lib/app/manifests/v1", oci(bytes.clone()));
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = "/v2/fake.test/lib/app/manifests/v1";
    let accept = [("accept", OCI_MANIFEST)];
    let (status, headers, body) = proxy.request("GET", url, &accept).await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes);
    assert_eq!(headers["content-type"], OCI_MANIFEST);
    assert_eq!(
        headers["docker-content-digest"],
        sha256_digest(&bytes).as_str()
    );
    let (status, _, body) = proxy.request("GET", url, &accept).await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes);
    assert_eq!(fake.hits("GET", "/v2/lib/app/manifests/v1"), 1);
    assert_eq!(
        fake.hits("HEAD", "/v2/lib/app/manifests/v1"),
        1,
        "second request revalidated with HEAD"
    );
    // The tag moves upstream: the next request fetches the new manifest.
    let moved = manifest(2);
    fake.route("/v2/lib/app/manifests/v1", oci(moved.clone()));
    let (_, _, body) = proxy.request("GET", url, &accept).await;
    assert_eq!(body, moved);
}

#[tokio::test]
async fn tag_inside_ttl_tier_does_not_contact_upstream() {
    let fake = Fake::start(&["fake.test"]).await;
    let bytes = manifest(3);
    fake.route("/v2/lib/app/manifests/1.2.3", oci(bytes.clone()));
    let proxy = TestProxy::start(&fake, &[("ENABLE_MANIFEST_CACHE", "true")]).await;
    let url = "/v2/fake.test/lib/app/manifests/1.2.3";
    for _ in 0..3 {
        proxy.assert_serves(url, &bytes).await;
    }
    assert_eq!(
        fake.hits_containing("/manifests/1.2.3"),
        1,
        "only the first request reached upstream"
    );
}

#[tokio::test]
async fn cached_manifest_is_served_stale_when_upstream_fails() {
    let fake = Fake::start(&["fake.test"]).await;
    let bytes = manifest(4);
    fake.route("/v2/lib/app/manifests/latest", oci(bytes.clone()));
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = "/v2/fake.test/lib/app/manifests/latest";
    assert_eq!(proxy.get(url).await.2, bytes);
    for code in [503, 429, 500] {
        fake.route("/v2/lib/app/manifests/latest", Behavior::Status(code));
        let (status, _, body) = proxy.get(url).await;
        assert_eq!(status, 200, "served stale on {code}");
        assert_eq!(body, bytes);
    }
    // Without a cached copy, the upstream's error is passed on with its code.
    fake.route("/v2/lib/other/manifests/latest", Behavior::Status(503));
    let (status, _, body) = proxy.get("/v2/fake.test/lib/other/manifests/latest").await;
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("FAKE_503"));
}

#[tokio::test]
async fn digest_reference_never_goes_upstream_again() {
    let fake = Fake::start(&["fake.test"]).await;
    let bytes = manifest(5);
    let digest = sha256_digest(&bytes);
    let path = format!("/v2/lib/app/manifests/{digest}");
    fake.route(&path, oci(bytes.clone()));
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = format!("/v2/fake.test/lib/app/manifests/{digest}");
    for _ in 0..3 {
        assert_eq!(proxy.get(&url).await.2, bytes);
    }
    let (status, headers, body) = proxy.request("HEAD", &url, &[]).await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    assert_eq!(fake.hits_containing(&digest), 1);
}

#[tokio::test]
async fn manifest_with_wrong_digest_is_refused() {
    let fake = Fake::start(&["fake.test"]).await;
    let claimed = sha256_digest(b"other");
    fake.route(
        &format!("/v2/lib/app/manifests/{claimed}"),
        oci(manifest(6)),
    );
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, _, body) = proxy
        .get(&format!("/v2/fake.test/lib/app/manifests/{claimed}"))
        .await;
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body).contains("MANIFEST_INVALID"));
}

#[tokio::test]
async fn head_on_uncached_tag_stays_head() {
    let fake = Fake::start(&["fake.test"]).await;
    fake.route("/v2/lib/app/manifests/v9", oci(manifest(7)));
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, headers, _) = proxy
        .request("HEAD", "/v2/fake.test/lib/app/manifests/v9", &[])
        .await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("docker-content-digest"));
    assert_eq!(fake.hits("HEAD", "/v2/lib/app/manifests/v9"), 1);
    assert_eq!(fake.hits("GET", "/v2/lib/app/manifests/v9"), 0);
}

#[tokio::test]
async fn per_registry_ttl_override_from_the_toml_file() {
    let fake = Fake::start(&["fake.test"]).await;
    let bytes = manifest(8);
    fake.route("/v2/lib/app/manifests/latest", oci(bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, "enable_manifest_cache = false\n\n[registry.\"fake.test\".manifest_cache]\nenabled = true\ndefault_time = \"1h\"\n").unwrap();
    let proxy = TestProxy::start(&fake, &[("CONFIG", file.to_str().unwrap())]).await;
    for _ in 0..3 {
        assert_eq!(
            proxy.get("/v2/fake.test/lib/app/manifests/latest").await.2,
            bytes
        );
    }
    assert_eq!(
        fake.hits_containing("/manifests/latest"),
        1,
        "fake.test tags are fresh for an hour"
    );
}

#[tokio::test]
async fn an_image_pulled_once_is_pulled_again_with_the_upstream_gone() {
    let fake = Fake::start(&["fake.test"]).await;
    let (layer, layer_digest) = random_blob(50_000, 9);
    let bytes = manifest(9);
    fake.route("/v2/lib/app/manifests/v1", oci(bytes.clone()));
    fake.route(
        &format!("/v2/lib/app/blobs/{layer_digest}"),
        Behavior::Blob(layer.clone()),
    );
    let mut proxy = TestProxy::start(&fake, &[]).await;
    let accept = [("accept", OCI_MANIFEST)];
    let blob_url = format!("/v2/fake.test/lib/app/blobs/{layer_digest}");
    assert_eq!(
        proxy
            .request("GET", "/v2/fake.test/lib/app/manifests/v1", &accept)
            .await
            .2,
        bytes
    );
    assert_eq!(proxy.get(&blob_url).await.2, layer);
    // Upstream gone: nothing listens where fake.test now points.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    proxy
        .restart_with(&[(
            "CONNECT_TO",
            &format!("fake.test:443:127.0.0.1:{closed_port}"),
        )])
        .await;
    let (status, headers, body) = proxy
        .request("HEAD", "/v2/fake.test/lib/app/manifests/v1", &accept)
        .await;
    assert_eq!(status, 200, "HEAD served stale");
    assert!(body.is_empty());
    assert_eq!(
        headers["docker-content-digest"],
        sha256_digest(&bytes).as_str()
    );
    let (status, _, body) = proxy
        .request("GET", "/v2/fake.test/lib/app/manifests/v1", &accept)
        .await;
    assert_eq!(status, 200, "GET served stale");
    assert_eq!(body, bytes);
    proxy.assert_serves(&blob_url, &layer).await;
    // What was never cached gets a clear registry error.
    let (status, _, body) = proxy
        .request("GET", "/v2/fake.test/lib/other/manifests/v1", &accept)
        .await;
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body).contains("UNAVAILABLE"));
}

#[tokio::test]
async fn head_then_digest_clients_are_served_stale_too() {
    // containerd resolves a tag with HEAD, then fetches the manifest by digest.
    let fake = Fake::start(&["fake.test"]).await;
    let bytes = manifest(10);
    let digest = sha256_digest(&bytes);
    let behavior = oci(bytes.clone());
    fake.route("/v2/lib/app/manifests/v2", behavior.clone());
    fake.route(&format!("/v2/lib/app/manifests/{digest}"), behavior);
    let mut proxy = TestProxy::start(&fake, &[]).await;
    let accept = [("accept", OCI_MANIFEST)];
    let (status, headers, _) = proxy
        .request("HEAD", "/v2/fake.test/lib/app/manifests/v2", &accept)
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["docker-content-digest"], digest.as_str());
    assert_eq!(
        proxy
            .request(
                "GET",
                &format!("/v2/fake.test/lib/app/manifests/{digest}"),
                &accept
            )
            .await
            .2,
        bytes
    );
    proxy
        .restart_with(&[("CONNECT_TO", "fake.test:443:127.0.0.1:9")])
        .await;
    let (status, headers, _) = proxy
        .request("HEAD", "/v2/fake.test/lib/app/manifests/v2", &accept)
        .await;
    assert_eq!(
        status, 200,
        "the tag resolves from the cache while upstream is gone"
    );
    assert_eq!(headers["docker-content-digest"], digest.as_str());
    let (status, _, body) = proxy
        .request(
            "GET",
            &format!("/v2/fake.test/lib/app/manifests/{digest}"),
            &accept,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes);
}
