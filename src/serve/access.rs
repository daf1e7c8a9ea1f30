//! The access step of every registry request, between routing and the cache:
//! - who the client is ([`Client`]: the identity the listener established, and the client's own
//!   credential for the upstream registry when it gave one);
//! - what the rules let that identity do (`pull` what is cached, `fetch` what is not, `push`);
//! - for registries in `verify` mode, whether upstream accepted the client's own credential for the
//!   repository before any cached byte goes out ([`Ctx::verify_cached`]);
//! - the proxy's token endpoint, which is how registry clients log in to it.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::error::{Failure, text};
use super::{Ctx, State, pull_scope};
use crate::access::identity::Identity;
use crate::access::rules::Action;
use crate::access::token::{Claims, TokenRequest, parse_token_request, token_response};
use crate::access::verify::{Known, Principal};
use crate::body::{self, Body};
use crate::config::AuthMode;
use crate::registry::basic::{basic_credentials, parse_basic, parse_bearer};
use crate::registry::error::ErrorCode;
use crate::registry::host::RegistryHost;
use crate::registry::link::PathStyle;
use crate::registry::name::RepoName;
use crate::registry::route::Route;
use crate::secret::Secret;
use crate::telemetry::{Refusal, VerifyResult};
use crate::upstream::{ClientCredential, UpstreamAuth, UpstreamRequest};

/// How long the proxy's tokens are valid.
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 300;
/// The `service` the proxy's challenges name.
const SERVICE: &str = "registry-proxy";
/// Largest token request body read.
const MAX_TOKEN_BODY: usize = 16 * 1024;

/// Who sent a registry request, as the listener established it.
#[derive(Clone, Debug)]
pub struct Client {
    /// The proxy user (htpasswd, client certificate, or the user inside a proxy token).
    pub identity: Identity,
    /// The client's own credential for upstream registries (used in `verify` mode only).
    pub upstream: Option<ClientCredential>,
    /// Registries the upstream credential may be sent to; `None` = whichever the request names.
    pub bound_to: Option<Vec<RegistryHost>>,
    /// True if the client presented credentials the proxy accepted (or a client certificate).
    pub presented: bool,
    /// The token endpoint as this client reaches it (the realm of our challenges).
    pub realm: String,
    /// The client's address (for the log), when the listener knows it.
    pub peer: Option<SocketAddr>,
    /// How the client names the registry in its paths (pagination links are written that way).
    pub style: PathStyle,
    /// The plain-TCP connection's zero-copy sink, where blob hits may use `sendfile`.
    pub zero_copy: Option<crate::zero_copy::Sink>,
}

impl Client {
    /// A client that presented nothing.
    pub fn anonymous(realm: String) -> Client {
        Client {
            identity: Identity::Anonymous,
            upstream: None,
            bound_to: None,
            presented: false,
            realm,
            peer: None,
            style: PathStyle::Upstream,
            zero_copy: None,
        }
    }

    /// The proxy user's name for the log (`None` for anonymous clients).
    pub fn user(&self) -> Option<&str> {
        match &self.identity {
            Identity::Anonymous => None,
            Identity::User(name) => Some(name),
        }
    }

    /// The `WWW-Authenticate` value that sends this client to log in, for an optional scope.
    pub fn challenge(&self, scope: Option<&str>) -> HeaderValue {
        let mut value = format!("Bearer realm=\"{}\",service=\"{SERVICE}\"", self.realm);
        if let Some(scope) = scope {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"/token\""))
    }

    /// The client's credential for `registry`, if it may be sent there.
    fn credential_for(&self, registry: &RegistryHost) -> Option<&ClientCredential> {
        match &self.bound_to {
            Some(bound) if !bound.contains(registry) => None,
            _ => self.upstream.as_ref(),
        }
    }
}

/// Where a request came in, which decides what its credentials mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// Mirror mode (plain port or `TLS_LISTEN`): credentials are the proxy's own users when client
    /// authentication is on, else the client's upstream credentials.
    Mirror,
    /// An intercepted CONNECT tunnel: the proxy user was established by `Proxy-Authorization`;
    /// `Authorization` always carries upstream credentials.
    Intercept,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// True if client authentication is on (`PROXY_HTPASSWD` or `TLS_CLIENT_CA_FILE`).
pub(crate) fn auth_on(state: &State) -> bool {
    state.users.is_some() || state.config.tls_client_ca_file.is_some()
}

/// Checks `Proxy-Authorization: Basic` on CONNECT and absolute-form requests. With client
/// authentication off every client is anonymous.
pub async fn proxy_identity(state: &State, headers: &HeaderMap) -> Result<Identity, Failure> {
    let Some(users) = &state.users else {
        return Ok(Identity::Anonymous);
    };
    match basic_credentials(headers, &http::header::PROXY_AUTHORIZATION) {
        Some((user, password)) => users
            .check(&user, &password)
            .await
            .ok_or(Failure::ProxyAuthRequired),
        None => Err(Failure::ProxyAuthRequired),
    }
}

/// Establishes who sent a registry request. `base` is what the surface knows already: on an
/// intercepted tunnel the proxy user from `Proxy-Authorization`, on `TLS_LISTEN` the user of a
/// client certificate.
pub async fn identify(
    state: &State,
    surface: Surface,
    headers: &HeaderMap,
    base: Option<Identity>,
    realm: String,
    audience: &str,
) -> Result<Client, Failure> {
    let mut client = Client::anonymous(realm);
    if let Some(identity) = base {
        client.presented = identity != Identity::Anonymous;
        client.identity = identity;
    }
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(client);
    };
    let unauthenticated = |client: &Client, message: &str| Failure::Unauthenticated {
        challenge: client.challenge(None),
        message: message.to_owned(),
    };
    let Ok(value) = value.to_str() else {
        return Err(unauthenticated(&client, "malformed Authorization header"));
    };
    if let Some(token) = parse_bearer(value) {
        match state.opened_tokens.open(&state.tokens, token, now_unix()) {
            Some(opened) if opened.audience == audience => {
                if opened.sub != Identity::Anonymous {
                    client.identity = opened.sub.clone();
                    client.presented = true;
                }
                client.upstream = opened.upstream.clone();
                client.bound_to = match surface {
                    Surface::Intercept => None,
                    Surface::Mirror => opened.bound_to.clone(),
                };
                if client.upstream.is_some() {
                    client.presented = true;
                }
                Ok(client)
            }
            Some(_) => Err(unauthenticated(&client, "token issued for another host")),
            // Not one of ours: on an intercepted tunnel it may be an upstream token the client
            // got itself; pass it upstream as the client's own credential.
            None if surface == Surface::Intercept => {
                client.upstream = HeaderValue::from_str(value)
                    .ok()
                    .map(ClientCredential::Header);
                client.presented = true;
                Ok(client)
            }
            None => Err(unauthenticated(&client, "invalid or expired token")),
        }
    } else if let Some((user, password)) = parse_basic(value) {
        match (&state.users, surface) {
            (Some(users), Surface::Mirror) => match users.check(&user, &password).await {
                Some(identity) => {
                    client.identity = identity;
                    client.presented = true;
                    Ok(client)
                }
                None => Err(unauthenticated(&client, "wrong user name or password")),
            },
            _ => {
                client.upstream = Some(ClientCredential::Basic {
                    user,
                    password: Secret::new(password),
                });
                client.presented = true;
                Ok(client)
            }
        }
    } else {
        Err(unauthenticated(&client, "unsupported Authorization scheme"))
    }
}

/// Upstream credentials from a mirror-mode token go only to the registries its scopes named
/// (path-prefix names such as `quay.io/org/app`); a token whose scopes name none is not bound.
/// Tokens issued on an intercepted tunnel were checked for their audience (the registry) already.
fn bound_registries(claims: &Claims) -> Option<Vec<RegistryHost>> {
    let named: Vec<RegistryHost> = claims
        .scopes
        .iter()
        .filter_map(|scope| scope.split(':').nth(1))
        .filter_map(|repo| repo.split_once('/').map(|(first, _)| first))
        .filter(|first| first.contains('.') || first.contains(':') || *first == "localhost")
        .filter_map(|first| RegistryHost::parse(first).ok())
        .collect();
    (!named.is_empty()).then_some(named)
}

/// A token as requests use it: opened once, then found by a hash lookup.
#[derive(Debug)]
pub struct OpenedToken {
    sub: Identity,
    upstream: Option<ClientCredential>,
    bound_to: Option<Vec<RegistryHost>>,
    audience: String,
    expires_at: u64,
}

/// Tokens kept opened at most.
const MAX_OPENED_TOKENS: usize = 4096;

/// Recently opened proxy tokens. Opening one (base64, AES-GCM, JSON) costs microseconds; clients
/// send the same token on every request of a pull, so a hit pays a hash lookup instead. Entries
/// are dropped when they expire, and the table is bounded.
#[derive(Default)]
pub struct OpenedTokens {
    map: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<OpenedToken>>>,
}

impl OpenedTokens {
    /// The opened token, or `None` if it is not one of ours or has expired.
    fn open(
        &self,
        key: &crate::access::token::TokenKey,
        token: &str,
        now: u64,
    ) -> Option<std::sync::Arc<OpenedToken>> {
        {
            let map = lock(&self.map);
            if let Some(opened) = map.get(token) {
                return (opened.expires_at > now).then(|| opened.clone());
            }
        }
        let claims = key.open(token, now)?;
        let opened = std::sync::Arc::new(OpenedToken {
            upstream: claims.upstream.as_ref().and_then(credential_from_secret),
            bound_to: bound_registries(&claims),
            sub: claims.sub,
            audience: claims.audience,
            expires_at: claims.expires_at,
        });
        let mut map = lock(&self.map);
        if map.len() >= MAX_OPENED_TOKENS {
            map.retain(|_, t| t.expires_at > now);
            if map.len() >= MAX_OPENED_TOKENS {
                map.clear();
            }
        }
        map.insert(token.to_owned(), opened.clone());
        Some(opened)
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn credential_from_secret(secret: &Secret) -> Option<ClientCredential> {
    let (user, password) = secret.expose().split_once(':')?;
    Some(ClientCredential::Basic {
        user: user.to_owned(),
        password: Secret::new(password),
    })
}

/// `GET`/`POST /token`: the registry token flow clients already implement (`docker login`,
/// `podman login`, `skopeo --creds`, `ctr --user`). On the mirror surface with client
/// authentication on, the credentials are a proxy user's (checked against `PROXY_HTPASSWD`);
/// otherwise they are the client's own upstream credentials, sealed into the token for `verify`
/// mode and checked by upstream when used. No credentials: an anonymous token.
pub async fn token_endpoint(
    state: &State,
    surface: Surface,
    base: Option<Identity>,
    audience: &str,
    req: http::Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    let (method, query, headers) = (&parts.method, parts.uri.query(), &parts.headers);
    let form = if method == Method::POST {
        let limited = http_body_util::Limited::new(incoming, MAX_TOKEN_BODY);
        match http_body_util::BodyExt::collect(limited).await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return Failure::client(ErrorCode::Unsupported, "token request body too large")
                    .into_response();
            }
        }
    } else {
        Bytes::new()
    };
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let request: TokenRequest = match parse_token_request(method, query, authorization, &form) {
        Ok(r) => r,
        Err(e) => {
            return token_error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let mut sub = base.unwrap_or(Identity::Anonymous);
    let mut upstream = None;
    if let Some(refresh) = &request.refresh_token {
        // A refresh token is one of our tokens: re-issue it with a new lifetime.
        match state.tokens.open(refresh.expose(), now_unix()) {
            Some(claims) if claims.audience == audience => {
                sub = claims.sub;
                upstream = claims.upstream;
            }
            _ => return token_error(StatusCode::UNAUTHORIZED, "invalid refresh token"),
        }
    } else if let (Some(user), Some(password)) = (&request.username, &request.password) {
        match (&state.users, surface) {
            (Some(users), Surface::Mirror) => match users.check(user, password.expose()).await {
                Some(identity) => sub = identity,
                None => {
                    return token_error(StatusCode::UNAUTHORIZED, "wrong user name or password");
                }
            },
            _ => upstream = Some(Secret::new(format!("{user}:{}", password.expose()))),
        }
    }
    let issued_at = now_unix();
    let claims = Claims {
        sub,
        upstream,
        audience: audience.to_owned(),
        scopes: request.scopes.clone(),
        issued_at,
        expires_at: issued_at + TOKEN_LIFETIME_SECS,
    };
    let token = state.tokens.mint(&claims);
    let issued = time::OffsetDateTime::from_unix_timestamp(issued_at as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    // No refresh token: `docker login` would keep it as a long-lived identity token, and ours
    // expire with the access token. Clients keep the user name and password instead.
    let json = token_response(&token, TOKEN_LIFETIME_SECS, &issued, None);
    let mut response = Response::new(body::full(Bytes::from(json)));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// Token endpoint errors are not registry errors: clients read the status.
fn token_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = text(status, &format!("{message}\n"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"registry-proxy\""),
        );
    }
    r
}

impl Ctx<'_> {
    fn rules_allow(&self, action: Action, name: &RepoName) -> bool {
        self.live
            .access
            .allows(&self.client.identity, action, &self.registry, name)
    }

    /// A refusal: anonymous clients that could log in are asked to (401 with our challenge), the
    /// rest are denied (403).
    fn refuse(&self, name: Option<&RepoName>, message: String) -> Failure {
        let could_log_in =
            !self.client.presented && (auth_on(self.state) || self.auth_mode() == AuthMode::Verify);
        if could_log_in {
            Failure::Unauthenticated {
                challenge: self.client.challenge(name.map(pull_scope).as_deref()),
                message: "authentication required".into(),
            }
        } else {
            Failure::denied(message)
        }
    }

    pub(crate) fn auth_mode(&self) -> AuthMode {
        self.live.auth_mode(&self.registry)
    }

    /// The credentials upstream requests for this client use: the client's own in `verify` mode
    /// (or none: anonymous), the proxy's central ones in `central` mode.
    pub(crate) fn upstream_auth(&self) -> UpstreamAuth {
        match self.auth_mode() {
            AuthMode::Central => UpstreamAuth::Central,
            AuthMode::Verify => match self.client.credential_for(&self.registry) {
                Some(c) => UpstreamAuth::Client(c.clone()),
                None => UpstreamAuth::Anonymous,
            },
        }
    }

    /// The rules' verdict on a route, before the cache is consulted.
    pub(crate) fn admit(&self, route: &Route) -> Result<(), Failure> {
        let is_read = self.method == Method::GET || self.method == Method::HEAD;
        match route {
            Route::Base => {
                let must_log_in = auth_on(self.state) || self.auth_mode() == AuthMode::Verify;
                if must_log_in && !self.client.presented {
                    return Err(Failure::Unauthenticated {
                        challenge: self.client.challenge(None),
                        message: "authentication required".into(),
                    });
                }
                Ok(())
            }
            Route::Catalog => {
                if auth_on(self.state) && !self.client.presented {
                    return Err(self.refuse(None, "catalog access denied".into()));
                }
                Ok(())
            }
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::TagsList { name }
            | Route::Referrers { name, .. }
            | Route::Upload { name, .. } => {
                let action = if is_read { Action::Pull } else { Action::Push };
                if self.rules_allow(action, name) {
                    return Ok(());
                }
                let verb = if is_read { "pull" } else { "push" };
                Err(self.refuse(
                    Some(name),
                    format!(
                        "{} may not {verb} {}/{name}",
                        self.client.identity.name(),
                        self.registry
                    ),
                ))
            }
        }
    }

    /// Upstream just served `name` with this client's upstream credentials (or none): remember
    /// that it accepts them, so the next hit needs no question.
    pub(crate) fn upstream_served(&self, name: &RepoName) {
        match self.upstream_auth() {
            UpstreamAuth::Central => {}
            UpstreamAuth::Anonymous => self.record_public(name, true),
            UpstreamAuth::Client(c) => {
                self.state
                    .verifier
                    .record(c.principal(), &self.registry, name, true)
            }
        }
    }

    /// Remembers whether upstream serves `name` anonymously, in memory and in the cache.
    fn record_public(&self, name: &RepoName, public: bool) {
        let verifier = &self.state.verifier;
        let before = verifier.known(Principal::Anonymous, &self.registry, name);
        verifier.record(Principal::Anonymous, &self.registry, name, public);
        if !matches!(before, Known::Fresh(p) | Known::Stale(p) if p == public) {
            self.state.cache.set_public(&self.registry, name, public);
        }
    }

    /// Before the proxy goes upstream for something it does not hold: the `fetch` permission.
    pub(crate) fn may_fetch(&self, name: &RepoName) -> Result<(), Failure> {
        if self.rules_allow(Action::Fetch, name) {
            return Ok(());
        }
        Err(self.refused_by_rules(self.refuse(
            Some(name),
            format!(
                "{} may read cached content of {}/{name} but not make the proxy fetch it",
                self.client.identity.name(),
                self.registry
            ),
        )))
    }

    /// Counts a refusal by the rules (or a request to log in) in the metrics.
    pub(crate) fn refused_by_rules(&self, refusal: Failure) -> Failure {
        if let Some(r) = Refusal::by_rules(refusal.status()) {
            self.state.metrics.refused(r);
        }
        refusal
    }

    /// Before any cached (or in-flight) byte of `name` goes to the client of a `verify`-mode
    /// registry: upstream must serve the repository anonymously (public), or have accepted this
    /// client's own credential for it. `probe` is the path of the object asked about (`HEAD`).
    pub(crate) async fn verify_cached(
        &self,
        name: &RepoName,
        probe: &str,
        accept: Option<&HeaderValue>,
    ) -> Result<(), Failure> {
        if self.auth_mode() != AuthMode::Verify {
            return Ok(());
        }
        let checked = self.verify_check(name, probe, accept).await;
        if let Err(refusal) = &checked
            && let Some(r) = Refusal::by_verify(refusal.status())
        {
            self.state.metrics.refused(r);
        }
        checked
    }

    async fn verify_check(
        &self,
        name: &RepoName,
        probe: &str,
        accept: Option<&HeaderValue>,
    ) -> Result<(), Failure> {
        let metrics = &self.state.metrics;
        let verifier = &self.state.verifier;
        let public = verifier.known(Principal::Anonymous, &self.registry, name);
        if public == Known::Fresh(true) {
            metrics.verify_check(&self.registry, VerifyResult::Remembered);
            return Ok(());
        }
        let credential = self.client.credential_for(&self.registry).cloned();
        let principal = credential.as_ref().map(ClientCredential::principal);
        let known = principal.map_or(Known::Unknown, |p| verifier.known(p, &self.registry, name));
        match known {
            Known::Fresh(true) => {
                metrics.verify_check(&self.registry, VerifyResult::Remembered);
                return Ok(());
            }
            Known::Fresh(false) => {
                metrics.verify_check(&self.registry, VerifyResult::Remembered);
                return Err(self.verify_denied(name, StatusCode::UNAUTHORIZED));
            }
            _ => {}
        }
        // Ask upstream: first whether the repository is public, then about this credential.
        let mut unavailable = false;
        if !matches!(public, Known::Fresh(false)) {
            match self
                .probe(name, probe, accept, UpstreamAuth::Anonymous)
                .await
            {
                Ok(status) if status.is_success() => {
                    self.record_public(name, true);
                    return Ok(());
                }
                Ok(status) if is_refusal(status) => self.record_public(name, false),
                _ => unavailable = true,
            }
        }
        // Upstream down and nothing fresh: a repository last seen public stays public (also
        // across restarts), so anonymous clients are served stale as before.
        let public_before = public.accepted()
            || (public == Known::Unknown && self.state.cache.was_public(&self.registry, name));
        let (Some(credential), Some(principal)) = (credential, principal) else {
            if unavailable && public_before {
                return Ok(());
            }
            return Err(self.refuse(
                Some(name),
                format!("{}/{name} is private upstream", self.registry),
            ));
        };
        match self
            .probe(name, probe, accept, UpstreamAuth::Client(credential))
            .await
        {
            Ok(status) if status.is_success() => {
                verifier.record(principal, &self.registry, name, true);
                Ok(())
            }
            Ok(status) if is_refusal(status) => {
                verifier.record(principal, &self.registry, name, false);
                Err(self.verify_denied(name, status))
            }
            // Upstream cannot say now: fall back to what it said before, however old.
            _ if known.accepted() || public_before => Ok(()),
            _ => Err(Failure::Upstream(
                crate::upstream::UpstreamError::Unreachable {
                    registry: self.registry.to_string(),
                    reason: "cannot check access while upstream is unavailable".into(),
                },
            )),
        }
    }

    fn verify_denied(&self, name: &RepoName, status: StatusCode) -> Failure {
        if status == StatusCode::FORBIDDEN {
            Failure::denied(format!(
                "upstream refused this credential for {}/{name}",
                self.registry
            ))
        } else {
            Failure::Unauthenticated {
                challenge: self.client.challenge(Some(&pull_scope(name))),
                message: format!(
                    "upstream did not accept this credential for {}/{name}",
                    self.registry
                ),
            }
        }
    }

    /// `HEAD probe` upstream with the given credentials; the status, or an error if upstream could
    /// not be asked.
    async fn probe(
        &self,
        name: &RepoName,
        probe: &str,
        accept: Option<&HeaderValue>,
        auth: UpstreamAuth,
    ) -> Result<StatusCode, crate::upstream::UpstreamError> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(ACCEPT, accept.clone());
        }
        let request = UpstreamRequest {
            registry: self.registry.clone(),
            method: Method::HEAD,
            path_and_query: probe.to_owned(),
            headers,
            body: body::empty(),
            scope: pull_scope(name),
            auth,
        };
        let metrics = &self.state.metrics;
        let response = match self.state.upstream.send(request).await {
            Ok(response) => response,
            // The realm refused the credential: upstream's "no", not an outage.
            Err(crate::upstream::UpstreamError::TokenDenied { status, .. })
                if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) =>
            {
                metrics.verify_check(&self.registry, VerifyResult::Refused);
                return Ok(status);
            }
            Err(e) => {
                metrics.verify_check(&self.registry, VerifyResult::Unavailable);
                return Err(e);
            }
        };
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            metrics.verify_check(&self.registry, VerifyResult::Unavailable);
            return Err(crate::upstream::UpstreamError::Unreachable {
                registry: self.registry.to_string(),
                reason: format!("answered {}", status.as_u16()),
            });
        }
        let result = if status.is_success() {
            VerifyResult::Accepted
        } else {
            VerifyResult::Refused
        };
        metrics.verify_check(&self.registry, result);
        Ok(status)
    }
}

/// Upstream statuses that mean "this credential may not read this".
fn is_refusal(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    )
}

impl Known {
    /// True if upstream accepted at some point (fresh or stale).
    fn accepted(self) -> bool {
        matches!(self, Known::Fresh(true) | Known::Stale(true))
    }
}

/// The `Accept` header that asks for every manifest type (for probes of manifests by digest).
pub(crate) fn any_manifest() -> HeaderValue {
    HeaderValue::from_static(
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws",
    )
}

/// Filters an upstream `_catalog` page down to the repositories this client may pull; the body is
/// rebuilt, so `Content-Length` is set anew.
pub(crate) fn filter_catalog(ctx: &Ctx<'_>, bytes: &[u8]) -> Option<Bytes> {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Catalog {
        repositories: Vec<String>,
    }
    let mut catalog: Catalog = serde_json::from_slice(bytes).ok()?;
    catalog.repositories.retain(|repo| {
        RepoName::parse(repo).is_ok_and(|name| ctx.rules_allow(Action::Pull, &name))
    });
    serde_json::to_vec(&catalog).ok().map(Bytes::from)
}

/// Sets a rebuilt body's length.
pub(crate) fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}
