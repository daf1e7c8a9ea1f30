//! Logs and metrics: one line per registry request with its cache verdict as a word of its own,
//! written when the response body has been sent (so bytes and duration are real), and Prometheus
//! counters. Never a credential or token: requests are described by registry, repository and
//! reference only.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Served from the cache without contacting upstream.
    Hit,
    /// Fetched from upstream (or joined a download in flight).
    Miss,
    /// A cached tag confirmed by an upstream `HEAD`.
    Revalidated,
    /// Served from the cache because upstream failed.
    Stale,
    /// Not cacheable: passed through to upstream.
    Pass,
    /// Answered by the proxy itself (`/v2/`, errors before any upstream contact).
    Local,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Hit => "HIT",
            Verdict::Miss => "MISS",
            Verdict::Revalidated => "REVALIDATED",
            Verdict::Stale => "STALE",
            Verdict::Pass => "PASS",
            Verdict::Local => "LOCAL",
        }
    }

    const ALL: [Verdict; 6] = [
        Verdict::Hit,
        Verdict::Miss,
        Verdict::Revalidated,
        Verdict::Stale,
        Verdict::Pass,
        Verdict::Local,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Process-wide counters, exported at `GET /metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Log request lines as structured fields (`LOG_FORMAT=json`) rather than one text line.
    pub json: bool,
    requests: [AtomicU64; 6],
    bytes_sent: [AtomicU64; 6],
    pub upstream_bytes: AtomicU64,
    pub upstream_blob_fetches: AtomicU64,
    pub tunnels: AtomicU64,
    pub tunnel_bytes: AtomicU64,
    pub aborted_responses: AtomicU64,
}

impl Metrics {
    /// Counters at zero; `json` selects structured request log lines.
    pub fn new(json: bool) -> Metrics {
        Metrics {
            json,
            ..Default::default()
        }
    }

    /// Prometheus text exposition; `cache_bytes` and `cache_entries` describe the store.
    pub fn render(&self, cache_bytes: u64, cache_entries: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP registry_proxy_requests_total Registry requests by cache verdict.\n");
        out.push_str("# TYPE registry_proxy_requests_total counter\n");
        for v in Verdict::ALL {
            let n = self.requests[v.index()].load(Ordering::Relaxed);
            out.push_str(&format!(
                "registry_proxy_requests_total{{verdict=\"{v}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP registry_proxy_sent_bytes_total Response body bytes sent to clients by verdict.\n");
        out.push_str("# TYPE registry_proxy_sent_bytes_total counter\n");
        for v in Verdict::ALL {
            let n = self.bytes_sent[v.index()].load(Ordering::Relaxed);
            out.push_str(&format!(
                "registry_proxy_sent_bytes_total{{verdict=\"{v}\"}} {n}\n"
            ));
        }
        let scalars: [(&str, &str, &str, u64); 7] = [
            (
                "registry_proxy_upstream_bytes_total",
                "counter",
                "Body bytes received from upstreams.",
                self.upstream_bytes.load(Ordering::Relaxed),
            ),
            (
                "registry_proxy_upstream_blob_fetches_total",
                "counter",
                "Blob downloads started upstream.",
                self.upstream_blob_fetches.load(Ordering::Relaxed),
            ),
            (
                "registry_proxy_tunnels_total",
                "counter",
                "Blind CONNECT tunnels.",
                self.tunnels.load(Ordering::Relaxed),
            ),
            (
                "registry_proxy_tunnel_bytes_total",
                "counter",
                "Bytes relayed by blind tunnels.",
                self.tunnel_bytes.load(Ordering::Relaxed),
            ),
            (
                "registry_proxy_aborted_responses_total",
                "counter",
                "Responses aborted mid-body.",
                self.aborted_responses.load(Ordering::Relaxed),
            ),
            (
                "registry_proxy_cache_bytes",
                "gauge",
                "Bytes held in the cache.",
                cache_bytes,
            ),
            (
                "registry_proxy_cache_entries",
                "gauge",
                "Blobs and manifests held in the cache.",
                cache_entries as u64,
            ),
        ];
        for (name, kind, help, value) in scalars {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        out
    }
}

/// Everything the request log line says.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub verdict: Verdict,
    pub method: String,
    pub registry: String,
    pub repository: String,
    pub kind: &'static str,
    pub reference: String,
    pub status: u16,
    pub upstream_bytes: u64,
    /// Extra facts worth a field (e.g. Docker Hub's `ratelimit-remaining`).
    pub note: Option<String>,
}

/// A response body that counts what it sends and writes the request's log line when it ends,
/// fails, or is dropped by a client that went away.
pub struct LoggedBody {
    inner: Body,
    log: Option<RequestLog>,
    metrics: Arc<Metrics>,
    started: Instant,
    sent: u64,
    /// `Content-Length` of the response, if known: reaching it means the body is complete even if
    /// the server drops the body without polling it to its end.
    expected: Option<u64>,
}

impl LoggedBody {
    pub fn new(
        inner: Body,
        log: RequestLog,
        metrics: Arc<Metrics>,
        started: Instant,
        expected: Option<u64>,
    ) -> LoggedBody {
        LoggedBody {
            inner,
            log: Some(log),
            metrics,
            started,
            sent: 0,
            expected,
        }
    }

    fn finish(&mut self, outcome: &str) {
        let Some(log) = self.log.take() else { return };
        let v = log.verdict.index();
        self.metrics.requests[v].fetch_add(1, Ordering::Relaxed);
        self.metrics.bytes_sent[v].fetch_add(self.sent, Ordering::Relaxed);
        if outcome != "complete" {
            self.metrics
                .aborted_responses
                .fetch_add(1, Ordering::Relaxed);
        }
        let duration_ms = self.started.elapsed().as_millis() as u64;
        if self.metrics.json {
            tracing::info!(
                target: "registry_proxy::access",
                verdict = log.verdict.as_str(),
                method = %log.method,
                registry = %log.registry,
                repository = %log.repository,
                kind = log.kind,
                reference = %log.reference,
                status = log.status,
                bytes = self.sent,
                duration_ms,
                upstream_bytes = log.upstream_bytes,
                outcome,
                note = log.note.as_deref().unwrap_or(""),
                "request"
            );
        } else {
            tracing::info!(
                target: "registry_proxy::access",
                "{} {} {} {} {} {} {} bytes={} ms={} upstream_bytes={}{}{}",
                log.verdict,
                log.method,
                log.registry,
                log.repository,
                log.kind,
                log.reference,
                log.status,
                self.sent,
                duration_ms,
                log.upstream_bytes,
                if outcome == "complete" { String::new() } else { format!(" outcome={outcome}") },
                log.note.map(|n| format!(" {n}")).unwrap_or_default(),
            );
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("aborted"),
            Poll::Ready(None) => self.finish("complete"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() || self.expected.is_some_and(|n| n == self.sent) {
            self.finish("complete");
        } else {
            self.finish("client-gone");
        }
    }
}

/// Installs the global log subscriber (`text` or `json`), `debug` raising the level.
pub fn init_logging(format: crate::config::LogFormat, debug: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if debug {
        "debug,hyper=info,rustls=info,h2=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::config::LogFormat::Text => builder.with_target(false).try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    let _ = result;
}
