//! Client set-up, generated from the proxy's own configuration: `registry-proxy setup <client>`
//! and `GET /setup/<client>` print a shell script that writes the exact files each client needs
//! (containerd `hosts.toml`, `registries.conf` drop-ins, Docker `daemon.json` and systemd drop-ins,
//! k3s `registries.yaml`, a kind cluster config). Every file lands under `--prefix` (default `/`),
//! so a test can apply the script to a scratch directory and use what it wrote.
//!
//! Nodes pipe these scripts to `sh` as root, so no input may become code: every value is validated
//! first ([`values`]) and then quoted for where it lands — shell words single-quoted, file contents
//! written with `printf '%s' '<contents>'`, JSON/TOML/YAML/systemd strings escaped by their own
//! rules. A refused request gets a script that is comments only.
//!
//! Nor may a script destroy a node's settings (`script.rs`): files it finds that it did not write
//! are merged into (`daemon.json`, with python3) or left alone, the script stopping with what to
//! add by hand.

mod script;
#[cfg(test)]
mod tests;
mod values;

pub use values::{Prefix, ProxyUrl, json_string, shell_quote, toml_string, yaml_string};

use std::fmt::Write as _;

use http::StatusCode;

use crate::config::Config;
use crate::registry::host::RegistryHost;
use script::Script;
use values::{Registry, systemd_quote};

pub use crate::cli::{SetupClient as Client, SetupMode as Mode};

/// Why a set-up could not be generated. No message quotes the refused value: the text is served
/// to `curl … | sh` (as a comment) and printed by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("proxy URL must be http(s)://host[:port] with an optional final /: {reason}")]
    ProxyUrl { reason: &'static str },
    #[error(
        "the Host header is not a usable proxy address ({reason}); pass ?proxy=http(s)://host[:port]"
    )]
    HostHeader { reason: &'static str },
    #[error(
        "prefix must be an absolute path of letters, digits and . _ / - without a .. component: {reason}"
    )]
    Prefix { reason: &'static str },
    #[error("configured registry number {index} is not a plain registry host")]
    Registry { index: usize },
    #[error("unknown client (docker, containerd, crio, podman, k3s, kind, systemd)")]
    Client,
    #[error("mode must be mirror or connect")]
    Mode,
    #[error("{client} has no {mode} mode")]
    Unsupported {
        client: &'static str,
        mode: &'static str,
    },
}

/// Parses a client name as used in `GET /setup/<client>`.
pub fn parse_client(s: &str) -> Result<Client, SetupError> {
    clap::ValueEnum::from_str(s, true).map_err(|_| SetupError::Client)
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

/// Renders the shell script for `req`, after checking every value that goes into it.
pub fn render(config: &Config, req: &Request) -> Result<String, SetupError> {
    let proxy = ProxyUrl::parse(&req.proxy)?;
    let prefix = Prefix::parse(&req.prefix)?;
    render_checked(config, req.client, req.mode, &proxy, &prefix)
}

/// The answer to `GET /setup/<client>?mode=&proxy=&prefix=`: status and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: StatusCode,
    /// A shell script; for a refusal, comment lines only, so that `curl … | sh` runs nothing.
    pub body: String,
}

/// Serves `GET /setup/<client>`. `query` is the raw query string, `host` the raw `Host` header,
/// which is where the proxy URL comes from when `proxy=` is not given.
pub fn http_answer(
    config: &Config,
    client: &str,
    query: Option<&str>,
    host: Option<&[u8]>,
) -> HttpAnswer {
    match http_script(config, client, query, host) {
        Ok(body) => HttpAnswer {
            status: StatusCode::OK,
            body,
        },
        Err(e) => HttpAnswer {
            status: match e {
                SetupError::Client => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            },
            body: refusal(&e),
        },
    }
}

fn http_script(
    config: &Config,
    client: &str,
    query: Option<&str>,
    host: Option<&[u8]>,
) -> Result<String, SetupError> {
    let client = parse_client(client)?;
    let params: Vec<(&str, String)> = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k,
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    let mode = match param("mode") {
        None if client == Client::Systemd => Mode::Connect,
        None | Some("mirror") => Mode::Mirror,
        Some("connect") => Mode::Connect,
        Some(_) => return Err(SetupError::Mode),
    };
    let proxy = match param("proxy") {
        Some(url) => ProxyUrl::parse(url)?,
        None => proxy_from_host(host)?,
    };
    let prefix = Prefix::parse(param("prefix").unwrap_or("/"))?;
    render_checked(config, client, mode, &proxy, &prefix)
}

/// The proxy URL a request addressed: `http://` + its `Host` header, checked like any proxy URL.
fn proxy_from_host(host: Option<&[u8]>) -> Result<ProxyUrl, SetupError> {
    let host = match host {
        None => "localhost:3128",
        Some(bytes) => std::str::from_utf8(bytes).map_err(|_| SetupError::HostHeader {
            reason: "not UTF-8",
        })?,
    };
    ProxyUrl::parse(&format!("http://{host}")).map_err(|e| match e {
        SetupError::ProxyUrl { reason } => SetupError::HostHeader { reason },
        other => other,
    })
}

/// A refusal as a script of comment lines only.
pub fn refusal(e: &SetupError) -> String {
    let mut out = String::new();
    for line in e.to_string().lines() {
        let _ = writeln!(out, "# registry-proxy: refused: {}", inert(line));
    }
    out
}

/// Text that can sit in a comment line: control characters (line breaks above all) replaced.
fn inert(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn render_checked(
    config: &Config,
    client: Client,
    mode: Mode,
    proxy: &ProxyUrl,
    prefix: &Prefix,
) -> Result<String, SetupError> {
    let registries: Vec<Registry> = std::iter::once(RegistryHost::docker_hub())
        .chain(config.registries.iter().cloned())
        .enumerate()
        .map(|(i, r)| values::registry(i, &r, config.is_plain_http(&r)))
        .collect::<Result<_, _>>()?;
    let url = proxy.url();
    let insecure = !proxy.is_https();
    let mut s = Script::new(
        &format!(
            "registry-proxy {} set-up for {} ({} mode), proxy {}.",
            env!("CARGO_PKG_VERSION"),
            client_name(client),
            match mode {
                Mode::Mirror => "mirror",
                Mode::Connect => "connect",
            },
            proxy.url()
        ),
        &format!(
            "Generated by `registry-proxy setup` / GET /setup/{}; run it as root: sh <this file>",
            client_name(client)
        ),
        prefix.trimmed(),
    );
    match (client, mode) {
        (Client::Containerd, Mode::Mirror) => {
            containerd_hosts(&mut s, "/etc/containerd/certs.d", &registries, proxy)
        }
        (Client::Docker, Mode::Mirror) => {
            s.comment("Docker sends only docker.io pulls to registry-mirrors; other registries need connect mode.");
            s.comment("An existing daemon.json keeps every setting: the mirror is added first to registry-mirrors.");
            // The only insecure registry is the proxy itself, and only when it speaks plain HTTP.
            let mut json = format!("{{\n  \"registry-mirrors\": [{}]", json_string(&url));
            let authority = proxy.authority();
            if insecure {
                let _ = write!(
                    json,
                    ",\n  \"insecure-registries\": [{}]",
                    json_string(&authority)
                );
            }
            json.push_str("\n}\n");
            s.daemon_json(
                "/etc/docker/daemon.json",
                &json,
                &url,
                insecure.then_some(authority.as_str()),
            );
            s.restart("docker", false);
        }
        (Client::Crio | Client::Podman, Mode::Mirror) => {
            let mut toml = String::from(
                "# Pull every configured registry through registry-proxy (path-prefix mirror).\n",
            );
            for r in &registries {
                let _ = write!(
                    toml,
                    "\n[[registry]]\nprefix = {name}\nlocation = {name}\n\n[[registry.mirror]]\nlocation = {mirror}\ninsecure = {insecure}\n",
                    name = toml_string(&r.name),
                    mirror = toml_string(&format!("{}/{}", proxy.authority(), r.name)),
                );
            }
            s.file(
                "/etc/containers/registries.conf.d/50-registry-proxy.conf",
                &toml,
            );
            if client == Client::Crio {
                s.reload("crio");
            }
        }
        (Client::K3s, Mode::Mirror) => {
            let endpoint = yaml_string(&url);
            let mut yaml = String::from("mirrors:\n");
            for r in &registries {
                let _ = write!(
                    yaml,
                    "  {}:\n    endpoint:\n      - {endpoint}\n",
                    yaml_string(&r.name)
                );
            }
            let _ = write!(yaml, "  \"*\":\n    endpoint:\n      - {endpoint}\n");
            s.file("/etc/rancher/k3s/registries.yaml", &yaml);
            s.comment("Restart k3s (or k3s-agent) to apply.");
        }
        (Client::Kind, Mode::Mirror) => {
            containerd_hosts(
                &mut s,
                "/etc/registry-proxy/kind/certs.d",
                &registries,
                proxy,
            );
            let host_dir = format!("{}/etc/registry-proxy/kind/certs.d", prefix.trimmed());
            let cluster = format!(
                "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\ncontainerdConfigPatches:\n  - |-\n    [plugins.\"io.containerd.grpc.v1.cri\".registry]\n      config_path = \"/etc/containerd/certs.d\"\nnodes:\n  - role: control-plane\n    extraMounts:\n      - hostPath: {}\n        containerPath: /etc/containerd/certs.d\n",
                yaml_string(&host_dir)
            );
            s.file("/etc/registry-proxy/kind/cluster.yaml", &cluster);
            s.comment("Create the cluster with: kind create cluster --config <prefix>/etc/registry-proxy/kind/cluster.yaml");
        }
        (Client::Docker | Client::Systemd, Mode::Connect) | (Client::Systemd, Mode::Mirror) => {
            systemd_proxy(&mut s, "docker", proxy);
            install_ca(&mut s, proxy);
            s.restart("docker", true);
        }
        (Client::Containerd | Client::Crio | Client::K3s, Mode::Connect) => {
            let unit = match client {
                Client::Crio => "crio",
                Client::K3s => "k3s",
                _ => "containerd",
            };
            systemd_proxy(&mut s, unit, proxy);
            install_ca(&mut s, proxy);
            s.restart(unit, true);
        }
        (Client::Podman, Mode::Connect) => {
            install_ca(&mut s, proxy);
            s.comment(&format!(
                "Then run podman with: HTTPS_PROXY={} podman pull ...",
                shell_quote(&url)
            ));
        }
        (Client::Kind, Mode::Connect) => {
            return Err(SetupError::Unsupported {
                client: client_name(client),
                mode: "connect",
            });
        }
    }
    Ok(s.finish())
}

fn containerd_hosts(s: &mut Script, dir: &'static str, registries: &[Registry], proxy: &ProxyUrl) {
    s.comment("containerd: set config_path for the CRI registry (containerd 1.5+), e.g. in /etc/containerd/config.toml:");
    s.comment("  [plugins.\"io.containerd.grpc.v1.cri\".registry]");
    s.comment(&format!("    config_path = \"{dir}\""));
    s.comment("ctr: pass --hosts-dir with the same directory. containerd adds ?ns=<registry> to every mirror request.");
    let host_block = format!(
        "[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
        toml_string(&proxy.url())
    );
    s.file(
        &format!("{dir}/_default/hosts.toml"),
        &format!("# Any registry without its own directory: through registry-proxy.\n{host_block}"),
    );
    for r in registries {
        let server = toml_string(&format!("{}://{}", r.scheme, r.upstream));
        s.file(
            &format!("{dir}/{}/hosts.toml", r.name),
            &format!("server = {server}\n\n{host_block}"),
        );
    }
}

fn systemd_proxy(s: &mut Script, unit: &'static str, proxy: &ProxyUrl) {
    let url = proxy.url();
    s.file(
        &format!("/etc/systemd/system/{unit}.service.d/http-proxy.conf"),
        &format!(
            "[Service]\nEnvironment={}\nEnvironment={}\n",
            systemd_quote(&format!("HTTP_PROXY={url}/")),
            systemd_quote(&format!("HTTPS_PROXY={url}/")),
        ),
    );
}

fn install_ca(s: &mut Script, proxy: &ProxyUrl) {
    const CA_DIR: &str = "/usr/local/share/ca-certificates";
    s.comment("Trust the proxy's CA (Debian/Ubuntu path; RHEL: /etc/pki/ca-trust/source/anchors + update-ca-trust).");
    s.mkdir(CA_DIR);
    let _ = writeln!(
        s.out,
        "curl -fsS {} -o \"$PREFIX\"{}",
        shell_quote(&format!("{}/ca.crt", proxy.url())),
        shell_quote(&format!("{CA_DIR}/registry-proxy.crt"))
    );
    s.code("[ -z \"$PREFIX_SET\" ] && command -v update-ca-certificates >/dev/null && update-ca-certificates || true");
    s.changed();
}
