//! The real-peer environment (started once per test process by `up.sh`), the claims that keep two
//! tests from counting requests for the same upstream repository at once, and child processes of
//! tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

/// Where the environment lives. One environment per machine (fixed host names and port 443), so every
/// user of it on a machine should agree on this directory; `REGISTRY_PROXY_E2E_WORKDIR` overrides it.
const DEFAULT_WORKDIR: &str = "/tmp/e2e";

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

/// A child process of a test, killed (by its PID) and reaped when dropped — also when an assertion
/// fails while it runs.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
