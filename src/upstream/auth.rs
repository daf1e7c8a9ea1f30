//! Upstream authentication: the proxy answers `WWW-Authenticate` challenges itself — Bearer tokens
//! from the realm (cached per registry and scope until they expire) and Basic — with the central
//! credentials from `AUTH_REGISTRIES`, or anonymously.
//!
//! A registry names its token realm, so a registry must not be able to point central credentials
//! somewhere else: they go to a realm only over `https`, and only to the registry's own host and
//! port, to the host and port their entry names, or (Docker Hub's entries) to Hub's own realm
//! `https://auth.docker.io`. See [`realm_credential`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::{Client, UpstreamError};
use crate::body;
use crate::config::Credential;
use crate::registry::challenge::Challenge;
use crate::registry::host::RegistryHost;

/// Token responses larger than this are refused.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// Tokens are dropped this long before the realm says they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// `expires_in` when the realm gives none (the Docker token spec's default).
const DEFAULT_EXPIRES_IN: u64 = 60;

#[derive(Clone)]
struct CachedToken {
    header: HeaderValue,
    expires: Instant,
}

/// What a registry asked for the last time it challenged us.
#[derive(Clone)]
enum Scheme {
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Basic,
}

/// Docker Hub's names, any of which an `AUTH_REGISTRIES` entry may use for it.
const DOCKER_HUB_NAMES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "auth.docker.io",
];
/// Docker Hub's token realm host (port 443).
const DOCKER_HUB_REALM_HOST: &str = "auth.docker.io";

/// Whose credentials answer a challenge.
#[derive(Clone, Debug)]
pub enum Who {
    /// The central credentials for the registry, if any (else anonymous).
    Central,
    /// No credentials.
    Anonymous,
    /// A client's own user name and password; tokens are cached under the credential's hash.
    Client {
        credential: Credential,
        key: [u8; 32],
    },
}

impl Who {
    /// The answerer for an upstream request's [`UpstreamAuth`](super::UpstreamAuth). A forwarded
    /// header answers nothing itself: it counts as anonymous here.
    pub fn of(auth: &super::UpstreamAuth) -> Who {
        match auth {
            super::UpstreamAuth::Central => Who::Central,
            super::UpstreamAuth::Anonymous
            | super::UpstreamAuth::Client(super::ClientCredential::Header(_)) => Who::Anonymous,
            super::UpstreamAuth::Client(super::ClientCredential::Basic { user, password }) => {
                let raw = format!("{user}:{}", password.expose());
                let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
                let mut key = [0u8; 32];
                key.copy_from_slice(digest.as_ref());
                Who::Client {
                    credential: Credential {
                        host: String::new(),
                        username: user.clone(),
                        password: password.clone(),
                    },
                    key,
                }
            }
        }
    }

    /// The token cache's key for this answerer.
    fn holder(&self) -> Holder {
        match self {
            Who::Central => Holder::Central,
            Who::Anonymous => Holder::Anonymous,
            Who::Client { key, .. } => Holder::Client(*key),
        }
    }
}

/// Whose token a cached token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Holder {
    Central,
    Anonymous,
    Client([u8; 32]),
}

/// Client tokens kept at most (central and anonymous ones are bounded by registries × scopes).
const MAX_TOKENS: usize = 16_384;

/// Answers challenges and remembers tokens. One per proxy; shared by all requests.
pub struct Authenticator {
    /// `AUTH_REGISTRIES`; replaced as a whole when the configuration is reloaded (SIGHUP).
    credentials: std::sync::RwLock<Arc<Vec<Credential>>>,
    /// Registries configured to be intercepted (`REGISTRIES`); only they (and Docker Hub) may use
    /// an entry that names their realm's host rather than the registry.
    configured: Vec<RegistryHost>,
    /// Invariant: keys are (registry, scope, holder) with scope `""` for registry-wide tokens.
    tokens: Mutex<HashMap<(RegistryHost, String, Holder), CachedToken>>,
    schemes: Mutex<HashMap<RegistryHost, Scheme>>,
}

impl Authenticator {
    /// `configured` is `REGISTRIES` (Docker Hub is always included).
    pub fn new(credentials: Vec<Credential>, configured: Vec<RegistryHost>) -> Authenticator {
        Authenticator {
            credentials: std::sync::RwLock::new(Arc::new(credentials)),
            configured,
            tokens: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
        }
    }

    /// The central credentials as last loaded.
    fn credentials(&self) -> Arc<Vec<Credential>> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the central credentials (a configuration reload). Tokens fetched with the old ones
    /// are dropped, so the next request asks the realm with the new ones.
    pub fn set_credentials(&self, credentials: Vec<Credential>) {
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(credentials);
        lock(&self.tokens).retain(|(_, _, holder), _| *holder != Holder::Central);
    }

    /// The credential a registry gets for Basic auth (sent to the registry itself).
    fn credential(&self, registry: &RegistryHost) -> Option<Credential> {
        own_credential(&self.credentials(), registry).cloned()
    }

    /// True if the registry has challenged us before (so a request with a body can be authorised
    /// up front).
    pub fn knows(&self, registry: &RegistryHost) -> bool {
        lock(&self.schemes).contains_key(registry)
    }

    /// The `Authorization` to send with a request for `scope`, if we have one ready.
    pub fn authorization(
        &self,
        registry: &RegistryHost,
        scope: &str,
        who: &Who,
    ) -> Option<HeaderValue> {
        let scheme = lock(&self.schemes).get(registry).cloned()?;
        match scheme {
            Scheme::Basic => match who {
                Who::Central => self.credential(registry).as_ref().map(basic_header),
                Who::Anonymous => None,
                Who::Client { credential, .. } => Some(basic_header(credential)),
            },
            Scheme::Bearer { .. } => {
                let mut tokens = lock(&self.tokens);
                let key = (registry.clone(), scope.to_owned(), who.holder());
                match tokens.get(&key) {
                    Some(t) if t.expires > Instant::now() => Some(t.header.clone()),
                    Some(_) => {
                        tokens.remove(&key);
                        None
                    }
                    None => None,
                }
            }
        }
    }

    /// Answers a 401 challenge: fetches a token (Bearer) or prepares Basic credentials. Returns
    /// false if there is nothing that could make a retry succeed.
    pub async fn answer(
        &self,
        client: &Client,
        registry: &RegistryHost,
        challenges: &[Challenge],
        scope: &str,
        who: &Who,
    ) -> Result<bool, UpstreamError> {
        // Prefer Bearer: it works anonymously and keeps passwords off the registry connection.
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer {
                realm,
                service,
                scope: challenge_scope,
            } => Some((realm, service, challenge_scope)),
            Challenge::Basic { .. } => None,
        });
        if let Some((realm, service, challenge_scope)) = bearer {
            lock(&self.schemes).insert(
                registry.clone(),
                Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                },
            );
            let scope_to_ask = if scope.is_empty() {
                challenge_scope.as_deref().unwrap_or("")
            } else {
                scope
            };
            let header = self
                .fetch_token(
                    client,
                    registry,
                    realm,
                    service.as_deref(),
                    scope_to_ask,
                    who,
                )
                .await?;
            self.keep(registry, scope, who, header);
            return Ok(true);
        }
        if challenges
            .iter()
            .any(|c| matches!(c, Challenge::Basic { .. }))
        {
            lock(&self.schemes).insert(registry.clone(), Scheme::Basic);
            return Ok(match who {
                Who::Central => self.credential(registry).is_some(),
                Who::Anonymous => false,
                Who::Client { .. } => true,
            });
        }
        Ok(false)
    }

    /// Learns the scheme from a fresh challenge when `authorization` had nothing; used for requests
    /// with bodies, which cannot be replayed after a 401.
    pub async fn prepare(
        &self,
        client: &Client,
        registry: &RegistryHost,
        scope: &str,
        who: &Who,
    ) -> Result<(), UpstreamError> {
        let scheme = lock(&self.schemes).get(registry).cloned();
        if let Some(Scheme::Bearer { realm, service }) = scheme {
            let header = self
                .fetch_token(client, registry, &realm, service.as_deref(), scope, who)
                .await?;
            self.keep(registry, scope, who, header);
        }
        Ok(())
    }

    /// Caches a token; client tokens are bounded (expired ones go first, then all of them).
    fn keep(&self, registry: &RegistryHost, scope: &str, who: &Who, token: CachedToken) {
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, t| t.expires > now);
            if tokens.len() >= MAX_TOKENS {
                tokens.retain(|(_, _, holder), _| !matches!(holder, Holder::Client(_)));
            }
        }
        tokens.insert((registry.clone(), scope.to_owned(), who.holder()), token);
    }

    async fn fetch_token(
        &self,
        client: &Client,
        registry: &RegistryHost,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        who: &Who,
    ) -> Result<CachedToken, UpstreamError> {
        let token_err = |reason: String| UpstreamError::Token {
            realm: realm.to_owned(),
            reason,
        };
        let realm_uri: Uri = realm
            .parse()
            .map_err(|_| token_err("realm is not a URL".into()))?;
        if !matches!(realm_uri.scheme_str(), Some("https" | "http")) {
            return Err(token_err("realm is not an http(s) URL".into()));
        }
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", encode(service)));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(format!("scope={}", encode(s)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = if query.is_empty() {
            realm.to_owned()
        } else {
            format!("{realm}{sep}{}", query.join("&"))
        };
        let mut request = Request::builder().method(Method::GET).uri(url.as_str());
        let central = self.credentials();
        let credential = match who {
            Who::Central => {
                let credentials = &central;
                match realm_credential(credentials, &self.configured, registry, &realm_uri) {
                    RealmCredential::Send(cred) => Some(cred),
                    RealmCredential::Withhold(why) => {
                        tracing::info!(
                            registry = %registry,
                            realm = %realm_for_log(&realm_uri),
                            why,
                            "central credentials withheld from the token realm; asking for a token anonymously"
                        );
                        None
                    }
                    RealmCredential::Anonymous => None,
                }
            }
            Who::Anonymous => None,
            // The client's own credentials go to the realm its registry named, over https only.
            Who::Client { credential, .. } => {
                (realm_uri.scheme_str() == Some("https")).then_some(credential)
            }
        };
        if let Some(cred) = credential {
            request = request.header(http::header::AUTHORIZATION, basic_header(cred));
        }
        let request = request
            .body(body::empty())
            .map_err(|e| token_err(e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| token_err(super::describe(&e)))?;
        let status = response.status();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_TOKEN_RESPONSE);
        let bytes: Bytes = limited
            .collect()
            .await
            .map_err(|e| token_err(e.to_string()))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(UpstreamError::TokenDenied {
                realm: realm.to_owned(),
                status,
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| token_err(format!("bad token response: {e}")))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err("no token in response".into()))?;
        let header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| token_err("token has characters not allowed in a header".into()))?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(DEFAULT_EXPIRES_IN).max(1));
        let expires = Instant::now()
            + lifetime
                .saturating_sub(EXPIRY_MARGIN)
                .max(Duration::from_secs(1));
        Ok(CachedToken { header, expires })
    }
}

/// What a token request to a realm carries.
#[derive(Debug, PartialEq, Eq)]
enum RealmCredential<'a> {
    /// This credential, as Basic auth.
    Send(&'a Credential),
    /// Nothing: a credential exists but the realm is not a place it may go (the reason, for the log).
    Withhold(&'static str),
    /// Nothing: there is no credential for this registry or realm.
    Anonymous,
}

/// Decides whether central credentials go with a token request to `realm` for `registry`:
/// - only over `https`;
/// - the registry's own entry (by its name, its upstream authority, or for Docker Hub any of Hub's
///   names) goes to the registry's own upstream host:port, to the host:port the entry names
///   (port 443 when it names none), and for Docker Hub to `https://auth.docker.io`;
/// - an entry naming the realm's host:port exactly (the seed's `auth.docker.io:user:pass` form)
///   goes to that realm for Docker Hub and configured registries (`configured`), never for a
///   registry reached only through `MIRROR_ANY`; Hub's names are Hub's alone.
fn realm_credential<'a>(
    credentials: &'a [Credential],
    configured: &[RegistryHost],
    registry: &RegistryHost,
    realm: &Uri,
) -> RealmCredential<'a> {
    let own = own_credential(credentials, registry);
    let endpoint = realm
        .host()
        .map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        })
        .map(|host| {
            let https = realm.scheme_str() == Some("https");
            let port = realm.port_u16().unwrap_or(if https { 443 } else { 80 });
            (https, host, port)
        });
    let named = endpoint.as_ref().and_then(|(_, host, port)| {
        credentials
            .iter()
            .find(|c| host_port(&c.host).is_some_and(|(h, p)| h == *host && p == *port))
    });
    // An entry for the realm's host on another port counts as withheld, for the log.
    let names_realm_host = endpoint.as_ref().is_some_and(|(_, host, _)| {
        credentials
            .iter()
            .any(|c| host_port(&c.host).is_some_and(|(h, _)| h == *host))
    });
    if own.is_none() && !names_realm_host {
        return RealmCredential::Anonymous;
    }
    let Some((https, host, port)) = endpoint else {
        return RealmCredential::Withhold("the realm has no host");
    };
    if !https {
        return RealmCredential::Withhold("the realm is not https");
    }
    if let Some(cred) = own {
        let to_registry = host == registry.upstream_host() && port == registry.upstream_port();
        let to_named = host_port(&cred.host).is_some_and(|(h, p)| h == host && p == port);
        let to_hub_realm = registry.is_docker_hub() && host == DOCKER_HUB_REALM_HOST && port == 443;
        if to_registry || to_named || to_hub_realm {
            return RealmCredential::Send(cred);
        }
    }
    if let Some(cred) = named {
        let hub_entry = is_docker_hub_name(&cred.host);
        let may_use = registry.is_docker_hub() || configured.contains(registry);
        if may_use && (!hub_entry || registry.is_docker_hub()) {
            return RealmCredential::Send(cred);
        }
    }
    RealmCredential::Withhold(
        "the realm is neither the registry's host and port nor a host named in AUTH_REGISTRIES for it",
    )
}

/// The registry's own entry: by its canonical name, its upstream authority, or for Docker Hub any
/// of Hub's names.
fn own_credential<'a>(
    credentials: &'a [Credential],
    registry: &RegistryHost,
) -> Option<&'a Credential> {
    let mut names = vec![registry.to_string(), registry.upstream_authority()];
    if registry.is_docker_hub() {
        names.extend(DOCKER_HUB_NAMES.map(String::from));
    }
    names
        .iter()
        .find_map(|n| credentials.iter().find(|c| c.host == *n))
}

fn is_docker_hub_name(entry_host: &str) -> bool {
    host_port(entry_host).is_some_and(|(h, p)| p == 443 && DOCKER_HUB_NAMES.contains(&h.as_str()))
}

/// An entry's host as (lower-case host without brackets, port), the port 443 when none is named.
fn host_port(entry_host: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = entry_host.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match entry_host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (entry_host, None),
        }
    };
    let port = match port {
        None => 443,
        Some(p) => p.parse().ok()?,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// A realm for a log line: scheme, host, port and path, no user information and no query.
fn realm_for_log(realm: &Uri) -> String {
    let port = realm
        .port_u16()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!(
        "{}://{}{port}{}",
        realm.scheme_str().unwrap_or(""),
        realm.host().unwrap_or(""),
        realm.path()
    )
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn basic_header(cred: &Credential) -> HeaderValue {
    let raw = format!("{}:{}", cred.username, cred.password.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn cred(host: &str) -> Credential {
        Credential {
            host: host.to_owned(),
            username: format!("user-of-{host}"),
            password: Secret::new("pw"),
        }
    }

    fn host(s: &str) -> RegistryHost {
        RegistryHost::parse(s).unwrap()
    }

    /// (entries, registry, realm, the entry whose credential is sent or None)
    type Case<'a> = (&'a [&'a str], &'a str, &'a str, Option<&'a str>);

    #[test]
    fn credentials_go_only_to_realms_they_belong_to() {
        let cases: &[Case] = &[
            // The registry's own host and port.
            (
                &["reg.test"],
                "reg.test",
                "https://reg.test/token",
                Some("reg.test"),
            ),
            (
                &["reg.test"],
                "reg.test",
                "https://reg.test:443/token",
                Some("reg.test"),
            ),
            (
                &["reg.test:5000"],
                "reg.test:5000",
                "https://reg.test:5000/token",
                Some("reg.test:5000"),
            ),
            // Another port of the same host, plain http, another host: nothing.
            (
                &["reg.test"],
                "reg.test",
                "https://reg.test:8443/token",
                None,
            ),
            (
                &["reg.test:5000"],
                "reg.test:5000",
                "https://reg.test/token",
                None,
            ),
            (&["reg.test"], "reg.test", "http://reg.test/token", None),
            (&["reg.test"], "reg.test", "http://reg.test:443/token", None),
            (&["reg.test"], "reg.test", "https://evil.test/token", None),
            (
                &["reg.test"],
                "reg.test",
                "https://reg.test.evil.test/token",
                None,
            ),
            // An entry naming the realm host (port 443 unless it names one).
            (
                &["auth.test"],
                "reg.test",
                "https://auth.test/token",
                Some("auth.test"),
            ),
            (
                &["auth.test"],
                "reg.test",
                "https://auth.test:8443/token",
                None,
            ),
            (&["auth.test"], "reg.test", "http://auth.test/token", None),
            (
                &["auth.test:8443"],
                "reg.test",
                "https://auth.test:8443/token",
                Some("auth.test:8443"),
            ),
            (
                &["auth.test:8443"],
                "reg.test",
                "https://auth.test/token",
                None,
            ),
            (
                &["reg.test", "auth.test"],
                "reg.test",
                "https://auth.test/token",
                Some("auth.test"),
            ),
            // ... but not for a registry that is not configured (MIRROR_ANY).
            (
                &["auth.test"],
                "other.test",
                "https://auth.test/token",
                None,
            ),
            // Docker Hub: any of its names, to its own realm.
            (
                &["docker.io"],
                "docker.io",
                "https://auth.docker.io/token",
                Some("docker.io"),
            ),
            (
                &["index.docker.io"],
                "docker.io",
                "https://auth.docker.io/token",
                Some("index.docker.io"),
            ),
            (
                &["registry-1.docker.io"],
                "docker.io",
                "https://auth.docker.io/token",
                Some("registry-1.docker.io"),
            ),
            (
                &["auth.docker.io"],
                "docker.io",
                "https://auth.docker.io/token",
                Some("auth.docker.io"),
            ),
            (
                &["docker.io"],
                "docker.io",
                "https://registry-1.docker.io/token",
                Some("docker.io"),
            ),
            (
                &["auth.docker.io"],
                "docker.io",
                "http://auth.docker.io/token",
                None,
            ),
            (
                &["auth.docker.io"],
                "docker.io",
                "https://auth.docker.io:8443/token",
                None,
            ),
            (&["docker.io"], "docker.io", "https://evil.test/token", None),
            // Hub's names are Hub's alone, even when another registry names Hub's realm.
            (
                &["auth.docker.io"],
                "reg.test",
                "https://auth.docker.io/token",
                None,
            ),
            (&["docker.io"], "reg.test", "https://docker.io/token", None),
            // IPv6 literals.
            (
                &["[::1]:5000"],
                "[::1]:5000",
                "https://[::1]:5000/token",
                Some("[::1]:5000"),
            ),
            (
                &["[::1]:5000"],
                "[::1]:5000",
                "https://[::1]:5001/token",
                None,
            ),
            // No credential at all.
            (&[], "reg.test", "https://reg.test/token", None),
        ];
        let configured = vec![host("reg.test"), host("reg.test:5000"), host("[::1]:5000")];
        for (entries, registry, realm, want) in cases {
            let credentials: Vec<Credential> = entries.iter().map(|h| cred(h)).collect();
            let realm_uri: Uri = realm.parse().unwrap();
            let got = realm_credential(&credentials, &configured, &host(registry), &realm_uri);
            match (want, &got) {
                (Some(w), RealmCredential::Send(c)) => {
                    assert_eq!(c.host, *w, "{entries:?} {registry} {realm}")
                }
                (None, RealmCredential::Withhold(_)) if !entries.is_empty() => {}
                (None, RealmCredential::Anonymous) if entries.is_empty() => {}
                _ => panic!("{entries:?} {registry} {realm}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn realm_in_logs_has_no_query_or_user_information() {
        let realm: Uri = "https://u:p@auth.test:8443/token?secret=1".parse().unwrap();
        assert_eq!(realm_for_log(&realm), "https://auth.test:8443/token");
    }
}
