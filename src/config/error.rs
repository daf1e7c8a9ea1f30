//! Why a configuration was rejected. Every error names where the value came from, in the spelling
//! the operator used: `CACHE_MAX_SIZE` (environment), `--cache-max-size` (flag) or
//! `cache_max_size (in FILE)` (config file). A secret's value never appears in one.

use std::path::PathBuf;

use super::units::UnitError;
use crate::access::htpasswd::HtpasswdError;
use crate::access::identity::IdentityError;
use crate::access::rules::RulesError;
use crate::access::tunnel::EntryError;
use crate::registry::host::HostError;

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
    #[error("{setting}: {value:?}: {reason}")]
    PlainHttp {
        setting: String,
        value: String,
        reason: &'static str,
    },
    #[error("{setting}: registry {host} is listed both with http:// and without")]
    MixedSchemes { setting: String, host: String },
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
    /// A malformed scale-out setting (`config/scale_out.rs`).
    #[error("{setting}: {message}")]
    Storage { setting: String, message: String },
    #[error("{setting}: {value:?} is not a whole number")]
    Count { setting: String, value: String },
}

fn host_suffix(host: &Option<String>) -> String {
    host.as_ref()
        .map(|h| format!(" (host {h})"))
        .unwrap_or_default()
}
