//! `Htpasswd::parse` (`PROXY_HTPASSWD`, the file `htpasswd -B` writes) against a model of the
//! format: `user:$2y$NN$<22 salt + 31 hash characters>` lines (`$2a$`, `$2b$` too, cost 04–31,
//! no stray bits in the last salt and hash characters), blank lines and `#` comments ignored,
//! every user once; any other line refuses the whole file, and the error never shows a hash.
//!
//! Generating bcrypt hashes is slow on purpose, so [`FIXTURES`] holds a few real ones written by
//! `htpasswd -Bbn -C 4`; the properties move them between users, versions and layouts and check
//! `verify` against them. Everything else uses well-formed hashes that no password matches.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use regex::Regex;
use registry_proxy::access::htpasswd::{Htpasswd, MAX_FILE_LEN};

use crate::strategies::{bytes, config, mutated, text};

/// `(password, hash)` pairs from `htpasswd -Bbn -C 4 u PASSWORD` (apache2-utils).
const FIXTURES: &[(&str, &str)] = &[
    (
        "wonderland",
        "$2y$04$WrCEjhqv6s1WicPjSUXBoO2c4g4uzz4xpxnquXvkbRoSva1fUVVdm",
    ),
    (
        "b:o:b pass",
        "$2y$04$culkCrpwYPCtBhFb0q7jY.jl1wELXAk91vRk9bJ6DUVEPug1SBP7K",
    ),
    (
        "pässwörd€ 😀",
        "$2y$04$5qg/addfno87BXpPKJPe9OZIhMTjnuqFweqEnsamHs8Tc5jabefuK",
    ),
    (
        "",
        "$2y$04$HwS.z4h7rvDDRhij30of/.DN0BnKOXY8DgS6vY3lcEb6uBNyEAgGu",
    ),
];

const BCRYPT_ALPHABET: &str = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The shape of a bcrypt hash; cost and stray bits are checked by [`model_hash_ok`].
static BCRYPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\$2[aby]\$([0-9]{2})\$([./A-Za-z0-9]{22})([./A-Za-z0-9]{31})$").unwrap()
});

/// Whether the model takes `hash` for a well-formed bcrypt hash.
fn model_hash_ok(hash: &str) -> bool {
    let Some(c) = BCRYPT.captures(hash) else {
        return false;
    };
    let cost: u32 = c[1].parse().unwrap();
    // 22 characters carry 132 bits for a 128-bit salt, 31 carry 186 for 184: the last character's
    // spare low bits must be zero.
    let index = |s: &str| BCRYPT_ALPHABET.find(s.chars().last().unwrap()).unwrap();
    (4..=31).contains(&cost) && index(&c[2]) % 16 == 0 && index(&c[3]) % 4 == 0
}

/// What the model says a file is: `Some(users)` if it must parse, `None` if it must be refused.
fn model(text: &str) -> Option<BTreeSet<String>> {
    if text.len() > MAX_FILE_LEN {
        return None;
    }
    let mut users = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line.split_once(':')?;
        let user_ok = !user.is_empty()
            && user.len() <= 255
            && !user.chars().any(|c| c.is_control() || c.is_whitespace());
        if !user_ok || !model_hash_ok(hash) || !users.insert(user.to_owned()) {
            return None;
        }
    }
    Some(users)
}

/// Checks `Htpasswd::parse` against the model; a refusal must not show any hash-like part of
/// the file.
fn check_against_model(text: &str) -> Result<(), TestCaseError> {
    match (Htpasswd::parse(text), model(text)) {
        (Ok(parsed), Some(users)) => {
            prop_assert_eq!(parsed.len(), users.len(), "{:?}", text);
            for user in &users {
                prop_assert!(parsed.contains(user), "{user:?} missing from {text:?}");
            }
        }
        (Err(e), None) => {
            let shown = format!("{e} {e:?}");
            for line in text.lines() {
                // The user is shown by design; the hash never is.
                if let Some((user, hash)) = line.trim().split_once(':')
                    && hash.len() >= 13
                    && !user.contains(hash)
                {
                    prop_assert!(!shown.contains(hash), "{shown} shows a hash of {text:?}");
                }
            }
        }
        (got, want) => prop_assert!(false, "{text:?}: parsed {got:?}, model says {want:?}"),
    }
    Ok(())
}

/// A well-formed bcrypt hash that no known password matches: version, cost 04–31, 22 salt and
/// 31 hash characters with no stray bits.
fn bcrypt_hash() -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = BCRYPT_ALPHABET.chars().collect();
    let salt_last: Vec<char> = alphabet.iter().copied().step_by(16).collect();
    let hash_last: Vec<char> = alphabet.iter().copied().step_by(4).collect();
    (
        select(&["2y", "2b", "2a"][..]),
        4u32..=31,
        vec(select(alphabet.clone()), 21),
        select(salt_last),
        vec(select(alphabet), 30),
        select(hash_last),
    )
        .prop_map(|(v, cost, salt, s_last, hash, h_last)| {
            let salt: String = salt.into_iter().chain([s_last]).collect();
            let hash: String = hash.into_iter().chain([h_last]).collect();
            format!("${v}${cost:02}${salt}{hash}")
        })
}

/// A user name as `htpasswd` takes it: no `:`, blanks or control characters.
fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._@-]{1,24}",
        1 => "[^:#\\p{Cc}\\p{White_Space}][^:\\p{Cc}\\p{White_Space}]{0,30}",
        1 => "[a-z]{255}",
    ]
}

/// Distinct users.
fn users(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set(user(), n).prop_map(|s| s.into_iter().collect())
}

/// How the lines are laid out: line end, blanks around entries, comments and blank lines.
#[derive(Clone, Debug)]
struct Layout {
    crlf: bool,
    indent: &'static str,
    trailing: &'static str,
    /// Extra lines, each put before the entry with the same index (modulo).
    extras: Vec<(Index, &'static str)>,
    final_newline: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    let blank = || select(&["", " ", "\t", "  \t", "\u{a0}", "\u{3000}"][..]);
    let extra = select(
        &[
            "",
            "   ",
            "# a comment",
            "#alice:$apr1$xDw3lK5a$SfQjmUAe4DiU/Ebk4O/Qj1",
            "  # indented: comment",
            "#",
        ][..],
    );
    (
        any::<bool>(),
        blank(),
        blank(),
        vec((any::<Index>(), extra), 0..4),
        any::<bool>(),
    )
        .prop_map(|(crlf, indent, trailing, extras, final_newline)| Layout {
            crlf,
            indent,
            trailing,
            extras,
            final_newline,
        })
}

/// The file of `entries` (`user:hash` each) laid out by `l`.
fn file(entries: &[String], l: &Layout) -> String {
    let mut lines: Vec<String> = entries
        .iter()
        .map(|e| format!("{}{e}{}", l.indent, l.trailing))
        .collect();
    for (at, extra) in &l.extras {
        let at = at.index(lines.len() + 1);
        lines.insert(at, (*extra).to_owned());
    }
    let mut text = lines.join(if l.crlf { "\r\n" } else { "\n" });
    if l.final_newline {
        text.push_str(if l.crlf { "\r\n" } else { "\n" });
    }
    text
}

/// A `user:hash` line in a scheme other than bcrypt, or bcrypt-like but malformed.
fn other_hash() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\$apr1\\$[./A-Za-z0-9]{8}\\$[./A-Za-z0-9]{22}",
        "\\{SHA\\}[A-Za-z0-9+/]{27}=",
        "[./A-Za-z0-9]{13}",
        "[a-z0-9]{1,20}",
        "\\$1\\$[./A-Za-z0-9]{8}\\$[./A-Za-z0-9]{22}",
        "\\$[56]\\$[./A-Za-z0-9]{16}\\$[./A-Za-z0-9]{43,86}",
        // bcrypt-like but wrong: short or long, cost out of range or not two digits, bad version.
        "\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{10,52}",
        "\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{54,60}",
        "\\$2[aby]\\$(0[0-3]|3[2-9]|[4-9][0-9])\\$[./A-Za-z0-9]{53}",
        "\\$2[aby]\\$(\\+[0-9]|[0-9]|[0-9]{3}| [0-9]|[0-9] )\\$[./A-Za-z0-9]{53}",
        "\\$2[xz]\\$10\\$[./A-Za-z0-9]{53}",
        "\\$2\\$10\\$[./A-Za-z0-9]{53}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Files of bcrypt lines parse to exactly their users, however they are laid out.
    #[test]
    fn bcrypt_files_parse(
        users in users(1..6),
        hashes in vec(bcrypt_hash(), 6),
        l in layout(),
    ) {
        let entries: Vec<String> = users.iter().zip(&hashes).map(|(u, h)| format!("{u}:{h}")).collect();
        let text = file(&entries, &l);
        let parsed = Htpasswd::parse(&text);
        prop_assert!(parsed.is_ok(), "{text:?}: {parsed:?}");
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.len(), users.len());
        for u in &users {
            prop_assert!(parsed.contains(u), "{u:?}");
        }
        check_against_model(&text)?;
    }

    /// Real `htpasswd -B` hashes, under any user names, versions and layout: the right password
    /// passes, another fixture's password and an unknown user do not. (One bcrypt run per case,
    /// which is what the time goes to.)
    #[test]
    fn real_hashes_verify(
        users in users(1..5),
        picks in vec((any::<Index>(), select(&["2y", "2b", "2a"][..])), 5),
        check in any::<Index>(),
        which in 0..3u8,
        wrong in any::<Index>(),
        stranger in user(),
        l in layout(),
    ) {
        let assigned: Vec<(&str, String)> = users
            .iter()
            .zip(&picks)
            .map(|(u, (fixture, version))| {
                let (password, hash) = FIXTURES[fixture.index(FIXTURES.len())];
                (password, format!("{u}:${version}{}", &hash[3..]))
            })
            .collect();
        let entries: Vec<String> = assigned.iter().map(|(_, e)| e.clone()).collect();
        let text = file(&entries, &l);
        let parsed = Htpasswd::parse(&text).unwrap();
        let i = check.index(users.len());
        let (user, (password, _)) = (&users[i], &assigned[i]);
        let other = FIXTURES[wrong.index(FIXTURES.len())].0;
        match which {
            1 if other != *password => {
                prop_assert!(!parsed.verify(user, other), "{user:?} / {other:?} in {text:?}");
            }
            2 if !users.contains(&stranger) => {
                prop_assert!(!parsed.verify(&stranger, password), "stranger {stranger:?}");
            }
            _ => prop_assert!(parsed.verify(user, password), "{user:?} / {password:?} in {text:?}"),
        }
    }

    /// One line in another scheme, or a malformed bcrypt hash, anywhere in the file refuses
    /// the whole file, and the error does not show the hash.
    #[test]
    fn other_schemes_are_refused(
        users in users(1..5),
        hashes in vec(bcrypt_hash(), 5),
        bad_user in user(),
        bad_hash in other_hash(),
        at in any::<Index>(),
        l in layout(),
    ) {
        let mut entries: Vec<String> = users
            .iter()
            .filter(|u| **u != bad_user)
            .zip(&hashes)
            .map(|(u, h)| format!("{u}:{h}"))
            .collect();
        entries.insert(at.index(entries.len() + 1), format!("{bad_user}:{bad_hash}"));
        let text = file(&entries, &l);
        let parsed = Htpasswd::parse(&text);
        prop_assert!(parsed.is_err(), "{text:?} accepted");
        check_against_model(&text)?;
    }

    /// A user listed twice, an empty user, or one with a blank or control character inside is
    /// refused.
    #[test]
    fn bad_users_are_refused(
        users in users(1..4),
        hashes in vec(bcrypt_hash(), 5),
        which in 0..4u8,
        bad in prop_oneof![
            select(&[' ', '\t', '\u{a0}', '\u{3000}', '\u{2028}', '\u{85}', '\0', '\u{7f}', '\u{9b}', '\r'][..]),
        ],
        at in any::<Index>(),
    ) {
        let mut entries: Vec<String> = users.iter().zip(&hashes).map(|(u, h)| format!("{u}:{h}")).collect();
        let victim = users[at.index(users.len())].clone();
        let bad_entry = match which {
            0 => format!("{victim}:{}", hashes[4]),
            1 => format!(":{}", hashes[4]),
            2 => {
                // Inside the name, so trimming the line cannot remove it.
                format!("{victim}{bad}x:{}", hashes[4])
            }
            _ => format!("{}:{}", "u".repeat(256), hashes[4]),
        };
        entries.insert(at.index(entries.len() + 1), bad_entry);
        let text = file(&entries, &Layout {
            crlf: false, indent: "", trailing: "", extras: Vec::new(), final_newline: true,
        });
        prop_assert!(Htpasswd::parse(&text).is_err(), "{text:?} accepted");
        check_against_model(&text)?;
    }

    /// Arbitrary and near-valid files never panic, and parse exactly when the model says so.
    #[test]
    fn files_match_the_model(
        text in prop_oneof![
            1 => text("user:$2y$10$./ABCxyz019\n\r#"),
            1 => bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            6 => mutated(
                (users(1..4), vec(bcrypt_hash(), 4), layout()).prop_map(|(u, h, l)| {
                    let entries: Vec<String> = u.iter().zip(&h).map(|(u, h)| format!("{u}:{h}")).collect();
                    file(&entries, &l)
                })
            ),
        ],
    ) {
        check_against_model(&text)?;
    }
}
