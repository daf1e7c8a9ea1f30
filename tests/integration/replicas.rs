//! Three replicas on one bucket (`PEERS`, `PEER_LISTEN`, `PEER_SECRET`, `STORAGE=s3://…`): a herd
//! spread over all three costs one upstream GET; the owner of a blob killed by SIGKILL in the
//! middle of its download leaves nothing partial in the bucket, and a client that retries through
//! another replica completes with two upstream GETs in all.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use registry_proxy::body;
use registry_proxy::cache::{ObjectKey, Store};
use registry_proxy::registry::digest::Digest;
use tokio::net::TcpStream;

use crate::bucket::{S3Server, env_pairs};
use crate::cache_crash::{BinProxy, bin_env, get};
use crate::fake::Fake;
use crate::harness::{FAKE_HOST, TestProxy, blob_path, get_partly, serve_slow_blob};

const SECRET: &str = "replicas-share-this";

/// A peer address nothing else in the test run uses: a port the kernel just had free, on a
/// loopback address of its own (other tests bind 127.0.0.1, and a port taken between choosing it
/// here and the replica binding it would stop the replica).
fn free_addr() -> SocketAddr {
    let mut seed = [0u8; 3];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).unwrap();
    let ip = std::net::Ipv4Addr::new(127, seed[0].max(1), seed[1], seed[2].clamp(2, 254));
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// Peer addresses for `n` replicas, and each one's settings (the bucket's included).
fn replica_envs(
    server: &S3Server,
    prefix: &str,
    n: usize,
) -> (Vec<SocketAddr>, Vec<Vec<(String, String)>>) {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
    let peers = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let envs = addrs
        .iter()
        .map(|addr| {
            let mut env = server.env(prefix);
            env.push(("PEERS".into(), peers.clone()));
            env.push(("PEER_LISTEN".into(), addr.to_string()));
            env.push(("PEER_SECRET".into(), SECRET.into()));
            env
        })
        .collect();
    (addrs, envs)
}

/// `GET /peer/status` of the replica whose peer port is `addr`.
async fn peer_status(addr: SocketAddr) -> Option<serde_json::Value> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let request = Request::get("/peer/status")
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {SECRET}"))
        .body(body::empty())
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// Waits until every replica sees all of them, itself included.
async fn wait_for_membership(addrs: &[SocketAddr]) {
    for _ in 0..200 {
        let mut settled = true;
        for addr in addrs {
            let status = peer_status(*addr).await;
            let healthy = status
                .as_ref()
                .and_then(|s| s["healthy"].as_array().map(Vec::len))
                .unwrap_or(0);
            let me = status
                .as_ref()
                .and_then(|s| s["me"].as_str().map(str::to_owned));
            settled &= healthy == addrs.len() && me == Some(addr.to_string());
        }
        if settled {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replicas did not find each other");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_herd_over_three_replicas_makes_one_upstream_get() {
    let server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    let (data, digest) = serve_slow_blob(&fake, "lib/app", (4_000_000, 101), 40, 25);
    let upstream_path = blob_path("lib/app", &digest);
    let (addrs, envs) = replica_envs(&server, "herd", 3);
    let mut replicas = Vec::new();
    for env in &envs {
        replicas.push(TestProxy::start(&fake, &env_pairs(env)).await);
    }
    wait_for_membership(&addrs).await;

    let url = format!("/v2/{FAKE_HOST}/lib/app/blobs/{digest}");
    let herd = (0..32).map(|i| replicas[i % 3].request_result("GET", &url));
    let results = futures_util::future::join_all(herd).await;
    for (status, body) in results {
        assert_eq!(status, 200);
        assert_eq!(
            body.as_deref(),
            Ok(data.as_ref()),
            "every client gets the right bytes"
        );
    }
    assert_eq!(
        fake.hits("GET", &upstream_path),
        1,
        "one upstream GET for the whole herd"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_killed_mid_download_leaves_nothing_partial_and_a_retry_completes() {
    let server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    let (data, digest) = serve_slow_blob(&fake, "lib/app", (12_000_000, 102), 120, 40);
    let upstream_path = blob_path("lib/app", &digest);
    let (addrs, envs) = replica_envs(&server, "killed-owner", 3);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas: Vec<Option<BinProxy>> = Vec::new();
    for (dir, env) in dirs.iter().zip(&envs) {
        let mut full = bin_env(dir.path(), &fake);
        full.extend(env.iter().cloned());
        replicas.push(Some(BinProxy::start(&full).await));
    }
    wait_for_membership(&addrs).await;
    let parsed = Digest::parse(&digest).unwrap();
    let owner = registry_proxy::peer::owner_among(&addrs, &parsed).unwrap();
    let owner_index = addrs.iter().position(|a| *a == owner).unwrap();
    let via = (owner_index + 1) % 3;
    let url = format!("/v2/{FAKE_HOST}/lib/app/blobs/{digest}");

    // A client of another replica: its miss goes to the owner, which downloads.
    let addr = replicas[via].as_ref().unwrap().addr;
    let body = get_partly(addr, &url, 3_000_000).await;
    assert_eq!(
        fake.hits("GET", &upstream_path),
        1,
        "only the owner went upstream"
    );
    replicas[owner_index].take().unwrap().kill9();
    assert!(
        body.collect().await.is_err(),
        "the client sees an aborted transfer"
    );
    let store = server.store("killed-owner");
    let key = ObjectKey::blob(&parsed);
    assert!(
        store.head(&key).await.unwrap().is_none(),
        "nothing partial visible"
    );

    // The client retries through another replica: it completes, with two upstream GETs in all.
    let (status, retried) = get(replicas[via].as_ref().unwrap().addr, &url).await;
    assert_eq!(status, 200);
    assert_eq!(retried.as_deref(), Ok(data.as_ref()));
    assert_eq!(fake.hits("GET", &upstream_path), 2);
    // And the bucket ends up with the right bytes.
    for _ in 0..300 {
        if store.head(&key).await.ok().flatten().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = registry_proxy::cache::store::verify_store(&store)
        .await
        .unwrap();
    assert_eq!((report.checked, report.corrupt), (1, 0));
}

/// `GET /peer/id` on an open connection to a peer port: the status, or `None` if the connection
/// failed.
async fn peer_id(
    sender: &mut hyper::client::conn::http1::SendRequest<registry_proxy::body::Body>,
    addr: SocketAddr,
) -> Option<http::StatusCode> {
    let request = Request::get("/peer/id")
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {SECRET}"))
        .body(body::empty())
        .unwrap();
    // A connection that served a request is ready for the next only once its task has seen the
    // end of that response; sending before then fails ("connection was not ready").
    sender.ready().await.ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}

async fn peer_connection(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<registry_proxy::body::Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_port_is_capped_like_the_client_port() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let addr = free_addr();
    // The replica's membership probes keep a pooled connection to every peer in PEERS: list only
    // another (silent) replica, so that the one slot is this test's to take.
    let env = [
        ("PEERS", free_addr().to_string()),
        ("PEER_LISTEN", addr.to_string()),
        ("PEER_SECRET", SECRET.to_owned()),
        ("MAX_CONNECTIONS", "1".to_owned()),
    ];
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _replica = TestProxy::start(&fake, &pairs).await;
    // One connection takes the one slot.
    let mut held = None;
    for _ in 0..100 {
        let mut sender = peer_connection(addr).await;
        if peer_id(&mut sender, addr).await == Some(http::StatusCode::OK) {
            held = Some(sender);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut held = held.expect("a first peer connection is served");
    // While it stays open, another connection gets 503.
    let mut second = peer_connection(addr).await;
    assert_eq!(
        peer_id(&mut second, addr).await,
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );
    // The held one is still served, and once it closes the slot is free again.
    assert_eq!(peer_id(&mut held, addr).await, Some(http::StatusCode::OK));
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        let mut sender = peer_connection(addr).await;
        if peer_id(&mut sender, addr).await == Some(http::StatusCode::OK) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the slot came back");
}
