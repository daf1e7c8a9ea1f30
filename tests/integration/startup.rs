//! Start-up as an operator coming from the seed sees it: the seed's `/ca` volume (an encrypted
//! `ca.key` made by its openssl commands) loads as is and clients keep trusting its `ca.crt`; the
//! seed's variables that are not needed are answered with one warning each; and a bad setting stops
//! the real binary with exactly one line.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;

use crate::cache_crash::{bin_command, bin_env};
use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{FAKE_HOST, TestProxy, random_bytes, trusting};

/// Makes `dir/ca.crt` and `dir/ca.key` with the seed's own openssl commands (its fixed
/// passphrase); false (after printing SKIPPED) when openssl is not installed.
fn seed_ca(dir: &Path) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    if crate::seed_ca::seed_ca(dir, &dir.join("ia.cnf")).is_none() {
        eprintln!("SKIPPED: openssl is not installed");
        return false;
    }
    true
}

#[tokio::test]
async fn the_seeds_ca_volume_loads_and_clients_keep_trusting_it() {
    let volume = tempfile::tempdir().unwrap();
    if !seed_ca(volume.path()) {
        return;
    }
    let seed_crt = std::fs::read(volume.path().join("ca.crt")).unwrap();
    let seed_key = std::fs::read(volume.path().join("ca.key")).unwrap();
    let fake = Fake::start(&[FAKE_HOST]).await;
    let data = random_bytes(10_000, 61);
    let path = format!("/v2/lib/app/blobs/{}", sha256_digest(&data));
    fake.route(&path, Behavior::Blob(data.clone()));
    let ca_dir = volume.path().display().to_string();
    let proxy = TestProxy::start(&fake, &[("CA_DIR", &ca_dir)]).await;

    let (status, _, served) = proxy.get("/ca.crt").await;
    assert_eq!(status, 200);
    assert_eq!(
        served, seed_crt,
        "GET /ca.crt serves the seed's certificate"
    );
    // A client that trusts only the seed's ca.crt (as the seed's nodes do) accepts the leaf.
    let (status, _, body) = proxy
        .via_connect_trusting(trusting(&seed_crt), FAKE_HOST, "GET", &path)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, data);
    assert_eq!(
        std::fs::read(volume.path().join("ca.key")).unwrap(),
        seed_key,
        "the key file is left as it was"
    );
}

/// Runs the binary with `env` until it exits; its exit status and stderr lines.
fn run_to_exit(env: &[(String, String)]) -> (std::process::ExitStatus, Vec<String>) {
    let out = bin_command(env).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status, stderr.lines().map(str::to_owned).collect())
}

fn with(env: &[(String, String)], changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    for (k, v) in changes {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

#[tokio::test]
async fn a_bad_setting_stops_the_binary_with_one_line() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let dir = tempfile::tempdir().unwrap();
    let env = bin_env(dir.path(), &fake);
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let volume = dir.path().join("seed-ca");
    let have_openssl = seed_ca(&volume);
    let volume = volume.display().to_string();

    let mut cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (
            vec![("CACHE_MAX_SIZE", "12q")],
            "registry-proxy: CACHE_MAX_SIZE: \"12q\" is not a size (bytes, or a number followed by k, m, g or t)".into(),
        ),
        (
            vec![("CACHE_MAX_SIZ", "1g")],
            "registry-proxy: unknown environment variable CACHE_MAX_SIZ: not a registry-proxy setting (check the spelling)".into(),
        ),
        (
            vec![("UPSTREAM_CA_FILE", "/nonexistent/roots.pem")],
            "registry-proxy: UPSTREAM_CA_FILE: cannot read /nonexistent/roots.pem: No such file or directory (os error 2)".into(),
        ),
        (
            vec![("LISTEN", &busy_addr)],
            format!("registry-proxy: cannot listen on {busy_addr}: Address already in use (os error 98)"),
        ),
    ];
    if have_openssl {
        cases.push((
            vec![("CA_DIR", &volume), ("CA_KEY_PASSPHRASE", "not-the-seeds")],
            format!(
                "registry-proxy: CA key {volume}/ca.key is encrypted and the passphrase does not open it (check CA_KEY_PASSPHRASE)"
            ),
        ));
    }
    for (changes, expected) in cases {
        let (status, lines) = run_to_exit(&with(&env, &changes));
        assert!(!status.success(), "{changes:?}");
        // Log lines of what went well before (a new CA, the cache index) may come first; the
        // error is the last line and the only one that mentions it.
        assert_eq!(lines.last(), Some(&expected), "{changes:?}: {lines:?}");
        let detail = expected.rsplit(": ").next().unwrap();
        assert_eq!(
            lines.iter().filter(|l| l.contains(detail)).count(),
            1,
            "{changes:?}: {lines:?}"
        );
        assert!(
            lines.iter().all(|l| !l.contains("\"level\":\"ERROR\"")),
            "{lines:?}"
        );
    }
}

#[tokio::test]
async fn the_seeds_variables_are_answered_with_one_warning_each() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let dir = tempfile::tempdir().unwrap();
    let env = with(
        &bin_env(dir.path(), &fake),
        &[
            ("DEBUG_NGINX", "true"),
            ("PROXY_REQUEST_BUFFERING", "false"),
            ("CACHE_MAX_SIZE", "12q"),
        ],
    );
    // A bad setting stops start-up before anything is logged: the error is the only line.
    let (status, lines) = run_to_exit(&env);
    assert!(!status.success());
    assert_eq!(lines.len(), 1, "{lines:?}");

    // The proxy starts; the warnings are logged once each, before it listens.
    let env = with(&env, &[("CACHE_MAX_SIZE", "1g")]);
    let mut child = bin_command(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut messages = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let json: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if json["message"] == "registry-proxy listening" {
            break;
        }
        if json["level"] == "WARN" {
            messages.push(json["message"].as_str().unwrap().to_owned());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        messages,
        [
            "DEBUG_NGINX is ignored: there is no nginx; set DEBUG=true for verbose logs",
            "PROXY_REQUEST_BUFFERING is ignored: request bodies (pushes) are always streamed to upstream without buffering",
        ]
    );
}
