//! Builds a [`Config`] from the layers (flags, environment, TOML file, defaults) and checks it once:
//! values that depend on each other, files that will be read later, and the seed's variables that
//! are accepted with a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::file::ConfigFile;
use super::layers::{Layers, Raw, Sources, check_env_names};
use super::parse::{
    parse_addr, parse_connect_to, parse_credential, parse_log_format, parse_registry,
};
use super::settings::{self as s, ALL};
use super::tags::TagSettings;
use super::{Config, Credential, MirrorPolicy, Timeouts, TlsListen};
use crate::access::htpasswd::Htpasswd;
use crate::access::identity::client_verifier;
use crate::access::rules::Rules;
use crate::access::tunnel::{self, AllowEntry};
use crate::registry::host::RegistryHost;
use crate::secret::Secret;

pub(super) fn load(sources: Sources<'_>) -> Result<Config, ConfigError> {
    check_env_names(sources.env)?;
    let file = ConfigFile::open(sources)?;
    let layers = Layers {
        flags: sources.flags,
        env: sources.env,
        file: file.as_ref(),
    };

    let listen = match layers.text(&s::LISTEN)? {
        Some((setting, value)) => parse_addr(&setting, &value)?,
        None => {
            return Err(ConfigError::Empty {
                setting: s::LISTEN.name.to_owned(),
            });
        }
    };
    let (registries, plain_http) = registries(&layers)?;
    let credentials = credentials(&layers)?;
    let cache_dir = layers.path(&s::CACHE_DIR)?;
    let ca_dir = layers.path(&s::CA_DIR)?;
    let ca_key_passphrase = layers
        .text(&s::CA_KEY_PASSPHRASE)?
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
        .map(Secret::new);
    let cache_max_size = layers.size(&s::CACHE_MAX_SIZE, false)?;
    let cache_inactive = layers.duration(&s::CACHE_INACTIVE)?;
    let cache_min_free = layers.size(&s::CACHE_MIN_FREE, true)?;
    let tags = TagSettings::global(&layers)?;
    let manifest_cache = tags.build()?;
    let (manifest_cache_overrides, registry_auth) = match &file {
        Some(file) => file.registry_overrides(&tags)?,
        None => (Vec::new(), Vec::new()),
    };
    let verify_ssl = layers.bool(&s::VERIFY_SSL)?;
    let allow_push = layers.bool(&s::ALLOW_PUSH)?;
    let mirror = if layers.bool(&s::MIRROR_ANY)? {
        MirrorPolicy::Any
    } else {
        MirrorPolicy::Configured
    };
    let disable_ipv6 = layers.bool(&s::DISABLE_IPV6)?;
    let zero_copy = layers.bool(&s::ZERO_COPY)?;
    let debug = layers.bool(&s::DEBUG)?;
    let warnings = seed_warnings(&layers)?;
    let upstream_ca_file = layers.optional_path(&s::UPSTREAM_CA_FILE)?;
    if let Some((setting, path)) = &upstream_ca_file {
        check_readable(setting, path)?;
    }
    let connect_to = match layers.list(&s::CONNECT_TO)? {
        Some((setting, items)) => items
            .iter()
            .map(|item| parse_connect_to(&setting, item))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let log_format = match layers.text(&s::LOG_FORMAT)? {
        Some((setting, value)) => parse_log_format(&setting, &value)?,
        None => super::LogFormat::Text,
    };
    let timeouts = timeouts(&layers)?;
    let tls_listen = tls_listen(&layers)?;
    let proxy_htpasswd = proxy_htpasswd(&layers)?;
    let tls_client_ca_file = tls_client_ca_file(&layers, tls_listen.is_some())?;
    let auth_cache_ttl = layers.duration(&s::AUTH_CACHE_TTL)?;
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
    let max_connections = layers.count(&s::MAX_CONNECTIONS)?;
    let (storage, peers) = super::scale_out::load(&layers)?;

    Ok(Config {
        listen,
        registries,
        plain_http,
        credentials,
        cache_dir,
        ca_dir,
        ca_key_passphrase,
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
        zero_copy,
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
        warnings,
        storage,
        peers,
    })
}

/// The seed's variables that registry-proxy does not need: their values are still checked, and
/// each one given is answered with a warning saying what replaces it.
fn seed_warnings(layers: &Layers<'_>) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for setting in ALL {
        let Some(note) = setting.seed_note else {
            continue;
        };
        if let Some((blame, _)) = layers.given(setting)? {
            // Checked like any other value (a malformed one still stops start-up).
            layers.bool(setting)?;
            warnings.push(format!("{blame} is ignored: {note}"));
        }
    }
    Ok(warnings)
}

/// `REGISTRIES`: the registries besides Docker Hub, in order without duplicates, and those of them
/// that are reached over plain HTTP (spelled `http://`).
fn registries(layers: &Layers<'_>) -> Result<(Vec<RegistryHost>, Vec<RegistryHost>), ConfigError> {
    let Some((setting, items)) = layers.list(&s::REGISTRIES)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut hosts: Vec<RegistryHost> = Vec::new();
    let mut plain_http: Vec<RegistryHost> = Vec::new();
    let mut https: Vec<RegistryHost> = Vec::new();
    for item in items {
        let (host, plain) = parse_registry(&setting, &item)?;
        // Docker Hub is always intercepted; keeping it out of the list is the field's invariant.
        if host.is_docker_hub() {
            continue;
        }
        let (this, other) = if plain {
            (&mut plain_http, &https)
        } else {
            (&mut https, &plain_http)
        };
        if other.contains(&host) {
            return Err(ConfigError::MixedSchemes {
                setting,
                host: host.to_string(),
            });
        }
        if !this.contains(&host) {
            this.push(host.clone());
        }
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok((hosts, plain_http))
}

/// `AUTH_REGISTRIES`: entries split on line breaks and on `AUTH_REGISTRIES_DELIMITER` (a file read
/// through `AUTH_REGISTRIES_FILE` may hold one or more entries per line), each split on
/// `AUTH_REGISTRY_DELIMITER`.
fn credentials(layers: &Layers<'_>) -> Result<Vec<Credential>, ConfigError> {
    let Some((setting, raw)) = layers.value(&s::AUTH_REGISTRIES)? else {
        return Ok(Vec::new());
    };
    let part_delimiter = layers.delimiter(&s::AUTH_REGISTRY_DELIMITER)?;
    let entries: Vec<String> = match raw {
        Raw::Text(text) => {
            let entry_delimiter = layers.delimiter(&s::AUTH_REGISTRIES_DELIMITER)?;
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

fn timeouts(layers: &Layers<'_>) -> Result<Timeouts, ConfigError> {
    Ok(Timeouts {
        send: layers.duration(&s::SEND_TIMEOUT)?,
        client_body: layers.duration(&s::CLIENT_BODY_TIMEOUT)?,
        client_header: layers.duration(&s::CLIENT_HEADER_TIMEOUT)?,
        keepalive: layers.duration(&s::KEEPALIVE_TIMEOUT)?,
        proxy_read: layers.duration(&s::PROXY_READ_TIMEOUT)?,
        proxy_connect: layers.duration(&s::PROXY_CONNECT_TIMEOUT)?,
        proxy_send: layers.duration(&s::PROXY_SEND_TIMEOUT)?,
        proxy_connect_read: layers.duration(&s::PROXY_CONNECT_READ_TIMEOUT)?,
        proxy_connect_connect: layers.duration(&s::PROXY_CONNECT_CONNECT_TIMEOUT)?,
        proxy_connect_send: layers.duration(&s::PROXY_CONNECT_SEND_TIMEOUT)?,
    })
}

fn tls_listen(layers: &Layers<'_>) -> Result<Option<TlsListen>, ConfigError> {
    let addr = match layers.text(&s::TLS_LISTEN)? {
        Some((setting, value)) if !value.trim().is_empty() => Some(parse_addr(&setting, &value)?),
        _ => None,
    };
    let cert = layers.optional_path(&s::TLS_CERT_FILE)?;
    let key = layers.optional_path(&s::TLS_KEY_FILE)?;
    let cert_files = match (cert, key) {
        (Some((cert_setting, cert)), Some((key_setting, key))) => {
            check_readable(&cert_setting, &cert)?;
            check_readable(&key_setting, &key)?;
            Some((cert_setting, cert, key))
        }
        (Some((setting, _)), None) => {
            return Err(ConfigError::Requires {
                setting,
                missing: s::TLS_KEY_FILE.name,
                hint: "give both or neither",
            });
        }
        (None, Some((setting, _))) => {
            return Err(ConfigError::Requires {
                setting,
                missing: s::TLS_CERT_FILE.name,
                hint: "give both or neither",
            });
        }
        (None, None) => None,
    };
    let Some(addr) = addr else {
        return match cert_files {
            Some((setting, _, _)) => Err(ConfigError::Requires {
                setting,
                missing: s::TLS_LISTEN.name,
                hint: "the certificate is only used by the TLS listener",
            }),
            None => Ok(None),
        };
    };
    let (names_setting, names) = layers
        .list(&s::TLS_NAMES)?
        .unwrap_or_else(|| (s::TLS_NAMES.name.to_owned(), Vec::new()));
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
    let Some((setting, path)) = layers.optional_path(&s::PROXY_HTPASSWD)? else {
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
    let Some((setting, path)) = layers.optional_path(&s::TLS_CLIENT_CA_FILE)? else {
        return Ok(None);
    };
    if !tls_listen {
        return Err(ConfigError::Requires {
            setting,
            missing: s::TLS_LISTEN.name,
            hint: "client certificates are only asked for on the TLS listener",
        });
    }
    check_readable(&setting, &path)?;
    client_verifier(&path).map_err(|source| ConfigError::ClientCa { setting, source })?;
    Ok(Some(path))
}

/// `TUNNEL_ALLOW` entries; an empty value allows no target at all.
fn tunnel_allow(layers: &Layers<'_>) -> Result<Vec<AllowEntry>, ConfigError> {
    let (setting, items) = layers
        .list(&s::TUNNEL_ALLOW)?
        .unwrap_or_else(|| (s::TUNNEL_ALLOW.name.to_owned(), Vec::new()));
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
