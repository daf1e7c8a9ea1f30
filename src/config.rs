//! Configuration: one typed [`Config`], built and validated once at start-up from flags, environment
//! variables (the seed's names), an optional TOML file and defaults — in that order of precedence.
//! Nothing below `main` reads the environment; tests feed [`Config::load`] a map.

mod error;
mod file;
mod layers;
mod load;
mod parse;
mod scale_out;
pub mod settings;
mod tags;
#[cfg(test)]
mod tests;
mod units;

pub use error::ConfigError;
pub use layers::Sources;
pub use scale_out::{PeerSettings, S3Settings, Storage};
pub use units::{parse_duration, parse_size};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::access::rules::Rules;
use crate::access::tunnel::AllowEntry;
use crate::registry::host::RegistryHost;
use crate::secret::Secret;

/// The proxy's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client-facing listener (`LISTEN`, `--listen`).
    pub listen: SocketAddr,
    /// Registries to intercept and cache besides Docker Hub (`REGISTRIES`).
    /// Invariant: never contains Docker Hub itself (it is always intercepted).
    pub registries: Vec<RegistryHost>,
    /// The registries of `registries` that are reached over plain HTTP (entries written
    /// `http://host[:port]`; port 80 when none is given).
    /// Invariant: a subset of `registries`.
    pub plain_http: Vec<RegistryHost>,
    /// Central credentials (`AUTH_REGISTRIES`), keyed by registry host or token-realm host.
    pub credentials: Vec<Credential>,
    /// Cache root (`CACHE_DIR`).
    pub cache_dir: PathBuf,
    /// CA directory holding `ca.crt` and `ca.key` (`CA_DIR`).
    pub ca_dir: PathBuf,
    /// Passphrase of an encrypted `ca.key` (`CA_KEY_PASSPHRASE`); without it the seed's is tried.
    pub ca_key_passphrase: Option<Secret>,
    /// Size cap in bytes (`CACHE_MAX_SIZE`, e.g. `32g`).
    pub cache_max_size: u64,
    /// Entries unused this long are evicted (`CACHE_INACTIVE`).
    pub cache_inactive: Duration,
    /// Free disk space to keep on the cache's file system, in bytes (`CACHE_MIN_FREE`).
    pub cache_min_free: u64,
    /// Tag freshness tiers (`ENABLE_MANIFEST_CACHE`, `MANIFEST_CACHE_*`).
    pub manifest_cache: ManifestCache,
    /// Verify upstream TLS certificates (`VERIFY_SSL`).
    pub verify_ssl: bool,
    /// Pass writes through to upstream, uncached (`ALLOW_PUSH`).
    pub allow_push: bool,
    /// Extra PEM roots trusted for upstreams (`UPSTREAM_CA_FILE`).
    pub upstream_ca_file: Option<PathBuf>,
    /// curl-style `--connect-to` overrides (`CONNECT_TO`).
    pub connect_to: Vec<ConnectTo>,
    /// Log line format (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// The seed's timeout variables.
    pub timeouts: Timeouts,
    /// Which upstreams mirror mode (`/v2/...` on the listener) may reach.
    pub mirror: MirrorPolicy,
    /// Disable IPv6 for upstream connections (`DISABLE_IPV6`).
    pub disable_ipv6: bool,
    /// Blob hits on plain-HTTP connections go out with `sendfile(2)` (`ZERO_COPY`).
    pub zero_copy: bool,
    /// `DEBUG`: verbose logs (the seed's mitmproxy switches `DEBUG_HUB`/`DEBUG_NGINX` are accepted
    /// with a warning).
    pub debug: bool,
    /// Per-registry tag freshness overrides (TOML `[registry."host".manifest_cache]`).
    pub manifest_cache_overrides: Vec<(RegistryHost, ManifestCache)>,
    /// Optional TLS listener for mirror mode (`TLS_LISTEN`).
    pub tls_listen: Option<TlsListen>,
    /// Where blind tunnels, absolute-form requests and upstream dials to anything but a configured
    /// registry may go (`TUNNEL_ALLOW`); empty allows nothing.
    pub tunnel_allow: Vec<AllowEntry>,
    /// Cap on open client connections across both listeners (`MAX_CONNECTIONS`).
    /// Invariant: greater than zero.
    pub max_connections: usize,
    /// bcrypt htpasswd file of the proxy's users (`PROXY_HTPASSWD`); when set, clients must log in.
    /// Checked and parsed once at start-up; `access::identity::Users` reloads it while running.
    pub proxy_htpasswd: Option<PathBuf>,
    /// PEM CA bundle for client certificates on the TLS listener (`TLS_CLIENT_CA_FILE`).
    /// Invariant: `Some` only if `tls_listen` is.
    pub tls_client_ca_file: Option<PathBuf>,
    /// How long an upstream's acceptance of a client's credential for a repository is remembered
    /// (`AUTH_CACHE_TTL`).
    pub auth_cache_ttl: Duration,
    /// Per-repository access rules (TOML `[groups]` and `[[access]]`), with the defaults for
    /// whether client authentication is on.
    pub access: Rules,
    /// Per-registry upstream auth modes given explicitly (TOML `[registry."host"] auth`).
    pub registry_auth: Vec<(RegistryHost, AuthMode)>,
    /// The object-store tier (`STORAGE`, `S3_*`, `AWS_*`; see `config/scale_out.rs`).
    pub storage: Storage,
    /// Replicas that share upstream downloads (`PEERS`, `PEER_LISTEN`, `PEER_SECRET`).
    pub peers: Option<PeerSettings>,
    /// Things worth telling the operator that did not stop start-up (the seed's variables that are
    /// not needed); `main` logs them once logging is set up.
    pub warnings: Vec<String>,
}

/// Whose credential decides what a client may read from a registry that needs credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// A cached private object goes only to a client whose own credential upstream accepted for
    /// that repository.
    Verify,
    /// The proxy's rules decide; upstream is reached with the central credentials
    /// (`AUTH_REGISTRIES`), or anonymously if there are none.
    Central,
}

/// A TLS listener for mirror-mode clients that refuse plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    /// `TLS_LISTEN`, e.g. `0.0.0.0:5443`.
    pub addr: SocketAddr,
    /// `TLS_CERT_FILE` + `TLS_KEY_FILE` (PEM); when absent, a leaf is minted by the proxy CA.
    pub cert_files: Option<(PathBuf, PathBuf)>,
    /// `TLS_NAMES`: DNS names / IPs for the minted certificate (default: `localhost` and the host name).
    pub names: Vec<String>,
}

/// One `AUTH_REGISTRIES` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Registry host (`host` or `host:port`) or token realm host; lower-case.
    pub host: String,
    pub username: String,
    pub password: Secret,
}

/// Tag time-to-live tiers, matched in order; the first match wins, else `default_ttl`.
#[derive(Debug, Clone)]
pub struct ManifestCache {
    /// `ENABLE_MANIFEST_CACHE`; when false, every tag request is revalidated upstream.
    pub enabled: bool,
    /// Invariant: each regex is anchored at the start of the tag (the seed's nginx `location ~ ^/v2/.*/manifests/REGEX`).
    pub tiers: Vec<TtlTier>,
    /// `MANIFEST_CACHE_DEFAULT_TIME`.
    pub default_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct TtlTier {
    pub regex: regex::Regex,
    pub ttl: Duration,
}

/// `HOST:PORT:ADDR:PORT`: connections for `HOST:PORT` go to `ADDR:PORT` instead (TLS name stays `HOST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    pub host: String,
    pub port: u16,
    pub addr: String,
    pub addr_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The seed's nginx timeouts, same names and meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub send: Duration,
    pub client_body: Duration,
    pub client_header: Duration,
    pub keepalive: Duration,
    pub proxy_read: Duration,
    pub proxy_connect: Duration,
    pub proxy_send: Duration,
    pub proxy_connect_read: Duration,
    pub proxy_connect_connect: Duration,
    pub proxy_connect_send: Duration,
}

/// Which upstream registries mirror mode may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorPolicy {
    /// Docker Hub and `REGISTRIES` (the default).
    Configured,
    /// Any registry named by `?ns=` or a path prefix (`MIRROR_ANY=true`).
    Any,
}

impl Config {
    /// Builds the configuration from command-line arguments (without the program name), the
    /// environment (as a map) and the TOML file named by `--config`/`CONFIG`, if any.
    pub fn load(sources: Sources<'_>) -> Result<Config, ConfigError> {
        load::load(sources)
    }

    /// True if `host` is intercepted (Docker Hub always, plus `REGISTRIES`).
    pub fn intercepts(&self, host: &RegistryHost) -> bool {
        host.is_docker_hub() || self.registries.iter().any(|r| r == host)
    }

    /// The time-to-live of a tag of `registry`, or `None` if tags must always be revalidated.
    pub fn tag_ttl(&self, registry: &RegistryHost, tag: &str) -> Option<Duration> {
        let policy = self
            .manifest_cache_overrides
            .iter()
            .find(|(host, _)| host == registry)
            .map_or(&self.manifest_cache, |(_, policy)| policy);
        if !policy.enabled {
            return None;
        }
        let ttl = policy
            .tiers
            .iter()
            .find(|t| t.regex.is_match(tag))
            .map_or(policy.default_ttl, |t| t.ttl);
        Some(ttl)
    }

    /// True if `registry` is reached over plain HTTP (`http://` in `REGISTRIES`).
    pub fn is_plain_http(&self, registry: &RegistryHost) -> bool {
        self.plain_http.contains(registry)
    }

    /// Central credentials for a registry host or realm host.
    pub fn credential_for(&self, host: &str) -> Option<&Credential> {
        let host = host.to_ascii_lowercase();
        self.credentials.iter().find(|c| c.host == host)
    }

    /// How clients' access to `registry` is decided: the file's `[registry."host"] auth` if given;
    /// otherwise [`AuthMode::Central`] if `AUTH_REGISTRIES` has credentials for the registry (under
    /// its name, its upstream authority or, for Docker Hub, any of its aliases including
    /// `auth.docker.io`), else [`AuthMode::Verify`]. Credentials keyed by another token-realm host
    /// are not seen here: give such registries `auth = "central"` explicitly.
    pub fn auth_mode(&self, registry: &RegistryHost) -> AuthMode {
        if let Some((_, mode)) = self.registry_auth.iter().find(|(host, _)| host == registry) {
            return *mode;
        }
        let mut names = vec![registry.to_string(), registry.upstream_authority()];
        if registry.is_docker_hub() {
            names.extend(
                [
                    "docker.io",
                    "index.docker.io",
                    "registry-1.docker.io",
                    "auth.docker.io",
                ]
                .map(String::from),
            );
        }
        if names.iter().any(|name| self.credential_for(name).is_some()) {
            return AuthMode::Central;
        }
        // An entry naming a host that is no registry names a token realm (the seed's
        // `auth.example.com:user:pass`); which registry sends clients there is only known at the
        // first challenge. Such entries serve the configured registries, as in the seed.
        let names_a_realm = self.credentials.iter().any(|c| {
            c.host != "auth.docker.io"
                && RegistryHost::parse(&c.host)
                    .is_ok_and(|host| !host.is_docker_hub() && !self.registries.contains(&host))
        });
        if names_a_realm && self.registries.contains(registry) {
            AuthMode::Central
        } else {
            AuthMode::Verify
        }
    }
}
