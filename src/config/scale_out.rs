//! Scale-out (DESIGN §6): where the cache keeps its objects besides the local disk
//! (`STORAGE=s3://bucket/prefix` with `S3_ENDPOINT`, `S3_REGION`, `S3_PATH_STYLE`, the standard
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, and the bucket's own space: `S3_MAX_SIZE`,
//! `S3_GC_LEADER`, `REPLICA_NAME`), and the replicas that share upstream downloads (`PEERS`,
//! `PEER_LISTEN`, `PEER_SECRET`).
//!
//! The settings are declared in `settings.rs` like every other one (flags, environment, file,
//! `NAME_FILE` secrets); this module checks how they go together.

use std::net::SocketAddr;

use super::error::ConfigError;
use super::layers::Layers;
use super::parse::parse_bool;
use super::settings::{self as s, Setting};
use super::units::parse_size;
use crate::secret::Secret;

/// Where objects live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(clippy::large_enum_variant)] // one value, built once at start-up: size does not matter
pub enum Storage {
    /// The local disk only (`STORAGE=disk`, the default).
    #[default]
    Disk,
    /// An S3-compatible bucket shared by replicas, with the local disk in front.
    S3(S3Settings),
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
    /// Invariant: no empty, `.` or `..` segment.
    pub prefix: String,
    /// `S3_ENDPOINT`: `http(s)://host[:port]` of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// `S3_PATH_STYLE`: `https://host/bucket/key` rather than `https://bucket.host/key`.
    pub path_style: bool,
    /// Both or neither (then the instance's own credentials are used).
    pub credentials: Option<(String, Secret)>,
    /// `S3_MAX_SIZE`: the bucket's size cap in bytes; `None`: no cap (only `CACHE_INACTIVE`).
    /// Invariant: greater than zero.
    pub max_size: Option<u64>,
    /// `S3_GC_LEADER`: the replica that collects where the store ignores conditional writes.
    pub gc_leader: Option<String>,
    /// `REPLICA_NAME` (default: the host name): this replica's name, for `S3_GC_LEADER`.
    pub replica_name: String,
}

impl S3Settings {
    /// True if `S3_GC_LEADER` names this replica.
    pub fn is_gc_leader(&self) -> bool {
        self.gc_leader.as_deref() == Some(self.replica_name.as_str())
    }
}

/// Replicas that forward each blob's download to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// `PEERS`: `host:port` of every replica's peer port (this one's too), or one DNS name and
    /// port whose A/AAAA records are the replicas. Invariant: not empty; each has a port.
    pub peers: Vec<String>,
    /// `PEER_LISTEN`: this replica's peer port.
    pub listen: SocketAddr,
    /// `PEER_SECRET`: what replicas authenticate each other with.
    pub secret: Secret,
}

/// Checks the scale-out settings found in `layers`.
pub(super) fn load(layers: &Layers<'_>) -> Result<(Storage, Option<PeerSettings>), ConfigError> {
    Ok((storage(layers)?, peers(layers)?))
}

/// A setting's value, trimmed, if given and not empty (defaults included), with its blame.
fn value(layers: &Layers<'_>, setting: &Setting) -> Result<Option<(String, String)>, ConfigError> {
    Ok(layers
        .text(setting)?
        .map(|(blame, v)| (blame, v.trim().to_owned()))
        .filter(|(_, v)| !v.is_empty()))
}

/// Like [`value`], only when given (not the default).
fn given(layers: &Layers<'_>, setting: &Setting) -> Result<Option<String>, ConfigError> {
    Ok(layers.given(setting)?.map(|(blame, _)| blame))
}

/// `PEERS`, `PEER_LISTEN` and `PEER_SECRET`: all or none.
fn peers(layers: &Layers<'_>) -> Result<Option<PeerSettings>, ConfigError> {
    let (peers_blame, list) = layers
        .list(&s::PEERS)?
        .unwrap_or_else(|| (s::PEERS.name.to_owned(), Vec::new()));
    let listen = value(layers, &s::PEER_LISTEN)?;
    let secret = value(layers, &s::PEER_SECRET)?;
    if list.is_empty() {
        if let Some((blame, _)) = listen.as_ref().or(secret.as_ref()) {
            return Err(ConfigError::Requires {
                setting: blame.clone(),
                missing: "PEERS",
                hint: "list the replicas' peer addresses (host:port …, or a DNS name:port)",
            });
        }
        return Ok(None);
    }
    let Some((listen_blame, listen)) = listen else {
        return Err(ConfigError::Requires {
            setting: peers_blame,
            missing: "PEER_LISTEN",
            hint: "give this replica's peer port (e.g. 0.0.0.0:3129)",
        });
    };
    let listen = listen
        .parse::<SocketAddr>()
        .map_err(|e| ConfigError::Storage {
            setting: listen_blame,
            message: format!("{listen:?} is not a socket address (e.g. 0.0.0.0:3129): {e}"),
        })?;
    let Some((_, secret)) = secret else {
        return Err(ConfigError::Requires {
            setting: peers_blame,
            missing: "PEER_SECRET",
            hint: "replicas authenticate each other with a shared secret",
        });
    };
    for entry in &list {
        let port = entry
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port > 0);
        if port.is_none() {
            return Err(ConfigError::Storage {
                setting: peers_blame,
                message: format!("{entry:?} is not host:port"),
            });
        }
    }
    Ok(Some(PeerSettings {
        peers: list,
        listen,
        secret: Secret::new(secret),
    }))
}

/// `STORAGE` and what goes with it.
fn storage(layers: &Layers<'_>) -> Result<Storage, ConfigError> {
    let storage = value(layers, &s::STORAGE)?;
    // Read (secret files included) whatever the storage, so a wrong file stops start-up.
    let key_id = value(layers, &s::AWS_ACCESS_KEY_ID)?;
    let secret_key = value(layers, &s::AWS_SECRET_ACCESS_KEY)?;
    let Some((storage_blame, url)) = storage.filter(|(_, v)| v != "disk") else {
        for setting in [
            &s::S3_ENDPOINT,
            &s::S3_PATH_STYLE,
            &s::S3_MAX_SIZE,
            &s::S3_GC_LEADER,
        ] {
            if let Some(blame) = given(layers, setting)? {
                return Err(ConfigError::Requires {
                    setting: blame,
                    missing: "STORAGE",
                    hint: "set STORAGE=s3://bucket/prefix to use an object store",
                });
            }
        }
        return Ok(Storage::Disk);
    };
    let (bucket, prefix) = parse_url(&storage_blame, &url)?;
    let endpoint = match value(layers, &s::S3_ENDPOINT)? {
        None => None,
        Some((blame, endpoint)) => Some(parse_endpoint(&blame, &endpoint)?),
    };
    let region = value(layers, &s::S3_REGION)?
        .map(|(_, v)| v)
        .unwrap_or_else(|| "us-east-1".to_owned());
    let path_style = match value(layers, &s::S3_PATH_STYLE)? {
        Some((blame, v)) => parse_bool(&blame, &v)?,
        None => endpoint.is_some(),
    };
    let credentials = match (key_id, secret_key) {
        (Some((_, id)), Some((_, key))) => Some((id, Secret::new(key))),
        (None, None) => None,
        (Some((blame, _)), None) => {
            return Err(ConfigError::Requires {
                setting: blame,
                missing: "AWS_SECRET_ACCESS_KEY",
                hint: "give both, or neither to use the instance's credentials",
            });
        }
        (None, Some((blame, _))) => {
            return Err(ConfigError::Requires {
                setting: blame,
                missing: "AWS_ACCESS_KEY_ID",
                hint: "give both, or neither to use the instance's credentials",
            });
        }
    };
    let max_size = match value(layers, &s::S3_MAX_SIZE)? {
        None => None,
        Some((blame, v)) => {
            let size = parse_size(&v).map_err(|source| ConfigError::Unit {
                setting: blame.clone(),
                source,
            })?;
            if size == 0 {
                return Err(ConfigError::Zero {
                    setting: blame,
                    value: v,
                });
            }
            Some(size)
        }
    };
    let gc_leader = value(layers, &s::S3_GC_LEADER)?.map(|(_, v)| v);
    let replica_name = match value(layers, &s::REPLICA_NAME)? {
        Some((_, name)) => name,
        None => host_name(layers),
    };
    Ok(Storage::S3(S3Settings {
        bucket,
        prefix,
        endpoint,
        region,
        path_style,
        credentials,
        max_size,
        gc_leader,
        replica_name,
    }))
}

/// This machine's name: `HOSTNAME` (set by shells and by Kubernetes in every pod: the pod's
/// name), else the kernel's; empty if neither can be had.
fn host_name(layers: &Layers<'_>) -> String {
    if let Some(name) = layers
        .env
        .get("HOSTNAME")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        return name.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// `s3://bucket[/prefix]`.
fn parse_url(blame: &str, url: &str) -> Result<(String, String), ConfigError> {
    let invalid = |message: String| ConfigError::Storage {
        setting: blame.to_owned(),
        message,
    };
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        invalid(format!(
            "{url:?} is neither `disk` nor an `s3://bucket/prefix` URL"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if !bucket_ok {
        return Err(invalid(format!(
            "{bucket:?} is not a bucket name (3 to 63 of a-z 0-9 . -)"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty()
        && prefix.split('/').any(|segment| {
            segment.is_empty()
                || segment == "."
                || segment == ".."
                || segment.chars().any(|c| c.is_control())
        })
    {
        return Err(invalid(format!(
            "prefix {prefix:?} has an empty, `.`, `..` or control-character segment"
        )));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// `http(s)://host[:port]`, without a path.
fn parse_endpoint(blame: &str, endpoint: &str) -> Result<String, ConfigError> {
    let invalid = |message: String| ConfigError::Storage {
        setting: blame.to_owned(),
        message,
    };
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| invalid(format!("{endpoint:?} is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(invalid(format!(
            "{endpoint:?} is not an http(s)://host[:port] URL"
        )));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(format!(
            "{endpoint:?} has a path; give the server's root (the bucket goes in STORAGE)"
        )));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is a failed test
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn with_layers<T>(env: &HashMap<String, String>, f: impl FnOnce(&Layers<'_>) -> T) -> T {
        let flags = crate::cli::ServeArgs::default();
        f(&Layers {
            flags: &flags,
            env,
            file: None,
        })
    }

    fn storage(env: &HashMap<String, String>) -> Result<Storage, ConfigError> {
        with_layers(env, super::storage)
    }

    fn peers(env: &HashMap<String, String>) -> Result<Option<PeerSettings>, ConfigError> {
        with_layers(env, super::peers)
    }

    #[test]
    fn disk_by_default() {
        assert_eq!(storage(&env(&[])).unwrap(), Storage::Disk);
        assert_eq!(
            storage(&env(&[("STORAGE", "disk")])).unwrap(),
            Storage::Disk
        );
        assert!(matches!(
            storage(&env(&[("S3_ENDPOINT", "http://127.0.0.1:9000")])),
            Err(ConfigError::Requires { .. })
        ));
    }

    #[test]
    fn an_s3_bucket_with_its_settings() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("secret");
        std::fs::write(&key_file, "s3cr3t\n").unwrap();
        let found = storage(&env(&[
            ("STORAGE", "s3://cache-bucket/team/proxy/"),
            ("S3_ENDPOINT", "http://127.0.0.1:9000/"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY_FILE", key_file.to_str().unwrap()),
        ]))
        .unwrap();
        let Storage::S3(s3) = found else {
            panic!("expected s3")
        };
        assert_eq!(s3.bucket, "cache-bucket");
        assert_eq!(s3.prefix, "team/proxy");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region, "us-east-1");
        assert!(s3.path_style, "path style by default with an endpoint");
        let (id, key) = s3.credentials.unwrap();
        assert_eq!((id.as_str(), key.expose()), ("AKIDEXAMPLE", "s3cr3t"));
        assert!(!format!("{key:?}").contains("s3cr3t"));

        let Storage::S3(aws) = storage(&env(&[
            ("STORAGE", "s3://bucket"),
            ("S3_REGION", "eu-west-3"),
        ]))
        .unwrap() else {
            panic!("expected s3")
        };
        assert_eq!(
            (aws.prefix.as_str(), aws.region.as_str()),
            ("", "eu-west-3")
        );
        assert!(!aws.path_style && aws.credentials.is_none() && aws.endpoint.is_none());
    }

    #[test]
    fn peers_come_with_their_port_and_secret() {
        assert_eq!(peers(&env(&[])).unwrap(), None);
        let found = peers(&env(&[
            ("PEERS", "10.0.0.1:3129 10.0.0.2:3129"),
            ("PEER_LISTEN", "0.0.0.0:3129"),
            ("PEER_SECRET", "hunter2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(found.peers, ["10.0.0.1:3129", "10.0.0.2:3129"]);
        assert_eq!(found.listen, "0.0.0.0:3129".parse().unwrap());
        assert_eq!(found.secret.expose(), "hunter2");
        for (pairs, setting) in [
            (vec![("PEERS", "a:1")], "PEER_LISTEN"),
            (
                vec![("PEERS", "a:1"), ("PEER_LISTEN", "0.0.0.0:1")],
                "PEER_SECRET",
            ),
            (vec![("PEER_LISTEN", "0.0.0.0:1")], "PEERS"),
            (
                vec![
                    ("PEERS", "no-port"),
                    ("PEER_LISTEN", "0.0.0.0:1"),
                    ("PEER_SECRET", "hunter2"),
                ],
                "PEERS",
            ),
            (
                vec![
                    ("PEERS", "a:1"),
                    ("PEER_LISTEN", "nowhere"),
                    ("PEER_SECRET", "hunter2"),
                ],
                "PEER_LISTEN",
            ),
        ] {
            let e = peers(&env(&pairs)).unwrap_err().to_string();
            assert!(e.contains(setting), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn malformed_values_name_their_setting_and_no_secret() {
        for (pairs, setting) in [
            (vec![("STORAGE", "gs://bucket")], "STORAGE"),
            (vec![("STORAGE", "s3://B")], "STORAGE"),
            (vec![("STORAGE", "s3://bucket/a//b")], "STORAGE"),
            (vec![("STORAGE", "s3://bucket/../b")], "STORAGE"),
            (
                vec![("STORAGE", "s3://bucket"), ("S3_ENDPOINT", "ftp://x")],
                "S3_ENDPOINT",
            ),
            (
                vec![
                    ("STORAGE", "s3://bucket"),
                    ("S3_ENDPOINT", "http://x:9000/path"),
                ],
                "S3_ENDPOINT",
            ),
            (
                vec![("STORAGE", "s3://bucket"), ("S3_PATH_STYLE", "maybe")],
                "S3_PATH_STYLE",
            ),
            (
                vec![
                    ("STORAGE", "s3://bucket"),
                    ("AWS_SECRET_ACCESS_KEY", "hunter2"),
                ],
                "AWS_SECRET_ACCESS_KEY",
            ),
            (
                vec![
                    ("STORAGE", "s3://bucket"),
                    ("AWS_ACCESS_KEY_ID", "id"),
                    ("AWS_SECRET_ACCESS_KEY", "hunter2"),
                    ("AWS_SECRET_ACCESS_KEY_FILE", "/nonexistent"),
                ],
                "AWS_SECRET_ACCESS_KEY",
            ),
        ] {
            let e = storage(&env(&pairs)).unwrap_err().to_string();
            assert!(e.contains(setting), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_bucket_cap_and_its_collector() {
        let Storage::S3(s3) = storage(&env(&[
            ("STORAGE", "s3://bucket"),
            ("S3_MAX_SIZE", "10g"),
            ("S3_GC_LEADER", "proxy-0"),
            ("HOSTNAME", "proxy-0"),
        ]))
        .unwrap() else {
            panic!("expected s3")
        };
        assert_eq!(s3.max_size, Some(10 << 30));
        assert_eq!(s3.replica_name, "proxy-0");
        assert!(s3.is_gc_leader());
        let Storage::S3(s3) = storage(&env(&[
            ("STORAGE", "s3://bucket"),
            ("S3_GC_LEADER", "proxy-0"),
            ("REPLICA_NAME", "proxy-1"),
            ("HOSTNAME", "proxy-0"),
        ]))
        .unwrap() else {
            panic!("expected s3")
        };
        assert_eq!((s3.max_size, s3.replica_name.as_str()), (None, "proxy-1"));
        assert!(!s3.is_gc_leader());
        for (pairs, setting) in [
            (vec![("S3_MAX_SIZE", "1g")], "S3_MAX_SIZE"),
            (vec![("S3_GC_LEADER", "a")], "S3_GC_LEADER"),
            (
                vec![("STORAGE", "s3://bucket"), ("S3_MAX_SIZE", "0")],
                "S3_MAX_SIZE",
            ),
            (
                vec![("STORAGE", "s3://bucket"), ("S3_MAX_SIZE", "lots")],
                "S3_MAX_SIZE",
            ),
        ] {
            let e = storage(&env(&pairs)).unwrap_err().to_string();
            assert!(e.contains(setting), "{e}");
        }
    }

    #[test]
    fn flags_work_like_every_other_setting() {
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "registry-proxy",
            "--storage",
            "s3://bucket/p",
            "--s3-max-size",
            "2g",
            "--peers",
            "a:1 b:2",
            "--peer-listen",
            "127.0.0.1:1",
            "--peer-secret",
            "hunter2",
        ])
        .unwrap();
        let env = HashMap::new();
        let layers = Layers {
            flags: &cli.serve,
            env: &env,
            file: None,
        };
        let (Storage::S3(s3), Some(peers)) = load(&layers).unwrap() else {
            panic!("expected s3 and peers")
        };
        assert_eq!((s3.prefix.as_str(), s3.max_size), ("p", Some(2 << 30)));
        assert_eq!(peers.peers, ["a:1", "b:2"]);
        let e = super::peers(&Layers {
            flags: &<crate::cli::Cli as clap::Parser>::try_parse_from([
                "registry-proxy",
                "--peer-listen",
                "nowhere",
                "--peers",
                "a:1",
                "--peer-secret",
                "x",
            ])
            .unwrap()
            .serve,
            env: &env,
            file: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--peer-listen"), "{e}");
    }
}
