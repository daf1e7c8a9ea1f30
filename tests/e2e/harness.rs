//! Shared harness: the real-peer environment (started once per test process by `up.sh`), one real
//! `registry-proxy` process per test, the client wrappers, upstream access-log counting and content
//! checks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where the environment lives. One environment per machine (fixed host names and port 443), so every
/// user of it on a machine should agree on this directory; `REGISTRY_PROXY_E2E_WORKDIR` overrides it.
const DEFAULT_WORKDIR: &str = "/tmp/e2e";

/// Registries the proxy intercepts (besides Docker Hub, always).
pub(crate) const REGISTRIES: &str = "registry.test second.test basic.test token.test";
/// Central credentials held by the proxy.
pub(crate) const AUTH_REGISTRIES: &str =
    "basic.test:alice:s3cret-basic token.test:bob:s3cret-token";

/// The token realms of token.test and the emulated Docker Hub are not registries the proxy
/// intercepts and live on loopback (`auth.test` 127.0.0.5, `auth.docker.io` 127.0.0.7), which the
/// default `TUNNEL_ALLOW` (`*:443`) refuses: name them, as an operator would.
pub(crate) const TUNNEL_ALLOW: &str = "*:443 auth.test:443 auth.docker.io:443";

/// The emulated Docker Hub's registry host (its access log is `logs/registry-1.docker.io.log`).
pub(crate) const HUB: &str = "registry-1.docker.io";

// ------------------------------------------------------------------------------------------------
// Environment

/// One seeded image, from `images.env`.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) repo: String,
    /// Manifest (or index) digest.
    pub(crate) digest: String,
    /// Config digest (empty for an index).
    pub(crate) config: String,
    /// Layer digests and sizes.
    pub(crate) layers: Vec<(String, u64)>,
}

impl Image {
    /// Config and layer digests: every blob a single-platform pull fetches.
    pub(crate) fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if !self.config.is_empty() {
            v.push(self.config.clone());
        }
        v.extend(self.layers.iter().map(|(d, _)| d.clone()));
        v
    }

    pub(crate) fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|(d, _)| d.clone()).collect()
    }
}

pub(crate) struct Env {
    pub(crate) workdir: PathBuf,
    /// `tests/e2e/env` (the scripts).
    pub(crate) scripts: PathBuf,
    pub(crate) upstream_ca: PathBuf,
    vars: HashMap<String, String>,
}

impl Env {
    /// The image whose variables in `images.env` start with `prefix` (`SMALL`, `BIG`, `MULTI_AMD64`…).
    pub(crate) fn image(&self, prefix: &str) -> Image {
        let get = |k: &str| {
            self.vars
                .get(&format!("{prefix}_{k}"))
                .cloned()
                .unwrap_or_default()
        };
        let repo = get("REPO");
        assert!(!repo.is_empty(), "no image {prefix} in images.env");
        let layers = get("LAYERS")
            .split_whitespace()
            .map(|e| {
                let (d, s) = e.rsplit_once(':').expect("LAYERS entry digest:size");
                (d.to_owned(), s.parse().expect("layer size"))
            })
            .collect();
        Image {
            repo,
            digest: get("DIGEST"),
            config: get("CONFIG_DIGEST"),
            layers,
        }
    }

    /// The access log of an upstream registry (`registry.test`, `registry-1.docker.io`, …).
    pub(crate) fn log_of(&self, host: &str) -> PathBuf {
        self.workdir.join("logs").join(format!("{host}.log"))
    }
}

static ENV: OnceLock<Env> = OnceLock::new();

/// The environment, started on first use; `None` (after saying so) unless `REGISTRY_PROXY_E2E=1`.
pub(crate) fn env() -> Option<&'static Env> {
    if std::env::var("REGISTRY_PROXY_E2E").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set REGISTRY_PROXY_E2E=1 to run the end-to-end tests (scripts/test does; needs root, apt and port 443 on loopback)"
        );
        return None;
    }
    Some(ENV.get_or_init(start_env))
}

fn start_env() -> Env {
    let workdir = PathBuf::from(
        std::env::var("REGISTRY_PROXY_E2E_WORKDIR").unwrap_or_else(|_| DEFAULT_WORKDIR.to_owned()),
    );
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/env");
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(scripts.join("up.sh"))
        .arg(&workdir)
        .stdin(Stdio::null())
        .output()
        .expect("run tests/e2e/env/up.sh");
    assert!(
        out.status.success(),
        "tests/e2e/env/up.sh {} failed ({}):\n{}\n{}",
        workdir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "e2e environment up in {:.1}s ({})",
        t0.elapsed().as_secs_f64(),
        workdir.display()
    );
    let mut vars = HashMap::new();
    for file in ["env.sh", "images.env"] {
        let text = std::fs::read_to_string(workdir.join(file)).expect("read env file");
        parse_shell_vars(&text, &mut vars);
    }
    let upstream_ca = PathBuf::from(vars.get("E2E_UPSTREAM_CA").expect("E2E_UPSTREAM_CA"));
    Env {
        workdir,
        scripts,
        upstream_ca,
        vars,
    }
}

/// `export A='x' B=y` / `A='x'  # comment` lines, as up.sh and seed.py write them.
fn parse_shell_vars(text: &str, vars: &mut HashMap<String, String>) {
    for line in text.lines() {
        let line = line.trim().trim_start_matches("export ");
        let mut rest = line;
        while let Some((key, after)) = rest.split_once('=') {
            let key = key.trim();
            if key.is_empty()
                || key.starts_with('#')
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                break;
            }
            let (value, tail) = if let Some(q) = after.strip_prefix('\'') {
                let end = q.find('\'').unwrap_or(q.len());
                (&q[..end], q.get(end + 1..).unwrap_or(""))
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            vars.insert(key.to_owned(), value.to_owned());
            rest = tail.trim_start();
            if rest.starts_with('#') {
                break;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Claims: two tests never count requests for the same upstream repository at the same time.

static CLAIMED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RELEASED: Condvar = Condvar::new();

/// Held while a test counts requests for its `(registry, repository)` pairs.
pub(crate) struct Claim(Vec<String>);

/// Waits until none of `keys` (`(registry, repository)`) is held by another test, then holds them all.
pub(crate) fn claim(keys: &[(&str, &str)]) -> Claim {
    let keys: Vec<String> = keys.iter().map(|(h, r)| format!("{h}/{r}")).collect();
    let mut held = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    while keys.iter().any(|k| held.contains(k)) {
        held = RELEASED.wait(held).unwrap_or_else(|e| e.into_inner());
    }
    held.extend(keys.iter().cloned());
    Claim(keys)
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|k| !self.0.contains(k));
        RELEASED.notify_all();
    }
}

// ------------------------------------------------------------------------------------------------
// The proxy

/// One `registry-proxy` process with its own port, cache and CA, killed on drop (its log is printed
/// when the test failed).
pub(crate) struct Proxy {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    pub(crate) dir: tempfile::TempDir,
    log: PathBuf,
}

impl Proxy {
    /// Starts the proxy with the standard settings (REGISTRIES, AUTH_REGISTRIES, the upstream CA)
    /// plus `extra` environment variables.
    pub(crate) fn start(env: &Env, extra: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("rpe2e-") // short: podman refuses a runroot longer than 50 characters
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("proxy.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_registry-proxy"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .env("LISTEN", "127.0.0.1:0")
            .env("CACHE_DIR", dir.path().join("cache"))
            .env("CA_DIR", dir.path().join("ca"))
            .env("UPSTREAM_CA_FILE", &env.upstream_ca)
            .env("REGISTRIES", REGISTRIES)
            .env("AUTH_REGISTRIES", AUTH_REGISTRIES)
            .env("TUNNEL_ALLOW", TUNNEL_ALLOW);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("proxy.stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("start registry-proxy");
        let mut proxy = Proxy {
            child,
            addr: String::new(),
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = proxy.log_text();
            if let Some(line) = text
                .lines()
                .find(|l| l.contains("registry-proxy listening"))
            {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .unwrap_or_else(|| panic!("no addr= in {line:?}"));
                proxy.addr = addr.to_owned();
                break;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("registry-proxy exited at start ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "registry-proxy did not log 'listening' within 20 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its stderr so far, without ANSI colours.
    pub(crate) fn log_text(&self) -> String {
        let raw = std::fs::read(&self.log).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&raw))
    }

    /// The request log lines so far.
    pub(crate) fn requests(&self) -> Vec<LogLine> {
        self.log_text().lines().filter_map(LogLine::parse).collect()
    }

    /// A position in the request log, for [`Proxy::requests_since`].
    pub(crate) fn mark(&self) -> usize {
        self.requests().len()
    }

    pub(crate) fn requests_since(&self, mark: usize) -> Vec<LogLine> {
        self.requests().into_iter().skip(mark).collect()
    }

    /// Asserts that, since `mark`, the proxy logged `HIT` for a `GET` of every digest in `blobs` on
    /// `registry`/`repo` and no `MISS` for any of them (polls a little: lines are written when
    /// the body ends).
    pub(crate) fn assert_blob_hits(
        &self,
        mark: usize,
        registry: &str,
        repo: &str,
        blobs: &[String],
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.requests_since(mark);
            let of = |d: &str| -> Vec<&LogLine> {
                lines
                    .iter()
                    .filter(|l| {
                        l.kind == "blob"
                            && l.reference == d
                            && l.registry == registry
                            && l.repo == repo
                    })
                    .collect()
            };
            let missing: Vec<&String> = blobs
                .iter()
                .filter(|d| {
                    !of(d).iter().any(|l| {
                        l.verdict == "HIT" && l.method == "GET" && l.status.starts_with('2')
                    })
                })
                .collect();
            let missed: Vec<&LogLine> = blobs
                .iter()
                .flat_map(|d| of(d).into_iter().filter(|l| l.verdict != "HIT"))
                .collect();
            assert!(
                missed.is_empty(),
                "blobs of {registry}/{repo} not served from the cache on the second pull: {missed:#?}"
            );
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no HIT GET logged for {missing:?} of {registry}/{repo}; request lines since the mark:\n{}",
                lines
                    .iter()
                    .map(|l| l.raw.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A directory with the proxy CA as `proxy-ca.pem` (fetched by the wrappers from `GET /ca.crt`).
    pub(crate) fn client_ca_dir(&self) -> PathBuf {
        let d = self.dir.path().join("client-ca");
        std::fs::create_dir_all(&d).expect("mkdir client-ca");
        d
    }

    /// An empty trust directory: a client that falls back from the mirror to the upstream itself
    /// fails (it does not trust the test CA), so a successful mirror pull went through the proxy.
    pub(crate) fn no_ca_dir(&self) -> PathBuf {
        let d = self.dir.path().join("no-ca");
        std::fs::create_dir_all(&d).expect("mkdir no-ca");
        d
    }

    /// A fresh directory under the proxy's tempdir.
    pub(crate) fn scratch(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        assert!(!d.exists(), "scratch dir {name} used twice");
        std::fs::create_dir_all(&d).expect("mkdir scratch");
        d
    }

    /// Runs `registry-proxy setup CLIENT --proxy URL --prefix DIR ARGS…`, applies the printed
    /// script with `sh` and returns DIR.
    pub(crate) fn setup(&self, client: &str, args: &[&str]) -> PathBuf {
        let prefix = self.scratch(&format!("setup-{client}"));
        let out = Command::new(env!("CARGO_BIN_EXE_registry-proxy"))
            .args(["setup", client, "--proxy", &self.url(), "--prefix"])
            .arg(&prefix)
            .args(args)
            .env_remove("REGISTRIES")
            .output()
            .expect("run registry-proxy setup");
        assert!(
            out.status.success(),
            "registry-proxy setup {client} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = prefix.join("setup.sh");
        std::fs::write(&script, &out.stdout).expect("write setup script");
        let run = Command::new("sh")
            .arg(&script)
            .env_remove("PREFIX")
            .output()
            .expect("run setup script");
        assert!(
            run.status.success(),
            "setup script for {client} failed: {}\n--- script:\n{}",
            String::from_utf8_lossy(&run.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        prefix
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- registry-proxy log ({}):\n{}----- end of registry-proxy log",
                self.addr,
                self.log_text()
            );
        }
    }
}

pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One request line of the proxy's log:
/// `<time> INFO HIT GET registry.test test/small blob sha256:… 200 bytes=… ms=… upstream_bytes=…`.
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub(crate) verdict: String,
    pub(crate) method: String,
    pub(crate) registry: String,
    pub(crate) repo: String,
    pub(crate) kind: String,
    pub(crate) reference: String,
    pub(crate) status: String,
    pub(crate) raw: String,
}

impl LogLine {
    pub(crate) fn parse(line: &str) -> Option<LogLine> {
        const VERDICTS: [&str; 6] = ["HIT", "MISS", "REVALIDATED", "STALE", "PASS", "LOCAL"];
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| VERDICTS.contains(w))?;
        let w = words.get(i..i + 7)?;
        Some(LogLine {
            verdict: w[0].to_owned(),
            method: w[1].to_owned(),
            registry: w[2].to_owned(),
            repo: w[3].to_owned(),
            kind: w[4].to_owned(),
            reference: w[5].to_owned(),
            status: w[6].to_owned(),
            raw: line.to_owned(),
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Clients

/// How a client reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `HTTPS_PROXY` + the proxy CA (CONNECT interception).
    Connect,
    /// No proxy environment and no trust in the upstream CA: the client's own mirror configuration.
    Mirror,
}

/// A client wrapper run: `WRAPPER PROXY_URL CA_DIR IMAGE ARGS…` with the state kept in `state`.
pub(crate) struct Pull<'a> {
    pub(crate) wrapper: &'a str,
    pub(crate) image: &'a str,
    pub(crate) args: &'a [&'a str],
    pub(crate) envs: &'a [(&'a str, &'a str)],
}

impl Proxy {
    /// Runs a wrapper from `tests/e2e/env` (`skopeo_pull.sh`, `ctr_pull.sh`, …) and returns its
    /// state directory (skopeo writes `out/` there, ctr `root/`) and stdout. Panics with the client's
    /// output when it fails.
    pub(crate) fn pull(&self, env: &Env, via: Via, p: &Pull<'_>) -> (PathBuf, String) {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = p.wrapper.trim_end_matches(".sh");
        let state = self.dir.path().join(format!("{name}-{n}"));
        let (proxy_url, ca) = match via {
            Via::Connect => (self.url(), self.client_ca_dir()),
            Via::Mirror => ("-".to_owned(), self.no_ca_dir()),
        };
        let t0 = Instant::now();
        let out = Command::new("timeout")
            .arg("300")
            .arg(env.scripts.join(p.wrapper))
            .arg(&proxy_url)
            .arg(&ca)
            .arg(p.image)
            .args(p.args)
            .env("E2E_STATE_DIR", &state)
            .env_remove("E2E_KEEP_STATE")
            .envs(p.envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run client wrapper");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{} {proxy_url} {} {} {} failed ({}) via {via:?}:\n{stdout}\n{}",
            p.wrapper,
            ca.display(),
            p.image,
            p.args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{} {} via {via:?}: {:.1}s",
            p.wrapper,
            p.image,
            t0.elapsed().as_secs_f64()
        );
        (state, stdout)
    }

    /// skopeo copy IMAGE dir:… (through CONNECT, or addressing the proxy directly); returns the dir.
    pub(crate) fn skopeo(&self, env: &Env, via: Via, image: &str, args: &[&str]) -> PathBuf {
        let (state, _) = self.pull(
            env,
            via,
            &Pull {
                wrapper: "skopeo_pull.sh",
                image,
                args,
                envs: &[],
            },
        );
        state.join("out")
    }

    /// ctr images pull in a private containerd; returns containerd's content store blob directory.
    pub(crate) fn ctr(&self, env: &Env, via: Via, image: &str, args: &[&str]) -> PathBuf {
        let (state, _) = self.pull(
            env,
            via,
            &Pull {
                wrapper: "ctr_pull.sh",
                image,
                args,
                envs: &[],
            },
        );
        state.join("root/io.containerd.content.v1.content/blobs/sha256")
    }
}

// ------------------------------------------------------------------------------------------------
// Upstream access logs

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

// ------------------------------------------------------------------------------------------------
// Content checks

pub(crate) fn sha256_file(path: &Path) -> String {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut hex = String::with_capacity(64);
    for b in ctx.finish().as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}

/// Checks a skopeo `dir:` copy against the upstream's digests: `manifest.json` hashes to
/// `top_digest`, every blob named in `blobs` is present, and every file named by a digest (blobs,
/// `<hex>.manifest.json` instance manifests of `--all`) hashes to its name.
pub(crate) fn verify_skopeo_dir(dir: &Path, top_digest: &str, blobs: &[String]) {
    assert_eq!(
        sha256_file(&dir.join("manifest.json")),
        hex_of(top_digest),
        "{}: manifest.json is not byte-identical to the upstream manifest",
        dir.display()
    );
    let mut seen = HashSet::new();
    for entry in std::fs::read_dir(dir).expect("read skopeo dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let hex = name.strip_suffix(".manifest.json").unwrap_or(&name);
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            assert_eq!(
                sha256_file(&entry.path()),
                hex,
                "{}: content differs from its digest",
                entry.path().display()
            );
            seen.insert(format!("sha256:{hex}"));
        }
    }
    let missing: Vec<&String> = blobs.iter().filter(|b| !seen.contains(*b)).collect();
    assert!(
        missing.is_empty(),
        "{}: blobs missing: {missing:?}",
        dir.display()
    );
}

/// Two skopeo `dir:` copies hold the same files with the same bytes.
pub(crate) fn assert_same_dirs(a: &Path, b: &Path) {
    let list = |d: &Path| -> BTreeMap<String, PathBuf> {
        std::fs::read_dir(d)
            .expect("read dir")
            .map(|e| {
                let e = e.expect("entry");
                (e.file_name().to_string_lossy().into_owned(), e.path())
            })
            .collect()
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(
        la.keys().collect::<Vec<_>>(),
        lb.keys().collect::<Vec<_>>(),
        "the two pulls produced different files"
    );
    for (name, pa) in &la {
        let pb = &lb[name];
        let (ma, mb) = (
            std::fs::metadata(pa).expect("stat"),
            std::fs::metadata(pb).expect("stat"),
        );
        assert_eq!(
            ma.len(),
            mb.len(),
            "{name}: sizes differ between the two pulls"
        );
        assert_eq!(
            sha256_file(pa),
            sha256_file(pb),
            "{name}: bytes differ between the two pulls"
        );
    }
}

/// containerd's content store (`…/blobs/sha256`) holds every digest in `blobs` with those bytes.
pub(crate) fn verify_content_store(store: &Path, blobs: &[String]) {
    for d in blobs {
        let p = store.join(hex_of(d));
        assert!(
            p.exists(),
            "{d} not in containerd's content store {}",
            store.display()
        );
        assert_eq!(
            sha256_file(&p),
            hex_of(d),
            "{}: bytes differ from the digest",
            p.display()
        );
    }
}
