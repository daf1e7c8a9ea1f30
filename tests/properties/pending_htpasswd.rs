//! PENDING — not declared in `main.rs` yet: enable with `mod pending_htpasswd;` (or rename to
//! `htpasswd.rs`) once `registry_proxy::access::htpasswd` has landed.
//!
//! Expected API (`PROXY_HTPASSWD`, a file an operator or a script writes):
//! - `Htpasswd::parse(text: &str) -> Result<Htpasswd, E>` (any error type): never panics;
//!   accepts files of `user:$2y$NN$<53 bcrypt-base64 chars>` lines (`$2a$`, `$2b$` too);
//!   refuses any file with a line in another format (`$apr1$` MD5, `{SHA}`, `crypt(3)`, plain
//!   text), since only bcrypt is supported. If blank lines or `#` comments are allowed, they are
//!   not exercised here. Adapt [`parse_ok`] if the constructor is named otherwise.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use registry_proxy::access::htpasswd::Htpasswd;

use crate::strategies::{bytes, config, mutated, text};

/// ADAPT: whether the file parses.
fn parse_ok(text: &str) -> bool {
    Htpasswd::parse(text).is_ok()
}

const BCRYPT_ALPHABET: &str = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A well-formed bcrypt hash: version, cost 04–14, 22 salt and 31 hash characters whose last
/// characters carry no stray bits (strict decoders refuse those).
fn bcrypt_hash() -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = BCRYPT_ALPHABET.chars().collect();
    let salt_last: Vec<char> = alphabet.iter().copied().step_by(16).collect();
    let hash_last: Vec<char> = alphabet.iter().copied().step_by(4).collect();
    (
        select(&["2y", "2b", "2a"][..]),
        4u32..15,
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

fn user() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._@-]{1,24}"
}

fn bcrypt_line() -> impl Strategy<Value = String> {
    (user(), bcrypt_hash()).prop_map(|(u, h)| format!("{u}:{h}"))
}

/// A line in a format other than bcrypt.
fn other_line() -> impl Strategy<Value = String> {
    let hash = prop_oneof![
        "\\$apr1\\$[./A-Za-z0-9]{8}\\$[./A-Za-z0-9]{22}",
        "\\{SHA\\}[A-Za-z0-9+/]{27}=",
        "[./A-Za-z0-9]{13}",
        "[a-z0-9]{1,20}",
        "\\$1\\$[./A-Za-z0-9]{8}\\$[./A-Za-z0-9]{22}",
        "\\$6\\$[./A-Za-z0-9]{16}\\$[./A-Za-z0-9]{86}",
        // bcrypt-like but wrong: short, bad cost, bad version.
        "\\$2y\\$[0-9]{2}\\$[./A-Za-z0-9]{10,52}",
        "\\$2x\\$10\\$[./A-Za-z0-9]{53}",
        "\\$2y\\$1\\$[./A-Za-z0-9]{53}",
    ];
    (user(), hash).prop_map(|(u, h)| format!("{u}:{h}"))
}

proptest! {
    #![proptest_config(config())]

    /// Files of bcrypt lines parse, with `\n` or `\r\n` line ends.
    #[test]
    fn bcrypt_files_parse(lines in vec(bcrypt_line(), 1..6), crlf in any::<bool>()) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" }) + "\n";
        prop_assert!(parse_ok(&text), "{text:?}");
    }

    /// One line in another format anywhere makes the file refused.
    #[test]
    fn non_bcrypt_lines_are_refused(
        lines in vec(bcrypt_line(), 0..4),
        bad in other_line(),
        at in any::<proptest::sample::Index>(),
    ) {
        let mut lines = lines;
        lines.insert(at.index(lines.len() + 1), bad);
        let text = lines.join("\n") + "\n";
        prop_assert!(!parse_ok(&text), "{text:?}");
    }

    /// Arbitrary and near-valid files never panic.
    #[test]
    fn garbage_never_panics(
        text in prop_oneof![
            text("user:$2y$10$./ABCxyz019\n\r#"),
            bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            mutated(vec(bcrypt_line(), 1..4).prop_map(|l| l.join("\n"))),
        ],
    ) {
        let _ = parse_ok(&text);
    }
}
