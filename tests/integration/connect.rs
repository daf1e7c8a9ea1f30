//! CONNECT: interception with a leaf from our CA, the CA endpoint, blind tunnels.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake::Fake;
use crate::harness::{TestProxy, read_head, serve_random_blob};

#[tokio::test]
async fn intercepted_registry_answers_v2_and_serves_blobs() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/app", 70_000, 20);
    let proxy = TestProxy::start(&fake, &[]).await;
    // fake.test has no central credentials (`verify` mode): /v2/ asks clients to log in to the
    // proxy, at the host they think they talk to, so that they send their own credentials.
    let (status, headers, _) = proxy.via_connect("fake.test", "GET", "/v2/").await;
    assert_eq!(status, 401);
    assert_eq!(headers["docker-distribution-api-version"], "registry/2.0");
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"https://fake.test/token\",service=\"registry-proxy\""
    );
    let (status, _, body) = proxy
        .via_connect("fake.test", "GET", "/token?service=registry-proxy")
        .await;
    assert_eq!(status, 200);
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(token["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        fake.hits("GET", "/v2/"),
        0,
        "GET /v2/ is answered by the proxy"
    );
    let path = format!("/v2/lib/app/blobs/{digest}");
    let (status, _, body) = proxy.via_connect("fake.test", "GET", &path).await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    // The same blob through mirror mode is a hit: one cache for every mode.
    let (_, _, body) = proxy
        .get(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
        .await;
    assert_eq!(body, data);
    assert_eq!(fake.hits("GET", &path), 1);
}

#[tokio::test]
async fn ca_is_served_and_key_is_private() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, headers, body) = proxy.get("/ca.crt").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-pem-file");
    assert_eq!(
        body,
        std::fs::read(proxy.dir.path().join("ca/ca.crt")).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(proxy.dir.path().join("ca/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn other_hosts_are_tunnelled_untouched() {
    let fake = Fake::start(&["fake.test"]).await;
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    // A loopback target needs an explicit TUNNEL_ALLOW entry (see tunnel.rs).
    let allow = format!("127.0.0.1:{echo_port}");
    let proxy = TestProxy::start(&fake, &[("TUNNEL_ALLOW", &allow)]).await;
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!("CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: 127.0.0.1:{echo_port}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with(b"HTTP/1.1 200"));
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
}

#[tokio::test]
async fn absolute_form_http_requests_are_forwarded() {
    let fake = Fake::start(&["fake.test"]).await;
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_port = origin.local_addr().unwrap().port();
    // A loopback origin needs an explicit TUNNEL_ALLOW entry (see tunnel.rs).
    let allow = format!("127.0.0.1:{origin_port}");
    let proxy = TestProxy::start(&fake, &[("TUNNEL_ALLOW", &allow)]).await;
    tokio::spawn(async move {
        let (mut s, _) = origin.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("GET /hello HTTP/1.1"), "{head}");
        // The URL's authority, not the Host the client sent to the proxy.
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: 127.0.0.1:{origin_port}\r\n")),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("proxy-authorization"),
            "{head}"
        );
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nworld")
            .await
            .unwrap();
    });
    let (status, _, body) = proxy
        .request(
            "GET",
            &format!("http://127.0.0.1:{origin_port}/hello"),
            &[("proxy-authorization", "Basic eDp5")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, "world");
}
