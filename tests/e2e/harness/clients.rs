//! Clients: the client wrappers (skopeo, ctr, podman, dockerd) run against a proxy.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::env::Env;
use super::proxy::Proxy;

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
