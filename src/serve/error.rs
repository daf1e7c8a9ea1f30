//! The one path from a failure to the client's response. Every handler, the listener and the access
//! checks describe what went wrong as a [`Failure`]; [`respond`] alone decides the status, the
//! registry JSON error body (or, on the forward-proxy surface, a short text body) and the headers
//! that go with it (`WWW-Authenticate`, `Proxy-Authenticate`, `Content-Range`). Where the fault lies
//! — the client, its permissions, the upstream, or the proxy itself — is in the variant, so no call
//! site picks a status code of its own.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Response, StatusCode};

use super::API_VERSION;
use crate::body::{self, Body};
use crate::registry::error::{ErrorCode, error_body};
use crate::upstream::UpstreamError;

/// What went wrong with a request, classified by where the fault is.
#[derive(Debug)]
pub enum Failure {
    /// The request is malformed (path, name, reference, `ns=`, header); `code` decides the status.
    Client { code: ErrorCode, message: String },
    /// A `Range` header that is malformed, or not satisfiable for a blob of `len` bytes.
    Range { message: String, len: Option<u64> },
    /// A write while the proxy is read-only (`ALLOW_PUSH` unset).
    ReadOnly { method: Method },
    /// A request head over the size limit.
    HeadTooLarge,
    /// No valid credentials where the proxy needs some: the client should log in. `challenge` is the
    /// `WWW-Authenticate` value that tells it how.
    Unauthenticated {
        challenge: HeaderValue,
        message: String,
    },
    /// The client is known (or anonymous) but may not do this. The message names the repository or
    /// rule at most, never an internal address.
    Denied { message: String },
    /// The upstream could not be used at all (unreachable, timed out, token realm failed, target
    /// refused by policy).
    Upstream(UpstreamError),
    /// The upstream answered a status other than success for `what` (a HEAD, or a GET whose body is
    /// not passed on).
    UpstreamStatus {
        status: StatusCode,
        code: ErrorCode,
        what: String,
    },
    /// The upstream sent something that failed verification (a manifest with the wrong digest).
    BadUpstream { code: ErrorCode, message: String },
    /// Something inside the proxy failed.
    Internal { message: String },
    /// Forward-proxy surface (CONNECT, absolute-form requests): credentials missing or wrong.
    ProxyAuthRequired,
    /// Forward-proxy surface: a request the proxy will not carry (bad target, refused by policy).
    /// Plain text: these responses go to proxy clients, not registry clients.
    Forward { status: StatusCode, message: String },
}

impl Failure {
    /// Shorthand for a client-side error with a code.
    pub fn client(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure::Client {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for a denial.
    pub fn denied(message: impl Into<String>) -> Failure {
        Failure::Denied {
            message: message.into(),
        }
    }

    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::Client { code, .. } => code.status(),
            Failure::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Failure::ReadOnly { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Failure::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Failure::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Failure::Denied { .. } => StatusCode::FORBIDDEN,
            Failure::Upstream(e) => match e {
                UpstreamError::TokenDenied { .. } => StatusCode::UNAUTHORIZED,
                UpstreamError::Refused { .. } => StatusCode::FORBIDDEN,
                UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            Failure::UpstreamStatus { status, .. } => *status,
            Failure::BadUpstream { .. } => StatusCode::BAD_GATEWAY,
            Failure::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Failure::ProxyAuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Failure::Forward { status, .. } => *status,
        }
    }

    /// The registry error code of the body.
    pub fn code(&self) -> ErrorCode {
        match self {
            Failure::Client { code, .. }
            | Failure::UpstreamStatus { code, .. }
            | Failure::BadUpstream { code, .. } => *code,
            Failure::Range { .. } => ErrorCode::RangeInvalid,
            Failure::ReadOnly { .. } | Failure::HeadTooLarge => ErrorCode::Unsupported,
            Failure::Unauthenticated { .. } | Failure::ProxyAuthRequired => ErrorCode::Unauthorized,
            Failure::Denied { .. } | Failure::Forward { .. } => ErrorCode::Denied,
            Failure::Upstream(e) => match e {
                UpstreamError::TokenDenied { .. } => ErrorCode::Unauthorized,
                UpstreamError::Refused { .. } => ErrorCode::Denied,
                _ => ErrorCode::Unavailable,
            },
            Failure::Internal { .. } => ErrorCode::Unavailable,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Client { message, .. }
            | Failure::Range { message, .. }
            | Failure::Unauthenticated { message, .. }
            | Failure::Denied { message }
            | Failure::BadUpstream { message, .. }
            | Failure::Internal { message }
            | Failure::Forward { message, .. } => message.clone(),
            Failure::ReadOnly { method } => format!(
                "{method} is not allowed: this proxy is read-only (set ALLOW_PUSH=true to pass writes through)"
            ),
            Failure::HeadTooLarge => "request head too large".into(),
            // The target may be an internal address: never name it.
            Failure::Upstream(UpstreamError::Refused { .. }) => {
                "upstream target not allowed by TUNNEL_ALLOW".into()
            }
            Failure::Upstream(e) => e.to_string(),
            Failure::UpstreamStatus { status, what, .. } => {
                format!("upstream answered {} for {what}", status.as_u16())
            }
            Failure::ProxyAuthRequired => "proxy authentication required".into(),
        }
    }

    /// The response for this failure; see [`respond`].
    pub fn into_response(self) -> Response<Body> {
        respond(self)
    }
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Failure {
        Failure::Upstream(e)
    }
}

/// Turns a failure into the client's response: the one place that does.
pub fn respond(failure: Failure) -> Response<Body> {
    let status = failure.status();
    let message = failure.message();
    match &failure {
        Failure::Upstream(_) | Failure::BadUpstream { .. } => {
            tracing::warn!(status = status.as_u16(), error = %message, "upstream request failed");
        }
        Failure::Internal { .. } => tracing::error!(error = %message, "internal error"),
        _ => tracing::debug!(status = status.as_u16(), error = %message, "request refused"),
    }
    match failure {
        Failure::ProxyAuthRequired => {
            let mut r = text(status, "proxy authentication required\n");
            r.headers_mut().insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"registry-proxy\""),
            );
            r
        }
        Failure::Forward { .. } => text(status, &format!("{message}\n")),
        Failure::Unauthenticated { challenge, .. } => {
            let mut r = registry_error(status, ErrorCode::Unauthorized, &message);
            r.headers_mut().insert(WWW_AUTHENTICATE, challenge);
            r
        }
        Failure::Range { len, .. } => {
            let mut r = registry_error(status, ErrorCode::RangeInvalid, &message);
            if let Some(len) = len
                && let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}"))
            {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            r
        }
        other => registry_error(status, other.code(), &message),
    }
}

/// A registry JSON error response (`{"errors":[{"code":…,"message":…}]}`).
fn registry_error(status: StatusCode, code: ErrorCode, message: &str) -> Response<Body> {
    let bytes = error_body(code, message);
    let len = bytes.len();
    let mut response = Response::new(body::full(bytes));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

/// A short plain-text response (admin endpoints and the forward-proxy surface).
pub fn text(status: StatusCode, body_text: &str) -> Response<Body> {
    let bytes = Bytes::copy_from_slice(body_text.as_bytes());
    let len = bytes.len();
    let mut r = Response::new(body::full(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_text(r: Response<Body>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn denials_are_403_denied_json() {
        let r = respond(Failure::denied("no pull access to quay.io/team/app"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json; charset=utf-8");
        let text = body_text(r).await;
        assert!(text.contains("\"DENIED\""), "{text}");
        assert!(text.contains("quay.io/team/app"), "{text}");
    }

    #[tokio::test]
    async fn unauthenticated_carries_the_challenge() {
        let challenge = HeaderValue::from_static("Bearer realm=\"http://p/token\"");
        let r = respond(Failure::Unauthenticated {
            challenge: challenge.clone(),
            message: "authentication required".into(),
        });
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], challenge);
        assert!(body_text(r).await.contains("UNAUTHORIZED"));
    }

    #[tokio::test]
    async fn proxy_auth_is_407_with_basic_challenge() {
        let r = respond(Failure::ProxyAuthRequired);
        assert_eq!(r.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        assert_eq!(
            r.headers()[http::header::PROXY_AUTHENTICATE],
            "Basic realm=\"registry-proxy\""
        );
    }

    #[tokio::test]
    async fn unsatisfiable_range_names_the_length() {
        let r = respond(Failure::Range {
            message: "range not satisfiable".into(),
            len: Some(10),
        });
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[CONTENT_RANGE], "bytes */10");
    }

    #[test]
    fn upstream_faults_map_by_kind() {
        let timeout = Failure::Upstream(UpstreamError::Timeout {
            registry: "r".into(),
            timeout: std::time::Duration::from_secs(1),
        });
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        let denied = Failure::Upstream(UpstreamError::TokenDenied {
            realm: "https://a/token".into(),
            status: StatusCode::UNAUTHORIZED,
        });
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(denied.code(), ErrorCode::Unauthorized);
        let down = Failure::Upstream(UpstreamError::Unreachable {
            registry: "r".into(),
            reason: "refused".into(),
        });
        assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(down.code(), ErrorCode::Unavailable);
    }
}
