use std::net::{IpAddr, SocketAddr};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn policy(entries: &str) -> TunnelPolicy {
    policy_with_own(entries, &[])
}

fn policy_with_own(entries: &str, own: &[&str]) -> TunnelPolicy {
    let entries = parse_entries(entries.split_whitespace()).unwrap();
    let own = own
        .iter()
        .map(|a| a.parse::<SocketAddr>().unwrap())
        .collect();
    TunnelPolicy {
        entries,
        own,
        // Pretend this machine has 10.9.8.7 besides loopback.
        is_local: |ip| ip.is_loopback() || ip == IpAddr::from([10, 9, 8, 7]),
    }
}

#[test]
fn entries_parse() {
    let cases: &[(&str, &str)] = &[
        ("*:443", "*:443"),
        ("*:*", "*:*"),
        ("Registry.Local:5000", "registry.local:5000"),
        ("registry.local.:5000", "registry.local:5000"),
        ("*.Example.com:443", "*.example.com:443"),
        ("127.0.0.1:8080", "127.0.0.1/32:8080"),
        ("10.1.2.3/8:*", "10.0.0.0/8:*"),
        ("0.0.0.0/0:*", "0.0.0.0/0:*"),
        ("[::1]:443", "[::1/128]:443"),
        ("[fd00::1/8]:443", "[fd00::/8]:443"),
        ("[::/0]:*", "[::/0]:*"),
        ("[::ffff:127.0.0.1]:80", "127.0.0.1/32:80"),
        ("[::ffff:10.0.0.0/104]:80", "10.0.0.0/8:80"),
        (" host_1-a:65535 ", "host_1-a:65535"),
    ];
    for (input, shown) in cases {
        let entry = parse_entry(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(entry.to_string(), *shown, "{input}");
    }
}

#[test]
fn malformed_entries_are_rejected() {
    let cases: &[(&str, EntryError)] = &[
        ("", EntryError::MissingPort),
        ("example.com", EntryError::MissingPort),
        ("example.com:", EntryError::BadPort),
        ("example.com:0", EntryError::BadPort),
        ("example.com:65536", EntryError::BadPort),
        ("example.com:70000", EntryError::BadPort),
        ("example.com:+443", EntryError::BadPort),
        ("example.com:4x", EntryError::BadPort),
        ("example.com:**", EntryError::BadPort),
        (":443", EntryError::BadHost),
        ("exa mple.com:443", EntryError::BadHost),
        ("user@host:443", EntryError::BadHost),
        ("host/path:443", EntryError::BadNetwork),
        ("10.0.0.0/33:443", EntryError::BadNetwork),
        ("10.0.0.0/:443", EntryError::BadNetwork),
        ("10.0.0.0/-1:443", EntryError::BadNetwork),
        ("[::1/129]:443", EntryError::BadNetwork),
        ("::1:443", EntryError::Unbracketed),
        ("[::1]", EntryError::MissingPort),
        ("[::1]443", EntryError::BadHost),
        ("[example.com]:443", EntryError::BadHost),
        ("[]:443", EntryError::BadHost),
        ("example.com..:443", EntryError::BadHost),
        ("10.0.0.1.:443", EntryError::BadHost),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_entry(input).as_ref(), Err(expected), "{input:?}");
    }
    let (bad, _) = parse_entries(["*:443", "nope"]).unwrap_err();
    assert_eq!(bad, "nope");
}

#[test]
fn targets_parse() {
    let ok: &[(&str, Option<u16>, &str, u16)] = &[
        ("Example.COM:443", None, "example.com", 443),
        ("127.0.0.1:1", None, "127.0.0.1", 1),
        ("[::1]:65535", None, "::1", 65535),
        ("[::FFFF:127.0.0.1]:80", None, "::ffff:127.0.0.1", 80),
        ("example.com", Some(80), "example.com", 80),
        ("[::1]", Some(80), "::1", 80),
    ];
    for (input, default, host, port) in ok {
        assert_eq!(
            parse_target(input, *default),
            Ok(((*host).to_owned(), *port)),
            "{input}"
        );
    }
    let bad: &[(&str, Option<u16>, EntryError)] = &[
        ("example.com", None, EntryError::MissingPort),
        ("example.com:0", None, EntryError::BadPort),
        ("example.com:70000", None, EntryError::BadPort),
        ("example.com:65536", Some(80), EntryError::BadPort),
        ("example.com:", Some(80), EntryError::BadPort),
        ("example.com:*", None, EntryError::BadPort),
        ("::1:443", None, EntryError::Unbracketed),
        ("user@example.com:443", None, EntryError::BadHost),
        ("*.example.com:443", None, EntryError::BadHost),
        ("-x.example.com:443", None, EntryError::BadHost),
        ("", Some(80), EntryError::BadHost),
    ];
    for (input, default, expected) in bad {
        assert_eq!(
            parse_target(input, *default),
            Err(expected.clone()),
            "{input}"
        );
    }
}

#[test]
fn globs_match() {
    let cases: &[(&str, &str, bool)] = &[
        ("*", "", true),
        ("*", "anything.at.all", true),
        ("*.example.com", "a.example.com", true),
        ("*.example.com", "a.b.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "evil-example.com", false),
        ("registry.*", "registry.local", true),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("exact.test", "exact.test", true),
        ("exact.test", "exact.test2", false),
        ("*a", "bbba", true),
        ("*ab", "aab", true),
    ];
    for (pattern, name, expected) in cases {
        assert_eq!(
            glob_match(pattern.as_bytes(), name.as_bytes()),
            *expected,
            "{pattern} vs {name}"
        );
    }
}

#[test]
fn decisions() {
    // (TUNNEL_ALLOW, name, port, address dialled, allowed)
    let cases: &[(&str, &str, u16, &str, bool)] = &[
        // The default: HTTPS anywhere public.
        ("*:443", "example.com", 443, "93.184.216.34", true),
        ("*:443", "example.com", 80, "93.184.216.34", false),
        ("*:443", "example.com", 8443, "93.184.216.34", false),
        ("*:443", "[2001:db8::1]", 443, "2001:db8::1", true),
        // Loopback needs an explicit entry.
        ("*:443", "localhost", 443, "127.0.0.1", false),
        ("*:443", "127.0.0.1", 443, "127.0.0.1", false),
        ("*:443", "127.1.2.3", 443, "127.1.2.3", false),
        ("*:443", "::1", 443, "::1", false),
        ("*:443", "evil.example", 443, "::ffff:127.0.0.1", false),
        ("localhost:443", "localhost", 443, "127.0.0.1", true),
        ("localhost:443", "LocalHost.", 443, "::1", true),
        ("localhost:443", "localhost", 8443, "127.0.0.1", false),
        ("localhost:443", "other.test", 443, "127.0.0.1", false),
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1", true),
        ("127.0.0.1:8080", "anything.test", 8080, "127.0.0.1", true),
        ("127.0.0.1:8080", "x", 8080, "::ffff:127.0.0.1", true),
        ("127.0.0.1:8080", "127.0.0.1", 8081, "127.0.0.1", false),
        ("127.0.0.1:8080", "127.0.0.2", 8080, "127.0.0.2", false),
        ("127.0.0.1:*", "127.0.0.1", 22, "127.0.0.1", true),
        ("127.0.0.0/8:*", "127.0.0.2", 22, "127.0.0.2", true),
        ("[::1]:5000", "::1", 5000, "::1", true),
        // Wildcards never open restricted addresses.
        ("*:*", "127.0.0.1", 8080, "127.0.0.1", false),
        ("*:*", "example.com", 22, "93.184.216.34", true),
        ("0.0.0.0/0:*", "127.0.0.1", 8080, "127.0.0.1", false),
        ("0.0.0.0/0:*", "example.com", 8080, "93.184.216.34", true),
        ("[::/0]:*", "::1", 8080, "::1", false),
        ("*.local:5000", "registry.local", 5000, "127.0.0.1", false),
        ("*:443 *:*", "localhost", 443, "127.0.0.1", false),
        // Link-local and the metadata address.
        (
            "*:80 *:443",
            "169.254.169.254",
            80,
            "169.254.169.254",
            false,
        ),
        (
            "*:*",
            "metadata.google.internal",
            80,
            "169.254.169.254",
            false,
        ),
        ("*:*", "x", 443, "fe80::1", false),
        (
            "169.254.169.254:80",
            "169.254.169.254",
            80,
            "169.254.169.254",
            true,
        ),
        // Unspecified.
        ("*:*", "0.0.0.0", 443, "0.0.0.0", false),
        ("*:*", "x", 443, "0.1.2.3", false),
        ("*:*", "::", 443, "::", false),
        ("*:*", "x", 443, "::ffff:0.0.0.0", false),
        // Networks match the address dialled, not the name.
        ("10.0.0.0/8:443", "internal.test", 443, "10.1.2.3", true),
        ("10.0.0.0/8:443", "internal.test", 443, "11.1.2.3", false),
        ("[fd00::/8]:443", "v6.test", 443, "fd12::1", true),
        ("[fd00::/8]:443", "v6.test", 443, "fe12::1", false),
        // An empty policy allows nothing.
        ("", "example.com", 443, "93.184.216.34", false),
    ];
    for (entries, name, port, addr, allowed) in cases {
        let got = policy(entries).check(name, *port, ip(addr));
        assert_eq!(
            got.is_ok(),
            *allowed,
            "TUNNEL_ALLOW={entries:?} {name}:{port} at {addr}: {got:?}"
        );
    }
}

#[test]
fn prechecks_refuse_before_resolving() {
    let cases: &[(&str, &str, u16, bool)] = &[
        ("*:443", "example.com", 443, true),
        ("*:443", "example.com", 80, false),
        ("*.example.com:*", "a.example.com", 22, true),
        ("*.example.com:*", "example.org", 22, false),
        // A network entry depends on the address: only the port can rule it out.
        ("10.0.0.0/8:443", "internal.test", 443, true),
        ("10.0.0.0/8:443", "internal.test", 80, false),
        ("", "example.com", 443, false),
    ];
    for (entries, name, port, possible) in cases {
        assert_eq!(
            policy(entries).precheck(name, *port).is_ok(),
            *possible,
            "{entries:?} {name}:{port}"
        );
    }
}

#[tokio::test]
async fn dial_refuses_without_resolving_when_nothing_could_match() {
    // A name that cannot resolve: the refusal comes from the policy, not from DNS.
    let refused = dial(
        &policy("*:443"),
        "no-such-host.invalid",
        80,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        matches!(refused, Err(TunnelError::Refused { .. })),
        "{refused:?}"
    );
}

#[test]
fn refusals_say_why() {
    let p = policy("*:443");
    assert_eq!(
        p.check("example.com", 80, ip("93.184.216.34")),
        Err(Refusal::NoEntry)
    );
    assert_eq!(
        p.check("x", 443, ip("::ffff:169.254.169.254")),
        Err(Refusal::Restricted {
            ip: ip("169.254.169.254"),
            kind: Restricted::LinkLocal
        })
    );
}

#[test]
fn the_proxy_itself_needs_an_explicit_entry() {
    // Listening on one address: that address and port only.
    let p = policy_with_own("*:*", &["10.1.1.1:3128"]);
    assert!(p.check("proxy.test", 3128, ip("10.1.1.1")).is_err());
    assert!(p.check("proxy.test", 3129, ip("10.1.1.1")).is_ok());
    assert!(p.check("other.test", 3128, ip("10.1.1.2")).is_ok());
    // Listening on 0.0.0.0: every local address with that port.
    let p = policy_with_own("*:*", &["0.0.0.0:3128", "[::]:5443"]);
    assert_eq!(
        p.check("proxy.test", 3128, ip("10.9.8.7")),
        Err(Refusal::Restricted {
            ip: ip("10.9.8.7"),
            kind: Restricted::Proxy
        })
    );
    assert!(p.check("proxy.test", 5443, ip("10.9.8.7")).is_err());
    assert!(p.check("proxy.test", 3128, ip("10.9.8.6")).is_ok());
    assert!(p.check("proxy.test", 443, ip("10.9.8.7")).is_ok());
    // An explicit entry opens it.
    let p = policy_with_own("10.9.8.7:3128", &["0.0.0.0:3128"]);
    assert!(p.check("proxy.test", 3128, ip("10.9.8.7")).is_ok());
}

#[test]
fn real_local_addresses_are_recognised() {
    assert!(is_local_address(ip("127.0.0.1")));
    // TEST-NET-3: documentation only, never assigned to a host.
    assert!(!is_local_address(ip("203.0.113.7")));
}

#[test]
fn refusal_text_carries_the_marker() {
    let e = TunnelError::Refused {
        target: "x:1".into(),
        reason: Refusal::NoEntry,
    };
    assert!(e.to_string().contains(REFUSED_BY_POLICY), "{e}");
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn dial_connects_only_where_allowed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let timeout = Duration::from_secs(10);
    let refused = dial(&policy("*:*"), "127.0.0.1", port, timeout).await;
    assert!(
        matches!(refused, Err(TunnelError::Refused { .. })),
        "{refused:?}"
    );
    let refused = dial(&policy("*:*"), "localhost", port, timeout).await;
    assert!(
        matches!(refused, Err(TunnelError::Refused { .. })),
        "{refused:?}"
    );
    let entry = format!("127.0.0.1:{port}");
    let stream = dial(&policy(&entry), "127.0.0.1", port, timeout).await;
    assert!(stream.is_ok(), "{stream:?}");
    let entry = format!("localhost:{port}");
    let stream = dial(&policy(&entry), "localhost", port, timeout).await;
    assert!(stream.is_ok(), "{stream:?}");
}
