//! The command line: `registry-proxy [serve] [FLAGS]`, `registry-proxy cache verify|ls|purge`,
//! `registry-proxy warm IMAGE…`, `registry-proxy setup CLIENT --proxy URL`. Every setting flag is kept as the raw string the user
//! typed; `config::load` parses flag, environment variable and config-file values with one parser, so
//! all three fail with the same message.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A caching proxy for container registries.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "registry-proxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for running the proxy when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The command to run: `serve` with the top-level flags when no subcommand was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve(ServeArgs),
    /// Maintain the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print the configuration a client needs to use this proxy.
    Setup(SetupArgs),
    /// Pre-pull images into the cache: through a running proxy (--proxy) or straight into a cache
    /// directory (--cache-dir, or CACHE_DIR).
    Warm(WarmArgs),
}

/// Every `cache` subcommand is safe while a proxy runs on the same directory: nothing in flight
/// (`tmp/`) is touched.
#[derive(Debug, Clone, Subcommand)]
pub enum CacheCommand {
    /// Check every cached blob against its digest; remove the corrupt ones.
    Verify(ServeArgs),
    /// List registries, repositories, tags and images with sizes, blob sharing and last use.
    Ls(LsArgs),
    /// Remove images (by reference, repository glob or age) and every blob and manifest no other
    /// image uses.
    Purge(PurgeArgs),
}

/// `registry-proxy cache ls [--json]`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// Print JSON (schema `registry-proxy.cache-ls.v1`) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Settings (for `CACHE_DIR`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `registry-proxy cache purge [IMAGE|REPO-GLOB] [--older-than AGE] [--dry-run]`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// An image (`quay.io/org/app:tag`, `alpine`, `…@sha256:…`) or a repository glob
    /// (`quay.io/org/*`).
    #[arg(value_name = "IMAGE|REPO-GLOB")]
    pub target: Option<String>,
    /// Only images not used for this long (e.g. 30d); alone, every such image.
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Settings (for `CACHE_DIR`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `registry-proxy warm [--proxy URL | --cache-dir DIR] [--platform P] [--file FILE] IMAGE…`.
#[derive(Debug, Clone, Args)]
pub struct WarmArgs {
    /// Images to pre-pull (`alpine:3`, `quay.io/org/app:1.2`, `…@sha256:…`).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// A running proxy's plain-HTTP address, e.g. http://proxy.internal:3128 (default: warm
    /// straight into CACHE_DIR with an in-process proxy).
    #[arg(long, value_name = "URL", conflicts_with = "cache_dir")]
    pub proxy: Option<String>,
    /// Only this platform of multi-platform images, e.g. linux/arm64 (default: all).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Read image references from this file: one per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Proxy user, if the proxy asks for a login [env: REGISTRY_PROXY_USER]
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Read the proxy user's password from stdin [env: REGISTRY_PROXY_PASSWORD]
    #[arg(long)]
    pub password_stdin: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Settings for --cache-dir mode (upstreams, credentials, timeouts), as `serve` takes them.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `registry-proxy setup CLIENT --proxy URL [--mode mirror|connect]`.
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// The client to configure.
    #[arg(value_enum)]
    pub client: SetupClient,
    /// How clients reach the proxy, e.g. `http://proxy.internal:3128`.
    #[arg(long, value_name = "URL")]
    pub proxy: String,
    /// `mirror`: registry-mirror / path-prefix configuration; `connect`: HTTPS_PROXY plus the proxy CA.
    #[arg(long, value_enum, default_value_t = SetupMode::Mirror)]
    pub mode: SetupMode,
    /// Write the files under this directory instead of `/` (the script's `PREFIX` variable).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub prefix: String,
    /// Settings (for `REGISTRIES`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Container clients `setup` knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetupClient {
    Docker,
    Containerd,
    Crio,
    Podman,
    K3s,
    Kind,
    /// The seed's `/setup/systemd`: Docker through `HTTPS_PROXY` with the proxy CA installed.
    Systemd,
}

/// How a client is pointed at the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetupMode {
    /// Registry mirror / path prefix (`/v2/...` on the listener).
    Mirror,
    /// `HTTPS_PROXY` (CONNECT) with the proxy CA trusted.
    Connect,
}

/// Every setting as a flag. Each flag overrides the environment variable of the same name in upper
/// case (`--cache-max-size` ↔ `CACHE_MAX_SIZE`), which overrides the config file, which overrides the
/// default. Boolean flags take an optional value: `--allow-push` or `--allow-push=false`.
#[derive(Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; keys are the environment variable names in lower case [env: CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Client-facing listener [env: LISTEN] [default: 0.0.0.0:3128]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Space-separated registries to intercept and cache besides Docker Hub [env: REGISTRIES]
    /// [default: "registry.k8s.io gcr.io quay.io ghcr.io"]
    #[arg(long, value_name = "HOSTS")]
    pub registries: Option<String>,
    /// `host:user:password` entries for upstream auth [env: AUTH_REGISTRIES]
    #[arg(long, value_name = "ENTRIES")]
    pub auth_registries: Option<String>,
    /// Read AUTH_REGISTRIES from this file (entries separated by line breaks or the delimiter)
    /// [env: AUTH_REGISTRIES_FILE]
    #[arg(long, value_name = "FILE")]
    pub auth_registries_file: Option<String>,
    /// Separator between AUTH_REGISTRIES entries [env: AUTH_REGISTRIES_DELIMITER] [default: " "]
    #[arg(long, value_name = "SEP")]
    pub auth_registries_delimiter: Option<String>,
    /// Separator inside one AUTH_REGISTRIES entry [env: AUTH_REGISTRY_DELIMITER] [default: ":"]
    #[arg(long, value_name = "SEP")]
    pub auth_registry_delimiter: Option<String>,
    /// Cache root [env: CACHE_DIR] [default: ./data/cache]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<String>,
    /// Directory holding ca.crt and ca.key [env: CA_DIR] [default: ./data/ca]
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<String>,
    /// Cache size cap, e.g. 32g [env: CACHE_MAX_SIZE] [default: 32g]
    #[arg(long, value_name = "SIZE")]
    pub cache_max_size: Option<String>,
    /// Evict entries unused this long [env: CACHE_INACTIVE] [default: 60d]
    #[arg(long, value_name = "DURATION")]
    pub cache_inactive: Option<String>,
    /// Free space to keep on the cache's file system [env: CACHE_MIN_FREE] [default: 1g]
    #[arg(long, value_name = "SIZE")]
    pub cache_min_free: Option<String>,
    /// Cache tags for a while instead of revalidating each pull [env: ENABLE_MANIFEST_CACHE] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_manifest_cache: Option<String>,
    /// Tags matching this (from their start) use the primary TTL; empty disables the tier
    /// [env: MANIFEST_CACHE_PRIMARY_REGEX] [default: (stable|nightly|production|test)]
    #[arg(long, value_name = "REGEX")]
    pub manifest_cache_primary_regex: Option<String>,
    /// [env: MANIFEST_CACHE_PRIMARY_TIME] [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub manifest_cache_primary_time: Option<String>,
    /// Tags matching this (from their start) use the secondary TTL; empty disables the tier
    /// [env: MANIFEST_CACHE_SECONDARY_REGEX] [default: (.*)(\d|\.)+(.*)(\d|\.)+(.*)(\d|\.)+]
    #[arg(long, value_name = "REGEX")]
    pub manifest_cache_secondary_regex: Option<String>,
    /// [env: MANIFEST_CACHE_SECONDARY_TIME] [default: 60d]
    #[arg(long, value_name = "DURATION")]
    pub manifest_cache_secondary_time: Option<String>,
    /// TTL of tags matching no tier [env: MANIFEST_CACHE_DEFAULT_TIME] [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub manifest_cache_default_time: Option<String>,
    /// Verify upstream TLS certificates [env: VERIFY_SSL] [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub verify_ssl: Option<String>,
    /// Pass pushes through to upstream [env: ALLOW_PUSH] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allow_push: Option<String>,
    /// Mirror mode may reach any registry, not only Docker Hub and REGISTRIES [env: MIRROR_ANY] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub mirror_any: Option<String>,
    /// Use IPv4 only for upstream connections [env: DISABLE_IPV6] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub disable_ipv6: Option<String>,
    /// Verbose logs [env: DEBUG] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub debug: Option<String>,
    /// Accepted for compatibility with the seed, ignored [env: DEBUG_HUB]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", hide = true)]
    pub debug_hub: Option<String>,
    /// Accepted for compatibility with the seed, ignored [env: DEBUG_NGINX]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", hide = true)]
    pub debug_nginx: Option<String>,
    /// Accepted for compatibility with the seed, ignored [env: PROXY_REQUEST_BUFFERING]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", hide = true)]
    pub proxy_request_buffering: Option<String>,
    /// Extra PEM roots trusted for upstreams [env: UPSTREAM_CA_FILE]
    #[arg(long, value_name = "FILE")]
    pub upstream_ca_file: Option<String>,
    /// Space-separated HOST:PORT:ADDR:PORT connection overrides [env: CONNECT_TO]
    #[arg(long, value_name = "LIST")]
    pub connect_to: Option<String>,
    /// `text` or `json` [env: LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// TLS listener for mirror mode, e.g. 0.0.0.0:5443 [env: TLS_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<String>,
    /// PEM certificate for TLS_LISTEN (with --tls-key-file; default: minted by the proxy CA) [env: TLS_CERT_FILE]
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<String>,
    /// PEM private key for TLS_LISTEN [env: TLS_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: Option<String>,
    /// Space-separated names for the minted TLS_LISTEN certificate [env: TLS_NAMES] [default: "localhost 127.0.0.1"]
    #[arg(long, value_name = "NAMES")]
    pub tls_names: Option<String>,
    /// bcrypt htpasswd file (`htpasswd -B`); when set, clients must log in; reloaded on SIGHUP and
    /// when it changes [env: PROXY_HTPASSWD]
    #[arg(long, value_name = "FILE")]
    pub proxy_htpasswd: Option<String>,
    /// PEM CA bundle for client certificates on TLS_LISTEN (user = subject CN) [env: TLS_CLIENT_CA_FILE]
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca_file: Option<String>,
    /// How long an upstream's "yes" to a client's own credential for a repository is remembered
    /// (registries with auth = "verify") [env: AUTH_CACHE_TTL] [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub auth_cache_ttl: Option<String>,
    /// Space-separated host-glob:port / CIDR:port targets for blind tunnels, absolute-form requests
    /// and upstreams that are not configured registries; loopback, link-local and the proxy itself
    /// only by an explicit entry [env: TUNNEL_ALLOW] [default: "*:443"]
    #[arg(long, value_name = "ENTRIES")]
    pub tunnel_allow: Option<String>,
    /// Cap on open client connections across both listeners; beyond it new connections get 503
    /// (GET /healthz still answers) [env: MAX_CONNECTIONS] [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,

    /// nginx send_timeout [env: SEND_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub send_timeout: Option<String>,
    /// nginx client_body_timeout [env: CLIENT_BODY_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub client_body_timeout: Option<String>,
    /// nginx client_header_timeout [env: CLIENT_HEADER_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub client_header_timeout: Option<String>,
    /// nginx keepalive_timeout [env: KEEPALIVE_TIMEOUT] [default: 300s]
    #[arg(long, value_name = "DURATION")]
    pub keepalive_timeout: Option<String>,
    /// nginx proxy_read_timeout [env: PROXY_READ_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub proxy_read_timeout: Option<String>,
    /// nginx proxy_connect_timeout [env: PROXY_CONNECT_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub proxy_connect_timeout: Option<String>,
    /// nginx proxy_send_timeout [env: PROXY_SEND_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub proxy_send_timeout: Option<String>,
    /// proxy_connect_read_timeout [env: PROXY_CONNECT_READ_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub proxy_connect_read_timeout: Option<String>,
    /// proxy_connect_connect_timeout [env: PROXY_CONNECT_CONNECT_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub proxy_connect_connect_timeout: Option<String>,
    /// proxy_connect_send_timeout [env: PROXY_CONNECT_SEND_TIMEOUT] [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub proxy_connect_send_timeout: Option<String>,
}

/// A flag's field, by the setting's environment variable name.
type Field = fn(&ServeArgs) -> &Option<String>;

/// Every setting flag by its environment variable name (`CACHE_MAX_SIZE` ↔ `--cache-max-size`).
const FLAGS: &[(&str, Field)] = &[
    ("LISTEN", |a| &a.listen),
    ("REGISTRIES", |a| &a.registries),
    ("AUTH_REGISTRIES", |a| &a.auth_registries),
    ("AUTH_REGISTRIES_FILE", |a| &a.auth_registries_file),
    ("AUTH_REGISTRIES_DELIMITER", |a| {
        &a.auth_registries_delimiter
    }),
    ("AUTH_REGISTRY_DELIMITER", |a| &a.auth_registry_delimiter),
    ("CACHE_DIR", |a| &a.cache_dir),
    ("CA_DIR", |a| &a.ca_dir),
    ("CACHE_MAX_SIZE", |a| &a.cache_max_size),
    ("CACHE_INACTIVE", |a| &a.cache_inactive),
    ("CACHE_MIN_FREE", |a| &a.cache_min_free),
    ("ENABLE_MANIFEST_CACHE", |a| &a.enable_manifest_cache),
    ("MANIFEST_CACHE_PRIMARY_REGEX", |a| {
        &a.manifest_cache_primary_regex
    }),
    ("MANIFEST_CACHE_PRIMARY_TIME", |a| {
        &a.manifest_cache_primary_time
    }),
    ("MANIFEST_CACHE_SECONDARY_REGEX", |a| {
        &a.manifest_cache_secondary_regex
    }),
    ("MANIFEST_CACHE_SECONDARY_TIME", |a| {
        &a.manifest_cache_secondary_time
    }),
    ("MANIFEST_CACHE_DEFAULT_TIME", |a| {
        &a.manifest_cache_default_time
    }),
    ("VERIFY_SSL", |a| &a.verify_ssl),
    ("ALLOW_PUSH", |a| &a.allow_push),
    ("MIRROR_ANY", |a| &a.mirror_any),
    ("DISABLE_IPV6", |a| &a.disable_ipv6),
    ("DEBUG", |a| &a.debug),
    ("DEBUG_HUB", |a| &a.debug_hub),
    ("DEBUG_NGINX", |a| &a.debug_nginx),
    ("PROXY_REQUEST_BUFFERING", |a| &a.proxy_request_buffering),
    ("UPSTREAM_CA_FILE", |a| &a.upstream_ca_file),
    ("CONNECT_TO", |a| &a.connect_to),
    ("LOG_FORMAT", |a| &a.log_format),
    ("TLS_LISTEN", |a| &a.tls_listen),
    ("TLS_CERT_FILE", |a| &a.tls_cert_file),
    ("TLS_KEY_FILE", |a| &a.tls_key_file),
    ("TLS_NAMES", |a| &a.tls_names),
    ("PROXY_HTPASSWD", |a| &a.proxy_htpasswd),
    ("TLS_CLIENT_CA_FILE", |a| &a.tls_client_ca_file),
    ("AUTH_CACHE_TTL", |a| &a.auth_cache_ttl),
    ("TUNNEL_ALLOW", |a| &a.tunnel_allow),
    ("MAX_CONNECTIONS", |a| &a.max_connections),
    ("SEND_TIMEOUT", |a| &a.send_timeout),
    ("CLIENT_BODY_TIMEOUT", |a| &a.client_body_timeout),
    ("CLIENT_HEADER_TIMEOUT", |a| &a.client_header_timeout),
    ("KEEPALIVE_TIMEOUT", |a| &a.keepalive_timeout),
    ("PROXY_READ_TIMEOUT", |a| &a.proxy_read_timeout),
    ("PROXY_CONNECT_TIMEOUT", |a| &a.proxy_connect_timeout),
    ("PROXY_SEND_TIMEOUT", |a| &a.proxy_send_timeout),
    ("PROXY_CONNECT_READ_TIMEOUT", |a| {
        &a.proxy_connect_read_timeout
    }),
    ("PROXY_CONNECT_CONNECT_TIMEOUT", |a| {
        &a.proxy_connect_connect_timeout
    }),
    ("PROXY_CONNECT_SEND_TIMEOUT", |a| {
        &a.proxy_connect_send_timeout
    }),
];

impl ServeArgs {
    /// The raw value of the flag for the setting whose environment variable is `env_name`
    /// (`"CACHE_MAX_SIZE"` → `--cache-max-size`), if given. `None` for unknown names.
    pub fn get(&self, env_name: &str) -> Option<&str> {
        FLAGS
            .iter()
            .find(|(name, _)| *name == env_name)
            .and_then(|(_, field)| field(self).as_deref())
    }
}

/// Prints the flags that were given; `--auth-registries` (passwords) as `[REDACTED]`.
impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ServeArgs");
        if let Some(config) = &self.config {
            s.field("config", config);
        }
        for (name, field) in FLAGS {
            match field(self) {
                Some(_) if crate::config::SECRET_SETTINGS.contains(name) => {
                    s.field(name, &"[REDACTED]")
                }
                Some(value) => s.field(name, value),
                None => continue,
            };
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::try_parse_from(["registry-proxy", "--listen", "127.0.0.1:1"]).unwrap();
        assert!(cli.command.is_none());
        match cli.into_command() {
            Command::Serve(args) => assert_eq!(args.listen.as_deref(), Some("127.0.0.1:1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subcommands() {
        let cli =
            Cli::try_parse_from(["registry-proxy", "serve", "--cache-max-size", "1g"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Serve(ref a)) if a.cache_max_size.as_deref() == Some("1g"))
        );

        let cli = Cli::try_parse_from(["registry-proxy", "cache", "verify", "--cache-dir", "/c"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Cache { command: CacheCommand::Verify(ref a) }) if a.cache_dir.as_deref() == Some("/c")
        ));

        let cli = Cli::try_parse_from([
            "registry-proxy",
            "setup",
            "k3s",
            "--proxy",
            "http://p:3128",
            "--registries",
            "quay.io",
        ])
        .unwrap();
        let Some(Command::Setup(setup)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(setup.client, SetupClient::K3s);
        assert_eq!(setup.mode, SetupMode::Mirror);
        assert_eq!(setup.proxy, "http://p:3128");
        assert_eq!(setup.serve.registries.as_deref(), Some("quay.io"));

        let cli = Cli::try_parse_from([
            "registry-proxy",
            "setup",
            "crio",
            "--proxy",
            "http://p:3128",
            "--mode",
            "connect",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Setup(ref s)) if s.mode == SetupMode::Connect));
    }

    #[test]
    fn operator_commands() {
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "cache",
            "ls",
            "--json",
            "--cache-dir",
            "/c",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Cache { command: CacheCommand::Ls(ref a) }) if a.json && a.serve.cache_dir.as_deref() == Some("/c")
        ));
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "cache",
            "purge",
            "quay.io/org/*",
            "--older-than",
            "30d",
            "--dry-run",
        ])
        .unwrap();
        let Some(Command::Cache {
            command: CacheCommand::Purge(purge),
        }) = cli.command
        else {
            panic!("{cli:?}")
        };
        assert_eq!(purge.target.as_deref(), Some("quay.io/org/*"));
        assert_eq!(purge.older_than.as_deref(), Some("30d"));
        assert!(purge.dry_run && !purge.json);
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "warm",
            "--proxy",
            "http://p:3128",
            "--platform",
            "linux/arm64",
            "--file",
            "list.txt",
            "alpine:3",
            "quay.io/x/y",
        ])
        .unwrap();
        let Some(Command::Warm(warm)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(warm.images, ["alpine:3", "quay.io/x/y"]);
        assert_eq!(warm.proxy.as_deref(), Some("http://p:3128"));
        assert_eq!(warm.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(warm.file, Some(PathBuf::from("list.txt")));
        assert!(
            Cli::try_parse_from([
                "registry-proxy",
                "warm",
                "--proxy",
                "http://p:3128",
                "--cache-dir",
                "/c",
                "x"
            ])
            .is_err(),
            "--proxy and --cache-dir exclude each other"
        );
    }

    #[test]
    fn rejects_bad_command_lines() {
        let bad: &[&[&str]] = &[
            &["registry-proxy", "setup", "docker"],
            &["registry-proxy", "setup", "lxc", "--proxy", "http://p"],
            &[
                "registry-proxy",
                "setup",
                "docker",
                "--proxy",
                "http://p",
                "--mode",
                "tunnel",
            ],
            &["registry-proxy", "--no-such-flag", "x"],
            &["registry-proxy", "--listen", "1.2.3.4:1", "serve"],
            &["registry-proxy", "--allow-push", "false"],
        ];
        for args in bad {
            assert!(Cli::try_parse_from(*args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn boolean_flags_take_an_optional_value() {
        let cli =
            Cli::try_parse_from(["registry-proxy", "--allow-push", "--verify-ssl=false"]).unwrap();
        assert_eq!(cli.serve.allow_push.as_deref(), Some("true"));
        assert_eq!(cli.serve.verify_ssl.as_deref(), Some("false"));
        assert_eq!(cli.serve.debug, None);
    }

    #[test]
    fn every_flag_is_reachable_by_name() {
        for (name, _) in FLAGS {
            let flag = format!("--{}=x", name.to_ascii_lowercase().replace('_', "-"));
            let cli = Cli::try_parse_from(["registry-proxy", flag.as_str()]).unwrap();
            assert_eq!(cli.serve.get(name), Some("x"), "{flag}");
        }
        assert_eq!(ServeArgs::default().get("NOT_A_SETTING"), None);
    }

    #[test]
    fn debug_hides_passwords() {
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "--auth-registries",
            "a.test:u:hunter2",
            "--debug",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("[REDACTED]") && shown.contains("DEBUG"),
            "{shown}"
        );
    }

    #[test]
    fn config_file_flag() {
        let cli = Cli::try_parse_from(["registry-proxy", "--config", "/etc/rp.toml"]).unwrap();
        assert_eq!(cli.serve.config, Some(PathBuf::from("/etc/rp.toml")));
    }
}
