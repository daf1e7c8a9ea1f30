//! The proxy's own bearer tokens for the registry token flow (mirror mode): the client logs in at the
//! proxy's token endpoint, gets a token sealed with a key only the proxy (and its replicas) hold, and
//! presents it on every registry request.
//!
//! A token is `base64url(nonce ‖ AES-256-GCM(JSON claims) ‖ tag)` with a random 96-bit nonce: it
//! cannot be read or altered without the key, which lives in `CA_DIR/token.key` (32 random bytes,
//! mode 0600, created on first start), so tokens survive restarts and are honoured by every replica
//! sharing the CA volume. Also here: the token endpoint's request parser (both forms of the
//! distribution token spec) and its JSON response.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::percent_decode;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::identity::Identity;
use crate::registry::basic::parse_basic;
use crate::secret::Secret;

/// File name of the key in `CA_DIR`.
pub const KEY_FILE: &str = "token.key";
/// Key length in bytes (AES-256).
const KEY_LEN: usize = 32;
/// Longest token [`TokenKey::open`] looks at, in bytes.
pub const MAX_TOKEN_LEN: usize = 8192;
/// Largest sealed claims [`TokenKey::mint`] produces, so its tokens stay under [`MAX_TOKEN_LEN`].
const MAX_CLAIMS_JSON: usize = MAX_TOKEN_LEN / 4 * 3 - NONCE_LEN - TAG_LEN;
const TAG_LEN: usize = 16;
/// Binds tokens to this use of the key.
const AAD: &[u8] = b"registry-proxy token v1";

/// Why the token key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token key {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "token key {} is {len} bytes long, expected {KEY_LEN}; remove it to have a new one created (outstanding tokens become invalid)",
        .path.display()
    )]
    WrongLength { path: PathBuf, len: usize },
    #[error("no randomness available for a new token key")]
    Random,
}

/// The key tokens are sealed with.
pub struct TokenKey {
    /// Invariant: `Some` (AES-256 accepts every 32-byte key; `None` would only refuse all tokens).
    key: Option<LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([REDACTED])")
    }
}

/// What a token says.
#[derive(Clone, Debug)]
pub struct Claims {
    /// Who logged in.
    pub sub: Identity,
    /// The client's own upstream credential (`user:password`), for registries in `verify` mode.
    pub upstream: Option<Secret>,
    /// The host the token was issued for (intercepted registry or the proxy's `Host`); the verifier
    /// compares it with the request's.
    pub audience: String,
    /// The `repository:name:actions` scopes requested (informational: access is decided per request
    /// by the rules).
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds; the token is refused from this second on.
    pub expires_at: u64,
}

/// The sealed JSON form of [`Claims`], short keys.
#[derive(Serialize, Deserialize)]
struct Wire {
    /// The user; absent for [`Identity::Anonymous`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    up: Option<String>,
    aud: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scp: Vec<String>,
    iat: u64,
    exp: u64,
}

impl TokenKey {
    /// Loads `CA_DIR/token.key`, or creates it (mode 0600) if it does not exist. Replicas starting
    /// together on one volume end up with the same key: the file appears atomically, and a replica
    /// that loses the race reads the winner's.
    pub fn load_or_create(ca_dir: &Path) -> Result<TokenKey, TokenError> {
        let path = ca_dir.join(KEY_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TokenError::Io { path, source }
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                crate::tls::restrict_key_permissions(&path, "token key").map_err(io(&path))?;
                return TokenKey::from_file_bytes(&path, &bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        std::fs::create_dir_all(ca_dir).map_err(io(ca_dir))?;
        let rng = SystemRandom::new();
        let mut bytes = [0u8; KEY_LEN];
        rng.fill(&mut bytes).map_err(|_| TokenError::Random)?;
        let mut suffix = [0u8; 8];
        rng.fill(&mut suffix).map_err(|_| TokenError::Random)?;
        let tmp = ca_dir.join(format!(
            ".{KEY_FILE}.{}.{}",
            std::process::id(),
            u64::from_le_bytes(suffix)
        ));
        write_private(&tmp, &bytes).map_err(io(&tmp))?;
        // A hard link appears whole and fails if the name exists: first replica wins.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created a new token key");
                Ok(TokenKey::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                TokenKey::from_file_bytes(&path, &bytes)
            }
            // File systems without hard links: create the file in place.
            Err(_) => match write_private(&path, &bytes) {
                Ok(()) => Ok(TokenKey::from_bytes(&bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let bytes = std::fs::read(&path).map_err(io(&path))?;
                    TokenKey::from_file_bytes(&path, &bytes)
                }
                Err(e) => Err(io(&path)(e)),
            },
        }
    }

    /// A random key held only in memory (tests, single-process use).
    pub fn ephemeral() -> TokenKey {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; KEY_LEN];
        if rng.fill(&mut bytes).is_err() {
            bytes = fallback_nonce_material();
        }
        TokenKey::from_bytes(&bytes)
    }

    fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<TokenKey, TokenError> {
        let key: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| TokenError::WrongLength {
            path: path.to_owned(),
            len: bytes.len(),
        })?;
        Ok(TokenKey::from_bytes(key))
    }

    fn from_bytes(bytes: &[u8; KEY_LEN]) -> TokenKey {
        TokenKey {
            key: UnboundKey::new(&AES_256_GCM, bytes)
                .ok()
                .map(LessSafeKey::new),
            rng: SystemRandom::new(),
        }
    }

    /// Seals `claims` into a token. Scopes are dropped (they are informational) if they would make
    /// the token longer than [`MAX_TOKEN_LEN`]; an empty string (which [`TokenKey::open`] refuses)
    /// results only if the claims are still too large without them.
    pub fn mint(&self, claims: &Claims) -> String {
        let Some(key) = &self.key else {
            return String::new();
        };
        let mut wire = Wire {
            sub: match &claims.sub {
                Identity::Anonymous => None,
                Identity::User(name) => Some(name.clone()),
            },
            up: claims.upstream.as_ref().map(|s| s.expose().to_owned()),
            aud: claims.audience.clone(),
            scp: claims.scopes.clone(),
            iat: claims.issued_at,
            exp: claims.expires_at,
        };
        let mut json = serde_json::to_vec(&wire).unwrap_or_default();
        while json.len() > MAX_CLAIMS_JSON && wire.scp.pop().is_some() {
            json = serde_json::to_vec(&wire).unwrap_or_default();
        }
        if json.is_empty() || json.len() > MAX_CLAIMS_JSON {
            return String::new();
        }
        let mut nonce = [0u8; NONCE_LEN];
        if self.rng.fill(&mut nonce).is_err() {
            nonce.copy_from_slice(&fallback_nonce_material()[..NONCE_LEN]);
        }
        let mut sealed = Vec::with_capacity(NONCE_LEN + json.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        let sealed_ok = key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut json,
            )
            .is_ok();
        if !sealed_ok {
            return String::new();
        }
        sealed.extend_from_slice(&json);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    /// The claims of a token this key sealed, if it is intact and `now_unix` is before its expiry.
    /// Never panics; refuses anything longer than [`MAX_TOKEN_LEN`].
    pub fn open(&self, token: &str, now_unix: u64) -> Option<Claims> {
        let key = self.key.as_ref()?;
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut sealed = URL_SAFE_NO_PAD.decode(token).ok()?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let mut ciphertext = sealed.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&sealed).ok()?;
        let json = key
            .open_in_place(nonce, Aad::from(AAD), &mut ciphertext)
            .ok()?;
        let wire: Wire = serde_json::from_slice(json).ok()?;
        if now_unix >= wire.exp {
            return None;
        }
        Some(Claims {
            sub: match wire.sub {
                None => Identity::Anonymous,
                Some(name) => Identity::User(name),
            },
            upstream: wire.up.map(Secret::new),
            audience: wire.aud,
            scopes: wire.scp,
            issued_at: wire.iat,
            expires_at: wire.exp,
        })
    }
}

/// Unique-enough bytes when the system's random source fails (it does not on Linux): a hash of the
/// time, the process and a counter.
fn fallback_nonce_material() -> [u8; 32] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ctx.update(&nanos.to_le_bytes());
    ctx.update(&std::process::id().to_le_bytes());
    ctx.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A token endpoint request, from either form of the distribution token spec.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    /// From `Authorization: Basic` (GET) or the form's `username` (POST `grant_type=password`).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Every `scope` value, split on spaces, in order.
    pub scopes: Vec<String>,
    pub service: Option<String>,
    /// POST `grant_type=refresh_token`.
    pub refresh_token: Option<Secret>,
}

/// Why a token request was refused. Never carries a password or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRequestError {
    #[error("the token endpoint takes GET or POST")]
    Method,
    #[error("the {what} is longer than {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error("more than {MAX_SCOPES} scopes")]
    TooManyScopes,
    #[error("parameter {name} is not valid percent-encoded UTF-8 text")]
    Encoding { name: &'static str },
    #[error("parameter {name} is given twice")]
    Duplicate { name: &'static str },
    #[error("parameter {name} is missing")]
    Missing { name: &'static str },
    #[error("grant_type must be password or refresh_token")]
    GrantType,
    #[error("the Authorization header is not valid Basic credentials")]
    Authorization,
}

/// Longest query string accepted, in bytes.
const MAX_QUERY_LEN: usize = 8192;
/// Longest form body accepted, in bytes (a refresh token is at most [`MAX_TOKEN_LEN`]).
pub const MAX_FORM_LEN: usize = 16384;
/// Most scopes accepted in one request.
const MAX_SCOPES: usize = 64;

/// The parameters the token endpoint reads; others (`account`, `client_id`, `offline_token`,
/// `access_type`) are ignored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Param {
    Service,
    Scope,
    GrantType,
    Username,
    Password,
    RefreshToken,
}

impl Param {
    fn from_name(name: &[u8]) -> Option<Param> {
        Some(match name {
            b"service" => Param::Service,
            b"scope" => Param::Scope,
            b"grant_type" => Param::GrantType,
            b"username" => Param::Username,
            b"password" => Param::Password,
            b"refresh_token" => Param::RefreshToken,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Param::Service => "service",
            Param::Scope => "scope",
            Param::GrantType => "grant_type",
            Param::Username => "username",
            Param::Password => "password",
            Param::RefreshToken => "refresh_token",
        }
    }
}

/// `application/x-www-form-urlencoded` pairs the endpoint reads (query string or body), decoded:
/// `+` is a space, then percent-decoding, then UTF-8 without control characters.
fn form_pairs(input: &[u8]) -> Result<Vec<(Param, String)>, TokenRequestError> {
    let mut pairs = Vec::new();
    for pair in input.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let Some(param) = Param::from_name(&form_decode(name).unwrap_or_default().into_bytes())
        else {
            continue;
        };
        let value = form_decode(value).ok_or(TokenRequestError::Encoding { name: param.name() })?;
        pairs.push((param, value));
    }
    Ok(pairs)
}

fn form_decode(raw: &[u8]) -> Option<String> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let decoded: Vec<u8> = percent_decode(&plus_as_space).collect();
    let text = String::from_utf8(decoded).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
}

/// Parses a token endpoint request: `GET /token?service=S&scope=A&scope=B` with an optional
/// `Authorization: Basic` header, or `POST /token` with a form body `grant_type=password&username=
/// &password=&service=&scope=` or `grant_type=refresh_token&refresh_token=…&service=&scope=`.
/// Scopes may repeat and may each hold several space-separated scopes. For GET, `form_body` is
/// ignored; for POST, `authorization` and `query` are.
pub fn parse_token_request(
    method: &http::Method,
    query: Option<&str>,
    authorization: Option<&str>,
    form_body: &[u8],
) -> Result<TokenRequest, TokenRequestError> {
    let pairs = if *method == http::Method::GET {
        let query = query.unwrap_or_default();
        if query.len() > MAX_QUERY_LEN {
            return Err(TokenRequestError::TooLarge {
                what: "query string",
                limit: MAX_QUERY_LEN,
            });
        }
        form_pairs(query.as_bytes())?
    } else if *method == http::Method::POST {
        if form_body.len() > MAX_FORM_LEN {
            return Err(TokenRequestError::TooLarge {
                what: "form body",
                limit: MAX_FORM_LEN,
            });
        }
        form_pairs(form_body)?
    } else {
        return Err(TokenRequestError::Method);
    };

    let mut request = TokenRequest::default();
    let mut grant_type = None;
    let mut seen: Vec<Param> = Vec::new();
    for (param, value) in pairs {
        if param == Param::Scope {
            for scope in value.split(' ').filter(|s| !s.is_empty()) {
                if request.scopes.len() == MAX_SCOPES {
                    return Err(TokenRequestError::TooManyScopes);
                }
                request.scopes.push(scope.to_owned());
            }
            continue;
        }
        if seen.contains(&param) {
            return Err(TokenRequestError::Duplicate { name: param.name() });
        }
        seen.push(param);
        match param {
            Param::Service => request.service = Some(value),
            Param::GrantType => grant_type = Some(value),
            Param::Username => request.username = Some(value),
            Param::Password => request.password = Some(Secret::new(value)),
            Param::RefreshToken => request.refresh_token = Some(Secret::new(value)),
            Param::Scope => {}
        }
    }

    if *method == http::Method::GET {
        // Credentials come from the header only.
        request.username = None;
        request.password = None;
        request.refresh_token = None;
        if let Some(header) = authorization {
            let (user, password) = parse_basic(header).ok_or(TokenRequestError::Authorization)?;
            request.username = Some(user);
            request.password = Some(Secret::new(password));
        }
        return Ok(request);
    }

    match grant_type.as_deref() {
        None => Err(TokenRequestError::Missing { name: "grant_type" }),
        Some("password") => {
            request.refresh_token = None;
            if request.username.as_deref().is_none_or(str::is_empty) {
                return Err(TokenRequestError::Missing { name: "username" });
            }
            if request.password.is_none() {
                return Err(TokenRequestError::Missing { name: "password" });
            }
            Ok(request)
        }
        Some("refresh_token") => {
            request.username = None;
            request.password = None;
            if request
                .refresh_token
                .as_ref()
                .is_none_or(|t| t.expose().is_empty())
            {
                return Err(TokenRequestError::Missing {
                    name: "refresh_token",
                });
            }
            Ok(request)
        }
        Some(_) => Err(TokenRequestError::GrantType),
    }
}

/// The token endpoint's JSON answer: `token` and `access_token` (the same token, for old and new
/// clients), `expires_in` seconds, `issued_at` (RFC 3339) and `refresh_token` when given.
pub fn token_response(
    token: &str,
    expires_in: u64,
    issued_at_rfc3339: &str,
    refresh_token: Option<&str>,
) -> String {
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": issued_at_rfc3339,
    });
    if let (Some(refresh), Some(map)) = (refresh_token, body.as_object_mut()) {
        map.insert("refresh_token".to_owned(), refresh.into());
    }
    body.to_string()
}

#[cfg(test)]
mod tests;
