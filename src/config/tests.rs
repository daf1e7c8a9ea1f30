use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::settings::ALL;
use crate::access::identity::Identity;
use crate::access::rules::Action;
use crate::cli::Cli;
use crate::config::{AuthMode, Config, ConfigError, LogFormat, MirrorPolicy, Sources};
use crate::registry::host::RegistryHost;

/// `REGISTRIES` entries spelled `http://` (plain-HTTP upstreams).
mod plain_http;
/// `NAME_FILE` for secrets.
mod secret_files;
/// The seed's variables that are not needed: accepted with a warning.
mod seed;

const SECRET: &str = "s3cr3t-Pa55";

/// Command-line arguments after the program name.
type Argv<'a> = &'a [&'a str];
/// Environment variables.
type Pairs<'a> = &'a [(&'a str, &'a str)];
/// Expected credentials: host, user, password.
type Triples<'a> = &'a [(&'a str, &'a str, &'a str)];

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(args: &[&str], pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let cli =
        Cli::try_parse_from(std::iter::once("registry-proxy").chain(args.iter().copied())).unwrap();
    Config::load(Sources {
        flags: &cli.serve,
        env: &env(pairs),
    })
}

fn load_ok(args: &[&str], pairs: &[(&str, &str)]) -> Config {
    match load(args, pairs) {
        Ok(config) => config,
        Err(e) => panic!("args {args:?} env {pairs:?}: {e}"),
    }
}

fn load_err(args: &[&str], pairs: &[(&str, &str)]) -> String {
    match load(args, pairs) {
        Ok(config) => panic!("args {args:?} env {pairs:?} loaded: {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// Loads a config file holding `text` (`--config FILE`, nothing else); the error it gives.
fn toml_err(text: &str) -> String {
    let file = toml_file(text);
    load_err(&["--config", file.path().to_str().unwrap()], &[])
}

/// Loads a config file holding `text` (`--config FILE`, nothing else).
fn toml_ok(text: &str) -> Config {
    let file = toml_file(text);
    load_ok(&["--config", file.path().to_str().unwrap()], &[])
}

/// Each config file text in `bad` is refused with an error containing its paired text.
fn assert_files_refused(bad: &[(&str, &str)]) {
    for (text, want) in bad {
        let e = toml_err(text);
        assert!(e.contains(want), "{text}: {e}");
    }
}

fn host(s: &str) -> RegistryHost {
    RegistryHost::parse(s).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const DAY: u64 = 86_400;

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

#[test]
fn auth_registries_delimiters() {
    let cases: &[(Pairs, Triples)] = &[
        (
            &[("AUTH_REGISTRIES", "a.test:u1:p1 b.test:u2:p2")],
            &[("a.test", "u1", "p1"), ("b.test", "u2", "p2")],
        ),
        // The seed's Dockerfile example.
        (
            &[(
                "AUTH_REGISTRIES",
                "some.authenticated.registry:oneuser:onepassword another.registry:user:password",
            )],
            &[
                ("some.authenticated.registry", "oneuser", "onepassword"),
                ("another.registry", "user", "password"),
            ],
        ),
        // Empty entries (doubled or trailing delimiters) are skipped; hosts are lower-cased.
        (
            &[("AUTH_REGISTRIES", "  A.Test:u1:p1   ")],
            &[("a.test", "u1", "p1")],
        ),
        // The password keeps any further delimiters.
        (
            &[("AUTH_REGISTRIES", "a.test:u1:p:a:ss")],
            &[("a.test", "u1", "p:a:ss")],
        ),
        (
            &[
                ("AUTH_REGISTRIES", "a.test::u1::p1;;b.test:5000::u2::p::2;;"),
                ("AUTH_REGISTRIES_DELIMITER", ";;"),
                ("AUTH_REGISTRY_DELIMITER", "::"),
            ],
            &[("a.test", "u1", "p1"), ("b.test:5000", "u2", "p::2")],
        ),
        (
            &[
                ("AUTH_REGISTRIES", "a.test|u1|p 1,b.test|u2|p2"),
                ("AUTH_REGISTRIES_DELIMITER", ","),
                ("AUTH_REGISTRY_DELIMITER", "|"),
            ],
            &[("a.test", "u1", "p 1"), ("b.test", "u2", "p2")],
        ),
        // The Docker Hub realm host is kept as given.
        (
            &[("AUTH_REGISTRIES", "auth.docker.io:u:p")],
            &[("auth.docker.io", "u", "p")],
        ),
        // Empty delimiters fall back to the defaults, as the seed's `${VAR:-default}` did.
        (
            &[
                ("AUTH_REGISTRIES", "a.test:u1:p1"),
                ("AUTH_REGISTRIES_DELIMITER", ""),
                ("AUTH_REGISTRY_DELIMITER", ""),
            ],
            &[("a.test", "u1", "p1")],
        ),
        (&[("AUTH_REGISTRIES", "")], &[]),
    ];
    for (pairs, want) in cases {
        let c = load_ok(&[], pairs);
        let got: Vec<(&str, &str, &str)> = c
            .credentials
            .iter()
            .map(|c| (c.host.as_str(), c.username.as_str(), c.password.expose()))
            .collect();
        assert_eq!(got, *want, "{pairs:?}");
    }
    // Flags use the same delimiters.
    let c = load_ok(
        &[
            "--auth-registries",
            "a.test/u/p",
            "--auth-registry-delimiter",
            "/",
        ],
        &[],
    );
    assert_eq!(c.credentials[0].password.expose(), "p");
}

#[test]
fn auth_registries_in_the_file() {
    let c = toml_ok(
        "auth_registries = [\"a.test:u1:p 1\", \"b.test:u2:p2\"]\nauth_registry_delimiter = \":\"\n",
    );
    let got: Vec<(&str, &str)> = c
        .credentials
        .iter()
        .map(|c| (c.host.as_str(), c.password.expose()))
        .collect();
    assert_eq!(got, [("a.test", "p 1"), ("b.test", "p2")]);
}

#[test]
fn passwords_never_in_errors() {
    let entries = [
        format!("a.test:user:{SECRET} b.test"),
        format!("a.test:user:{SECRET} b.test:user"),
        format!("a.test:user:{SECRET} b.test:user:"),
        format!("a.test:user:{SECRET} :user:{SECRET}"),
        format!("a.test;user;{SECRET}"),
        SECRET.to_owned(),
        format!("bad/host:user:{SECRET}"),
        format!("a.test::{SECRET}"),
    ];
    for entry in &entries {
        let e = load(&[], &[("AUTH_REGISTRIES", entry)]).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("AUTH_REGISTRIES"), "{shown}");
        assert!(shown.contains("entry"), "{shown}");
    }
    let e = load_err(
        &[],
        &[(
            "AUTH_REGISTRIES",
            &format!("a.test:user:{SECRET} b.test:user"),
        )],
    );
    assert!(
        e.contains("entry 2 (host b.test)") && e.contains("missing password"),
        "{e}"
    );
    let e = load_err(&["--auth-registries", &format!("a.test;u;{SECRET}")], &[]);
    assert!(
        e.starts_with("--auth-registries: entry 1 is malformed"),
        "{e}"
    );

    // A TOML syntax error does not quote the offending line.
    let e = toml_err(&format!(
        "auth_registries = \"a.test:user:{SECRET}\" oops\n"
    ));
    assert!(!e.contains(SECRET) && e.contains("line 1"), "{e}");
}

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

#[test]
fn per_registry_overrides() {
    let file = toml_file(
        r#"
enable_manifest_cache = true
manifest_cache_default_time = "2h"

[registry."quay.io".manifest_cache]
primary_regex = "(latest)"
primary_time = "1m"

[registry."Registry-1.Docker.IO".manifest_cache]
enabled = false

[registry."ghcr.io".manifest_cache]
secondary_regex = ""
default_time = 5
"#,
    );
    let c = load_ok(
        &["--config", file.path().to_str().unwrap()],
        &[("MANIFEST_CACHE_PRIMARY_TIME", "3m")],
    );
    assert_eq!(c.manifest_cache_overrides.len(), 3);
    let (quay, hub, ghcr, gcr) = (
        host("quay.io"),
        RegistryHost::docker_hub(),
        host("ghcr.io"),
        host("gcr.io"),
    );
    let cases = [
        (&quay, "latest", Some(secs(60))),
        (&quay, "stable", Some(secs(2 * 3600))),
        (&quay, "1.2.3", Some(secs(60 * DAY))),
        (&hub, "latest", None),
        (&hub, "1.2.3", None),
        (&ghcr, "stable", Some(secs(180))),
        (&ghcr, "1.2.3", Some(secs(5))),
        (&gcr, "stable", Some(secs(180))),
        (&gcr, "latest", Some(secs(2 * 3600))),
    ];
    for (registry, tag, want) in cases {
        assert_eq!(c.tag_ttl(registry, tag), want, "{registry} {tag}");
    }

    let bad: &[(&str, &str)] = &[
        (
            "[registry.\"quay.io\".manifest_cache]\nprimary_regex = \"(\"\n",
            "registry.\"quay.io\".manifest_cache.primary_regex (in",
        ),
        (
            "[registry.\"quay.io\".manifest_cache]\nprimary_time = \"soon\"\n",
            "\"soon\"",
        ),
        (
            "[registry.\"quay.io\".manifest_cache]\nenabled = \"perhaps\"\n",
            "\"perhaps\"",
        ),
        (
            "[registry.\"bad/host\".manifest_cache]\nenabled = true\n",
            "\"bad/host\"",
        ),
        (
            "[registry.\"docker.io\".manifest_cache]\n[registry.\"index.docker.io\".manifest_cache]\n",
            "listed twice",
        ),
        (
            "[registry.\"quay.io\"]\nmanifest_cache = 1\n",
            "expected a table",
        ),
    ];
    assert_files_refused(bad);
}

#[test]
fn tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, "pem").unwrap();
    let cert = cert.to_str().unwrap();
    let dir_path = dir.path().to_str().unwrap();

    let c = load_ok(&["--tls-listen", "127.0.0.1:5443"], &[]);
    let tls = c.tls_listen.unwrap();
    assert_eq!(tls.names, ["localhost", "127.0.0.1"]);
    assert_eq!(tls.cert_files, None);

    let cases: &[(Argv, Pairs, &str)] = &[
        (
            &["--tls-listen", ":5443", "--tls-cert-file", cert],
            &[],
            "--tls-cert-file is set but TLS_KEY_FILE is not",
        ),
        (
            &["--tls-listen", ":5443"],
            &[("TLS_KEY_FILE", cert)],
            "TLS_KEY_FILE is set but TLS_CERT_FILE is not",
        ),
        (
            &[],
            &[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", cert)],
            "TLS_CERT_FILE is set but TLS_LISTEN is not",
        ),
        (
            &["--tls-listen", ":5443"],
            &[
                ("TLS_CERT_FILE", cert),
                ("TLS_KEY_FILE", "/nonexistent/key"),
            ],
            "TLS_KEY_FILE: cannot read /nonexistent/key",
        ),
        (
            &["--tls-listen", ":5443"],
            &[("TLS_CERT_FILE", dir_path), ("TLS_KEY_FILE", cert)],
            "TLS_CERT_FILE: cannot read",
        ),
        (
            &["--tls-listen", ":5443", "--tls-names="],
            &[],
            "--tls-names: empty value",
        ),
    ];
    for (args, pairs, want) in cases {
        let e = load_err(args, pairs);
        assert!(e.starts_with(want), "{args:?} {pairs:?}: {e}");
    }
    // An empty flag clears a variable.
    let c = load_ok(&["--tls-listen="], &[("TLS_LISTEN", ":5443")]);
    assert_eq!(c.tls_listen, None);
}

#[test]
fn upstream_ca_file_must_be_readable() {
    let file = toml_file("-----BEGIN CERTIFICATE-----\n");
    let path = file.path().to_str().unwrap();
    assert_eq!(
        load_ok(&[], &[("UPSTREAM_CA_FILE", path)]).upstream_ca_file,
        Some(PathBuf::from(path))
    );
    let e = load_err(&["--upstream-ca-file", "/nonexistent/ca.pem"], &[]);
    assert!(
        e.starts_with("--upstream-ca-file: cannot read /nonexistent/ca.pem"),
        "{e}"
    );
    assert_eq!(
        load_ok(&[], &[("UPSTREAM_CA_FILE", "")]).upstream_ca_file,
        None
    );
}

#[test]
fn registries_edge_cases() {
    assert!(load_ok(&[], &[("REGISTRIES", "")]).registries.is_empty());
    assert!(
        load_ok(&[], &[("REGISTRIES", "docker.io registry-1.docker.io")])
            .registries
            .is_empty()
    );
    let c = load_ok(&[], &[("REGISTRIES", "localhost:5000 [::1]:5001")]);
    assert!(c.intercepts(&host("localhost:5000")));
    assert!(c.intercepts(&host("[::1]:5001")));
    assert!(c.intercepts(&RegistryHost::docker_hub()));
    assert!(!c.intercepts(&host("quay.io")));
}

// `htpasswd -Bbn alice wonderland`, `htpasswd -mbn mallory x`.
const HTPASSWD_ALICE: &str = "alice:$2y$05$ot2yBkQ1mShpCZWpts1jN.22t4R8gJXF5TCSA1lP0O/jFrCWkqIyq";
const HTPASSWD_MD5: &str = "mallory:$apr1$xDw3lK5a$SfQjmUAe4DiU/Ebk4O/Qj1";

fn quay_repo(repo: &str) -> (RegistryHost, crate::registry::name::RepoName) {
    (
        host("quay.io"),
        crate::registry::name::RepoName::parse(repo).unwrap(),
    )
}

#[test]
fn auth_defaults() {
    let c = load_ok(&[], &[]);
    assert_eq!(c.proxy_htpasswd, None);
    assert_eq!(c.tls_client_ca_file, None);
    assert_eq!(c.auth_cache_ttl, secs(300));
    assert!(c.access.is_default());
    assert!(c.registry_auth.is_empty());
    // No client authentication: everyone may do everything.
    let (quay, repo) = quay_repo("team/app");
    for action in [Action::Pull, Action::Fetch, Action::Push] {
        assert!(c.access.allows(&Identity::Anonymous, action, &quay, &repo));
    }
    assert_eq!(c.auth_mode(&quay), AuthMode::Verify);
}

#[test]
fn proxy_htpasswd() {
    let good = toml_file(&format!("# users\n{HTPASSWD_ALICE}\n"));
    let good_path = good.path().to_str().unwrap();
    for (args, pairs) in [
        (vec![], vec![("PROXY_HTPASSWD", good_path)]),
        (vec!["--proxy-htpasswd", good_path], vec![]),
    ] {
        let c = load_ok(&args, &pairs);
        assert_eq!(c.proxy_htpasswd, Some(PathBuf::from(good_path)));
        // Client authentication is on: anonymous clients get nothing by default, users everything.
        let (quay, repo) = quay_repo("team/app");
        assert!(
            !c.access
                .allows(&Identity::Anonymous, Action::Pull, &quay, &repo)
        );
        assert!(
            c.access
                .allows(&Identity::User("alice".into()), Action::Push, &quay, &repo)
        );
    }
    // An empty value means none (a flag can clear the variable).
    let c = load_ok(&["--proxy-htpasswd="], &[("PROXY_HTPASSWD", good_path)]);
    assert_eq!(c.proxy_htpasswd, None);

    let e = load_err(&[], &[("PROXY_HTPASSWD", "/nonexistent/htpasswd")]);
    assert!(
        e.starts_with("PROXY_HTPASSWD: cannot read /nonexistent/htpasswd"),
        "{e}"
    );
    // A non-bcrypt line stops start-up naming the setting, the file, the line and the user, but
    // not the hash.
    let bad = toml_file(&format!("{HTPASSWD_ALICE}\n{HTPASSWD_MD5}\n"));
    let bad_path = bad.path().to_str().unwrap();
    let e = load_err(&["--proxy-htpasswd", bad_path], &[]);
    assert!(
        e.starts_with(&format!(
            "--proxy-htpasswd: {bad_path}: line 2: user \"mallory\""
        )),
        "{e}"
    );
    assert!(e.contains("htpasswd -B") && !e.contains("SfQjmUAe"), "{e}");
    let garbage = toml_file("alice\n");
    let e = load_err(&[], &[("PROXY_HTPASSWD", garbage.path().to_str().unwrap())]);
    assert!(e.contains("line 1: expected user:hash"), "{e}");
    // From the config file.
    let e = toml_err(&format!("proxy_htpasswd = {bad_path:?}\n"));
    assert!(
        e.starts_with("proxy_htpasswd (in ") && e.contains("line 2"),
        "{e}"
    );
}

#[test]
fn tls_client_ca_file() {
    let ca = rcgen::generate_simple_self_signed(vec!["client-ca.test".to_owned()]).unwrap();
    let ca_file = toml_file(&ca.cert.pem());
    let ca_path = ca_file.path().to_str().unwrap();
    let c = load_ok(
        &["--tls-listen", "127.0.0.1:5443"],
        &[("TLS_CLIENT_CA_FILE", ca_path)],
    );
    assert_eq!(c.tls_client_ca_file, Some(PathBuf::from(ca_path)));
    // Certificates turn client authentication on, too.
    let (quay, repo) = quay_repo("a");
    assert!(
        !c.access
            .allows(&Identity::Anonymous, Action::Pull, &quay, &repo)
    );

    let not_pem = toml_file("just text\n");
    let cases: &[(Argv, Pairs, &str)] = &[
        (
            &["--tls-client-ca-file", ca_path],
            &[],
            "--tls-client-ca-file is set but TLS_LISTEN is not",
        ),
        (
            &["--tls-listen", ":5443"],
            &[("TLS_CLIENT_CA_FILE", "/nonexistent/ca.pem")],
            "TLS_CLIENT_CA_FILE: cannot read /nonexistent/ca.pem",
        ),
        (
            &["--tls-listen", ":5443"],
            &[("TLS_CLIENT_CA_FILE", not_pem.path().to_str().unwrap())],
            "TLS_CLIENT_CA_FILE: ",
        ),
    ];
    for (args, pairs, want) in cases {
        let e = load_err(args, pairs);
        assert!(e.starts_with(want), "{args:?} {pairs:?}: {e}");
    }
    let e = load_err(
        &["--tls-listen", ":5443"],
        &[("TLS_CLIENT_CA_FILE", not_pem.path().to_str().unwrap())],
    );
    assert!(e.contains("no certificate found"), "{e}");
}

#[test]
fn auth_cache_ttl() {
    assert_eq!(
        load_ok(&[], &[("AUTH_CACHE_TTL", "90s")]).auth_cache_ttl,
        secs(90)
    );
    assert_eq!(
        load_ok(&["--auth-cache-ttl", "1h"], &[]).auth_cache_ttl,
        secs(3600)
    );
    assert_eq!(
        load_ok(&[], &[("AUTH_CACHE_TTL", "0")]).auth_cache_ttl,
        secs(0)
    );
    let c = toml_ok("auth_cache_ttl = 60\n");
    assert_eq!(c.auth_cache_ttl, secs(60));
    let e = load_err(&[], &[("AUTH_CACHE_TTL", "soon")]);
    assert!(e.starts_with("AUTH_CACHE_TTL: \"soon\""), "{e}");
    let e = load_err(&[], &[("AUTH_CACHE_TIME", "5m")]);
    assert!(
        e.contains("unknown environment variable AUTH_CACHE_TIME"),
        "{e}"
    );
    let e = load_err(&[], &[("PROXY_HTPASSWORD", "/x")]);
    assert!(
        e.contains("unknown environment variable PROXY_HTPASSWORD"),
        "{e}"
    );
}

#[test]
fn access_rules_in_the_file() {
    let users = toml_file(HTPASSWD_ALICE);
    let file = toml_file(
        r#"
[groups]
ci = ["builder1", "builder2"]

[[access]]
match = "quay.io/team/*"
pull  = ["alice", "@ci"]
fetch = ["alice"]
push  = []

[[access]]
match = "*"
pull = ["anonymous"]
"#,
    );
    let c = load_ok(
        &["--config", file.path().to_str().unwrap()],
        &[("PROXY_HTPASSWD", users.path().to_str().unwrap())],
    );
    assert!(!c.access.is_default());
    let user = |name: &str| Identity::User(name.to_owned());
    let (quay, team) = quay_repo("team/app");
    let (_, other) = quay_repo("other/app");
    let cases = [
        (user("alice"), Action::Fetch, &team, true),
        (user("builder2"), Action::Pull, &team, true),
        (user("builder2"), Action::Fetch, &team, false),
        (user("alice"), Action::Push, &team, false),
        (Identity::Anonymous, Action::Pull, &team, false),
        (Identity::Anonymous, Action::Pull, &other, true),
        (user("alice"), Action::Fetch, &other, false),
    ];
    for (who, action, repo, want) in cases {
        assert_eq!(
            c.access.allows(&who, action, &quay, repo),
            want,
            "{who:?} {action:?} {repo}"
        );
    }

    let bad: &[(&str, &str)] = &[
        (
            "[[access]]\nmatch = \"quay.io/*\"\npul = [\"alice\"]\n",
            "unknown key `access[1].pul` (known: match, pull, fetch, push)",
        ),
        (
            "[[access]]\nmatch = \"*\"\n[[access]]\npull = [\"alice\"]\n",
            "access[2].match (in",
        ),
        ("[[access]]\nmatch = 5\n", "access[1].match (in"),
        (
            "[[access]]\nmatch = \"*\"\npull = \"alice\"\n",
            "access[1].pull (in",
        ),
        (
            "[[access]]\nmatch = \"*\"\npull = [\"@nope\"]\n",
            "[[access]] entry 1: pull names the unknown group @nope",
        ),
        (
            "[[access]]\nmatch = \"quay.io/a b\"\n",
            "[[access]] entry 1: match \"quay.io/a b\": invalid character ' '",
        ),
        ("[[access]]\nmatch = \"\"\n", "`match` is empty"),
        ("[access]\nmatch = \"*\"\n", "expected an array of tables"),
        ("groups = [\"ci\"]\n", "groups (in"),
        ("[groups]\nci = \"builder1\"\n", "groups.ci (in"),
        ("[groups]\nci = [\"@cd\"]\n", "invalid member \"@cd\""),
        ("Access = []\n", "lower case"),
    ];
    for (text, want) in bad {
        let file = toml_file(text);
        let path = file.path().to_str().unwrap();
        let e = load_err(&["--config", path], &[]);
        assert!(e.contains(want) && e.contains(path), "{text}: {e}");
    }
}

#[test]
fn registry_auth_modes() {
    let file = toml_file(
        r#"
[registry."ghcr.io"]
auth = "verify"

[registry."quay.io"]
auth = "Central"
manifest_cache = { enabled = true }

[registry."open.test"]
auth = "central"
"#,
    );
    let c = load_ok(
        &["--config", file.path().to_str().unwrap()],
        &[
            (
                "AUTH_REGISTRIES",
                "ghcr.io:u:p reg.test:u:p registry-1.docker.io:u:p",
            ),
            (
                "REGISTRIES",
                "gcr.io ghcr.io quay.io reg.test reg.test:5000",
            ),
        ],
    );
    assert_eq!(c.registry_auth.len(), 3);
    assert_eq!(c.manifest_cache_overrides.len(), 1);
    assert!(c.tag_ttl(&host("quay.io"), "latest").is_some());
    let cases = [
        // The explicit setting wins over AUTH_REGISTRIES.
        ("ghcr.io", AuthMode::Verify),
        ("quay.io", AuthMode::Central),
        // Central without credentials is allowed.
        ("open.test", AuthMode::Central),
        // Central where AUTH_REGISTRIES has the registry, by any of its names.
        ("reg.test", AuthMode::Central),
        ("docker.io", AuthMode::Central),
        ("gcr.io", AuthMode::Verify),
        ("reg.test:5000", AuthMode::Verify),
    ];
    for (registry, want) in cases {
        assert_eq!(c.auth_mode(&host(registry)), want, "{registry}");
    }
    // An entry naming a host that is no registry names a token realm: it serves the configured
    // registries (as in the seed), not registries reached through MIRROR_ANY.
    let c = load_ok(
        &[],
        &[
            ("AUTH_REGISTRIES", "auth.example.com:u:p"),
            ("REGISTRIES", "registry.example.com"),
        ],
    );
    assert_eq!(
        c.auth_mode(&host("registry.example.com")),
        AuthMode::Central
    );
    assert_eq!(c.auth_mode(&host("other.example.com")), AuthMode::Verify);
    // Docker Hub's realm host counts for Docker Hub.
    let c = load_ok(&[], &[("AUTH_REGISTRIES", "auth.docker.io:u:p")]);
    assert_eq!(c.auth_mode(&RegistryHost::docker_hub()), AuthMode::Central);
    assert_eq!(c.auth_mode(&host("quay.io")), AuthMode::Verify);

    let bad: &[(&str, &str)] = &[
        (
            "[registry.\"ghcr.io\"]\nauth = \"maybe\"\n",
            "registry.\"ghcr.io\".auth (in",
        ),
        (
            "[registry.\"ghcr.io\"]\nauth = \"maybe\"\n",
            "not an auth mode",
        ),
        ("[registry.\"ghcr.io\"]\nauth = true\n", "expected a string"),
        (
            "[registry.\"ghcr.io\"]\nauthentication = \"verify\"\n",
            "(known: manifest_cache, auth)",
        ),
        (
            "[registry.\"docker.io\"]\nauth = \"verify\"\n[registry.\"registry-1.docker.io\"]\nauth = \"central\"\n",
            "listed twice",
        ),
    ];
    assert_files_refused(bad);
}

#[test]
fn tunnel_allow_and_max_connections() {
    let shown =
        |c: &Config| -> Vec<String> { c.tunnel_allow.iter().map(ToString::to_string).collect() };
    let c = load_ok(&[], &[]);
    assert_eq!(shown(&c), ["*:443"]);
    assert_eq!(c.max_connections, 1024);
    let c = load_ok(
        &["--max-connections=7"],
        &[
            (
                "TUNNEL_ALLOW",
                " *.Example.com:443  10.0.0.0/8:*\t[::1]:5000 ",
            ),
            ("MAX_CONNECTIONS", "9"),
        ],
    );
    assert_eq!(
        shown(&c),
        ["*.example.com:443", "10.0.0.0/8:*", "[::1/128]:5000"]
    );
    assert_eq!(c.max_connections, 7, "the flag wins");
    // An empty list allows nothing (rather than falling back to the default).
    let c = load_ok(&[], &[("TUNNEL_ALLOW", "")]);
    assert!(c.tunnel_allow.is_empty());
    // In the file: an array or a string; a count as an integer or a string.
    let file =
        toml_file("tunnel_allow = [\"registry.local:5000\", \"*:443\"]\nmax_connections = 64\n");
    let c = load_ok(&["--config", file.path().to_str().unwrap()], &[]);
    assert_eq!(shown(&c), ["registry.local:5000", "*:443"]);
    assert_eq!(c.max_connections, 64);
    let e = toml_err("max_connections = true\n");
    assert!(
        e.starts_with("max_connections (in") && e.contains("whole number"),
        "{e}"
    );
    // A misspelt variable is caught.
    let e = load_err(&[], &[("TUNNEL_ALLOWED", "*:*")]);
    assert!(e.contains("TUNNEL_ALLOWED"), "{e}");
}
