use super::*;

use Action::{Fetch, Pull, Push};

#[path = "../../../tests/support/access_rule.rs"]
mod access_rule;
use access_rule::rule;

type Groups = BTreeMap<String, Vec<String>>;

fn groups(pairs: &[(&str, &[&str])]) -> Groups {
    pairs
        .iter()
        .map(|(g, members)| {
            (
                (*g).to_owned(),
                members.iter().map(|m| (*m).to_owned()).collect(),
            )
        })
        .collect()
}

fn who(name: &str) -> Identity {
    match name {
        "-" => Identity::Anonymous,
        user => Identity::User(user.to_owned()),
    }
}

/// `subject` is `registry/repo`, split at the first `/`.
fn allows(rules: &Rules, name: &str, action: Action, subject: &str) -> bool {
    let (registry, repo) = subject.split_once('/').unwrap();
    rules.allows(
        &who(name),
        action,
        &RegistryHost::parse(registry).unwrap(),
        &RepoName::parse(repo).unwrap(),
    )
}

/// Runs (identity, action, subject, expected) cases; `-` is Anonymous.
fn check(rules: &Rules, cases: &[(&str, Action, &str, bool)]) {
    for (name, action, subject, want) in cases {
        assert_eq!(
            allows(rules, name, *action, subject),
            *want,
            "{name} {action:?} {subject}"
        );
    }
}

#[test]
fn defaults_without_entries() {
    let open = Rules::new(Vec::new(), BTreeMap::new(), false).unwrap();
    assert!(open.is_default());
    let closed = Rules::new(Vec::new(), BTreeMap::new(), true).unwrap();
    assert!(closed.is_default());
    for action in [Pull, Fetch, Push] {
        for subject in [
            "docker.io/alpine",
            "quay.io/team/app",
            "registry.test:5000/x",
        ] {
            assert!(allows(&open, "-", action, subject));
            assert!(allows(&open, "alice", action, subject));
            assert!(!allows(&closed, "-", action, subject));
            assert!(allows(&closed, "alice", action, subject));
        }
    }
    assert!(allows(&Rules::default(), "-", Push, "quay.io/a"));
    // Groups alone do not make the rules non-default.
    let with_groups = Rules::new(Vec::new(), groups(&[("ci", &["b1"])]), true).unwrap();
    assert!(with_groups.is_default());
}

#[test]
fn longest_match_wins() {
    let rules = Rules::new(
        vec![
            rule("*", &["anonymous"], &[], &[]),
            rule("quay.io/*", &["alice"], &["alice"], &[]),
            rule("quay.io/team/*", &["bob"], &[], &["bob"]),
            rule("quay.io/team/secret", &[], &[], &[]),
        ],
        BTreeMap::new(),
        true,
    )
    .unwrap();
    assert!(!rules.is_default());
    check(
        &rules,
        &[
            ("-", Pull, "gcr.io/x", true),
            ("-", Fetch, "gcr.io/x", false),
            ("alice", Pull, "quay.io/other/app", true),
            ("alice", Fetch, "quay.io/other/app", true),
            ("bob", Pull, "quay.io/other/app", false),
            ("-", Pull, "quay.io/other/app", false),
            // The more specific entry replaces the general one entirely.
            ("alice", Pull, "quay.io/team/app", false),
            ("bob", Pull, "quay.io/team/app", true),
            ("bob", Push, "quay.io/team/app", true),
            ("bob", Fetch, "quay.io/team/app", false),
            ("bob", Pull, "quay.io/team/deep/nested/app", true),
            ("bob", Pull, "quay.io/team/secret", false),
            ("alice", Pull, "quay.io/team/secret", false),
            ("-", Pull, "quay.io/team/secret", false),
            // `quay.io/team/*` needs something after the slash.
            ("alice", Pull, "quay.io/team", true),
            ("bob", Pull, "quay.io/team", false),
        ],
    );
    // Order in the file does not matter for different lengths.
    let reversed = Rules::new(
        vec![
            rule("quay.io/team/*", &["bob"], &[], &[]),
            rule("quay.io/*", &["alice"], &[], &[]),
        ],
        BTreeMap::new(),
        true,
    )
    .unwrap();
    check(
        &reversed,
        &[
            ("bob", Pull, "quay.io/team/app", true),
            ("alice", Pull, "quay.io/team/app", false),
            ("alice", Pull, "quay.io/app", true),
        ],
    );
}

#[test]
fn ties_go_to_the_earlier_entry() {
    // Both have 14 literal characters and match quay.io/team/app.
    let first = rule("quay.io/team/a*", &["alice"], &[], &[]);
    let second = rule("quay.io/team/*p", &["bob"], &[], &[]);
    let rules = Rules::new(vec![first.clone(), second.clone()], BTreeMap::new(), true).unwrap();
    check(
        &rules,
        &[
            ("alice", Pull, "quay.io/team/app", true),
            ("bob", Pull, "quay.io/team/app", false),
            ("bob", Pull, "quay.io/team/zip", true),
        ],
    );
    let rules = Rules::new(vec![second, first], BTreeMap::new(), true).unwrap();
    check(
        &rules,
        &[
            ("alice", Pull, "quay.io/team/app", false),
            ("bob", Pull, "quay.io/team/app", true),
        ],
    );
    // `?` is not a literal: "quay.io/team/ap?" (15) beats "quay.io/team/a*" (14) but loses to
    // "quay.io/team/app" (16).
    let rules = Rules::new(
        vec![
            rule("quay.io/team/a*", &["a"], &[], &[]),
            rule("quay.io/team/ap?", &["b"], &[], &[]),
            rule("quay.io/team/app", &["c"], &[], &[]),
        ],
        BTreeMap::new(),
        true,
    )
    .unwrap();
    check(
        &rules,
        &[
            ("c", Pull, "quay.io/team/app", true),
            ("b", Pull, "quay.io/team/app", false),
            ("b", Pull, "quay.io/team/apt", true),
            ("a", Pull, "quay.io/team/ax", true),
        ],
    );
}

#[test]
fn identities_groups_any_user_and_anonymous() {
    let rules = Rules::new(
        vec![
            rule("quay.io/ci/*", &["@ci", "alice"], &["@ci"], &["@ci"]),
            rule("quay.io/users/*", &["*"], &[], &[]),
            rule("quay.io/public/*", &["anonymous"], &["*"], &[]),
            rule(
                "quay.io/mixed/*",
                &["anonymous", "*", "alice"],
                &[],
                &["@admins"],
            ),
            rule("quay.io/certs/*", &["Jane Doe"], &[], &[]),
        ],
        groups(&[
            ("ci", &["builder1", "builder2"]),
            ("admins", &["root", "*"]),
        ]),
        true,
    )
    .unwrap();
    check(
        &rules,
        &[
            ("builder1", Pull, "quay.io/ci/app", true),
            ("builder2", Fetch, "quay.io/ci/app", true),
            ("builder2", Push, "quay.io/ci/app", true),
            ("alice", Pull, "quay.io/ci/app", true),
            ("alice", Fetch, "quay.io/ci/app", false),
            ("alice", Push, "quay.io/ci/app", false),
            ("builder3", Pull, "quay.io/ci/app", false),
            ("ci", Pull, "quay.io/ci/app", false),
            ("@ci", Pull, "quay.io/ci/app", false),
            ("-", Pull, "quay.io/ci/app", false),
            // `*`: any authenticated user, never Anonymous.
            ("zed", Pull, "quay.io/users/app", true),
            ("-", Pull, "quay.io/users/app", false),
            // `anonymous`: everyone, authenticated or not.
            ("-", Pull, "quay.io/public/app", true),
            ("zed", Pull, "quay.io/public/app", true),
            ("-", Fetch, "quay.io/public/app", false),
            ("zed", Fetch, "quay.io/public/app", true),
            // A group may hold `*`.
            ("anybody", Push, "quay.io/mixed/x", true),
            ("-", Push, "quay.io/mixed/x", false),
            // Certificate CNs may hold inner spaces.
            ("Jane Doe", Pull, "quay.io/certs/x", true),
            ("Jane", Pull, "quay.io/certs/x", false),
        ],
    );
}

#[test]
fn fetch_implies_pull_and_push_implies_nothing() {
    let rules = Rules::new(
        vec![rule("quay.io/*", &[], &["fetcher"], &["pusher"])],
        BTreeMap::new(),
        true,
    )
    .unwrap();
    check(
        &rules,
        &[
            ("fetcher", Fetch, "quay.io/a", true),
            ("fetcher", Pull, "quay.io/a", true),
            ("fetcher", Push, "quay.io/a", false),
            ("pusher", Push, "quay.io/a", true),
            ("pusher", Pull, "quay.io/a", false),
            ("pusher", Fetch, "quay.io/a", false),
        ],
    );
    assert!(rules.may_see_repo(
        &who("fetcher"),
        &RegistryHost::parse("quay.io").unwrap(),
        &RepoName::parse("a").unwrap()
    ));
    assert!(!rules.may_see_repo(
        &who("pusher"),
        &RegistryHost::parse("quay.io").unwrap(),
        &RepoName::parse("a").unwrap()
    ));
}

#[test]
fn docker_hub_naming() {
    let rules = Rules::new(
        vec![
            rule("docker.io/alpine", &["a"], &[], &[]),
            rule("Registry-1.Docker.IO/library/busybox", &["b"], &[], &[]),
            rule("index.docker.io:443/myorg/*", &["c"], &[], &[]),
            rule("docker.io/library/*", &["d"], &[], &[]),
        ],
        BTreeMap::new(),
        true,
    )
    .unwrap();
    check(
        &rules,
        &[
            // `alpine` and `library/alpine` are the same repository on Docker Hub.
            ("a", Pull, "docker.io/alpine", true),
            ("a", Pull, "docker.io/library/alpine", true),
            ("a", Pull, "registry-1.docker.io/alpine", true),
            ("b", Pull, "docker.io/busybox", true),
            ("c", Pull, "index.docker.io/myorg/app", true),
            ("d", Pull, "docker.io/nginx", true),
            ("d", Pull, "docker.io/alpine", false),
            ("a", Pull, "docker.io/myorg/alpine", false),
            // Docker Hub on another port is another registry.
            ("a", Pull, "docker.io:5000/alpine", false),
        ],
    );
}

#[test]
fn registry_names_and_ports() {
    let rules = Rules::new(
        vec![
            rule("registry.test:5000/*", &["port"], &[], &[]),
            rule("registry.test/*", &["noport"], &[], &[]),
            rule("Quay.IO/team/*", &["quay"], &[], &[]),
            rule("*.example.com/*", &["wild"], &[], &[]),
            rule("[::1]:5001/*", &["v6"], &[], &[]),
            rule("localhost:5000/a?c", &["q"], &[], &[]),
        ],
        BTreeMap::new(),
        true,
    )
    .unwrap();
    check(
        &rules,
        &[
            ("port", Pull, "registry.test:5000/x", true),
            ("port", Pull, "registry.test/x", false),
            ("noport", Pull, "registry.test/x", true),
            ("noport", Pull, "registry.test:443/x", true),
            ("noport", Pull, "registry.test:5000/x", false),
            ("quay", Pull, "quay.io/team/app", true),
            ("quay", Pull, "QUAY.io/team/app", true),
            ("wild", Pull, "reg.example.com/a/b", true),
            ("wild", Pull, "reg.example.com:8443/a", false),
            ("wild", Pull, "example.com/a", false),
            ("v6", Pull, "[::1]:5001/a", true),
            ("q", Pull, "localhost:5000/abc", true),
            ("q", Pull, "localhost:5000/a/c", false),
            ("q", Pull, "localhost:5000/abbc", false),
            ("port", Pull, "gcr.io/x", false),
        ],
    );
}

#[test]
fn no_matching_entry_is_denied() {
    let rules = Rules::new(
        vec![rule(
            "quay.io/*",
            &["anonymous"],
            &["anonymous"],
            &["anonymous"],
        )],
        BTreeMap::new(),
        false,
    )
    .unwrap();
    check(
        &rules,
        &[
            ("-", Push, "quay.io/a", true),
            ("-", Pull, "ghcr.io/a", false),
            ("alice", Pull, "ghcr.io/a", false),
            ("-", Pull, "docker.io/alpine", false),
        ],
    );
}

#[test]
fn star_matches_everything() {
    let rules = Rules::new(vec![rule("*", &["*"], &[], &[])], BTreeMap::new(), true).unwrap();
    for subject in [
        "docker.io/alpine",
        "quay.io/a/b/c",
        "registry.test:5000/x",
        "[::1]:5001/y",
    ] {
        assert!(allows(&rules, "alice", Pull, subject), "{subject}");
        assert!(!allows(&rules, "-", Pull, subject), "{subject}");
    }
}

#[test]
fn glob_semantics() {
    let cases: &[(&str, &str, bool)] = &[
        ("*", "", true),
        ("*", "a/b", true),
        ("a*", "a", true),
        ("a*c", "abbbc", true),
        ("a*c", "a/b/c", true),
        ("a*c", "abcd", false),
        ("a?c", "abc", true),
        ("a?c", "a/c", false),
        ("a?c", "ac", false),
        ("*a*b*", "xxaxxbxx", true),
        ("*a*b*", "xxbxxaxx", false),
        ("a**b", "ab", true),
        ("", "", true),
        ("", "a", false),
        ("abc", "abc", true),
        ("abc", "abcd", false),
        ("*?", "", false),
        ("*?", "/", false),
        ("*?", "a/b", true),
    ];
    for (pattern, subject, want) in cases {
        assert_eq!(
            glob_matches(pattern.as_bytes(), subject.as_bytes()),
            *want,
            "{pattern} ~ {subject}"
        );
    }
}

/// A single rule for `pattern` that names nobody.
fn no_names(pattern: &str) -> Vec<AccessRule> {
    vec![rule(pattern, &[], &[], &[])]
}

#[test]
fn invalid_rules() {
    let bad: Vec<(Vec<AccessRule>, Groups, &str)> = vec![
        (no_names(""), BTreeMap::new(), "entry 1: `match` is empty"),
        (
            vec![rule("*", &[], &[], &[]), rule("  ", &[], &[], &[])],
            BTreeMap::new(),
            "entry 2: `match` is empty",
        ),
        (
            no_names("quay.io/a b"),
            BTreeMap::new(),
            "invalid character ' '",
        ),
        (
            no_names("quay.io/{a,b}"),
            BTreeMap::new(),
            "invalid character '{'",
        ),
        (
            no_names("quay.io/a\\*"),
            BTreeMap::new(),
            "invalid character '\\\\'",
        ),
        (no_names("quay.io/Team/*"), BTreeMap::new(), "lower case"),
        (
            no_names("quay.io"),
            BTreeMap::new(),
            "<registry>/<repository glob>",
        ),
        (no_names("quay.io:99999/x"), BTreeMap::new(), "port"),
        (no_names("/x"), BTreeMap::new(), "empty registry host"),
        (
            vec![rule("quay.io/*", &["@nope"], &[], &[])],
            BTreeMap::new(),
            "entry 1: pull names the unknown group @nope",
        ),
        (
            vec![rule("quay.io/*", &[], &[], &["@ci", "@cd"])],
            groups(&[("ci", &["a"])]),
            "entry 1: push names the unknown group @cd",
        ),
        (
            vec![rule("quay.io/*", &[], &[""], &[])],
            BTreeMap::new(),
            "fetch has an invalid name \"\"",
        ),
        (
            vec![rule("quay.io/*", &[" a"], &[], &[])],
            BTreeMap::new(),
            "pull has an invalid name \" a\"",
        ),
        (
            vec![rule("quay.io/*", &["a\nb"], &[], &[])],
            BTreeMap::new(),
            "pull has an invalid name \"a\\nb\"",
        ),
        (
            vec![rule("quay.io/*", &["@"], &[], &[])],
            BTreeMap::new(),
            "unknown group @",
        ),
        (
            Vec::new(),
            groups(&[("ci", &["@cd"])]),
            "[groups] \"ci\": invalid member \"@cd\"",
        ),
        (Vec::new(), groups(&[("ci", &["a\tb"])]), "invalid member"),
        (Vec::new(), groups(&[("", &["a"])]), "invalid group name"),
    ];
    for (entries, groups, want) in bad {
        let e = Rules::new(entries.clone(), groups, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{entries:?}: {e}");
    }
}

#[test]
fn never_panics() {
    let rules = Rules::new(
        vec![
            rule("*", &["anonymous"], &[], &[]),
            rule("quay.io/*a*b?c*", &["x"], &[], &[]),
            rule("*.test:5000/*/*/?", &["y"], &[], &[]),
        ],
        BTreeMap::new(),
        true,
    )
    .unwrap();
    let seeds = [
        "quay.io/aabbc",
        "reg.test:5000/a/b/c",
        "*?*?",
        "docker.io/alpine",
    ];
    for input in crate::registry::fuzz::inputs(41, &seeds, "abc*?/.:", 3000) {
        let _ = normalize_pattern(&input);
        let _ = glob_matches(input.as_bytes(), b"quay.io/aabbc");
        let _ = glob_matches(b"*a*b?c*", input.as_bytes());
        if let Some((registry, repo)) = input.split_once('/')
            && let (Ok(registry), Ok(repo)) = (RegistryHost::parse(registry), RepoName::parse(repo))
        {
            let _ = rules.allows(&Identity::Anonymous, Pull, &registry, &repo);
        }
    }
}
