//! Upstream access logs: request counts from the upstream registries' own logs, pushes into the
//! shared storage and direct requests.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::env::Env;

/// `(GET, HEAD)` counts per blob digest.
pub(crate) type BlobCounts = BTreeMap<String, (u64, u64)>;

/// Counts `GET`/`HEAD /v2/{repo}/blobs/{digest}` lines in a distribution access log.
fn count_blob_requests(log: &Path, repo: &str, digests: &[String]) -> BlobCounts {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts: BlobCounts = digests.iter().map(|d| (d.clone(), (0, 0))).collect();
    let paths: HashMap<String, &String> = digests
        .iter()
        .map(|d| (format!("/v2/{repo}/blobs/{d}"), d))
        .collect();
    for line in text.lines() {
        let Some((method, path)) = access_log_request(line) else {
            continue;
        };
        let path = path.split('?').next().unwrap_or(path);
        if let Some(d) = paths.get(path) {
            let c = counts.get_mut(*d).expect("digest counted");
            match method {
                "GET" => c.0 += 1,
                "HEAD" => c.1 += 1,
                _ => {}
            }
        }
    }
    counts
}

/// `127.0.0.1 - alice [28/Nov/2026:02:35:55 +0000] "GET /v2/ HTTP/1.1" 200 …` → `("GET", "/v2/")`.
fn access_log_request(line: &str) -> Option<(&str, &str)> {
    let (before, rest) = line.split_once('"')?;
    if !before.ends_with("] ") {
        return None;
    }
    let (request, _) = rest.split_once('"')?;
    let mut parts = request.split(' ');
    Some((parts.next()?, parts.next()?))
}

/// `… "GET /v2/x/blobs/sha256:… HTTP/1.1" 401 …` → `("GET", "/v2/x/blobs/sha256:…", 401)`.
fn access_log_entry(line: &str) -> Option<(&str, &str, u16)> {
    let (method, path) = access_log_request(line)?;
    let (_, rest) = line.split_once('"')?;
    let (_, after) = rest.split_once('"')?;
    let status = after.split_whitespace().next()?.parse().ok()?;
    Some((method, path, status))
}

/// One request an upstream registry logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logged {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
}

/// Every request an upstream logged for one repository (`/v2/<repo>/…`, any method and status):
/// a snapshot, then what came after it.
pub(crate) struct RepoLog<'a> {
    env: &'a Env,
    pub(crate) host: String,
    pub(crate) repo: String,
    before: usize,
}

impl<'a> RepoLog<'a> {
    pub(crate) fn new(env: &'a Env, host: &str, repo: &str) -> RepoLog<'a> {
        let mut log = RepoLog {
            env,
            host: host.to_owned(),
            repo: repo.to_owned(),
            before: 0,
        };
        log.reset();
        log
    }

    fn all(&self) -> Vec<Logged> {
        let text = std::fs::read_to_string(self.env.log_of(&self.host)).unwrap_or_default();
        let prefix = format!("/v2/{}/", self.repo);
        text.lines()
            .filter_map(access_log_entry)
            .filter(|(_, path, _)| {
                path.strip_prefix(&prefix).is_some_and(|rest| {
                    ["manifests/", "blobs/", "tags/"]
                        .iter()
                        .any(|k| rest.starts_with(k))
                })
            })
            .map(|(method, path, status)| Logged {
                method: method.to_owned(),
                path: path.to_owned(),
                status,
            })
            .collect()
    }

    /// Requests since the snapshot (after settling the log).
    pub(crate) fn since(&self) -> Vec<Logged> {
        settle(self.env, &self.host);
        self.all().into_iter().skip(self.before).collect()
    }

    /// Takes a new snapshot.
    pub(crate) fn reset(&mut self) {
        settle(self.env, &self.host);
        self.before = self.all().len();
    }

    /// Since the snapshot, upstream sent no content of the repository: no successful `GET` (nor
    /// any `GET` at all when `any_get`); `HEAD`s are allowed.
    pub(crate) fn assert_no_get(&self, what: &str, any_get: bool) {
        let since = self.since();
        let bad: Vec<&Logged> = since
            .iter()
            .filter(|l| l.method == "GET" && (any_get || (200..400).contains(&l.status)))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: {} answered {} GET(s) for {} since the snapshot: {bad:#?}",
            self.host,
            bad.len(),
            self.repo
        );
    }
}

/// Copies `from` to `to` (`repo:tag`, same digests) in the shared storage through the plain-HTTP
/// push registry: the copy is at once readable from every registry of the environment, under a
/// repository name no other test uses. Idempotent.
pub(crate) fn push_copy(from: &str, to: &str) {
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "-q",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://127.0.0.1:5000/{from}"))
        .arg(format!("docker://127.0.0.1:5000/{to}"))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo copy");
    assert!(
        out.status.success(),
        "skopeo copy 127.0.0.1:5000/{from} -> {to} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes sure every request an upstream answered so far is in its access log: sends a request with a
/// unique path directly to `host` and waits for its line (lines are written after the response).
pub(crate) fn settle(env: &Env, host: &str) {
    static N: AtomicU64 = AtomicU64::new(0);
    let nonce = format!(
        "e2e-settle-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&env.upstream_ca)
        .arg(format!("https://{host}/v2/{nonce}/tags/list"))
        .status()
        .expect("run curl");
    assert!(
        status.success(),
        "curl https://{host}/v2/… failed: {status}"
    );
    let log = env.log_of(host);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains(&nonce) && access_log_request(l).is_some())
        {
            // the proxy's requests finished before the client's pull did; give the registry's
            // log writer a moment for anything finishing at the same instant
            std::thread::sleep(Duration::from_millis(100));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host}: sentinel request not in {} after 10 s",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The HTTP status an anonymous client gets for `path` directly from `host`.
pub(crate) fn direct_status(env: &Env, host: &str, path: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&env.upstream_ca)
        .arg(format!("https://{host}{path}"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Watches the upstream's blob requests for one repository: snapshot, then deltas.
pub(crate) struct Watch<'a> {
    env: &'a Env,
    pub(crate) host: String,
    pub(crate) repo: String,
    digests: Vec<String>,
    before: BlobCounts,
}

impl<'a> Watch<'a> {
    pub(crate) fn new(env: &'a Env, host: &str, repo: &str, digests: &[String]) -> Watch<'a> {
        settle(env, host);
        let before = count_blob_requests(&env.log_of(host), repo, digests);
        Watch {
            env,
            host: host.to_owned(),
            repo: repo.to_owned(),
            digests: digests.to_vec(),
            before,
        }
    }

    /// Requests since the snapshot (after settling the log).
    pub(crate) fn delta(&self) -> BlobCounts {
        settle(self.env, &self.host);
        let now = count_blob_requests(&self.env.log_of(&self.host), &self.repo, &self.digests);
        now.into_iter()
            .map(|(d, (g, h))| {
                let (g0, h0) = self.before.get(&d).copied().unwrap_or((0, 0));
                (d, (g - g0, h - h0))
            })
            .collect()
    }

    /// Takes a new snapshot.
    pub(crate) fn reset(&mut self) {
        settle(self.env, &self.host);
        self.before = count_blob_requests(&self.env.log_of(&self.host), &self.repo, &self.digests);
    }

    /// The first pull reached the upstream: every digest in `fetched` was GET at least once (this also
    /// proves the log being watched is the one the proxy talks to).
    pub(crate) fn assert_fetched(&self, fetched: &[String], what: &str) {
        let d = self.delta();
        let not: Vec<&String> = fetched
            .iter()
            .filter(|x| d.get(*x).is_none_or(|c| c.0 == 0))
            .collect();
        assert!(
            not.is_empty(),
            "{what}: {}/{} never saw a GET for {not:?} (delta {d:?})",
            self.host,
            self.repo
        );
    }

    /// No blob `GET` (nor `HEAD` unless `allow_head`) reached the upstream since the snapshot.
    pub(crate) fn assert_no_blob_requests(&self, what: &str, allow_head: bool) {
        let d = self.delta();
        let bad: Vec<String> = d
            .iter()
            .filter(|(_, (g, h))| *g > 0 || (!allow_head && *h > 0))
            .map(|(dg, (g, h))| format!("{dg}: {g} GET, {h} HEAD"))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: blob requests reached {} for {}:\n{}",
            self.host,
            self.repo,
            bad.join("\n")
        );
    }
}
