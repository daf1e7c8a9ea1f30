//! The Prometheus text exposition (HELP, TYPE, samples) of everything counted.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::CacheFacts;
use super::labels::{METHODS, Refusal, UpstreamFault, VerifyResult};
use super::table::PerRegistry;
use crate::telemetry::Verdict;

impl crate::telemetry::Metrics {
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

        let scalars: [(&str, &str, &str, Option<u64>); 8] = [
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
            (
                "registry_proxy_bucket_collected_total",
                "counter",
                "Blobs and manifests this replica removed from the shared bucket (S3_MAX_SIZE, CACHE_INACTIVE).",
                Some(cache.bucket_collected),
            ),
            (
                "registry_proxy_bucket_collected_bytes_total",
                "counter",
                "Bytes this replica removed from the shared bucket.",
                Some(cache.bucket_collected_bytes),
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

pub(super) fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and line breaks escaped.
pub(super) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
