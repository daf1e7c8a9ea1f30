//! `TUNNEL_ALLOW`: the entry parser (`parse_entry`, `parse_entries`), the request-target parser
//! (`parse_target`) and the policy decision (`TunnelPolicy::check` / `precheck`).
//!
//! Entries built from the grammar (`host-glob:port`, `CIDR:port`, bare IPs, `[v6/len]:port`,
//! port `*`, any case, trailing dot, blanks around) parse, print in their canonical form, and
//! that form parses to an equal value; malformed entries are refused; whatever is accepted
//! round-trips. Targets round-trip through `display_target`. Loopback, link-local and
//! unspecified addresses and the proxy's own address are refused under wildcard entries and
//! allowed only by an entry naming them; other addresses follow the entries; a target `check`
//! allows passes `precheck`. Nothing panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use registry_proxy::access::tunnel::{
    AllowEntry, Refusal, Restricted, TunnelPolicy, display_target, parse_entries, parse_entry,
    parse_target,
};

use crate::strategies::{config, host_like, mutated, text};

/// An entry as typed and the canonical form it must print as.
#[derive(Clone, Debug)]
struct EntryCase {
    text: String,
    canonical: String,
}

/// A DNS-ish label in any case, sometimes all digits.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9]([a-zA-Z0-9_-]{0,8}[a-zA-Z0-9])?",
        1 => "[0-9]{1,3}",
    ]
}

/// A host glob as typed (any case, `*` anywhere, optional trailing dot) and its canonical form.
fn host_glob() -> impl Strategy<Value = (String, String)> {
    let glob = prop_oneof![
        1 => Just("*".to_owned()),
        3 => (vec(label(), 1..5), vec(any::<Index>(), 0..3)).prop_map(|(labels, stars)| {
            let mut s = labels.join(".");
            for star in stars {
                let at = star.index(s.len() + 1);
                s.insert(at, '*');
            }
            s
        }),
        2 => host_like().prop_map(|h| h.text).prop_filter("no port or IPv6", |h| !h.contains([':', '['])),
    ];
    (glob, any::<bool>())
        .prop_filter("a name, not an address", |(g, _)| {
            g.parse::<IpAddr>().is_err()
        })
        .prop_map(|(glob, dot)| {
            let canonical = glob.to_ascii_lowercase();
            let text = if dot { format!("{glob}.") } else { glob };
            (text, canonical)
        })
        .prop_filter("within the name limit", |(_, c)| c.len() <= 253)
}

fn mask_v4(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(a) & mask)
}

fn mask_v6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(u128::from(a) & mask)
}

/// IPv4 addresses, often in the ranges the policy cares about.
fn v4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        3 => any::<[u8; 4]>().prop_map(Ipv4Addr::from),
        1 => any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(127, b, c, d)),
        1 => any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(169, 254, c, d)),
        1 => any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(0, b, c, d)),
    ]
}

/// IPv6 addresses, often loopback, unspecified, link-local or IPv4-mapped.
fn v6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        3 => any::<u128>().prop_map(Ipv6Addr::from),
        1 => Just(Ipv6Addr::LOCALHOST),
        1 => Just(Ipv6Addr::UNSPECIFIED),
        1 => any::<u64>().prop_map(|low| Ipv6Addr::from((0xfe80u128 << 112) | u128::from(low))),
        1 => (0u16..0x40, any::<u64>()).prop_map(|(bits, low)| {
            Ipv6Addr::from(((0xfe80u128 | u128::from(bits)) << 112) | u128::from(low))
        }),
        2 => v4().prop_map(|a| a.to_ipv6_mapped()),
    ]
}

/// An IPv6 address as it may be typed: the standard form, the full form, upper case.
fn v6_text(a: Ipv6Addr) -> impl Strategy<Value = String> {
    let full = a
        .segments()
        .iter()
        .map(|s| format!("{s:x}"))
        .collect::<Vec<_>>()
        .join(":");
    prop_oneof![
        Just(a.to_string()),
        Just(full),
        Just(a.to_string().to_ascii_uppercase()),
    ]
}

/// An address or network as typed and its canonical form.
fn network() -> impl Strategy<Value = (String, String)> {
    let v4_net = (v4(), proptest::option::of(0u8..=32)).prop_map(|(a, prefix)| {
        let p = prefix.unwrap_or(32);
        let text = match prefix {
            Some(p) => format!("{a}/{p}"),
            None => a.to_string(),
        };
        (text, format!("{}/{p}", mask_v4(a, p)))
    });
    let v6_net = (v6(), proptest::option::of(0u8..=128))
        .prop_flat_map(|(a, prefix)| (Just(a), Just(prefix), v6_text(a)))
        .prop_map(|(a, prefix, typed)| {
            let p = prefix.unwrap_or(128);
            let text = match prefix {
                Some(p) => format!("[{typed}/{p}]"),
                None => format!("[{typed}]"),
            };
            let canonical = match a.to_ipv4_mapped() {
                Some(v4) if p >= 96 => format!("{}/{}", mask_v4(v4, p - 96), p - 96),
                _ => format!("[{}/{p}]", mask_v6(a, p)),
            };
            (text, canonical)
        });
    prop_oneof![v4_net, v6_net]
}

/// A port as typed (leading zeros allowed, `*`) and its canonical form.
fn port() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        2 => Just(("443".to_owned(), "443".to_owned())),
        1 => Just(("*".to_owned(), "*".to_owned())),
        2 => (1u16..).prop_map(|p| (p.to_string(), p.to_string())),
        1 => (1u16..10000).prop_map(|p| (format!("0{p}"), p.to_string())),
    ]
}

/// Entries from the grammar.
fn entry() -> impl Strategy<Value = EntryCase> {
    let blank = || select(&["", " ", "\t", "  "][..]);
    (
        prop_oneof![3 => host_glob(), 2 => network()],
        port(),
        blank(),
        blank(),
    )
        .prop_map(
            |((host, host_c), (port, port_c), before, after)| EntryCase {
                text: format!("{before}{host}:{port}{after}"),
                canonical: format!("{host_c}:{port_c}"),
            },
        )
}

/// Entries just outside the grammar.
fn bad_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        (v4(), 33u16..300).prop_map(|(a, len)| format!("{a}/{len}:443")),
        (v6(), 129u16..300).prop_map(|(a, len)| format!("[{a}/{len}]:443")),
        (v4(), select(&["+8", "-8", "", "8 ", "٣", "0x8", "/8"][..]))
            .prop_map(|(a, len)| format!("{a}/{len}:443")),
        (
            host_glob(),
            select(
                &[
                    "0", "65536", "99999", "", "-1", "+443", "44 3", "123456", "0x1bb", "٤٤٣"
                ][..]
            )
        )
            .prop_map(|((h, _), p)| format!("{h}:{p}")),
        (
            host_glob(),
            select(&[" ", "/", "é", "@", "[", "]", "%", "\\", "?", "\0", ","][..]),
            any::<Index>()
        )
            .prop_map(|((h, _), bad, at)| {
                // Not in front: blanks around the entry are trimmed.
                let at = 1 + at.index(h.len());
                format!("{}{bad}{}:443", &h[..at], &h[at..])
            }),
        v6().prop_map(|a| format!("{a}:443"))
            .prop_filter("unbracketed IPv6", |s| s.matches(':').count() > 1),
        v4().prop_map(|a| format!("[{a}]:443")),
        host_glob().prop_map(|(h, _)| h),
        select(
            &[
                "",
                ":443",
                "[]:443",
                "[::1]443",
                "[::1]",
                ".:443",
                "*:",
                "[::1:443",
                "10.0.0.0/8",
                "a..:443",
                "10.0.0.1.:443",
            ][..]
        )
        .prop_map(str::to_owned),
    ]
}

/// What the policy documents as needing an explicit entry.
fn restricted_kind(ip: IpAddr) -> Option<Restricted> {
    match ip.to_canonical() {
        IpAddr::V4(a) if a.octets()[0] == 127 => Some(Restricted::Loopback),
        IpAddr::V4(a) if a.octets()[..2] == [169, 254] => Some(Restricted::LinkLocal),
        IpAddr::V4(a) if a.octets()[0] == 0 => Some(Restricted::Unspecified),
        IpAddr::V6(a) if a == Ipv6Addr::LOCALHOST => Some(Restricted::Loopback),
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => Some(Restricted::LinkLocal),
        IpAddr::V6(a) if a == Ipv6Addr::UNSPECIFIED => Some(Restricted::Unspecified),
        _ => None,
    }
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![v4().prop_map(IpAddr::V4), v6().prop_map(IpAddr::V6)]
}

/// A target name as a client may give it (not an address).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(label(), 1..5)
            .prop_map(|l| l.join("."))
            .prop_filter("a name, not an address", |n| n.parse::<IpAddr>().is_err()),
        1 => select(&["localhost", "LOCALHOST", "metadata.google.internal", "registry.test."][..]).prop_map(str::to_owned),
    ]
}

fn policy(entries: &[&str], own: Vec<SocketAddr>) -> TunnelPolicy {
    TunnelPolicy::new(
        entries.iter().map(|e| parse_entry(e).unwrap()).collect(),
        own,
    )
}

/// A network entry that contains `ip`, narrower than the whole address space. (An IPv6
/// network is not an IPv4 one: for an IPv4-mapped address it is at least a /97, which the
/// parser stores as the IPv4 network.)
fn containing_network(ip: IpAddr, prefix: Index, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/{}:{port}", 1 + prefix.index(32)),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            format!("[{a}/{}]:{port}", 97 + prefix.index(32))
        }
        IpAddr::V6(a) => format!("[{a}/{}]:{port}", 1 + prefix.index(128)),
    }
}

/// The entry for exactly `ip`.
fn exact(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Entries from the grammar parse, print in their canonical form, and that form parses to
    /// an equal entry.
    #[test]
    fn entries_round_trip(e in entry()) {
        let parsed = parse_entry(&e.text);
        prop_assert!(parsed.is_ok(), "{:?}: {:?}", e.text, parsed);
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.to_string(), e.canonical.clone(), "{:?}", e.text);
        prop_assert_eq!(parse_entry(&e.canonical), Ok(parsed));
    }

    /// Malformed entries are refused.
    #[test]
    fn bad_entries_are_refused(entry in bad_entry()) {
        let got = parse_entry(&entry);
        prop_assert!(got.is_err(), "{entry:?} accepted as {got:?}");
    }

    /// A list parses entry by entry; the first bad one is reported with its text.
    #[test]
    fn lists_report_the_first_bad_entry(
        good in vec(entry(), 0..5),
        bad in proptest::option::of((bad_entry(), any::<Index>())),
    ) {
        let mut items: Vec<String> = good.iter().map(|e| e.text.clone()).collect();
        match bad {
            None => {
                let want: Vec<AllowEntry> = items.iter().map(|i| parse_entry(i).unwrap()).collect();
                prop_assert_eq!(parse_entries(items.iter().map(String::as_str)), Ok(want));
            }
            Some((bad, at)) => {
                items.insert(at.index(items.len() + 1), bad.clone());
                let got = parse_entries(items.iter().map(String::as_str));
                let first_bad = items.iter().find(|i| parse_entry(i).is_err()).unwrap();
                prop_assert_eq!(got.map_err(|(text, _)| text), Err(first_bad.clone()));
            }
        }
    }

    /// Arbitrary and near-valid entries never panic; whatever is accepted prints to a form
    /// that parses to an equal entry and prints the same.
    #[test]
    fn accepted_entries_round_trip(
        entry in prop_oneof![
            text("*.:/[]09af-_"),
            mutated(entry().prop_map(|e| e.text)),
            mutated(entry().prop_map(|e| e.canonical)),
        ],
    ) {
        if let Ok(parsed) = parse_entry(&entry) {
            let printed = parsed.to_string();
            let again = parse_entry(&printed);
            prop_assert_eq!(again.as_ref(), Ok(&parsed), "{:?} printed as {:?}", entry, printed);
            prop_assert_eq!(again.unwrap().to_string(), printed);
        }
    }

    /// Request targets: `display_target(host, port)` parses back to the host (lower case, an
    /// address in its standard form) and the port; a target without a port takes the default.
    #[test]
    fn targets_round_trip(
        host in prop_oneof![
            name(),
            ip().prop_map(|ip| ip.to_string()),
        ],
        port in 1u16..,
        default in 1u16..,
    ) {
        let want = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host.to_ascii_lowercase(),
        };
        let written = display_target(&host, port);
        prop_assert_eq!(parse_target(&written, None), Ok((want.clone(), port)));
        prop_assert_eq!(parse_target(&written, Some(default)), Ok((want.clone(), port)));
        let bare = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        prop_assert_eq!(parse_target(&bare, Some(default)), Ok((want, default)));
        prop_assert!(parse_target(&bare, None).is_err());
    }

    /// Arbitrary and near-valid targets never panic; what is accepted is an address in its
    /// standard form or a lower-case name of name characters, and prints back to itself.
    #[test]
    fn accepted_targets_are_clean(
        target in prop_oneof![
            text("[]:.09af-_"),
            mutated((name(), 1u16..).prop_map(|(n, p)| display_target(&n, p))),
            mutated((ip(), 1u16..).prop_map(|(ip, p)| display_target(&ip.to_string(), p))),
        ],
        default in proptest::option::of(1u16..),
    ) {
        if let Ok((host, port)) = parse_target(&target, default) {
            prop_assert!(port != 0);
            match host.parse::<IpAddr>() {
                Ok(ip) => prop_assert_eq!(ip.to_string(), host.clone()),
                Err(_) => prop_assert!(
                    !host.is_empty()
                        && host.len() <= 253
                        && !host.starts_with(['.', '-'])
                        && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
                    "{target:?} → {host:?}"
                ),
            }
            prop_assert_eq!(parse_target(&display_target(&host, port), None), Ok((host, port)));
        }
    }

    /// Loopback, link-local and unspecified addresses (also IPv4-mapped) are refused under
    /// every wildcard entry, whatever name they were reached by, and allowed by an entry that
    /// names the host or a network around the address.
    #[test]
    fn restricted_addresses_need_an_explicit_entry(
        ip in ip().prop_filter("restricted", |ip| restricted_kind(*ip).is_some()),
        name in name(),
        port in 1u16..,
        prefix in any::<Index>(),
    ) {
        let kind = restricted_kind(ip).unwrap();
        let suffix = name.rsplit('.').find(|l| !l.is_empty()).unwrap_or("x").to_owned();
        let port_entry = format!("*:{port}");
        let suffix_entry = format!("*{suffix}:*");
        let wildcards: &[&str] = &["*:*", &port_entry, &suffix_entry, "0.0.0.0/0:*", "[::/0]:*"];
        let refused = Err(Refusal::Restricted { ip: ip.to_canonical(), kind });
        prop_assert_eq!(policy(wildcards, Vec::new()).check(&name, port, ip), refused);

        let by_name = format!("{}:{port}", name.trim_end_matches('.'));
        let by_net = containing_network(ip, prefix, port);
        for explicit in [by_name, by_net] {
            let p = policy(&["*:*", &explicit], Vec::new());
            prop_assert_eq!(p.check(&name, port, ip), Ok(()), "{}", explicit);
            prop_assert_eq!(p.precheck(&name, port), Ok(()));
        }
    }

    /// Other addresses follow the entries: `*:*` allows them, `*:<port>` only on that port, no
    /// entry for the port refuses them.
    #[test]
    fn other_addresses_follow_the_entries(
        ip in ip().prop_filter("not restricted", |ip| restricted_kind(*ip).is_none()),
        name in name(),
        port in 1u16..,
        other_port in 1u16..,
    ) {
        prop_assert_eq!(policy(&["*:*"], Vec::new()).check(&name, port, ip), Ok(()));
        let entry = format!("*:{port}");
        let p = policy(&[entry.as_str()], Vec::new());
        prop_assert_eq!(p.check(&name, port, ip), Ok(()));
        if other_port != port {
            prop_assert_eq!(p.check(&name, other_port, ip), Err(Refusal::NoEntry));
            prop_assert_eq!(p.precheck(&name, other_port), Err(Refusal::NoEntry));
        }
    }

    /// The proxy's own listening address is refused under wildcards and allowed by an entry
    /// naming it.
    #[test]
    fn own_address_needs_an_explicit_entry(
        ip in ip().prop_filter("not restricted", |ip| restricted_kind(*ip).is_none()),
        port in 1u16..,
        name in name(),
    ) {
        let own = vec![SocketAddr::new(ip, port)];
        let refused = Err(Refusal::Restricted { ip: ip.to_canonical(), kind: Restricted::Proxy });
        prop_assert_eq!(policy(&["*:*"], own.clone()).check(&name, port, ip), refused);
        let explicit = exact(ip, port);
        prop_assert_eq!(policy(&["*:*", &explicit], own.clone()).check(&name, port, ip), Ok(()));
        if port != 1 {
            prop_assert_eq!(policy(&["*:*"], own).check(&name, port - 1, ip), Ok(()));
        }
    }

    /// Arbitrary entries, names and addresses never panic, and a target `check` allows is
    /// never refused by `precheck`.
    #[test]
    fn check_never_panics_and_agrees_with_precheck(
        entries in vec(prop_oneof![
            entry().prop_map(|e| e.text),
            mutated(entry().prop_map(|e| e.canonical)),
        ], 0..4),
        name in prop_oneof![name(), text("[]:.*09af-_"), ip().prop_map(|ip| ip.to_string())],
        port in prop_oneof![Just(443u16), any::<u16>()],
        ip in ip(),
    ) {
        let entries: Vec<AllowEntry> = entries.iter().filter_map(|e| parse_entry(e).ok()).collect();
        let p = TunnelPolicy::new(entries, Vec::new());
        if p.check(&name, port, ip).is_ok() {
            prop_assert_eq!(p.precheck(&name, port), Ok(()));
        }
    }
}
