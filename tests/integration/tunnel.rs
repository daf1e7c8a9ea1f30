//! "Not an open door": `TUNNEL_ALLOW` for blind tunnels, absolute-form requests and upstream dials
//! that are not to a configured registry; idle tunnels; `MAX_CONNECTIONS`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use hyper_util::rt::TokioIo;
use registry_proxy::body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fake::{Behavior, Fake};
use crate::harness::{TestProxy, random_blob};

/// A TCP service on loopback that greets every connection with `BANNER <n>`, `n` counting
/// connections from 1, then echoes what it reads.
async fn banner_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                if s.write_all(format!("BANNER {n}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(read) = s.read(&mut buf).await {
                    if read == 0 || s.write_all(&buf[..read]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Reads a response head (up to the blank line).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let head = crate::harness::read_head(s).await;
    String::from_utf8(head).unwrap()
}

/// Sends `CONNECT target` and returns the stream, the response head and (for a non-200) the body.
async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    let mut body = String::new();
    if !head.starts_with("HTTP/1.1 200") {
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut bytes = vec![0u8; len];
        s.read_exact(&mut bytes).await.unwrap();
        body = String::from_utf8(bytes).unwrap();
    }
    (s, head, body)
}

async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        s.read_exact(&mut b).await.unwrap();
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn loopback_tunnels_need_an_explicit_entry() {
    let fake = Fake::start(&["fake.test"]).await;
    let banner = banner_server().await;
    let target = format!("127.0.0.1:{}", banner.port());

    // The default (*:443) and wildcards refuse loopback; the service is never dialled.
    for allow in [None, Some("*:*"), Some("0.0.0.0/0:*")] {
        let extra: Vec<(&str, &str)> = allow.map(|a| ("TUNNEL_ALLOW", a)).into_iter().collect();
        let proxy = TestProxy::start(&fake, &extra).await;
        let (_, head, body) = connect(proxy.addr, &target).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{allow:?}: {head}");
        assert_eq!(body, format!("tunnel to {target} not allowed by policy\n"));
        assert!(!body.contains("BANNER"));
    }
    // The same service under another name for loopback.
    let proxy = TestProxy::start(&fake, &[("TUNNEL_ALLOW", "*:*")]).await;
    let (_, head, _) = connect(proxy.addr, &format!("localhost:{}", banner.port())).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    // An explicit entry naming it opens it. Its banner is the first: no refused attempt above
    // ever reached the service.
    let proxy = TestProxy::start(&fake, &[("TUNNEL_ALLOW", &target)]).await;
    let (mut s, head, _) = connect(proxy.addr, &target).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_line(&mut s).await, "BANNER 1\n");
    s.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line(&mut s).await, "ping\n");
    // Only that port.
    let other = format!("127.0.0.1:{}", closed_port().await);
    let (_, head, _) = connect(proxy.addr, &other).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test]
async fn refused_unreachable_and_unknown_targets_look_the_same() {
    let fake = Fake::start(&["fake.test"]).await;
    let open = banner_server().await;
    let closed = closed_port().await;
    let allow = format!("127.0.0.1:{closed} *:443");
    let proxy = TestProxy::start(
        &fake,
        &[
            ("TUNNEL_ALLOW", &allow),
            ("PROXY_CONNECT_CONNECT_TIMEOUT", "2s"),
        ],
    )
    .await;
    let targets = [
        // Refused by the policy (an open port).
        format!("127.0.0.1:{}", open.port()),
        // Allowed, but nothing listens.
        format!("127.0.0.1:{closed}"),
        // Allowed, but no such host.
        "no-such-host.invalid:443".to_owned(),
    ];
    for target in &targets {
        let (_, head, body) = connect(proxy.addr, target).await;
        let status = head.lines().next().unwrap_or_default();
        assert_eq!(status, "HTTP/1.1 403 Forbidden", "{target}");
        assert_eq!(body, format!("tunnel to {target} not allowed by policy\n"));
        let mut names: Vec<String> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
            .filter(|n| n != "date")
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["content-length", "content-type"],
            "{target}: {head}"
        );
    }
}

#[tokio::test]
async fn connect_ports_are_validated() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[("TUNNEL_ALLOW", "*:*")]).await;
    for target in ["example.com:70000", "example.com:65536", "example.com:0"] {
        let (_, head, body) = connect(proxy.addr, target).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{target}: {head}");
        assert!(body.contains("port from 1 to 65535"), "{target}: {body}");
    }
    // An intercepted registry with a bad port is not intercepted on 443 either.
    let (_, head, _) = connect(proxy.addr, "fake.test:70000").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

/// A plain HTTP origin on loopback answering `reply <n>`, `n` counting requests from 1.
async fn http_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!("reply {n}");
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn absolute_form_requests_follow_the_policy() {
    let fake = Fake::start(&["fake.test"]).await;
    let origin = http_origin().await;
    let url = format!("http://127.0.0.1:{}/x", origin.port());
    for allow in [None, Some("*:*")] {
        let extra: Vec<(&str, &str)> = allow.map(|a| ("TUNNEL_ALLOW", a)).into_iter().collect();
        let proxy = TestProxy::start(&fake, &extra).await;
        let (status, _, body) = proxy.get(&url).await;
        assert_eq!(status, 403, "{allow:?}");
        assert_eq!(
            body,
            format!(
                "request to 127.0.0.1:{} not allowed by policy\n",
                origin.port()
            )
        );
    }
    // Port 80 is not in the default policy, whatever the host.
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, _, _) = proxy.get("http://example.com/").await;
    assert_eq!(status, 403);
    // An explicit entry allows it; the origin's first request is this one.
    let allow = format!("127.0.0.1:{}", origin.port());
    let proxy = TestProxy::start(&fake, &[("TUNNEL_ALLOW", &allow)]).await;
    let (status, _, body) = proxy.get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body, "reply 1");
}

fn has_ip_or_port(text: &str, port: u16) -> bool {
    text.contains("127.0.0.1") || text.contains("::1") || text.contains(&port.to_string())
}

#[tokio::test]
async fn mirror_any_cannot_reach_loopback_registries() {
    let fake = Fake::start(&["fake.test"]).await;
    let manifest = bytes::Bytes::from_static(b"{\"schemaVersion\":2}");
    fake.route(
        "/v2/lib/app/manifests/1",
        Behavior::Manifest {
            bytes: manifest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        },
    );
    let port = fake.addr.port();
    let path = format!("/v2/127.0.0.1:{port}/lib/app/manifests/1");
    let proxy = TestProxy::start(&fake, &[("MIRROR_ANY", "true")]).await;
    let (status, headers, body) = proxy.get(&path).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 403, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(text.contains("\"DENIED\""), "{text}");
    assert!(!has_ip_or_port(&text, port), "{text}");
    assert_eq!(fake.hits_containing("/lib/app"), 0);
    // The operator names it: it is mirrored.
    let allow = format!("127.0.0.1:{port}");
    let proxy = TestProxy::start(&fake, &[("MIRROR_ANY", "true"), ("TUNNEL_ALLOW", &allow)]).await;
    let (status, _, body) = proxy.get(&path).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, manifest);
}

#[tokio::test]
async fn redirects_to_loopback_are_refused() {
    let fake = Fake::start(&["fake.test", "localhost"]).await;
    let (data, digest) = random_blob(5000, 41);
    let port = fake.addr.port();
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::RedirectTo(format!("https://localhost:{port}/cdn/blob")),
    );
    fake.route("/cdn/blob", Behavior::Blob(data.clone()));
    let path = format!("/v2/fake.test/lib/app/blobs/{digest}");
    let proxy = TestProxy::start(&fake, &[]).await;
    let (status, _, body) = proxy.get(&path).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("\"DENIED\""), "{text}");
    assert!(!has_ip_or_port(&text, port), "{text}");
    assert_eq!(fake.hits("GET", "/cdn/blob"), 0);
    assert!(!proxy.has_blob(&digest));
    // Named explicitly, the redirect is followed.
    let allow = format!("localhost:{port}");
    let proxy = TestProxy::start(&fake, &[("TUNNEL_ALLOW", &allow)]).await;
    proxy.assert_serves(&path, &data).await;
}

#[tokio::test]
async fn https_to_http_redirects_are_refused() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = random_blob(3000, 42);
    // A plain HTTP "CDN" that would serve the blob if asked.
    let cdn = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cdn_port = cdn.local_addr().unwrap().port();
    let served = data.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = cdn.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    served.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&served).await;
            });
        }
    });
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::RedirectTo("http://cdn.test/cdn/blob".into()),
    );
    // cdn.test is configured and CONNECT_TO points its port 80 at the plain server: only the
    // downgrade rule stands between the proxy and it.
    let connect_to = format!(
        "fake.test:443:127.0.0.1:{port} cdn.test:80:127.0.0.1:{cdn_port}",
        port = fake.addr.port()
    );
    let proxy = TestProxy::start(&fake, &[("CONNECT_TO", &connect_to)]).await;
    let (status, _, body) = proxy
        .get(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
        .await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert_ne!(body, data);
}

#[tokio::test]
async fn idle_tunnels_close() {
    let fake = Fake::start(&["fake.test"]).await;
    let banner = banner_server().await;
    let target = format!("127.0.0.1:{}", banner.port());
    let proxy = TestProxy::start(
        &fake,
        &[("TUNNEL_ALLOW", &target), ("PROXY_READ_TIMEOUT", "1s")],
    )
    .await;
    let (mut s, head, _) = connect(proxy.addr, &target).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_line(&mut s).await, "BANNER 1\n");
    s.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut s).await, "still here\n");
    // Then nothing moves: the proxy closes the tunnel. (The bound only keeps a broken build
    // from hanging the test; it is not a claim about speed.)
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
}

/// An admitted client connection kept open: `GET /` (the status page, only served to admitted
/// connections) answered 200 on it.
struct Open {
    _sender: hyper::client::conn::http1::SendRequest<body::Body>,
}

/// `GET /` on `io`, kept open if admitted; the status otherwise.
async fn try_open<IO>(io: IO) -> Result<Open, http::StatusCode>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/")
        .header("host", "proxy.test")
        .body(body::empty())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    match status {
        http::StatusCode::OK => Ok(Open { _sender: sender }),
        other => Err(other),
    }
}

async fn open_connection<IO>(io: IO) -> Open
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    try_open(io).await.unwrap()
}

/// Opens a connection once a slot is free again (the proxy notices a close asynchronously, so
/// this retries a bounded number of times).
async fn open_eventually(proxy: SocketAddr) -> Option<Open> {
    for _ in 0..400 {
        let stream = TcpStream::connect(proxy).await.unwrap();
        match try_open(stream).await {
            Ok(open) => return Some(open),
            Err(status) => assert_eq!(status, 503),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// One request on a new connection, read to its end: (status line, body).
async fn one_request(proxy: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn max_connections_caps_both_listeners_and_healthz_still_answers() {
    let fake = Fake::start(&["fake.test"]).await;
    let banner = banner_server().await;
    let target = format!("127.0.0.1:{}", banner.port());
    let proxy = TestProxy::start(
        &fake,
        &[
            ("MAX_CONNECTIONS", "4"),
            ("TUNNEL_ALLOW", &target),
            ("TLS_LISTEN", "127.0.0.1:0"),
            ("TLS_NAMES", "mirror.test"),
        ],
    )
    .await;
    // Four open connections: two idle plain ones, a tunnel, a TLS-listener one.
    let first = open_connection(TcpStream::connect(proxy.addr).await.unwrap()).await;
    let _second = open_connection(TcpStream::connect(proxy.addr).await.unwrap()).await;
    let (mut tunnel, head, _) = connect(proxy.addr, &target).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_line(&mut tunnel).await, "BANNER 1\n");
    let tls = tokio_rustls::TlsConnector::from(proxy.proxy_trust())
        .connect(
            rustls_pki_types::ServerName::try_from("mirror.test").unwrap(),
            TcpStream::connect(proxy.tls_addr.unwrap()).await.unwrap(),
        )
        .await
        .unwrap();
    let _tls = open_connection(tls).await;

    // A fifth is turned away; /healthz still answers.
    let (status, body) = one_request(proxy.addr, "/").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, "too many connections\n");
    let (status, _, body) = proxy.get("/healthz").await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"ok\n"[..]));
    let (status, _) = one_request(proxy.addr, "/v2/").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");

    // Closing one frees one slot, and only one: the tunnel and the TLS connection still count.
    drop(first);
    let _third = open_eventually(proxy.addr)
        .await
        .expect("a slot after a close");
    let (status, _) = one_request(proxy.addr, "/").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    // Until the tunnel closes.
    drop(tunnel);
    assert!(open_eventually(proxy.addr).await.is_some());
}
