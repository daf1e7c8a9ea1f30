//! A scriptable upstream registry for faults the real registry cannot produce on demand: a blob that
//! dies mid-way, a wrong digest, 429/503, a slow drip, redirects to a "CDN", token auth. It serves
//! TLS for any name with a certificate from its own test CA, and counts every request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use registry_proxy::body::{self, Body, BoxError};
use tokio::net::TcpListener;

/// How the fake answers one path.
#[derive(Clone)]
pub(crate) enum Behavior {
    /// A manifest with its media type (digest header computed).
    Manifest { bytes: Bytes, media_type: String },
    /// A blob, served whole (HEAD gives its length).
    Blob(Bytes),
    /// A blob whose bytes are sent in `chunks` pieces with `delay` between them.
    Slow {
        bytes: Bytes,
        chunks: usize,
        delay: Duration,
    },
    /// Sends the headers for `bytes` but only `sent` bytes, then drops the connection.
    DiesAfter { bytes: Bytes, sent: usize },
    /// A plain status with a registry JSON error.
    Status(u16),
    /// Redirect to another path on this server (`Location` absolute-path).
    Redirect(String),
    /// Redirect to an absolute URL.
    RedirectTo(String),
    /// A JSON body (`tags/list`, `_catalog` pages).
    Json(Bytes),
    /// Another behaviour with extra response headers (`Link`, `ratelimit-remaining`).
    WithHeaders(Box<Behavior>, Vec<(&'static str, String)>),
}

#[derive(Default)]
struct Inner {
    routes: HashMap<String, Behavior>,
    /// `METHOD path` → count.
    hits: HashMap<String, usize>,
    /// Authorization headers seen per path (to check what went where).
    auth_seen: Vec<(String, Option<String>)>,
    /// When set, `/v2/...` requires `Authorization: Bearer <token>` obtained from `/token`.
    bearer_token: Option<String>,
    /// When set, `/v2/...` requires this Basic credential (base64 of user:pass).
    basic: Option<String>,
    /// The Bearer challenge's realm; default `https://<Host>/token`.
    realm: Option<String>,
}

/// A running fake upstream.
#[derive(Clone)]
pub(crate) struct Fake {
    inner: Arc<Mutex<Inner>>,
    pub(crate) addr: SocketAddr,
    /// PEM of the CA that signed the fake's certificates (give it to the proxy as UPSTREAM_CA_FILE).
    pub(crate) ca_pem: String,
}

impl Fake {
    pub(crate) async fn start(names: &[&str]) -> Fake {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake upstream CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names
            .iter()
            .map(|s| s.to_string())
            .chain(["127.0.0.1".to_string()])
            .collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut tls = rustls::ServerConfig::builder_with_provider(registry_proxy::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key_der)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Fake {
            inner: Arc::new(Mutex::new(Inner::default())),
            addr,
            ca_pem: ca_cert.pem(),
        };
        let server = fake.clone();
        accept_each(listener, move |tcp| {
            let acceptor = acceptor.clone();
            let server = server.clone();
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                server.serve_connection(tls).await;
            }
        });
        fake
    }

    /// Also serves plain HTTP (the same routes) on a port of its own; returns its address.
    pub(crate) async fn serve_plain(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = self.clone();
        accept_each(listener, move |tcp| server.clone().serve_connection(tcp));
        addr
    }

    /// Answers the HTTP/1.1 requests of one connection (TLS or plain) from this fake's routes.
    async fn serve_connection<S>(self, io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |req| {
            let server = self.clone();
            async move { Ok::<_, Infallible>(server.answer(req).await) }
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .await;
    }

    /// Bearer challenges name this realm instead of `https://<Host>/token`.
    pub(crate) fn set_realm(&self, realm: &str) {
        self.inner.lock().unwrap().realm = Some(realm.to_owned());
    }

    pub(crate) fn route(&self, path: &str, behavior: Behavior) {
        self.inner
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), behavior);
    }

    /// Requests seen for `METHOD path`.
    pub(crate) fn hits(&self, method: &str, path: &str) -> usize {
        *self
            .inner
            .lock()
            .unwrap()
            .hits
            .get(&format!("{method} {path}"))
            .unwrap_or(&0)
    }

    /// Every request seen whose path contains `needle`.
    pub(crate) fn hits_containing(&self, needle: &str) -> usize {
        self.inner
            .lock()
            .unwrap()
            .hits
            .iter()
            .filter(|(k, _)| k.contains(needle))
            .map(|(_, v)| v)
            .sum()
    }

    pub(crate) fn auth_seen(&self) -> Vec<(String, Option<String>)> {
        self.inner.lock().unwrap().auth_seen.clone()
    }

    pub(crate) fn require_bearer(&self, token: &str) {
        self.inner.lock().unwrap().bearer_token = Some(token.to_owned());
    }

    pub(crate) fn require_basic(&self, user: &str, pass: &str) {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        self.inner.lock().unwrap().basic = Some(encoded);
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().to_string();
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (behavior, bearer, basic, realm) = {
            let mut inner = self.inner.lock().unwrap();
            *inner.hits.entry(format!("{method} {path}")).or_default() += 1;
            inner.auth_seen.push((path.clone(), auth.clone()));
            (
                inner.routes.get(&path).cloned(),
                inner.bearer_token.clone(),
                inner.basic.clone(),
                inner.realm.clone(),
            )
        };
        if path == "/token" {
            let Some(token) = bearer else {
                return status(404);
            };
            let json = format!("{{\"token\":\"{token}\",\"expires_in\":300}}");
            return Response::new(body::full(json));
        }
        if path.starts_with("/v2") {
            if let Some(token) = &bearer
                && auth.as_deref() != Some(&format!("Bearer {token}"))
            {
                let mut r = status(401);
                let realm = realm.unwrap_or_else(|| {
                    format!(
                        "https://{}/token",
                        req.headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("fake.test")
                    )
                });
                let realm = format!(
                    "Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:x:pull\""
                );
                r.headers_mut()
                    .insert("www-authenticate", realm.parse().unwrap());
                return r;
            }
            if let Some(basic) = &basic
                && auth.as_deref() != Some(&format!("Basic {basic}"))
            {
                let mut r = status(401);
                r.headers_mut()
                    .insert("www-authenticate", "Basic realm=\"fake\"".parse().unwrap());
                return r;
            }
        }
        if path == "/v2/" {
            return Response::new(body::full("{}"));
        }
        let head = req.method() == http::Method::HEAD;
        let (behavior, extra) = match behavior {
            Some(Behavior::WithHeaders(inner, headers)) => (Some(*inner), headers),
            other => (other, Vec::new()),
        };
        let mut response = match behavior {
            None => status(404),
            Some(Behavior::WithHeaders(..)) => status(500),
            Some(Behavior::Json(bytes)) => {
                let mut r = whole(bytes, head);
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                r
            }
            Some(Behavior::Status(code)) => status(code),
            Some(Behavior::Redirect(to)) | Some(Behavior::RedirectTo(to)) => {
                let mut r = Response::new(body::empty());
                *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                r.headers_mut().insert("location", to.parse().unwrap());
                r
            }
            Some(Behavior::Manifest { bytes, media_type }) => {
                let digest = sha256_digest(&bytes);
                let mut r = whole(bytes, head);
                r.headers_mut()
                    .insert("content-type", media_type.parse().unwrap());
                r.headers_mut()
                    .insert("docker-content-digest", digest.parse().unwrap());
                r
            }
            Some(Behavior::Blob(bytes)) => whole(bytes, head),
            Some(Behavior::Slow {
                bytes,
                chunks,
                delay,
            }) => {
                let len = bytes.len();
                let step = len.div_ceil(chunks.max(1)).max(1);
                let pieces: Vec<Bytes> = (0..len)
                    .step_by(step)
                    .map(|i| bytes.slice(i..(i + step).min(len)))
                    .collect();
                let stream =
                    futures_util::stream::unfold(pieces.into_iter(), move |mut it| async move {
                        let next = it.next()?;
                        tokio::time::sleep(delay).await;
                        Some((Ok::<_, BoxError>(Frame::data(next)), it))
                    });
                let mut r = Response::new(if head {
                    body::empty()
                } else {
                    BodyExt::boxed(StreamBody::new(stream))
                });
                r.headers_mut().insert("content-length", len.into());
                r
            }
            Some(Behavior::DiesAfter { bytes, sent }) => {
                let len = bytes.len();
                let first = bytes.slice(0..sent.min(len));
                // Data first; the failure only after it has had time to reach the proxy.
                let stream = futures_util::stream::unfold(0u8, move |step| {
                    let first = first.clone();
                    async move {
                        match step {
                            0 => Some((Ok::<_, BoxError>(Frame::data(first)), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                Some((
                                    Err::<Frame<Bytes>, BoxError>(
                                        "connection dropped by the fake".into(),
                                    ),
                                    2,
                                ))
                            }
                            _ => None,
                        }
                    }
                });
                let mut r = Response::new(if head {
                    body::empty()
                } else {
                    BodyExt::boxed(StreamBody::new(stream))
                });
                r.headers_mut().insert("content-length", len.into());
                r
            }
        };
        for (name, value) in extra {
            response.headers_mut().append(name, value.parse().unwrap());
        }
        response
    }
}

/// Accepts connections on `listener` for as long as the test runs, each handled by `handle` on a
/// task of its own.
fn accept_each<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(handle(tcp));
        }
    });
}

/// A 200 with `bytes` as its body (none for a HEAD) and their `content-length`.
fn whole(bytes: Bytes, head: bool) -> Response<Body> {
    let len = bytes.len();
    let mut r = Response::new(if head {
        body::empty()
    } else {
        body::full(bytes)
    });
    r.headers_mut().insert("content-length", len.into());
    r
}

fn status(code: u16) -> Response<Body> {
    let json =
        format!("{{\"errors\":[{{\"code\":\"FAKE_{code}\",\"message\":\"fake says {code}\"}}]}}");
    let mut r = Response::new(body::full(json));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
