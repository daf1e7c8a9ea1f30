//! Prometheus metrics: atomic counters and histograms updated on the request path, rendered as
//! the text exposition format (HELP, TYPE, samples) at `GET /metrics`.
//!
//! Per-registry series are keyed by a fixed table built at start-up: Docker Hub, the configured
//! `REGISTRIES`, and `other` for everything else (registries reached through `MIRROR_ANY`), so no
//! client can create series. Each slot is a block of atomics; the hot path is a table lookup and a
//! few relaxed increments.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, StatusCode};

use super::Verdict;
use crate::registry::host::RegistryHost;

/// The label value of registries outside the configured set.
pub const OTHER: &str = "other";

/// Upper bounds of the time-to-first-byte buckets, in seconds.
const TTFB_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the download (fill) duration buckets, in seconds.
const FILL_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// A Prometheus histogram over fixed buckets.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// One counter per bound plus `+Inf` (not cumulative; summed when rendered).
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Observations so far (the `+Inf` bucket).
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Writes `_bucket`, `_sum` and `_count` samples with `labels` (`a="b",c="d"` or empty). The
    /// count is the sum of the buckets read, so `+Inf` and `_count` always agree.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

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
    const ALL: [UpstreamFault; 10] = [
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

    fn index(self) -> usize {
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
    const ALL: [Refusal; 8] = [
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

    fn reason(self) -> &'static str {
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

    fn status(self) -> u16 {
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
    const ALL: [VerifyResult; 4] = [
        VerifyResult::Remembered,
        VerifyResult::Accepted,
        VerifyResult::Refused,
        VerifyResult::Unavailable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            VerifyResult::Remembered => "remembered",
            VerifyResult::Accepted => "accepted",
            VerifyResult::Refused => "refused",
            VerifyResult::Unavailable => "unavailable",
        }
    }
}

const METHODS: [&str; 3] = ["GET", "HEAD", "other"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        _ => 2,
    }
}

fn counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// Everything counted for one registry label.
#[derive(Debug)]
pub(crate) struct PerRegistry {
    pub(crate) requests: [AtomicU64; 6],
    pub(crate) sent: [AtomicU64; 6],
    pub(crate) ttfb: [Histogram; 6],
    upstream_requests: [AtomicU64; 3],
    upstream_errors: [AtomicU64; 10],
    pub(crate) upstream_bytes: AtomicU64,
    blob_fetches: AtomicU64,
    pub(crate) fill: Histogram,
    /// Docker Hub's `ratelimit-remaining` / `ratelimit-limit` as last seen; -1: never seen.
    ratelimit_remaining: AtomicI64,
    ratelimit_limit: AtomicI64,
    /// Unix milliseconds of the last usable upstream answer and of the last failure; 0: never.
    last_ok_ms: AtomicU64,
    last_error_ms: AtomicU64,
    /// `UpstreamFault::index() + 1` of the last failure; 0: none.
    last_fault: AtomicU64,
    verify: [AtomicU64; 4],
}

impl PerRegistry {
    fn new() -> PerRegistry {
        PerRegistry {
            requests: counters(),
            sent: counters(),
            ttfb: std::array::from_fn(|_| Histogram::new(TTFB_BUCKETS)),
            upstream_requests: counters(),
            upstream_errors: counters(),
            upstream_bytes: AtomicU64::new(0),
            blob_fetches: AtomicU64::new(0),
            fill: Histogram::new(FILL_BUCKETS),
            ratelimit_remaining: AtomicI64::new(-1),
            ratelimit_limit: AtomicI64::new(-1),
            last_ok_ms: AtomicU64::new(0),
            last_error_ms: AtomicU64::new(0),
            last_fault: AtomicU64::new(0),
            verify: counters(),
        }
    }
}

/// An upstream's health and quota as the status page shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamHealth {
    pub registry: String,
    /// Unix milliseconds of the last usable answer, if any.
    pub last_ok_ms: Option<u64>,
    /// Unix milliseconds of the last failure, if any, and its kind.
    pub last_error_ms: Option<u64>,
    pub last_error: Option<&'static str>,
    pub requests: u64,
    pub errors: u64,
    pub ratelimit_remaining: Option<i64>,
    pub ratelimit_limit: Option<i64>,
}

/// The store's figures at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheFacts {
    pub bytes: u64,
    pub entries: u64,
    pub max_bytes: u64,
    pub free_bytes: Option<u64>,
    pub evictions: u64,
    pub evicted_bytes: u64,
}

/// Process-wide gauges and counters that are not per registry.
#[derive(Debug, Default)]
pub(crate) struct Global {
    pub(crate) aborted_responses: AtomicU64,
    /// Body bytes the kernel sent straight from cache files (`sendfile`, see `zero_copy`).
    pub(crate) zero_copy_bytes: AtomicU64,
    /// Responses whose body was handed to the kernel that way.
    pub(crate) zero_copy_responses: AtomicU64,
    pub(crate) tunnels: AtomicU64,
    pub(crate) tunnels_open: AtomicU64,
    pub(crate) tunnel_bytes: AtomicU64,
    pub(crate) refusals: [AtomicU64; 8],
}

/// The fixed table of registry labels and their counters.
#[derive(Debug)]
pub(crate) struct Table {
    /// Label values: Docker Hub, the configured registries, and [`OTHER`] last.
    pub(crate) names: Vec<String>,
    pub(crate) slots: Vec<PerRegistry>,
}

impl Table {
    pub(crate) fn new(registries: &[RegistryHost]) -> Table {
        let mut names = vec![RegistryHost::docker_hub().to_string()];
        for r in registries {
            let name = r.to_string();
            if !names.contains(&name) && name != OTHER {
                names.push(name);
            }
        }
        names.push(OTHER.to_owned());
        let slots = names.iter().map(|_| PerRegistry::new()).collect();
        Table { names, slots }
    }

    /// The slot of a registry's label (its canonical name), `other` if not in the table.
    pub(crate) fn slot(&self, name: &str) -> usize {
        let last = self.names.len() - 1;
        self.names[..last]
            .iter()
            .position(|n| n == name)
            .unwrap_or(last)
    }

    pub(crate) fn get(&self, slot: usize) -> &PerRegistry {
        &self.slots[slot.min(self.slots.len() - 1)]
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The number in a `ratelimit-remaining`/`ratelimit-limit` value (`76;w=21600` → 76).
pub fn parse_ratelimit(value: &str) -> Option<i64> {
    let n = value.split(';').next()?.trim();
    n.parse::<u32>().ok().map(i64::from)
}

impl super::Metrics {
    /// Counts an upstream answer: health, Docker Hub's rate-limit headers, 5xx and 429 as errors.
    pub fn upstream_answered(
        &self,
        registry: &RegistryHost,
        method: &Method,
        status: StatusCode,
        headers: &HeaderMap,
    ) {
        let per = self.table.get(self.slot_of(registry));
        per.upstream_requests[method_index(method)].fetch_add(1, Relaxed);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_ratelimit)
        };
        if let Some(n) = header("ratelimit-remaining") {
            per.ratelimit_remaining.store(n, Relaxed);
        }
        if let Some(n) = header("ratelimit-limit") {
            per.ratelimit_limit.store(n, Relaxed);
        }
        let fault = if status.is_server_error() {
            Some(UpstreamFault::Status5xx)
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Some(UpstreamFault::Status429)
        } else {
            None
        };
        match fault {
            Some(fault) => self.record_fault(per, fault),
            None => per.last_ok_ms.store(unix_ms(), Relaxed),
        }
    }

    /// Counts an upstream exchange that failed without an answer (or a download that failed).
    pub fn upstream_failed(
        &self,
        registry: &RegistryHost,
        method: Option<&Method>,
        fault: UpstreamFault,
    ) {
        let per = self.table.get(self.slot_of(registry));
        if let Some(method) = method {
            per.upstream_requests[method_index(method)].fetch_add(1, Relaxed);
        }
        self.record_fault(per, fault);
    }

    fn record_fault(&self, per: &PerRegistry, fault: UpstreamFault) {
        per.upstream_errors[fault.index()].fetch_add(1, Relaxed);
        per.last_error_ms.store(unix_ms(), Relaxed);
        per.last_fault.store(fault.index() as u64 + 1, Relaxed);
    }

    /// Body bytes received from `registry`.
    pub fn upstream_bytes(&self, registry: &RegistryHost, n: u64) {
        let per = self.table.get(self.slot_of(registry));
        per.upstream_bytes.fetch_add(n, Relaxed);
    }

    /// A blob download started upstream.
    pub fn blob_fetch(&self, registry: &RegistryHost) {
        let per = self.table.get(self.slot_of(registry));
        per.blob_fetches.fetch_add(1, Relaxed);
    }

    /// A blob download that ended with the whole blob (committed or streamed uncached).
    pub fn fill_done(&self, registry: &RegistryHost, took: Duration) {
        self.table.get(self.slot_of(registry)).fill.observe(took);
    }

    /// A refusal by the proxy itself.
    pub fn refused(&self, refusal: Refusal) {
        let i = Refusal::ALL.iter().position(|r| *r == refusal).unwrap_or(0);
        self.global.refusals[i].fetch_add(1, Relaxed);
    }

    /// A response body handed to the kernel with `sendfile` (`zero_copy`).
    pub fn zero_copy_response(&self) {
        self.global.zero_copy_responses.fetch_add(1, Relaxed);
    }

    /// Body bytes the kernel sent straight from a cache file.
    pub fn zero_copy_sent(&self, bytes: u64) {
        self.global.zero_copy_bytes.fetch_add(bytes, Relaxed);
    }

    /// A `verify`-mode check's result.
    pub fn verify_check(&self, registry: &RegistryHost, result: VerifyResult) {
        let per = self.table.get(self.slot_of(registry));
        per.verify[result as usize].fetch_add(1, Relaxed);
    }

    /// A blind tunnel opened; the guard counts it closed (with its bytes) when dropped.
    pub fn tunnel_opened(self: &std::sync::Arc<Self>) -> TunnelGuard {
        self.global.tunnels.fetch_add(1, Relaxed);
        self.global.tunnels_open.fetch_add(1, Relaxed);
        TunnelGuard {
            metrics: self.clone(),
            bytes: 0,
        }
    }

    /// Blind tunnels open now.
    pub fn tunnels_open(&self) -> u64 {
        self.global.tunnels_open.load(Relaxed)
    }

    /// Health, request and error counts, and quota of every registry in the table that has been
    /// asked anything (`other` only then too).
    pub fn upstream_health(&self) -> Vec<UpstreamHealth> {
        let nonzero = |n: u64| (n != 0).then_some(n);
        let known = |n: i64| (n >= 0).then_some(n);
        self.table
            .names
            .iter()
            .zip(&self.table.slots)
            .filter_map(|(name, per)| {
                let requests: u64 = per.upstream_requests.iter().map(|c| c.load(Relaxed)).sum();
                let errors: u64 = per.upstream_errors.iter().map(|c| c.load(Relaxed)).sum();
                if name == OTHER && requests == 0 && errors == 0 {
                    return None;
                }
                let fault = per.last_fault.load(Relaxed);
                Some(UpstreamHealth {
                    registry: name.clone(),
                    last_ok_ms: nonzero(per.last_ok_ms.load(Relaxed)),
                    last_error_ms: nonzero(per.last_error_ms.load(Relaxed)),
                    last_error: usize::try_from(fault)
                        .ok()
                        .and_then(|f| f.checked_sub(1))
                        .and_then(|f| UpstreamFault::ALL.get(f))
                        .map(|f| f.as_str()),
                    requests,
                    errors,
                    ratelimit_remaining: known(per.ratelimit_remaining.load(Relaxed)),
                    ratelimit_limit: known(per.ratelimit_limit.load(Relaxed)),
                })
            })
            .collect()
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, cache: &CacheFacts) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let t = &self.table;
        let label = |i: usize| escape(&t.names[i]);
        let each = |out: &mut String, name: &str, f: &dyn Fn(&PerRegistry) -> u64| {
            for (i, per) in t.slots.iter().enumerate() {
                let _ = writeln!(out, "{name}{{registry=\"{}\"}} {}", label(i), f(per));
            }
        };

        let _ = writeln!(
            out,
            "# HELP registry_proxy_build_info The running version.\n# TYPE registry_proxy_build_info gauge\nregistry_proxy_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP registry_proxy_start_time_seconds When the proxy started (Unix time).\n# TYPE registry_proxy_start_time_seconds gauge\nregistry_proxy_start_time_seconds {}",
            self.started_unix
        );

        head(
            &mut out,
            "registry_proxy_requests_total",
            "counter",
            "Registry requests by registry and cache verdict.",
        );
        for (i, per) in t.slots.iter().enumerate() {
            for v in Verdict::ALL {
                let n = per.requests[v.index()].load(Relaxed);
                let _ = writeln!(
                    out,
                    "registry_proxy_requests_total{{registry=\"{}\",verdict=\"{v}\"}} {n}",
                    label(i)
                );
            }
        }
        head(
            &mut out,
            "registry_proxy_sent_bytes_total",
            "counter",
            "Response body bytes sent to clients by registry and verdict (HIT, REVALIDATED and STALE bytes are upstream bytes saved).",
        );
        for (i, per) in t.slots.iter().enumerate() {
            for v in Verdict::ALL {
                let n = per.sent[v.index()].load(Relaxed);
                let _ = writeln!(
                    out,
                    "registry_proxy_sent_bytes_total{{registry=\"{}\",verdict=\"{v}\"}} {n}",
                    label(i)
                );
            }
        }
        head(
            &mut out,
            "registry_proxy_time_to_first_byte_seconds",
            "histogram",
            "Time from a registry request's arrival to the first byte of its response body.",
        );
        for (i, per) in t.slots.iter().enumerate() {
            for v in Verdict::ALL {
                let h = &per.ttfb[v.index()];
                if h.count() > 0 {
                    let labels = format!("registry=\"{}\",verdict=\"{v}\"", label(i));
                    h.render(
                        &mut out,
                        "registry_proxy_time_to_first_byte_seconds",
                        &labels,
                    );
                }
            }
        }
        head(
            &mut out,
            "registry_proxy_aborted_responses_total",
            "counter",
            "Responses that ended before their last byte (client gone, upstream failed).",
        );
        let _ = writeln!(
            out,
            "registry_proxy_aborted_responses_total {}",
            self.global.aborted_responses.load(Relaxed)
        );
        head(
            &mut out,
            "registry_proxy_zero_copy_responses_total",
            "counter",
            "Blob responses on plain-HTTP connections whose body went out with sendfile(2).",
        );
        let _ = writeln!(
            out,
            "registry_proxy_zero_copy_responses_total {}",
            self.global.zero_copy_responses.load(Relaxed)
        );
        head(
            &mut out,
            "registry_proxy_zero_copy_bytes_total",
            "counter",
            "Body bytes sent with sendfile(2) straight from cache files.",
        );
        let _ = writeln!(
            out,
            "registry_proxy_zero_copy_bytes_total {}",
            self.global.zero_copy_bytes.load(Relaxed)
        );

        head(
            &mut out,
            "registry_proxy_upstream_requests_total",
            "counter",
            "Requests sent to upstream registries by method (token fetches and redirects not counted).",
        );
        for (i, per) in t.slots.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                let n = per.upstream_requests[m].load(Relaxed);
                let _ = writeln!(
                    out,
                    "registry_proxy_upstream_requests_total{{registry=\"{}\",method=\"{method}\"}} {n}",
                    label(i)
                );
            }
        }
        head(
            &mut out,
            "registry_proxy_upstream_errors_total",
            "counter",
            "Upstream failures by kind: no answer (unreachable, timeout, token, token_denied, redirect, request, policy), 5xx and 429 answers, and downloads that failed mid-body (download).",
        );
        for (i, per) in t.slots.iter().enumerate() {
            for fault in UpstreamFault::ALL {
                let n = per.upstream_errors[fault.index()].load(Relaxed);
                let _ = writeln!(
                    out,
                    "registry_proxy_upstream_errors_total{{registry=\"{}\",kind=\"{}\"}} {n}",
                    label(i),
                    fault.as_str()
                );
            }
        }
        head(
            &mut out,
            "registry_proxy_upstream_bytes_total",
            "counter",
            "Body bytes received from upstream registries (blobs and manifests).",
        );
        each(&mut out, "registry_proxy_upstream_bytes_total", &|p| {
            p.upstream_bytes.load(Relaxed)
        });
        head(
            &mut out,
            "registry_proxy_upstream_blob_fetches_total",
            "counter",
            "Blob downloads started upstream.",
        );
        each(
            &mut out,
            "registry_proxy_upstream_blob_fetches_total",
            &|p| p.blob_fetches.load(Relaxed),
        );
        head(
            &mut out,
            "registry_proxy_upstream_ratelimit_remaining",
            "gauge",
            "Pulls left in the upstream's rate-limit window (Docker Hub's ratelimit-remaining header), as last seen.",
        );
        for (i, per) in t.slots.iter().enumerate() {
            let n = per.ratelimit_remaining.load(Relaxed);
            if n >= 0 {
                let _ = writeln!(
                    out,
                    "registry_proxy_upstream_ratelimit_remaining{{registry=\"{}\"}} {n}",
                    label(i)
                );
            }
        }
        head(
            &mut out,
            "registry_proxy_upstream_ratelimit_limit",
            "gauge",
            "Pulls allowed per rate-limit window (Docker Hub's ratelimit-limit header), as last seen.",
        );
        for (i, per) in t.slots.iter().enumerate() {
            let n = per.ratelimit_limit.load(Relaxed);
            if n >= 0 {
                let _ = writeln!(
                    out,
                    "registry_proxy_upstream_ratelimit_limit{{registry=\"{}\"}} {n}",
                    label(i)
                );
            }
        }
        head(
            &mut out,
            "registry_proxy_upstream_last_success_timestamp_seconds",
            "gauge",
            "When the upstream last gave a usable answer (Unix time).",
        );
        for (i, per) in t.slots.iter().enumerate() {
            let ms = per.last_ok_ms.load(Relaxed);
            if ms > 0 {
                let _ = writeln!(
                    out,
                    "registry_proxy_upstream_last_success_timestamp_seconds{{registry=\"{}\"}} {}",
                    label(i),
                    ms as f64 / 1000.0
                );
            }
        }
        head(
            &mut out,
            "registry_proxy_upstream_last_error_timestamp_seconds",
            "gauge",
            "When the upstream last failed (Unix time).",
        );
        for (i, per) in t.slots.iter().enumerate() {
            let ms = per.last_error_ms.load(Relaxed);
            if ms > 0 {
                let _ = writeln!(
                    out,
                    "registry_proxy_upstream_last_error_timestamp_seconds{{registry=\"{}\"}} {}",
                    label(i),
                    ms as f64 / 1000.0
                );
            }
        }

        head(
            &mut out,
            "registry_proxy_downloads_in_flight",
            "gauge",
            "Blob downloads into the cache in progress.",
        );
        let in_flight = self.downloads_by_slot(t.slots.len());
        for (i, n) in in_flight.iter().enumerate() {
            let _ = writeln!(
                out,
                "registry_proxy_downloads_in_flight{{registry=\"{}\"}} {n}",
                label(i)
            );
        }
        head(
            &mut out,
            "registry_proxy_fill_duration_seconds",
            "histogram",
            "Duration of blob downloads into the cache, from the upstream request to the verified last byte.",
        );
        for (i, per) in t.slots.iter().enumerate() {
            if per.fill.count() > 0 {
                let labels = format!("registry=\"{}\"", label(i));
                per.fill
                    .render(&mut out, "registry_proxy_fill_duration_seconds", &labels);
            }
        }

        let scalars: [(&str, &str, &str, Option<u64>); 6] = [
            (
                "registry_proxy_cache_bytes",
                "gauge",
                "Bytes of blobs and manifests held in the cache.",
                Some(cache.bytes),
            ),
            (
                "registry_proxy_cache_max_bytes",
                "gauge",
                "The cache's size cap (CACHE_MAX_SIZE).",
                Some(cache.max_bytes),
            ),
            (
                "registry_proxy_cache_entries",
                "gauge",
                "Blobs and manifests held in the cache.",
                Some(cache.entries),
            ),
            (
                "registry_proxy_cache_filesystem_free_bytes",
                "gauge",
                "Bytes available on the cache's file system.",
                cache.free_bytes,
            ),
            (
                "registry_proxy_cache_evictions_total",
                "counter",
                "Cache entries evicted (size cap, CACHE_MIN_FREE, CACHE_INACTIVE).",
                Some(cache.evictions),
            ),
            (
                "registry_proxy_cache_evicted_bytes_total",
                "counter",
                "Bytes evicted from the cache.",
                Some(cache.evicted_bytes),
            ),
        ];
        for (name, kind, help, value) in scalars {
            head(&mut out, name, kind, help);
            if let Some(value) = value {
                let _ = writeln!(out, "{name} {value}");
            }
        }

        let g = &self.global;
        let tunnels: [(&str, &str, &str, u64); 3] = [
            (
                "registry_proxy_tunnels_open",
                "gauge",
                "Blind CONNECT tunnels open now.",
                g.tunnels_open.load(Relaxed),
            ),
            (
                "registry_proxy_tunnels_total",
                "counter",
                "Blind CONNECT tunnels opened.",
                g.tunnels.load(Relaxed),
            ),
            (
                "registry_proxy_tunnel_bytes_total",
                "counter",
                "Bytes relayed by closed blind tunnels (both directions).",
                g.tunnel_bytes.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in tunnels {
            head(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }

        head(
            &mut out,
            "registry_proxy_refusals_total",
            "counter",
            "Requests the proxy refused itself, by reason and status (407 proxy_auth; 401 admin_auth, login, verify; 403 rules, verify, tunnel_policy, not_configured).",
        );
        for (i, refusal) in Refusal::ALL.iter().enumerate() {
            let n = g.refusals[i].load(Relaxed);
            let _ = writeln!(
                out,
                "registry_proxy_refusals_total{{reason=\"{}\",status=\"{}\"}} {n}",
                refusal.reason(),
                refusal.status()
            );
        }
        head(
            &mut out,
            "registry_proxy_verify_checks_total",
            "counter",
            "verify-mode checks of a client's upstream credential before cached content goes out, by result.",
        );
        for (i, per) in t.slots.iter().enumerate() {
            for result in VerifyResult::ALL {
                let n = per.verify[result as usize].load(Relaxed);
                let _ = writeln!(
                    out,
                    "registry_proxy_verify_checks_total{{registry=\"{}\",result=\"{}\"}} {n}",
                    label(i),
                    result.as_str()
                );
            }
        }
        out
    }
}

/// Counts a blind tunnel closed when dropped, with the bytes it relayed.
pub struct TunnelGuard {
    metrics: std::sync::Arc<super::Metrics>,
    bytes: u64,
}

impl TunnelGuard {
    /// Bytes relayed, counted when the tunnel closes.
    pub fn relayed(&mut self, bytes: u64) {
        self.bytes = bytes;
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        let g = &self.metrics.global;
        g.tunnels_open.fetch_sub(1, Relaxed);
        g.tunnel_bytes.fetch_add(self.bytes, Relaxed);
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and line breaks escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratelimit_values() {
        assert_eq!(parse_ratelimit("76;w=21600"), Some(76));
        assert_eq!(parse_ratelimit(" 100 "), Some(100));
        assert_eq!(parse_ratelimit("0"), Some(0));
        assert_eq!(parse_ratelimit("-1"), None);
        assert_eq!(parse_ratelimit("many"), None);
        assert_eq!(parse_ratelimit(""), None);
    }

    #[test]
    fn histogram_is_cumulative_and_counts_agree() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "a=\"b\"");
        assert_eq!(
            out,
            "x_seconds_bucket{a=\"b\",le=\"0.1\"} 1\nx_seconds_bucket{a=\"b\",le=\"1\"} 2\nx_seconds_bucket{a=\"b\",le=\"+Inf\"} 3\nx_seconds_sum{a=\"b\"} 5.55\nx_seconds_count{a=\"b\"} 3\n"
        );
    }

    #[test]
    fn unknown_registries_share_one_label() {
        let table = Table::new(&[RegistryHost::parse("quay.io").unwrap()]);
        assert_eq!(table.names, ["docker.io", "quay.io", "other"]);
        assert_eq!(table.slot("docker.io"), 0);
        assert_eq!(table.slot("quay.io"), 1);
        assert_eq!(table.slot("evil.example"), 2);
        assert_eq!(table.slot("other"), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
