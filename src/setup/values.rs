//! Everything that goes into a set-up script from outside the binary — the proxy URL (a flag, a
//! query parameter or the request's `Host` header), the prefix, the configured registries — is
//! validated here first, and quoted here for the context it lands in: shell words, JSON, TOML,
//! YAML and systemd unit values. Validation keeps values to characters that are inert everywhere;
//! quoting is the second wall, so that a value that slipped through still could not become code.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::SetupError;
use crate::registry::host::RegistryHost;

/// Longest proxy URL accepted (a 253-byte DNS name, scheme, port and slash fit).
const MAX_PROXY_URL: usize = 300;
/// Longest prefix accepted.
const MAX_PREFIX: usize = 1024;

/// A proxy URL that passed [`ProxyUrl::parse`]: `http(s)://host[:port]`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    https: bool,
    /// Invariant: a lower-case DNS name (letters, digits, `-`, `_` in dot-separated labels), an
    /// IPv4 address, or an IPv6 address in brackets.
    host: String,
    /// Invariant: never 0.
    port: Option<u16>,
}

impl ProxyUrl {
    /// Accepts `http://` or `https://`, a host (DNS name, IPv4 address or bracketed IPv6
    /// address), an optional port and an optional final `/`; refuses everything else (user
    /// information, paths, queries, fragments, white space, quotes, non-ASCII).
    pub fn parse(s: &str) -> Result<ProxyUrl, SetupError> {
        let err = |reason| Err(SetupError::ProxyUrl { reason });
        if s.len() > MAX_PROXY_URL {
            return err("too long");
        }
        let (https, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else {
            return err("it does not start with http:// or https://");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return err("user information is not allowed");
        }
        if authority.contains('/') {
            return err("a path is not allowed");
        }
        if authority.contains(['?', '#']) {
            return err("a query or fragment is not allowed");
        }
        if !authority.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        }) {
            return err("it has a character other than letters, digits, . - _ : [ ]");
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((v6, after)) = bracketed.split_once(']') else {
                return err("an IPv6 address is missing its closing ]");
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return err("the bracketed host is not an IPv6 address");
            }
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return err("only :port may follow an IPv6 address"),
                },
            };
            (format!("[{}]", v6.to_ascii_lowercase()), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if host.is_empty() {
                return err("it has no host");
            }
            if !is_dns_name_or_ipv4(host) {
                return err("the host is not a DNS name or an IPv4 address");
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => None,
            Some(p) => match parse_port(p) {
                Some(p) => Some(p),
                None => return err("the port is not a number from 1 to 65535"),
            },
        };
        Ok(ProxyUrl { https, host, port })
    }

    /// True for `https://`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `host[:port]`, IPv6 in brackets.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// `scheme://host[:port]`, without a final `/`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }
}

/// A DNS name of letters, digits, `-` and `_` (Compose service names have `_`), or an IPv4 address.
fn is_dns_name_or_ipv4(host: &str) -> bool {
    if host.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels
        .iter()
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
    {
        return host.parse::<Ipv4Addr>().is_ok();
    }
    labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// 1 to 5 decimal digits naming a port from 1 to 65535 (no sign, no spaces).
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Where a script writes its files: an absolute path of safe characters, no `..` component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// Invariant: empty (the root) or `/`-led, `[A-Za-z0-9._/-]` only, no `..` component, no
    /// final `/`.
    trimmed: String,
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, SetupError> {
        let err = |reason| Err(SetupError::Prefix { reason });
        if s.len() > MAX_PREFIX {
            return err("too long");
        }
        if !s.starts_with('/') {
            return err("it is not an absolute path");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
        {
            return err("it has a character other than letters, digits, . _ / -");
        }
        if s.split('/').any(|c| c == "..") {
            return err("it has a .. component");
        }
        Ok(Prefix {
            trimmed: s.trim_end_matches('/').to_owned(),
        })
    }

    /// The prefix without a final `/`: empty for the root.
    pub fn trimmed(&self) -> &str {
        &self.trimmed
    }
}

/// A configured registry, checked again before it is written anywhere: `name` is its canonical
/// `host[:port]` (a directory name and a registries.conf prefix), `upstream` the authority of its
/// API and `scheme` how it is reached (`http` only when `REGISTRIES` says `http://`).
pub(super) struct Registry {
    pub(super) name: String,
    pub(super) upstream: String,
    pub(super) scheme: &'static str,
}

/// Checks that a registry from the configuration is a plain registry host (the configuration
/// validated it; a set-up script does not rely on that).
pub(super) fn registry(
    index: usize,
    host: &RegistryHost,
    plain_http: bool,
) -> Result<Registry, SetupError> {
    let name = host.to_string();
    let upstream = host.upstream_authority();
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
            })
    };
    let round_trips = RegistryHost::parse(&name).is_ok_and(|h| h == *host);
    if !(plain(&name) && plain(&upstream) && round_trips) {
        return Err(SetupError::Registry { index });
    }
    let scheme = if plain_http { "http" } else { "https" };
    Ok(Registry {
        name,
        upstream,
        scheme,
    })
}

/// One shell word, single-quoted: the shell reads it back byte for byte, whatever it holds (a `'`
/// becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A YAML double-quoted scalar: `"` and `\` escaped, and as `\uXXXX` every character YAML would
/// not take literally (control characters, which include NEL, and the line and paragraph
/// separators, the byte-order mark and the non-characters U+FFFE/U+FFFF).
pub fn yaml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML basic string (also usable as a quoted key): `"` and `\` escaped, control characters as
/// `\uXXXX`.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A systemd unit-file value in double quotes: `\`, `"` escaped, `%` (specifiers) doubled,
/// control characters dropped.
pub(super) fn systemd_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
