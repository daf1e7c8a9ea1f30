//! Builds a [`Config`] from four layers — flags, environment variables, the TOML file named by
//! `--config`/`CONFIG`, defaults — first one that has a setting wins. Each setting has one name in
//! three spellings (`CACHE_MAX_SIZE`, `--cache-max-size`, `cache_max_size`) and one parser, so a
//! malformed value fails the same way wherever it came from, with an error that names where it came
//! from. Passwords never appear in an error.
//!
//! Settings listed in [`SECRET_SETTINGS`] may also be read from a file, the Docker/Kubernetes
//! secrets convention: `NAME_FILE` (flag `--name-file`, file key `name_file`) names the file, and
//! the file's contents (final line break dropped) are the value, as if given as `NAME` in that
//! layer. Giving both `NAME` and `NAME_FILE` in one layer is an error naming both.

mod file;
#[cfg(test)]
mod tests;

use file::{ConfigFile, file_value};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::units::{UnitError, parse_duration, parse_size};
use super::{
    AuthMode, Config, ConnectTo, Credential, LogFormat, ManifestCache, MirrorPolicy, Timeouts,
    TlsListen, TtlTier,
};
use crate::access::htpasswd::{Htpasswd, HtpasswdError};
use crate::access::identity::{IdentityError, client_verifier};
use crate::access::rules::{AccessRule, Rules, RulesError};
use crate::access::tunnel::{self, AllowEntry, EntryError};
use crate::cli::ServeArgs;
use crate::registry::host::{HostError, RegistryHost};
use crate::secret::Secret;

/// Where settings come from. `env` is the process environment as a map (tests pass their own).
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub flags: &'a ServeArgs,
    pub env: &'a HashMap<String, String>,
}

/// Prints the environment's variable names only: values may hold passwords.
impl std::fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.env.keys().collect();
        names.sort();
        f.debug_struct("Sources")
            .field("flags", self.flags)
            .field("env_names", &names)
            .finish()
    }
}

/// Why the configuration was rejected. `setting` names where the value came from: `CACHE_MAX_SIZE`
/// (environment), `--cache-max-size` (flag) or `cache_max_size (in FILE)` (config file).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {value:?} is not a boolean (use true/false, 1/0, yes/no, on/off)")]
    Bool { setting: String, value: String },
    #[error("{setting}: {source}")]
    Unit { setting: String, source: UnitError },
    #[error("{setting}: {value:?} must be greater than zero")]
    Zero { setting: String, value: String },
    #[error("{setting}: empty value")]
    Empty { setting: String },
    #[error("{setting}: {value:?} is not a socket address (e.g. 0.0.0.0:3128): {source}")]
    Addr {
        setting: String,
        value: String,
        source: std::net::AddrParseError,
    },
    #[error("{setting}: {value:?}: {source}")]
    Host {
        setting: String,
        value: String,
        source: HostError,
    },
    #[error("{setting}: invalid regex {value:?}: {source}")]
    Regex {
        setting: String,
        value: String,
        source: Box<regex::Error>,
    },
    #[error("{setting}: {value:?} is not a log format (text or json)")]
    LogFormat { setting: String, value: String },
    #[error("{setting}: {value:?} is not HOST:PORT:ADDR:PORT ({reason})")]
    ConnectTo {
        setting: String,
        value: String,
        reason: &'static str,
    },
    /// A malformed `AUTH_REGISTRIES` entry; `host` is only kept when it is certainly not a password.
    #[error(
        "{setting}: entry {index}{} is malformed: {reason} (expected host{delimiter}user{delimiter}password)",
        host_suffix(.host)
    )]
    Credential {
        setting: String,
        index: usize,
        host: Option<String>,
        delimiter: String,
        reason: &'static str,
    },
    #[error("{setting}: cannot read {}: {source}", .path.display())]
    Unreadable {
        setting: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting} is set but {missing} is not; {hint}")]
    Requires {
        setting: String,
        missing: &'static str,
        hint: &'static str,
    },
    #[error(
        "unknown environment variable {name}: not a registry-proxy setting (check the spelling)"
    )]
    UnknownEnv { name: String },
    #[error("{}: unknown key `{key}`{hint}", .path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: &'static str,
    },
    #[error("{setting}: expected {expected}")]
    FileType {
        setting: String,
        expected: &'static str,
    },
    #[error("cannot read config file {}: {source}", .path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A TOML syntax error; the offending line is not quoted (it may hold a password).
    #[error("config file {}, line {line}, column {column}: {message}", .path.display())]
    ParseFile {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{setting}: registry {host} is listed twice")]
    DuplicateRegistry { setting: String, host: String },
    /// A secret given both directly and as a file in the same layer.
    #[error("{setting} and {file_setting} are both set; give one of them")]
    SecretTwice {
        setting: String,
        file_setting: String,
    },
    /// An unusable htpasswd file; names the line and user, never a hash.
    #[error("{setting}: {}: {source}", .path.display())]
    Htpasswd {
        setting: String,
        path: PathBuf,
        source: HtpasswdError,
    },
    #[error("{setting}: {source}")]
    ClientCa {
        setting: String,
        source: IdentityError,
    },
    #[error("config file {}: {source}", .path.display())]
    Access { path: PathBuf, source: RulesError },
    #[error("{setting}: {value:?} is not an auth mode (verify or central)")]
    AuthMode { setting: String, value: String },
    #[error(
        "{setting}: entry {value:?}: {reason} (expected host-glob:port or CIDR:port; port a number or *)"
    )]
    TunnelAllow {
        setting: String,
        value: String,
        reason: EntryError,
    },
    #[error("{setting}: {value:?} is not a whole number")]
    Count { setting: String, value: String },
}

fn host_suffix(host: &Option<String>) -> String {
    host.as_ref()
        .map(|h| format!(" (host {h})"))
        .unwrap_or_default()
}

/// How a setting's value is written; decides which TOML types the file may use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Size,
    Duration,
    /// Space-separated in flags and environment; a string or an array of strings in the file.
    List,
    /// A whole number; an integer or a string in the file.
    Count,
}

/// Every setting by its environment variable name. The flag is the lower-case name with `-`, the
/// file key the lower-case name.
const SETTINGS: &[(&str, Kind)] = &[
    ("LISTEN", Kind::Text),
    ("REGISTRIES", Kind::List),
    ("AUTH_REGISTRIES", Kind::List),
    ("AUTH_REGISTRIES_DELIMITER", Kind::Text),
    ("AUTH_REGISTRY_DELIMITER", Kind::Text),
    ("CACHE_DIR", Kind::Text),
    ("CA_DIR", Kind::Text),
    ("CACHE_MAX_SIZE", Kind::Size),
    ("CACHE_INACTIVE", Kind::Duration),
    ("CACHE_MIN_FREE", Kind::Size),
    ("ENABLE_MANIFEST_CACHE", Kind::Bool),
    ("MANIFEST_CACHE_PRIMARY_REGEX", Kind::Text),
    ("MANIFEST_CACHE_PRIMARY_TIME", Kind::Duration),
    ("MANIFEST_CACHE_SECONDARY_REGEX", Kind::Text),
    ("MANIFEST_CACHE_SECONDARY_TIME", Kind::Duration),
    ("MANIFEST_CACHE_DEFAULT_TIME", Kind::Duration),
    ("VERIFY_SSL", Kind::Bool),
    ("ALLOW_PUSH", Kind::Bool),
    ("MIRROR_ANY", Kind::Bool),
    ("DISABLE_IPV6", Kind::Bool),
    ("DEBUG", Kind::Bool),
    ("DEBUG_HUB", Kind::Bool),
    ("DEBUG_NGINX", Kind::Bool),
    ("PROXY_REQUEST_BUFFERING", Kind::Bool),
    ("UPSTREAM_CA_FILE", Kind::Text),
    ("CONNECT_TO", Kind::List),
    ("LOG_FORMAT", Kind::Text),
    ("TLS_LISTEN", Kind::Text),
    ("TLS_CERT_FILE", Kind::Text),
    ("TLS_KEY_FILE", Kind::Text),
    ("TLS_NAMES", Kind::List),
    ("PROXY_HTPASSWD", Kind::Text),
    ("TLS_CLIENT_CA_FILE", Kind::Text),
    ("AUTH_CACHE_TTL", Kind::Duration),
    ("TUNNEL_ALLOW", Kind::List),
    ("MAX_CONNECTIONS", Kind::Count),
    ("SEND_TIMEOUT", Kind::Duration),
    ("CLIENT_BODY_TIMEOUT", Kind::Duration),
    ("CLIENT_HEADER_TIMEOUT", Kind::Duration),
    ("KEEPALIVE_TIMEOUT", Kind::Duration),
    ("PROXY_READ_TIMEOUT", Kind::Duration),
    ("PROXY_CONNECT_TIMEOUT", Kind::Duration),
    ("PROXY_SEND_TIMEOUT", Kind::Duration),
    ("PROXY_CONNECT_READ_TIMEOUT", Kind::Duration),
    ("PROXY_CONNECT_CONNECT_TIMEOUT", Kind::Duration),
    ("PROXY_CONNECT_SEND_TIMEOUT", Kind::Duration),
];

/// Settings that hold secrets: never echoed in an error, redacted in debug output, and readable
/// from a file named by `NAME_FILE`. Mark a new secret here (and give its `_FILE` a flag).
pub const SECRET_SETTINGS: &[&str] = &["AUTH_REGISTRIES"];
/// Appended to a secret setting's name for the variant that names a file holding it.
const FILE_SUFFIX: &str = "_FILE";
/// Largest secret file read.
const MAX_SECRET_FILE: u64 = 1 << 20;

/// Environment variables with these prefixes must be known settings (typo protection); any other
/// variable is none of our business.
const GUARDED_PREFIXES: [&str; 8] = [
    "MANIFEST_CACHE_",
    "PROXY_CONNECT_",
    "AUTH_REGISTR",
    "AUTH_CACHE",
    "PROXY_HTPASS",
    "CACHE_",
    "TLS_",
    "TUNNEL_",
];

/// The environment variable naming the config file (flag `--config`).
const CONFIG_ENV: &str = "CONFIG";
/// The file's table of per-registry settings.
const REGISTRY_KEY: &str = "registry";
/// The file's `[groups]` table (TOML only).
const GROUPS_KEY: &str = "groups";
/// The file's `[[access]]` entries (TOML only).
const ACCESS_KEY: &str = "access";

const DEFAULT_LISTEN: &str = "0.0.0.0:3128";
const DEFAULT_REGISTRIES: &str = "registry.k8s.io gcr.io quay.io ghcr.io";
const DEFAULT_CACHE_DIR: &str = "./data/cache";
const DEFAULT_CA_DIR: &str = "./data/ca";
const DEFAULT_CACHE_MAX_SIZE: u64 = 32 << 30;
const DEFAULT_CACHE_MIN_FREE: u64 = 1 << 30;
const DAY: u64 = 86_400;
const DEFAULT_PRIMARY_REGEX: &str = "(stable|nightly|production|test)";
const DEFAULT_SECONDARY_REGEX: &str = r"(.*)(\d|\.)+(.*)(\d|\.)+(.*)(\d|\.)+";
const DEFAULT_TLS_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];
const DEFAULT_AUTH_CACHE_TTL: Duration = Duration::from_secs(300);
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

pub(super) fn load(sources: Sources<'_>) -> Result<Config, ConfigError> {
    check_env_names(sources.env)?;
    let file = ConfigFile::open(sources)?;
    let layers = Layers {
        flags: sources.flags,
        env: sources.env,
        file: file.as_ref(),
    };

    let listen = match layers.text("LISTEN")? {
        Some((setting, value)) => parse_addr(&setting, &value)?,
        None => parse_addr("LISTEN", DEFAULT_LISTEN)?,
    };
    let registries = registries(&layers)?;
    let credentials = credentials(&layers)?;
    let cache_dir = layers
        .path("CACHE_DIR")?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
    let ca_dir = layers
        .path("CA_DIR")?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_DIR));
    let cache_max_size = layers.size("CACHE_MAX_SIZE", DEFAULT_CACHE_MAX_SIZE, false)?;
    let cache_inactive = layers.duration("CACHE_INACTIVE", Duration::from_secs(60 * DAY))?;
    let cache_min_free = layers.size("CACHE_MIN_FREE", DEFAULT_CACHE_MIN_FREE, true)?;
    let tags = TagSettings::global(&layers)?;
    let manifest_cache = tags.build()?;
    let (manifest_cache_overrides, registry_auth) = match &file {
        Some(file) => file.registry_overrides(&tags)?,
        None => (Vec::new(), Vec::new()),
    };
    let verify_ssl = layers.bool("VERIFY_SSL", true)?;
    let allow_push = layers.bool("ALLOW_PUSH", false)?;
    let mirror = if layers.bool("MIRROR_ANY", false)? {
        MirrorPolicy::Any
    } else {
        MirrorPolicy::Configured
    };
    let disable_ipv6 = layers.bool("DISABLE_IPV6", false)?;
    let debug = layers.bool("DEBUG", false)?;
    for ignored in ["DEBUG_HUB", "DEBUG_NGINX", "PROXY_REQUEST_BUFFERING"] {
        layers.bool(ignored, false)?;
    }
    let upstream_ca_file = layers.optional_path("UPSTREAM_CA_FILE")?;
    if let Some((setting, path)) = &upstream_ca_file {
        check_readable(setting, path)?;
    }
    let connect_to = match layers.list("CONNECT_TO")? {
        Some((setting, items)) => items
            .iter()
            .map(|item| parse_connect_to(&setting, item))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let log_format = match layers.text("LOG_FORMAT")? {
        Some((setting, value)) => parse_log_format(&setting, &value)?,
        None => LogFormat::Text,
    };
    let timeouts = timeouts(&layers)?;
    let tls_listen = tls_listen(&layers)?;
    let proxy_htpasswd = proxy_htpasswd(&layers)?;
    let tls_client_ca_file = tls_client_ca_file(&layers, tls_listen.is_some())?;
    let auth_cache_ttl = layers.duration("AUTH_CACHE_TTL", DEFAULT_AUTH_CACHE_TTL)?;
    let auth_on = proxy_htpasswd.is_some() || tls_client_ca_file.is_some();
    let access = match &file {
        Some(file) => {
            let (entries, groups) = file.access_rules()?;
            Rules::new(entries, groups, auth_on).map_err(|source| ConfigError::Access {
                path: file.path.clone(),
                source,
            })?
        }
        None => Rules::new(Vec::new(), BTreeMap::new(), auth_on).map_err(|source| {
            ConfigError::Access {
                path: PathBuf::new(),
                source,
            }
        })?,
    };
    let tunnel_allow = tunnel_allow(&layers)?;
    let max_connections = layers.count("MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)?;

    Ok(Config {
        listen,
        registries,
        credentials,
        cache_dir,
        ca_dir,
        cache_max_size,
        cache_inactive,
        cache_min_free,
        manifest_cache,
        verify_ssl,
        allow_push,
        upstream_ca_file: upstream_ca_file.map(|(_, path)| path),
        connect_to,
        log_format,
        timeouts,
        mirror,
        disable_ipv6,
        debug,
        manifest_cache_overrides,
        tls_listen,
        proxy_htpasswd,
        tls_client_ca_file,
        auth_cache_ttl,
        access,
        registry_auth,
        tunnel_allow,
        max_connections,
    })
}

/// A setting's name, or a secret's `NAME_FILE`.
fn is_known(env_name: &str) -> bool {
    SETTINGS.iter().any(|(name, _)| *name == env_name)
        || env_name
            .strip_suffix(FILE_SUFFIX)
            .is_some_and(|name| SECRET_SETTINGS.contains(&name))
}

fn flag_name(env_name: &str) -> String {
    format!("--{}", env_name.to_ascii_lowercase().replace('_', "-"))
}

/// One layer's value for a secret: given directly (`plain`), or as a file (`from_file`: the
/// setting that named it and the path; an empty path counts as not given).
fn secret_or_plain(
    plain: Option<(String, Raw)>,
    from_file: Option<(String, String)>,
) -> Result<Option<(String, Raw)>, ConfigError> {
    let from_file = from_file.filter(|(_, path)| !path.trim().is_empty());
    match (plain, from_file) {
        (Some((setting, _)), Some((file_setting, _))) => Err(ConfigError::SecretTwice {
            setting,
            file_setting,
        }),
        (Some(found), None) => Ok(Some(found)),
        (None, Some((setting, path))) => {
            let path = PathBuf::from(path);
            let text = read_secret_file(&setting, &path)?;
            Ok(Some((
                format!("{setting} ({})", path.display()),
                Raw::Text(text),
            )))
        }
        (None, None) => Ok(None),
    }
}

/// A secret's file: at most 1 MiB of UTF-8, its final line breaks dropped. An error names the
/// setting and the path, never anything read.
fn read_secret_file(setting: &str, path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let unreadable = |source| ConfigError::Unreadable {
        setting: setting.to_owned(),
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(unreadable(std::io::Error::other("larger than 1 MiB")));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8",
        ))
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

fn check_env_names(env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let mut unknown: Vec<&String> = env
        .keys()
        .filter(|name| {
            GUARDED_PREFIXES.iter().any(|p| name.starts_with(p))
                && !is_known(name)
                && !is_kubernetes_service_link(name)
        })
        .collect();
    unknown.sort();
    match unknown.first() {
        Some(name) => Err(ConfigError::UnknownEnv {
            name: (*name).clone(),
        }),
        None => Ok(()),
    }
}

/// Kubernetes puts `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT`, `<SERVICE>_PORT_3128_TCP_ADDR`, …
/// into every pod's environment: a Service named `cache` or `tls-frontend` must not stop start-up.
fn is_kubernetes_service_link(name: &str) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    name.ends_with("_SERVICE_HOST")
        || name.contains("_SERVICE_PORT")
        || name.ends_with("_PORT")
        || parts.windows(3).any(|w| {
            w[0] == "PORT"
                && !w[1].is_empty()
                && w[1].bytes().all(|b| b.is_ascii_digit())
                && matches!(w[2], "TCP" | "UDP" | "SCTP")
        })
}

/// A value found for a setting, with the name to blame for it.
enum Raw {
    Text(String),
    List(Vec<String>),
}

struct Layers<'a> {
    flags: &'a ServeArgs,
    env: &'a HashMap<String, String>,
    file: Option<&'a ConfigFile>,
}

impl Layers<'_> {
    /// The first layer's value for `env_name`, and the name of the setting it came from.
    /// A secret ([`SECRET_SETTINGS`]) may come from the file its `NAME_FILE` names, in any layer.
    fn find(&self, env_name: &'static str) -> Result<Option<(String, Raw)>, ConfigError> {
        let file_name = SECRET_SETTINGS
            .contains(&env_name)
            .then(|| format!("{env_name}{FILE_SUFFIX}"));
        let file_name = file_name.as_deref();

        let plain = self
            .flags
            .get(env_name)
            .map(|value| (flag_name(env_name), Raw::Text(value.to_owned())));
        let from_file =
            file_name.and_then(|name| Some((flag_name(name), self.flags.get(name)?.to_owned())));
        if let Some(found) = secret_or_plain(plain, from_file)? {
            return Ok(Some(found));
        }

        let plain = self
            .env
            .get(env_name)
            .map(|value| (env_name.to_owned(), Raw::Text(value.clone())));
        let from_file =
            file_name.and_then(|name| Some((name.to_owned(), self.env.get(name)?.clone())));
        if let Some(found) = secret_or_plain(plain, from_file)? {
            return Ok(Some(found));
        }

        let Some(file) = self.file else {
            return Ok(None);
        };
        let key = env_name.to_ascii_lowercase();
        let plain = match file.table.get(&key) {
            None => None,
            Some(value) => {
                let setting = file.setting(&key);
                let kind = SETTINGS
                    .iter()
                    .find(|(name, _)| *name == env_name)
                    .map_or(Kind::Text, |(_, kind)| *kind);
                let raw = file_value(&setting, kind, value)?;
                Some((setting, raw))
            }
        };
        let file_key = file_name.map(str::to_ascii_lowercase);
        let from_file = match file_key.and_then(|k| Some((file.table.get(&k)?, k))) {
            None => None,
            Some((value, key)) => {
                let setting = file.setting(&key);
                match file_value(&setting, Kind::Text, value)? {
                    Raw::Text(path) => Some((setting, path)),
                    Raw::List(_) => {
                        return Err(ConfigError::FileType {
                            setting,
                            expected: "a string",
                        });
                    }
                }
            }
        };
        secret_or_plain(plain, from_file)
    }

    fn text(&self, env_name: &'static str) -> Result<Option<(String, String)>, ConfigError> {
        match self.find(env_name)? {
            None => Ok(None),
            Some((setting, Raw::Text(value))) => Ok(Some((setting, value))),
            Some((setting, Raw::List(_))) => Err(ConfigError::FileType {
                setting,
                expected: "a string",
            }),
        }
    }

    /// Space-separated words, or the file's array items.
    fn list(&self, env_name: &'static str) -> Result<Option<(String, Vec<String>)>, ConfigError> {
        Ok(self.find(env_name)?.map(|(setting, raw)| {
            let items = match raw {
                Raw::Text(s) => s.split_whitespace().map(str::to_owned).collect(),
                Raw::List(items) => items
                    .into_iter()
                    .map(|i| i.trim().to_owned())
                    .filter(|i| !i.is_empty())
                    .collect(),
            };
            (setting, items)
        }))
    }

    fn bool(&self, env_name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.text(env_name)? {
            None => Ok(default),
            Some((setting, value)) => parse_bool(&setting, &value),
        }
    }

    fn size(
        &self,
        env_name: &'static str,
        default: u64,
        zero_ok: bool,
    ) -> Result<u64, ConfigError> {
        let Some((setting, value)) = self.text(env_name)? else {
            return Ok(default);
        };
        let size = parse_size(&value).map_err(|source| ConfigError::Unit {
            setting: setting.clone(),
            source,
        })?;
        if size == 0 && !zero_ok {
            return Err(ConfigError::Zero { setting, value });
        }
        Ok(size)
    }

    /// A whole number greater than zero.
    fn count(&self, env_name: &'static str, default: usize) -> Result<usize, ConfigError> {
        let Some((setting, value)) = self.text(env_name)? else {
            return Ok(default);
        };
        let trimmed = value.trim();
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::Count { setting, value });
        }
        match trimmed.parse::<usize>() {
            Ok(0) => Err(ConfigError::Zero { setting, value }),
            Ok(n) => Ok(n),
            Err(_) => Err(ConfigError::Count { setting, value }),
        }
    }

    fn duration(&self, env_name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.text(env_name)? {
            None => Ok(default),
            Some((setting, value)) => {
                parse_duration(&value).map_err(|source| ConfigError::Unit { setting, source })
            }
        }
    }

    /// A path that has a default: an empty value is an error.
    fn path(&self, env_name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        match self.text(env_name)? {
            None => Ok(None),
            Some((setting, value)) if value.trim().is_empty() => {
                Err(ConfigError::Empty { setting })
            }
            Some((_, value)) => Ok(Some(PathBuf::from(value))),
        }
    }

    /// An optional path: an empty value means none (so a flag can clear an environment variable).
    fn optional_path(
        &self,
        env_name: &'static str,
    ) -> Result<Option<(String, PathBuf)>, ConfigError> {
        Ok(self
            .text(env_name)?
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(s, v)| (s, PathBuf::from(v))))
    }

    /// A delimiter; empty means the default, as in the seed's `${VAR:-default}`.
    fn delimiter(&self, env_name: &'static str, default: &str) -> Result<String, ConfigError> {
        Ok(self
            .text(env_name)?
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned()))
    }
}

/// The tag freshness settings before their regexes are compiled, so that a per-registry override
/// can replace some fields and inherit the rest.
#[derive(Debug, Clone)]
struct TagSettings {
    enabled: bool,
    /// (setting, regex source); an empty source disables the tier.
    primary_regex: (String, String),
    primary_time: Duration,
    secondary_regex: (String, String),
    secondary_time: Duration,
    default_time: Duration,
}

impl TagSettings {
    fn global(layers: &Layers<'_>) -> Result<TagSettings, ConfigError> {
        let regex =
            |env_name: &'static str, default: &str| -> Result<(String, String), ConfigError> {
                Ok(layers
                    .text(env_name)?
                    .unwrap_or_else(|| (env_name.to_owned(), default.to_owned())))
            };
        Ok(TagSettings {
            enabled: layers.bool("ENABLE_MANIFEST_CACHE", false)?,
            primary_regex: regex("MANIFEST_CACHE_PRIMARY_REGEX", DEFAULT_PRIMARY_REGEX)?,
            primary_time: layers
                .duration("MANIFEST_CACHE_PRIMARY_TIME", Duration::from_secs(600))?,
            secondary_regex: regex("MANIFEST_CACHE_SECONDARY_REGEX", DEFAULT_SECONDARY_REGEX)?,
            secondary_time: layers.duration(
                "MANIFEST_CACHE_SECONDARY_TIME",
                Duration::from_secs(60 * DAY),
            )?,
            default_time: layers
                .duration("MANIFEST_CACHE_DEFAULT_TIME", Duration::from_secs(3600))?,
        })
    }

    fn field_kind(&self, field: &str) -> Option<Kind> {
        match field {
            "enabled" => Some(Kind::Bool),
            "primary_regex" | "secondary_regex" => Some(Kind::Text),
            "primary_time" | "secondary_time" | "default_time" => Some(Kind::Duration),
            _ => None,
        }
    }

    fn set(&mut self, field: &str, setting: String, value: String) -> Result<(), ConfigError> {
        let duration = |setting: String, value: &str| {
            parse_duration(value).map_err(|source| ConfigError::Unit { setting, source })
        };
        match field {
            "enabled" => self.enabled = parse_bool(&setting, &value)?,
            "primary_regex" => self.primary_regex = (setting, value),
            "secondary_regex" => self.secondary_regex = (setting, value),
            "primary_time" => self.primary_time = duration(setting, &value)?,
            "secondary_time" => self.secondary_time = duration(setting, &value)?,
            _ => self.default_time = duration(setting, &value)?,
        }
        Ok(())
    }

    fn build(&self) -> Result<ManifestCache, ConfigError> {
        let mut tiers = Vec::new();
        for ((setting, source), ttl) in [
            (&self.primary_regex, self.primary_time),
            (&self.secondary_regex, self.secondary_time),
        ] {
            if source.is_empty() {
                continue;
            }
            // Matched from the start of the tag, not anchored at its end: the seed's nginx
            // `location ~ ^/v2/(.*)/manifests/REGEX`.
            let regex =
                regex::Regex::new(&format!("^(?:{source})")).map_err(|e| ConfigError::Regex {
                    setting: setting.clone(),
                    value: source.clone(),
                    source: Box::new(e),
                })?;
            tiers.push(TtlTier { regex, ttl });
        }
        Ok(ManifestCache {
            enabled: self.enabled,
            tiers,
            default_ttl: self.default_time,
        })
    }
}

fn parse_bool(setting: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Bool {
            setting: setting.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// A socket address; a bare port (`3128` or `:3128`) means all IPv4 interfaces.
fn parse_addr(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let trimmed = value.trim();
    let port = trimmed.strip_prefix(':').unwrap_or(trimmed);
    let candidate = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.0.0.0:{port}")
    } else {
        trimmed.to_owned()
    };
    candidate.parse().map_err(|source| ConfigError::Addr {
        setting: setting.to_owned(),
        value: value.to_owned(),
        source,
    })
}

fn parse_log_format(setting: &str, value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::LogFormat {
            setting: setting.to_owned(),
            value: value.to_owned(),
        }),
    }
}

fn registries(layers: &Layers<'_>) -> Result<Vec<RegistryHost>, ConfigError> {
    let (setting, items) = layers.list("REGISTRIES")?.unwrap_or_else(|| {
        (
            "REGISTRIES".to_owned(),
            DEFAULT_REGISTRIES
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        )
    });
    let mut hosts: Vec<RegistryHost> = Vec::new();
    for item in items {
        let host = RegistryHost::parse(&item).map_err(|source| ConfigError::Host {
            setting: setting.clone(),
            value: item.clone(),
            source,
        })?;
        // Docker Hub is always intercepted; keeping it out of the list is the field's invariant.
        if !host.is_docker_hub() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// `AUTH_REGISTRIES`: entries split on line breaks and on `AUTH_REGISTRIES_DELIMITER` (a file read
/// through `AUTH_REGISTRIES_FILE` may hold one or more entries per line), each
/// `host D user D password` split on `AUTH_REGISTRY_DELIMITER` into at most three parts (so the
/// password may contain `D`).
fn credentials(layers: &Layers<'_>) -> Result<Vec<Credential>, ConfigError> {
    let Some((setting, raw)) = layers.find("AUTH_REGISTRIES")? else {
        return Ok(Vec::new());
    };
    let part_delimiter = layers.delimiter("AUTH_REGISTRY_DELIMITER", ":")?;
    let entries: Vec<String> = match raw {
        Raw::Text(text) => {
            let entry_delimiter = layers.delimiter("AUTH_REGISTRIES_DELIMITER", " ")?;
            text.split('\n')
                .flat_map(|line| line.split(entry_delimiter.as_str()))
                .map(str::to_owned)
                .collect()
        }
        Raw::List(items) => items,
    };
    let mut credentials = Vec::new();
    for (index, entry) in entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        credentials.push(parse_credential(
            &setting,
            index + 1,
            entry,
            &part_delimiter,
        )?);
    }
    Ok(credentials)
}

fn parse_credential(
    setting: &str,
    index: usize,
    entry: &str,
    delimiter: &str,
) -> Result<Credential, ConfigError> {
    let mut parts = entry.splitn(3, delimiter);
    let host = parts.next().unwrap_or_default().trim();
    let username = parts.next();
    let password = parts.next();
    // Name the host only when a delimiter proved it is the first field, not a whole entry that
    // might be a password.
    let shown_host = username
        .is_some()
        .then(|| host.to_owned())
        .filter(|h| RegistryHost::parse(h).is_ok());
    let error = |reason| ConfigError::Credential {
        setting: setting.to_owned(),
        index,
        host: shown_host.clone(),
        delimiter: delimiter.to_owned(),
        reason,
    };
    if host.is_empty() {
        return Err(error("empty host"));
    }
    if RegistryHost::parse(host).is_err() {
        return Err(error("invalid host"));
    }
    let Some(username) = username.filter(|u| !u.is_empty()) else {
        return Err(error("missing user"));
    };
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(error("missing password"));
    };
    Ok(Credential {
        host: host.to_ascii_lowercase(),
        username: username.to_owned(),
        password: Secret::new(password),
    })
}

/// `HOST:PORT:ADDR:PORT`, each host possibly a bracketed IPv6 literal (stored without brackets).
fn parse_connect_to(setting: &str, value: &str) -> Result<ConnectTo, ConfigError> {
    let error = |reason| ConfigError::ConnectTo {
        setting: setting.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let (host, rest) = split_host(value).ok_or_else(|| error("bad HOST"))?;
    let (port, rest) = rest.split_once(':').ok_or_else(|| error("missing ADDR"))?;
    let (addr, addr_port) = split_host(rest).ok_or_else(|| error("bad ADDR"))?;
    let port_number = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    Ok(ConnectTo {
        host: host.to_ascii_lowercase(),
        port: port_number(port).ok_or_else(|| error("bad PORT"))?,
        addr: addr.to_owned(),
        addr_port: port_number(addr_port).ok_or_else(|| error("bad ADDR PORT"))?,
    })
}

/// Splits `host:rest` or `[v6]:rest` into a non-empty host (without brackets) and `rest`.
fn split_host(s: &str) -> Option<(&str, &str)> {
    let (host, rest) = match s.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => s.split_once(':')?,
    };
    (!host.is_empty()).then_some((host, rest))
}

fn timeouts(layers: &Layers<'_>) -> Result<Timeouts, ConfigError> {
    let secs = |env_name, default| layers.duration(env_name, Duration::from_secs(default));
    Ok(Timeouts {
        send: secs("SEND_TIMEOUT", 60)?,
        client_body: secs("CLIENT_BODY_TIMEOUT", 60)?,
        client_header: secs("CLIENT_HEADER_TIMEOUT", 60)?,
        keepalive: secs("KEEPALIVE_TIMEOUT", 300)?,
        proxy_read: secs("PROXY_READ_TIMEOUT", 60)?,
        proxy_connect: secs("PROXY_CONNECT_TIMEOUT", 60)?,
        proxy_send: secs("PROXY_SEND_TIMEOUT", 60)?,
        proxy_connect_read: secs("PROXY_CONNECT_READ_TIMEOUT", 60)?,
        proxy_connect_connect: secs("PROXY_CONNECT_CONNECT_TIMEOUT", 60)?,
        proxy_connect_send: secs("PROXY_CONNECT_SEND_TIMEOUT", 60)?,
    })
}

fn tls_listen(layers: &Layers<'_>) -> Result<Option<TlsListen>, ConfigError> {
    let addr = match layers.text("TLS_LISTEN")? {
        Some((setting, value)) if !value.trim().is_empty() => Some(parse_addr(&setting, &value)?),
        _ => None,
    };
    let cert = layers.optional_path("TLS_CERT_FILE")?;
    let key = layers.optional_path("TLS_KEY_FILE")?;
    let cert_files = match (cert, key) {
        (Some((cert_setting, cert)), Some((key_setting, key))) => {
            check_readable(&cert_setting, &cert)?;
            check_readable(&key_setting, &key)?;
            Some((cert_setting, cert, key))
        }
        (Some((setting, _)), None) => {
            return Err(ConfigError::Requires {
                setting,
                missing: "TLS_KEY_FILE",
                hint: "give both or neither",
            });
        }
        (None, Some((setting, _))) => {
            return Err(ConfigError::Requires {
                setting,
                missing: "TLS_CERT_FILE",
                hint: "give both or neither",
            });
        }
        (None, None) => None,
    };
    let Some(addr) = addr else {
        return match cert_files {
            Some((setting, _, _)) => Err(ConfigError::Requires {
                setting,
                missing: "TLS_LISTEN",
                hint: "the certificate is only used by the TLS listener",
            }),
            None => Ok(None),
        };
    };
    let (names_setting, names) = layers.list("TLS_NAMES")?.unwrap_or_else(|| {
        (
            "TLS_NAMES".to_owned(),
            DEFAULT_TLS_NAMES.map(str::to_owned).to_vec(),
        )
    });
    if names.is_empty() && cert_files.is_none() {
        return Err(ConfigError::Empty {
            setting: names_setting,
        });
    }
    Ok(Some(TlsListen {
        addr,
        cert_files: cert_files.map(|(_, cert, key)| (cert, key)),
        names,
    }))
}

/// `PROXY_HTPASSWD`: readable and a valid bcrypt htpasswd file, so a bad file stops start-up.
fn proxy_htpasswd(layers: &Layers<'_>) -> Result<Option<PathBuf>, ConfigError> {
    let Some((setting, path)) = layers.optional_path("PROXY_HTPASSWD")? else {
        return Ok(None);
    };
    check_readable(&setting, &path)?;
    Htpasswd::load(&path).map_err(|source| ConfigError::Htpasswd {
        setting,
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}

/// `TLS_CLIENT_CA_FILE`: only with `TLS_LISTEN`; readable and holding at least one usable CA.
fn tls_client_ca_file(
    layers: &Layers<'_>,
    tls_listen: bool,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some((setting, path)) = layers.optional_path("TLS_CLIENT_CA_FILE")? else {
        return Ok(None);
    };
    if !tls_listen {
        return Err(ConfigError::Requires {
            setting,
            missing: "TLS_LISTEN",
            hint: "client certificates are only asked for on the TLS listener",
        });
    }
    check_readable(&setting, &path)?;
    client_verifier(&path).map_err(|source| ConfigError::ClientCa { setting, source })?;
    Ok(Some(path))
}

/// `[registry."host"] auth`.
fn parse_auth_mode(setting: &str, value: &str) -> Result<AuthMode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "verify" => Ok(AuthMode::Verify),
        "central" => Ok(AuthMode::Central),
        _ => Err(ConfigError::AuthMode {
            setting: setting.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// `TUNNEL_ALLOW` entries (default `*:443`); an empty value allows no target at all.
fn tunnel_allow(layers: &Layers<'_>) -> Result<Vec<AllowEntry>, ConfigError> {
    let (setting, items) = layers.list("TUNNEL_ALLOW")?.unwrap_or_else(|| {
        (
            "TUNNEL_ALLOW".to_owned(),
            vec![tunnel::DEFAULT_TUNNEL_ALLOW.to_owned()],
        )
    });
    tunnel::parse_entries(items.iter().map(String::as_str)).map_err(|(value, reason)| {
        ConfigError::TunnelAllow {
            setting,
            value,
            reason,
        }
    })
}

/// Start-up check that a file we will read later exists and is readable.
fn check_readable(setting: &str, path: &Path) -> Result<(), ConfigError> {
    let unreadable = |source| ConfigError::Unreadable {
        setting: setting.to_owned(),
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    if metadata.is_dir() {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory",
        )));
    }
    Ok(())
}
