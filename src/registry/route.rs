//! Registry API request paths (`/v2/...`) → [`Route`], with the optional upstream host prefix of
//! path-prefix mode (`/v2/quay.io/org/img/manifests/1.0`).
//!
//! The suffix decides the kind (`manifests/<ref>`, `blobs/<digest>`, `tags/list`,
//! `referrers/<digest>`, `blobs/uploads/[<session>]`); whatever precedes it is the repository name,
//! so names may contain components called `manifests` or `blobs`. Paths that could smuggle
//! anything past the name grammar or into a file path are refused before that: `%` (encoded
//! slashes or dots), `\`, empty, `.` or `..` components, control characters and non-ASCII.

use std::fmt;

use super::digest::{Digest, DigestError};
use super::error::ErrorCode;
use super::host::{HostError, RegistryHost};
use super::name::{NameError, RepoName};
use super::reference::{Reference, ReferenceError};

/// A registry API endpoint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Route {
    /// `/v2/`: the version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository.
        name: RepoName,
        /// Tag or digest.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository.
        name: RepoName,
        /// Blob digest (any valid algorithm; check [`Digest::is_sha256`] before caching).
        digest: Digest,
    },
    /// `/v2/<name>/tags/list`.
    TagsList {
        /// Repository.
        name: RepoName,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// Repository.
        name: RepoName,
        /// Digest of the subject manifest.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/` (start, `session` is `None`) or
    /// `/v2/<name>/blobs/uploads/<session>`.
    Upload {
        /// Repository.
        name: RepoName,
        /// Upload session id. Invariant: non-empty, RFC 3986 `pchar`s only, no `%`.
        session: Option<String>,
    },
}

impl Route {
    /// The repository the route is about, if any.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::TagsList { name }
            | Route::Referrers { name, .. }
            | Route::Upload { name, .. } => Some(name),
        }
    }

    /// The request path for this route (no host prefix), e.g. `/v2/library/alpine/tags/list`.
    /// [`parse_path`] gives the route back.
    pub fn path(&self) -> String {
        match self {
            Route::Base => "/v2/".to_owned(),
            Route::Catalog => "/v2/_catalog".to_owned(),
            Route::Manifest { name, reference } => format!("/v2/{name}/manifests/{reference}"),
            Route::Blob { name, digest } => format!("/v2/{name}/blobs/{digest}"),
            Route::TagsList { name } => format!("/v2/{name}/tags/list"),
            Route::Referrers { name, digest } => format!("/v2/{name}/referrers/{digest}"),
            Route::Upload {
                name,
                session: None,
            } => format!("/v2/{name}/blobs/uploads/"),
            Route::Upload {
                name,
                session: Some(s),
            } => format!("/v2/{name}/blobs/uploads/{s}"),
        }
    }
}

impl fmt::Display for Route {
    /// The request path, as [`Route::path`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// A parsed request path: the route and, in path-prefix mode, the upstream named by the first
/// component.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ParsedPath {
    /// The upstream registry from a host prefix (`/v2/quay.io/...`), if there was one.
    pub host: Option<RegistryHost>,
    /// The endpoint.
    pub route: Route,
}

/// Why a request path was refused. [`RouteError::code`] gives the registry error code (and, via
/// [`ErrorCode::status`], the status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not a registry API endpoint (404).
    #[error("not a registry API endpoint")]
    NotFound,
    /// The path contains `%`: percent-encoding is never needed in registry paths and could hide
    /// slashes or dots.
    #[error("percent-encoded characters are not allowed in registry paths")]
    PercentEncoded,
    /// The path contains a backslash.
    #[error("backslashes are not allowed in registry paths")]
    Backslash,
    /// The path contains a control character (or DEL).
    #[error("control characters are not allowed in registry paths")]
    ControlCharacter,
    /// The path contains non-ASCII bytes.
    #[error("non-ASCII characters are not allowed in registry paths")]
    NonAscii,
    /// The path contains a character that is not allowed unencoded in a URL path (space, `"`,
    /// `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, `?`, `#`).
    #[error("character {character:?} is not allowed in registry paths")]
    ForbiddenCharacter {
        /// The character.
        character: char,
    },
    /// An empty component (`//`, or a trailing `/` other than after `blobs/uploads`).
    #[error("empty path component")]
    EmptyComponent,
    /// A `.` or `..` component.
    #[error("'.' and '..' path components are not allowed")]
    DotComponent,
    /// A known endpoint suffix with no repository name before it.
    #[error("repository name missing")]
    MissingName,
    /// A host prefix with no repository name after it.
    #[error("registry host {host} is not followed by a repository name")]
    HostWithoutName {
        /// The host, canonical form.
        host: String,
    },
    /// Invalid repository name.
    #[error("{source}")]
    Name {
        /// Why.
        #[from]
        source: NameError,
    },
    /// Invalid manifest reference (tag or digest).
    #[error("{source}")]
    Reference {
        /// Why.
        #[from]
        source: ReferenceError,
    },
    /// Invalid blob or referrers digest.
    #[error("{source}")]
    Digest {
        /// Why.
        #[from]
        source: DigestError,
    },
    /// Upload session id with characters that could not be passed on verbatim.
    #[error("invalid upload session id")]
    Session,
    /// The `?ns=` query parameter of a mirror request does not name a registry.
    #[error("bad ns parameter: {source}")]
    Ns {
        /// Why.
        source: HostError,
    },
}

impl RouteError {
    /// The registry error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::NotFound => ErrorCode::NameUnknown,
            RouteError::PercentEncoded
            | RouteError::Backslash
            | RouteError::ControlCharacter
            | RouteError::NonAscii
            | RouteError::ForbiddenCharacter { .. }
            | RouteError::EmptyComponent
            | RouteError::DotComponent
            | RouteError::MissingName
            | RouteError::HostWithoutName { .. }
            | RouteError::Name { .. }
            | RouteError::Ns { .. } => ErrorCode::NameInvalid,
            RouteError::Reference {
                source: ReferenceError::Tag { .. },
            } => ErrorCode::ManifestInvalid,
            RouteError::Reference {
                source: ReferenceError::Digest { .. },
            }
            | RouteError::Digest { .. } => ErrorCode::DigestInvalid,
            RouteError::Session => ErrorCode::BlobUploadInvalid,
        }
    }
}

/// The endpoint named by the last segments, before the name is validated.
enum Kind<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    TagsList,
    Referrers(&'a str),
    Upload(Option<&'a str>),
}

/// Parses a request path (without query string). With `allow_host_prefix`, a first component
/// that looks like a host (see [`RegistryHost::looks_like_host`]) and parses as one names the
/// upstream, and the rest is the repository.
pub fn parse_path(path: &str, allow_host_prefix: bool) -> Result<ParsedPath, RouteError> {
    let rest = match path {
        "/v2" | "/v2/" => {
            return Ok(ParsedPath {
                host: None,
                route: Route::Base,
            });
        }
        _ => path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?,
    };
    check_characters(rest)?;
    // A trailing slash is only meaningful in `blobs/uploads/`.
    let (body, trailing_slash) = match rest.strip_suffix('/') {
        Some(body) => (body, true),
        None => (rest, false),
    };
    let segments: Vec<&str> = body.split('/').collect();
    for segment in &segments {
        match *segment {
            "" => return Err(RouteError::EmptyComponent),
            "." | ".." => return Err(RouteError::DotComponent),
            _ => {}
        }
    }
    if trailing_slash && !segments.ends_with(&["blobs", "uploads"]) {
        return Err(RouteError::EmptyComponent);
    }

    match segments.as_slice() {
        ["_catalog"] => {
            return Ok(ParsedPath {
                host: None,
                route: Route::Catalog,
            });
        }
        [first, "_catalog"] if allow_host_prefix => {
            if let Some(host) = host_prefix(first) {
                return Ok(ParsedPath {
                    host: Some(host),
                    route: Route::Catalog,
                });
            }
        }
        _ => {}
    }

    let (prefix, kind) = match segments.as_slice() {
        [prefix @ .., "blobs", "uploads"] => (prefix, Kind::Upload(None)),
        [prefix @ .., "blobs", "uploads", session] => (prefix, Kind::Upload(Some(*session))),
        [prefix @ .., "manifests", reference] => (prefix, Kind::Manifest(reference)),
        [prefix @ .., "blobs", digest] => (prefix, Kind::Blob(digest)),
        [prefix @ .., "tags", "list"] => (prefix, Kind::TagsList),
        [prefix @ .., "referrers", digest] => (prefix, Kind::Referrers(digest)),
        _ => return Err(RouteError::NotFound),
    };

    let (host, name_segments) = match prefix {
        [first, name @ ..] if allow_host_prefix => match host_prefix(first) {
            Some(host) if name.is_empty() => {
                return Err(RouteError::HostWithoutName {
                    host: host.to_string(),
                });
            }
            Some(host) => (Some(host), name),
            None => (None, prefix),
        },
        _ => (None, prefix),
    };
    if name_segments.is_empty() {
        return Err(RouteError::MissingName);
    }
    let name = RepoName::parse(&name_segments.join("/"))?;

    let route = match kind {
        Kind::Manifest(reference) => Route::Manifest {
            name,
            reference: Reference::parse(reference)?,
        },
        Kind::Blob(digest) => Route::Blob {
            name,
            digest: Digest::parse(digest)?,
        },
        Kind::TagsList => Route::TagsList { name },
        Kind::Referrers(digest) => Route::Referrers {
            name,
            digest: Digest::parse(digest)?,
        },
        Kind::Upload(session) => {
            if session.is_some_and(|s| s.bytes().any(|b| matches!(b, b'[' | b']'))) {
                return Err(RouteError::Session);
            }
            Route::Upload {
                name,
                session: session.map(str::to_owned),
            }
        }
    };
    Ok(ParsedPath { host, route })
}

/// The `ns` parameter of a query string (containerd names the registry a mirror request is for
/// with `?ns=<registry>`): the value of the first `ns=` pair, percent-decoded (invalid UTF-8
/// becomes U+FFFD, which no host accepts). `None` if the query has no `ns=` pair.
pub fn ns_param(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("ns="))
        .map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// Where a mirror-mode request goes, and what it asks for: the registry named by `?ns=` (then the
/// path takes no host prefix), else by a host prefix in the path, else Docker Hub. A bad path is
/// refused before a bad `ns`.
pub fn mirror_target(path: &str, query: Option<&str>) -> Result<(RegistryHost, Route), RouteError> {
    let ns = query.and_then(ns_param);
    let parsed = parse_path(path, ns.is_none())?;
    let registry = match (ns, parsed.host) {
        (Some(ns), _) => RegistryHost::parse(&ns).map_err(|source| RouteError::Ns { source })?,
        (None, Some(host)) => host,
        (None, None) => RegistryHost::docker_hub(),
    };
    Ok((registry, parsed.route))
}

/// The registry host named by a first path component, if it looks like one and parses.
fn host_prefix(component: &str) -> Option<RegistryHost> {
    if RegistryHost::looks_like_host(component) {
        RegistryHost::parse(component).ok()
    } else {
        None
    }
}

/// Refuses bytes that have no business in a registry path. `[` and `]` pass (IPv6 host
/// prefixes); the name, reference, digest and session checks refuse them elsewhere.
fn check_characters(path: &str) -> Result<(), RouteError> {
    for b in path.bytes() {
        match b {
            b'%' => return Err(RouteError::PercentEncoded),
            b'\\' => return Err(RouteError::Backslash),
            0..=0x1f | 0x7f => return Err(RouteError::ControlCharacter),
            0x80.. => return Err(RouteError::NonAscii),
            b' ' | b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}' | b'?' | b'#' => {
                return Err(RouteError::ForbiddenCharacter {
                    character: char::from(b),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
