//! Plain-HTTP keep-alive connections, which the listener parks between requests (outside hyper):
//! requests after idle time, a request split across the park, `Connection: close` and HTTP/1.0,
//! and a `CONNECT` on a connection that served a request before.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{FAKE_HOST, TestProxy, random_bytes};

/// Reads one response with a `Content-Length` body: (status line, body).
async fn response(conn: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut status = String::new();
    conn.read_line(&mut status).await.unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.unwrap();
    (status.trim_end().to_owned(), body)
}

#[tokio::test]
async fn one_connection_serves_requests_after_idle_and_split_ones() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    let mut conn = BufReader::new(TcpStream::connect(proxy.addr).await.unwrap());
    let get = "GET /healthz HTTP/1.1\r\nhost: p\r\n\r\n";
    conn.get_mut().write_all(get.as_bytes()).await.unwrap();
    assert_eq!(
        response(&mut conn).await,
        ("HTTP/1.1 200 OK".into(), b"ok\n".to_vec())
    );
    // Idle for a while (parked), then the next request.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    conn.get_mut().write_all(get.as_bytes()).await.unwrap();
    assert_eq!(response(&mut conn).await.1, b"ok\n");
    // A request and the first half of the next in one write: the half read ahead is not lost.
    let (half, rest) = get.split_at(9);
    conn.get_mut()
        .write_all(format!("{get}{half}").as_bytes())
        .await
        .unwrap();
    assert_eq!(response(&mut conn).await.1, b"ok\n");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    conn.get_mut().write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(response(&mut conn).await.1, b"ok\n");
}

#[tokio::test]
async fn close_and_http_1_0_end_the_connection() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    for request in [
        "GET /healthz HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n",
        "GET /healthz HTTP/1.0\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        // Ends: the proxy closes the connection after the response.
        stream.read_to_end(&mut all).await.unwrap();
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1."), "{text}");
        assert!(text.ends_with("ok\n"), "{text}");
    }
}

#[tokio::test]
async fn connect_after_a_request_on_the_same_connection() {
    let fake = Fake::start(&["fake.test"]).await;
    let data = random_bytes(70_000, 5);
    let digest = sha256_digest(&data);
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::Blob(data.clone()),
    );
    let proxy = TestProxy::start(&fake, &[]).await;
    let mut conn = BufReader::new(TcpStream::connect(proxy.addr).await.unwrap());
    conn.get_mut()
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: p\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut conn).await.1, b"ok\n");
    let connect = format!("CONNECT {FAKE_HOST}:443 HTTP/1.1\r\nhost: {FAKE_HOST}:443\r\n\r\n");
    conn.get_mut().write_all(connect.as_bytes()).await.unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
    }
    assert!(conn.buffer().is_empty());
    let path = format!("/v2/lib/app/blobs/{digest}");
    let (status, _, body) = proxy
        .in_tunnel(conn.into_inner(), FAKE_HOST, "GET", &path, &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
}
