//! Blobs: served from the content store once the repository is known to hold them, with `Range`;
//! on a miss, one upstream download per digest that every concurrent client streams from.

use std::sync::Arc;

use futures_util::TryStreamExt;
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::error::Failure;
use super::{CONTENT_DIGEST, Ctx, Outcome, copy_response_headers, pull_scope, ratelimit_note};
use crate::body::{self, Body, BoxError};
use crate::cache::{Fill, FillEnd, FillSlot, LinkKind};
use crate::registry::digest::Digest;
use crate::registry::error::ErrorCode;
use crate::registry::name::RepoName;
use crate::registry::range::{ByteRange, parse_range};
use crate::telemetry::{UpstreamFault, Verdict};
use crate::upstream::UpstreamRequest;

pub(super) async fn handle(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Outcome {
    let range = match ctx.headers.get(RANGE).map(|v| v.to_str().map(parse_range)) {
        None => None,
        Some(Ok(Ok(range))) => range,
        Some(_) => {
            return Outcome::new(
                Failure::Range {
                    message: "malformed Range header".into(),
                    len: None,
                }
                .into_response(),
                Verdict::Local,
            );
        }
    };
    let cache = &ctx.state.cache;
    let probe = format!("/v2/{name}/blobs/{digest}");
    if let Some(len) = cache.blob_len(digest) {
        if cache.is_linked(&ctx.registry, name, LinkKind::Blob, digest) {
            if let Err(refusal) = ctx.verify_cached(name, &probe, None).await {
                return Outcome::new(refusal.into_response(), Verdict::Local);
            }
            return Outcome::new(from_store(ctx, digest, len, range), Verdict::Hit);
        }
        // Stored for another repository: serve it here only once upstream confirms this one has it.
        return match confirm(ctx, name, digest).await {
            Ok(()) => Outcome::new(from_store(ctx, digest, len, range), Verdict::Hit),
            Err(outcome) => outcome,
        };
    }
    if ctx.method == Method::HEAD {
        return head_upstream(ctx, name, digest).await;
    }
    if cache.fill_in_flight(digest) {
        // Joining a download in flight is reading it: the same check as a hit, before any byte.
        if let Err(refusal) = ctx.verify_cached(name, &probe, None).await {
            return Outcome::new(refusal.into_response(), Verdict::Local);
        }
    } else if let Err(refusal) = ctx.may_fetch(name) {
        return Outcome::new(refusal.into_response(), Verdict::Local);
    }
    let slot = match cache.begin_fill(digest) {
        Ok(slot) => slot,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a cache fill; streaming uncached");
            return stream_uncached(ctx, name, digest).await;
        }
    };
    match slot {
        FillSlot::Follower(fill) => {
            // The download may have started after the check above.
            if let Err(refusal) = ctx.verify_cached(name, &probe, None).await {
                return Outcome::new(refusal.into_response(), Verdict::Local);
            }
            if !cache.is_linked(&ctx.registry, name, LinkKind::Blob, digest)
                && let Err(outcome) = confirm(ctx, name, digest).await
            {
                return outcome;
            }
            match fill.started().await {
                Ok(total) => match from_fill(digest, &fill, total, range) {
                    Some(response) => Outcome::new(response, Verdict::Miss),
                    // The download went uncached and what we need is gone from memory.
                    None => stream_uncached(ctx, name, digest).await,
                },
                // The leader got no blob (an error status, or it failed early): ask upstream ourselves.
                Err(_) => stream_uncached(ctx, name, digest).await,
            }
        }
        FillSlot::Leader(fill, file) => {
            if let Err(refusal) = ctx.may_fetch(name) {
                ctx.state.cache.abort_fill(&fill, "client may not fetch");
                return Outcome::new(refusal.into_response(), Verdict::Local);
            }
            lead(ctx, name, digest, fill, file, range).await
        }
    }
}

/// Starts the upstream download in its own task (it outlives this client) and serves from it.
async fn lead(
    ctx: &Ctx<'_>,
    name: &RepoName,
    digest: &Digest,
    fill: Arc<Fill>,
    file: std::fs::File,
    range: Option<ByteRange>,
) -> Outcome {
    let state = ctx.state.clone();
    let request = blob_request(ctx, name, digest, Method::GET);
    let registry = ctx.registry.clone();
    let repo = name.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task_fill = fill.clone();
    tokio::spawn(async move {
        // Shown as in flight on the status page for as long as this task runs.
        let _download = state
            .metrics
            .download_started(&registry, repo.as_str(), task_fill.clone());
        let started = std::time::Instant::now();
        let response = match state.upstream.send(request).await {
            Ok(r) => r,
            Err(e) => {
                let reason = e.to_string();
                state.cache.abort_fill(&task_fill, &reason);
                let _ = tx.send(Err(Failure::Upstream(e).into_response()));
                return;
            }
        };
        let status = response.status();
        if status != StatusCode::OK {
            state
                .cache
                .abort_fill(&task_fill, &format!("upstream answered {status}"));
            let (parts, incoming) = response.into_parts();
            let mut out = Response::new(body::incoming(incoming));
            *out.status_mut() = status;
            copy_response_headers(&parts.headers, out.headers_mut());
            let _ = tx.send(Err(out));
            return;
        }
        state
            .cache
            .link(&registry, &repo, LinkKind::Blob, &task_fill.digest);
        state.metrics.blob_fetch(&registry);
        let total = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let admitted = {
            let s = state.clone();
            tokio::task::spawn_blocking(move || s.cache.admit(total))
                .await
                .unwrap_or_else(|e| Err(format!("admission task: {e}")))
        };
        if let Err(reason) = admitted {
            // No room: this client gets the upstream body as it is; followers fetch on their own.
            tracing::warn!(digest = %task_fill.digest, %reason, "not caching blob; streaming uncached");
            state.cache.abort_fill(&task_fill, &reason);
            let (parts, incoming) = response.into_parts();
            let mut out = Response::new(body::incoming(incoming));
            *out.status_mut() = parts.status;
            copy_response_headers(&parts.headers, out.headers_mut());
            let _ = tx.send(Err(out));
            return;
        }
        let _ = tx.send(Ok(ratelimit_note(response.headers())));
        let body = response.into_body();
        match state
            .cache
            .run_fill(
                task_fill.clone(),
                file,
                total,
                body,
                state.upstream.read_timeout,
            )
            .await
        {
            Ok(FillEnd::Committed(len)) => {
                state.metrics.upstream_bytes(&registry, len);
                state.metrics.fill_done(&registry, started.elapsed());
                tracing::debug!(digest = %task_fill.digest, len, "blob committed");
            }
            Ok(FillEnd::Uncached { len, reason }) => {
                state.metrics.upstream_bytes(&registry, len);
                state.metrics.fill_done(&registry, started.elapsed());
                tracing::warn!(digest = %task_fill.digest, len, %reason, "blob streamed uncached: the cache disk failed");
            }
            Err(reason) => {
                state
                    .metrics
                    .upstream_failed(&registry, None, UpstreamFault::Download);
                tracing::warn!(digest = %task_fill.digest, %reason, "blob download failed; nothing cached")
            }
        }
    });
    match rx.await {
        Ok(Ok(note)) => {
            ctx.upstream_served(name);
            let total = fill.started().await.ok().flatten();
            let Some(response) = from_fill(digest, &fill, total, range) else {
                return stream_uncached(ctx, name, digest).await;
            };
            let mut outcome = Outcome::new(response, Verdict::Miss);
            outcome.upstream_bytes = total.unwrap_or(0);
            outcome.note = note;
            outcome
        }
        Ok(Err(response)) => {
            let verdict = if response.status() == StatusCode::OK {
                Verdict::Pass
            } else {
                Verdict::Miss
            };
            Outcome::new(response, verdict)
        }
        Err(_) => Outcome::new(
            Failure::Internal {
                message: "download task ended unexpectedly".into(),
            }
            .into_response(),
            Verdict::Miss,
        ),
    }
}

/// Asks upstream whether `name` holds `digest` (HEAD) and records the link if so.
async fn confirm(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Result<(), Outcome> {
    match ctx
        .state
        .upstream
        .send(blob_request(ctx, name, digest, Method::HEAD))
        .await
    {
        Ok(response) if response.status() == StatusCode::OK => {
            ctx.upstream_served(name);
            ctx.state
                .cache
                .link(&ctx.registry, name, LinkKind::Blob, digest);
            Ok(())
        }
        Ok(response) => {
            let status = response.status();
            let code = match status {
                StatusCode::NOT_FOUND => ErrorCode::BlobUnknown,
                StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
                StatusCode::FORBIDDEN => ErrorCode::Denied,
                _ => ErrorCode::Unavailable,
            };
            Err(Outcome::new(
                Failure::UpstreamStatus {
                    status,
                    code,
                    what: format!("{name}@{digest}"),
                }
                .into_response(),
                Verdict::Pass,
            ))
        }
        Err(e) => Err(Outcome::new(
            Failure::Upstream(e).into_response(),
            Verdict::Pass,
        )),
    }
}

/// A client `HEAD` for a blob we do not hold stays a `HEAD` upstream.
async fn head_upstream(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Outcome {
    if let Err(refusal) = ctx.may_fetch(name) {
        return Outcome::new(refusal.into_response(), Verdict::Local);
    }
    match ctx
        .state
        .upstream
        .send(blob_request(ctx, name, digest, Method::HEAD))
        .await
    {
        Ok(response) => {
            if response.status() == StatusCode::OK {
                ctx.upstream_served(name);
                ctx.state
                    .cache
                    .link(&ctx.registry, name, LinkKind::Blob, digest);
            }
            let mut out = Response::new(body::empty());
            *out.status_mut() = response.status();
            copy_response_headers(response.headers(), out.headers_mut());
            Outcome::new(out, Verdict::Miss)
        }
        Err(e) => Outcome::new(Failure::Upstream(e).into_response(), Verdict::Miss),
    }
}

/// Passes the blob through without caching (the store could not take it).
async fn stream_uncached(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Outcome {
    if let Err(refusal) = ctx.may_fetch(name) {
        return Outcome::new(refusal.into_response(), Verdict::Local);
    }
    let mut request = blob_request(ctx, name, digest, ctx.method.clone());
    if let Some(range) = ctx.headers.get(RANGE) {
        request.headers.insert(RANGE, range.clone());
    }
    match ctx.state.upstream.send(request).await {
        Ok(response) => {
            let (parts, incoming) = response.into_parts();
            let mut out = Response::new(body::incoming(incoming));
            *out.status_mut() = parts.status;
            copy_response_headers(&parts.headers, out.headers_mut());
            Outcome::new(out, Verdict::Pass)
        }
        Err(e) => Outcome::new(Failure::Upstream(e).into_response(), Verdict::Pass),
    }
}

fn blob_request(
    ctx: &Ctx<'_>,
    name: &RepoName,
    digest: &Digest,
    method: Method,
) -> UpstreamRequest {
    UpstreamRequest {
        registry: ctx.registry.clone(),
        method,
        path_and_query: format!("/v2/{name}/blobs/{digest}"),
        headers: http::HeaderMap::new(),
        body: body::empty(),
        scope: pull_scope(name),
        auth: ctx.upstream_auth(),
    }
}

/// Response head, first byte, and last byte (inclusive; `None` for an empty or unknown-length body).
type Window = (Response<()>, u64, Option<u64>);

/// Response headers and the byte window for a blob of `len` bytes and an optional range.
/// `Err` is the 416 response.
fn window(
    digest: &Digest,
    len: Option<u64>,
    range: Option<ByteRange>,
) -> Result<Window, Box<Response<Body>>> {
    let mut response = Response::new(());
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(digest.as_ref()) {
        h.insert(CONTENT_DIGEST, v.clone());
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
            h.insert(http::header::ETAG, etag);
        }
    }
    let Some(len) = len else {
        // Unknown length (upstream sent none): the whole body, chunked.
        return Ok((response, 0, None));
    };
    match range {
        Some(range) => match range.resolve(len) {
            Some((start, end)) => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let h = response.headers_mut();
                h.insert(CONTENT_LENGTH, HeaderValue::from(end - start + 1));
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                    h.insert(CONTENT_RANGE, v);
                }
                Ok((response, start, Some(end)))
            }
            None => Err(Box::new(
                Failure::Range {
                    message: format!("range not satisfiable for a blob of {len} bytes"),
                    len: Some(len),
                }
                .into_response(),
            )),
        },
        None => {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
            Ok((response, 0, len.checked_sub(1)))
        }
    }
}

fn from_store(
    ctx: &Ctx<'_>,
    digest: &Digest,
    len: u64,
    range: Option<ByteRange>,
) -> Response<Body> {
    let (head, start, end) = match window(digest, Some(len), range) {
        Ok(w) => w,
        Err(response) => return *response,
    };
    let body = match (ctx.method == Method::HEAD, end) {
        (true, _) | (false, None) => body::empty(),
        (false, Some(end)) => stream_body(ctx.state.cache.blob_stream(digest, start, end)),
    };
    head.map(|()| body)
}

/// A response streamed from a download in flight; `None` if the download can no longer serve it
/// (it went uncached and the bytes needed are gone from memory).
fn from_fill(
    digest: &Digest,
    fill: &Arc<Fill>,
    total: Option<u64>,
    range: Option<ByteRange>,
) -> Option<Response<Body>> {
    let (head, start, end) = match window(digest, total, range) {
        Ok(w) => w,
        Err(response) => return Some(*response),
    };
    if total == Some(0) {
        return Some(head.map(|()| body::empty()));
    }
    let reader = fill.reader(start, end)?;
    Some(head.map(|()| stream_body(reader)))
}

fn stream_body(
    stream: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
) -> Body {
    let frames = stream
        .map_ok(Frame::data)
        .map_err(|e| -> BoxError { Box::new(e) });
    BodyExt::boxed(StreamBody::new(frames))
}
