use super::*;

#[test]
fn defaults() {
    let c = load_ok(
        &[],
        &[("PATH", "/usr/bin"), ("HOME", "/root"), ("PROXY_FOO", "x")],
    );
    assert_eq!(c.listen, "0.0.0.0:3128".parse::<SocketAddr>().unwrap());
    let registries: Vec<String> = c.registries.iter().map(ToString::to_string).collect();
    assert_eq!(
        registries,
        ["registry.k8s.io", "gcr.io", "quay.io", "ghcr.io"]
    );
    assert!(c.credentials.is_empty());
    assert_eq!(c.cache_dir, PathBuf::from("./data/cache"));
    assert_eq!(c.ca_dir, PathBuf::from("./data/ca"));
    assert_eq!(c.cache_max_size, 32 << 30);
    assert_eq!(c.cache_inactive, secs(60 * DAY));
    assert_eq!(c.cache_min_free, 1 << 30);
    assert!(!c.manifest_cache.enabled);
    assert_eq!(c.manifest_cache.tiers.len(), 2);
    assert_eq!(
        c.manifest_cache.tiers[0].regex.as_str(),
        "^(?:(stable|nightly|production|test))"
    );
    assert_eq!(c.manifest_cache.tiers[0].ttl, secs(600));
    assert_eq!(
        c.manifest_cache.tiers[1].regex.as_str(),
        r"^(?:(.*)(\d|\.)+(.*)(\d|\.)+(.*)(\d|\.)+)"
    );
    assert_eq!(c.manifest_cache.tiers[1].ttl, secs(60 * DAY));
    assert_eq!(c.manifest_cache.default_ttl, secs(3600));
    assert!(c.verify_ssl);
    assert!(!c.allow_push);
    assert_eq!(c.upstream_ca_file, None);
    assert!(c.connect_to.is_empty());
    assert_eq!(c.log_format, LogFormat::Text);
    let t = &c.timeouts;
    for d in [
        t.send,
        t.client_body,
        t.client_header,
        t.proxy_read,
        t.proxy_connect,
        t.proxy_send,
        t.proxy_connect_read,
        t.proxy_connect_connect,
        t.proxy_connect_send,
    ] {
        assert_eq!(d, secs(60));
    }
    assert_eq!(t.keepalive, secs(300));
    assert_eq!(c.mirror, MirrorPolicy::Configured);
    assert!(!c.disable_ipv6);
    assert!(!c.debug);
    assert!(c.manifest_cache_overrides.is_empty());
    assert_eq!(c.tls_listen, None);
    // Tags are revalidated when the manifest cache is off.
    assert_eq!(c.tag_ttl(&host("quay.io"), "stable"), None);
}

#[test]
fn every_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("roots.pem");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    for f in [&ca, &cert, &key] {
        std::fs::write(f, "pem").unwrap();
    }
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let c = load_ok(
        &[],
        &[
            ("LISTEN", "127.0.0.1:8080"),
            (
                "REGISTRIES",
                " k8s.gcr.io  docker.io Registry.Test:5443\tquay.io quay.io:443 index.docker.io ",
            ),
            (
                "AUTH_REGISTRIES",
                "reg.test:alice:pw1 auth.docker.io:bob:pw2",
            ),
            ("AUTH_REGISTRIES_DELIMITER", " "),
            ("AUTH_REGISTRY_DELIMITER", ":"),
            ("CACHE_DIR", "/docker_mirror_cache"),
            ("CA_DIR", "/ca"),
            ("CACHE_MAX_SIZE", "100m"),
            ("CACHE_INACTIVE", "7d"),
            ("CACHE_MIN_FREE", "512k"),
            ("ENABLE_MANIFEST_CACHE", "true"),
            ("MANIFEST_CACHE_PRIMARY_REGEX", "(latest)"),
            ("MANIFEST_CACHE_PRIMARY_TIME", "5m"),
            ("MANIFEST_CACHE_SECONDARY_REGEX", "v"),
            ("MANIFEST_CACHE_SECONDARY_TIME", "1d"),
            ("MANIFEST_CACHE_DEFAULT_TIME", "30s"),
            ("VERIFY_SSL", "false"),
            ("ALLOW_PUSH", "yes"),
            ("MIRROR_ANY", "on"),
            ("DISABLE_IPV6", "1"),
            ("DEBUG", "TRUE"),
            ("DEBUG_HUB", "false"),
            ("DEBUG_NGINX", "false"),
            ("PROXY_REQUEST_BUFFERING", "true"),
            ("UPSTREAM_CA_FILE", ca),
            (
                "CONNECT_TO",
                "registry.test:443:127.0.0.2:5443 v6.test:443:[::1]:5000",
            ),
            ("LOG_FORMAT", "json"),
            ("TLS_LISTEN", "0.0.0.0:5443"),
            ("TLS_CERT_FILE", cert),
            ("TLS_KEY_FILE", key),
            ("TLS_NAMES", "proxy.test 10.0.0.1"),
            ("SEND_TIMEOUT", "1s"),
            ("CLIENT_BODY_TIMEOUT", "2s"),
            ("CLIENT_HEADER_TIMEOUT", "3s"),
            ("KEEPALIVE_TIMEOUT", "4s"),
            ("PROXY_READ_TIMEOUT", "5s"),
            ("PROXY_CONNECT_TIMEOUT", "6s"),
            ("PROXY_SEND_TIMEOUT", "7s"),
            ("PROXY_CONNECT_READ_TIMEOUT", "8s"),
            ("PROXY_CONNECT_CONNECT_TIMEOUT", "9s"),
            ("PROXY_CONNECT_SEND_TIMEOUT", "10"),
        ],
    );
    assert_eq!(c.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    let registries: Vec<String> = c.registries.iter().map(ToString::to_string).collect();
    assert_eq!(
        registries,
        ["k8s.gcr.io", "registry.test:5443", "quay.io"],
        "Docker Hub dropped, duplicates folded"
    );
    assert_eq!(c.credentials.len(), 2);
    assert_eq!(
        (
            c.credentials[0].host.as_str(),
            c.credentials[0].username.as_str(),
            c.credentials[0].password.expose()
        ),
        ("reg.test", "alice", "pw1")
    );
    assert_eq!(
        c.credential_for("AUTH.docker.io")
            .map(|c| c.username.as_str()),
        Some("bob")
    );
    assert_eq!(c.cache_dir, PathBuf::from("/docker_mirror_cache"));
    assert_eq!(c.ca_dir, PathBuf::from("/ca"));
    assert_eq!(c.cache_max_size, 100 << 20);
    assert_eq!(c.cache_inactive, secs(7 * DAY));
    assert_eq!(c.cache_min_free, 512 << 10);
    let quay = host("quay.io");
    assert_eq!(c.tag_ttl(&quay, "latest"), Some(secs(300)));
    assert_eq!(c.tag_ttl(&quay, "v1"), Some(secs(DAY)));
    assert_eq!(c.tag_ttl(&quay, "stable"), Some(secs(30)));
    assert!(!c.verify_ssl);
    assert!(c.allow_push);
    assert_eq!(c.mirror, MirrorPolicy::Any);
    assert!(c.disable_ipv6);
    assert!(c.debug);
    assert_eq!(c.upstream_ca_file, Some(PathBuf::from(ca)));
    assert_eq!(c.connect_to.len(), 2);
    assert_eq!(
        (
            c.connect_to[0].host.as_str(),
            c.connect_to[0].port,
            c.connect_to[0].addr.as_str(),
            c.connect_to[0].addr_port
        ),
        ("registry.test", 443, "127.0.0.2", 5443)
    );
    assert_eq!(
        (c.connect_to[1].addr.as_str(), c.connect_to[1].addr_port),
        ("::1", 5000)
    );
    assert_eq!(c.log_format, LogFormat::Json);
    let tls = c.tls_listen.unwrap();
    assert_eq!(tls.addr, "0.0.0.0:5443".parse::<SocketAddr>().unwrap());
    assert_eq!(
        tls.cert_files,
        Some((PathBuf::from(cert), PathBuf::from(key)))
    );
    assert_eq!(tls.names, ["proxy.test", "10.0.0.1"]);
    let t = &c.timeouts;
    let got = [
        t.send,
        t.client_body,
        t.client_header,
        t.keepalive,
        t.proxy_read,
        t.proxy_connect,
        t.proxy_send,
        t.proxy_connect_read,
        t.proxy_connect_connect,
        t.proxy_connect_send,
    ];
    assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map(secs));
}

#[test]
fn every_setting_has_a_flag() {
    for setting in ALL {
        let name = setting.name;
        let flag = format!("--{}=x", name.to_ascii_lowercase().replace('_', "-"));
        let cli = Cli::try_parse_from(["registry-proxy", flag.as_str()])
            .unwrap_or_else(|e| panic!("{flag}: {e}"));
        assert_eq!(cli.serve.get(name), Some("x"), "{flag}");
    }
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let file = toml_file(
        "cache_max_size = \"1g\"\nverify_ssl = false\nregistries = [\"file.test\"]\ncache_inactive = 60\n",
    );
    let path = file.path().to_str().unwrap();
    let cases: &[(Argv, Pairs, u64, bool, &str, u64)] = &[
        (&[], &[], 32 << 30, true, "registry.k8s.io", 60 * DAY),
        (&["--config", path], &[], 1 << 30, false, "file.test", 60),
        (&[], &[("CONFIG", path)], 1 << 30, false, "file.test", 60),
        (
            &["--config", path],
            &[
                ("CACHE_MAX_SIZE", "2g"),
                ("VERIFY_SSL", "true"),
                ("REGISTRIES", "env.test"),
                ("CACHE_INACTIVE", "2m"),
            ],
            2 << 30,
            true,
            "env.test",
            120,
        ),
        (
            &[
                "--config",
                path,
                "--cache-max-size",
                "3g",
                "--verify-ssl=false",
                "--registries",
                "flag.test",
                "--cache-inactive",
                "3m",
            ],
            &[
                ("CACHE_MAX_SIZE", "2g"),
                ("VERIFY_SSL", "true"),
                ("REGISTRIES", "env.test"),
                ("CACHE_INACTIVE", "2m"),
            ],
            3 << 30,
            false,
            "flag.test",
            180,
        ),
        // A flag wins even against a file named in the environment.
        (
            &["--cache-max-size", "3g"],
            &[("CONFIG", path)],
            3 << 30,
            false,
            "file.test",
            60,
        ),
    ];
    for (args, pairs, size, verify, first_registry, inactive) in cases {
        let c = load_ok(args, pairs);
        assert_eq!(c.cache_max_size, *size, "{args:?} {pairs:?}");
        assert_eq!(c.verify_ssl, *verify, "{args:?} {pairs:?}");
        assert_eq!(
            c.registries[0].to_string(),
            *first_registry,
            "{args:?} {pairs:?}"
        );
        assert_eq!(c.cache_inactive, secs(*inactive), "{args:?} {pairs:?}");
    }
}
