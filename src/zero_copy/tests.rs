#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::io::{IoSlice, Write};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A connected pair: (the proxy's side, the client's side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    (accepted.unwrap().0, client.unwrap())
}

fn file_with(data: &[u8]) -> (tempfile::TempDir, File) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(data)
        .unwrap();
    (dir, File::open(&path).unwrap())
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Writes a head and a body's chunks as hyper's queue strategy does (one vectored write of
/// everything queued, then what is left), and returns what the client received.
async fn send(io: &mut ZeroCopyIo<TcpStream>, head: &[u8], body: Body) -> io::Result<()> {
    let mut queue: Vec<Bytes> = vec![Bytes::copy_from_slice(head)];
    let mut body = body;
    while let Some(frame) = body.frame().await {
        queue.push(frame.unwrap().into_data().unwrap());
    }
    while !queue.is_empty() {
        let slices: Vec<IoSlice<'_>> = queue.iter().map(|b| IoSlice::new(b)).collect();
        let mut n = io.write_vectored(&slices).await?;
        while n > 0 {
            let first = &mut queue[0];
            let take = n.min(first.len());
            bytes::Buf::advance(first, take);
            n -= take;
            if first.is_empty() {
                queue.remove(0);
            }
        }
    }
    io.shutdown().await
}

use std::io;

async fn round_trip(copying: bool) -> (Vec<u8>, Vec<u8>, Arc<Metrics>) {
    let content = data(CHUNK + 5000);
    let (_dir, file) = file_with(&content);
    let metrics = Arc::new(Metrics::new(false, &[]));
    let sink = ZeroCopy::new(true, metrics.clone()).sink().unwrap();
    let (server, mut client) = pair().await;
    let mut io = ZeroCopyIo::new(server, sink.clone());
    io.copying = copying;
    let body = sink.body(file, 3, content.len() as u64 - 4);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        got
    });
    send(&mut io, b"HEAD\r\n", body).await.unwrap();
    let got = reader.await.unwrap();
    assert_eq!(sink.pending(), 0, "every recorded byte went out");
    let mut expected = b"HEAD\r\n".to_vec();
    expected.extend_from_slice(&content[3..content.len() - 1]);
    (got, expected, metrics)
}

#[tokio::test]
async fn placeholder_bytes_become_the_file_bytes() {
    let (got, expected, metrics) = round_trip(false).await;
    assert!(got == expected, "bytes differ");
    let rendered = metrics.render(&crate::telemetry::CacheFacts::default());
    let sent = (CHUNK + 5000 - 4).to_string();
    assert!(
        rendered.contains(&format!("registry_proxy_zero_copy_bytes_total {sent}")),
        "{rendered}"
    );
}

#[tokio::test]
async fn the_copying_fallback_sends_the_same_bytes() {
    let (got, expected, metrics) = round_trip(true).await;
    assert!(got == expected, "bytes differ");
    let rendered = metrics.render(&crate::telemetry::CacheFacts::default());
    assert!(
        rendered.contains("registry_proxy_zero_copy_bytes_total 0"),
        "{rendered}"
    );
}

#[tokio::test]
async fn unaccounted_placeholder_bytes_fail_instead_of_going_out() {
    let metrics = Arc::new(Metrics::new(false, &[]));
    let sink = ZeroCopy::new(true, metrics).sink().unwrap();
    let (server, mut client) = pair().await;
    let mut io = ZeroCopyIo::new(server, sink);
    let stray = IoSlice::new(&PLACEHOLDER[..100]);
    let head = IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n");
    let err = io.write_vectored(&[head, stray]).await.unwrap_err();
    assert!(err.to_string().contains("out of step"), "{err}");
    drop(io);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty(), "nothing may be written: {got:?}");
}

#[tokio::test]
async fn a_file_shorter_than_recorded_is_an_error() {
    let (_dir, file) = file_with(&data(1000));
    let metrics = Arc::new(Metrics::new(false, &[]));
    let sink = ZeroCopy::new(true, metrics).sink().unwrap();
    let (server, _client) = pair().await;
    let mut io = ZeroCopyIo::new(server, sink.clone());
    let err = send(&mut io, b"", sink.body(file, 500, 1000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn only_slices_of_the_placeholder_are_placeholders() {
    assert!(is_placeholder(&PLACEHOLDER[5..10]));
    assert!(!is_placeholder(&PLACEHOLDER[5..5]));
    let zeros = vec![0u8; 16];
    assert!(!is_placeholder(&zeros));
    assert!(within_placeholder(&PLACEHOLDER[CHUNK - 1..]));
}
