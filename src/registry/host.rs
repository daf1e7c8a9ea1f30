//! Registry host names: `host`, `host:port`, `[v6]:port`; Docker Hub's aliases folded into one.

use std::fmt;

/// A registry's identity: lower-case host plus an optional port (443 is folded into `None`).
/// Docker Hub (`docker.io`, `index.docker.io`, `registry-1.docker.io`) is always `docker.io`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryHost {
    /// Invariant: lower-case, non-empty, no brackets (an IPv6 literal is stored bare).
    host: String,
    /// Invariant: never `Some(443)`.
    port: Option<u16>,
}

/// Why a host name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty registry host")]
    Empty,
    #[error("invalid registry host {0:?}")]
    Invalid(String),
    #[error("invalid port in registry host {0:?}")]
    Port(String),
}

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_UPSTREAM: &str = "registry-1.docker.io";

impl RegistryHost {
    /// Docker Hub.
    pub fn docker_hub() -> RegistryHost {
        RegistryHost {
            host: DOCKER_HUB.to_owned(),
            port: None,
        }
    }

    /// Parses `host`, `host:port` or `[v6]:port`.
    pub fn parse(s: &str) -> Result<RegistryHost, HostError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(HostError::Empty);
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| HostError::Invalid(s.to_owned()))?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| HostError::Port(s.to_owned()))?,
                    ),
                ),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some(_) => return Err(HostError::Invalid(s.to_owned())),
                None => (s, None),
            }
        };
        let port = match port {
            None => None,
            // Digits only: `u16::from_str` would also take a leading `+`.
            Some(p) => Some(
                Some(p)
                    .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| HostError::Port(s.to_owned()))?,
            ),
        };
        RegistryHost::from_parts(host, port).ok_or_else(|| HostError::Invalid(s.to_owned()))
    }

    /// Builds from a host and port as seen in a `CONNECT` authority; port 443 is the default.
    /// Port 0 is refused, as [`RegistryHost::parse`] refuses it.
    pub fn from_parts(host: &str, port: Option<u16>) -> Option<RegistryHost> {
        let host = host.to_ascii_lowercase();
        let valid = port != Some(0)
            && !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
            && !host.starts_with(['.', '-'])
            && !host.contains("..");
        if !valid {
            return None;
        }
        let port = port.filter(|p| *p != 443);
        if port.is_none() && DOCKER_HUB_ALIASES.contains(&host.as_str()) {
            return Some(RegistryHost::docker_hub());
        }
        Some(RegistryHost { host, port })
    }

    /// True for Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.port.is_none() && self.host == DOCKER_HUB
    }

    /// The host name alone (no port), as used for TLS SNI and certificates.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, if not 443.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Host name to connect to for the registry API (Docker Hub's is `registry-1.docker.io`).
    pub fn upstream_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_UPSTREAM
        } else {
            &self.host
        }
    }

    /// Port to connect to for the registry API.
    pub fn upstream_port(&self) -> u16 {
        self.port.unwrap_or(443)
    }

    /// `host[:port]` for a URL authority, brackets around an IPv6 literal.
    pub fn upstream_authority(&self) -> String {
        let host = self.upstream_host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// True if a first path component looks like a registry host rather than a repository
    /// component: it has a `.` or a `:`, or is `localhost` (Docker's rule).
    pub fn looks_like_host(component: &str) -> bool {
        component.contains('.') || component.contains(':') || component == "localhost"
    }
}

impl fmt::Display for RegistryHost {
    /// The canonical name: `docker.io` for Docker Hub, else `host[:port]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryHost({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts() {
        let cases: &[(&str, Option<&str>)] = &[
            ("quay.io", Some("quay.io")),
            ("Quay.IO", Some("quay.io")),
            ("registry.test:5443", Some("registry.test:5443")),
            ("registry.test:443", Some("registry.test")),
            ("docker.io", Some("docker.io")),
            ("registry-1.docker.io", Some("docker.io")),
            ("index.docker.io:443", Some("docker.io")),
            ("docker.io:5000", Some("docker.io:5000")),
            ("[::1]:5000", Some("[::1]:5000")),
            ("localhost:5000", Some("localhost:5000")),
            ("", None),
            ("a:b:c", None),
            ("host:0", None),
            ("host:99999", None),
            ("host:+5000", None),
            ("host:-1", None),
            ("[::1]:+5000", None),
            ("ho/st", None),
            ("..", None),
            ("-x", None),
            ("[::1", None),
        ];
        for (input, want) in cases {
            let got = RegistryHost::parse(input).ok().map(|h| h.to_string());
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn docker_hub_upstream() {
        let hub = RegistryHost::parse("docker.io").unwrap();
        assert!(hub.is_docker_hub());
        assert_eq!(hub.upstream_authority(), "registry-1.docker.io");
        let other = RegistryHost::parse("registry.test:5443").unwrap();
        assert_eq!(other.upstream_authority(), "registry.test:5443");
        assert_eq!(other.upstream_port(), 5443);
        assert_eq!(
            RegistryHost::parse("[::1]:5000")
                .unwrap()
                .upstream_authority(),
            "[::1]:5000"
        );
    }

    #[test]
    fn from_parts_like_parse() {
        assert_eq!(
            RegistryHost::from_parts("Quay.io", Some(443)),
            RegistryHost::parse("quay.io").ok()
        );
        assert_eq!(RegistryHost::from_parts("quay.io", Some(0)), None);
    }

    #[test]
    fn host_heuristic() {
        assert!(RegistryHost::looks_like_host("quay.io"));
        assert!(RegistryHost::looks_like_host("localhost"));
        assert!(RegistryHost::looks_like_host("reg:5000"));
        assert!(!RegistryHost::looks_like_host("library"));
    }
}
