//! `GET /setup/<client>` as a node uses it — `curl … | sh` — with hostile input in the `Host` header
//! and the query: the proxy refuses with 400 and a body that runs nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fake::Fake;
use crate::harness::{TestProxy, assert_succeeded};

/// One GET with exactly the `Host` header given (raw, so that nothing cleans it up); returns the
/// status and the body.
async fn raw_get(proxy: &TestProxy, path: &str, host: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// Pipes `script` into `sh` as `curl … | sh` would, with `PREFIX` set to `prefix` and the
/// commands a script may call on a node stubbed.
fn pipe_to_sh(script: &str, prefix: &Path) -> std::process::Output {
    let bin = prefix.join("stub-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["curl", "systemctl", "update-ca-certificates"] {
        std::fs::write(bin.join(name), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut child = Command::new("sh")
        .env("PREFIX", prefix)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, script.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn hostile_setup_requests_get_a_script_that_runs_nothing() {
    let fake = Fake::start(&["fake.test"]).await;
    let proxy = TestProxy::start(&fake, &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("pwned");
    let m = marker.display();
    let good_host = proxy.addr.to_string();
    let cases: Vec<(String, String)> = vec![
        ("/setup/docker".into(), format!("x$(touch {m})")),
        ("/setup/docker".into(), format!("x`touch {m}`:3128")),
        ("/setup/systemd".into(), format!("x';touch {m};'")),
        (
            format!(
                "/setup/docker?proxy={}",
                encode(&format!("http://x$(touch {m})"))
            ),
            good_host.clone(),
        ),
        (
            format!(
                "/setup/docker?proxy={}",
                encode(&format!("http://x\"\ntouch {m}\n"))
            ),
            good_host.clone(),
        ),
        (
            format!(
                "/setup/docker?proxy={}",
                encode("http://x\"], \"insecure-registries\": [\"evil.test")
            ),
            good_host.clone(),
        ),
        (
            format!(
                "/setup/docker?prefix={}",
                encode(&format!("/x$(touch {m})"))
            ),
            good_host.clone(),
        ),
        (
            format!(
                "/setup/kind?prefix={}",
                encode(&format!("/x'\ntouch {m}\n'"))
            ),
            good_host.clone(),
        ),
        (
            format!(
                "/setup/docker?proxy={}&prefix={}",
                encode("http://proxy:3128"),
                encode("/../../etc")
            ),
            format!("x$(touch {m})"),
        ),
    ];
    for (path, host) in &cases {
        let (status, body) = raw_get(&proxy, path, host).await;
        assert_eq!(status, 400, "{path} Host {host:?}: {body}");
        assert!(body.starts_with("# registry-proxy: refused: "), "{body}");
        assert!(body.lines().all(|l| l.starts_with("# ")), "{body}");
        let out = pipe_to_sh(&body, scratch.path());
        assert_succeeded(&out);
        assert!(out.stdout.is_empty());
        assert!(!marker.exists(), "{path} Host {host:?} ran code");
        assert!(
            !scratch.path().join("etc").exists(),
            "{path} Host {host:?} wrote files"
        );
    }

    // The same pipeline with legitimate, awkward values does run and writes the client's files.
    let (status, body) = raw_get(
        &proxy,
        &format!("/setup/docker?proxy={}", encode("http://[::1]:3128")),
        &format!("x$(touch {m})"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let out = pipe_to_sh(&body, scratch.path());
    assert_succeeded(&out);
    let daemon: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(scratch.path().join("etc/docker/daemon.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        daemon,
        serde_json::json!({
            "registry-mirrors": ["http://[::1]:3128"],
            "insecure-registries": ["[::1]:3128"],
        })
    );
    assert!(!marker.exists());
}

/// `registry-proxy setup` refuses hostile values with a non-zero exit, a reason on stderr and
/// nothing on stdout (so `registry-proxy setup … | sh` runs nothing either).
#[test]
fn cli_refuses_hostile_values() {
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("pwned");
    let m = marker.display();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--proxy".into(), format!("http://x$(touch {m})")],
            "proxy URL must be http(s)://host[:port]",
        ),
        (
            vec!["--proxy".into(), "http://a@b:3128".into()],
            "user information",
        ),
        (
            vec![
                "--proxy".into(),
                "http://proxy:3128".into(),
                "--prefix".into(),
                format!("/x';touch {m};'"),
            ],
            "prefix must be an absolute path",
        ),
    ];
    for (args, reason) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_registry-proxy"))
            .arg("setup")
            .arg("docker")
            .args(&args)
            .env_remove("REGISTRIES")
            .env_remove("AUTH_REGISTRIES")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        let piped = pipe_to_sh(&String::from_utf8_lossy(&out.stdout), scratch.path());
        assert!(piped.status.success());
        assert!(!marker.exists());
    }
}
