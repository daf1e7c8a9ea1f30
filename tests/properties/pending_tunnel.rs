//! PENDING — not declared in `main.rs` yet: enable with `mod pending_tunnel;` (or rename to
//! `tunnel.rs`) once `registry_proxy::access::tunnel` has landed.
//!
//! Expected API (`TUNNEL_ALLOW`: `host-glob:port` / `CIDR:port` entries, DESIGN.md §5): an
//! entry parser that never panics, accepts entries built from that grammar (`*:443`,
//! `*.example.com:443`, `registry.test:5443`, `10.0.0.0/8:22`, `[::1]/128:443`, `[fe80::]/10:*`
//! if port wildcards exist), refuses malformed ones (bad CIDR prefix length, port 0 or past
//! 65535, empty host), and whose accepted entries print back to an entry that parses to the
//! same value. The names were not settled when this was written: [`parse`] below is the one
//! place that calls the parser; adapt it.

use proptest::prelude::*;
use proptest::sample::select;
use registry_proxy::access::tunnel::AllowEntry;

use crate::strategies::{config, host_like, mutated, text};

/// ADAPT: one `TUNNEL_ALLOW` entry, parsed; its printed form.
fn parse(entry: &str) -> Option<String> {
    entry.parse::<AllowEntry>().ok().map(|e| e.to_string())
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![Just("443".to_owned()), (1u16..).prop_map(|p| p.to_string())]
}

/// Entries from the grammar.
fn entry() -> impl Strategy<Value = String> {
    let label = "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?";
    let host_glob = prop_oneof![
        Just("*".to_owned()),
        (label, label).prop_map(|(a, b)| format!("*.{a}.{b}")),
        host_like()
            .prop_map(|h| h.canonical.unwrap_or(h.text))
            .prop_filter("no port", |h| !h.contains(':')),
    ];
    let v4 = (any::<[u8; 4]>(), 0u8..=32)
        .prop_map(|(a, len)| format!("{}.{}.{}.{}/{len}", a[0], a[1], a[2], a[3]));
    let v6 = (any::<[u16; 8]>(), 0u8..=128).prop_map(|(g, len)| {
        let groups: Vec<String> = g.iter().map(|x| format!("{x:x}")).collect();
        format!("[{}]/{len}", groups.join(":"))
    });
    (prop_oneof![3 => host_glob, 1 => v4, 1 => v6], port()).prop_map(|(h, p)| format!("{h}:{p}"))
}

/// Entries just outside the grammar.
fn bad_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 33u8..)
            .prop_map(|(a, len)| format!("{}.{}.{}.{}/{len}:443", a[0], a[1], a[2], a[3])),
        (any::<[u16; 8]>(), 129u16..).prop_map(|(g, len)| {
            let groups: Vec<String> = g.iter().map(|x| format!("{x:x}")).collect();
            format!("[{}]/{len}:443", groups.join(":"))
        }),
        select(
            &[
                "example.com:0",
                "example.com:65536",
                "example.com:",
                ":443",
                "",
                "example.com:-1",
                "10.0.0.0/:443",
                "10.0.0.0/8"
            ][..]
        )
        .prop_map(str::to_owned),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Entries from the grammar parse, and print back to an entry that parses the same.
    #[test]
    fn entries_parse(entry in entry()) {
        let printed = parse(&entry);
        prop_assert!(printed.is_some(), "{entry:?}");
        let printed = printed.unwrap();
        prop_assert_eq!(parse(&printed), Some(printed.clone()));
    }

    /// Malformed entries are refused.
    #[test]
    fn bad_entries_are_refused(entry in bad_entry()) {
        prop_assert_eq!(parse(&entry), None, "{:?}", entry);
    }

    /// Arbitrary and near-valid entries never panic; what parses prints back the same.
    #[test]
    fn garbage_never_panics(entry in prop_oneof![text("*.:/[]09af-"), mutated(entry())]) {
        if let Some(printed) = parse(&entry) {
            prop_assert_eq!(parse(&printed), Some(printed.clone()));
        }
    }
}
