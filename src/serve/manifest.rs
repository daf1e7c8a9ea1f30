//! Manifests: stored byte-exact by digest with their media type. Digest references never go
//! upstream again once cached for the repository; tags map to a digest per Accept set and are
//! answered from the cache inside their TTL, else revalidated with an upstream `HEAD`, and served
//! stale when upstream fails.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::access::any_manifest;
use super::error::Failure;
use super::{CONTENT_DIGEST, Ctx, Outcome, copy_response_headers, pull_scope, ratelimit_note};
use crate::body;
use crate::cache::{LinkKind, TagRecord, unix_now};
use crate::registry::digest::Digest;
use crate::registry::error::ErrorCode;
use crate::registry::media::accept_key;
use crate::registry::name::RepoName;
use crate::registry::reference::Reference;
use crate::telemetry::Verdict;
use crate::upstream::{UpstreamError, UpstreamRequest};

/// Manifests larger than this are refused (distribution's own limit is 4 MiB).
const MAX_MANIFEST: usize = 16 << 20;

pub(super) async fn handle(ctx: &Ctx<'_>, name: &RepoName, reference: &Reference) -> Outcome {
    match reference {
        Reference::Digest(digest) => by_digest(ctx, name, digest).await,
        Reference::Tag(tag) => by_tag(ctx, name, tag).await,
    }
}

async fn by_digest(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Outcome {
    let cache = &ctx.state.cache;
    if cache
        .is_linked(&ctx.registry, name, LinkKind::Manifest, digest)
        .await
        && let Some((bytes, media_type)) = cache.manifest(digest).await
    {
        let probe = format!("/v2/{name}/manifests/{digest}");
        if let Err(refusal) = ctx.verify_cached(name, &probe, Some(&any_manifest())).await {
            return Outcome::new(refusal.into_response(), Verdict::Local);
        }
        return Outcome::new(
            manifest_response(&ctx.method, bytes, &media_type, digest),
            Verdict::Hit,
        );
    }
    if let Err(refusal) = ctx.may_fetch(name) {
        return Outcome::new(refusal.into_response(), Verdict::Local);
    }
    if ctx.method == Method::HEAD {
        return pass_head(ctx, name, &Reference::Digest(digest.clone())).await;
    }
    match fetch(ctx, name, &Reference::Digest(digest.clone())).await {
        Ok(Fetched::Manifest {
            bytes,
            media_type,
            digest: actual,
            note,
        }) => {
            if digest.is_sha256() && &actual != digest {
                return Outcome::new(
                    Failure::BadUpstream {
                        code: ErrorCode::ManifestInvalid,
                        message: format!(
                            "upstream sent a manifest whose digest is {actual}, not {digest}"
                        ),
                    }
                    .into_response(),
                    Verdict::Miss,
                );
            }
            let upstream_bytes = bytes.len() as u64;
            store(ctx, name, &actual, &bytes, &media_type).await;
            let mut outcome = Outcome::new(
                manifest_response(&ctx.method, bytes, &media_type, digest),
                Verdict::Miss,
            );
            outcome.upstream_bytes = upstream_bytes;
            outcome.note = note;
            outcome
        }
        Ok(Fetched::Other(outcome)) => outcome,
        Err(e) => Outcome::new(Failure::Upstream(e).into_response(), Verdict::Miss),
    }
}

async fn by_tag(ctx: &Ctx<'_>, name: &RepoName, tag: &str) -> Outcome {
    let state = ctx.state;
    let accept = accept_key(
        ctx.headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let cached = match state.cache.tag(&ctx.registry, name, tag, &accept).await {
        Some(record) => match Digest::parse(&record.digest) {
            Ok(digest) => state
                .cache
                .manifest(&digest)
                .await
                .map(|(bytes, media_type)| (record, digest, bytes, media_type)),
            Err(_) => None,
        },
        None => None,
    };
    let Some((record, digest, bytes, media_type)) = cached else {
        return tag_miss(ctx, name, tag, &accept).await;
    };
    let probe = format!("/v2/{name}/manifests/{tag}");
    let accept_header = ctx
        .headers
        .get(ACCEPT)
        .cloned()
        .unwrap_or_else(any_manifest);
    if let Some(ttl) = state.config.tag_ttl(&ctx.registry, tag)
        && unix_now().saturating_sub(record.checked_at) < ttl.as_secs()
    {
        if let Err(refusal) = ctx.verify_cached(name, &probe, Some(&accept_header)).await {
            return Outcome::new(refusal.into_response(), Verdict::Local);
        }
        return Outcome::new(
            manifest_response(&ctx.method, bytes, &media_type, &digest),
            Verdict::Hit,
        );
    }
    // Revalidate with HEAD: Docker Hub does not count HEADs against the pull limit.
    let reference = Reference::Tag(tag.to_owned());
    let head = state
        .upstream
        .send(request(ctx, name, &reference, Method::HEAD))
        .await;
    match head {
        Ok(response) if response.status() == StatusCode::OK => {
            ctx.upstream_served(name);
            let upstream_digest = response
                .headers()
                .get(CONTENT_DIGEST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let note = ratelimit_note(response.headers());
            if upstream_digest.as_deref() == Some(record.digest.as_str()) {
                let refreshed = TagRecord {
                    checked_at: unix_now(),
                    ..record
                };
                if let Err(e) = state
                    .cache
                    .put_tag(&ctx.registry, name, tag, &accept, &refreshed)
                    .await
                {
                    tracing::warn!(error = %e, "cannot update tag record");
                }
                let mut outcome = Outcome::new(
                    manifest_response(&ctx.method, bytes, &media_type, &digest),
                    Verdict::Revalidated,
                );
                outcome.note = note;
                return outcome;
            }
            // The tag moved (or upstream gave no digest): fetch it again.
            tag_miss(ctx, name, tag, &accept).await
        }
        Ok(response) if is_upstream_failure(response.status()) => {
            if let Err(refusal) = ctx.verify_cached(name, &probe, Some(&accept_header)).await {
                return Outcome::new(refusal.into_response(), Verdict::Local);
            }
            let mut outcome = Outcome::new(
                manifest_response(&ctx.method, bytes, &media_type, &digest),
                Verdict::Stale,
            );
            outcome.note = Some(format!("upstream answered {}", response.status().as_u16()));
            outcome
        }
        Ok(response) => {
            // 401/403/404…: the upstream's word stands.
            let status = response.status();
            let mut out = Response::new(body::empty());
            *out.status_mut() = status;
            copy_response_headers(response.headers(), out.headers_mut());
            if ctx.method == Method::GET {
                // HEAD responses have no error body; give the client one.
                out = Failure::UpstreamStatus {
                    status,
                    code: code_for(status),
                    what: format!("{name}:{tag}"),
                }
                .into_response();
            }
            Outcome::new(out, Verdict::Pass)
        }
        Err(e) if e.is_unavailable() => {
            if let Err(refusal) = ctx.verify_cached(name, &probe, Some(&accept_header)).await {
                return Outcome::new(refusal.into_response(), Verdict::Local);
            }
            let mut outcome = Outcome::new(
                manifest_response(&ctx.method, bytes, &media_type, &digest),
                Verdict::Stale,
            );
            outcome.note = Some(format!("upstream unavailable: {e}"));
            outcome
        }
        Err(e) => Outcome::new(Failure::Upstream(e).into_response(), Verdict::Pass),
    }
}

async fn tag_miss(ctx: &Ctx<'_>, name: &RepoName, tag: &str, accept: &str) -> Outcome {
    if let Err(refusal) = ctx.may_fetch(name) {
        return Outcome::new(refusal.into_response(), Verdict::Local);
    }
    let reference = Reference::Tag(tag.to_owned());
    if ctx.method == Method::HEAD {
        return head_tag(ctx, name, tag, accept).await;
    }
    match fetch(ctx, name, &reference).await {
        Ok(Fetched::Manifest {
            bytes,
            media_type,
            digest,
            note,
        }) => {
            let upstream_bytes = bytes.len() as u64;
            store(ctx, name, &digest, &bytes, &media_type).await;
            remember_tag(ctx, name, tag, accept, &digest, &media_type).await;
            let mut outcome = Outcome::new(
                manifest_response(&ctx.method, bytes, &media_type, &digest),
                Verdict::Miss,
            );
            outcome.upstream_bytes = upstream_bytes;
            outcome.note = note;
            outcome
        }
        Ok(Fetched::Other(outcome)) => outcome,
        Err(e) => Outcome::new(Failure::Upstream(e).into_response(), Verdict::Miss),
    }
}

enum Fetched {
    Manifest {
        bytes: Bytes,
        media_type: String,
        digest: Digest,
        note: Option<String>,
    },
    /// Upstream answered something other than a manifest; pass it on.
    Other(Outcome),
}

/// GETs a manifest upstream; a 200 comes back whole and hashed.
async fn fetch(
    ctx: &Ctx<'_>,
    name: &RepoName,
    reference: &Reference,
) -> Result<Fetched, UpstreamError> {
    let response = ctx
        .state
        .upstream
        .send(request(ctx, name, reference, Method::GET))
        .await?;
    let status = response.status();
    let note = ratelimit_note(response.headers());
    if status == StatusCode::OK {
        ctx.upstream_served(name);
    }
    if status != StatusCode::OK {
        let (parts, incoming) = response.into_parts();
        let mut out = Response::new(body::incoming(incoming));
        *out.status_mut() = status;
        copy_response_headers(&parts.headers, out.headers_mut());
        let mut outcome = Outcome::new(out, Verdict::Pass);
        outcome.note = note;
        return Ok(Fetched::Other(outcome));
    }
    let media_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let limited = http_body_util::Limited::new(response.into_body(), MAX_MANIFEST);
    let collected = tokio::time::timeout(ctx.state.upstream.read_timeout, limited.collect()).await;
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            return Err(UpstreamError::Unreachable {
                registry: ctx.registry.to_string(),
                reason: format!("manifest body: {e}"),
            });
        }
        Err(_) => {
            return Err(UpstreamError::Timeout {
                registry: ctx.registry.to_string(),
                timeout: ctx.state.upstream.read_timeout,
            });
        }
    };
    let digest = Digest::sha256_of(&bytes);
    ctx.state
        .metrics
        .upstream_bytes(&ctx.registry, bytes.len() as u64);
    Ok(Fetched::Manifest {
        bytes,
        media_type,
        digest,
        note,
    })
}

/// A client `HEAD` on a tag we cannot answer stays a `HEAD` upstream. The tag's digest is recorded,
/// so that clients which resolve tags with `HEAD` and fetch manifests by digest (containerd) are
/// revalidated, and served stale, like any other once the manifest is cached.
async fn head_tag(ctx: &Ctx<'_>, name: &RepoName, tag: &str, accept: &str) -> Outcome {
    let outcome = pass_head(ctx, name, &Reference::Tag(tag.to_owned())).await;
    let headers = outcome.response.headers();
    let digest = headers
        .get(CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok());
    let media_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if let (StatusCode::OK, Some(digest), Some(media_type)) =
        (outcome.response.status(), digest, media_type)
    {
        remember_tag(ctx, name, tag, accept, &digest, media_type).await;
    }
    outcome
}

/// A client `HEAD` that the cache cannot answer stays a `HEAD` upstream.
async fn pass_head(ctx: &Ctx<'_>, name: &RepoName, reference: &Reference) -> Outcome {
    match ctx
        .state
        .upstream
        .send(request(ctx, name, reference, Method::HEAD))
        .await
    {
        Ok(response) => {
            if response.status() == StatusCode::OK {
                ctx.upstream_served(name);
            }
            let mut out = Response::new(body::empty());
            *out.status_mut() = response.status();
            copy_response_headers(response.headers(), out.headers_mut());
            let mut outcome = Outcome::new(out, Verdict::Miss);
            outcome.note = ratelimit_note(response.headers());
            outcome
        }
        Err(e) => Outcome::new(Failure::Upstream(e).into_response(), Verdict::Miss),
    }
}

/// Records that `tag` resolves to `digest` for this Accept set, as upstream just said.
async fn remember_tag(
    ctx: &Ctx<'_>,
    name: &RepoName,
    tag: &str,
    accept: &str,
    digest: &Digest,
    media_type: &str,
) {
    let record = TagRecord {
        digest: digest.to_string(),
        media_type: media_type.to_owned(),
        checked_at: unix_now(),
    };
    if let Err(e) = ctx
        .state
        .cache
        .put_tag(&ctx.registry, name, tag, accept, &record)
        .await
    {
        tracing::warn!(error = %e, "cannot store tag record");
    }
}

async fn store(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest, bytes: &Bytes, media_type: &str) {
    let cache = &ctx.state.cache;
    match cache.put_manifest(digest, bytes, media_type).await {
        Ok(()) => {
            cache
                .link(&ctx.registry, name, LinkKind::Manifest, digest)
                .await
        }
        Err(e) => tracing::warn!(error = %e, "cannot cache manifest; served uncached"),
    }
}

fn request(
    ctx: &Ctx<'_>,
    name: &RepoName,
    reference: &Reference,
    method: Method,
) -> UpstreamRequest {
    let mut headers = http::HeaderMap::new();
    for value in ctx.headers.get_all(ACCEPT) {
        headers.append(ACCEPT, value.clone());
    }
    UpstreamRequest {
        registry: ctx.registry.clone(),
        method,
        path_and_query: format!("/v2/{name}/manifests/{reference}"),
        headers,
        body: body::empty(),
        scope: pull_scope(name),
        auth: ctx.upstream_auth(),
    }
}

fn manifest_response(
    method: &Method,
    bytes: Bytes,
    media_type: &str,
    digest: &Digest,
) -> Response<crate::body::Body> {
    let len = bytes.len();
    let mut response = if method == Method::HEAD {
        Response::new(body::empty())
    } else {
        Response::new(body::full(bytes))
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(media_type) {
        h.insert(CONTENT_TYPE, v);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(digest.as_ref()) {
        h.insert(CONTENT_DIGEST, v.clone());
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
            h.insert(http::header::ETAG, etag);
        }
    }
    response
}

/// Statuses after which a cached manifest is served stale.
fn is_upstream_failure(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::ManifestUnknown,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Denied,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyRequests,
        _ => ErrorCode::Unavailable,
    }
}
