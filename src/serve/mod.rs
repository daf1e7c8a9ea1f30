//! Registry API handlers: tie a parsed route to the cache and the upstream client. The same
//! handlers serve every way a client reaches us (intercepted CONNECT, registry mirror, path prefix),
//! so auth, freshness, single-flight and logs behave the same in every mode.

pub mod access;
mod blob;
pub mod error;
mod manifest;
mod pass;

pub(crate) use blob::for_peer as blob_for_peer;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::access::identity::Users;
use crate::access::token::TokenKey;
use crate::access::verify::Verifier;
use crate::body::{self, Body};
use crate::cache::Cache;
use crate::config::Config;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;
use crate::registry::route::Route;
use crate::telemetry::{LoggedBody, Metrics, RequestLog, Verdict};
use crate::tls::CertAuthority;
use crate::upstream::Upstream;
pub use access::{Client, Surface};
use error::Failure;

/// Everything a request handler needs; one per proxy, shared.
pub struct State {
    pub config: Config,
    pub cache: Cache,
    pub upstream: Upstream,
    pub ca: CertAuthority,
    pub metrics: Arc<Metrics>,
    /// The proxy's users (`PROXY_HTPASSWD`); `None` when client authentication by password is off.
    pub users: Option<Arc<Users>>,
    /// Seals and opens the proxy's own bearer tokens.
    pub tokens: TokenKey,
    /// Upstream's answers about client credentials, for `verify`-mode registries.
    pub verifier: Verifier,
    /// The other replicas (`PEERS`), if any.
    pub peers: Option<Arc<crate::peer::Peers>>,
    /// Proxy tokens opened recently (a hit costs a lookup, not a decryption).
    pub opened_tokens: access::OpenedTokens,
    /// The settings that SIGHUP re-reads (access rules, per-registry auth modes, central
    /// credentials): the configuration as last loaded. Everything else comes from `config`.
    pub live: std::sync::RwLock<Arc<Config>>,
    /// Warm jobs started through the admin API.
    pub warm_jobs: Arc<crate::warm::Jobs>,
    /// Whether blob hits on plain-HTTP connections use `sendfile` (`ZERO_COPY`).
    pub zero_copy: Arc<crate::zero_copy::ZeroCopy>,
}

impl State {
    /// The configuration as last (re)loaded, for the settings that may change while running.
    pub fn live(&self) -> Arc<Config> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes the reloadable parts of a newly loaded configuration: access rules, per-registry auth
    /// modes and central credentials. Returns the settings that changed but need a restart.
    pub fn reload(&self, new: Config) -> Vec<&'static str> {
        let mut restart = Vec::new();
        let old = &self.config;
        if new.listen != old.listen {
            restart.push("LISTEN");
        }
        if new.cache_dir != old.cache_dir {
            restart.push("CACHE_DIR");
        }
        if new.ca_dir != old.ca_dir {
            restart.push("CA_DIR");
        }
        if new.registries != old.registries {
            restart.push("REGISTRIES");
        }
        if new.proxy_htpasswd != old.proxy_htpasswd {
            restart.push("PROXY_HTPASSWD (the path; the file itself is reloaded)");
        }
        if new.storage != old.storage {
            restart.push("STORAGE (and S3_*, AWS_*, REPLICA_NAME)");
        }
        if new.peers != old.peers {
            restart.push("PEERS, PEER_LISTEN, PEER_SECRET");
        }
        self.upstream.set_credentials(new.credentials.clone());
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        restart
    }
}

pub(crate) const API_VERSION: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
pub(crate) const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// A response to send plus what its log line says.
pub(crate) struct Outcome {
    pub response: Response<Body>,
    pub verdict: Verdict,
    pub upstream_bytes: u64,
    pub note: Option<String>,
}

impl Outcome {
    pub(crate) fn new(response: Response<Body>, verdict: Verdict) -> Outcome {
        Outcome {
            response,
            verdict,
            upstream_bytes: 0,
            note: None,
        }
    }
}

/// What a handler knows about the request besides the route.
pub(crate) struct Ctx<'a> {
    pub state: &'a Arc<State>,
    pub registry: RegistryHost,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub client: Client,
    /// The reloadable settings, as they were when the request came in.
    pub live: Arc<Config>,
}

/// Handles one registry API request for `registry`.
pub async fn handle(
    state: &Arc<State>,
    registry: RegistryHost,
    route: Route,
    req: Request<Incoming>,
    client: Client,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, incoming) = req.into_parts();
    let route = normalize(&registry, route);
    let (kind, repository, reference) = describe(&route);
    let ctx = Ctx {
        state,
        registry: registry.clone(),
        method: parts.method.clone(),
        headers: parts.headers,
        query: parts.uri.query().map(str::to_owned),
        client,
        live: state.live(),
    };
    let is_read = ctx.method == Method::GET || ctx.method == Method::HEAD;
    let outcome = match ctx.admit(&route) {
        Err(refusal) => Outcome::new(
            ctx.refused_by_rules(refusal).into_response(),
            Verdict::Local,
        ),
        Ok(()) => match route {
            _ if !is_read && !state.config.allow_push => Outcome::new(
                Failure::ReadOnly {
                    method: ctx.method.clone(),
                }
                .into_response(),
                Verdict::Local,
            ),
            Route::Base if is_read => Outcome::new(base_response(), Verdict::Local),
            Route::Manifest { name, reference } if is_read => {
                manifest::handle(&ctx, &name, &reference).await
            }
            Route::Blob { name, digest } if is_read && digest.is_sha256() => {
                blob::handle(&ctx, &name, &digest).await
            }
            other => pass::handle(&ctx, &other, incoming).await,
        },
    };
    let Outcome {
        response,
        verdict,
        upstream_bytes,
        note,
    } = outcome;
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    // The verdict for clients that want to know (`registry-proxy warm` counts what was cached).
    parts.headers.insert(
        crate::warm::CACHE_HEADER,
        HeaderValue::from_static(verdict.as_str()),
    );
    if parts.status == http::StatusCode::UNAUTHORIZED {
        // Clients log in to the proxy, never to the upstream's realm (which they may not reach,
        // and whose tokens the proxy would have to pass on).
        let scope = (repository != "-").then(|| format!("repository:{repository}:pull"));
        parts.headers.insert(
            http::header::WWW_AUTHENTICATE,
            ctx.client.challenge(scope.as_deref()),
        );
    }
    let log = RequestLog {
        verdict,
        method: ctx.method.to_string(),
        registry: registry.to_string(),
        repository,
        kind,
        reference,
        status: parts.status.as_u16(),
        upstream_bytes,
        client: ctx.client.peer,
        user: ctx.client.user().map(str::to_owned),
        note,
    };
    let expected = if ctx.method == Method::HEAD {
        Some(0)
    } else {
        parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    let body = LoggedBody::new(body, log, state.metrics.clone(), started, expected);
    Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
}

/// Docker Hub names with one component live under `library/`.
fn normalize(registry: &RegistryHost, route: Route) -> Route {
    if !registry.is_docker_hub() {
        return route;
    }
    match route {
        Route::Manifest { name, reference } => Route::Manifest {
            name: name.for_docker_hub(),
            reference,
        },
        Route::Blob { name, digest } => Route::Blob {
            name: name.for_docker_hub(),
            digest,
        },
        Route::TagsList { name } => Route::TagsList {
            name: name.for_docker_hub(),
        },
        Route::Referrers { name, digest } => Route::Referrers {
            name: name.for_docker_hub(),
            digest,
        },
        Route::Upload { name, session } => Route::Upload {
            name: name.for_docker_hub(),
            session,
        },
        other => other,
    }
}

fn describe(route: &Route) -> (&'static str, String, String) {
    match route {
        Route::Base => ("base", "-".into(), "-".into()),
        Route::Catalog => ("catalog", "-".into(), "-".into()),
        Route::Manifest { name, reference } => {
            ("manifest", name.to_string(), reference.to_string())
        }
        Route::Blob { name, digest } => ("blob", name.to_string(), digest.to_string()),
        Route::TagsList { name } => ("tags", name.to_string(), "-".into()),
        Route::Referrers { name, digest } => ("referrers", name.to_string(), digest.to_string()),
        Route::Upload { name, session } => (
            "upload",
            name.to_string(),
            session.clone().unwrap_or_else(|| "-".into()),
        ),
    }
}

/// The token scope for a repository.
pub(crate) fn pull_scope(name: &RepoName) -> String {
    format!("repository:{name}:pull")
}

/// `200 {}` for `GET /v2/`: clients of an intercepted registry never need to log in.
fn base_response() -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from_static(b"{}")));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("2"));
    response
}

/// Headers of an upstream response worth passing to the client.
pub(crate) fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Request headers worth forwarding upstream (no hop-by-hop, no Host, no Authorization — that is
/// decided separately).
pub(crate) fn forward_request_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        if !is_hop_by_hop(name) && name != http::header::HOST && name != http::header::AUTHORIZATION
        {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
    )
}

/// Docker Hub's rate-limit headers, for the log line.
pub(crate) fn ratelimit_note(headers: &HeaderMap) -> Option<String> {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match (get("ratelimit-limit"), get("ratelimit-remaining")) {
        (None, None) => None,
        (limit, remaining) => Some(format!(
            "ratelimit-limit={} ratelimit-remaining={}",
            limit.unwrap_or_default(),
            remaining.unwrap_or_default()
        )),
    }
}
