//! Upstream auth: Bearer tokens and Basic with central credentials, redirects without credentials.

use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{TestProxy, random_bytes};

#[tokio::test]
async fn bearer_challenge_is_answered_and_token_reused() {
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_bearer("tok-123");
    let data = random_bytes(5000, 10);
    let digest = sha256_digest(&data);
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::Blob(data.clone()),
    );
    fake.route(
        "/v2/lib/app/tags/list",
        Behavior::Manifest {
            bytes: "{\"tags\":[]}".into(),
            media_type: "application/json".into(),
        },
    );
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, _, body) = proxy
        .request("GET", &format!("/v2/fake.test/lib/app/blobs/{digest}"), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    let (status, _, _) = proxy
        .request("GET", "/v2/fake.test/lib/app/tags/list", &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        fake.hits("GET", "/token"),
        1,
        "token cached per scope and reused"
    );
}

#[tokio::test]
async fn basic_auth_uses_central_credentials() {
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_basic("alice", "pa:ss");
    let data = random_bytes(5000, 11);
    let digest = sha256_digest(&data);
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::Blob(data.clone()),
    );
    let without = TestProxy::start(&fake, &[]).await;
    let (status, _, _) = without
        .request("GET", &format!("/v2/fake.test/lib/app/blobs/{digest}"), &[])
        .await;
    assert_eq!(status, 401, "no credentials: upstream's 401 is passed on");
    let with = TestProxy::start(&fake, &[("AUTH_REGISTRIES", "fake.test:alice:pa:ss")]).await;
    let (status, _, body) = with
        .request("GET", &format!("/v2/fake.test/lib/app/blobs/{digest}"), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
}

#[tokio::test]
async fn redirects_are_followed_without_credentials_to_other_hosts() {
    let fake = Fake::start(&["fake.test", "cdn.test"]).await;
    fake.require_basic("alice", "secret");
    let data = random_bytes(8000, 12);
    let digest = sha256_digest(&data);
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::RedirectTo("https://cdn.test/cdn/blob?sig=abc".into()),
    );
    fake.route("/cdn/blob", Behavior::Blob(data.clone()));
    let proxy = TestProxy::start(&fake, &[("AUTH_REGISTRIES", "fake.test:alice:secret")]).await;
    let (status, headers, body) = proxy
        .request("GET", &format!("/v2/fake.test/lib/app/blobs/{digest}"), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    assert!(
        headers.get("location").is_none(),
        "the client never sees the CDN"
    );
    let seen = fake.auth_seen();
    let cdn: Vec<_> = seen.iter().filter(|(p, _)| p == "/cdn/blob").collect();
    assert_eq!(cdn.len(), 1);
    assert_eq!(cdn[0].1, None, "Authorization dropped on host change");
}

#[tokio::test]
async fn same_host_redirects_keep_credentials() {
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_basic("alice", "secret");
    let data = random_bytes(3000, 13);
    let digest = sha256_digest(&data);
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::Redirect("/v2/storage/blob".into()),
    );
    fake.route("/v2/storage/blob", Behavior::Blob(data.clone()));
    let proxy = TestProxy::start(&fake, &[("AUTH_REGISTRIES", "fake.test:alice:secret")]).await;
    let (status, _, body) = proxy
        .request("GET", &format!("/v2/fake.test/lib/app/blobs/{digest}"), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    let seen = fake.auth_seen();
    assert!(
        seen.iter()
            .any(|(p, a)| p == "/v2/storage/blob" && a.is_some())
    );
}
