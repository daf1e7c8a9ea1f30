use super::*;

#[test]
fn seed_tiers_on_real_tags() {
    let c = load_ok(&[], &[("ENABLE_MANIFEST_CACHE", "true")]);
    let quay = host("quay.io");
    let cases = [
        ("stable", secs(600)),
        ("nightly-2024", secs(600)),
        ("production", secs(600)),
        ("testing", secs(600)), // matched from the start, not anchored at the end
        ("1.2.3", secs(60 * DAY)),
        ("v1.20.4-alpine", secs(60 * DAY)),
        ("3.19", secs(60 * DAY)),
        ("latest", secs(3600)),
        ("alpine", secs(3600)),
        ("v1", secs(3600)),
        ("my-stable", secs(3600)),
    ];
    for (tag, ttl) in cases {
        assert_eq!(c.tag_ttl(&quay, tag), Some(ttl), "tag {tag}");
    }
    // Docker Hub follows the same global policy.
    assert_eq!(
        c.tag_ttl(&RegistryHost::docker_hub(), "latest"),
        Some(secs(3600))
    );
}

#[test]
fn empty_regex_disables_its_tier() {
    let c = load_ok(
        &[],
        &[
            ("ENABLE_MANIFEST_CACHE", "true"),
            ("MANIFEST_CACHE_PRIMARY_REGEX", ""),
        ],
    );
    assert_eq!(c.manifest_cache.tiers.len(), 1);
    assert_eq!(c.tag_ttl(&host("quay.io"), "stable"), Some(secs(3600)));
    assert_eq!(c.tag_ttl(&host("quay.io"), "1.2.3"), Some(secs(60 * DAY)));
    let c = load_ok(
        &["--manifest-cache-secondary-regex="],
        &[("MANIFEST_CACHE_PRIMARY_REGEX", "")],
    );
    assert!(c.manifest_cache.tiers.is_empty());
}

#[test]
fn malformed_values_name_their_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("LISTEN", "nowhere", "\"nowhere\""),
        ("LISTEN", "", "socket address"),
        ("REGISTRIES", "quay.io bad/host", "\"bad/host\""),
        ("REGISTRIES", "host:99999", "port"),
        ("CACHE_MAX_SIZE", "32gb", "\"32gb\""),
        ("CACHE_MAX_SIZE", "0", "greater than zero"),
        ("CACHE_MAX_SIZE", "", "empty"),
        ("CACHE_MIN_FREE", "10%", "\"10%\""),
        ("CACHE_INACTIVE", "60 days", "\"60 days\""),
        ("CACHE_DIR", "", "empty"),
        ("CA_DIR", " ", "empty"),
        ("ENABLE_MANIFEST_CACHE", "enabled", "\"enabled\""),
        ("MANIFEST_CACHE_PRIMARY_REGEX", "(unclosed", "(unclosed"),
        ("MANIFEST_CACHE_SECONDARY_REGEX", "[z-a]", "[z-a]"),
        (
            "MANIFEST_CACHE_PRIMARY_TIME",
            "10 minutes",
            "\"10 minutes\"",
        ),
        ("MANIFEST_CACHE_SECONDARY_TIME", "1.5d", "\"1.5d\""),
        ("MANIFEST_CACHE_DEFAULT_TIME", "1H", "\"1H\""),
        ("VERIFY_SSL", "maybe", "\"maybe\""),
        ("ALLOW_PUSH", "", "boolean"),
        ("MIRROR_ANY", "2", "\"2\""),
        ("DISABLE_IPV6", "y", "\"y\""),
        ("DEBUG", "verbose", "\"verbose\""),
        ("DEBUG_HUB", "x", "\"x\""),
        ("DEBUG_NGINX", "x", "\"x\""),
        ("PROXY_REQUEST_BUFFERING", "x", "\"x\""),
        (
            "UPSTREAM_CA_FILE",
            "/nonexistent/roots.pem",
            "/nonexistent/roots.pem",
        ),
        ("CONNECT_TO", "a.test:443:b.test", "\"a.test:443:b.test\""),
        ("CONNECT_TO", "a.test:x:b.test:443", "PORT"),
        ("CONNECT_TO", "a.test:443:[::1:443", "ADDR"),
        ("CONNECT_TO", ":443:b.test:443", "HOST"),
        ("LOG_FORMAT", "xml", "\"xml\""),
        ("TLS_LISTEN", "5443x", "\"5443x\""),
        ("SEND_TIMEOUT", "x", "\"x\""),
        ("CLIENT_BODY_TIMEOUT", "x", "\"x\""),
        ("CLIENT_HEADER_TIMEOUT", "x", "\"x\""),
        ("KEEPALIVE_TIMEOUT", "x", "\"x\""),
        ("PROXY_READ_TIMEOUT", "x", "\"x\""),
        ("PROXY_CONNECT_TIMEOUT", "x", "\"x\""),
        ("PROXY_SEND_TIMEOUT", "x", "\"x\""),
        ("PROXY_CONNECT_READ_TIMEOUT", "x", "\"x\""),
        ("PROXY_CONNECT_CONNECT_TIMEOUT", "x", "\"x\""),
        ("PROXY_CONNECT_SEND_TIMEOUT", "x", "\"x\""),
        ("AUTH_REGISTRIES", "a.test:user", "missing password"),
        (
            "PROXY_HTPASSWD",
            "/nonexistent/htpasswd",
            "/nonexistent/htpasswd",
        ),
        ("AUTH_CACHE_TTL", "5 minutes", "\"5 minutes\""),
        (
            "TUNNEL_ALLOW",
            "*:443 example.com",
            "\"example.com\": missing :port",
        ),
        ("TUNNEL_ALLOW", "*:70000", "\"*:70000\": port must be"),
        ("TUNNEL_ALLOW", "10.0.0.0/33:*", "\"10.0.0.0/33:*\""),
        ("TUNNEL_ALLOW", "::1:443", "brackets"),
        ("MAX_CONNECTIONS", "0", "greater than zero"),
        ("MAX_CONNECTIONS", "lots", "\"lots\" is not a whole number"),
        ("MAX_CONNECTIONS", "-1", "whole number"),
        ("MAX_CONNECTIONS", "", "whole number"),
    ];
    for (name, value, detail) in cases {
        let e = load_err(&[], &[(name, value)]);
        assert!(e.starts_with(&format!("{name}:")), "{name}={value:?}: {e}");
        assert!(e.contains(detail), "{name}={value:?}: {e}");
        // The same value given as a flag is blamed on the flag.
        let flag = format!("--{}={value}", name.to_ascii_lowercase().replace('_', "-"));
        let e = load_err(&[flag.as_str()], &[]);
        assert!(
            e.starts_with(&format!("{}:", flag.split('=').next().unwrap())),
            "{flag}: {e}"
        );
    }
}

#[test]
fn listen_accepts_a_bare_port() {
    for value in ["3129", ":3129", "0.0.0.0:3129"] {
        assert_eq!(
            load_ok(&["--listen", value], &[]).listen,
            "0.0.0.0:3129".parse::<SocketAddr>().unwrap()
        );
    }
    assert_eq!(
        load_ok(&[], &[("LISTEN", "[::1]:80")]).listen,
        "[::1]:80".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn cache_min_free_may_be_zero() {
    assert_eq!(load_ok(&[], &[("CACHE_MIN_FREE", "0")]).cache_min_free, 0);
}

#[test]
fn unknown_env_vars() {
    for name in [
        "CACHE_FOO",
        "CACHE_MAX_SIZ",
        "MANIFEST_CACHE_TERTIARY_REGEX",
        "PROXY_CONNECT_TIMEOUTS",
        "AUTH_REGISTRY",
        "TLS_CERT",
    ] {
        let e = load_err(&[], &[(name, "1")]);
        assert!(
            e.contains(name) && e.contains("unknown environment variable"),
            "{e}"
        );
    }
    // Kubernetes service links for Services named `cache` or `tls` are not typos.
    load_ok(
        &[],
        &[
            ("CACHE_SERVICE_HOST", "10.0.0.1"),
            ("CACHE_SERVICE_PORT", "3128"),
            ("CACHE_SERVICE_PORT_HTTP", "3128"),
            ("CACHE_PORT", "tcp://10.0.0.1:3128"),
            ("CACHE_PORT_3128_TCP", "tcp://10.0.0.1:3128"),
            ("CACHE_PORT_3128_TCP_ADDR", "10.0.0.1"),
            ("TLS_PORT_443_TCP_PROTO", "tcp"),
        ],
    );
    // Everything else in the environment is none of our business.
    load_ok(
        &[],
        &[
            ("PROXY_FOO", "1"),
            ("HTTPS_PROXY", "http://x"),
            ("CACHE", "1"),
            ("LANG", "C"),
        ],
    );
}

#[test]
fn unknown_file_keys() {
    let cases: &[(&str, &str)] = &[
        ("cache_max_sise = \"1g\"\n", "`cache_max_sise`"),
        ("CACHE_MAX_SIZE = \"1g\"\n", "lower case"),
        ("config = \"other.toml\"\n", "`config`"),
        (
            "[registry.\"quay.io\"]\nmanifest_cachee = {}\n",
            "`registry.\"quay.io\".manifest_cachee`",
        ),
        (
            "[registry.\"quay.io\".manifest_cache]\nprimary_ttl = \"1m\"\n",
            "`registry.\"quay.io\".manifest_cache.primary_ttl`",
        ),
        (
            "[registry.quay.io.manifest_cache]\nenabled = true\n",
            "quote host names",
        ),
    ];
    for (text, detail) in cases {
        let file = toml_file(text);
        let path = file.path().to_str().unwrap();
        let e = load_err(&["--config", path], &[]);
        assert!(
            e.contains(path) && e.contains("unknown key") && e.contains(detail),
            "{text}: {e}"
        );
    }
}

#[test]
fn file_value_types() {
    let c = toml_ok(
        r#"
listen = "127.0.0.1:4000"
registries = "a.test b.test"
cache_max_size = 1048576
cache_inactive = "2d"
enable_manifest_cache = true
manifest_cache_secondary_regex = '(.*)(\d|\.)+(.*)(\d|\.)+(.*)(\d|\.)+'
verify_ssl = "off"
connect_to = ["a.test:443:127.0.0.1:5443"]
tls_listen = "127.0.0.1:5443"
tls_names = ["proxy.test"]
keepalive_timeout = 10
"#,
    );
    assert_eq!(c.listen.port(), 4000);
    assert_eq!(c.registries, [host("a.test"), host("b.test")]);
    assert_eq!(c.cache_max_size, 1 << 20);
    assert_eq!(c.cache_inactive, secs(2 * DAY));
    assert!(c.manifest_cache.enabled);
    assert_eq!(c.tag_ttl(&host("a.test"), "1.2.3"), Some(secs(60 * DAY)));
    assert!(!c.verify_ssl);
    assert_eq!(c.connect_to[0].addr_port, 5443);
    let tls = c.tls_listen.unwrap();
    assert_eq!(
        (tls.addr.port(), tls.names.as_slice(), tls.cert_files),
        (5443, ["proxy.test".to_owned()].as_slice(), None)
    );
    assert_eq!(c.timeouts.keepalive, secs(10));

    let wrong: &[(&str, &str)] = &[
        ("listen = 3128\n", "listen (in"),
        ("verify_ssl = 1\n", "verify_ssl (in"),
        ("cache_max_size = true\n", "cache_max_size (in"),
        ("registries = [1, 2]\n", "registries (in"),
        ("cache_inactive = [\"1d\"]\n", "cache_inactive (in"),
        ("registry = \"quay.io\"\n", "registry (in"),
    ];
    for (text, setting) in wrong {
        let file = toml_file(text);
        let e = load_err(&["--config", file.path().to_str().unwrap()], &[]);
        assert!(
            e.starts_with(setting) && e.contains("expected"),
            "{text}: {e}"
        );
    }
    // Malformed values from the file name the key and the file.
    let file = toml_file("cache_max_size = \"lots\"\n");
    let path = file.path().to_str().unwrap();
    let e = load_err(&["--config", path], &[]);
    assert_eq!(
        e,
        format!(
            "cache_max_size (in {path}): \"lots\" is not a size (bytes, or a number followed by k, m, g or t)"
        )
    );
}

#[test]
fn missing_config_file() {
    let e = load_err(&["--config", "/nonexistent/rp.toml"], &[]);
    assert!(e.contains("/nonexistent/rp.toml"), "{e}");
    let e = load_err(&[], &[("CONFIG", "/nonexistent/rp.toml")]);
    assert!(e.contains("/nonexistent/rp.toml"), "{e}");
    load_ok(&[], &[("CONFIG", "")]);
}
