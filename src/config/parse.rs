//! Parsers for single values, pure functions over text: each takes the name to blame (the setting
//! in the spelling of the layer it came from) and fails with an error naming it.

use std::net::SocketAddr;

use super::error::ConfigError;
use super::{AuthMode, ConnectTo, Credential, LogFormat};
use crate::registry::host::RegistryHost;
use crate::secret::Secret;

pub(super) fn parse_bool(setting: &str, value: &str) -> Result<bool, ConfigError> {
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
pub(super) fn parse_addr(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
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

pub(super) fn parse_log_format(setting: &str, value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::LogFormat {
            setting: setting.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// One `REGISTRIES` entry: `host[:port]`, `https://host[:port]` (the same) or `http://host[:port]`
/// for a registry that speaks plain HTTP (port 80 unless given). Returns the registry and whether
/// it is plain HTTP.
pub(super) fn parse_registry(
    setting: &str,
    item: &str,
) -> Result<(RegistryHost, bool), ConfigError> {
    let plain_error = |reason| ConfigError::PlainHttp {
        setting: setting.to_owned(),
        value: item.to_owned(),
        reason,
    };
    let after = |scheme: &str| {
        item.get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .and_then(|_| item.get(scheme.len()..))
    };
    let (rest, plain) = match (after("http://"), after("https://")) {
        (Some(rest), _) => (rest, true),
        (None, Some(rest)) => (rest, false),
        (None, None) => (item, false),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let host = RegistryHost::parse(rest).map_err(|source| ConfigError::Host {
        setting: setting.to_owned(),
        value: item.to_owned(),
        source,
    })?;
    if plain {
        if host.is_docker_hub() {
            return Err(plain_error("Docker Hub is only reached over https"));
        }
        // 443 is folded into "no port", which means 80 for plain HTTP.
        if rest.ends_with(":443") {
            return Err(plain_error("port 443 is for https"));
        }
    }
    Ok((host, plain))
}

/// `host D user D password`, split on the delimiter `D` into at most three parts (so the password
/// may contain `D`).
pub(super) fn parse_credential(
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
pub(super) fn parse_connect_to(setting: &str, value: &str) -> Result<ConnectTo, ConfigError> {
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

/// `[registry."host"] auth`.
pub(super) fn parse_auth_mode(setting: &str, value: &str) -> Result<AuthMode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "verify" => Ok(AuthMode::Verify),
        "central" => Ok(AuthMode::Central),
        _ => Err(ConfigError::AuthMode {
            setting: setting.to_owned(),
            value: value.to_owned(),
        }),
    }
}
