//! `TestProxy`: the proxy in-process on `127.0.0.1:0`, configured from a map like the environment,
//! with a fake upstream wired in through `CONNECT_TO` and `UPSTREAM_CA_FILE`; and small HTTP clients
//! for mirror mode and for CONNECT + TLS with the proxy's CA.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use registry_proxy::body;
use registry_proxy::cli::Cli;
use registry_proxy::config::{Config, Sources};
use tokio::net::TcpStream;

use super::fake::{Behavior, Fake};

/// Names the fake upstream answers to (all resolve to it through CONNECT_TO).
pub(crate) const FAKE_HOST: &str = "fake.test";

pub(crate) struct TestProxy {
    pub(crate) addr: SocketAddr,
    /// The TLS mirror listener, when `TLS_LISTEN` was given.
    pub(crate) tls_addr: Option<SocketAddr>,
    pub(crate) dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
    env: HashMap<String, String>,
}

impl TestProxy {
    /// A proxy caching `fake.test` (served by `fake`), with extra settings from `extra`.
    pub(crate) async fn start(fake: &Fake, extra: &[(&str, &str)]) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_file, &fake.ca_pem).unwrap();
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("LISTEN".into(), "127.0.0.1:0".into());
        env.insert("REGISTRIES".into(), format!("{FAKE_HOST} cdn.test"));
        env.insert(
            "CACHE_DIR".into(),
            dir.path().join("cache").display().to_string(),
        );
        env.insert("CA_DIR".into(), dir.path().join("ca").display().to_string());
        env.insert("UPSTREAM_CA_FILE".into(), ca_file.display().to_string());
        env.insert(
            "CONNECT_TO".into(),
            format!(
                "{FAKE_HOST}:443:127.0.0.1:{port} cdn.test:443:127.0.0.1:{port} registry-1.docker.io:443:127.0.0.1:{port}",
                port = fake.addr.port()
            ),
        );
        env.insert("PROXY_READ_TIMEOUT".into(), "5s".into());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        TestProxy::start_with_env(dir, env).await
    }

    async fn start_with_env(dir: tempfile::TempDir, env: HashMap<String, String>) -> TestProxy {
        let cli = Cli::try_parse_from(["registry-proxy"]).unwrap();
        let config = Config::load(Sources {
            flags: &cli.serve,
            env: &env,
        })
        .unwrap();
        let proxy = registry_proxy::Proxy::bind(config).await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let tls_addr = proxy.tls_local_addr();
        let task = tokio::spawn(proxy.run());
        TestProxy {
            addr,
            tls_addr,
            dir,
            task,
            env,
        }
    }

    /// Stops this proxy and starts a new one on the same cache and CA (a restart).
    pub(crate) async fn restart(&mut self) {
        self.restart_with(&[]).await;
    }

    /// A restart with some settings changed (e.g. `CONNECT_TO` pointing at a closed port, to take
    /// the upstream away).
    pub(crate) async fn restart_with(&mut self, changes: &[(&str, &str)]) {
        for (k, v) in changes {
            self.env.insert((*k).to_owned(), (*v).to_owned());
        }
        self.task.abort();
        let _ = (&mut self.task).await;
        let cli = Cli::try_parse_from(["registry-proxy"]).unwrap();
        let config = Config::load(Sources {
            flags: &cli.serve,
            env: &self.env,
        })
        .unwrap();
        let proxy = registry_proxy::Proxy::bind(config).await.unwrap();
        self.addr = proxy.local_addr().unwrap();
        self.task = tokio::spawn(proxy.run());
    }

    /// The configuration this proxy was started with (for an in-process `warm --cache-dir`).
    pub(crate) fn config(&self) -> Config {
        let cli = Cli::try_parse_from(["registry-proxy"]).unwrap();
        Config::load(Sources {
            flags: &cli.serve,
            env: &self.env,
        })
        .unwrap()
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A request to the plain listener (mirror mode, admin endpoints).
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        collect(send(self.addr, method, path, headers, body::empty()).await).await
    }

    /// Like `request`, but returns the body's error instead of panicking when the transfer aborts.
    pub(crate) async fn request_result(
        &self,
        method: &str,
        path: &str,
    ) -> (StatusCode, Result<Bytes, String>) {
        collect_result(send(self.addr, method, path, &[], body::empty()).await).await
    }

    /// A TLS client configuration trusting the proxy's CA.
    pub(crate) fn proxy_trust(&self) -> Arc<rustls::ClientConfig> {
        trusting(&std::fs::read(self.dir.path().join("ca/ca.crt")).unwrap())
    }

    /// A request to the TLS mirror listener (`TLS_LISTEN`), verifying its certificate for `name`.
    pub(crate) async fn via_tls_listener(
        &self,
        name: &str,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let stream = TcpStream::connect(self.tls_addr.unwrap()).await.unwrap();
        self.over_tls(stream, name, "GET", path, &[]).await
    }

    /// [`TestProxy::via_tls_listener`] with a method and request headers (`Range`).
    pub(crate) async fn via_tls_listener_with(
        &self,
        name: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let stream = TcpStream::connect(self.tls_addr.unwrap()).await.unwrap();
        self.over_tls(stream, name, method, path, headers).await
    }

    /// A request through `CONNECT host:443` and TLS, trusting the proxy's CA.
    pub(crate) async fn via_connect(
        &self,
        host: &str,
        method: &str,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let stream = self.connect_tunnel(host, &[]).await.unwrap();
        self.over_tls(stream, host, method, path, &[]).await
    }

    /// [`TestProxy::via_connect`], verifying the proxy's leaf with `trust` (e.g. a CA of the
    /// operator's own in `CA_DIR`).
    pub(crate) async fn via_connect_trusting(
        &self,
        trust: Arc<rustls::ClientConfig>,
        host: &str,
        method: &str,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let stream = self.connect_tunnel(host, &[]).await.unwrap();
        tls_request(trust, stream, host, method, path, &[]).await
    }

    /// `CONNECT host:443` with extra head lines (`Proxy-Authorization`); the tunnel, or the
    /// proxy's response head when it refused.
    pub(crate) async fn connect_tunnel(
        &self,
        host: &str,
        extra: &[(&str, &str)],
    ) -> Result<TcpStream, String> {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        let mut head_out = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n");
        for (k, v) in extra {
            head_out.push_str(&format!("{k}: {v}\r\n"));
        }
        head_out.push_str("\r\n");
        stream.write_all(head_out.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        if head.starts_with(b"HTTP/1.1 200") {
            Ok(stream)
        } else {
            Err(String::from_utf8_lossy(&head).into_owned())
        }
    }

    /// One request with headers through an established tunnel (see [`TestProxy::connect_tunnel`]).
    pub(crate) async fn in_tunnel(
        &self,
        stream: TcpStream,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        self.over_tls(stream, host, method, path, headers).await
    }

    /// One request over TLS on `stream`, verifying the proxy's certificate for `host`.
    async fn over_tls(
        &self,
        stream: TcpStream,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        tls_request(self.proxy_trust(), stream, host, method, path, headers).await
    }
}

/// One request over TLS on `stream`, verifying the server's certificate for `host` with `trust`.
async fn tls_request(
    trust: Arc<rustls::ClientConfig>,
    stream: TcpStream,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let connector = tokio_rustls::TlsConnector::from(trust);
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let tls = connector.connect(name, stream).await.unwrap();
    collect(send_on(tls, host, method, path, headers, body::empty()).await).await
}

use rustls_pki_types::pem::PemObject;

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn collect(
    response: Response<hyper::body::Incoming>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

/// Deterministic pseudo-random bytes.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

impl TestProxy {
    /// Sends a GET to the plain listener and returns the response with its body unread.
    pub(crate) async fn open(&self, path: &str) -> Response<hyper::body::Incoming> {
        send(self.addr, "GET", path, &[], body::empty()).await
    }

    /// True if the blob with this `sha256:` digest is committed in the cache.
    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        self.cache_dir()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists()
    }
}

/// A bare client for the plain listener that can move into a spawned task.
pub(crate) struct RawClient(pub(crate) SocketAddr);

impl RawClient {
    /// `GET path` with headers; the status and the whole body.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Bytes) {
        let response = send(self.0, "GET", path, headers, body::empty()).await;
        let (status, _, bytes) = collect(response).await;
        (status.as_u16(), bytes)
    }
}

/// A test blob: `len` pseudo-random bytes from `seed` and their `sha256:` digest.
pub(crate) fn random_blob(len: usize, seed: u64) -> (Bytes, String) {
    let data = random_bytes(len, seed);
    let digest = super::fake::sha256_digest(&data);
    (data, digest)
}

/// A blob's path on a registry: `/v2/{repo}/blobs/{digest}`.
pub(crate) fn blob_path(repo: &str, digest: &str) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

/// A [`random_blob`] that `fake` serves whole at [`blob_path`]`(repo, digest)`.
pub(crate) fn serve_random_blob(fake: &Fake, repo: &str, len: usize, seed: u64) -> (Bytes, String) {
    let (data, digest) = random_blob(len, seed);
    fake.route(&blob_path(repo, &digest), Behavior::Blob(data.clone()));
    (data, digest)
}

/// `count` blobs of `len` bytes served by `fake` at `lib/app` ([`serve_random_blob`] with the
/// seeds `first_seed`, `first_seed + 1`, …).
pub(crate) fn serve_random_blobs(
    fake: &Fake,
    count: u64,
    len: usize,
    first_seed: u64,
) -> Vec<(Bytes, String)> {
    (0..count)
        .map(|i| serve_random_blob(fake, "lib/app", len, first_seed + i))
        .collect()
}

/// [`Behavior::Slow`]: `bytes` sent in `chunks` pieces, `delay_ms` milliseconds apart.
pub(crate) fn slow_blob(bytes: Bytes, chunks: usize, delay_ms: u64) -> Behavior {
    Behavior::Slow {
        bytes,
        chunks,
        delay: std::time::Duration::from_millis(delay_ms),
    }
}

impl TestProxy {
    /// GETs `path` from the plain listener and asserts a 200 whose body is exactly `expected`.
    pub(crate) async fn assert_serves(&self, path: &str, expected: &[u8]) {
        let (status, _, body) = self.request("GET", path, &[]).await;
        assert_eq!(status, 200, "GET {path}");
        assert_eq!(&body[..], expected, "GET {path}");
    }

    /// The `/metrics` exposition, as text.
    pub(crate) async fn metrics(&self) -> String {
        let (_, _, metrics) = self.request("GET", "/metrics", &[]).await;
        String::from_utf8_lossy(&metrics).into_owned()
    }
}

/// One HTTP/1.1 request on a new connection to `addr` (which is also its `host` header); the
/// response with its body unread.
pub(crate) async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    request_body: body::Body,
) -> Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    send_on(
        stream,
        &addr.to_string(),
        method,
        path,
        headers,
        request_body,
    )
    .await
}

/// One HTTP/1.1 request on `io` (a TCP or TLS stream) with `host` as its `host` header; the
/// response with its body unread.
async fn send_on<S>(
    io: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    request_body: body::Body,
) -> Response<hyper::body::Incoming>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender
        .send_request(req.body(request_body).unwrap())
        .await
        .unwrap()
}

/// A response's status and its body, or the error that aborted the body.
pub(crate) async fn collect_result(
    response: Response<hyper::body::Incoming>,
) -> (StatusCode, Result<Bytes, String>) {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (status, body)
}

/// A [`random_blob`] that `fake` serves at [`blob_path`]`(repo, digest)` as a [`slow_blob`].
pub(crate) fn serve_slow_blob(
    fake: &Fake,
    repo: &str,
    (len, seed): (usize, u64),
    chunks: usize,
    delay_ms: u64,
) -> (Bytes, String) {
    let (data, digest) = random_blob(len, seed);
    fake.route(
        &blob_path(repo, &digest),
        slow_blob(data.clone(), chunks, delay_ms),
    );
    (data, digest)
}

impl TestProxy {
    /// The files in the cache's `tmp/`: the downloads in flight.
    pub(crate) fn tmp_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.cache_dir().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

/// GETs `path` from `addr`, asserts a 200 and reads at least `at_least` bytes of the body; the
/// rest of the body (to read on, or to watch fail when the server dies mid-transfer).
pub(crate) async fn get_partly(
    addr: SocketAddr,
    path: &str,
    at_least: usize,
) -> hyper::body::Incoming {
    let response = send(addr, "GET", path, &[], body::empty()).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0;
    while received < at_least {
        let frame = body.frame().await.unwrap().unwrap();
        received += frame.into_data().map_or(0, |d| d.len());
    }
    body
}

/// Reads a response head (up to and including the blank line) byte by byte, leaving whatever
/// follows it in `s`.
pub(crate) async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    head
}

/// A TLS client configuration trusting the certificates in `ca_pem`.
pub(crate) fn trusting(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(registry_proxy::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl TestProxy {
    /// `GET path` on the plain listener with an `Authorization` header.
    pub(crate) async fn get_as(
        &self,
        path: &str,
        authorization: &str,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        self.request("GET", path, &[("authorization", authorization)])
            .await
    }
}

impl TestProxy {
    /// `GET path` on the plain listener, without headers.
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        self.request("GET", path, &[]).await
    }
}

/// Asserts that a command exited 0, showing its stderr when it did not.
pub(crate) fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many times `fake` answered a GET of the blob `digest` in `lib/app`.
pub(crate) fn blob_gets(fake: &Fake, digest: &str) -> usize {
    fake.hits("GET", &blob_path("lib/app", digest))
}

impl TestProxy {
    /// Opens a GET of `path` (a blob the upstream sends slowly) and asserts its 200 and that one
    /// download is being written to `tmp/`; the response with its body unread, and `tmp/`'s files.
    pub(crate) async fn download_in_flight(
        &self,
        path: &str,
    ) -> (Response<hyper::body::Incoming>, Vec<PathBuf>) {
        let response = self.open(path).await;
        assert_eq!(response.status(), 200);
        let in_flight = self.tmp_files();
        assert_eq!(in_flight.len(), 1, "a download in flight");
        (response, in_flight)
    }
}
