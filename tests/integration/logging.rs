//! The real binary's text log as an operator reads it from a file or a pipe: no colour codes, and
//! access lines that say who asked (client address, proxy user) and never a credential.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::Request;
use hyper_util::rt::TokioIo;
use registry_proxy::body;
use tokio::net::TcpStream;

/// The binary with a text log on a pipe; everything it logs is collected.
struct Logged {
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
}

impl Logged {
    fn start(env: &[(&str, String)]) -> Logged {
        let mut child = Command::new(env!("CARGO_BIN_EXE_registry-proxy"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Logged { child, log }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) for a log line containing `needle`.
    async fn line_with(&self, needle: &str) -> String {
        for _ in 0..400 {
            if let Some(line) = self.text().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no log line with {needle:?} in:\n{}", self.text());
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn text_log_to_a_pipe_is_plain_and_names_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("alice-secret-pw", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let proxy = Logged::start(&[
        ("LISTEN", "127.0.0.1:0".into()),
        ("CACHE_DIR", dir.path().join("cache").display().to_string()),
        ("CA_DIR", dir.path().join("ca").display().to_string()),
        ("CACHE_MIN_FREE", "0".into()),
        ("PROXY_HTPASSWD", htpasswd.display().to_string()),
        ("LOG_FORMAT", "text".into()),
    ]);
    let listening = proxy.line_with("registry-proxy listening").await;
    let addr: SocketAddr = listening
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {listening:?}"));

    let stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let credential = base64::engine::general_purpose::STANDARD.encode("alice:alice-secret-pw");
    let request = Request::builder()
        .uri("/v2/")
        .header("host", addr.to_string())
        .header("authorization", format!("Basic {credential}"))
        .body(body::empty())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    let access = proxy.line_with("LOCAL GET docker.io - base").await;
    assert!(access.contains(&format!(" client={local}")), "{access}");
    assert!(access.contains(" user=alice"), "{access}");
    let log = proxy.text();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is not a terminal:\n{log}"
    );
    assert!(
        !log.contains("alice-secret-pw") && !log.contains(&credential),
        "{log}"
    );
}
