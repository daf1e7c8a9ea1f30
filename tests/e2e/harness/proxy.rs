//! The proxy: one `registry-proxy` process per test, and the request lines of its log.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::env::Env;
use super::{AUTH_REGISTRIES, REGISTRIES, TUNNEL_ALLOW};

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
