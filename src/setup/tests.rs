use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use clap::Parser;

use super::*;
use crate::cli::Cli;
use crate::config::Sources;

pub(super) fn config() -> Config {
    let cli = Cli::try_parse_from(["registry-proxy"]).unwrap();
    let env = HashMap::from([(
        "REGISTRIES".to_owned(),
        "quay.io registry.test:5443 [::1]:5000".to_owned(),
    )]);
    Config::load(Sources {
        flags: &cli.serve,
        env: &env,
    })
    .unwrap()
}

/// Every (client, mode) pair that has a script.
const ALL: [(Client, Mode); 13] = [
    (Client::Docker, Mode::Mirror),
    (Client::Docker, Mode::Connect),
    (Client::Containerd, Mode::Mirror),
    (Client::Containerd, Mode::Connect),
    (Client::Crio, Mode::Mirror),
    (Client::Crio, Mode::Connect),
    (Client::Podman, Mode::Mirror),
    (Client::Podman, Mode::Connect),
    (Client::K3s, Mode::Mirror),
    (Client::K3s, Mode::Connect),
    (Client::Kind, Mode::Mirror),
    (Client::Systemd, Mode::Mirror),
    (Client::Systemd, Mode::Connect),
];

/// Stand-ins for the commands a script may run on a real node: `curl` writes a placeholder CA;
/// `systemctl` and `update-ca-certificates` log that they ran (they must not, under a prefix).
pub(super) fn stub_bin(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("test-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("stub.log");
    let stubs = [
        (
            "curl",
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then shift; echo CA > \"$1\"; fi; shift; done\n"
                .to_owned(),
        ),
        (
            "systemctl",
            format!("#!/bin/sh\necho systemctl \"$@\" >> '{}'\n", log.display()),
        ),
        (
            "update-ca-certificates",
            format!("#!/bin/sh\necho update-ca-certificates >> '{}'\n", log.display()),
        ),
    ];
    for (name, text) in stubs {
        std::fs::write(bin.join(name), text).unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Runs `script` with `sh`, stubbed commands first on `PATH`; `prefix_env` is `PREFIX` (None:
/// unset, so the script's own default applies).
pub(super) fn run_script(
    dir: &Path,
    script: &str,
    prefix_env: Option<&Path>,
) -> std::process::Output {
    let bin = stub_bin(dir);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env_remove("PREFIX");
    if let Some(prefix) = prefix_env {
        cmd.env("PREFIX", prefix);
    }
    cmd.output().unwrap()
}

/// Runs a generated script into a scratch prefix and returns the files it wrote.
fn apply(client: Client, mode: Mode) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = render_for(client, mode, "http://proxy.internal:3128").unwrap();
    let out = run_script(dir.path(), &script, Some(dir.path()));
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("stub.log").exists(), "{script}");
    (dir, script)
}

/// The script for `client` in `mode` with the proxy at `proxy` and the default prefix `/`.
pub(super) fn render_for(client: Client, mode: Mode, proxy: &str) -> Result<String, SetupError> {
    render(
        &config(),
        &Request {
            client,
            mode,
            proxy: proxy.into(),
            prefix: "/".into(),
        },
    )
}

pub(super) fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Parses a YAML file with a real YAML parser (PyYAML; `scripts/test` installs python3-yaml).
pub(super) fn yaml_file(path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("python3 (with PyYAML) is needed to check YAML: {e}"));
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn containerd_mirror_writes_valid_hosts_toml() {
    let (dir, _) = apply(Client::Containerd, Mode::Mirror);
    for (path, server) in [
        ("etc/containerd/certs.d/_default/hosts.toml", None),
        (
            "etc/containerd/certs.d/docker.io/hosts.toml",
            Some("https://registry-1.docker.io"),
        ),
        (
            "etc/containerd/certs.d/quay.io/hosts.toml",
            Some("https://quay.io"),
        ),
        (
            "etc/containerd/certs.d/registry.test:5443/hosts.toml",
            Some("https://registry.test:5443"),
        ),
        (
            "etc/containerd/certs.d/[::1]:5000/hosts.toml",
            Some("https://[::1]:5000"),
        ),
    ] {
        let table: toml::Table = read(dir.path(), path).parse().unwrap();
        assert_eq!(
            table.get("server").and_then(|v| v.as_str()),
            server,
            "{path}"
        );
        let hosts = table["host"].as_table().unwrap();
        let mirror = hosts["http://proxy.internal:3128"].as_table().unwrap();
        assert_eq!(mirror["capabilities"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn a_plain_http_registry_keeps_its_scheme_in_hosts_toml() {
    let cli = Cli::try_parse_from(["registry-proxy"]).unwrap();
    let env = HashMap::from([(
        "REGISTRIES".to_owned(),
        "quay.io http://lab.test:5000".to_owned(),
    )]);
    let config = Config::load(Sources {
        flags: &cli.serve,
        env: &env,
    })
    .unwrap();
    let req = Request {
        client: Client::Containerd,
        mode: Mode::Mirror,
        proxy: "http://proxy.internal:3128".into(),
        prefix: "/".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let script = render(&config, &req).unwrap();
    assert!(
        run_script(dir.path(), &script, Some(dir.path()))
            .status
            .success()
    );
    for (registry, server) in [
        ("lab.test:5000", "http://lab.test:5000"),
        ("quay.io", "https://quay.io"),
    ] {
        let path = format!("etc/containerd/certs.d/{registry}/hosts.toml");
        let table: toml::Table = read(dir.path(), &path).parse().unwrap();
        assert_eq!(table["server"].as_str(), Some(server), "{path}");
    }
}

#[test]
fn docker_mirror_writes_daemon_json() {
    let (dir, _) = apply(Client::Docker, Mode::Mirror);
    let json: serde_json::Value =
        serde_json::from_str(&read(dir.path(), "etc/docker/daemon.json")).unwrap();
    assert_eq!(json["registry-mirrors"][0], "http://proxy.internal:3128");
    assert_eq!(
        json["insecure-registries"],
        serde_json::json!(["proxy.internal:3128"])
    );
}

#[test]
fn https_proxy_is_not_an_insecure_registry() {
    let dir = tempfile::tempdir().unwrap();
    let script = render_for(Client::Docker, Mode::Mirror, "https://proxy.example:8443/").unwrap();
    assert!(
        run_script(dir.path(), &script, Some(dir.path()))
            .status
            .success()
    );
    let json: serde_json::Value =
        serde_json::from_str(&read(dir.path(), "etc/docker/daemon.json")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"registry-mirrors": ["https://proxy.example:8443"]})
    );
}

#[test]
fn podman_and_crio_use_path_prefix_mirrors() {
    for client in [Client::Podman, Client::Crio] {
        let (dir, _) = apply(client, Mode::Mirror);
        let conf: toml::Table = read(
            dir.path(),
            "etc/containers/registries.conf.d/50-registry-proxy.conf",
        )
        .parse()
        .unwrap();
        let registries = conf["registry"].as_array().unwrap();
        assert_eq!(registries.len(), 4);
        let quay = registries
            .iter()
            .find(|r| r["prefix"].as_str() == Some("quay.io"))
            .unwrap();
        assert_eq!(
            quay["mirror"][0]["location"].as_str(),
            Some("proxy.internal:3128/quay.io")
        );
        assert_eq!(quay["mirror"][0]["insecure"].as_bool(), Some(true));
    }
}

#[test]
fn k3s_and_kind() {
    let (dir, _) = apply(Client::K3s, Mode::Mirror);
    let yaml = read(dir.path(), "etc/rancher/k3s/registries.yaml");
    assert!(
        yaml.contains("\"docker.io\":\n    endpoint:\n      - \"http://proxy.internal:3128\""),
        "{yaml}"
    );
    assert!(yaml.contains("\"*\":"), "{yaml}");
    let (dir, _) = apply(Client::Kind, Mode::Mirror);
    let cluster = read(dir.path(), "etc/registry-proxy/kind/cluster.yaml");
    assert!(
        cluster.contains("config_path = \"/etc/containerd/certs.d\""),
        "{cluster}"
    );
    assert!(
        dir.path()
            .join("etc/registry-proxy/kind/certs.d/_default/hosts.toml")
            .exists()
    );
}

#[test]
fn connect_mode_writes_systemd_drop_in() {
    let (dir, script) = apply(Client::Containerd, Mode::Connect);
    let unit = read(
        dir.path(),
        "etc/systemd/system/containerd.service.d/http-proxy.conf",
    );
    assert!(
        unit.contains("Environment=\"HTTPS_PROXY=http://proxy.internal:3128/\""),
        "{unit}"
    );
    assert!(
        script.contains("curl -fsS 'http://proxy.internal:3128/ca.crt'"),
        "{script}"
    );
    assert_eq!(
        read(
            dir.path(),
            "usr/local/share/ca-certificates/registry-proxy.crt"
        ),
        "CA\n"
    );
}

#[test]
fn bad_proxy_url_is_refused() {
    assert!(matches!(
        render_for(Client::Docker, Mode::Mirror, "proxy:3128"),
        Err(SetupError::ProxyUrl { .. })
    ));
    assert!(matches!(
        render_for(Client::Kind, Mode::Connect, "http://p:1"),
        Err(SetupError::Unsupported { .. })
    ));
}

/// Values that must never reach a script: shell syntax, quotes, line breaks, unicode, traversal,
/// user information, absurd lengths.
fn hostile() -> Vec<String> {
    let mut v: Vec<String> = [
        "$(touch /tmp/x)",
        "`touch /tmp/x`",
        "'",
        "\"",
        "\n",
        "x\ntouch /tmp/x",
        "\r",
        ";",
        "&&",
        "|",
        "${IFS}",
        "$IFS",
        " ",
        "\t",
        "\\",
        "%",
        "#",
        "<",
        ">",
        "*",
        "~",
        "\0",
        "prøxy",
        "\u{202e}",
        "\u{2028}",
        "\u{85}",
        "\u{7f}",
        "\u{feff}",
        "ｘ",
        "..",
        "@",
        "http://a@b",
        "a@b",
        "?x=1",
        "#frag",
        "/path",
    ]
    .map(str::to_owned)
    .to_vec();
    v.push("a".repeat(10_000));
    v.push(format!("{}.test", "a".repeat(64)));
    v
}

#[test]
fn hostile_proxy_urls_are_refused() {
    for h in hostile() {
        for url in [
            format!("http://{h}"),
            format!("http://proxy{h}:3128"),
            format!("http://proxy:3128{h}"),
            format!("http://proxy:3128/{h}"),
            format!("https://{h}proxy"),
            format!("{h}http://proxy:3128"),
            format!("http://[::1{h}]:3128"),
            h.clone(),
        ] {
            assert!(
                matches!(ProxyUrl::parse(&url), Err(SetupError::ProxyUrl { .. })),
                "accepted proxy {url:?}"
            );
            assert!(
                render_for(Client::Docker, Mode::Mirror, &url).is_err(),
                "rendered {url:?}"
            );
        }
    }
    for url in [
        "http://a@b",
        "http://user:pw@proxy:3128",
        "ftp://proxy",
        "HTTP://proxy",
        "http://",
        "http://:3128",
        "http://proxy:",
        "http://proxy:0",
        "http://proxy:65536",
        "http://proxy:+80",
        "http://proxy:3128//",
        "http://proxy.",
        "http://-proxy",
        "http://1.2.3",
        "http://999.1.1.1",
        "http://[::1",
        "http://[zz::1]",
        "http://[::1]x",
        "http://::1:3128",
        "http://[fe80::1%25eth0]",
    ] {
        assert!(ProxyUrl::parse(url).is_err(), "accepted {url:?}");
    }
}

#[test]
fn valid_proxy_urls() {
    let cases = [
        ("http://proxy:3128", "http://proxy:3128", "proxy:3128"),
        ("http://proxy:3128/", "http://proxy:3128", "proxy:3128"),
        (
            "https://Proxy.Example.COM/",
            "https://proxy.example.com",
            "proxy.example.com",
        ),
        (
            "http://10.0.0.1:3128",
            "http://10.0.0.1:3128",
            "10.0.0.1:3128",
        ),
        ("http://[::1]:3128", "http://[::1]:3128", "[::1]:3128"),
        (
            "http://[2001:DB8::1]",
            "http://[2001:db8::1]",
            "[2001:db8::1]",
        ),
        (
            "http://registry_proxy:3128",
            "http://registry_proxy:3128",
            "registry_proxy:3128",
        ),
    ];
    for (input, url, authority) in cases {
        let p = ProxyUrl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(p.url(), url, "{input}");
        assert_eq!(p.authority(), authority, "{input}");
    }
}

#[test]
fn hostile_prefixes_are_refused() {
    for h in hostile() {
        for prefix in [
            format!("/opt/{h}"),
            format!("/opt/{h}/x"),
            format!("/{h}"),
            h.clone(),
        ] {
            let path_chars = |s: &str| {
                s.len() < 1000
                    && s != ".."
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
            };
            if path_chars(&h) {
                continue; // "/path", "/opt//path" and "/opt/aaa.test" are fine paths
            }
            assert!(
                matches!(Prefix::parse(&prefix), Err(SetupError::Prefix { .. })),
                "accepted prefix {prefix:?}"
            );
        }
    }
    for prefix in ["", "relative/dir", "/a/../b", "/..", "/a/..", "~/x"] {
        assert!(Prefix::parse(prefix).is_err(), "accepted {prefix:?}");
    }
    for (prefix, trimmed) in [
        ("/", ""),
        ("/tmp/kind-proxy/", "/tmp/kind-proxy"),
        ("/opt/node.d/v1.2_x-y", "/opt/node.d/v1.2_x-y"),
        ("/a/.../b", "/a/.../b"),
    ] {
        assert_eq!(Prefix::parse(prefix).unwrap().trimmed(), trimmed);
    }
}

#[test]
fn registries_that_config_could_never_hold_are_refused() {
    // The configuration parser already refuses them; the set-up check is the second wall.
    for h in hostile() {
        let host_chars = h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
        if host_chars && h.len() < 200 && h != ".." {
            continue; // a long label: a registry host for all we know
        }
        assert!(
            RegistryHost::parse(&format!("reg{h}.test")).is_err(),
            "{h:?}"
        );
    }
    for host in ["quay.io", "registry.test:5443", "[::1]:5000", "docker.io"] {
        let r = values::registry(0, &RegistryHost::parse(host).unwrap(), false).unwrap();
        assert_eq!(r.name, host);
    }
}

#[test]
fn shell_quote_round_trips() {
    for h in hostile() {
        if h.contains('\0') {
            continue; // not representable in an argument at all
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", shell_quote(&h)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), h);
    }
    assert_eq!(shell_quote("it's"), "'it'\\''s'");
}

#[test]
fn file_formats_escape_their_strings() {
    for h in hostile() {
        let doc: toml::Table = format!("{} = {}\n", toml_string(&h), toml_string(&h))
            .parse()
            .unwrap_or_else(|e| panic!("{h:?}: {e}"));
        assert_eq!(doc[&h].as_str(), Some(h.as_str()));
        let json: serde_json::Value = serde_json::from_str(&json_string(&h)).unwrap();
        assert_eq!(json, h.as_str());
    }
    let tricky = "a\"b\\c%d\ne";
    assert_eq!(values::systemd_quote(tricky), "\"a\\\"b\\\\c%%de\"");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strings.yaml");
    let keys: Vec<String> = hostile()
        .into_iter()
        .filter(|h| !h.contains('\0'))
        .collect();
    let yaml: String = keys
        .iter()
        .enumerate()
        .map(|(i, h)| format!("k{i}: {}\n", yaml_string(h)))
        .collect();
    std::fs::write(&path, yaml).unwrap();
    let parsed = yaml_file(&path);
    for (i, h) in keys.iter().enumerate() {
        assert_eq!(parsed[format!("k{i}")], h.as_str(), "{h:?}");
    }
}

/// Every client's script, rendered with awkward but valid values (an IPv6 proxy, a prefix with
/// dots), runs with `sh` into that prefix, and every file it writes parses as what it should be.
#[test]
fn awkward_valid_values_run_for_every_client() {
    for (client, mode) in ALL {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("node.d/v1.2_x-y");
        let req = Request {
            client,
            mode,
            proxy: "http://[::1]:3128".into(),
            prefix: format!("{}/", root.display()),
        };
        let script = render(&config(), &req).unwrap_or_else(|e| panic!("{client:?}: {e}"));
        // No PREFIX in the environment: the rendered default is used.
        let out = run_script(dir.path(), &script, None);
        assert!(
            out.status.success(),
            "{client:?} {mode:?}\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !dir.path().join("stub.log").exists(),
            "{client:?} {mode:?} restarted services under a prefix"
        );
        let written = files_under(&root);
        assert!(!written.is_empty(), "{client:?} {mode:?} wrote nothing");
        for file in written {
            let text = std::fs::read_to_string(&file).unwrap();
            let name = file.display().to_string();
            if name.ends_with(".toml") || (name.ends_with(".conf") && name.contains("containers")) {
                let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
                if name.ends_with("hosts.toml") {
                    assert!(
                        table["host"].get("http://[::1]:3128").is_some(),
                        "{name}: {text}"
                    );
                }
            } else if name.ends_with(".json") {
                let json: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(json["registry-mirrors"][0], "http://[::1]:3128");
                assert_eq!(json["insecure-registries"][0], "[::1]:3128");
            } else if name.ends_with(".yaml") {
                let yaml = yaml_file(&file);
                if name.ends_with("registries.yaml") {
                    assert_eq!(
                        yaml["mirrors"]["[::1]:5000"]["endpoint"][0],
                        "http://[::1]:3128"
                    );
                } else {
                    let host_path = yaml["nodes"][0]["extraMounts"][0]["hostPath"]
                        .as_str()
                        .unwrap();
                    assert_eq!(
                        host_path,
                        format!("{}/etc/registry-proxy/kind/certs.d", root.display())
                    );
                    assert!(Path::new(host_path).join("_default/hosts.toml").is_file());
                }
            } else if name.ends_with("http-proxy.conf") {
                assert_eq!(
                    text,
                    format!(
                        "{}\n[Service]\nEnvironment=\"HTTP_PROXY=http://[::1]:3128/\"\nEnvironment=\"HTTPS_PROXY=http://[::1]:3128/\"\n",
                        script::MARKER
                    )
                );
            } else if name.ends_with("registry-proxy.crt") {
                assert_eq!(text, "CA\n");
            } else {
                panic!("{client:?} {mode:?} wrote an unexpected file {name}");
            }
        }
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// What `GET /setup/...` answers for hostile input: 400 (404 for an unknown client) and a body of
/// comment lines that, piped to `sh`, does nothing.
#[test]
fn http_refusals_are_comments_that_run_nothing() {
    let config = config();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let m = marker.display().to_string();
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let hostile_host = format!("x$(touch {m})");
    let cases: Vec<(String, Option<String>, Option<Vec<u8>>)> = vec![
        (
            "docker".into(),
            None,
            Some(hostile_host.clone().into_bytes()),
        ),
        (
            "docker".into(),
            None,
            Some(format!("x\ntouch {m}").into_bytes()),
        ),
        ("docker".into(), None, Some(vec![b'x', 0xff, b':', b'1'])),
        (
            "docker".into(),
            Some(format!(
                "proxy={}",
                encode(&format!("http://x$(touch {m})"))
            )),
            None,
        ),
        (
            "docker".into(),
            Some(format!(
                "proxy={}",
                encode(&format!("http://x';touch {m};'"))
            )),
            None,
        ),
        (
            "docker".into(),
            Some(format!(
                "proxy={}",
                encode(&format!("http://x\ntouch {m}\n"))
            )),
            None,
        ),
        (
            "containerd".into(),
            Some(format!("prefix={}", encode(&format!("/x$(touch {m})")))),
            Some(b"proxy:3128".to_vec()),
        ),
        (
            "kind".into(),
            Some(format!("prefix={}", encode(&format!("/x\"\ntouch {m}\n")))),
            Some(b"proxy:3128".to_vec()),
        ),
        (
            "docker".into(),
            Some(format!("mode={}", encode(&format!("$(touch {m})")))),
            Some(b"proxy:3128".to_vec()),
        ),
        (format!("$(touch {m})"), None, Some(b"proxy:3128".to_vec())),
        ("kind".into(), Some("mode=connect".into()), None),
    ];
    for (client, query, host) in cases {
        let answer = http_answer(&config, &client, query.as_deref(), host.as_deref());
        let expected = if client.starts_with('$') {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(
            answer.status, expected,
            "{client} {query:?}: {}",
            answer.body
        );
        assert!(!answer.body.is_empty());
        for line in answer.body.lines() {
            assert!(line.starts_with("# "), "{line:?}");
        }
        assert!(!answer.body.contains("touch"), "{}", answer.body);
        let out = run_script(dir.path(), &answer.body, Some(dir.path()));
        assert!(out.status.success() && out.stdout.is_empty());
        assert!(!marker.exists(), "{client} {query:?}");
    }
    // The same request with sane values is served, and the script's own files appear.
    let answer = http_answer(
        &config,
        "docker",
        Some("proxy=http%3A%2F%2F%5B%3A%3A1%5D%3A3128&prefix=/opt/x.d"),
        Some(hostile_host.as_bytes()),
    );
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let out = run_script(dir.path(), &answer.body, Some(dir.path()));
    assert!(out.status.success());
    assert!(dir.path().join("etc/docker/daemon.json").is_file());
    let answer = http_answer(&config, "systemd", None, Some(b"Proxy.Internal:3128"));
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("'http://proxy.internal:3128/ca.crt'"));
}

#[test]
fn cli_errors_are_clear() {
    let e = render_for(Client::Docker, Mode::Mirror, "http://proxy:3128/path")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("proxy URL must be http(s)://host[:port]") && e.contains("path"),
        "{e}"
    );
    let req = Request {
        client: Client::Docker,
        mode: Mode::Mirror,
        proxy: "http://proxy:3128".into(),
        prefix: "/a/../etc".into(),
    };
    let e = render(&config(), &req).unwrap_err().to_string();
    assert!(e.starts_with("prefix must be") && e.contains(".."), "{e}");
}
