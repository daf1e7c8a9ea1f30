//! The upstream client: pooled HTTP/1.1 and HTTP/2 connections to registries, challenge answering
//! (see [`auth`]), and redirects to CDNs followed server-side so that clients never see them.

pub mod auth;
pub mod connector;

use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;

use crate::access::tunnel::{self, TunnelPolicy};
use crate::access::verify::Principal;
use crate::body::{self, Body};
use crate::config::Config;
use crate::registry::challenge::parse_www_authenticate;
use crate::registry::host::RegistryHost;
use crate::secret::Secret;
use crate::telemetry::{Metrics, UpstreamFault};

pub use connector::TrustError;

/// The pooled HTTP client.
pub type Client = hyper_util::client::legacy::Client<connector::Connector, Body>;

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// Why an upstream exchange failed (statuses are not errors: they are returned as responses).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("upstream {registry} did not answer within {timeout:?}")]
    Timeout { registry: String, timeout: Duration },
    #[error("token realm {realm}: {reason}")]
    Token { realm: String, reason: String },
    #[error("token realm {realm} refused with {status}")]
    TokenDenied { realm: String, status: StatusCode },
    #[error("upstream {registry}: {reason}")]
    Redirect { registry: String, reason: String },
    #[error("invalid upstream request: {0}")]
    Request(String),
    /// The target is not a configured registry and `TUNNEL_ALLOW` does not allow it. `target` may
    /// name an internal address: it is for logs, never for a client.
    #[error("upstream {target} is not allowed by TUNNEL_ALLOW")]
    Refused { target: String },
}

impl UpstreamError {
    /// The metrics label of this failure.
    pub fn fault(&self) -> UpstreamFault {
        match self {
            UpstreamError::Unreachable { .. } => UpstreamFault::Unreachable,
            UpstreamError::Timeout { .. } => UpstreamFault::Timeout,
            UpstreamError::Token { .. } => UpstreamFault::Token,
            UpstreamError::TokenDenied { .. } => UpstreamFault::TokenDenied,
            UpstreamError::Redirect { .. } => UpstreamFault::Redirect,
            UpstreamError::Request(_) => UpstreamFault::Request,
            UpstreamError::Refused { .. } => UpstreamFault::Policy,
        }
    }

    /// True if the upstream could not be reached or did not answer (stale content may be served).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unreachable { .. }
                | UpstreamError::Timeout { .. }
                | UpstreamError::Token { .. }
        )
    }
}

/// One request to send to a registry.
pub struct UpstreamRequest {
    pub registry: RegistryHost,
    pub method: Method,
    /// Path and query, e.g. `/v2/library/alpine/manifests/3`.
    pub path_and_query: String,
    /// Headers to forward (Accept, Range, Content-Type, …); hop-by-hop headers already removed.
    pub headers: HeaderMap,
    pub body: Body,
    /// Token scope, e.g. `repository:library/alpine:pull`; empty for registry-wide requests.
    pub scope: String,
    /// Whose credentials answer the upstream's challenges.
    pub auth: UpstreamAuth,
}

/// Whose credentials an upstream request carries.
#[derive(Clone, Debug)]
pub enum UpstreamAuth {
    /// The proxy's central credentials (`AUTH_REGISTRIES`), or anonymous where it has none.
    Central,
    /// None at all (anonymous tokens), even where central credentials exist: "is it public?".
    Anonymous,
    /// The client's own credentials (`verify` mode).
    Client(ClientCredential),
}

/// A client's own credential for an upstream registry.
#[derive(Clone, Debug)]
pub enum ClientCredential {
    /// A user name and password: the proxy answers the upstream's challenge with them (Basic, or a
    /// token from the upstream's realm), caching tokens per credential.
    Basic { user: String, password: Secret },
    /// A ready `Authorization` value the client got from the upstream itself, forwarded as is.
    Header(HeaderValue),
}

impl ClientCredential {
    /// The verifier's key for this credential (a SHA-256 of it; the credential itself is not kept).
    pub fn principal(&self) -> Principal {
        match self {
            ClientCredential::Basic { user, password } => {
                Principal::of(format!("{user}:{}", password.expose()).as_bytes())
            }
            ClientCredential::Header(value) => Principal::of(value.as_bytes()),
        }
    }
}

/// The proxy's client for all registries.
pub struct Upstream {
    client: Client,
    auth: auth::Authenticator,
    /// `TUNNEL_ALLOW`, for the connector and for the listener's tunnels.
    policy: Arc<TunnelPolicy>,
    /// Registries reached over plain HTTP (`http://` in `REGISTRIES`); all others over https.
    plain_http: Vec<RegistryHost>,
    /// Time allowed for an upstream to send response headers or the next body chunk.
    pub read_timeout: Duration,
    /// Counts every exchange per registry (requests, failures, health, rate-limit headers).
    metrics: Arc<Metrics>,
}

/// Largest HTTP/2 DATA frame the upstream may send us (the default is 16 KiB). A blob's body then
/// arrives in as few frames as the server writes it (Go's registry writes 32 KiB at a time):
/// fewer frames to decode and window updates to send per GB. Measured on a cold 1 GiB pull
/// (`BENCH_ONLY=cold bench/run`, see docs/benchmarks.md): ~5 % less proxy CPU than with 16 KiB
/// frames; HTTP/1.1 to the same upstream cost ~15 % more CPU than HTTP/2.
const H2_MAX_FRAME: u32 = 1024 * 1024;

impl Upstream {
    /// Builds the client from the configuration (trust roots, timeouts, overrides, credentials).
    /// Targets other than the configured registries and `CONNECT_TO` go through `policy`.
    pub fn new(
        config: &Config,
        policy: Arc<TunnelPolicy>,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, TrustError> {
        let tls =
            connector::client_tls_config(config.verify_ssl, config.upstream_ca_file.as_deref())?;
        let trusted = std::iter::once(RegistryHost::docker_hub())
            .chain(config.registries.iter().cloned())
            .map(|r| {
                let port = if config.is_plain_http(&r) {
                    r.port().unwrap_or(80)
                } else {
                    r.upstream_port()
                };
                (r.upstream_host().to_owned(), port)
            })
            .collect();
        let connector = connector::Connector::new(
            tls,
            config.connect_to.clone(),
            config.timeouts.proxy_connect,
            config.disable_ipv6,
            policy.clone(),
            trusted,
        );
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .http2_adaptive_window(true)
            .http2_max_frame_size(H2_MAX_FRAME)
            .build(connector);
        Ok(Upstream {
            client,
            auth: auth::Authenticator::new(config.credentials.clone(), config.registries.clone()),
            policy,
            plain_http: config.plain_http.clone(),
            read_timeout: config.timeouts.proxy_read,
            metrics,
        })
    }

    /// `https://authority` of a registry's API, or `http://` for one configured as plain HTTP
    /// (never by guessing: only where `REGISTRIES` says so).
    fn origin(&self, registry: &RegistryHost) -> String {
        let scheme = if self.plain_http.contains(registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", registry.upstream_authority())
    }

    /// Replaces the central credentials (`AUTH_REGISTRIES`) after a configuration reload.
    pub fn set_credentials(&self, credentials: Vec<crate::config::Credential>) {
        self.auth.set_credentials(credentials);
    }

    /// The tunnel policy (`TUNNEL_ALLOW` and the proxy's own addresses).
    pub fn tunnel_policy(&self) -> &TunnelPolicy {
        &self.policy
    }

    /// Sends `req`, answering an auth challenge once and following redirects for GET and HEAD;
    /// counts the exchange in the metrics.
    pub async fn send(&self, req: UpstreamRequest) -> Result<Response<Incoming>, UpstreamError> {
        let registry = req.registry.clone();
        let method = req.method.clone();
        let result = self.send_inner(req).await;
        match &result {
            Ok(response) => self.metrics.upstream_answered(
                &registry,
                &method,
                response.status(),
                response.headers(),
            ),
            Err(e) => self
                .metrics
                .upstream_failed(&registry, Some(&method), e.fault()),
        }
        result
    }

    async fn send_inner(
        &self,
        mut req: UpstreamRequest,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let url: Uri = format!("{}{}", self.origin(&req.registry), req.path_and_query)
            .parse()
            .map_err(|_| UpstreamError::Request(format!("bad path {:?}", req.path_and_query)))?;
        let replayable = req.body.is_end_stream();
        let forwarded = match &req.auth {
            UpstreamAuth::Client(ClientCredential::Header(value)) => Some(value.clone()),
            _ => None,
        };
        let own_auth = forwarded.is_some();
        let who = auth::Who::of(&req.auth);
        if !own_auth
            && self
                .auth
                .authorization(&req.registry, &req.scope, &who)
                .is_none()
        {
            // A body cannot be replayed after a 401: learn the scheme first.
            if !replayable {
                self.learn_challenge(&req.registry).await?;
            }
            // A registry known to want Bearer gets the token for a new scope up front, saving the
            // 401 round trip.
            if self.auth.knows(&req.registry) {
                self.auth
                    .prepare(&self.client, &req.registry, &req.scope, &who)
                    .await
                    .map_err(realm_refusal)?;
            }
        }
        let mut body = Some(std::mem::replace(&mut req.body, body::empty()));
        let mut retried = false;
        loop {
            let authorization = forwarded
                .clone()
                .or_else(|| self.auth.authorization(&req.registry, &req.scope, &who));
            let this_body = if replayable {
                body::empty()
            } else {
                body.take().unwrap_or_else(body::empty)
            };
            let request = build(&req.method, &url, &req.headers, authorization, this_body)?;
            let response = self.exchange(&req.registry, request).await?;
            if response.status() == StatusCode::UNAUTHORIZED && !own_auth && !retried && replayable
            {
                let challenges = challenges_of(response.headers());
                if !challenges.is_empty()
                    && self
                        .auth
                        .answer(&self.client, &req.registry, &challenges, &req.scope, &who)
                        .await
                        .map_err(realm_refusal)?
                {
                    retried = true;
                    continue;
                }
            }
            if response.status().is_redirection()
                && (req.method == Method::GET || req.method == Method::HEAD)
            {
                return self.follow(&req, &url, response).await;
            }
            return Ok(response);
        }
    }

    /// Sends `GET /v2/` to learn how the registry wants to be authenticated.
    async fn learn_challenge(&self, registry: &RegistryHost) -> Result<(), UpstreamError> {
        if self.auth.knows(registry) {
            return Ok(());
        }
        let url: Uri = format!("{}/v2/", self.origin(registry))
            .parse()
            .map_err(|_| UpstreamError::Request("bad registry authority".into()))?;
        let request = build(&Method::GET, &url, &HeaderMap::new(), None, body::empty())?;
        let response = self.exchange(registry, request).await?;
        let challenges = challenges_of(response.headers());
        if !challenges.is_empty() {
            self.auth
                .answer(
                    &self.client,
                    registry,
                    &challenges,
                    "",
                    &auth::Who::Anonymous,
                )
                .await
                .map_err(realm_refusal)?;
        }
        Ok(())
    }

    async fn follow(
        &self,
        req: &UpstreamRequest,
        origin: &Uri,
        mut response: Response<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut current = origin.clone();
        for _ in 0..MAX_REDIRECTS {
            if !is_followed(response.status()) {
                return Ok(response);
            }
            let Some(location) = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                return Ok(response);
            };
            let next =
                resolve_location(&current, location).ok_or_else(|| UpstreamError::Redirect {
                    registry: req.registry.to_string(),
                    reason: format!("unusable redirect location {location:?}"),
                })?;
            // A registry reached over TLS never sends us on over plain HTTP.
            if current.scheme_str() == Some("https") && next.scheme_str() != Some("https") {
                return Err(UpstreamError::Redirect {
                    registry: req.registry.to_string(),
                    reason: "refusing a redirect from https to http".into(),
                });
            }
            // Credentials go only to the registry itself — same scheme, host and port as the
            // original URL — never to a CDN, another port or over plain HTTP.
            let same_host = same_origin(origin, &next);
            let authorization = if same_host {
                match &req.auth {
                    UpstreamAuth::Client(ClientCredential::Header(value)) => Some(value.clone()),
                    other => {
                        self.auth
                            .authorization(&req.registry, &req.scope, &auth::Who::of(other))
                    }
                }
            } else {
                None
            };
            let mut headers = req.headers.clone();
            if !same_host {
                headers.remove(AUTHORIZATION);
            }
            let request = build(&req.method, &next, &headers, authorization, body::empty())?;
            response = self.exchange(&req.registry, request).await?;
            current = next;
        }
        if is_followed(response.status()) {
            return Err(UpstreamError::Redirect {
                registry: req.registry.to_string(),
                reason: format!("more than {MAX_REDIRECTS} redirects"),
            });
        }
        Ok(response)
    }

    async fn exchange(
        &self,
        registry: &RegistryHost,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let target = request.uri().authority().map(ToString::to_string);
        match tokio::time::timeout(self.read_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if connector::refusal_in(&e).is_some() => Err(UpstreamError::Refused {
                target: target.unwrap_or_else(|| registry.to_string()),
            }),
            Ok(Err(e)) => Err(UpstreamError::Unreachable {
                registry: registry.to_string(),
                reason: describe(&e),
            }),
            Err(_) => Err(UpstreamError::Timeout {
                registry: registry.to_string(),
                timeout: self.read_timeout,
            }),
        }
    }
}

/// A token fetch the connector refused becomes [`UpstreamError::Refused`]. `auth` reports a failed
/// fetch as text only, so the refusal is recognised by [`tunnel::REFUSED_BY_POLICY`] in it.
fn realm_refusal(e: UpstreamError) -> UpstreamError {
    match e {
        UpstreamError::Token { realm, reason } if reason.contains(tunnel::REFUSED_BY_POLICY) => {
            UpstreamError::Refused { target: realm }
        }
        other => other,
    }
}

/// Every challenge in a response's `WWW-Authenticate` headers.
fn challenges_of(headers: &HeaderMap) -> Vec<crate::registry::challenge::Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect()
}

fn is_followed(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn build(
    method: &Method,
    url: &Uri,
    headers: &HeaderMap,
    authorization: Option<HeaderValue>,
    body: Body,
) -> Result<Request<Body>, UpstreamError> {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(url.clone())
        .body(body)
        .map_err(|e| UpstreamError::Request(e.to_string()))?;
    let h = request.headers_mut();
    for (name, value) in headers {
        if name != HOST && name != AUTHORIZATION {
            h.append(name.clone(), value.clone());
        }
    }
    if let Some(mut auth) = authorization {
        auth.set_sensitive(true);
        h.insert(AUTHORIZATION, auth);
    }
    h.entry(http::header::USER_AGENT)
        .or_insert(HeaderValue::from_static(concat!(
            "registry-proxy/",
            env!("CARGO_PKG_VERSION")
        )));
    Ok(request)
}

/// True if two URLs have the same scheme, host and port (the default port of the scheme when
/// none is written).
fn same_origin(a: &Uri, b: &Uri) -> bool {
    fn parts(u: &Uri) -> Option<(String, String, u16)> {
        let scheme = u.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let host = u.host()?.to_ascii_lowercase();
        Some((scheme, host, u.port_u16().unwrap_or(default_port)))
    }
    match (parts(a), parts(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Resolves a `Location` against the URL it came from (absolute, or absolute-path).
fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("https://") || location.starts_with("http://") {
        return location.parse().ok();
    }
    if location.starts_with('/') && !location.starts_with("//") {
        let scheme = base.scheme_str()?;
        let authority = base.authority()?;
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    None
}

/// A one-line description of a client error with its causes (no URL query, so no tokens).
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_token_fetches_become_refusals() {
        let refused = tunnel::TunnelError::Refused {
            target: "auth.internal:443".into(),
            reason: tunnel::Refusal::NoEntry,
        };
        let e = realm_refusal(UpstreamError::Token {
            realm: "https://auth.internal/token".into(),
            reason: format!("client error (Connect): {refused}"),
        });
        assert!(
            matches!(&e, UpstreamError::Refused { target } if target == "https://auth.internal/token"),
            "{e:?}"
        );
        assert!(
            !e.is_unavailable(),
            "a refusal is not an outage: nothing stale is served"
        );
        let e = realm_refusal(UpstreamError::Token {
            realm: "https://auth.test/token".into(),
            reason: "connection refused".into(),
        });
        assert!(matches!(e, UpstreamError::Token { .. }), "{e:?}");
    }

    #[test]
    fn refusals_are_found_in_client_errors() {
        let refused = tunnel::TunnelError::Refused {
            target: "x:1".into(),
            reason: tunnel::Refusal::NoEntry,
        };
        let io = std::io::Error::new(refused.kind(), refused);
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Wrapper(#[source] std::io::Error);
        assert!(connector::refusal_in(&Wrapper(io)).is_some());
        let other = Wrapper(std::io::Error::other("connection refused"));
        assert!(connector::refusal_in(&other).is_none());
    }

    #[test]
    fn locations_resolve() {
        let base: Uri = "https://registry.test:5443/v2/x/blobs/sha256:ab"
            .parse()
            .unwrap();
        assert_eq!(
            resolve_location(&base, "/cdn/blob?sig=1")
                .unwrap()
                .to_string(),
            "https://registry.test:5443/cdn/blob?sig=1"
        );
        assert_eq!(
            resolve_location(&base, "https://cdn.test/a")
                .unwrap()
                .to_string(),
            "https://cdn.test/a"
        );
        assert!(resolve_location(&base, "relative/path").is_none());
        assert!(resolve_location(&base, "//evil/x").is_none());
    }

    #[test]
    fn authorization_follows_only_the_same_origin() {
        let origin: Uri = "https://registry.test/v2/x/blobs/sha256:ab"
            .parse()
            .unwrap();
        let cases = [
            ("https://registry.test/other", true),
            ("https://REGISTRY.test:443/other", true),
            ("http://registry.test/other", false),
            ("http://registry.test:443/other", false),
            ("https://registry.test:8443/other", false),
            ("https://cdn.test/other", false),
            ("https://registry.test.cdn.test/other", false),
        ];
        for (next, same) in cases {
            let next: Uri = next.parse().unwrap();
            assert_eq!(same_origin(&origin, &next), same, "{next}");
        }
        let v6: Uri = "https://[::1]:5000/v2/".parse().unwrap();
        assert!(same_origin(&v6, &"https://[::1]:5000/x".parse().unwrap()));
        assert!(!same_origin(&v6, &"https://[::1]:5001/x".parse().unwrap()));
    }
}
