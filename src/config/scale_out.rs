//! Scale-out (DESIGN §6): where the cache keeps its objects besides the local disk
//! (`STORAGE=s3://bucket/prefix` with `S3_ENDPOINT`, `S3_REGION`, `S3_PATH_STYLE` and the standard
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`), and the replicas that share upstream downloads
//! (`PEERS`, `PEER_LISTEN`, `PEER_SECRET`). Secrets also as `NAME_FILE`. Read from the environment
//! only.
//!
//! Every scale-out setting is declared in [`SCALE_OUT_SETTINGS`] and parsed by [`load`]; nothing
//! else in the configuration knows about them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::error::ConfigError;
use super::layers::read_secret_file;
use super::parse::parse_bool;
use crate::secret::Secret;

/// The settings of this module: name, default, whether secret (also read from `NAME_FILE`).
pub const SCALE_OUT_SETTINGS: &[(&str, &str, bool)] = &[
    ("STORAGE", "disk", false),
    ("S3_ENDPOINT", "AWS, from S3_REGION", false),
    ("S3_REGION", DEFAULT_REGION, false),
    ("S3_PATH_STYLE", "true with S3_ENDPOINT, else false", false),
    (
        "AWS_ACCESS_KEY_ID",
        "none (the instance's credentials)",
        true,
    ),
    ("AWS_SECRET_ACCESS_KEY", "none", true),
    ("PEERS", "none", false),
    ("PEER_LISTEN", "none", false),
    ("PEER_SECRET", "none", true),
];

const DEFAULT_REGION: &str = "us-east-1";

/// Where objects live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

/// Reads the scale-out settings from the environment.
pub(super) fn load(
    env: &HashMap<String, String>,
) -> Result<(Storage, Option<PeerSettings>), ConfigError> {
    Ok((storage(env)?, peers(env)?))
}

/// `PEERS`, `PEER_LISTEN` and `PEER_SECRET`: all or none.
fn peers(env: &HashMap<String, String>) -> Result<Option<PeerSettings>, ConfigError> {
    let list: Vec<String> = env
        .get("PEERS")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let listen = env
        .get("PEER_LISTEN")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    let secret = secret(env, "PEER_SECRET")?;
    if list.is_empty() {
        if listen.is_some() || secret.is_some() {
            return Err(ConfigError::Requires {
                setting: if listen.is_some() {
                    "PEER_LISTEN"
                } else {
                    "PEER_SECRET"
                }
                .into(),
                missing: "PEERS",
                hint: "list the replicas' peer addresses (host:port …, or a DNS name:port)",
            });
        }
        return Ok(None);
    }
    let Some(listen) = listen else {
        return Err(ConfigError::Requires {
            setting: "PEERS".into(),
            missing: "PEER_LISTEN",
            hint: "give this replica's peer port (e.g. 0.0.0.0:3129)",
        });
    };
    let listen = listen
        .parse::<SocketAddr>()
        .map_err(|e| ConfigError::Storage {
            setting: "PEER_LISTEN",
            message: format!("{listen:?} is not a socket address (e.g. 0.0.0.0:3129): {e}"),
        })?;
    let Some(secret) = secret.filter(|s| !s.expose().is_empty()) else {
        return Err(ConfigError::Requires {
            setting: "PEERS".into(),
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
                setting: "PEERS",
                message: format!("{entry:?} is not host:port"),
            });
        }
    }
    Ok(Some(PeerSettings {
        peers: list,
        listen,
        secret,
    }))
}

/// `STORAGE` and what goes with it.
fn storage(env: &HashMap<String, String>) -> Result<Storage, ConfigError> {
    let value = |name: &str| env.get(name).map(|v| v.trim().to_owned());
    let storage = value("STORAGE").filter(|v| !v.is_empty());
    let Some(url) = storage.filter(|v| v != "disk") else {
        if let Some(name) = ["S3_ENDPOINT", "S3_REGION", "S3_PATH_STYLE"]
            .into_iter()
            .find(|name| env.contains_key(*name))
        {
            return Err(ConfigError::Requires {
                setting: name.to_owned(),
                missing: "STORAGE",
                hint: "set STORAGE=s3://bucket/prefix to use an object store",
            });
        }
        return Ok(Storage::Disk);
    };
    let (bucket, prefix) = parse_url(&url)?;
    let endpoint = match value("S3_ENDPOINT").filter(|v| !v.is_empty()) {
        None => None,
        Some(endpoint) => Some(parse_endpoint(&endpoint)?),
    };
    let region = value("S3_REGION")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let path_style = match value("S3_PATH_STYLE") {
        Some(v) => parse_bool("S3_PATH_STYLE", &v)?,
        None => endpoint.is_some(),
    };
    let key_id = secret(env, "AWS_ACCESS_KEY_ID")?;
    let secret_key = secret(env, "AWS_SECRET_ACCESS_KEY")?;
    let credentials = match (key_id, secret_key) {
        (Some(id), Some(key)) => Some((id.expose().to_owned(), key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::Requires {
                setting: "AWS_ACCESS_KEY_ID".into(),
                missing: "AWS_SECRET_ACCESS_KEY",
                hint: "give both, or neither to use the instance's credentials",
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Requires {
                setting: "AWS_SECRET_ACCESS_KEY".into(),
                missing: "AWS_ACCESS_KEY_ID",
                hint: "give both, or neither to use the instance's credentials",
            });
        }
    };
    Ok(Storage::S3(S3Settings {
        bucket,
        prefix,
        endpoint,
        region,
        path_style,
        credentials,
    }))
}

/// `s3://bucket[/prefix]`.
fn parse_url(url: &str) -> Result<(String, String), ConfigError> {
    let invalid = |message: String| ConfigError::Storage {
        setting: "STORAGE",
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
fn parse_endpoint(endpoint: &str) -> Result<String, ConfigError> {
    let invalid = |message: String| ConfigError::Storage {
        setting: "S3_ENDPOINT",
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

/// A secret given as `NAME` or in the file `NAME_FILE` names (not both).
fn secret(
    env: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    let file_name = format!("{name}_FILE");
    let plain = env.get(name).filter(|v| !v.is_empty());
    let file = env.get(&file_name).filter(|v| !v.trim().is_empty());
    match (plain, file) {
        (Some(_), Some(_)) => Err(ConfigError::SecretTwice {
            setting: name.to_owned(),
            file_setting: file_name,
        }),
        (Some(value), None) => Ok(Some(Secret::new(value.trim()))),
        (None, Some(path)) => {
            let text = read_secret_file(&file_name, &PathBuf::from(path))?;
            Ok(Some(Secret::new(text.trim())))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is a failed test
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
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
}
