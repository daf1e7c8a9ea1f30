//! Client set-up, generated from the proxy's own configuration: `registry-proxy setup <client>`
//! and `GET /setup/<client>` print a shell script that writes the exact files each client needs
//! (containerd `hosts.toml`, `registries.conf` drop-ins, Docker `daemon.json` and systemd drop-ins,
//! k3s `registries.yaml`, a kind cluster config). Every file lands under `--prefix` (default `/`),
//! so a test can apply the script to a scratch directory and use what it wrote.

use std::fmt::Write as _;

use crate::config::Config;
use crate::registry::host::RegistryHost;

pub use crate::cli::{SetupClient as Client, SetupMode as Mode};

/// Why a set-up could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--proxy {0:?} is not an http:// or https:// URL with a host")]
    ProxyUrl(String),
    #[error("unknown client {0:?} (docker, containerd, crio, podman, k3s, kind, systemd)")]
    Client(String),
    #[error("{client} has no {mode} mode")]
    Unsupported {
        client: &'static str,
        mode: &'static str,
    },
}

/// Parses a client name as used in `GET /setup/<client>`.
pub fn parse_client(s: &str) -> Result<Client, SetupError> {
    clap::ValueEnum::from_str(s, true).map_err(|_| SetupError::Client(s.to_owned()))
}

fn client_name(client: Client) -> &'static str {
    match client {
        Client::Docker => "docker",
        Client::Containerd => "containerd",
        Client::Crio => "crio",
        Client::Podman => "podman",
        Client::K3s => "k3s",
        Client::Kind => "kind",
        Client::Systemd => "systemd",
    }
}

/// Everything a set-up script depends on.
#[derive(Debug, Clone)]
pub struct Request {
    pub client: Client,
    pub mode: Mode,
    /// The proxy's URL as clients reach it, e.g. `http://proxy.internal:3128`.
    pub proxy: String,
    /// Where files are written (`/` on a real node).
    pub prefix: String,
}

/// Renders the shell script for `req`.
pub fn render(config: &Config, req: &Request) -> Result<String, SetupError> {
    let proxy = req.proxy.trim_end_matches('/').to_owned();
    let proxy_hostport = proxy
        .strip_prefix("http://")
        .or_else(|| proxy.strip_prefix("https://"))
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .ok_or_else(|| SetupError::ProxyUrl(req.proxy.clone()))?
        .to_owned();
    let insecure = proxy.starts_with("http://");
    let mut registries = vec![RegistryHost::docker_hub()];
    registries.extend(config.registries.iter().cloned());
    let mut s = Script::new(req, &proxy);
    match (req.client, req.mode) {
        (Client::Containerd, Mode::Mirror) => {
            containerd_hosts(&mut s, "/etc/containerd/certs.d", &registries, &proxy)
        }
        (Client::Docker, Mode::Mirror) => {
            s.comment("Docker sends only docker.io pulls to registry-mirrors; other registries need connect mode.");
            s.comment("Merge this into an existing daemon.json by hand if you have one.");
            let mut json = format!("{{\n  \"registry-mirrors\": [\"{proxy}\"]");
            if insecure {
                let _ = write!(json, ",\n  \"insecure-registries\": [\"{proxy_hostport}\"]");
            }
            json.push_str("\n}\n");
            s.file("/etc/docker/daemon.json", &json);
            s.line("command -v systemctl >/dev/null && [ -z \"$PREFIX_SET\" ] && systemctl restart docker || true");
        }
        (Client::Crio | Client::Podman, Mode::Mirror) => {
            let mut toml = String::from(
                "# Pull every configured registry through registry-proxy (path-prefix mirror).\n",
            );
            for r in &registries {
                let _ = write!(
                    toml,
                    "\n[[registry]]\nprefix = \"{r}\"\nlocation = \"{r}\"\n\n[[registry.mirror]]\nlocation = \"{proxy_hostport}/{r}\"\ninsecure = {insecure}\n"
                );
            }
            s.file(
                "/etc/containers/registries.conf.d/50-registry-proxy.conf",
                &toml,
            );
            if req.client == Client::Crio {
                s.line("command -v systemctl >/dev/null && [ -z \"$PREFIX_SET\" ] && systemctl reload crio || true");
            }
        }
        (Client::K3s, Mode::Mirror) => {
            let mut yaml = String::from("mirrors:\n");
            for r in &registries {
                let _ = write!(yaml, "  \"{r}\":\n    endpoint:\n      - \"{proxy}\"\n");
            }
            let _ = write!(yaml, "  \"*\":\n    endpoint:\n      - \"{proxy}\"\n");
            s.file("/etc/rancher/k3s/registries.yaml", &yaml);
            s.comment("Restart k3s (or k3s-agent) to apply.");
        }
        (Client::Kind, Mode::Mirror) => {
            containerd_hosts(
                &mut s,
                "/etc/registry-proxy/kind/certs.d",
                &registries,
                &proxy,
            );
            let host_dir = format!(
                "{}etc/registry-proxy/kind/certs.d",
                prefix_slash(&req.prefix)
            );
            let cluster = format!(
                "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\ncontainerdConfigPatches:\n  - |-\n    [plugins.\"io.containerd.grpc.v1.cri\".registry]\n      config_path = \"/etc/containerd/certs.d\"\nnodes:\n  - role: control-plane\n    extraMounts:\n      - hostPath: {host_dir}\n        containerPath: /etc/containerd/certs.d\n"
            );
            s.file("/etc/registry-proxy/kind/cluster.yaml", &cluster);
            s.comment("Create the cluster with: kind create cluster --config <prefix>/etc/registry-proxy/kind/cluster.yaml");
        }
        (Client::Docker | Client::Systemd, Mode::Connect) | (Client::Systemd, Mode::Mirror) => {
            systemd_proxy(&mut s, "docker", &proxy);
            install_ca(&mut s, &proxy);
            s.line("command -v systemctl >/dev/null && [ -z \"$PREFIX_SET\" ] && { systemctl daemon-reload; systemctl restart docker; } || true");
        }
        (Client::Containerd | Client::Crio | Client::K3s, Mode::Connect) => {
            let unit = match req.client {
                Client::Crio => "crio",
                Client::K3s => "k3s",
                _ => "containerd",
            };
            systemd_proxy(&mut s, unit, &proxy);
            install_ca(&mut s, &proxy);
            s.line(&format!(
                "command -v systemctl >/dev/null && [ -z \"$PREFIX_SET\" ] && {{ systemctl daemon-reload; systemctl restart {unit}; }} || true"
            ));
        }
        (Client::Podman, Mode::Connect) => {
            install_ca(&mut s, &proxy);
            s.comment(&format!(
                "Then run podman with: HTTPS_PROXY={proxy} podman pull ..."
            ));
        }
        (Client::Kind, Mode::Connect) => {
            return Err(SetupError::Unsupported {
                client: client_name(req.client),
                mode: "connect",
            });
        }
    }
    Ok(s.finish())
}

fn prefix_slash(prefix: &str) -> String {
    let p = prefix.trim_end_matches('/');
    format!("{p}/")
}

fn containerd_hosts(s: &mut Script, dir: &str, registries: &[RegistryHost], proxy: &str) {
    s.comment("containerd: set config_path for the CRI registry (containerd 1.5+), e.g. in /etc/containerd/config.toml:");
    s.comment("  [plugins.\"io.containerd.grpc.v1.cri\".registry]");
    s.comment(&format!("    config_path = \"{dir}\""));
    s.comment("ctr: pass --hosts-dir with the same directory. containerd adds ?ns=<registry> to every mirror request.");
    let host_block = format!("[host.\"{proxy}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
    s.file(
        &format!("{dir}/_default/hosts.toml"),
        &format!("# Any registry without its own directory: through registry-proxy.\n{host_block}"),
    );
    for r in registries {
        let server = format!("https://{}", r.upstream_authority());
        s.file(
            &format!("{dir}/{r}/hosts.toml"),
            &format!("server = \"{server}\"\n\n{host_block}"),
        );
    }
}

fn systemd_proxy(s: &mut Script, unit: &str, proxy: &str) {
    s.file(
        &format!("/etc/systemd/system/{unit}.service.d/http-proxy.conf"),
        &format!(
            "[Service]\nEnvironment=\"HTTP_PROXY={proxy}/\"\nEnvironment=\"HTTPS_PROXY={proxy}/\"\n"
        ),
    );
}

fn install_ca(s: &mut Script, proxy: &str) {
    s.comment("Trust the proxy's CA (Debian/Ubuntu path; RHEL: /etc/pki/ca-trust/source/anchors + update-ca-trust).");
    s.line("mkdir -p \"$PREFIX/usr/local/share/ca-certificates\"");
    s.line(&format!(
        "curl -fsS '{proxy}/ca.crt' -o \"$PREFIX/usr/local/share/ca-certificates/registry-proxy.crt\""
    ));
    s.line("[ -z \"$PREFIX_SET\" ] && command -v update-ca-certificates >/dev/null && update-ca-certificates || true");
}

/// A POSIX shell script that writes files under `$PREFIX`.
struct Script {
    out: String,
}

impl Script {
    fn new(req: &Request, proxy: &str) -> Script {
        let mode = match req.mode {
            Mode::Mirror => "mirror",
            Mode::Connect => "connect",
        };
        let prefix = req.prefix.trim_end_matches('/');
        let mut out = String::new();
        let _ = writeln!(out, "#!/bin/sh");
        let _ = writeln!(
            out,
            "# registry-proxy {} set-up for {} ({mode} mode), proxy {proxy}.",
            env!("CARGO_PKG_VERSION"),
            client_name(req.client)
        );
        let _ = writeln!(
            out,
            "# Generated by `registry-proxy setup` / GET /setup/{}; run it as root: sh <this file>",
            client_name(req.client)
        );
        let _ = writeln!(out, "set -eu");
        let _ = writeln!(out, "PREFIX=\"${{PREFIX:-{prefix}}}\"");
        let _ = writeln!(
            out,
            "if [ -n \"$PREFIX\" ]; then PREFIX_SET=1; else PREFIX_SET=; fi"
        );
        Script { out }
    }

    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.out, "# {text}");
    }

    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    fn file(&mut self, path: &str, contents: &str) {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        let _ = writeln!(self.out, "mkdir -p \"$PREFIX{dir}\"");
        let _ = writeln!(self.out, "cat > \"$PREFIX{path}\" <<'REGISTRY_PROXY_EOF'");
        self.out.push_str(contents);
        if !contents.ends_with('\n') {
            self.out.push('\n');
        }
        let _ = writeln!(self.out, "REGISTRY_PROXY_EOF");
        let _ = writeln!(self.out, "echo \"wrote $PREFIX{path}\"");
    }

    fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;
    use crate::cli::Cli;
    use crate::config::Sources;

    fn config() -> Config {
        let cli = Cli::try_parse_from(["registry-proxy"]).unwrap();
        let env = HashMap::from([(
            "REGISTRIES".to_owned(),
            "quay.io registry.test:5443".to_owned(),
        )]);
        Config::load(Sources {
            flags: &cli.serve,
            env: &env,
        })
        .unwrap()
    }

    /// Runs a generated script into a scratch prefix and returns the files it wrote.
    fn apply(client: Client, mode: Mode) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let req = Request {
            client,
            mode,
            proxy: "http://proxy.internal:3128".into(),
            prefix: "/".into(),
        };
        let script = render(&config(), &req).unwrap();
        // Connect-mode scripts download the CA: a stand-in curl writes a placeholder instead.
        let bin = dir.path().join("test-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(
            bin.join("curl"),
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then shift; echo CA > \"$1\"; fi; shift; done\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("curl"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PREFIX", dir.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, script)
    }

    fn read(dir: &tempfile::TempDir, path: &str) -> String {
        std::fs::read_to_string(dir.path().join(path.trim_start_matches('/'))).unwrap()
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
        ] {
            let table: toml::Table = read(&dir, path).parse().unwrap();
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
    fn docker_mirror_writes_daemon_json() {
        let (dir, _) = apply(Client::Docker, Mode::Mirror);
        let json: serde_json::Value =
            serde_json::from_str(&read(&dir, "etc/docker/daemon.json")).unwrap();
        assert_eq!(json["registry-mirrors"][0], "http://proxy.internal:3128");
        assert_eq!(json["insecure-registries"][0], "proxy.internal:3128");
    }

    #[test]
    fn podman_and_crio_use_path_prefix_mirrors() {
        for client in [Client::Podman, Client::Crio] {
            let (dir, _) = apply(client, Mode::Mirror);
            let conf: toml::Table = read(
                &dir,
                "etc/containers/registries.conf.d/50-registry-proxy.conf",
            )
            .parse()
            .unwrap();
            let registries = conf["registry"].as_array().unwrap();
            assert_eq!(registries.len(), 3);
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
        let yaml = read(&dir, "etc/rancher/k3s/registries.yaml");
        assert!(
            yaml.contains("\"docker.io\":\n    endpoint:\n      - \"http://proxy.internal:3128\""),
            "{yaml}"
        );
        assert!(yaml.contains("\"*\":"), "{yaml}");
        let (dir, _) = apply(Client::Kind, Mode::Mirror);
        let cluster = read(&dir, "etc/registry-proxy/kind/cluster.yaml");
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
            &dir,
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
            read(&dir, "usr/local/share/ca-certificates/registry-proxy.crt"),
            "CA\n"
        );
    }

    #[test]
    fn bad_proxy_url_is_refused() {
        let req = Request {
            client: Client::Docker,
            mode: Mode::Mirror,
            proxy: "proxy:3128".into(),
            prefix: "/".into(),
        };
        assert!(matches!(
            render(&config(), &req),
            Err(SetupError::ProxyUrl(_))
        ));
        let req = Request {
            client: Client::Kind,
            mode: Mode::Connect,
            proxy: "http://p:1".into(),
            prefix: "/".into(),
        };
        assert!(render(&config(), &req).is_err());
    }
}
