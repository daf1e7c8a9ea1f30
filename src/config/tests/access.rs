use super::*;

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
