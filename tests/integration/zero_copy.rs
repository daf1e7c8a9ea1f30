//! Zero-copy blob hits (`sendfile` on plain-HTTP connections): byte-exact bodies for whole blobs
//! and ranges, several requests (also pipelined) on one keep-alive connection, `HEAD`, a client
//! that cuts off mid-body; the ordinary path over TLS and with `ZERO_COPY=false`, byte-exact too.
//! The metrics tell which path a response took.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{TestProxy, random_bytes};

/// Larger than one placeholder chunk (2 MiB), not a multiple of it.
const LEN: usize = 5 * 1024 * 1024 + 12_345;

/// A proxy with one blob of `len` bytes cached (fetched once); its URL and bytes.
async fn cached_blob(
    fake: &Fake,
    extra: &[(&str, &str)],
    len: usize,
) -> (TestProxy, String, Bytes) {
    let data = random_bytes(len, 77);
    let digest = sha256_digest(&data);
    fake.route(
        &format!("/v2/lib/app/blobs/{digest}"),
        Behavior::Blob(data.clone()),
    );
    let proxy = TestProxy::start(fake, extra).await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    let (status, _, body) = proxy.request("GET", &url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, data, "the miss itself");
    (proxy, url, data)
}

/// A counter's value from `/metrics`.
async fn counter(proxy: &TestProxy, name: &str) -> u64 {
    let (_, _, metrics) = proxy.request("GET", "/metrics", &[]).await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

/// One response read off a raw connection: status, headers (lower-case names), body.
async fn read_response(
    conn: &mut BufReader<TcpStream>,
    head_only: bool,
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; if head_only { 0 } else { len }];
    conn.read_exact(&mut body).await.unwrap();
    (status, headers, body)
}

fn request(method: &str, url: &str, range: Option<&str>) -> String {
    let range = range.map_or(String::new(), |r| format!("range: {r}\r\n"));
    format!("{method} {url} HTTP/1.1\r\nhost: proxy.test\r\n{range}\r\n")
}

/// The requests every path must answer byte-exactly: (range, expected start, expected end).
fn ranges(len: usize) -> Vec<(Option<String>, usize, usize)> {
    vec![
        (None, 0, len),
        (Some("bytes=0-0".into()), 0, 1),
        (Some("bytes=1000-4200000".into()), 1000, 4_200_001),
        (Some(format!("bytes={}-", len - 1)), len - 1, len),
        (Some("bytes=-100".into()), len - 100, len),
        (
            Some(format!("bytes={}-{}", 2 * 1024 * 1024 - 1, 2 * 1024 * 1024)),
            2 * 1024 * 1024 - 1,
            2 * 1024 * 1024 + 1,
        ),
    ]
}

#[tokio::test]
async fn hits_go_out_with_sendfile_byte_exact_on_one_connection() {
    let fake = Fake::start(&["fake.test"]).await;
    let (proxy, url, data) = cached_blob(&fake, &[], LEN).await;
    assert_eq!(
        counter(&proxy, "registry_proxy_zero_copy_bytes_total").await,
        0,
        "a miss streams"
    );
    let mut conn = BufReader::new(TcpStream::connect(proxy.addr).await.unwrap());
    let mut sent = 0u64;
    let mut responses = 0u64;
    for (range, start, end) in ranges(LEN) {
        let req = request("GET", &url, range.as_deref());
        conn.get_mut().write_all(req.as_bytes()).await.unwrap();
        let (status, headers, body) = read_response(&mut conn, false).await;
        assert_eq!(status, if range.is_some() { 206 } else { 200 }, "{range:?}");
        assert_eq!(headers["content-length"], (end - start).to_string());
        assert!(body == data[start..end], "body of {range:?} differs");
        sent += (end - start) as u64;
        responses += 1;
    }
    // HEAD on the same connection: the head only, and no body bytes go anywhere.
    conn.get_mut()
        .write_all(request("HEAD", &url, None).as_bytes())
        .await
        .unwrap();
    let (status, headers, _) = read_response(&mut conn, true).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], LEN.to_string());
    // And the connection still serves a whole blob after it.
    conn.get_mut()
        .write_all(request("GET", &url, None).as_bytes())
        .await
        .unwrap();
    let (_, _, body) = read_response(&mut conn, false).await;
    assert!(body == data[..], "whole blob after HEAD differs");
    sent += LEN as u64;
    responses += 1;
    assert_eq!(
        counter(&proxy, "registry_proxy_zero_copy_bytes_total").await,
        sent
    );
    assert_eq!(
        counter(&proxy, "registry_proxy_zero_copy_responses_total").await,
        responses
    );
    assert_eq!(
        counter(&proxy, "registry_proxy_aborted_responses_total").await,
        0
    );
}

#[tokio::test]
async fn pipelined_hits_keep_their_order_and_bytes() {
    let fake = Fake::start(&["fake.test"]).await;
    let (proxy, url, data) = cached_blob(&fake, &[], LEN).await;
    let ranges = ranges(LEN);
    // Every request written before any response is read: bodies queue behind each other.
    let mut all = String::new();
    for (range, _, _) in &ranges {
        all.push_str(&request("GET", &url, range.as_deref()));
    }
    all.push_str(&request("HEAD", &url, None));
    all.push_str(&request("GET", &url, Some("bytes=7-9")));
    let mut conn = BufReader::new(TcpStream::connect(proxy.addr).await.unwrap());
    conn.get_mut().write_all(all.as_bytes()).await.unwrap();
    for (range, start, end) in &ranges {
        let (_, _, body) = read_response(&mut conn, false).await;
        assert!(
            body == data[*start..*end],
            "pipelined body of {range:?} differs"
        );
    }
    let (status, _, _) = read_response(&mut conn, true).await;
    assert_eq!(status, 200);
    let (_, _, body) = read_response(&mut conn, false).await;
    assert_eq!(body, data[7..10]);
}

#[tokio::test]
async fn a_client_cut_off_mid_body_is_not_a_success_and_others_go_on() {
    let fake = Fake::start(&["fake.test"]).await;
    // Far more than socket buffers and one chunk hold, so the cut comes mid-body.
    let len = 64 * 1024 * 1024;
    let (proxy, url, data) = cached_blob(&fake, &[], len).await;
    let mut cut = BufReader::new(TcpStream::connect(proxy.addr).await.unwrap());
    cut.get_mut()
        .write_all(request("GET", &url, None).as_bytes())
        .await
        .unwrap();
    let mut some = vec![0; 1024 * 1024];
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        cut.read_line(&mut line).await.unwrap();
    }
    cut.read_exact(&mut some).await.unwrap();
    assert!(some == data[..some.len()]);
    drop(cut);
    // The proxy notices (bounded wait): an aborted response, not a complete one.
    let mut aborted = 0;
    for _ in 0..200 {
        aborted = counter(&proxy, "registry_proxy_aborted_responses_total").await;
        if aborted > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        aborted, 1,
        "the cut-off response must be counted as aborted"
    );
    // Others are served whole, over the same path.
    let (status, _, body) = proxy.request("GET", &url, &[]).await;
    assert_eq!(status, 200);
    assert!(body == data, "a later client's body differs");
    assert_eq!(
        counter(&proxy, "registry_proxy_aborted_responses_total").await,
        1
    );
}

/// The ordinary path: every range byte-exact, and nothing counted as sent by the kernel.
async fn same_bytes_without_sendfile(proxy: &TestProxy, url: &str, data: &Bytes, tls: bool) {
    for (range, start, end) in ranges(data.len()) {
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("range", r.as_str())).collect();
        let (status, _, body) = if tls {
            proxy
                .via_tls_listener_with("mirror.test", "GET", url, &headers)
                .await
        } else {
            proxy.request("GET", url, &headers).await
        };
        assert!(status.is_success(), "{range:?}: {status}");
        assert!(body == data[start..end], "body of {range:?} differs");
    }
    let (status, headers, body) = if tls {
        proxy
            .via_tls_listener_with("mirror.test", "HEAD", url, &[])
            .await
    } else {
        proxy.request("HEAD", url, &[]).await
    };
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], data.len().to_string());
    assert!(body.is_empty());
}

#[tokio::test]
async fn tls_hits_take_the_ordinary_path_byte_exact() {
    let fake = Fake::start(&["fake.test"]).await;
    let extra = [
        ("TLS_LISTEN", "127.0.0.1:0"),
        ("TLS_NAMES", "mirror.test 127.0.0.1"),
    ];
    let (proxy, url, data) = cached_blob(&fake, &extra, LEN).await;
    same_bytes_without_sendfile(&proxy, &url, &data, true).await;
    assert_eq!(
        counter(&proxy, "registry_proxy_zero_copy_bytes_total").await,
        0
    );
    assert_eq!(
        counter(&proxy, "registry_proxy_zero_copy_responses_total").await,
        0
    );
}

#[tokio::test]
async fn zero_copy_off_is_byte_exact_too() {
    let fake = Fake::start(&["fake.test"]).await;
    let (proxy, url, data) = cached_blob(&fake, &[("ZERO_COPY", "false")], LEN).await;
    same_bytes_without_sendfile(&proxy, &url, &data, false).await;
    assert_eq!(
        counter(&proxy, "registry_proxy_zero_copy_bytes_total").await,
        0
    );
    assert_eq!(
        counter(&proxy, "registry_proxy_zero_copy_responses_total").await,
        0
    );
}
