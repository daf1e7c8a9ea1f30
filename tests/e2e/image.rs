//! Issue 8: the container image, as the seed's users run it. A private dockerd
//! (`tests/e2e/env/dockerd.sh`: own socket and data-root, never the system's daemon) builds it with
//! `scripts/build-image` (no registry access) and `scripts/image-smoke` checks it without upstreams
//! (configuration, README's `docker run` line, the non-root Kubernetes shape, restart). Then the image
//! runs on the host network with the cache and CA as bind-mounted volumes, skopeo pulls through it
//! (`HTTPS_PROXY` + the CA from `/ca.crt`), the container is removed and run again on the same volumes,
//! and a second pull proves the CA and the cache survived: the same `/ca.crt`, no blob request
//! upstream, `HIT` for every blob in the container's log.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, AUTH_REGISTRIES, Env, LogLine, REGISTRIES, TUNNEL_ALLOW, Watch};

const TAG: &str = "registry-proxy:e2e";

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A private dockerd, stopped (by PID, through `dockerd.sh down`) on drop.
struct Dockerd {
    state: PathBuf,
    host: String,
}

impl Dockerd {
    fn start(state: PathBuf) -> Dockerd {
        let out = Command::new(repo_root().join("tests/e2e/env/dockerd.sh"))
            .arg("up")
            .arg(&state)
            .stdin(Stdio::null())
            .output()
            .expect("run dockerd.sh up");
        assert!(
            out.status.success(),
            "dockerd.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let host = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("DOCKER_HOST="))
            .expect("dockerd.sh up prints DOCKER_HOST=")
            .to_owned();
        Dockerd { state, host }
    }

    /// `docker ARGS…` against this daemon.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// `docker ARGS…`, which must succeed; its stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/e2e/env/dockerd.sh"))
            .arg("down")
            .arg(&self.state)
            .stdin(Stdio::null())
            .output();
    }
}

/// The proxy container: `docker run` on the host network with the seed's two volumes as bind mounts
/// under `dir`; removed on drop (its log is printed if the test failed).
struct Container<'a> {
    docker: &'a Dockerd,
    name: String,
    port: u16,
}

impl<'a> Container<'a> {
    fn run(docker: &'a Dockerd, env: &Env, dir: &Path, name: &str, port: u16) -> Container<'a> {
        let vol =
            |host: &Path, inside: &str, opts: &str| format!("{}:{inside}{opts}", host.display());
        let listen = format!("LISTEN=127.0.0.1:{port}");
        let registries = format!("REGISTRIES={REGISTRIES}");
        let auth = format!("AUTH_REGISTRIES={AUTH_REGISTRIES}");
        let tunnel = format!("TUNNEL_ALLOW={TUNNEL_ALLOW}");
        let (cache, ca) = (
            vol(&dir.join("docker_mirror_cache"), "/docker_mirror_cache", ""),
            vol(&dir.join("docker_mirror_certs"), "/ca", ""),
        );
        let upstream_ca = vol(&env.upstream_ca, "/upstream-ca.pem", ":ro");
        docker.docker_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-v",
            &cache,
            "-v",
            &ca,
            "-v",
            &upstream_ca,
            "-e",
            "UPSTREAM_CA_FILE=/upstream-ca.pem",
            "-e",
            &listen,
            "-e",
            &registries,
            "-e",
            &auth,
            "-e",
            &tunnel,
            "-e",
            "NO_COLOR=1",
            TAG,
        ]);
        let c = Container {
            docker,
            name: name.to_owned(),
            port,
        };
        c.wait_healthy();
        c
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("curl")
                .args([
                    "-fsS",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "2",
                    "--noproxy",
                    "*",
                ])
                .arg(format!("{}/healthz", self.url()))
                .status()
                .expect("run curl")
                .success();
            if ok {
                return;
            }
            let running =
                self.docker
                    .docker_ok(&["inspect", "-f", "{{.State.Running}}", &self.name]);
            assert_eq!(
                running.trim(),
                "true",
                "container {} exited at start",
                self.name
            );
            assert!(
                Instant::now() < deadline,
                "container {}: /healthz did not answer within 30 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ca_pem(&self) -> String {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "10", "--noproxy", "*"])
            .arg(format!("{}/ca.crt", self.url()))
            .output()
            .expect("run curl");
        assert!(out.status.success(), "GET /ca.crt failed");
        String::from_utf8(out.stdout).expect("PEM is text")
    }

    fn log_text(&self) -> String {
        let out = self.docker.docker(&["logs", &self.name]);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        harness::strip_ansi(&text)
    }

    /// `docker stop` (SIGTERM; the proxy must exit 0) and `docker rm`.
    fn stop_and_remove(self) {
        self.docker.docker_ok(&["stop", "-t", "20", &self.name]);
        let code = self
            .docker
            .docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &self.name]);
        assert_eq!(code.trim(), "0", "the proxy did not exit 0 on SIGTERM");
        // Drop removes it
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- docker logs {}:\n{}----- end",
                self.name,
                self.log_text()
            );
        }
        let _ = self.docker.docker(&["rm", "-f", "-v", &self.name]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// skopeo copy IMAGE through the container (CONNECT, the CA fetched from `/ca.crt` into `ca_dir`);
/// returns the `dir:` copy.
fn skopeo(env: &Env, c: &Container<'_>, ca_dir: &Path, state: &Path, image: &str) -> PathBuf {
    let out = Command::new("timeout")
        .arg("300")
        .arg(env.scripts.join("skopeo_pull.sh"))
        .arg(c.url())
        .arg(ca_dir)
        .arg(image)
        .env("E2E_STATE_DIR", state)
        .env_remove("E2E_KEEP_STATE")
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo_pull.sh");
    assert!(
        out.status.success(),
        "skopeo through the container failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    state.join("out")
}

#[test]
fn image_pull_restart_pull() {
    let Some(env) = harness::env() else { return };
    let host = "registry.test";
    let small = env.image("SMALL");
    let dir = tempfile::Builder::new()
        .prefix("rpimg-")
        .tempdir()
        .expect("tempdir");
    let docker = Dockerd::start(dir.path().join("dockerd"));

    // Build (no registry access) and the standalone checks, in this daemon.
    let t0 = Instant::now();
    let smoke = Command::new("timeout")
        .arg("3600")
        .arg(repo_root().join("scripts/image-smoke"))
        .arg(TAG)
        .env("DOCKER_HOST", &docker.host)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/image-smoke");
    assert!(
        smoke.status.success(),
        "scripts/image-smoke {TAG} failed ({}):\n{}",
        smoke.status,
        String::from_utf8_lossy(&smoke.stderr)
    );
    eprintln!(
        "image built and smoke-checked in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    let _claim = harness::claim(&[(host, &small.repo)]);
    let port = free_port();
    let name = format!("registry-proxy-e2e-{}", std::process::id());
    let mut watch = Watch::new(env, host, &small.repo, &small.blobs());

    // First pull: everything from upstream.
    let first_container = Container::run(&docker, env, dir.path(), &name, port);
    let ca_first = first_container.ca_pem();
    let stored = std::fs::read_to_string(dir.path().join("docker_mirror_certs/ca.crt"))
        .expect("ca.crt in the /ca volume");
    assert_eq!(ca_first, stored, "/ca.crt is not the CA in the /ca volume");
    let ca_dir = dir.path().join("client-ca");
    std::fs::create_dir_all(&ca_dir).expect("mkdir client-ca");
    let first = skopeo(
        env,
        &first_container,
        &ca_dir,
        dir.path().join("pull-1").as_path(),
        "registry.test/test/small:v1",
    );
    watch.assert_fetched(
        &small.layer_digests(),
        "first skopeo pull through the image",
    );
    harness::verify_skopeo_dir(&first, &small.digest, &small.blobs());
    first_container.stop_and_remove();

    // Same volumes, new container: same CA, every blob from the cache.
    watch.reset();
    let second_container = Container::run(&docker, env, dir.path(), &name, port);
    assert_eq!(
        second_container.ca_pem(),
        ca_first,
        "the CA changed across the restart"
    );
    // the client keeps the CA it fetched from the first container (proxy-ca.pem in ca_dir)
    let second = skopeo(
        env,
        &second_container,
        &ca_dir,
        dir.path().join("pull-2").as_path(),
        "registry.test/test/small:v1",
    );
    watch.assert_no_blob_requests("second skopeo pull after the restart", false);
    harness::verify_skopeo_dir(&second, &small.digest, &small.blobs());
    harness::assert_same_dirs(&first, &second);
    let log = second_container.log_text();
    let hits: Vec<LogLine> = log
        .lines()
        .filter_map(LogLine::parse)
        .filter(|l| l.verdict == "HIT" && l.method == "GET" && l.kind == "blob")
        .collect();
    for blob in small.blobs() {
        assert!(
            hits.iter()
                .any(|l| l.reference == blob && l.registry == host && l.repo == small.repo),
            "no HIT GET for {blob} in the restarted container's log:\n{log}"
        );
    }
}
