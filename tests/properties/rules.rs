//! `Rules` (the `[[access]]` and `[groups]` tables) against a model of their documented
//! semantics: a request is matched as `<registry>/<repository>` (Docker Hub names with
//! `library/`); in patterns `*` matches any run of characters, `/` included, and `?` one
//! character other than `/` (the oracle is a matcher written from those two sentences); the
//! matching entry with the most literal characters decides (ties: the earlier one); `fetch`
//! implies `pull`, `push` nothing; `anonymous` admits everyone, `*` every authenticated user; no
//! matching entry denies; no entries at all allow everyone, or every authenticated user when
//! client authentication is on. Arbitrary patterns and names never panic.

use std::collections::BTreeMap;

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use registry_proxy::access::identity::Identity;
use registry_proxy::access::rules::{AccessRule, Action, Rules};
use registry_proxy::registry::host::RegistryHost;
use registry_proxy::registry::name::RepoName;

use crate::strategies::{config, host_like, mutated, name_text, text};

#[path = "../support/access_rule.rs"]
mod access_rule;
use access_rule::rule;

fn user(name: &str) -> Identity {
    Identity::User(name.to_owned())
}

/// A repository a request can name.
#[derive(Clone, Debug)]
struct Subject {
    registry: RegistryHost,
    repo: RepoName,
}

impl Subject {
    /// What patterns are matched against: `<registry>/<repository>`, Docker Hub names under
    /// `library/`.
    fn text(&self) -> String {
        let repo = if self.registry.is_docker_hub() {
            self.repo.for_docker_hub()
        } else {
            self.repo.clone()
        };
        format!("{}/{repo}", self.registry)
    }
}

fn allows(rules: &Rules, who: &Identity, action: Action, s: &Subject) -> bool {
    rules.allows(who, action, &s.registry, &s.repo)
}

/// One rule letting `alice` pull: does `pattern` match `s`? `None` if the rule is refused.
fn matches(pattern: &str, s: &Subject) -> Option<bool> {
    let rules = Rules::new(
        vec![rule(pattern, &["alice"], &[], &[])],
        BTreeMap::new(),
        true,
    )
    .ok()?;
    Some(allows(&rules, &user("alice"), Action::Pull, s))
}

/// A registry host in canonical form, Docker Hub often.
fn registry() -> impl Strategy<Value = RegistryHost> {
    prop_oneof![
        4 => host_like().prop_filter_map("too long for a host", |h| RegistryHost::parse(&h.text).ok()),
        1 => Just(RegistryHost::docker_hub()),
    ]
}

fn subject() -> impl Strategy<Value = Subject> {
    (registry(), name_text()).prop_map(|(registry, name)| Subject {
        registry,
        repo: RepoName::parse(&name).unwrap(),
    })
}

/// Subjects from a small world (few hosts, names over `a`/`b`), where random globs often match.
fn small_subject() -> impl Strategy<Value = Subject> {
    const HOSTS: [&str; 5] = [
        "quay.io",
        "docker.io",
        "registry.test:5000",
        "[::1]:5000",
        "a.b",
    ];
    (select(&HOSTS[..]), "[ab]{1,2}(/[ab]{1,2}){0,2}").prop_map(|(h, name)| Subject {
        registry: RegistryHost::parse(h).unwrap(),
        repo: RepoName::parse(&name).unwrap(),
    })
}

/// The pattern as the rules read it, by the documented normalisation (for patterns without
/// upper case or characters outside the pattern alphabet): `None` if it is refused (no `/` and
/// no `*`, or a glob-free registry part that is not a registry host); a glob-free registry part
/// in its canonical form; Docker Hub patterns naming a single component (no `/`, no `*`) under
/// `library/`.
fn normalized(pattern: &str) -> Option<String> {
    let Some((registry, repo)) = pattern.split_once('/') else {
        return pattern.contains('*').then(|| pattern.to_owned());
    };
    if registry.contains(['*', '?']) {
        return Some(pattern.to_owned());
    }
    let host = RegistryHost::parse(registry).ok()?;
    if host.is_docker_hub() && !repo.contains(['/', '*']) {
        return Some(format!("docker.io/library/{repo}"));
    }
    Some(format!("{host}/{repo}"))
}

/// The oracle, straight from the documented semantics by dynamic programming over prefixes
/// (not the matcher's backtracking): `*` matches any run of characters, `?` one character other
/// than `/`, anything else itself.
fn glob_oracle(pattern: &str, subject: &str) -> bool {
    let s = subject.as_bytes();
    // matched[j]: the pattern so far matches `s[..j]`.
    let mut matched = vec![false; s.len() + 1];
    matched[0] = true;
    for &p in pattern.as_bytes() {
        let mut next = vec![false; s.len() + 1];
        for j in 0..=s.len() {
            next[j] = match p {
                b'*' => matched[j] || (j > 0 && next[j - 1]),
                b'?' => j > 0 && matched[j - 1] && s[j - 1] != b'/',
                c => j > 0 && matched[j - 1] && s[j - 1] == c,
            };
        }
        matched = next;
    }
    matched[s.len()]
}

/// The precedence of a (normalised) pattern: its characters other than `*` and `?`.
fn literal(pattern: &str) -> usize {
    pattern.chars().filter(|c| !matches!(c, '*' | '?')).count()
}

/// One edit that turns a subject into a pattern that still matches it.
#[derive(Clone, Debug)]
enum Widen {
    /// Replace one character other than `/` with `?`.
    Question(Index),
    /// Replace the characters between two positions with `*`.
    Star(Index, Index),
    /// Insert `*`.
    InsertStar(Index),
}

fn widen() -> impl Strategy<Value = Widen> {
    prop_oneof![
        (any::<Index>()).prop_map(Widen::Question),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Widen::Star(a, b)),
        any::<Index>().prop_map(Widen::InsertStar),
    ]
}

fn apply_widen(text: &str, edits: &[Widen]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len();
        match edit {
            Widen::Question(at) if len > 0 => {
                let at = at.index(len);
                if chars[at] != '/' && chars[at] != '*' {
                    chars[at] = '?';
                }
            }
            Widen::Star(a, b) if len > 0 => {
                let (a, b) = (a.index(len), b.index(len));
                chars.splice(a.min(b)..=a.max(b), ['*']);
            }
            Widen::InsertStar(at) => chars.insert(at.index(len + 1), '*'),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// A pattern made from a subject by widening it: by the oracle it matches the subject.
fn widened(s: &Subject) -> impl Strategy<Value = String> + use<> {
    let text = s.text();
    vec(widen(), 0..4).prop_map(move |edits| apply_widen(&text, &edits))
}

/// Patterns over a small alphabet behind a canonical registry (or a registry glob).
fn small_pattern() -> impl Strategy<Value = String> {
    let registry = select(
        &[
            "quay.io",
            "docker.io",
            "registry.test:5000",
            "[::1]:5000",
            "a.b",
            "*",
            "?.b",
            "*.io",
            "quay.*",
            "registry.test:*",
        ][..],
    );
    prop_oneof![
        4 => (registry, "[ab/*?]{0,8}").prop_map(|(r, p)| format!("{r}/{p}")),
        1 => "[ab/*?.:]{0,10}",
    ]
}

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

fn identity() -> impl Strategy<Value = Identity> {
    prop_oneof![
        1 => Just(Identity::Anonymous),
        4 => select(&USERS[..]).prop_map(user),
        // A user whose name is a keyword is still just that user.
        1 => select(&["anonymous", "*", "@g"][..]).prop_map(user),
    ]
}

/// An entry's list: users, `*`, `anonymous` and the group `@g`.
fn principals() -> impl Strategy<Value = Vec<&'static str>> {
    subsequence(
        &["alice", "bob", "carol", "*", "anonymous", "@g"][..],
        0..=4,
    )
}

/// The documented meaning of a list: `anonymous` admits everyone, `*` every authenticated user,
/// a name that user, `@g` what the group's members admit.
fn admits(list: &[&str], group: &[&str], who: &Identity) -> bool {
    list.iter().any(|p| match *p {
        "anonymous" => true,
        "@g" => admits(group, &[], who),
        "*" => matches!(who, Identity::User(_)),
        name => *who == user(name),
    })
}

proptest! {
    #![proptest_config(config())]

    /// `*` matches every repository of every registry.
    #[test]
    fn star_matches_everything(s in subject(), who in identity()) {
        let rules = Rules::new(vec![rule("*", &["alice"], &[], &["anonymous"])], BTreeMap::new(), true).unwrap();
        prop_assert_eq!(allows(&rules, &who, Action::Pull, &s), who == user("alice"));
        prop_assert!(allows(&rules, &who, Action::Push, &s));
    }

    /// A pattern without globs, its registry written in any accepted form, matches its own
    /// repository (Docker Hub's `alpine` being `library/alpine`) and no other.
    #[test]
    fn literal_patterns_match_exactly(
        host in host_like(),
        name in name_text(),
        other in subject(),
        short_hub_name in any::<bool>(),
    ) {
        let Ok(registry) = RegistryHost::parse(&host.text) else {
            return Ok(());
        };
        let name = match name.strip_prefix("library/") {
            Some(rest) if short_hub_name && registry.is_docker_hub() && !rest.contains('/') => rest.to_owned(),
            _ => name,
        };
        let own = Subject { registry, repo: RepoName::parse(&name).unwrap() };
        let pattern = format!("{}/{name}", host.text);
        prop_assert_eq!(matches(&pattern, &own), Some(true), "{}", pattern);
        prop_assert_eq!(matches(&pattern, &other), Some(own.text() == other.text()), "{} vs {:?}", pattern, other);
    }

    /// Globs against the oracle: patterns widened from a subject (which must match it) and
    /// patterns over a small alphabet (which often do), against that subject and another one.
    #[test]
    fn globs_match_like_the_oracle(
        (s, pattern) in prop_oneof![
            subject().prop_flat_map(|s| (Just(s.clone()), widened(&s))),
            small_subject().prop_flat_map(|s| (Just(s.clone()), widened(&s))),
            (small_subject(), small_pattern()),
        ],
        other in small_subject(),
    ) {
        let Some(normal) = normalized(&pattern) else {
            prop_assert_eq!(matches(&pattern, &s), None, "{} accepted", pattern);
            return Ok(());
        };
        for subject in [&s, &other] {
            prop_assert_eq!(
                matches(&pattern, subject),
                Some(glob_oracle(&normal, &subject.text())),
                "{} ({}) ~ {}", pattern, normal, subject.text()
            );
        }
    }

    /// Of the entries that match, the one with the most literal characters decides, the earlier
    /// one on a tie, whatever the others say and in whatever order they are written.
    #[test]
    fn longest_match_wins(
        (s, a, b) in prop_oneof![subject(), small_subject()]
            .prop_flat_map(|s| (Just(s.clone()), widened(&s), widened(&s))),
        miss in small_pattern(),
        miss_first in any::<bool>(),
    ) {
        let (Some(na), Some(nb)) = (normalized(&a), normalized(&b)) else {
            return Ok(());
        };
        let nm = normalized(&miss).filter(|m| !glob_oracle(m, &s.text()));
        let mut entries = vec![rule(&a, &["a"], &[], &[]), rule(&b, &["b"], &[], &[])];
        if nm.is_some() {
            let m = rule(&miss, &["m"], &[], &[]);
            if miss_first { entries.insert(0, m) } else { entries.push(m) }
        }
        let rules = Rules::new(entries, BTreeMap::new(), true).unwrap();
        let a_wins = literal(&na) >= literal(&nb);
        let why = format!("{a} ({}) vs {b} ({}) on {}", literal(&na), literal(&nb), s.text());
        prop_assert_eq!(allows(&rules, &user("a"), Action::Pull, &s), a_wins, "{}", why);
        prop_assert_eq!(allows(&rules, &user("b"), Action::Pull, &s), !a_wins, "{}", why);
        prop_assert!(!allows(&rules, &user("m"), Action::Pull, &s), "{}", why);
    }

    /// Who may do what under the entry that decides: `fetch` implies `pull`, `push` implies
    /// nothing, `anonymous` is everyone and `*` every authenticated user, groups expand.
    #[test]
    fn principals_and_actions(
        pull in principals(),
        fetch in principals(),
        push in principals(),
        group in subsequence(&["alice", "bob", "*", "anonymous"][..], 0..=2),
        who in identity(),
        s in subject(),
        auth_on in any::<bool>(),
    ) {
        let groups = BTreeMap::from([("g".to_owned(), group.iter().map(|m| (*m).to_owned()).collect())]);
        let rules = Rules::new(vec![rule("*", &pull, &fetch, &push)], groups, auth_on).unwrap();
        let pull_or_fetch: Vec<&str> = pull.iter().chain(&fetch).copied().collect();
        prop_assert_eq!(allows(&rules, &who, Action::Pull, &s), admits(&pull_or_fetch, &group, &who));
        prop_assert_eq!(allows(&rules, &who, Action::Fetch, &s), admits(&fetch, &group, &who));
        prop_assert_eq!(allows(&rules, &who, Action::Push, &s), admits(&push, &group, &who));
        prop_assert_eq!(
            rules.may_see_repo(&who, &s.registry, &s.repo),
            allows(&rules, &who, Action::Pull, &s)
        );
    }

    /// No entry matches: denied, even where every other entry admits everyone. No entries at
    /// all: everyone may do everything, or with client authentication every authenticated user.
    #[test]
    fn defaults_and_no_match(
        s in small_subject(),
        miss in vec(small_pattern(), 1..4),
        who in identity(),
        action in select(&[Action::Pull, Action::Fetch, Action::Push][..]),
        auth_on in any::<bool>(),
    ) {
        let missing: Vec<AccessRule> = miss
            .iter()
            .filter(|m| normalized(m).is_some_and(|n| !glob_oracle(&n, &s.text())))
            .map(|m| rule(m, &["anonymous"], &["anonymous"], &["anonymous"]))
            .collect();
        if !missing.is_empty() {
            let rules = Rules::new(missing, BTreeMap::new(), auth_on).unwrap();
            prop_assert!(!allows(&rules, &who, action, &s));
        }
        let open = Rules::new(Vec::new(), BTreeMap::new(), auth_on).unwrap();
        prop_assert!(open.is_default());
        prop_assert_eq!(allows(&open, &who, action, &s), !auth_on || who != Identity::Anonymous);
    }

    /// Arbitrary and near-valid patterns, names and groups never panic, nor does matching any
    /// subject against whatever is accepted.
    #[test]
    fn garbage_never_panics(
        patterns in vec(prop_oneof![
            text("*?/.:-_[]az09AZ"),
            mutated(subject().prop_map(|s| s.text() + "/*")),
            mutated(small_pattern()),
        ], 0..4),
        names in vec(prop_oneof![text("@*az "), select(&["anonymous", "*", "@g", "@", ""][..]).prop_map(str::to_owned)], 0..4),
        group_names in btree_set(prop_oneof![text("gaz@"), Just("g".to_owned())], 0..3),
        s in prop_oneof![subject(), small_subject()],
        who in identity(),
    ) {
        let groups: BTreeMap<String, Vec<String>> =
            group_names.into_iter().map(|g| (g, names.clone())).collect();
        let entries: Vec<AccessRule> = patterns
            .iter()
            .map(|p| AccessRule { pattern: p.clone(), pull: names.clone(), fetch: names.clone(), push: names.clone() })
            .collect();
        if let Ok(rules) = Rules::new(entries, groups, true) {
            for action in [Action::Pull, Action::Fetch, Action::Push] {
                let _ = allows(&rules, &who, action, &s);
            }
        }
    }
}
