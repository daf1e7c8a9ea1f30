//! The one client-facing port: plain HTTP/1.1 that answers `CONNECT` (intercepting configured
//! registries with TLS from our CA, tunnelling other hosts untouched where `TUNNEL_ALLOW` allows),
//! registry-mirror and path-prefix requests under `/v2/`, and the admin endpoints (`/ca.crt`,
//! `/healthz`, `/metrics`, `/`, the admin API under `/admin/` in `admin.rs`). Open connections are
//! capped by `MAX_CONNECTIONS` (`limit.rs`). Plain-TCP connections are parked between requests,
//! outside hyper (`park.rs`); blob hits on them go out with `sendfile` (`crate::zero_copy`).

mod admin;
pub(crate) mod limit;
mod park;
mod relay;
mod status;

pub use limit::ConnectionLimit;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::access::identity::{Identity, cert_user};
use crate::access::tunnel;
use crate::body::{self, Body};
use crate::config::MirrorPolicy;
use crate::registry::host::RegistryHost;
use crate::registry::link::PathStyle;
use crate::registry::route::{mirror_target, parse_path};
use crate::serve::error::{Failure, text};
use crate::serve::{self, State, Surface};
use crate::telemetry::Refusal;
use crate::zero_copy::{Sink, ZeroCopyIo};

/// A request's answer as hyper's service sees it: boxed (see `serve_front`).
type Answer = std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Largest request head we read (hyper answers 431 beyond it).
const MAX_HEAD: usize = 64 * 1024;

/// Accepts connections until the task is dropped. With `tls`, each connection is TLS first (the
/// optional mirror-mode TLS listener, `TLS_LISTEN`). Every connection takes a slot of `limit` for
/// as long as it is open; over the cap it is answered by `limit::answer_over_cap`.
pub async fn accept_loop(
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limit: Arc<ConnectionLimit>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let header_timeout = state.config.timeouts.client_header;
        let slot = match limit.admit() {
            limit::Admission::Admitted(slot) => slot,
            limit::Admission::OverCap(place) => {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _place = place;
                    match tls {
                        None => limit::answer_over_cap(stream).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                limit::OVER_CAP_TIMEOUT,
                                acceptor.accept(stream),
                            );
                            if let Ok(Ok(stream)) = handshake.await {
                                limit::answer_over_cap(stream).await;
                            }
                        }
                    }
                });
                continue;
            }
            limit::Admission::Rejected => {
                limit::reject_now(&stream);
                continue;
            }
        };
        let stream = limit::Counted::new(stream, slot);
        let state = state.clone();
        let tls = tls.clone();
        // One task per kind of connection, each sized for its own kind: a plain connection's task
        // does not carry the room a TLS handshake needs (memory per idle connection).
        match tls {
            // Blob hits on plain TCP may go out with sendfile (`zero_copy`).
            None => match state.zero_copy.sink() {
                Some(sink) => {
                    let conn = Conn::plain(peer, Some(sink.clone()));
                    tokio::spawn(park::serve_parked(
                        state,
                        conn,
                        ZeroCopyIo::new(stream, sink),
                    ));
                }
                None => {
                    tokio::spawn(park::serve_parked(state, Conn::plain(peer, None), stream));
                }
            },
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = Conn::tls(peer, stream.get_ref().1.peer_certificates());
                            serve_front(state, conn, stream).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// What the listener knows about a client connection.
#[derive(Clone, Debug)]
struct Conn {
    peer: SocketAddr,
    /// True on the `TLS_LISTEN` port.
    tls: bool,
    /// The user named by a verified client certificate (`TLS_CLIENT_CA_FILE`).
    cert_user: Option<Identity>,
    /// Plain TCP with zero-copy on: where blob hits record the file bytes they send.
    zero_copy: Option<Sink>,
}

impl Conn {
    fn plain(peer: SocketAddr, zero_copy: Option<Sink>) -> Conn {
        Conn {
            peer,
            tls: false,
            cert_user: None,
            zero_copy,
        }
    }

    fn tls(peer: SocketAddr, certs: Option<&[rustls_pki_types::CertificateDer<'_>]>) -> Conn {
        // rustls verified the chain against TLS_CLIENT_CA_FILE before the handshake completed.
        let cert_user = certs
            .and_then(|c| c.first())
            .and_then(|leaf| cert_user(leaf.as_ref()))
            .map(Identity::User);
        Conn {
            peer,
            tls: true,
            cert_user,
            zero_copy: None,
        }
    }
}

async fn serve_front<IO>(state: Arc<State>, conn_info: Conn, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = state.config.timeouts.client_header;
    let peer = conn_info.peer;
    let conn_info = Arc::new(conn_info);
    let service = service_fn(move |req| {
        let state = state.clone();
        let conn_info = conn_info.clone();
        // Boxed: hyper keeps a connection's request future in an allocation of its full size for
        // as long as the connection is open; boxed, an idle connection holds a pointer, not the
        // ~8 KiB state machine of a registry request (`bench/run` phase `ours-idle`).
        Box::pin(async move { Ok::<_, Infallible>(front(state, &conn_info, req).await) }) as Answer
    });
    let conn = http1_builder(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// hyper's settings for client connections. `writev(true)`: hyper's queue write strategy, which
/// hands body chunks to the I/O unchanged; zero-copy depends on it (see `zero_copy`), and it saves
/// a copy of every body chunk anyway. Never `pipeline_flush`, which flattens.
fn http1_builder(header_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_timeout))
        .max_buf_size(MAX_HEAD)
        .writev(true);
    builder
}

/// Requests on the plain port (and the `TLS_LISTEN` port).
async fn front(state: Arc<State>, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
    let peer = conn.peer;
    if head_too_large(&req) {
        return Failure::HeadTooLarge.into_response();
    }
    if req.method() == Method::CONNECT || req.uri().scheme().is_some() {
        let identity = match serve::access::proxy_identity(&state, req.headers()).await {
            Ok(identity) => identity,
            Err(refusal) => {
                state.metrics.refused(Refusal::ProxyAuth);
                return refusal.into_response();
            }
        };
        if req.method() == Method::CONNECT {
            return connect(state, peer, identity, req).await;
        }
        return forward(&state, peer, req).await;
    }
    let path = req.uri().path().to_owned();
    let realm = mirror_realm(&state, conn, req.headers());
    if admin_needs_user(&state, conn, &path, req.headers()).await {
        state.metrics.refused(Refusal::AdminAuth);
        return Failure::Unauthenticated {
            challenge: HeaderValue::from_static("Basic realm=\"registry-proxy\""),
            message: "authentication required".into(),
        }
        .into_response();
    }
    match path.as_str() {
        "/token" => {
            serve::access::token_endpoint(
                &state,
                Surface::Mirror,
                conn.cert_user.clone(),
                &realm,
                req,
            )
            .await
        }
        "/ca.crt" => {
            let mut r = text(StatusCode::OK, state.ca.ca_pem());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/metrics" => status::metrics(&state),
        "/" => status::page(&state, req.headers()).await,
        "/status.json" => status::json(&state).await,
        p if p == "/v2" || p.starts_with("/v2/") => mirror(state, conn, realm, req).await,
        p if p.starts_with("/setup/") => setup(&state, &req),
        p if p == "/admin" || p.starts_with("/admin/") => {
            admin::handle(state, peer.ip(), req).await
        }
        _ => Failure::Forward {
            status: StatusCode::NOT_FOUND,
            message: "not found".into(),
        }
        .into_response(),
    }
}

/// Mirror and path-prefix mode: the upstream is named by `?ns=`, else by a host-like first path
/// component, else it is Docker Hub.
async fn mirror(
    state: Arc<State>,
    conn: &Conn,
    realm: String,
    req: Request<Incoming>,
) -> Response<Body> {
    let (registry, route) = match mirror_target(req.uri().path(), req.uri().query()) {
        Ok(target) => target,
        Err(e) => return Failure::client(e.code(), e.to_string()).into_response(),
    };
    let allowed = match state.config.mirror {
        MirrorPolicy::Any => true,
        MirrorPolicy::Configured => state.config.intercepts(&registry),
    };
    if !allowed {
        state.metrics.refused(Refusal::NotConfigured);
        return Failure::denied(format!(
            "registry {registry} is not configured on this proxy (add it to REGISTRIES, or set MIRROR_ANY=true)"
        ))
        .into_response();
    }
    let mut client = match serve::access::identify(
        &state,
        Surface::Mirror,
        req.headers(),
        conn.cert_user.clone(),
        realm.clone(),
        &realm,
    )
    .await
    {
        Ok(client) => client,
        Err(refusal) => {
            state.metrics.refused(Refusal::Login);
            return refusal.into_response();
        }
    };
    client.peer = Some(conn.peer);
    client.style = mirror_style(req.uri());
    client.zero_copy = conn.zero_copy.clone();
    serve::handle(&state, registry, route, req, client).await
}

/// How a mirror request names its upstream: `?ns=`, a host prefix, or nothing (Docker Hub).
fn mirror_style(uri: &http::Uri) -> PathStyle {
    let has_ns = uri
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("ns=")));
    if has_ns {
        PathStyle::NsQuery
    } else if parse_path(uri.path(), true).is_ok_and(|p| p.host.is_some()) {
        PathStyle::PathPrefix
    } else {
        PathStyle::Upstream
    }
}

/// The token endpoint as a mirror-mode client reaches it: the scheme of the port it came in on and
/// the `Host` it asked for (checked to be a host name or address with a port, nothing else).
fn mirror_realm(state: &State, conn: &Conn, headers: &http::HeaderMap) -> String {
    let scheme = if conn.tls { "https" } else { "http" };
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| RegistryHost::parse(h).is_ok())
        .map_or_else(|| state.config.listen.to_string(), str::to_owned);
    format!("{scheme}://{host}/token")
}

/// With client authentication on, everything but `/ca.crt`, `/healthz`, the token endpoint and the
/// registry API (which has its own login flow) needs a proxy user: `Basic` credentials or a client
/// certificate.
async fn admin_needs_user(
    state: &State,
    conn: &Conn,
    path: &str,
    headers: &http::HeaderMap,
) -> bool {
    if !serve::access::auth_on(state)
        || matches!(path, "/ca.crt" | "/healthz" | "/token")
        || path == "/v2"
        || path.starts_with("/v2/")
        || conn.cert_user.is_some()
    {
        return false;
    }
    let basic = crate::registry::basic::basic_credentials(headers, &http::header::AUTHORIZATION);
    match (basic, &state.users) {
        (Some((user, password)), Some(users)) => users.check(&user, &password).await.is_none(),
        _ => true,
    }
}

/// An absolute-form request (`HTTP_PROXY` clients, plain-HTTP registries): forwarded uncached to
/// the URL's host and port (default 80) if `TUNNEL_ALLOW` allows them, over a connection opened to
/// the address the policy checked.
async fn forward(state: &State, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    if req.uri().scheme_str() != Some("http") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "only http:// URLs are forwarded; use CONNECT for https",
        );
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return refuse(StatusCode::BAD_REQUEST, "the URL has no host");
    };
    let (host, port) = match tunnel::parse_target(authority.as_str(), Some(80)) {
        Ok(target) => target,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("bad host or port in the URL: {e}"),
            );
        }
    };
    let target = tunnel::display_target(&host, port);
    let started = std::time::Instant::now();
    let policy = state.upstream.tunnel_policy();
    let stream = match tunnel::dial(policy, &host, port, state.config.timeouts.proxy_connect).await
    {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(%peer, error = %e, "FORWARD {target} refused");
            state.metrics.refused(Refusal::TunnelPolicy);
            return refuse(
                StatusCode::FORBIDDEN,
                format!("request to {target} not allowed by policy"),
            );
        }
    };
    let (mut parts, incoming) = req.into_parts();
    for name in [
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        parts.headers.remove(name);
    }
    // The URL's authority replaces any Host the client sent (RFC 9112, 3.2.2).
    match HeaderValue::from_str(authority.as_str()) {
        Ok(value) => parts.headers.insert(http::header::HOST, value),
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "bad host in the URL"),
    };
    // The origin server gets the origin form: path and query only.
    let origin_form = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<http::Uri>();
    match origin_form {
        Ok(uri) => parts.uri = uri,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "bad request target"),
    }
    let request = Request::from_parts(parts, body::incoming(incoming));
    let read_timeout = state.upstream.read_timeout;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "forwarded connection ended with an error");
            }
        });
        sender.send_request(request).await
    };
    match tokio::time::timeout(read_timeout, exchange).await {
        Ok(Ok(response)) => {
            tracing::info!(
                target: "registry_proxy::access",
                "FORWARD {target} client={peer} status={} ms={}",
                response.status().as_u16(),
                started.elapsed().as_millis()
            );
            response.map(body::incoming)
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "FORWARD {target} failed");
            refuse(StatusCode::BAD_GATEWAY, format!("{target} did not answer"))
        }
        Err(_) => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{target} did not answer within {read_timeout:?}"),
        ),
    }
}

/// `CONNECT host:port`: intercept configured registries, tunnel other targets where
/// `TUNNEL_ALLOW` allows. A refused, unknown, unreachable or silent target gets the same `403`, so
/// the answer tells a client nothing about what is behind the proxy.
async fn connect(
    state: Arc<State>,
    peer: SocketAddr,
    identity: Identity,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return refuse(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let (host, port) = match tunnel::parse_target(authority.as_str(), None) {
        Ok(target) => target,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("CONNECT needs host:port with a port from 1 to 65535 ({e})"),
            );
        }
    };
    let registry = RegistryHost::from_parts(&host, Some(port));
    if let Some(registry) = registry.filter(|r| state.config.intercepts(r)) {
        let tls = match state.ca.server_config(&host) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot mint a certificate");
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot mint a certificate",
                );
            }
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    intercept(
                        state,
                        registry,
                        authority,
                        identity,
                        peer,
                        tls,
                        TokioIo::new(upgraded),
                    )
                    .await
                }
                Err(e) => tracing::debug!(%peer, error = %e, "CONNECT upgrade failed"),
            }
        });
        return Response::new(body::empty());
    }
    // Blind tunnel, to an address the policy allowed.
    let target_name = tunnel::display_target(&host, port);
    let policy = state.upstream.tunnel_policy();
    let connect_timeout = state.config.timeouts.proxy_connect_connect;
    let target = match tunnel::dial(policy, &host, port, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(%peer, error = %e, "TUNNEL {target_name} refused");
            state.metrics.refused(Refusal::TunnelPolicy);
            return refuse(
                StatusCode::FORBIDDEN,
                format!("tunnel to {target_name} not allowed by policy"),
            );
        }
    };
    let _ = target.set_nodelay(true);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        let mut target = target;
        let started = std::time::Instant::now();
        let mut open = state.metrics.tunnel_opened();
        let relayed =
            relay::relay(&mut client, &mut target, state.config.timeouts.proxy_read).await;
        open.relayed(relayed.sent + relayed.received);
        drop(open);
        tracing::info!(
            target: "registry_proxy::access",
            "TUNNEL {target_name} client={peer} sent={} received={} ms={}{}",
            relayed.sent,
            relayed.received,
            started.elapsed().as_millis(),
            if relayed.idle { " idle" } else { "" }
        );
    });
    Response::new(body::empty())
}

/// Serves the registry API on a TLS connection terminated with a leaf for `registry`, for the
/// client at `peer`.
async fn intercept<IO>(
    state: Arc<State>,
    registry: RegistryHost,
    authority: http::uri::Authority,
    identity: Identity,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    io: IO,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = state.config.timeouts.client_header;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake =
        tokio::time::timeout(state.config.timeouts.client_header, acceptor.accept(io)).await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%registry, error = %e, "TLS handshake with client failed (does it trust the proxy CA? GET /ca.crt)");
            return;
        }
        Err(_) => return,
    };
    // Clients log in where they think the registry is; the proxy answers there.
    let realm = match authority.port_u16() {
        Some(443) | None => format!("https://{}/token", authority.host()),
        Some(_) => format!("https://{authority}/token"),
    };
    let audience = registry.to_string();
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let registry = registry.clone();
        let identity = identity.clone();
        let realm = realm.clone();
        let audience = audience.clone();
        Box::pin(async move {
            if head_too_large(&req) {
                return Ok(Failure::HeadTooLarge.into_response());
            }
            if req.uri().path() == "/token" {
                let response = serve::access::token_endpoint(
                    &state,
                    Surface::Intercept,
                    Some(identity),
                    &audience,
                    req,
                )
                .await;
                return Ok(response);
            }
            let parsed = match parse_path(req.uri().path(), false) {
                Ok(parsed) => parsed,
                Err(e) => return Ok(Failure::client(e.code(), e.to_string()).into_response()),
            };
            let mut client = match serve::access::identify(
                &state,
                Surface::Intercept,
                req.headers(),
                Some(identity),
                realm,
                &audience,
            )
            .await
            {
                Ok(client) => client,
                Err(refusal) => {
                    state.metrics.refused(Refusal::Login);
                    return Ok(refusal.into_response());
                }
            };
            client.peer = Some(peer);
            let response = serve::handle(&state, registry, parsed.route, req, client).await;
            Ok::<_, Infallible>(response)
        }) as Answer
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_timeout))
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
}

/// `GET /setup/<client>?mode=mirror|connect&proxy=URL&prefix=DIR`: the same script as
/// `registry-proxy setup`; the proxy URL defaults to the address the request was sent to. Every
/// value is checked by `setup::http_answer`; a refusal is a script of comments only.
fn setup(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let answer = crate::setup::http_answer(
        &state.config,
        req.uri().path().trim_start_matches("/setup/"),
        req.uri().query(),
        req.headers()
            .get(http::header::HOST)
            .map(HeaderValue::as_bytes),
    );
    let mut r = text(answer.status, &answer.body);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/x-shellscript; charset=utf-8"),
    );
    r
}

/// hyper bounds its read buffer, but a head that arrives in one read can exceed it: check the total.
fn head_too_large(req: &Request<Incoming>) -> bool {
    let mut size = req.uri().to_string().len();
    for (name, value) in req.headers() {
        size += name.as_str().len() + value.len() + 4;
    }
    size > MAX_HEAD
}

/// A refusal on the forward-proxy surface (CONNECT, absolute-form): plain text, through the one
/// error path.
fn refuse(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    Failure::Forward {
        status,
        message: message.into(),
    }
    .into_response()
}
