//! Blobs: served from the cache once the repository is known to hold them, with `Range`; on a
//! miss the cache downloads the blob once, and every concurrent client streams from that download.
//!
//! A request reads top to bottom: accept (its `Range`) → identify (the caller did: `ctx.client`) →
//! policy (may this client make the proxy fetch? then it hands the cache a source) →
//! `cache.get_or_fill` → policy for cached bytes (the repository link, `verify` mode), before any
//! byte → respond.

use std::sync::Arc;

use futures_util::TryStreamExt;
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::error::Failure;
use super::{
    CONTENT_DIGEST, Client, Ctx, Outcome, State, copy_response_headers, pull_scope, ratelimit_note,
};
use crate::body::{self, Body, BoxError};
use crate::cache::{Fill, FillEnd, FillSource, Got, Growing, LinkKind, Opened, StoredBlob};
use crate::peer::Owner;
use crate::registry::digest::Digest;
use crate::registry::error::ErrorCode;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;
use crate::registry::range::{ByteRange, parse_range};
use crate::telemetry::{DownloadGuard, UpstreamFault, Verdict};
use crate::upstream::{UpstreamAuth, UpstreamRequest};

/// Who asks for a blob.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// A client: the rules apply, and a miss may be forwarded to the blob's owner replica.
    Client,
    /// A peer replica that found this one the owner: it checked its client already, and this
    /// replica downloads the blob itself.
    Peer,
}

pub(super) async fn handle(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Outcome {
    serve(ctx, name, digest, Caller::Client).await
}

/// A blob a peer replica asks this one for, as its owner (`peer/listen.rs`): served like the GET
/// of an anonymous client whose access the peer checked (with the central credentials in `central`
/// mode, anonymously in `verify` mode, where a private repository is refused and the peer fetches
/// with its client's own credentials), never forwarded again. Only for registries this proxy caches.
pub(crate) async fn for_peer(
    state: &Arc<State>,
    registry: RegistryHost,
    name: RepoName,
    digest: Digest,
) -> Response<Body> {
    let cached = state.config.intercepts(&registry)
        || state.config.mirror == crate::config::MirrorPolicy::Any;
    if !cached {
        return Failure::denied(format!("{registry} is not cached here")).into_response();
    }
    let ctx = Ctx {
        state,
        registry,
        method: Method::GET,
        headers: http::HeaderMap::new(),
        query: None,
        client: Client::anonymous(String::new()),
        live: state.live(),
    };
    let outcome = serve(&ctx, &name, &digest, Caller::Peer).await;
    tracing::info!(
        verdict = ?outcome.verdict,
        registry = %ctx.registry,
        repository = %name,
        %digest,
        status = outcome.response.status().as_u16(),
        "PEER blob"
    );
    outcome.response
}

async fn serve(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest, caller: Caller) -> Outcome {
    let range = match requested_range(ctx) {
        Ok(range) => range,
        Err(malformed) => return Outcome::new(malformed.into_response(), Verdict::Local),
    };
    // Only a GET starts a download, and only for a client that may make the proxy fetch.
    let fetch = match caller {
        Caller::Client => ctx.may_fetch(name),
        Caller::Peer => Ok(()),
    };
    let source = (ctx.method == Method::GET && fetch.is_ok()).then(|| {
        // The owner fetches with the proxy's central credentials or none: a download that needs
        // this client's own credentials stays with the replica that has them.
        let forward = caller == Caller::Client
            && matches!(
                ctx.upstream_auth(),
                UpstreamAuth::Central | UpstreamAuth::Anonymous
            );
        UpstreamBlob::new(
            ctx.state,
            ctx.request(name, digest, Method::GET),
            name,
            digest,
            forward,
        )
    });
    match ctx.state.cache.get_or_fill(digest, source).await {
        Got::Stored(blob) => {
            if let Err(outcome) = may_read_stored(ctx, name, digest).await {
                return outcome;
            }
            Outcome::new(from_store(ctx, digest, &blob, range), Verdict::Hit)
        }
        // A client HEAD for a blob we do not hold stays a HEAD upstream.
        Got::Joined(_) | Got::Absent if ctx.method == Method::HEAD => {
            head_upstream(ctx, name, digest).await
        }
        Got::Joined(blob) => {
            if let Err(outcome) = may_read_joined(ctx, name, digest).await {
                return outcome;
            }
            match from_fill(digest, &blob, range) {
                Some(response) => Outcome::new(response, Verdict::Miss),
                // The download went uncached and what we need is gone from memory.
                None => stream_uncached(ctx, name, digest).await,
            }
        }
        Got::Started { blob, head } => {
            ctx.upstream_served(name);
            let Some(response) = from_fill(digest, &blob, range) else {
                return stream_uncached(ctx, name, digest).await;
            };
            let mut outcome = Outcome::new(response, Verdict::Miss);
            outcome.upstream_bytes = blob.size().unwrap_or(0);
            outcome.note = ratelimit_note(&head.headers);
            outcome
        }
        // Upstream's error status, or the error reaching it.
        Got::Refused(response) => Outcome::new(response, Verdict::Miss),
        // No room in the cache: this client gets the upstream body as it is.
        Got::Bypass(opened) => Outcome::new(passthrough(opened.head, opened.body), Verdict::Pass),
        Got::Absent => match fetch {
            Err(refusal) => Outcome::new(refusal.into_response(), Verdict::Local),
            Ok(()) => stream_uncached(ctx, name, digest).await,
        },
        Got::Uncached(_) => stream_uncached(ctx, name, digest).await,
    }
}

/// The client's `Range`, or why it is malformed (a 416).
fn requested_range(ctx: &Ctx<'_>) -> Result<Option<ByteRange>, Failure> {
    match ctx.headers.get(RANGE).map(|v| v.to_str().map(parse_range)) {
        None => Ok(None),
        Some(Ok(Ok(range))) => Ok(range),
        Some(_) => Err(Failure::Range {
            message: "malformed Range header".into(),
            len: None,
        }),
    }
}

/// Before any byte of a stored blob: served for a repository known to hold it (to clients upstream
/// accepts, in `verify` mode), or once upstream confirms this repository has it too.
async fn may_read_stored(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Result<(), Outcome> {
    let cache = &ctx.state.cache;
    if cache
        .is_linked(&ctx.registry, name, LinkKind::Blob, digest)
        .await
    {
        let probe = format!("/v2/{name}/blobs/{digest}");
        return ctx
            .verify_cached(name, &probe, None)
            .await
            .map_err(|refusal| Outcome::new(refusal.into_response(), Verdict::Local));
    }
    confirm(ctx, name, digest).await
}

/// Before any byte of someone else's download: joining one is reading what the cache holds.
async fn may_read_joined(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Result<(), Outcome> {
    let probe = format!("/v2/{name}/blobs/{digest}");
    if let Err(refusal) = ctx.verify_cached(name, &probe, None).await {
        return Err(Outcome::new(refusal.into_response(), Verdict::Local));
    }
    if ctx
        .state
        .cache
        .is_linked(&ctx.registry, name, LinkKind::Blob, digest)
        .await
    {
        return Ok(());
    }
    confirm(ctx, name, digest).await
}

/// The download a fill is filled from: the blob's owner replica, if it is another and answers
/// (`PEERS`), else the upstream GET. The cache runs it in a task of its own (the download outlives
/// the client that started it); the blob is linked once either answers 200, and upstream fetches
/// and bytes are counted here, by the replica that made them.
struct UpstreamBlob {
    state: Arc<State>,
    request: Option<UpstreamRequest>,
    registry: RegistryHost,
    name: RepoName,
    digest: Digest,
    /// Ask the owner replica first.
    forward: bool,
    /// The bytes came from a peer, not from upstream.
    from_peer: bool,
    /// Shows the download as in flight on the status page until the source is done.
    shown: Option<DownloadGuard>,
    /// When the source was opened.
    started: std::time::Instant,
}

impl UpstreamBlob {
    fn new(
        state: &Arc<State>,
        request: UpstreamRequest,
        name: &RepoName,
        digest: &Digest,
        forward: bool,
    ) -> Self {
        UpstreamBlob {
            state: state.clone(),
            registry: request.registry.clone(),
            request: Some(request),
            name: name.clone(),
            digest: digest.clone(),
            forward,
            from_peer: false,
            shown: None,
            started: std::time::Instant::now(),
        }
    }

    /// The owner replica's growing download, if another replica owns the blob and serves it.
    async fn ask_owner(&self) -> Option<Opened<http::response::Parts>> {
        let peers = self.state.peers.as_ref().filter(|_| self.forward)?;
        let Owner::Peer(owner) = peers.owner(&self.digest) else {
            return None;
        };
        let response = match peers
            .fetch(owner, &self.registry, &self.name, &self.digest)
            .await
        {
            Ok(response) => response,
            Err(reason) => {
                tracing::info!(%owner, %reason, digest = %self.digest, "owner replica unreachable; fetching from upstream");
                peers.lost(owner);
                return None;
            }
        };
        if response.status() != StatusCode::OK {
            tracing::info!(%owner, status = response.status().as_u16(), digest = %self.digest, "owner replica did not serve the blob; fetching from upstream");
            return None;
        }
        let len = content_length(response.headers());
        let (head, incoming) = response.into_parts();
        Some(Opened {
            head,
            len,
            body: body::incoming(incoming),
            idle: self.state.upstream.read_timeout,
            // The owner uploads what it downloads.
            upload: false,
        })
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

impl FillSource for UpstreamBlob {
    type Head = http::response::Parts;
    type Refusal = Response<Body>;

    async fn open(&mut self, download: &Arc<Fill>) -> Result<Opened<Self::Head>, Self::Refusal> {
        self.started = std::time::Instant::now();
        self.shown = Some(self.state.metrics.download_started(
            &self.registry,
            self.name.as_str(),
            download.clone(),
        ));
        if let Some(opened) = self.ask_owner().await {
            self.from_peer = true;
            self.state
                .cache
                .link(&self.registry, &self.name, LinkKind::Blob, &self.digest)
                .await;
            return Ok(opened);
        }
        let Some(request) = self.request.take() else {
            return Err(Failure::Internal {
                message: "blob source opened twice".into(),
            }
            .into_response());
        };
        let response = match self.state.upstream.send(request).await {
            Ok(response) => response,
            Err(e) => return Err(Failure::Upstream(e).into_response()),
        };
        if response.status() != StatusCode::OK {
            let (head, incoming) = response.into_parts();
            return Err(passthrough(head, body::incoming(incoming)));
        }
        self.state
            .cache
            .link(&self.registry, &self.name, LinkKind::Blob, &self.digest)
            .await;
        self.state.metrics.blob_fetch(&self.registry);
        let len = content_length(response.headers());
        let (head, incoming) = response.into_parts();
        Ok(Opened {
            head,
            len,
            body: body::incoming(incoming),
            idle: self.state.upstream.read_timeout,
            upload: true,
        })
    }

    fn finished(self, end: &Result<FillEnd, String>) {
        // Counted by the replica that went upstream.
        if self.from_peer {
            return;
        }
        let metrics = &self.state.metrics;
        match end {
            Ok(FillEnd::Committed(len) | FillEnd::Uncached { len, .. }) => {
                metrics.upstream_bytes(&self.registry, *len);
                metrics.fill_done(&self.registry, self.started.elapsed());
            }
            Err(_) => metrics.upstream_failed(&self.registry, None, UpstreamFault::Download),
        }
    }
}

/// An upstream response passed to the client as it is (status, end-to-end headers, body).
fn passthrough(head: http::response::Parts, body: Body) -> Response<Body> {
    let mut out = Response::new(body);
    *out.status_mut() = head.status;
    copy_response_headers(&head.headers, out.headers_mut());
    out
}

/// Asks upstream whether `name` holds `digest` (HEAD) and records the link if so.
async fn confirm(ctx: &Ctx<'_>, name: &RepoName, digest: &Digest) -> Result<(), Outcome> {
    match ctx
        .state
        .upstream
        .send(ctx.request(name, digest, Method::HEAD))
        .await
    {
        Ok(response) if response.status() == StatusCode::OK => {
            ctx.upstream_served(name);
            ctx.state
                .cache
                .link(&ctx.registry, name, LinkKind::Blob, digest)
                .await;
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
        .send(ctx.request(name, digest, Method::HEAD))
        .await
    {
        Ok(response) => {
            if response.status() == StatusCode::OK {
                ctx.upstream_served(name);
                ctx.state
                    .cache
                    .link(&ctx.registry, name, LinkKind::Blob, digest)
                    .await;
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
    let mut request = ctx.request(name, digest, ctx.method.clone());
    if let Some(range) = ctx.headers.get(RANGE) {
        request.headers.insert(RANGE, range.clone());
    }
    match ctx.state.upstream.send(request).await {
        Ok(response) => {
            let (head, incoming) = response.into_parts();
            Outcome::new(passthrough(head, body::incoming(incoming)), Verdict::Pass)
        }
        Err(e) => Outcome::new(Failure::Upstream(e).into_response(), Verdict::Pass),
    }
}

impl Ctx<'_> {
    /// The upstream request for a blob, with this client's upstream credentials (or the proxy's).
    fn request(&self, name: &RepoName, digest: &Digest, method: Method) -> UpstreamRequest {
        UpstreamRequest {
            registry: self.registry.clone(),
            method,
            path_and_query: format!("/v2/{name}/blobs/{digest}"),
            headers: http::HeaderMap::new(),
            body: body::empty(),
            scope: pull_scope(name),
            auth: self.upstream_auth(),
        }
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
    blob: &StoredBlob,
    range: Option<ByteRange>,
) -> Response<Body> {
    let (head, start, end) = match window(digest, Some(blob.size()), range) {
        Ok(w) => w,
        Err(response) => return *response,
    };
    let body = match (ctx.method == Method::HEAD, end) {
        (true, _) | (false, None) => body::empty(),
        (false, Some(end)) => zero_copy_body(ctx, digest, blob, start, end)
            .unwrap_or_else(|| stream_body(blob.reader(start, end))),
    };
    head.map(|()| body)
}

/// Bytes `start..=end` of a stored blob sent by the kernel from its cache file (`sendfile`), on a
/// plain-TCP connection with zero-copy on and for a blob committed to the local disk; `None`
/// otherwise (TLS, the bucket tier, a copy from it still in flight: the ordinary stream).
fn zero_copy_body(
    ctx: &Ctx<'_>,
    digest: &Digest,
    blob: &StoredBlob,
    start: u64,
    end: u64,
) -> Option<Body> {
    let sink = ctx.client.zero_copy.as_ref().filter(|s| s.is_on())?;
    let file = ctx.state.cache.open_local_blob(digest, blob.size())?;
    Some(sink.body(file, start, end - start + 1))
}

/// A response streamed from a download in flight; `None` if the download can no longer serve it
/// (it went uncached and the bytes needed are gone from memory).
fn from_fill(digest: &Digest, blob: &Growing, range: Option<ByteRange>) -> Option<Response<Body>> {
    let total = blob.size();
    let (head, start, end) = match window(digest, total, range) {
        Ok(w) => w,
        Err(response) => return Some(*response),
    };
    if total == Some(0) {
        return Some(head.map(|()| body::empty()));
    }
    let reader = blob.reader(start, end)?;
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
