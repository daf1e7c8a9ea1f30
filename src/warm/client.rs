//! A registry client for the proxy's plain-HTTP mirror port, speaking path-prefix mode
//! (`/v2/<registry>/<repo>/…`) as any client would. When the proxy challenges (client
//! authentication on), it logs in the way registry clients do: `Bearer` → a token from the realm
//! with the user's `Basic` credentials, `Basic` → the credentials themselves. Credentials go only
//! to the proxy's own host and port.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::WarmError;
use crate::body::{self, Body};
use crate::registry::challenge::{Challenge, parse_www_authenticate};
use crate::secret::Secret;

/// Largest token response read.
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// A user and password for the proxy (its `PROXY_HTPASSWD` users).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

impl Credentials {
    fn basic(&self) -> Option<HeaderValue> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.user,
            self.password.expose()
        ));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

pub(super) struct MirrorClient {
    http: hyper_util::client::legacy::Client<HttpConnector, Body>,
    /// `host:port` of the proxy's plain listener.
    authority: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value in use (a token, or Basic), once the proxy asked for one.
    auth: Mutex<Option<HeaderValue>>,
    /// Longest wait for a response head.
    timeout: Duration,
}

impl MirrorClient {
    pub(super) fn new(
        authority: String,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> MirrorClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        MirrorClient {
            http,
            authority,
            credentials,
            auth: Mutex::new(None),
            timeout,
        }
    }

    /// Sends `method path` (logging in and retrying once if the proxy challenges); the response
    /// with its body unread.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, WarmError> {
        let response = self.send_once(&method, path, accept).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        self.login(&challenges).await?;
        let retried = self.send_once(&method, path, accept).await?;
        if retried.status() == StatusCode::UNAUTHORIZED {
            return Err(WarmError::Auth(
                "the proxy refused the credentials (check --user and the password)".into(),
            ));
        }
        Ok(retried)
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, WarmError> {
        let uri = format!("http://{}{path}", self.authority);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(HOST, &self.authority)
            .header(
                http::header::USER_AGENT,
                concat!("registry-proxy-warm/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(accept) = accept {
            req = req.header(ACCEPT, accept);
        }
        let auth = lock(&self.auth).clone();
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let req = req
            .body(body::empty())
            .map_err(|e| WarmError::Request(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.http.request(req)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(WarmError::Request(format!(
                "cannot reach the proxy at {}: {}",
                self.authority,
                error_chain(&e)
            ))),
            Err(_) => Err(WarmError::Request(format!(
                "the proxy at {} did not answer within {:?}",
                self.authority, self.timeout
            ))),
        }
    }

    /// Answers the proxy's challenge: a token from its realm, or Basic credentials.
    async fn login(&self, challenges: &[Challenge]) -> Result<(), WarmError> {
        let Some(credentials) = &self.credentials else {
            return Err(WarmError::Auth(
                "the proxy asks for a login: pass --user (and the password on stdin with --password-stdin) or set REGISTRY_PROXY_USER and REGISTRY_PROXY_PASSWORD".into(),
            ));
        };
        let basic = credentials.basic().ok_or_else(|| {
            WarmError::Auth("the user name or password cannot go in a header".into())
        })?;
        // The first challenge understood decides (a registry lists its preferred one first).
        match challenges.first() {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let token = self
                    .token(realm, service.as_deref(), scope.as_deref(), &basic)
                    .await?;
                *lock(&self.auth) = Some(token);
                Ok(())
            }
            Some(Challenge::Basic { .. }) => {
                *lock(&self.auth) = Some(basic);
                Ok(())
            }
            None => Err(WarmError::Auth(
                "the proxy answered 401 without a challenge this client understands".into(),
            )),
        }
    }

    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        basic: &HeaderValue,
    ) -> Result<HeaderValue, WarmError> {
        // Credentials go to the proxy itself only.
        let Some(rest) = realm.strip_prefix("http://") else {
            return Err(WarmError::Auth(format!(
                "the proxy's token realm is not on its plain port ({realm}); not sending credentials there"
            )));
        };
        let (authority, realm_path) = rest.split_once('/').unwrap_or((rest, ""));
        if !authority.eq_ignore_ascii_case(&self.authority) {
            return Err(WarmError::Auth(format!(
                "the token realm {realm} is not the proxy at {}; not sending credentials there",
                self.authority
            )));
        }
        let mut query = Vec::new();
        for (name, value) in [("service", service), ("scope", scope)] {
            if let Some(value) = value {
                query.push(format!(
                    "{name}={}",
                    percent_encoding::utf8_percent_encode(
                        value,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ));
            }
        }
        let path = if query.is_empty() {
            format!("/{realm_path}")
        } else {
            format!("/{realm_path}?{}", query.join("&"))
        };
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{}{path}", self.authority))
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, basic.clone())
            .body(body::empty())
            .map_err(|e| WarmError::Request(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| WarmError::Auth("the token endpoint did not answer".into()))?
            .map_err(|e| WarmError::Auth(format!("token endpoint: {}", error_chain(&e))))?;
        let status = response.status();
        let bytes = read_limited(response, MAX_TOKEN_BODY, self.timeout).await?;
        if status != StatusCode::OK {
            return Err(WarmError::Auth(format!(
                "the proxy refused the login ({status}): {}",
                String::from_utf8_lossy(&bytes).trim()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| WarmError::Auth(format!("token response: {e}")))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .ok_or_else(|| WarmError::Auth("token response has no token".into()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| WarmError::Auth("token is not a header value".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// A whole body of at most `limit` bytes.
pub(super) async fn read_limited(
    response: Response<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, WarmError> {
    let limited = http_body_util::Limited::new(response.into_body(), limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(WarmError::Request(format!("response body: {e}"))),
        Err(_) => Err(WarmError::Request(format!(
            "response body did not arrive within {timeout:?}"
        ))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
