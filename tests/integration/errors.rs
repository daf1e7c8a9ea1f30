//! Bad input gets a clear 4xx (registry JSON errors on registry routes), never a panic, and
//! touches nothing in the cache.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake::Fake;
use crate::harness::TestProxy;

#[tokio::test]
async fn malformed_registry_paths_get_json_errors() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    let cases = [
        ("/v2/fake.test/UPPER/app/manifests/v1", "NAME_INVALID"),
        ("/v2/fake.test/lib/app/blobs/sha256:1234", "DIGEST_INVALID"),
        ("/v2/fake.test/lib/../etc/manifests/v1", ""),
        ("/v2/fake.test/lib%2fapp/manifests/v1", ""),
        ("/v2/fake.test/lib/app/manifests/-bad-tag", ""),
    ];
    for (path, code) in cases {
        let (status, headers, body) = proxy.get(path).await;
        assert!(status.is_client_error(), "{path}: {status}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.starts_with("{\"errors\":[{\"code\":\""),
            "{path}: {text}"
        );
        assert!(text.contains(code), "{path}: {text}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
    assert_eq!(fake.hits_containing("/v2/"), 0, "nothing reached upstream");
}

#[tokio::test]
async fn writes_are_refused_unless_allowed() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let (status, _, body) = proxy
            .request(method, "/v2/fake.test/lib/app/blobs/uploads/", &[])
            .await;
        assert_eq!(status, 405, "{method}");
        assert!(String::from_utf8_lossy(&body).contains("UNSUPPORTED"));
    }
}

#[tokio::test]
async fn mirror_mode_is_not_an_open_relay() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, _, body) = proxy.get("/v2/evil.example/x/manifests/v1").await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("DENIED"));
    let (status, _, _) = proxy.get("/v2/x/manifests/v1?ns=evil.example").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn garbage_and_oversized_headers_do_not_hurt() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let big = "x".repeat(100_000);
    let _ = s
        .write_all(
            format!("GET /v2/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {big}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    // Still serving.
    let (status, _, body) = proxy.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body, "ok\n");
}

#[tokio::test]
async fn writes_pass_through_when_allowed() {
    let fake = Fake::start(&["fake.test"]).await;
    fake.route(
        "/v2/lib/app/blobs/uploads/",
        crate::fake::Behavior::Status(202),
    );
    let proxy = TestProxy::start(&fake, &[("ALLOW_PUSH", "true")]).await;
    let (status, _, _) = proxy
        .request("POST", "/v2/fake.test/lib/app/blobs/uploads/", &[])
        .await;
    assert_eq!(status, 202);
    assert_eq!(fake.hits("POST", "/v2/lib/app/blobs/uploads/"), 1);
}
