use super::*;

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
