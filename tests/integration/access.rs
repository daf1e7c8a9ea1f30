//! Access control: client authentication (htpasswd on CONNECT and in mirror mode, the proxy's
//! token flow), per-repository rules, and `verify` mode — a cached private object goes only to a
//! client whose own credential upstream accepted.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;

use crate::fake::{Behavior, Fake};
use crate::harness::{TestProxy, serve_random_blob, serve_slow_blob};

pub(crate) fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// An htpasswd file (bcrypt, low cost for speed) for `users`, in the proxy's temp dir.
pub(crate) fn htpasswd(dir: &std::path::Path, users: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (user, pass) in users {
        let hash = bcrypt::hash(pass, 4).unwrap();
        text.push_str(&format!("{user}:{hash}\n"));
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A token from the proxy's token endpoint, as `docker login` would get one.
async fn token(proxy: &TestProxy, scope: &str, auth: Option<&str>) -> (u16, Option<String>) {
    let mut headers = Vec::new();
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let (status, _, body) = proxy
        .request(
            "GET",
            &format!("/token?service=registry-proxy&scope={scope}"),
            &headers,
        )
        .await;
    let token = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned));
    (status.as_u16(), token)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A private repository on a Basic-auth upstream without central credentials (`verify` mode).
async fn private_upstream() -> (Fake, Bytes, String) {
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_basic("alice", "alice-pw");
    let (data, digest) = serve_random_blob(&fake, "team/app", 40_000, 70);
    (fake, data, digest)
}

#[tokio::test]
async fn verify_mode_serves_cached_private_blobs_only_to_accepted_credentials() {
    let (fake, data, digest) = private_upstream().await;
    let proxy = TestProxy::start(&fake, &[]).await;
    let path = format!("/v2/fake.test/team/app/blobs/{digest}");

    // /v2/ challenges, so that clients send their credentials at all.
    let (status, headers, _) = proxy.get("/v2/").await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"http://"),
        "{challenge}"
    );
    assert!(challenge.contains("/token\""), "{challenge}");

    // alice logs in with her own upstream credentials and pulls: a MISS through her credential.
    let (status, alice) = token(
        &proxy,
        "repository:fake.test/team/app:pull",
        Some(&basic("alice", "alice-pw")),
    )
    .await;
    assert_eq!(status, 200);
    let alice = alice.unwrap();
    let (status, _, body) = proxy.get_as(&path, &bearer(&alice)).await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    assert!(proxy.has_blob(&digest), "cached");
    let gets = fake.hits("GET", &format!("/v2/team/app/blobs/{digest}"));

    // Anonymous: asked to log in, no byte of the blob.
    let (status, headers, body) = proxy.get(&path).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert!(!body.windows(64).any(|w| data.windows(64).next() == Some(w)));

    // A wrong password: upstream refuses it, so does the proxy.
    let (_, wrong) = token(
        &proxy,
        "repository:fake.test/team/app:pull",
        Some(&basic("alice", "guess")),
    )
    .await;
    let (status, _, body) = proxy.get_as(&path, &bearer(&wrong.unwrap())).await;
    assert_eq!(status, 401);
    assert_ne!(body, data);

    // Direct Basic (no token) with the wrong password: likewise.
    let (status, _, _) = proxy.get_as(&path, &basic("mallory", "x")).await;
    assert_eq!(status, 401);

    // alice again: a HIT, with no upstream GET (her credential is remembered as accepted).
    let (status, _, body) = proxy.get_as(&path, &bearer(&alice)).await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    assert_eq!(
        fake.hits("GET", &format!("/v2/team/app/blobs/{digest}")),
        gets,
        "served from the cache"
    );
}

#[tokio::test]
async fn verify_mode_checks_before_joining_a_download_in_flight() {
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_basic("alice", "alice-pw");
    let (data, digest) = serve_slow_blob(&fake, "team/app", (64_000, 71), 20, 100);
    let proxy = TestProxy::start(&fake, &[]).await;
    let path = format!("/v2/fake.test/team/app/blobs/{digest}");
    let alice_auth = basic("alice", "alice-pw");
    let leader = {
        let path = path.clone();
        let proxy_addr = proxy.addr;
        let auth = alice_auth.clone();
        tokio::spawn(async move {
            let client = crate::harness::RawClient(proxy_addr);
            client.get(&path, &[("authorization", &auth)]).await
        })
    };
    // Wait until the download is in flight.
    for _ in 0..100 {
        if fake.hits("GET", &format!("/v2/team/app/blobs/{digest}")) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = proxy.get(&path).await;
    assert_eq!(status, 401, "anonymous may not join alice's download");
    assert!(body.len() < 1000);
    let (status, _, _) = proxy.get_as(&path, &basic("alice", "nope")).await;
    assert_eq!(status, 401, "nor may a wrong password");
    let (status, body) = leader.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, data);
}

#[tokio::test]
async fn public_repositories_skip_the_credential_check() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/pub", 10_000, 72);
    let proxy = TestProxy::start(&fake, &[]).await;
    let path = format!("/v2/fake.test/lib/pub/blobs/{digest}");
    let (status, _, body) = proxy.get(&path).await;
    assert_eq!((status.as_u16(), body.clone()), (200, data.clone()));
    // The anonymous miss proved the repository public: the hit asks upstream nothing.
    let (status, _, body) = proxy.get(&path).await;
    assert_eq!((status.as_u16(), body), (200, data));
    assert_eq!(fake.hits("HEAD", &format!("/v2/lib/pub/blobs/{digest}")), 0);
    assert_eq!(fake.hits("GET", &format!("/v2/lib/pub/blobs/{digest}")), 1);
}

#[tokio::test]
async fn central_mode_is_decided_by_the_rules() {
    let (fake, data, digest) = private_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = htpasswd(
        dir.path(),
        &[("ci1", "ci1-pw"), ("bob", "bob-pw"), ("eve", "eve-pw")],
    );
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        r#"
[groups]
ci = ["ci1"]

[[access]]
match = "fake.test/team/*"
pull = ["@ci"]
fetch = ["bob"]
"#,
    )
    .unwrap();
    let proxy = TestProxy::start(
        &fake,
        &[
            ("AUTH_REGISTRIES", "fake.test:alice:alice-pw"),
            ("PROXY_HTPASSWD", &htpasswd),
            ("CONFIG", &config.display().to_string()),
        ],
    )
    .await;
    let path = format!("/v2/fake.test/team/app/blobs/{digest}");
    // Anonymous: must log in.
    let (status, _, _) = proxy.get(&path).await;
    assert_eq!(status, 401);
    // ci1 may pull what is cached, but not make the proxy fetch it.
    let (status, _, body) = proxy.get_as(&path, &basic("ci1", "ci1-pw")).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("DENIED"));
    assert_eq!(fake.hits("GET", &format!("/v2/team/app/blobs/{digest}")), 0);
    // bob may fetch: a MISS with the central credentials.
    let (_, bob) = token(
        &proxy,
        "repository:fake.test/team/app:pull",
        Some(&basic("bob", "bob-pw")),
    )
    .await;
    let (status, _, body) = proxy.get_as(&path, &bearer(&bob.unwrap())).await;
    assert_eq!((status.as_u16(), body.clone()), (200, data.clone()));
    // Now ci1 gets the cached copy.
    let (status, _, body) = proxy.get_as(&path, &basic("ci1", "ci1-pw")).await;
    assert_eq!((status.as_u16(), body), (200, data));
    // eve is a user, but no rule names her.
    let (status, _, body) = proxy.get_as(&path, &basic("eve", "eve-pw")).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("DENIED"));
    // A wrong password is not a user.
    let (status, _, _) = proxy.get_as(&path, &basic("bob", "wrong")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn client_auth_guards_connect_and_admin_endpoints() {
    let fake = Fake::start(&["fake.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = htpasswd(dir.path(), &[("alice", "alice-pw")]);
    let manifest = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#);
    fake.route(
        "/v2/lib/app/manifests/v1",
        Behavior::Manifest {
            bytes: manifest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        },
    );
    let proxy = TestProxy::start(&fake, &[("PROXY_HTPASSWD", &htpasswd)]).await;

    // CONNECT without or with wrong Proxy-Authorization: 407 with a Basic challenge.
    let refused = proxy.connect_tunnel("fake.test", &[]).await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 407"), "{refused}");
    assert!(
        refused
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic realm=\"registry-proxy\""),
        "{refused}"
    );
    let wrong = basic("alice", "nope");
    let refused = proxy
        .connect_tunnel("fake.test", &[("Proxy-Authorization", &wrong)])
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 407"), "{refused}");
    // With the right one the tunnel opens and the registry API answers.
    let right = basic("alice", "alice-pw");
    let tunnel = proxy
        .connect_tunnel("fake.test", &[("Proxy-Authorization", &right)])
        .await
        .unwrap();
    let (status, _, body) = proxy
        .in_tunnel(
            tunnel,
            "fake.test",
            "GET",
            "/v2/lib/app/manifests/v1",
            &[("accept", "application/vnd.oci.image.manifest.v1+json")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, manifest);

    // Absolute-form requests need it too.
    let (status, headers, _) = proxy.get("http://example.invalid/").await;
    assert_eq!(status, 407);
    assert!(headers.contains_key("proxy-authenticate"));

    // /ca.crt and /healthz stay open; /metrics, / and /status.json need a user.
    for open in ["/ca.crt", "/healthz"] {
        assert_eq!(proxy.get(open).await.0, 200, "{open}");
    }
    for guarded in ["/metrics", "/", "/status.json", "/setup/docker"] {
        assert_eq!(proxy.get(guarded).await.0, 401, "{guarded}");
        assert_eq!(proxy.get_as(guarded, &right).await.0, 200, "{guarded}");
    }

    // Mirror mode: /v2/ challenges; a login (token) opens it.
    let (status, _, _) = proxy.get("/v2/").await;
    assert_eq!(status, 401);
    let (status, tok) = token(&proxy, "repository:fake.test/lib/app:pull", Some(&right)).await;
    assert_eq!(status, 200);
    let tok = tok.unwrap();
    let (status, _, _) = proxy.get_as("/v2/", &bearer(&tok)).await;
    assert_eq!(status, 200);
    let (status, _) = token(&proxy, "repository:fake.test/lib/app:pull", Some(&wrong)).await;
    assert_eq!(status, 401, "the token endpoint refuses wrong passwords");
    // A tampered token is refused.
    let mut tampered = tok.clone();
    tampered.push('A');
    let (status, _, _) = proxy
        .get_as("/v2/fake.test/lib/app/manifests/v1", &bearer(&tampered))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn catalog_lists_only_repositories_the_client_may_pull() {
    let fake = Fake::start(&["fake.test"]).await;
    fake.route(
        "/v2/_catalog",
        Behavior::Manifest {
            bytes: Bytes::from_static(br#"{"repositories":["team/app","team/db","other/x"]}"#),
            media_type: "application/json".into(),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        r#"
[[access]]
match = "fake.test/team/*"
pull = ["anonymous"]

[[access]]
match = "fake.test/team/db"
pull = []
"#,
    )
    .unwrap();
    let proxy = TestProxy::start(
        &fake,
        &[
            ("AUTH_REGISTRIES", "fake.test:alice:alice-pw"),
            ("CONFIG", &config.display().to_string()),
        ],
    )
    .await;
    let (status, _, body) = proxy.get("/v2/fake.test/_catalog").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["team/app"]));
}
