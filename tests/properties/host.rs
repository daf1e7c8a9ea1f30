//! `RegistryHost::parse` and `from_parts`: canonical forms, round trips through `Display`, and
//! a decimal port.

use proptest::prelude::*;
use proptest::sample::select;
use registry_proxy::registry::host::RegistryHost;

use crate::strategies::{config, host_case, mutated, text};

/// Checks what every host promises: lower case, no brackets, no port 443 or 0, and the same
/// host again from its `Display` form, its upstream authority and its parts.
fn check_host(h: &RegistryHost) -> Result<(), TestCaseError> {
    let host = h.host();
    prop_assert!(!host.is_empty() && host.len() <= 253, "{h:?}");
    prop_assert_eq!(host.to_ascii_lowercase(), host);
    prop_assert!(!host.contains(['[', ']']), "{h:?}");
    prop_assert!(!matches!(h.port(), Some(0 | 443)), "{h:?}");
    prop_assert_eq!(RegistryHost::parse(&h.to_string()), Ok(h.clone()));
    prop_assert_eq!(RegistryHost::parse(&h.upstream_authority()), Ok(h.clone()));
    prop_assert_eq!(RegistryHost::from_parts(host, h.port()), Some(h.clone()));
    prop_assert_eq!(h.is_docker_hub(), h.to_string() == "docker.io");
    Ok(())
}

/// The port text of a host as written, if it has one.
fn port_text(s: &str) -> Option<&str> {
    let s = s.trim();
    match s.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.1.strip_prefix(':'),
        None => s.rsplit_once(':').map(|(_, p)| p),
    }
}

/// A valid host with its port written oddly: signs, spaces, leading zeros, other digits.
fn odd_port() -> impl Strategy<Value = String> {
    let prefix = select(&["", "+", "-", " ", "0", "00", "+0", "٣"][..]);
    let suffix = select(&["", " ", "+", "٣", "\u{0}"][..]);
    (host_case(), prefix, 0u32..70_000, suffix)
        .prop_map(|(h, pre, port, post)| format!("{}:{pre}{port}{post}", h.text))
}

proptest! {
    #![proptest_config(config())]

    /// Hosts as people type them parse to their canonical form, and that form parses to the
    /// same host.
    #[test]
    fn valid_hosts_parse(case in host_case(), pad in "[ \t]{0,2}") {
        let got = RegistryHost::parse(&format!("{pad}{}{pad}", case.text));
        prop_assert_eq!(got.as_ref().ok().map(ToString::to_string), case.canonical.clone());
        if let Ok(h) = got {
            check_host(&h)?;
        }
    }

    /// Arbitrary and near-valid hosts never panic; an accepted one keeps every promise, and its
    /// port was written in decimal digits (RFC 3986 `port = *DIGIT`).
    #[test]
    fn accepted_hosts_are_valid(
        s in prop_oneof![
            text("abcxyz019.-_:[]+"),
            mutated(host_case().prop_map(|c| c.text)),
            odd_port(),
        ],
    ) {
        if let Ok(h) = RegistryHost::parse(&s) {
            check_host(&h)?;
            if let Some(port) = port_text(&s) {
                prop_assert!(
                    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
                    "{s:?} accepted with port {port:?} as {h:?}"
                );
            }
        }
        let _ = RegistryHost::looks_like_host(&s);
    }

    /// `from_parts` (a CONNECT authority) never panics, and what it builds round-trips.
    #[test]
    fn from_parts_round_trips(
        host in text("abcxyz019.-_:"),
        port in prop_oneof![Just(None), Just(Some(0)), Just(Some(443)), any::<Option<u16>>()],
    ) {
        if let Some(h) = RegistryHost::from_parts(&host, port) {
            if !h.is_docker_hub() {
                prop_assert_eq!(h.host().to_owned(), host.to_ascii_lowercase());
            }
            check_host(&h)?;
        }
    }
}
