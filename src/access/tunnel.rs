//! The tunnel policy (`TUNNEL_ALLOW`): which `host:port` targets the proxy may dial on a client's
//! behalf — blind `CONNECT` tunnels, absolute-form `http://` requests, and upstream dials that are
//! not to a configured registry (`MIRROR_ANY` targets, redirects, token realms).
//!
//! An entry is `host-glob:port` or `CIDR:port` (also a bare IP, `[v6]:port`, `[v6/len]:port`; the
//! port may be `*`). A target is allowed when its port matches an entry whose glob matches the name
//! as given (case-insensitive) or whose network contains the address dialled. Loopback, link-local
//! (which holds the cloud metadata address 169.254.169.254), unspecified addresses and the proxy's
//! own listening addresses additionally need an *explicit* entry: an exact host name, or an IP or
//! network narrower than `0.0.0.0/0` / `::/0` — never a glob with `*`.
//!
//! Parsing ([`parse_entry`], [`parse_target`]) and the decision ([`TunnelPolicy::check`]) are pure;
//! [`dial`] resolves a name once and connects only to an address the decision allowed, so there is
//! no window in which a name is checked as one address and dialled as another.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

#[cfg(test)]
mod tests;

/// The default `TUNNEL_ALLOW`: HTTPS to anywhere that is not the proxy's own network.
pub const DEFAULT_TUNNEL_ALLOW: &str = "*:443";

/// Part of the text of every refusal ([`TunnelError::Refused`]); lets callers that only see an
/// error's text (the token fetch in `upstream::auth`) recognise a refusal.
pub const REFUSED_BY_POLICY: &str = "not allowed by TUNNEL_ALLOW";

/// One `TUNNEL_ALLOW` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    host: HostPattern,
    /// `None` for `*`.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Invariant: lower-case, non-empty, no trailing dot; `*` matches any run of characters.
    Glob(String),
    /// Invariant: `prefix` is at most the address's bit length and `addr` has no host bits set;
    /// an IPv4-mapped IPv6 network is stored as the IPv4 network.
    Net { addr: IpAddr, prefix: u8 },
}

/// Why a `TUNNEL_ALLOW` entry or a `CONNECT` target was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("missing :port")]
    MissingPort,
    #[error("port must be a number from 1 to 65535")]
    BadPort,
    #[error("invalid host")]
    BadHost,
    #[error("invalid network (ADDRESS/LENGTH)")]
    BadNetwork,
    #[error("an IPv6 address needs brackets: [ADDRESS]:PORT")]
    Unbracketed,
}

/// Parses one `TUNNEL_ALLOW` entry.
pub fn parse_entry(s: &str) -> Result<AllowEntry, EntryError> {
    let (host, port) = split_host_port(s.trim())?;
    let port = match port {
        "*" => None,
        p => Some(parse_port(p)?),
    };
    let host = if let Some((addr, len)) = host.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| EntryError::BadNetwork)?;
        let prefix: u8 = match len.bytes().all(|b| b.is_ascii_digit()) {
            true => len.parse().map_err(|_| EntryError::BadNetwork)?,
            false => return Err(EntryError::BadNetwork),
        };
        network(addr, prefix).ok_or(EntryError::BadNetwork)?
    } else if let Ok(addr) = host.parse::<IpAddr>() {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        network(addr, bits).ok_or(EntryError::BadNetwork)?
    } else {
        let glob = normalize_name(host);
        // Not `a..` (one trailing dot is dropped, not two) nor `1.2.3.4.` (an address, not a
        // name): either would print as a different entry.
        let valid = !glob.is_empty()
            && !glob.ends_with('.')
            && glob.parse::<IpAddr>().is_err()
            && glob.len() <= 253
            && glob
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
        if !valid {
            return Err(EntryError::BadHost);
        }
        HostPattern::Glob(glob)
    };
    Ok(AllowEntry { host, port })
}

/// Parses every entry; the first bad one is returned with its text.
pub fn parse_entries<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<AllowEntry>, (String, EntryError)> {
    items
        .into_iter()
        .map(|item| parse_entry(item).map_err(|e| (item.to_owned(), e)))
        .collect()
}

/// Parses a request target's `host:port` (`CONNECT` authority, absolute-form URL authority):
/// `name:port`, `a.b.c.d:port` or `[v6]:port`, port 1–65535. Without a port, `default_port` is
/// used if given, else it is an error. The host comes back lower-case without brackets.
pub fn parse_target(
    authority: &str,
    default_port: Option<u16>,
) -> Result<(String, u16), EntryError> {
    let (host, port) = match split_host_port(authority) {
        Ok((host, port)) => (host, parse_port(port)?),
        Err(EntryError::MissingPort) => match default_port {
            Some(port) => (
                authority
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(authority),
                port,
            ),
            None => return Err(EntryError::MissingPort),
        },
        Err(e) => return Err(e),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        // A bare IPv4 literal, or an IPv6 literal that came in brackets.
        return Ok((ip.to_string(), port));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !host.starts_with(['.', '-']);
    if !valid {
        return Err(EntryError::BadHost);
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// `host:port` for messages, with brackets around an IPv6 literal.
pub fn display_target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Splits `host:port` or `[host]:port`; a bare IPv6 literal is refused (ambiguous).
fn split_host_port(s: &str) -> Result<(&str, &str), EntryError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(EntryError::BadHost)?;
        if after.is_empty() {
            return Err(EntryError::MissingPort);
        }
        let port = after.strip_prefix(':').ok_or(EntryError::BadHost)?;
        if host.is_empty() || !host.contains(':') {
            return Err(EntryError::BadHost);
        }
        return Ok((host, port));
    }
    match s.rsplit_once(':') {
        None => Err(EntryError::MissingPort),
        Some((host, _)) if host.contains(':') => Err(EntryError::Unbracketed),
        Some(("", _)) => Err(EntryError::BadHost),
        Some((host, port)) => Ok((host, port)),
    }
}

fn parse_port(p: &str) -> Result<u16, EntryError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EntryError::BadPort);
    }
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or(EntryError::BadPort)
}

/// The network `addr/prefix` with host bits cleared, IPv4-mapped networks folded to IPv4.
fn network(addr: IpAddr, prefix: u8) -> Option<HostPattern> {
    let (addr, prefix) = match addr {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), prefix - 96),
            None => (addr, prefix),
        },
        _ => (addr, prefix),
    };
    let addr = match addr {
        IpAddr::V4(v4) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        _ => return None,
    };
    Some(HostPattern::Net { addr, prefix })
}

/// Lower-case without a trailing dot (`Example.COM.` and `example.com` are one name).
fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// True if `name` matches `pattern`, where `*` matches any run of characters (also none).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where to resume after the last `*`: its position and the name position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

impl AllowEntry {
    fn matches(&self, name: &str, port: u16, ip: IpAddr) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.host {
            HostPattern::Glob(glob) => glob_match(glob.as_bytes(), name.as_bytes()),
            HostPattern::Net { addr, prefix } => network(ip, *prefix).is_some_and(|n| {
                n == HostPattern::Net {
                    addr: *addr,
                    prefix: *prefix,
                }
            }),
        }
    }

    /// True if the entry names its target rather than matching everything: a glob without `*`,
    /// or a network narrower than the whole address space.
    fn is_explicit(&self) -> bool {
        match &self.host {
            HostPattern::Glob(glob) => !glob.contains('*'),
            HostPattern::Net { prefix, .. } => *prefix > 0,
        }
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = self.port.map_or("*".to_owned(), |p| p.to_string());
        match &self.host {
            HostPattern::Glob(glob) => write!(f, "{glob}:{port}"),
            HostPattern::Net {
                addr: IpAddr::V4(a),
                prefix,
            } => write!(f, "{a}/{prefix}:{port}"),
            HostPattern::Net {
                addr: IpAddr::V6(a),
                prefix,
            } => write!(f, "[{a}/{prefix}]:{port}"),
        }
    }
}

/// Addresses that only an explicit entry opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restricted {
    Loopback,
    LinkLocal,
    Unspecified,
    /// One of the proxy's own listening addresses.
    Proxy,
}

impl fmt::Display for Restricted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restricted::Loopback => "a loopback address",
            Restricted::LinkLocal => "a link-local address",
            Restricted::Unspecified => "an unspecified address",
            Restricted::Proxy => "the proxy's own address",
        })
    }
}

/// Why the policy refused a target address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no entry matches")]
    NoEntry,
    #[error("{ip} is {kind}, which only an explicit (non-wildcard) entry allows")]
    Restricted { ip: IpAddr, kind: Restricted },
}

/// The policy: `TUNNEL_ALLOW` plus the proxy's own listening addresses.
#[derive(Debug, Clone)]
pub struct TunnelPolicy {
    entries: Vec<AllowEntry>,
    /// The addresses the proxy listens on (`LISTEN`, `TLS_LISTEN`) as bound.
    own: Vec<SocketAddr>,
    /// True if an address belongs to this machine (used for own listeners on 0.0.0.0 / ::).
    is_local: fn(IpAddr) -> bool,
}

impl TunnelPolicy {
    /// The policy for `entries`, protecting the listeners bound at `own`.
    pub fn new(entries: Vec<AllowEntry>, own: Vec<SocketAddr>) -> TunnelPolicy {
        TunnelPolicy {
            entries,
            own,
            is_local: is_local_address,
        }
    }

    /// Decides whether the proxy may connect to `ip` (the address about to be dialled) for the
    /// target `name:port` (the name as the client or upstream gave it).
    pub fn check(&self, name: &str, port: u16, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        let name = normalize_name(name.trim_start_matches('[').trim_end_matches(']'));
        let mut matched = false;
        let mut explicit = false;
        for entry in self.entries.iter().filter(|e| e.matches(&name, port, ip)) {
            matched = true;
            if entry.is_explicit() {
                explicit = true;
                break;
            }
        }
        if !matched {
            return Err(Refusal::NoEntry);
        }
        match self.restricted(ip, port) {
            Some(kind) if !explicit => Err(Refusal::Restricted { ip, kind }),
            _ => Ok(()),
        }
    }

    /// Refuses early, before any name is resolved, a target that no entry could allow whatever
    /// its address: no entry for the port whose glob matches the name or that is a network.
    pub fn precheck(&self, name: &str, port: u16) -> Result<(), Refusal> {
        let name = normalize_name(name.trim_start_matches('[').trim_end_matches(']'));
        let possible = self.entries.iter().any(|e| {
            e.port.is_none_or(|p| p == port)
                && match &e.host {
                    HostPattern::Glob(glob) => glob_match(glob.as_bytes(), name.as_bytes()),
                    HostPattern::Net { .. } => true,
                }
        });
        if possible {
            Ok(())
        } else {
            Err(Refusal::NoEntry)
        }
    }

    /// What makes `ip` (canonical) need an explicit entry, if anything.
    fn restricted(&self, ip: IpAddr, port: u16) -> Option<Restricted> {
        let kind = match ip {
            IpAddr::V4(v4) if v4.is_loopback() => Some(Restricted::Loopback),
            IpAddr::V4(v4) if v4.is_link_local() => Some(Restricted::LinkLocal),
            // 0.0.0.0/8 is "this network"; Linux connects 0.0.0.0 to the local host.
            IpAddr::V4(v4) if v4.octets()[0] == 0 => Some(Restricted::Unspecified),
            IpAddr::V6(v6) if v6.is_loopback() => Some(Restricted::Loopback),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(Restricted::LinkLocal),
            IpAddr::V6(v6) if v6.is_unspecified() => Some(Restricted::Unspecified),
            _ => None,
        };
        if kind.is_some() {
            return kind;
        }
        let own = self.own.iter().any(|a| {
            a.port() == port
                && (a.ip().to_canonical() == ip || (a.ip().is_unspecified() && (self.is_local)(ip)))
        });
        own.then_some(Restricted::Proxy)
    }
}

/// True if `ip` is an address of this machine: binding a socket to it succeeds only then.
fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Why a dial through the policy failed. The text is for logs: it may name internal addresses.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Keep the text in step with [`REFUSED_BY_POLICY`].
    #[error("{target} is not allowed by TUNNEL_ALLOW: {reason}")]
    Refused { target: String, reason: Refusal },
    #[error("cannot resolve {target}: {source}")]
    Resolve { target: String, source: io::Error },
    #[error("cannot connect to {target} ({addr}): {source}")]
    Connect {
        target: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("connecting to {target} timed out after {timeout:?}")]
    Timeout { target: String, timeout: Duration },
}

impl TunnelError {
    /// The closest `io::ErrorKind`, for callers that speak `io::Error`.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            TunnelError::Refused { .. } => io::ErrorKind::PermissionDenied,
            TunnelError::Resolve { source, .. } | TunnelError::Connect { source, .. } => {
                source.kind()
            }
            TunnelError::Timeout { .. } => io::ErrorKind::TimedOut,
        }
    }
}

/// Resolves `host` once and connects to the first address the policy allows that answers, all
/// within `connect_timeout`. `host` is a name or an IP literal without brackets.
pub async fn dial(
    policy: &TunnelPolicy,
    host: &str,
    port: u16,
    connect_timeout: Duration,
) -> Result<TcpStream, TunnelError> {
    connect(Some(policy), host, port, connect_timeout, false).await
}

/// [`dial`] for every outgoing connection: `policy` is `None` for targets the operator named
/// (configured registries, `CONNECT_TO`); `ipv4_only` is `DISABLE_IPV6`.
pub(crate) async fn connect(
    policy: Option<&TunnelPolicy>,
    host: &str,
    port: u16,
    connect_timeout: Duration,
    ipv4_only: bool,
) -> Result<TcpStream, TunnelError> {
    let target = display_target(host, port);
    if let Some(Err(reason)) = policy.map(|p| p.precheck(host, port)) {
        return Err(TunnelError::Refused { target, reason });
    }
    let attempt = async {
        let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| TunnelError::Resolve {
                    target: target.clone(),
                    source,
                })?
                .collect(),
        };
        let mut refusal = None;
        let mut allowed = Vec::new();
        for addr in resolved.into_iter().filter(|a| !(ipv4_only && a.is_ipv6())) {
            match policy.map_or(Ok(()), |p| p.check(host, port, addr.ip())) {
                Ok(()) => allowed.push(addr),
                Err(reason) => {
                    tracing::debug!(%target, %addr, %reason, "address refused by TUNNEL_ALLOW");
                    refusal.get_or_insert(reason);
                }
            }
        }
        if allowed.is_empty() {
            return Err(match refusal {
                Some(reason) => TunnelError::Refused {
                    target: target.clone(),
                    reason,
                },
                None => TunnelError::Resolve {
                    target: target.clone(),
                    source: io::Error::new(io::ErrorKind::NotFound, "no usable address"),
                },
            });
        }
        let mut last = None;
        for addr in allowed {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(source) => last = Some((addr, source)),
            }
        }
        let (addr, source) = last.unwrap_or_else(|| {
            (
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
                io::Error::other("no address tried"),
            )
        });
        Err(TunnelError::Connect {
            target: target.clone(),
            addr,
            source,
        })
    };
    match tokio::time::timeout(connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(TunnelError::Timeout {
            target: target.clone(),
            timeout: connect_timeout,
        }),
    }
}
