//! Prometheus metrics: atomic counters and histograms updated on the request path, rendered as
//! the text exposition format (HELP, TYPE, samples) at `GET /metrics`.
//!
//! Per-registry series are keyed by a fixed table built at start-up: Docker Hub, the configured
//! `REGISTRIES`, and `other` for everything else (registries reached through `MIRROR_ANY`), so no
//! client can create series. Each slot is a block of atomics; the hot path is a table lookup and a
//! few relaxed increments.

mod histogram;
mod labels;
mod render;
mod table;

pub use labels::{Refusal, UpstreamFault, VerifyResult};
pub use table::{CacheFacts, UpstreamHealth};
pub(crate) use table::{Global, PerRegistry, Table};

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, StatusCode};

use crate::registry::host::RegistryHost;
use labels::method_index;

/// The label value of registries outside the configured set.
pub const OTHER: &str = "other";

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

#[cfg(test)]
mod tests {
    use super::histogram::Histogram;
    use super::render::escape;
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
