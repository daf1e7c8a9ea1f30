//! Upstream auth: Bearer tokens and Basic with central credentials, redirects without credentials.

use crate::fake::{Behavior, Fake};
use crate::harness::{TestProxy, random_blob, serve_random_blob};

#[tokio::test]
async fn bearer_challenge_is_answered_and_token_reused() {
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_bearer("tok-123");
    let (data, digest) = serve_random_blob(&fake, "lib/app", 5000, 10);
    fake.route(
        "/v2/lib/app/tags/list",
        Behavior::Manifest {
            bytes: "{\"tags\":[]}".into(),
            media_type: "application/json".into(),
        },
    );
    let proxy = TestProxy::start(&fake, &[]).await;
    proxy
        .assert_serves(&format!("/v2/fake.test/lib/app/blobs/{digest}"), &data)
        .await;
    let (status, _, _) = proxy.get("/v2/fake.test/lib/app/tags/list").await;
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
    let (data, digest) = serve_random_blob(&fake, "lib/app", 5000, 11);
    let without = TestProxy::start(&fake, &[]).await;
    let (status, _, _) = without
        .get(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
        .await;
    assert_eq!(status, 401, "no credentials: upstream's 401 is passed on");
    let with = TestProxy::start(&fake, &[("AUTH_REGISTRIES", "fake.test:alice:pa:ss")]).await;
    with.assert_serves(&format!("/v2/fake.test/lib/app/blobs/{digest}"), &data)
        .await;
}

#[tokio::test]
async fn redirects_are_followed_without_credentials_to_other_hosts() {
    let fake = Fake::start(&["fake.test", "cdn.test"]).await;
    fake.require_basic("alice", "secret");
    let (data, digest) = random_blob(8000, 12);
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::RedirectTo("https://cdn.test/cdn/blob?sig=abc".into()),
    );
    fake.route("/cdn/blob", Behavior::Blob(data.clone()));
    let proxy = TestProxy::start(&fake, &[("AUTH_REGISTRIES", "fake.test:alice:secret")]).await;
    let (status, headers, body) = proxy
        .get(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
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
    let (data, digest) = random_blob(3000, 13);
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::Redirect("/v2/storage/blob".into()),
    );
    fake.route("/v2/storage/blob", Behavior::Blob(data.clone()));
    let proxy = TestProxy::start(&fake, &[("AUTH_REGISTRIES", "fake.test:alice:secret")]).await;
    proxy
        .assert_serves(&format!("/v2/fake.test/lib/app/blobs/{digest}"), &data)
        .await;
    let seen = fake.auth_seen();
    assert!(
        seen.iter()
            .any(|(p, a)| p == "/v2/storage/blob" && a.is_some())
    );
}

/// The harness's `CONNECT_TO` plus `extra` (host, port) pairs, each sent to a local port.
fn connect_to(fake: &Fake, extra: &[(&str, u16, u16)]) -> String {
    let port = fake.addr.port();
    let mut entries: Vec<String> = ["fake.test", "cdn.test", "registry-1.docker.io"]
        .iter()
        .map(|h| format!("{h}:443:127.0.0.1:{port}"))
        .collect();
    for (host, host_port, local) in extra {
        entries.push(format!("{host}:{host_port}:127.0.0.1:{local}"));
    }
    entries.join(" ")
}

/// A proxy with `AUTH_REGISTRIES` set to `credentials` and `CONNECT_TO` to `connect`.
async fn with_credentials(fake: &Fake, credentials: &str, connect: &str) -> TestProxy {
    TestProxy::start(
        fake,
        &[("AUTH_REGISTRIES", credentials), ("CONNECT_TO", connect)],
    )
    .await
}

fn basic(user: &str, pass: &str) -> Option<String> {
    use base64::Engine;
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    ))
}

/// The `Authorization` of every token request the fake has seen, in order.
fn token_requests(fake: &Fake) -> Vec<Option<String>> {
    fake.auth_seen()
        .into_iter()
        .filter(|(path, _)| path == "/token")
        .map(|(_, auth)| auth)
        .collect()
}

/// A blob behind a Bearer challenge whose realm is `realm`; returns its path on the proxy.
fn bearer_blob(fake: &Fake, realm: &str, seed: u64) -> String {
    fake.require_bearer("tok-realm");
    fake.set_realm(realm);
    let (_, digest) = serve_random_blob(fake, "lib/app", 2000, seed);
    format!("/v2/fake.test/lib/app/blobs/{digest}")
}

#[tokio::test]
async fn realm_on_the_registry_itself_gets_central_credentials() {
    let fake = Fake::start(&["fake.test"]).await;
    let path = bearer_blob(&fake, "https://fake.test/token", 20);
    let proxy = TestProxy::start(&fake, &[("AUTH_REGISTRIES", "fake.test:alice:secret")]).await;
    let (status, _, _) = proxy.get(&path).await;
    assert_eq!(status, 200);
    let tokens = token_requests(&fake);
    assert!(!tokens.is_empty());
    assert!(
        tokens.iter().all(|a| *a == basic("alice", "secret")),
        "{tokens:?}"
    );
}

#[tokio::test]
async fn realm_on_another_port_of_the_same_host_gets_no_credentials() {
    let fake = Fake::start(&["fake.test"]).await;
    let path = bearer_blob(&fake, "https://fake.test:8443/token", 21);
    let connect = connect_to(&fake, &[("fake.test", 8443, fake.addr.port())]);
    let proxy = with_credentials(&fake, "fake.test:alice:secret", &connect).await;
    let (status, _, _) = proxy.get(&path).await;
    assert_eq!(status, 200, "the token is fetched anonymously");
    let tokens = token_requests(&fake);
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(Option::is_none), "{tokens:?}");
}

#[tokio::test]
async fn plain_http_realm_gets_no_credentials() {
    let fake = Fake::start(&["fake.test"]).await;
    let plain = fake.serve_plain().await;
    let path = bearer_blob(&fake, "http://fake.test/token", 22);
    let connect = connect_to(&fake, &[("fake.test", 80, plain.port())]);
    let proxy = with_credentials(&fake, "fake.test:alice:secret", &connect).await;
    let (status, _, _) = proxy.get(&path).await;
    assert_eq!(status, 200);
    let tokens = token_requests(&fake);
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(Option::is_none), "{tokens:?}");
}

#[tokio::test]
async fn realm_host_named_in_auth_registries_gets_credentials_on_its_port_only() {
    for (realm, expected) in [
        ("https://auth.test/token", basic("alice", "secret")),
        ("https://auth.test:8443/token", None),
    ] {
        let fake = Fake::start(&["fake.test", "auth.test"]).await;
        let path = bearer_blob(&fake, realm, 23);
        let port = fake.addr.port();
        let connect = connect_to(
            &fake,
            &[("auth.test", 443, port), ("auth.test", 8443, port)],
        );
        let proxy = with_credentials(&fake, "auth.test:alice:secret", &connect).await;
        let (status, _, _) = proxy.get(&path).await;
        assert_eq!(status, 200, "{realm}");
        let tokens = token_requests(&fake);
        assert!(!tokens.is_empty(), "{realm}");
        assert!(tokens.iter().all(|a| *a == expected), "{realm}: {tokens:?}");
    }
}

#[tokio::test]
async fn docker_hub_credentials_go_to_hubs_realm_only() {
    let fake = Fake::start(&["registry-1.docker.io", "auth.docker.io", "fake.test"]).await;
    fake.require_bearer("tok-hub");
    fake.set_realm("https://auth.docker.io/token");
    let (hub_data, hub_digest) = serve_random_blob(&fake, "library/app", 1500, 24);
    let (_, other_digest) = serve_random_blob(&fake, "lib/app", 1500, 25);
    let connect = connect_to(&fake, &[("auth.docker.io", 443, fake.addr.port())]);
    let proxy = with_credentials(&fake, "auth.docker.io:alice:secret", &connect).await;
    // Docker Hub (mirror mode's default registry): the seed's `auth.docker.io` entry is used.
    proxy
        .assert_serves(&format!("/v2/library/app/blobs/{hub_digest}"), &hub_data)
        .await;
    let hub_tokens = token_requests(&fake);
    assert!(!hub_tokens.is_empty());
    assert!(
        hub_tokens.iter().all(|a| *a == basic("alice", "secret")),
        "{hub_tokens:?}"
    );
    // Another registry that names Hub's realm gets a token, but not with Hub's credentials.
    let (status, _, _) = proxy
        .get(&format!("/v2/fake.test/lib/app/blobs/{other_digest}"))
        .await;
    assert_eq!(status, 200);
    let later = &token_requests(&fake)[hub_tokens.len()..];
    assert!(!later.is_empty());
    assert!(later.iter().all(Option::is_none), "{later:?}");
}

/// A redirect from the registry to `location` (served by the fake at `target_path`, reached as
/// `host:port` on the fake's TLS port): the original request carries credentials, the
/// redirected one must not.
async fn redirect_drops_credentials(location: &str, target_path: &str, host_port: u16) {
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_basic("alice", "secret");
    let (data, digest) = random_blob(4000, 26);
    let registry_path = format!("/v2/lib/app/blobs/{digest}");
    fake.route(&registry_path, Behavior::RedirectTo(location.to_owned()));
    fake.route(target_path, Behavior::Blob(data.clone()));
    let connect = connect_to(&fake, &[("fake.test", host_port, fake.addr.port())]);
    let proxy = with_credentials(&fake, "fake.test:alice:secret", &connect).await;
    let (status, _, body) = proxy
        .get(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
        .await;
    assert_eq!(status, 200, "{location}");
    assert_eq!(body, data);
    let seen = fake.auth_seen();
    assert!(
        seen.iter()
            .any(|(p, a)| *p == registry_path && *a == basic("alice", "secret")),
        "{seen:?}"
    );
    let redirected: Vec<_> = seen.iter().filter(|(p, _)| p == target_path).collect();
    assert_eq!(redirected.len(), 1, "{seen:?}");
    assert_eq!(
        redirected[0].1, None,
        "{location} got the registry's credentials"
    );
}

#[tokio::test]
async fn redirect_to_plain_http_is_refused_and_gets_no_credentials() {
    let fake = Fake::start(&["fake.test"]).await;
    let plain = fake.serve_plain().await;
    fake.require_basic("alice", "secret");
    let (data, digest) = random_blob(4000, 26);
    let registry_path = format!("/v2/lib/app/blobs/{digest}");
    fake.route(
        &registry_path,
        Behavior::RedirectTo("http://fake.test/plain/blob".into()),
    );
    fake.route("/plain/blob", Behavior::Blob(data.clone()));
    let connect = connect_to(&fake, &[("fake.test", 80, plain.port())]);
    let proxy = with_credentials(&fake, "fake.test:alice:secret", &connect).await;
    let (status, _, body) = proxy
        .get(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
        .await;
    // A registry reached over TLS never sends the proxy on over plain HTTP.
    assert_eq!(status, 502);
    assert_ne!(body, data);
    assert!(
        fake.auth_seen().iter().all(|(p, _)| p != "/plain/blob"),
        "nothing was sent over plain HTTP"
    );
}

#[tokio::test]
async fn redirect_to_another_port_on_the_same_host_drops_credentials() {
    redirect_drops_credentials("https://fake.test:8443/port/blob", "/port/blob", 8443).await;
}

#[tokio::test]
async fn auth_registries_from_a_file_and_never_shown() {
    const PASSWORD: &str = "pw-Zq8.Kx";
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_basic("alice", PASSWORD);
    let (data, digest) = serve_random_blob(&fake, "lib/app", 3000, 27);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("auth_registries");
    // Several lines, the last one ending with a line break, as secrets files usually do.
    std::fs::write(
        &secret,
        format!("other.test:bob:other-pw\nfake.test:alice:{PASSWORD}\n"),
    )
    .unwrap();
    let proxy =
        TestProxy::start(&fake, &[("AUTH_REGISTRIES_FILE", secret.to_str().unwrap())]).await;
    let (status, _, body) = proxy
        .get(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    for path in [
        "/",
        "/metrics",
        "/status.json",
        "/setup/docker",
        "/setup/systemd",
    ] {
        let (_, _, body) = proxy.get(path).await;
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(PASSWORD), "{path}: {text}");
    }
}
