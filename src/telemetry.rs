//! Logs and metrics: one line per registry request with its cache verdict as a word of its own,
//! written when the response body has been sent (so bytes and duration are real), Prometheus
//! metrics (`metrics.rs`) and the status page's live data (`activity.rs`). Never a credential or
//! token: requests are described by registry, repository and reference, clients by address and
//! proxy user name only.

mod activity;
mod metrics;

pub use activity::{DownloadGuard, DownloadView, HISTORY_LEN, Interval, RepoUse, Totals};
pub use metrics::{
    CacheFacts, OTHER, Refusal, TunnelGuard, UpstreamFault, UpstreamHealth, VerifyResult,
    parse_ratelimit,
};

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::registry::host::RegistryHost;

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

/// Process-wide metrics, exported at `GET /metrics`, and what the status page shows.
#[derive(Debug)]
pub struct Metrics {
    /// Log request lines as structured fields (`LOG_FORMAT=json`) rather than one text line.
    pub json: bool,
    started_unix: u64,
    table: metrics::Table,
    global: metrics::Global,
    activity: Mutex<activity::Activity>,
}

impl Metrics {
    /// Counters at zero, per-registry series for Docker Hub, `registries` and `other`; `json`
    /// selects structured request log lines.
    pub fn new(json: bool, registries: &[RegistryHost]) -> Metrics {
        Metrics {
            json,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            table: metrics::Table::new(registries),
            global: metrics::Global::default(),
            activity: Mutex::new(activity::Activity::default()),
        }
    }

    /// When the proxy started (Unix seconds).
    pub fn started_unix(&self) -> u64 {
        self.started_unix
    }

    /// The per-registry slot of `registry` (`other` if it is not configured).
    fn slot_of(&self, registry: &RegistryHost) -> usize {
        self.table.slot(&registry.to_string())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    /// The client's address, when the request came over a network connection.
    pub client: Option<SocketAddr>,
    /// The proxy user, when the client is one (never a credential).
    pub user: Option<String>,
    /// Extra facts worth a field (e.g. Docker Hub's `ratelimit-remaining`).
    pub note: Option<String>,
}

impl RequestLog {
    /// The text log line: verdict, method, registry, repository, kind, reference, status, then
    /// `key=value` fields.
    pub fn text_line(&self, sent: u64, duration_ms: u64, outcome: &str) -> String {
        let mut line = format!(
            "{} {} {} {} {} {} {} bytes={sent} ms={duration_ms} upstream_bytes={}",
            self.verdict,
            self.method,
            self.registry,
            self.repository,
            self.kind,
            self.reference,
            self.status,
            self.upstream_bytes,
        );
        if let Some(client) = self.client {
            line.push_str(&format!(" client={client}"));
        }
        if let Some(user) = &self.user {
            line.push_str(&format!(" user={}", log_word(user)));
        }
        if outcome != "complete" {
            line.push_str(&format!(" outcome={outcome}"));
        }
        if let Some(note) = &self.note {
            line.push(' ');
            line.push_str(note);
        }
        line
    }
}

/// A value that may hold spaces, quotes or control characters (a user name), as one word of a
/// log line: as is if it is plain, else quoted with escapes.
fn log_word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'));
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

/// A response body that counts what it sends and writes the request's log line when it ends,
/// fails, or is dropped by a client that went away.
pub struct LoggedBody {
    inner: Body,
    log: Option<RequestLog>,
    metrics: Arc<Metrics>,
    /// The registry's metrics slot.
    slot: usize,
    started: Instant,
    sent: u64,
    /// True once the time to first byte has been observed.
    first_byte: bool,
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
        let slot = metrics.table.slot(&log.registry);
        LoggedBody {
            inner,
            log: Some(log),
            metrics,
            slot,
            started,
            sent: 0,
            first_byte: false,
            expected,
        }
    }

    fn first_byte(&mut self) {
        if self.first_byte {
            return;
        }
        self.first_byte = true;
        if let Some(log) = &self.log {
            self.metrics.table.get(self.slot).ttfb[log.verdict.index()]
                .observe(self.started.elapsed());
        }
    }

    fn finish(&mut self, outcome: &str) {
        let Some(log) = self.log.take() else { return };
        let v = log.verdict.index();
        let per = self.metrics.table.get(self.slot);
        per.requests[v].fetch_add(1, Ordering::Relaxed);
        per.sent[v].fetch_add(self.sent, Ordering::Relaxed);
        if outcome != "complete" {
            self.metrics
                .global
                .aborted_responses
                .fetch_add(1, Ordering::Relaxed);
        }
        let served = matches!(log.kind, "manifest" | "blob")
            && (200..300).contains(&log.status)
            && log.verdict != Verdict::Local;
        if served {
            let pull = log.kind == "manifest" && log.method == "GET";
            self.metrics
                .record_use(&log.registry, &log.repository, pull, self.sent);
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
                client = log.client.map(|c| c.to_string()).unwrap_or_default(),
                user = log.user.as_deref().unwrap_or(""),
                note = log.note.as_deref().unwrap_or(""),
                "request"
            );
        } else {
            tracing::info!(
                target: "registry_proxy::access",
                "{}",
                log.text_line(self.sent, duration_ms, outcome)
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
                    if !data.is_empty() {
                        self.first_byte();
                    }
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("aborted"),
            Poll::Ready(None) => {
                self.first_byte();
                self.finish("complete")
            }
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
            // An empty body hyper never polled: its first byte is its end.
            self.first_byte();
            self.finish("complete");
        } else {
            self.finish("client-gone");
        }
    }
}

/// Installs the global log subscriber (`text` or `json`), `debug` raising the level. Colours
/// only when stderr is a terminal: a log written to a file or a pipe (journald, `docker logs`,
/// a file) stays plain text.
pub fn init_logging(format: crate::config::LogFormat, debug: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = if debug {
        "debug,hyper=info,rustls=info,h2=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::config::LogFormat::Text => builder.with_target(false).try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> RequestLog {
        RequestLog {
            verdict: Verdict::Hit,
            method: "GET".into(),
            registry: "docker.io".into(),
            repository: "library/alpine".into(),
            kind: "blob",
            reference: "sha256:ab".into(),
            status: 200,
            upstream_bytes: 0,
            client: "10.0.0.5:41234".parse().ok(),
            user: Some("alice".into()),
            note: None,
        }
    }

    #[test]
    fn access_lines_name_the_client_and_the_user() {
        assert_eq!(
            log().text_line(10, 3, "complete"),
            "HIT GET docker.io library/alpine blob sha256:ab 200 bytes=10 ms=3 upstream_bytes=0 client=10.0.0.5:41234 user=alice"
        );
        let mut odd = log();
        odd.user = Some("bob smith\n".into());
        odd.client = None;
        odd.note = Some("ratelimit-remaining=7".into());
        assert_eq!(
            odd.text_line(0, 1, "client-gone"),
            "HIT GET docker.io library/alpine blob sha256:ab 200 bytes=0 ms=1 upstream_bytes=0 user=\"bob smith\\n\" outcome=client-gone ratelimit-remaining=7"
        );
    }

    #[test]
    fn registries_outside_the_configured_set_share_one_series() {
        let quay = RegistryHost::parse("quay.io").unwrap();
        let metrics = Metrics::new(false, std::slice::from_ref(&quay));
        let mut headers = http::HeaderMap::new();
        headers.insert("ratelimit-remaining", "5;w=21600".parse().unwrap());
        for name in ["a.example", "b.example", "c.example:5000"] {
            let host = RegistryHost::parse(name).unwrap();
            metrics.upstream_answered(&host, &http::Method::GET, http::StatusCode::OK, &headers);
        }
        metrics.upstream_answered(
            &quay,
            &http::Method::HEAD,
            http::StatusCode::SERVICE_UNAVAILABLE,
            &http::HeaderMap::new(),
        );
        let text = metrics.render(&CacheFacts::default());
        assert!(text.contains(
            "registry_proxy_upstream_requests_total{registry=\"other\",method=\"GET\"} 3\n"
        ));
        assert!(
            text.contains("registry_proxy_upstream_ratelimit_remaining{registry=\"other\"} 5\n")
        );
        assert!(text.contains(
            "registry_proxy_upstream_errors_total{registry=\"quay.io\",kind=\"status_5xx\"} 1\n"
        ));
        assert!(!text.contains("example"), "{text}");
        let health = metrics.upstream_health();
        let quay_health = health.iter().find(|h| h.registry == "quay.io").unwrap();
        assert_eq!(quay_health.last_error, Some("status_5xx"));
        assert!(quay_health.last_ok_ms.is_none());
    }
}
