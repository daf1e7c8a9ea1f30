//! Set-up scripts on nodes that already have configuration: settings survive, our keys are
//! merged in, foreign files stop the script before it writes anything.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use super::super::tests::{read, render_for, run_script, stub_bin};
use super::super::{Client, Mode};
use super::MARKER;

fn script(client: Client, mode: Mode, proxy: &str) -> String {
    render_for(client, mode, proxy).unwrap()
}

/// Renders the script for `client`, `mode` and `proxy` and runs it with `PREFIX=dir`.
fn run_in(dir: &Path, client: Client, mode: Mode, proxy: &str) -> std::process::Output {
    run_script(dir, &script(client, mode, proxy), Some(dir))
}

/// Asserts that a command exited 0, showing its stderr when it did not.
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, path: &str, contents: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn json(dir: &Path, path: &str) -> serde_json::Value {
    serde_json::from_str(&read(dir, path)).unwrap()
}

/// Runs `script` with a `PATH` of only the tools every node has, without python3.
fn run_without_python(dir: &Path, script: &str) -> std::process::Output {
    let bin = stub_bin(dir);
    let tools = dir.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    for tool in ["cat", "head", "mkdir"] {
        let target = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap();
        let _ = symlink(target, tools.join(tool));
    }
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .env("PATH", format!("{}:{}", bin.display(), tools.display()))
        .env("PREFIX", dir)
        .output()
        .unwrap()
}

const DAEMON_JSON: &str = "etc/docker/daemon.json";

#[test]
fn daemon_json_is_merged_keeping_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        DAEMON_JSON,
        r#"{"data-root": "/mnt/docker", "log-driver": "journald", "registry-mirrors": ["https://mirror.example"], "insecure-registries": ["lab.local:5000"]}"#,
    );
    let script = script(Client::Docker, Mode::Mirror, "http://proxy.internal:3128");
    let out = run_script(dir.path(), &script, Some(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_succeeded(&out);
    assert!(stdout.contains("merged the proxy into"), "{stdout}");
    let merged = json(dir.path(), DAEMON_JSON);
    assert_eq!(
        merged,
        serde_json::json!({
            "data-root": "/mnt/docker",
            "log-driver": "journald",
            "registry-mirrors": ["http://proxy.internal:3128", "https://mirror.example"],
            "insecure-registries": ["lab.local:5000", "proxy.internal:3128"],
        })
    );
    // Again: nothing to add, nothing changes.
    let before = read(dir.path(), DAEMON_JSON);
    let out = run_script(dir.path(), &script, Some(dir.path()));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    assert_eq!(read(dir.path(), DAEMON_JSON), before);
    assert!(
        !dir.path()
            .join("etc/docker/daemon.json.registry-proxy.tmp")
            .exists()
    );
}

#[test]
fn daemon_json_without_the_keys_gets_them() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        DAEMON_JSON,
        "{\n  \"data-root\": \"/srv/docker\",\n  \"log-driver\": \"local\"\n}\n",
    );
    let out = run_in(
        dir.path(),
        Client::Docker,
        Mode::Mirror,
        "https://proxy.example:8443",
    );
    assert_succeeded(&out);
    assert_eq!(
        json(dir.path(), DAEMON_JSON),
        serde_json::json!({
            "data-root": "/srv/docker",
            "log-driver": "local",
            "registry-mirrors": ["https://proxy.example:8443"],
        }),
        "an https proxy is no insecure registry"
    );
}

#[test]
fn without_python_the_script_says_what_to_add_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let original = "{\"data-root\": \"/mnt/docker\", \"log-driver\": \"journald\"}\n";
    write(dir.path(), DAEMON_JSON, original);
    let out = run_without_python(
        dir.path(),
        &script(Client::Docker, Mode::Mirror, "http://proxy.internal:3128"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("python3 is not here"), "{stderr}");
    assert!(
        stderr.contains("\"registry-mirrors\": put \"http://proxy.internal:3128\" first"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"insecure-registries\": add \"proxy.internal:3128\""),
        "{stderr}"
    );
    assert_eq!(read(dir.path(), DAEMON_JSON), original);

    // With no daemon.json at all, python3 is not needed.
    let fresh = tempfile::tempdir().unwrap();
    let out = run_without_python(
        fresh.path(),
        &script(Client::Docker, Mode::Mirror, "http://proxy.internal:3128"),
    );
    assert_succeeded(&out);
    assert_eq!(
        json(fresh.path(), DAEMON_JSON)["registry-mirrors"],
        serde_json::json!(["http://proxy.internal:3128"])
    );
    // Our own file again: identical, so no merge (and no python3) is needed either.
    let out = run_without_python(
        fresh.path(),
        &script(Client::Docker, Mode::Mirror, "http://proxy.internal:3128"),
    );
    assert_succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("is up to date"));
}

#[test]
fn a_daemon_json_that_is_not_json_is_left_alone() {
    for original in [
        "{\"data-root\": \"/x\",",
        "[\"a\"]",
        "{\"registry-mirrors\": \"x\"}",
    ] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), DAEMON_JSON, original);
        let out = run_in(
            dir.path(),
            Client::Docker,
            Mode::Mirror,
            "http://proxy.internal:3128",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{original}");
        assert!(stderr.contains("nothing was changed"), "{stderr}");
        assert_eq!(read(dir.path(), DAEMON_JSON), original);
    }
}

const REGISTRIES_YAML: &str = "etc/rancher/k3s/registries.yaml";

#[test]
fn a_foreign_registries_yaml_stops_the_script_with_the_block_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let original = "mirrors:\n  docker.io:\n    endpoint:\n      - \"https://mirror.example\"\nconfigs:\n  \"registry.example\":\n    auth:\n      username: ci\n";
    write(dir.path(), REGISTRIES_YAML, original);
    let out = run_in(
        dir.path(),
        Client::K3s,
        Mode::Mirror,
        "http://proxy.internal:3128",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("was not written by registry-proxy; nothing was changed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("  \"docker.io\":\n    endpoint:\n      - \"http://proxy.internal:3128\""),
        "the block to add: {stderr}"
    );
    assert_eq!(read(dir.path(), REGISTRIES_YAML), original);
}

#[test]
fn our_own_files_are_replaced_on_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    for proxy in ["http://old-proxy:3128", "http://new-proxy:3128"] {
        let out = run_in(dir.path(), Client::K3s, Mode::Mirror, proxy);
        assert_succeeded(&out);
    }
    let yaml = read(dir.path(), REGISTRIES_YAML);
    assert!(yaml.starts_with(MARKER), "{yaml}");
    assert!(
        yaml.contains("new-proxy") && !yaml.contains("old-proxy"),
        "{yaml}"
    );
}

#[test]
fn one_foreign_file_stops_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let mine =
        "server = \"https://quay.io\"\n[host.\"https://my-mirror\"]\n  capabilities = [\"pull\"]\n";
    write(
        dir.path(),
        "etc/containerd/certs.d/quay.io/hosts.toml",
        mine,
    );
    let out = run_in(
        dir.path(),
        Client::Containerd,
        Mode::Mirror,
        "http://proxy.internal:3128",
    );
    assert!(!out.status.success());
    assert_eq!(
        read(dir.path(), "etc/containerd/certs.d/quay.io/hosts.toml"),
        mine
    );
    assert!(
        !dir.path().join("etc/containerd/certs.d/_default").exists(),
        "checks run before any write"
    );

    let dir = tempfile::tempdir().unwrap();
    let drop_in = "[Service]\nEnvironment=NO_PROXY=10.0.0.0/8\n";
    let unit = "etc/systemd/system/docker.service.d/http-proxy.conf";
    write(dir.path(), unit, drop_in);
    let out = run_in(
        dir.path(),
        Client::Docker,
        Mode::Connect,
        "http://proxy.internal:3128",
    );
    assert!(!out.status.success());
    assert_eq!(read(dir.path(), unit), drop_in);
    assert!(!dir.path().join("usr/local/share/ca-certificates").exists());
}
