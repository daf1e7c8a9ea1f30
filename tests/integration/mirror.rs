//! Mirror modes on the plain port: `?ns=`, path prefix, Docker Hub with `library/`, and the TLS
//! mirror listener — all sharing one cache with CONNECT mode.

use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{TestProxy, random_blob, serve_random_blob};

#[tokio::test]
async fn ns_parameter_and_path_prefix_share_one_cache() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = random_blob(20_000, 30);
    let upstream_path = format!("/v2/lib/app/blobs/{digest}");
    fake.route(&upstream_path, Behavior::Blob(data.clone()));
    let proxy = TestProxy::start(&fake, &[]).await;
    proxy
        .assert_serves(&format!("/v2/lib/app/blobs/{digest}?ns=fake.test"), &data)
        .await;
    let (_, _, body) = proxy
        .get(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
        .await;
    assert_eq!(body, data);
    let (status, _, body) = proxy.via_connect("fake.test", "GET", &upstream_path).await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    assert_eq!(
        fake.hits("GET", &upstream_path),
        1,
        "one download serves all three modes"
    );
}

#[tokio::test]
async fn docker_hub_is_the_default_and_gets_library_prefix() {
    let fake = Fake::start(&["registry-1.docker.io"]).await;
    let manifest = bytes::Bytes::from_static(
        b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"}",
    );
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    fake.route(
        "/v2/library/alpine/manifests/3",
        Behavior::Manifest {
            bytes: manifest.clone(),
            media_type: media_type.into(),
        },
    );
    let proxy = TestProxy::start(&fake, &[]).await;
    // Docker's registry-mirrors: no hint, one-component name.
    let (status, headers, body) = proxy
        .request("GET", "/v2/alpine/manifests/3", &[("accept", media_type)])
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, manifest);
    assert_eq!(
        headers["docker-content-digest"],
        sha256_digest(&manifest).as_str()
    );
    // containerd's ns=docker.io and the path prefix name the same thing.
    let (status, _, _) = proxy
        .request(
            "GET",
            "/v2/library/alpine/manifests/3?ns=docker.io",
            &[("accept", media_type)],
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = proxy
        .request(
            "GET",
            "/v2/docker.io/library/alpine/manifests/3",
            &[("accept", media_type)],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(fake.hits("GET", "/v2/library/alpine/manifests/3"), 1);
}

#[tokio::test]
async fn tls_mirror_listener_serves_the_same_api() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/app", 9_000, 31);
    let proxy = TestProxy::start(
        &fake,
        &[
            ("TLS_LISTEN", "127.0.0.1:0"),
            ("TLS_NAMES", "mirror.test 127.0.0.1"),
        ],
    )
    .await;
    let (status, _, body) = proxy
        .via_tls_listener(
            "mirror.test",
            &format!("/v2/fake.test/lib/app/blobs/{digest}"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    let (status, _, body) = proxy.via_tls_listener("mirror.test", "/ca.crt").await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"-----BEGIN CERTIFICATE-----"));
}

#[tokio::test]
async fn setup_scripts_are_served() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, _, body) = proxy.get("/setup/containerd").await;
    assert_eq!(status, 200);
    let script = String::from_utf8_lossy(&body);
    assert!(script.contains("_default/hosts.toml"), "{script}");
    assert!(
        script.contains(&format!("[host.\"http://{}\"]", proxy.addr)),
        "{script}"
    );
    assert!(script.contains("fake.test/hosts.toml"), "{script}");
    let (status, _, body) = proxy.get("/setup/systemd").await;
    assert_eq!(status, 200);
    let script = String::from_utf8_lossy(&body);
    assert!(script.contains("HTTPS_PROXY=http://"), "{script}");
    assert!(script.contains("/ca.crt"), "{script}");
    let (status, _, _) = proxy.get("/setup/lxc").await;
    assert_eq!(status, 404);
}

/// The `Link` header of a response, as one string.
fn link(headers: &http::HeaderMap) -> String {
    headers
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The target of a `<target>; rel="next"` link.
fn next_target(link: &str) -> String {
    link.trim_start_matches('<')
        .split_once('>')
        .unwrap()
        .0
        .to_owned()
}

/// A JSON page whose `Link` header points at the next one.
fn json_page(body: bytes::Bytes, next: &str) -> Behavior {
    Behavior::WithHeaders(Box::new(Behavior::Json(body)), vec![("link", next.into())])
}

/// GETs the target of the `Link` header `next` and asserts a 200.
async fn follow(proxy: &TestProxy, next: &str) {
    let (status, _, _) = proxy.get(&next_target(next)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn pagination_links_stay_on_the_proxy_in_every_mode() {
    let fake = Fake::start(&["fake.test", "registry-1.docker.io"]).await;
    let tags = bytes::Bytes::from_static(br#"{"name":"lib/app","tags":["a","b"]}"#);
    fake.route(
        "/v2/lib/app/tags/list",
        json_page(
            tags.clone(),
            r#"</v2/lib/app/tags/list?n=2&last=b>; rel="next""#,
        ),
    );
    fake.route(
        "/v2/library/alpine/tags/list",
        json_page(
            tags.clone(),
            r#"</v2/library/alpine/tags/list?n=2&last=b>; rel="next""#,
        ),
    );
    // An absolute URL naming the upstream, as some registries write it.
    fake.route(
        "/v2/_catalog",
        json_page(
            bytes::Bytes::from_static(br#"{"repositories":["lib/app"]}"#),
            r#"<https://fake.test/v2/_catalog?last=lib/app&n=1>; rel="next""#,
        ),
    );
    let proxy = TestProxy::start(&fake, &[]).await;

    // Path prefix: the prefix is added, and the next page comes from the same upstream.
    let (status, headers, body) = proxy.get("/v2/fake.test/lib/app/tags/list").await;
    assert_eq!(status, 200);
    assert_eq!(body, tags);
    let next = link(&headers);
    assert_eq!(
        next,
        r#"</v2/fake.test/lib/app/tags/list?n=2&last=b>; rel="next""#
    );
    follow(&proxy, &next).await;
    assert_eq!(fake.hits("GET", "/v2/lib/app/tags/list"), 2);

    // ?ns=: the parameter is carried on.
    let (status, headers, _) = proxy.get("/v2/lib/app/tags/list?ns=fake.test").await;
    assert_eq!(status, 200);
    let next = link(&headers);
    assert_eq!(
        next,
        r#"</v2/lib/app/tags/list?n=2&last=b&ns=fake.test>; rel="next""#
    );
    follow(&proxy, &next).await;
    assert_eq!(fake.hits("GET", "/v2/lib/app/tags/list"), 4);

    // Docker Hub as the default mirror: the upstream's path is already right.
    let (status, headers, _) = proxy.get("/v2/alpine/tags/list").await;
    assert_eq!(status, 200);
    assert_eq!(
        link(&headers),
        r#"</v2/library/alpine/tags/list?n=2&last=b>; rel="next""#
    );

    // Intercepted CONNECT: unchanged too.
    let (status, headers, _) = proxy
        .via_connect("fake.test", "GET", "/v2/lib/app/tags/list")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        link(&headers),
        r#"</v2/lib/app/tags/list?n=2&last=b>; rel="next""#
    );

    // _catalog: the absolute upstream URL becomes a path on the proxy, in each mode.
    let (status, headers, body) = proxy.get("/v2/fake.test/_catalog").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        link(&headers),
        r#"</v2/fake.test/_catalog?last=lib/app&n=1>; rel="next""#
    );
    let (status, headers, _) = proxy.get("/v2/_catalog?ns=fake.test").await;
    assert_eq!(status, 200);
    assert_eq!(
        link(&headers),
        r#"</v2/_catalog?last=lib/app&n=1&ns=fake.test>; rel="next""#
    );
    let (status, headers, _) = proxy.via_connect("fake.test", "GET", "/v2/_catalog").await;
    assert_eq!(status, 200);
    assert_eq!(
        link(&headers),
        r#"</v2/_catalog?last=lib/app&n=1>; rel="next""#
    );
}

/// `REGISTRIES=http://host:port`: a lab registry that speaks plain HTTP is reached over plain HTTP,
/// and cached as any other; without `http://` it is never tried over plain HTTP.
#[tokio::test]
async fn plain_http_upstreams_only_when_spelled_so() {
    let fake = Fake::start(&["fake.test"]).await;
    let plain = fake.serve_plain().await;
    let (data, digest) = random_blob(30_000, 71);
    let upstream_path = format!("/v2/lab/app/blobs/{digest}");
    fake.route(&upstream_path, Behavior::Blob(data.clone()));
    let registry = format!("127.0.0.1:{}", plain.port());

    let spelled = format!("fake.test http://{registry}/");
    let proxy = TestProxy::start(&fake, &[("REGISTRIES", &spelled)]).await;
    for path in [
        format!("/v2/{registry}/lab/app/blobs/{digest}"),
        format!("/v2/lab/app/blobs/{digest}?ns={registry}"),
    ] {
        let (status, _, body) = proxy.get(&path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(body, data, "{path}");
    }
    assert_eq!(
        fake.hits("GET", &upstream_path),
        1,
        "fetched once, then cached"
    );
    drop(proxy);

    // The same registry without `http://` is https: the plain port is not spoken to in HTTP.
    let proxy = TestProxy::start(&fake, &[("REGISTRIES", &format!("fake.test {registry}"))]).await;
    let path = format!("/v2/{registry}/lab/app/blobs/{digest}");
    let (status, _, _) = proxy.get(&path).await;
    assert!(status.is_server_error(), "{status}");
    assert_eq!(fake.hits("GET", &upstream_path), 1, "no plain-HTTP request");
}
