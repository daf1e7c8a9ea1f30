//! The fixed label values: why an upstream exchange failed, why the proxy refused a request, what a
//! `verify` check concluded, and the request methods counted apart.

use http::{Method, StatusCode};

/// Why an upstream exchange failed, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFault {
    /// Connection refused, reset, DNS, TLS or protocol error.
    Unreachable,
    /// No answer within `PROXY_READ_TIMEOUT`.
    Timeout,
    /// The token realm could not be asked.
    Token,
    /// The token realm refused the proxy's credentials.
    TokenDenied,
    /// A redirect that could not be followed.
    Redirect,
    /// The request could not be built.
    Request,
    /// The target was refused by `TUNNEL_ALLOW`.
    Policy,
    /// A 5xx answer.
    Status5xx,
    /// A 429 answer (rate limited).
    Status429,
    /// A download that failed after its headers (body cut, digest mismatch, stalled).
    Download,
}

impl UpstreamFault {
    pub(super) const ALL: [UpstreamFault; 10] = [
        UpstreamFault::Unreachable,
        UpstreamFault::Timeout,
        UpstreamFault::Token,
        UpstreamFault::TokenDenied,
        UpstreamFault::Redirect,
        UpstreamFault::Request,
        UpstreamFault::Policy,
        UpstreamFault::Status5xx,
        UpstreamFault::Status429,
        UpstreamFault::Download,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFault::Unreachable => "unreachable",
            UpstreamFault::Timeout => "timeout",
            UpstreamFault::Token => "token",
            UpstreamFault::TokenDenied => "token_denied",
            UpstreamFault::Redirect => "redirect",
            UpstreamFault::Request => "request",
            UpstreamFault::Policy => "policy",
            UpstreamFault::Status5xx => "status_5xx",
            UpstreamFault::Status429 => "status_429",
            UpstreamFault::Download => "download",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// A request the proxy refused on its own account (not an upstream's refusal passed on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `407`: CONNECT or absolute-form request without valid `Proxy-Authorization`.
    ProxyAuth,
    /// `401`: an admin page (`/`, `/metrics`, `/status.json`, `/setup`) without a proxy user.
    AdminAuth,
    /// `401`: a registry request that must log in first (or sent credentials the proxy rejects).
    Login,
    /// `403`: the access rules do not let this user pull, fetch or push.
    Rules,
    /// `401`: `verify` mode, upstream did not accept the client's credential (or it has none).
    VerifyLogin,
    /// `403`: `verify` mode, upstream refused the client's credential.
    VerifyDenied,
    /// `403`: a tunnel or absolute-form target refused by `TUNNEL_ALLOW`.
    TunnelPolicy,
    /// `403`: mirror mode named a registry that is not configured.
    NotConfigured,
}

impl Refusal {
    pub(super) const ALL: [Refusal; 8] = [
        Refusal::ProxyAuth,
        Refusal::AdminAuth,
        Refusal::Login,
        Refusal::Rules,
        Refusal::VerifyLogin,
        Refusal::VerifyDenied,
        Refusal::TunnelPolicy,
        Refusal::NotConfigured,
    ];

    /// A refusal by the access rules (or a request to log in first), from the status it got.
    pub fn by_rules(status: StatusCode) -> Option<Refusal> {
        match status {
            StatusCode::UNAUTHORIZED => Some(Refusal::Login),
            StatusCode::FORBIDDEN => Some(Refusal::Rules),
            _ => None,
        }
    }

    /// A refusal by the `verify` check, from the status it got.
    pub fn by_verify(status: StatusCode) -> Option<Refusal> {
        match status {
            StatusCode::UNAUTHORIZED => Some(Refusal::VerifyLogin),
            StatusCode::FORBIDDEN => Some(Refusal::VerifyDenied),
            _ => None,
        }
    }

    pub(super) fn reason(self) -> &'static str {
        match self {
            Refusal::ProxyAuth => "proxy_auth",
            Refusal::AdminAuth => "admin_auth",
            Refusal::Login => "login",
            Refusal::Rules => "rules",
            Refusal::VerifyLogin | Refusal::VerifyDenied => "verify",
            Refusal::TunnelPolicy => "tunnel_policy",
            Refusal::NotConfigured => "not_configured",
        }
    }

    pub(super) fn status(self) -> u16 {
        match self {
            Refusal::ProxyAuth => 407,
            Refusal::AdminAuth | Refusal::Login | Refusal::VerifyLogin => 401,
            Refusal::Rules
            | Refusal::VerifyDenied
            | Refusal::TunnelPolicy
            | Refusal::NotConfigured => 403,
        }
    }
}

/// What a `verify`-mode check concluded, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyResult {
    /// Answered from what upstream said before (within `AUTH_CACHE_TTL`).
    Remembered,
    /// Upstream was asked and accepted (or the repository is public).
    Accepted,
    /// Upstream was asked and refused.
    Refused,
    /// Upstream could not be asked.
    Unavailable,
}

impl VerifyResult {
    pub(super) const ALL: [VerifyResult; 4] = [
        VerifyResult::Remembered,
        VerifyResult::Accepted,
        VerifyResult::Refused,
        VerifyResult::Unavailable,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            VerifyResult::Remembered => "remembered",
            VerifyResult::Accepted => "accepted",
            VerifyResult::Refused => "refused",
            VerifyResult::Unavailable => "unavailable",
        }
    }
}

pub(super) const METHODS: [&str; 3] = ["GET", "HEAD", "other"];

pub(super) fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        _ => 2,
    }
}
