//! The real binary under `kill -9`: a download interrupted by SIGKILL leaves no partial or wrong
//! blob visible, leftovers in `tmp/` are removed at start, and the blob is fetched whole afterwards.
//! Also home of [`BinProxy`], the real binary started on port 0 (its address read from its log).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use registry_proxy::body;

use crate::fake::{Behavior, Fake};
use crate::harness::{FAKE_HOST, blob_path, collect_result, send, serve_slow_blob};

/// The `registry-proxy` binary with its cache and CA in `dir`, in front of `fake`.
pub(crate) struct BinProxy {
    child: Child,
    pub(crate) addr: SocketAddr,
}

/// Environment for the binary: a clean slate plus what it needs to reach the fake upstream.
pub(crate) fn bin_env(dir: &Path, fake: &Fake) -> Vec<(String, String)> {
    let ca_file = dir.join("upstream-ca.pem");
    std::fs::write(&ca_file, &fake.ca_pem).unwrap();
    vec![
        ("LISTEN".into(), "127.0.0.1:0".into()),
        ("REGISTRIES".into(), FAKE_HOST.into()),
        ("CACHE_DIR".into(), dir.join("cache").display().to_string()),
        ("CACHE_MIN_FREE".into(), "0".into()),
        ("CA_DIR".into(), dir.join("ca").display().to_string()),
        ("UPSTREAM_CA_FILE".into(), ca_file.display().to_string()),
        (
            "CONNECT_TO".into(),
            format!("{FAKE_HOST}:443:127.0.0.1:{}", fake.addr.port()),
        ),
        ("LOG_FORMAT".into(), "json".into()),
    ]
}

pub(crate) fn bin_command(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registry-proxy"));
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// `registry-proxy cache verify` run to its end with `env`.
pub(crate) fn cache_verify(env: &[(String, String)]) -> std::process::Output {
    bin_command(env).args(["cache", "verify"]).output().unwrap()
}

/// Asserts that `registry-proxy cache verify` with `env` finds nothing wrong (exits 0).
pub(crate) fn assert_verifies_clean(env: &[(String, String)]) {
    let out = cache_verify(env);
    assert!(
        out.status.success(),
        "a clean store verifies: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl BinProxy {
    /// Starts the binary and waits for its `registry-proxy listening` line.
    pub(crate) async fn start(env: &[(String, String)]) -> BinProxy {
        let mut child = bin_command(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the log to the end (so the pipe never fills up), reporting the address once.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if json["message"] == "registry-proxy listening"
                    && let Some(addr) = json["addr"].as_str().and_then(|a| a.parse().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("the binary did not log its address in time")
            .expect("the binary exited before listening");
        BinProxy { child, addr }
    }

    /// The process id (to send it signals).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, the way a crash or the OOM killer ends it.
    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for BinProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET in mirror mode; the body, or the error that aborted it.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Result<Bytes, String>) {
    collect_result(send_get(addr, path).await).await
}

async fn send_get(addr: SocketAddr, path: &str) -> http::Response<hyper::body::Incoming> {
    send(addr, "GET", path, &[], body::empty()).await
}

pub(crate) fn blob_file(cache: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    cache.join("blobs/sha256").join(&hex[..2]).join(hex)
}

fn tmp_entries(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("tmp")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_download_leaves_nothing_visible_and_tmp_is_cleaned() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let (data, digest) = serve_slow_blob(&fake, "lib/app", (2_000_000, 51), 100, 50);
    let upstream_path = blob_path("lib/app", &digest);
    let dir = tempfile::tempdir().unwrap();
    let env = bin_env(dir.path(), &fake);
    let cache = dir.path().join("cache");
    let url = format!("/v2/{FAKE_HOST}/lib/app/blobs/{digest}");

    let proxy = BinProxy::start(&env).await;
    let response = send_get(proxy.addr, &url).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0;
    while received < 200_000 {
        let frame = body.frame().await.unwrap().unwrap();
        received += frame.into_data().map_or(0, |d| d.len());
    }
    assert!(tmp_entries(&cache) > 0, "a partial download is in tmp/");
    proxy.kill9();
    assert!(
        body.collect().await.is_err(),
        "the client sees an aborted transfer"
    );
    assert!(!blob_file(&cache, &digest).exists(), "no partial blob");
    assert!(tmp_entries(&cache) > 0, "the partial file is left behind");

    // Restart on the same cache: leftovers go, the blob is still absent, then fetched whole.
    fake.route(&upstream_path, Behavior::Blob(data.clone()));
    let proxy = BinProxy::start(&env).await;
    assert_eq!(tmp_entries(&cache), 0, "tmp/ cleaned at start");
    assert!(!blob_file(&cache, &digest).exists());
    let (status, body) = get(proxy.addr, &url).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_deref(), Ok(data.as_ref()));
    assert_eq!(fake.hits("GET", &upstream_path), 2);
    assert_eq!(std::fs::read(blob_file(&cache, &digest)).unwrap(), data);

    // And survives a second kill: a committed blob is served after restart without upstream.
    proxy.kill9();
    let proxy = BinProxy::start(&env).await;
    let (status, body) = get(proxy.addr, &url).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_deref(), Ok(data.as_ref()));
    assert_eq!(fake.hits("GET", &upstream_path), 2, "served from the cache");
}
