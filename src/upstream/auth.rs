//! Upstream authentication: the proxy answers `WWW-Authenticate` challenges itself — Bearer tokens
//! from the realm (cached per registry and scope until they expire) and Basic — with the central
//! credentials from `AUTH_REGISTRIES`, or anonymously.

use std::collections::HashMap;
use std::sync::Mutex;
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

/// Answers challenges and remembers tokens. One per proxy; shared by all requests.
pub struct Authenticator {
    credentials: Vec<Credential>,
    /// Invariant: keys are (registry, scope) with scope `""` for registry-wide tokens.
    tokens: Mutex<HashMap<(RegistryHost, String), CachedToken>>,
    schemes: Mutex<HashMap<RegistryHost, Scheme>>,
}

impl Authenticator {
    pub fn new(credentials: Vec<Credential>) -> Authenticator {
        Authenticator {
            credentials,
            tokens: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
        }
    }

    /// The credential for a registry: by its canonical name, its upstream host, or (for Bearer) its
    /// realm's host — so the seed's `auth.docker.io:user:pass` keeps working.
    fn credential(&self, registry: &RegistryHost, realm_host: Option<&str>) -> Option<&Credential> {
        let mut names = vec![registry.to_string(), registry.upstream_authority()];
        if registry.is_docker_hub() {
            names.extend(
                [
                    "docker.io",
                    "index.docker.io",
                    "registry-1.docker.io",
                    "auth.docker.io",
                ]
                .map(String::from),
            );
        }
        if let Some(realm) = realm_host {
            names.push(realm.to_ascii_lowercase());
        }
        names
            .iter()
            .find_map(|n| self.credentials.iter().find(|c| c.host == *n))
    }

    /// True if the registry has challenged us before (so a request with a body can be authorised
    /// up front).
    pub fn knows(&self, registry: &RegistryHost) -> bool {
        lock(&self.schemes).contains_key(registry)
    }

    /// The `Authorization` to send with a request for `scope`, if we have one ready.
    pub fn authorization(&self, registry: &RegistryHost, scope: &str) -> Option<HeaderValue> {
        let scheme = lock(&self.schemes).get(registry).cloned()?;
        match scheme {
            Scheme::Basic => self.credential(registry, None).map(basic_header),
            Scheme::Bearer { .. } => {
                let mut tokens = lock(&self.tokens);
                let key = (registry.clone(), scope.to_owned());
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
                .fetch_token(client, registry, realm, service.as_deref(), scope_to_ask)
                .await?;
            lock(&self.tokens).insert((registry.clone(), scope.to_owned()), header);
            return Ok(true);
        }
        if challenges
            .iter()
            .any(|c| matches!(c, Challenge::Basic { .. }))
        {
            lock(&self.schemes).insert(registry.clone(), Scheme::Basic);
            return Ok(self.credential(registry, None).is_some());
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
    ) -> Result<(), UpstreamError> {
        let scheme = lock(&self.schemes).get(registry).cloned();
        if let Some(Scheme::Bearer { realm, service }) = scheme {
            let header = self
                .fetch_token(client, registry, &realm, service.as_deref(), scope)
                .await?;
            lock(&self.tokens).insert((registry.clone(), scope.to_owned()), header);
        }
        Ok(())
    }

    async fn fetch_token(
        &self,
        client: &Client,
        registry: &RegistryHost,
        realm: &str,
        service: Option<&str>,
        scope: &str,
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
        if let Some(cred) = self.credential(registry, realm_uri.host()) {
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
