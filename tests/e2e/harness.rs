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
/// Central credentials held by the proxy. token.test's token realm is on another host (auth.test),
/// to which the proxy sends central credentials only when an entry names that realm host exactly;
/// the `token.test` entry makes the registry `central`.
pub(crate) const AUTH_REGISTRIES: &str =
    "basic.test:alice:s3cret-basic token.test:bob:s3cret-token auth.test:bob:s3cret-token";

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

/// Settings of a test proxy beyond the standard ones ([`Proxy::start_with`]).
pub(crate) struct Opts<'a> {
    /// `AUTH_REGISTRIES` (central credentials); `None` leaves it unset, so every registry is in
    /// `verify` mode.
    pub(crate) auth_registries: Option<&'a str>,
    /// Proxy users `(name, password)`, written with `htpasswd -Bbn` into a file given as
    /// `PROXY_HTPASSWD`; empty: no client authentication.
    pub(crate) users: &'a [(&'a str, &'a str)],
    /// A TOML config file's text, given as `CONFIG`.
    pub(crate) config: Option<&'a str>,
    /// More environment variables (they override everything above).
    pub(crate) env: &'a [(&'a str, &'a str)],
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            auth_registries: Some(AUTH_REGISTRIES),
            users: &[],
            config: None,
            env: &[],
        }
    }
}

/// A bcrypt htpasswd file's text for `users` (`htpasswd -Bbn`, from apache2-utils).
fn htpasswd(users: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (user, password) in users {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("run htpasswd (apache2-utils)");
        assert!(
            out.status.success(),
            "htpasswd -Bbn {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).expect("htpasswd output is UTF-8");
        text.push_str(line.trim());
        text.push('\n');
    }
    text
}

impl Proxy {
    /// Starts the proxy with the standard settings (REGISTRIES, AUTH_REGISTRIES, the upstream CA,
    /// TUNNEL_ALLOW) plus `extra` environment variables.
    pub(crate) fn start(env: &Env, extra: &[(&str, &str)]) -> Proxy {
        Proxy::start_with(
            env,
            &Opts {
                env: extra,
                ..Opts::default()
            },
        )
    }

    /// Starts the proxy with the standard settings changed by `opts`.
    pub(crate) fn start_with(env: &Env, opts: &Opts<'_>) -> Proxy {
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
            .env("TUNNEL_ALLOW", TUNNEL_ALLOW);
        if let Some(auth) = opts.auth_registries {
            cmd.env("AUTH_REGISTRIES", auth);
        }
        if !opts.users.is_empty() {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, htpasswd(opts.users)).expect("write htpasswd");
            cmd.env("PROXY_HTPASSWD", file);
        }
        if let Some(config) = opts.config {
            let file = dir.path().join("config.toml");
            std::fs::write(&file, config).expect("write config file");
            cmd.env("CONFIG", file);
        }
        for (k, v) in opts.env {
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
        self.poll_requests(mark, |lines| {
            let of = |d: &str| -> Vec<&LogLine> {
                lines
                    .iter()
                    .filter(|l| l.is_blob(d, registry, repo))
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
                Ok(())
            } else {
                Err(format!(
                    "no HIT GET logged for {missing:?} of {registry}/{repo}"
                ))
            }
        });
    }

    /// Asserts that, since `mark`, the proxy logged a successful `GET` of every digest in `blobs`
    /// on `registry`/`repo`, whatever the verdict (polls a little: lines are written when the body
    /// ends).
    pub(crate) fn assert_blobs_served(
        &self,
        mark: usize,
        registry: &str,
        repo: &str,
        blobs: &[String],
    ) {
        self.poll_requests(mark, |lines| {
            let missing: Vec<&String> = blobs
                .iter()
                .filter(|d| {
                    !lines.iter().any(|l| {
                        l.is_blob(d, registry, repo)
                            && l.method == "GET"
                            && l.status.starts_with('2')
                    })
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "no successful GET logged for {missing:?} of {registry}/{repo}"
                ))
            }
        });
    }

    /// Runs `check` on the request lines logged since `mark` until it passes; fails after 5 s with
    /// what `check` says is missing and the lines.
    fn poll_requests(&self, mark: usize, check: impl Fn(&[LogLine]) -> Result<(), String>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.requests_since(mark);
            let Err(missing) = check(&lines) else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "{missing}; request lines since the mark:\n{}",
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
    /// True if this line is about the blob `digest` of `registry`/`repo`.
    pub(crate) fn is_blob(&self, digest: &str, registry: &str, repo: &str) -> bool {
        self.kind == "blob"
            && self.reference == digest
            && self.registry == registry
            && self.repo == repo
    }

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
    /// The same with `user:password` in the proxy URL (`HTTPS_PROXY=http://user:pw@127.0.0.1:PORT`),
    /// which Go clients send as `Proxy-Authorization: Basic` on CONNECT.
    ConnectAs(&'static str),
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
        let run = self.try_pull(env, via, p);
        assert!(run.ok, "{}", run.describe());
        (run.state, run.stdout)
    }

    /// Like [`Proxy::pull`] for a pull that must fail: panics (with the client's output) when it
    /// succeeds, returns the run otherwise (its state directory is removed).
    pub(crate) fn pull_fails(&self, env: &Env, via: Via, p: &Pull<'_>) -> PullRun {
        let run = self.try_pull(env, via, p);
        assert!(
            !run.ok,
            "expected to fail, but succeeded: {}",
            run.describe()
        );
        std::fs::remove_dir_all(&run.state).ok();
        run
    }

    /// Runs a wrapper and reports how it ended, whatever that was.
    pub(crate) fn try_pull(&self, env: &Env, via: Via, p: &Pull<'_>) -> PullRun {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = p.wrapper.trim_end_matches(".sh");
        let state = self.dir.path().join(format!("{name}-{n}"));
        let (proxy_url, ca) = match via {
            Via::Connect => (self.url(), self.client_ca_dir()),
            Via::ConnectAs(user) => (format!("http://{user}@{}", self.addr), self.client_ca_dir()),
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
        let run = PullRun {
            command: format!(
                "{} {proxy_url} {} {} {} via {via:?} (env {:?})",
                p.wrapper,
                ca.display(),
                p.image,
                p.args.join(" "),
                p.envs
            ),
            ok: out.status.success(),
            status: out.status.to_string(),
            state,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "{} {} via {via:?}: {} in {:.1}s",
            p.wrapper,
            p.image,
            if run.ok { "ok" } else { "failed" },
            t0.elapsed().as_secs_f64()
        );
        run
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

/// How one client wrapper run ended.
#[derive(Debug)]
pub(crate) struct PullRun {
    pub(crate) command: String,
    pub(crate) ok: bool,
    pub(crate) status: String,
    pub(crate) state: PathBuf,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl PullRun {
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} ({}):\n{}\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
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

// ------------------------------------------------------------------------------------------------
// Single requests (curl), and the registry login flow

/// How a single request reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// Straight to the proxy's plain-HTTP listener (mirror mode): the URL names the proxy.
    Mirror,
    /// Through CONNECT, trusting the proxy CA: the URL names the registry (`https://basic.test/…`);
    /// with `Some("user:password")` as `Proxy-Authorization: Basic`.
    Connect(Option<&'static str>),
    /// An absolute-form request (`GET http://registry/… HTTP/1.1`) to the proxy, optionally with
    /// `Proxy-Authorization: Basic`.
    Forward(Option<&'static str>),
}

/// One HTTP response: the status, the headers of the final response, the body.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// The proxy's answer to CONNECT (0 when there was none).
    pub(crate) connect_status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The start of the body if it is text, else its length.
    pub(crate) fn text(&self) -> String {
        match std::str::from_utf8(&self.body) {
            Ok(t) => t.chars().take(600).collect(),
            Err(_) => format!("<{} bytes, not UTF-8>", self.body.len()),
        }
    }

    /// The registry error code of a JSON error body (`{"errors":[{"code":…}]}`).
    pub(crate) fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_owned)
    }

    /// Short form for messages: status, challenge, the start of the body.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} (CONNECT {}) www-authenticate={:?} proxy-authenticate={:?} body={:?}",
            self.status,
            self.connect_status,
            self.header("www-authenticate"),
            self.header("proxy-authenticate"),
            self.text()
        )
    }
}

impl Proxy {
    /// The proxy CA as a PEM file (fetched from `GET /ca.crt` the first time).
    pub(crate) fn ca_pem(&self) -> PathBuf {
        let pem = self.client_ca_dir().join("proxy-ca.pem");
        if !pem.exists() {
            let tmp = pem.with_extension("tmp");
            let status = Command::new("curl")
                .args(["-fsS", "--noproxy", "*", "--max-time", "10", "-o"])
                .arg(&tmp)
                .arg(format!("{}/ca.crt", self.url()))
                .status()
                .expect("run curl");
            assert!(status.success(), "GET {}/ca.crt failed", self.url());
            std::fs::rename(&tmp, &pem).expect("rename proxy CA");
        }
        pem
    }

    /// One request with curl `args` (`-u`, `-H`, `--data`, `-X`…) to `url` the `way` given.
    pub(crate) fn curl(&self, way: Way, url: &str, args: &[&str]) -> Response {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.path().join("curl");
        std::fs::create_dir_all(&dir).expect("mkdir curl");
        let (head, body) = (dir.join(format!("{n}.h")), dir.join(format!("{n}.b")));
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "120",
            "-w",
            "%{http_code} %{http_connect}",
            "-D",
        ])
        .arg(&head)
        .arg("-o")
        .arg(&body);
        match way {
            Way::Mirror => {
                cmd.args(["--noproxy", "*"]);
            }
            Way::Connect(user) => {
                cmd.args(["--proxytunnel", "-x", &self.url(), "--cacert"])
                    .arg(self.ca_pem());
                if let Some(user) = user {
                    cmd.args(["--proxy-user", user]);
                }
            }
            Way::Forward(user) => {
                cmd.args(["-x", &self.url()]);
                if let Some(user) = user {
                    cmd.args(["--proxy-user", user]);
                }
            }
        }
        let out = cmd
            .args(args)
            .arg(url)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        let codes = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut codes = codes.split_whitespace().map(|c| c.parse().unwrap_or(0));
        let (status, connect_status) = (codes.next().unwrap_or(0), codes.next().unwrap_or(0));
        let head_text = std::fs::read_to_string(&head).unwrap_or_default();
        let body_bytes = std::fs::read(&body).unwrap_or_default();
        std::fs::remove_file(&head).ok();
        std::fs::remove_file(&body).ok();
        // the last header block is the final response (after CONNECT's, after 100 Continue)
        let last = head_text
            .split("\r\n\r\n")
            .filter(|b| b.starts_with("HTTP/"))
            .last()
            .unwrap_or("");
        let headers = last
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let status = if status == 0 { connect_status } else { status };
        assert!(
            status != 0,
            "curl {way:?} {args:?} {url}: no response ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Response {
            status,
            connect_status,
            headers,
            body: body_bytes,
        }
    }

    /// What a registry client gets for `url` with `creds` (`user:password`, `None` = anonymous):
    /// the request; on a `401` with a Bearer challenge, the token request to its realm (the same
    /// way, with Basic `creds` when given) and, if that issued a token, the request again with it —
    /// the login flow of docker, containerd and containers/image.
    pub(crate) fn registry_get(
        &self,
        way: Way,
        url: &str,
        accept: &str,
        creds: Option<&str>,
    ) -> Login {
        let accept = format!("Accept: {accept}");
        let first = self.curl(way, url, &["-H", &accept]);
        let Some(token) = self.token_request(way, url, &first, creds) else {
            return Login {
                first: first.clone(),
                token: None,
                last: first,
            };
        };
        let Some(issued) = token_of(&token) else {
            return Login {
                first,
                token: Some(token.clone()),
                last: token,
            };
        };
        let bearer = format!("Authorization: Bearer {issued}");
        let last = self.curl(way, url, &["-H", &accept, "-H", &bearer]);
        Login {
            first,
            token: Some(token),
            last,
        }
    }

    /// If `first` (the answer to `url`) is a `401` with a Bearer challenge: the token request to
    /// its realm for its service and scope, with Basic `creds` when given.
    pub(crate) fn token_request(
        &self,
        way: Way,
        url: &str,
        first: &Response,
        creds: Option<&str>,
    ) -> Option<Response> {
        let challenge = first
            .header("www-authenticate")
            .filter(|c| first.status == 401 && c.to_ascii_lowercase().starts_with("bearer "))
            .map(parse_challenge)?;
        let realm = challenge.get("realm").cloned().unwrap_or_default();
        let scope = challenge
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", repository_of(url)));
        let token_url = format!(
            "{realm}?service={}&scope={}",
            percent(challenge.get("service").map_or("", String::as_str)),
            percent(&scope)
        );
        let mut args: Vec<&str> = Vec::new();
        if let Some(creds) = creds {
            args.extend(["-u", creds]);
        }
        Some(self.curl(way, &token_url, &args))
    }
}

/// The token a `200` token response carries (`token`, or `access_token`).
pub(crate) fn token_of(response: &Response) -> Option<String> {
    if response.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    v["token"]
        .as_str()
        .or_else(|| v["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// A request made the way registry clients make it ([`Proxy::registry_get`]).
#[derive(Debug, Clone)]
pub(crate) struct Login {
    /// The request without credentials.
    pub(crate) first: Response,
    /// The token request, if the first answer was a Bearer challenge.
    pub(crate) token: Option<Response>,
    /// What the client ended with: the request with the token, or the failed token request, or the
    /// first answer.
    pub(crate) last: Response,
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
pub(crate) fn parse_challenge(value: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let rest = value.split_once(' ').map_or("", |(_, r)| r);
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || c.is_whitespace())
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

/// The repository a `…/v2/<name>/(manifests|blobs)/…` URL names.
fn repository_of(url: &str) -> String {
    let path = url.split_once("/v2/").map_or("", |(_, p)| p);
    let end = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|k| path.rfind(k))
        .max()
        .unwrap_or(path.len());
    path[..end].to_owned()
}

/// Percent-encodes everything but unreserved characters.
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A child process of a test, killed (by its PID) and reaped when dropped — also when an assertion
/// fails while it runs.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ------------------------------------------------------------------------------------------------
// A throttling TCP relay between the proxy and an upstream (`CONNECT_TO`)

/// Relays TCP connections to `target` byte for byte (TLS passes through untouched), optionally
/// slowing what comes back from the target to a set rate, so that a download stays in flight while
/// a test makes other requests. Stops accepting on drop; open connections end with the proxy's.
pub(crate) struct Relay {
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    shared: std::sync::Arc<RelayShared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

struct RelayShared {
    target: String,
    stop: std::sync::atomic::AtomicBool,
    /// Bytes per second from the target; 0 = as fast as it comes.
    rate: AtomicU64,
    /// The most bytes one connection has carried from the target.
    most_down: AtomicU64,
}

impl Relay {
    /// Starts relaying to `target` (`host:port`, resolved now).
    pub(crate) fn start(target: &str) -> Relay {
        use std::net::ToSocketAddrs as _;
        let resolved = target
            .to_socket_addrs()
            .expect("resolve relay target")
            .next()
            .expect("relay target address");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("relay address").to_string();
        let shared = std::sync::Arc::new(RelayShared {
            target: resolved.to_string(),
            stop: std::sync::atomic::AtomicBool::new(false),
            rate: AtomicU64::new(0),
            most_down: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || relay_connection(client, &s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Relay {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// From now on, at most `bytes_per_sec` per connection from the target.
    pub(crate) fn throttle(&self, bytes_per_sec: u64) {
        self.shared.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Full speed again.
    pub(crate) fn release(&self) {
        self.shared.rate.store(0, Ordering::Relaxed);
    }

    /// The most bytes one connection has carried from the target so far.
    pub(crate) fn most_down(&self) -> u64 {
        self.shared.most_down.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.release();
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay_connection(client: std::net::TcpStream, s: &RelayShared) {
    use std::io::Write as _;
    use std::net::Shutdown;
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = std::net::TcpStream::connect(&s.target) else {
        return;
    };
    let (Ok(mut client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut upstream_w);
        let _ = upstream_w.shutdown(Shutdown::Write);
    });
    let (mut upstream_r, mut client_w) = (upstream, client);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match upstream_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if client_w.write_all(&buf[..n]).is_err() {
            break;
        }
        total += n as u64;
        s.most_down.fetch_max(total, Ordering::Relaxed);
        if let Some(nanos) = (n as u64 * 1_000_000_000).checked_div(s.rate.load(Ordering::Relaxed))
        {
            std::thread::sleep(Duration::from_nanos(nanos));
        }
    }
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = upstream_r.shutdown(Shutdown::Both);
    let _ = up.join();
}
