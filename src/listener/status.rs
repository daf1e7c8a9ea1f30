//! The operator's pages: `GET /metrics` (Prometheus), `GET /status.json` (what the status page
//! polls), and `GET /`: an HTML page for browsers (`Accept: text/html`), a text summary for
//! everything else (curl). The HTML page is self-contained (no external assets, works offline);
//! its one inline script and style carry a per-response nonce that a strict
//! `Content-Security-Policy` allows, and nothing else.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::{self, Body};
use crate::cache::RepoSize;
use crate::cache::catalog::human_bytes;
use crate::serve::State;
use crate::serve::error::text;
use crate::telemetry::{CacheFacts, DownloadView, Interval, RepoUse, Totals, UpstreamHealth};

/// The page, with `{{NONCE}}` and `{{VERSION}}` to fill in.
const PAGE: &str = include_str!("status.html");
/// Rows of the "largest" and "most used" tables.
const TOP: usize = 10;

/// Everything the status page shows, as `GET /status.json` returns it.
#[derive(Debug, Serialize)]
struct Snapshot {
    version: &'static str,
    /// Unix seconds now and at start.
    now: u64,
    started: u64,
    totals: Totals,
    /// Per minute, oldest first; the last one is the minute in progress.
    history: Vec<Interval>,
    downloads: Vec<DownloadView>,
    registries: Vec<UpstreamHealth>,
    cache: CacheView,
    largest: Vec<RepoSize>,
    most_used: Vec<RepoUse>,
    tunnels_open: u64,
}

#[derive(Debug, Serialize)]
struct CacheView {
    bytes: u64,
    max_bytes: u64,
    entries: u64,
    free_bytes: Option<u64>,
    evictions: u64,
    evicted_bytes: u64,
}

fn cache_facts(state: &State) -> CacheFacts {
    let (evictions, evicted_bytes) = state.cache.evictions();
    let (bucket_collected, bucket_collected_bytes) = state.cache.bucket_collected();
    CacheFacts {
        bucket_collected,
        bucket_collected_bytes,
        bytes: state.cache.size(),
        entries: state.cache.entries() as u64,
        max_bytes: state.config.cache_max_size,
        free_bytes: state.cache.free_space(),
        evictions,
        evicted_bytes,
    }
}

async fn snapshot(state: &Arc<State>) -> Snapshot {
    let metrics = &state.metrics;
    let facts = cache_facts(state);
    let walker = state.clone();
    let largest = tokio::task::spawn_blocking(move || walker.cache.largest_repositories())
        .await
        .map(|sizes| sizes.iter().take(TOP).cloned().collect())
        .unwrap_or_default();
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        now: crate::cache::unix_now(),
        started: metrics.started_unix(),
        totals: metrics.totals(),
        history: metrics.history(),
        downloads: metrics.downloads(),
        registries: metrics.upstream_health(),
        cache: CacheView {
            bytes: facts.bytes,
            max_bytes: facts.max_bytes,
            entries: facts.entries,
            free_bytes: facts.free_bytes,
            evictions: facts.evictions,
            evicted_bytes: facts.evicted_bytes,
        },
        largest,
        most_used: metrics.most_used(TOP),
        tunnels_open: metrics.tunnels_open(),
    }
}

/// `GET /metrics`.
pub(super) fn metrics(state: &State) -> Response<Body> {
    let rendered = state.metrics.render(&cache_facts(state));
    respond(rendered.into(), "text/plain; version=0.0.4; charset=utf-8")
}

/// `GET /status.json`.
pub(super) async fn json(state: &Arc<State>) -> Response<Body> {
    match serde_json::to_vec(&snapshot(state).await) {
        Ok(bytes) => respond(bytes.into(), "application/json"),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render the status: {e}\n"),
        ),
    }
}

/// `GET /`: HTML for browsers, text otherwise.
pub(super) async fn page(state: &Arc<State>, headers: &HeaderMap) -> Response<Body> {
    if !wants_html(headers) {
        let summary = text_summary(state, &snapshot(state).await);
        return respond(summary.into(), "text/plain; charset=utf-8");
    }
    let mut nonce = [0u8; 18];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).is_err() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for the page's nonce\n",
        );
    }
    let nonce = base64::engine::general_purpose::STANDARD.encode(nonce);
    let html = PAGE
        .replace("{{NONCE}}", &nonce)
        .replace("{{VERSION}}", env!("CARGO_PKG_VERSION"));
    let mut r = respond(html.into(), "text/html; charset=utf-8");
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let h = r.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        h.insert(http::header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    r
}

/// True if the client prefers HTML: `Accept` names `text/html` (browsers), and not after
/// `text/plain`.
fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let position = |media: &str| {
        accept.split(',').position(|part| {
            let mut params = part.split(';');
            let name = params.next().unwrap_or("").trim();
            let refused = params.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case(media) && !refused
        })
    };
    match (position("text/html"), position("text/plain")) {
        (Some(html), Some(plain)) => html < plain,
        (Some(_), None) => true,
        _ => false,
    }
}

fn respond(bytes: Bytes, content_type: &'static str) -> Response<Body> {
    let len = bytes.len();
    let mut r = Response::new(body::full(bytes));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn ago(ms: u64, now: u64) -> String {
    format!("{}s ago", now.saturating_sub(ms / 1000))
}

fn text_summary(state: &State, s: &Snapshot) -> String {
    let mut out = String::new();
    let t = &s.totals;
    let _ = writeln!(
        out,
        "registry-proxy {} (up {}s)\n",
        s.version,
        s.now.saturating_sub(s.started)
    );
    let answered = t.hits + t.misses;
    let ratio = if answered == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", t.hits as f64 * 100.0 / answered as f64)
    };
    let _ = writeln!(
        out,
        "requests: {} from cache, {} from upstream (hit ratio {ratio})",
        t.hits, t.misses
    );
    let _ = writeln!(
        out,
        "bytes: {} served, {} saved from cache, {} fetched upstream",
        human_bytes(t.sent_bytes),
        human_bytes(t.saved_bytes),
        human_bytes(t.upstream_bytes)
    );
    let c = &s.cache;
    let _ = writeln!(
        out,
        "cache: {} entries, {} bytes (cap {}), {} of {} used{}",
        c.entries,
        c.bytes,
        c.max_bytes,
        human_bytes(c.bytes),
        human_bytes(c.max_bytes),
        c.free_bytes
            .map(|f| format!(", {} free on disk", human_bytes(f)))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "\ndownloads in flight: {}", s.downloads.len());
    for d in &s.downloads {
        let progress = match d.total {
            Some(total) if total > 0 => format!(
                "{} of {} ({:.0}%)",
                human_bytes(d.bytes),
                human_bytes(total),
                d.bytes as f64 * 100.0 / total as f64
            ),
            _ => human_bytes(d.bytes),
        };
        let _ = writeln!(
            out,
            "  {}/{} {} {progress} {}s {}",
            d.registry, d.repository, d.digest, d.seconds as u64, d.state
        );
    }
    let _ = writeln!(out, "\nupstreams:");
    for r in &s.registries {
        let health = match (r.last_ok_ms, r.last_error_ms) {
            (ok, Some(err)) if ok.is_none_or(|ok| err > ok) => format!(
                "failing ({} {})",
                r.last_error.unwrap_or("error"),
                ago(err, s.now)
            ),
            (Some(ok), _) => format!("ok (last answer {})", ago(ok, s.now)),
            _ => "not asked yet".to_owned(),
        };
        let quota = match (r.ratelimit_remaining, r.ratelimit_limit) {
            (Some(left), Some(limit)) => format!(", pulls left {left} of {limit}"),
            (Some(left), None) => format!(", pulls left {left}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<24} {health}, {} requests, {} errors{quota}",
            r.registry, r.requests, r.errors
        );
    }
    if !s.largest.is_empty() {
        let _ = writeln!(out, "\nlargest cached images:");
        for r in &s.largest {
            let _ = writeln!(out, "  {:<48} {:>10}", r.image, human_bytes(r.bytes));
        }
    }
    if !s.most_used.is_empty() {
        let _ = writeln!(out, "\nmost used images since start:");
        for r in &s.most_used {
            let _ = writeln!(out, "  {:<48} {:>6} pulls", r.image, r.pulls);
        }
    }
    let registries: Vec<String> = state
        .config
        .registries
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(
        out,
        "\nintercepted registries: docker.io {}\nopen tunnels: {}\n\nGET /ca.crt       the CA to trust for HTTPS_PROXY mode\nGET /metrics      Prometheus metrics\nGET /status.json  this summary as JSON (a browser gets an HTML page at /)\nGET /healthz      liveness\n/v2/...           registry mirror (?ns=<registry> or /v2/<registry>/<repo>/...)",
        registries.join(" "),
        s.tunnels_open
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn browsers_get_html_and_curl_gets_text() {
        let chromium =
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(wants_html(&accept(chromium)));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept("text/plain")));
        assert!(!wants_html(&accept("text/plain, text/html")));
        assert!(wants_html(&accept("text/html, text/plain")));
        assert!(!wants_html(&accept("text/html;q=0, text/plain")));
    }

    #[test]
    fn units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn the_page_has_no_unfilled_slots_but_the_two_placeholders() {
        assert_eq!(PAGE.matches("{{NONCE}}").count(), 2);
        assert_eq!(PAGE.matches("{{").count(), 3);
        assert!(
            !PAGE.contains(" src=") && !PAGE.contains("href=\"http") && !PAGE.contains("url("),
            "no external assets"
        );
        assert!(
            !PAGE.contains(" style=\""),
            "inline style attributes break the CSP"
        );
    }
}
