//! Fan-out streaming: time to first byte does not wait for the whole blob, and a slow client
//! slows neither the download nor other clients.

use std::time::Duration;

use http_body_util::BodyExt;

use crate::fake::Fake;
use crate::harness::{TestProxy, serve_random_blob, serve_slow_blob};

#[tokio::test]
async fn first_bytes_arrive_before_the_download_ends() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_slow_blob(&fake, "lib/app", (1_000_000, 40), 10, 150);
    let proxy = TestProxy::start(&fake, &[]).await;
    let response = proxy
        .open(&format!("/v2/fake.test/lib/app/blobs/{digest}"))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty());
    assert!(
        !proxy.has_blob(&digest),
        "the client got bytes while the download was still running"
    );
    let mut received = first.to_vec();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received.extend_from_slice(&data);
        }
    }
    assert_eq!(received, data);
    assert!(proxy.has_blob(&digest));
}

#[tokio::test]
async fn a_stalled_client_slows_neither_the_download_nor_others() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/app", 16_000_000, 41);
    let proxy = TestProxy::start(&fake, &[]).await;
    let url = format!("/v2/fake.test/lib/app/blobs/{digest}");
    // The first client starts the download and then reads nothing at all.
    let stalled = proxy.open(&url).await;
    assert_eq!(stalled.status(), 200);
    // Another client gets the whole blob meanwhile, and the blob is committed.
    proxy.assert_serves(&url, &data).await;
    for _ in 0..100 {
        if proxy.has_blob(&digest) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        proxy.has_blob(&digest),
        "download finished although a client has read nothing"
    );
    assert_eq!(fake.hits("GET", &format!("/v2/lib/app/blobs/{digest}")), 1);
    // The stalled client can still read everything afterwards.
    let late = stalled.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(late, data);
}
