//! The `PROXY_HTPASSWD` file as `htpasswd -B` writes it: one `user:$2y$NN$…` line per user, blank
//! lines and `#` comments ignored. Only bcrypt is accepted (`$2y$`, `$2b$`, `$2a$`): the older
//! schemes htpasswd can write (MD5 `$apr1$`, `{SHA}`, crypt, plain text) are refused with an error
//! naming the line and the user, never the hash.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Largest htpasswd file accepted, in bytes (about 100 000 users).
pub const MAX_FILE_LEN: usize = 8 << 20;
/// Longest user name accepted, in bytes.
const MAX_USER_LEN: usize = 255;
/// Cost used for the unknown-user decoy when the file is empty (`htpasswd -B`'s default is 5,
/// `-C` raises it).
const DEFAULT_COST: u32 = 10;
/// Salt and hash of a real bcrypt hash (password `registry-proxy-dummy`), verified against when the
/// user is unknown so that the time taken does not tell which users exist.
const DECOY_SALT_AND_HASH: &str = "F4Bjh9lIoUqhAAnhoqWareSBLRc9Cd4B//r4rl7fC8uHlA9MniN7m";

/// A parsed htpasswd file: user → bcrypt hash.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    /// Invariant: every value is a well-formed bcrypt hash (`$2y$`/`$2b$`/`$2a$`, cost 4..=31).
    users: HashMap<String, String>,
    /// A well-formed bcrypt hash with the cost most users have, matching no password anyone knows.
    decoy: String,
}

/// Why an htpasswd file was rejected. Never carries a hash or a password.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the file is more than {MAX_FILE_LEN} bytes long ({len} read)")]
    TooLarge { len: usize },
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    #[error("line {line}: expected user:hash")]
    Malformed { line: usize },
    #[error("line {line}: invalid user name")]
    BadUser { line: usize },
    #[error(
        "line {line}: user {user:?} has a {scheme} hash; only bcrypt is supported (create it with `htpasswd -B`)"
    )]
    UnsupportedScheme {
        line: usize,
        user: String,
        scheme: &'static str,
    },
    #[error("line {line}: user {user:?} has a malformed bcrypt hash")]
    BadHash { line: usize, user: String },
    #[error("line {line}: user {user:?} is listed twice")]
    Duplicate { line: usize, user: String },
}

/// Prints the user names only.
impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("Htpasswd").field("users", &users).finish()
    }
}

impl Htpasswd {
    /// Reads and parses the htpasswd file at `path` (at most [`MAX_FILE_LEN`] bytes are read).
    pub fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let io = |source| HtpasswdError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() > MAX_FILE_LEN {
            return Err(HtpasswdError::TooLarge { len: bytes.len() });
        }
        let text = String::from_utf8(bytes).map_err(|_| HtpasswdError::NotUtf8)?;
        Htpasswd::parse(&text)
    }

    /// Parses the text of an htpasswd file.
    pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
        if text.len() > MAX_FILE_LEN {
            return Err(HtpasswdError::TooLarge { len: text.len() });
        }
        let mut users = HashMap::new();
        let mut costs: HashMap<u32, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = entry.split_once(':') else {
                return Err(HtpasswdError::Malformed { line });
            };
            if user.is_empty()
                || user.len() > MAX_USER_LEN
                || user.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(HtpasswdError::BadUser { line });
            }
            let cost = check_hash(hash).map_err(|scheme| match scheme {
                Some(scheme) => HtpasswdError::UnsupportedScheme {
                    line,
                    user: user.to_owned(),
                    scheme,
                },
                None => HtpasswdError::BadHash {
                    line,
                    user: user.to_owned(),
                },
            })?;
            if users.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(HtpasswdError::Duplicate {
                    line,
                    user: user.to_owned(),
                });
            }
            *costs.entry(cost).or_default() += 1;
        }
        // The most common cost (the higher one on a tie), so an unknown user costs what a known one does.
        let cost = costs
            .iter()
            .max_by_key(|(cost, count)| (**count, **cost))
            .map_or(DEFAULT_COST, |(cost, _)| *cost);
        let decoy = format!("$2y${cost:02}${DECOY_SALT_AND_HASH}");
        Ok(Htpasswd { users, decoy })
    }

    /// True if `user` exists and `password` matches its hash. Runs one bcrypt verification whether
    /// or not the user exists (against a decoy hash of the usual cost when it does not), so the time
    /// taken does not reveal user names. Slow by design (bcrypt): call it off the async threads.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.decoy);
                false
            }
        }
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// True if `user` is in the file.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }
}

/// Parses the text of an htpasswd file (the same as [`Htpasswd::parse`]).
pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
    Htpasswd::parse(text)
}

/// The bcrypt cost of a well-formed `$2y$`/`$2b$`/`$2a$` hash; otherwise `Err(Some(scheme))` for a
/// recognised but unsupported scheme, `Err(None)` for a malformed hash.
fn check_hash(hash: &str) -> Result<u32, Option<&'static str>> {
    let scheme = if hash.starts_with("$apr1$") {
        Some("MD5 ($apr1$)")
    } else if hash.starts_with("{SHA}") {
        Some("SHA-1 ({SHA})")
    } else if hash.starts_with("$1$") {
        Some("MD5-crypt ($1$)")
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        Some("SHA-crypt ($5$/$6$)")
    } else if hash.starts_with("$2x$") {
        Some("legacy bcrypt ($2x$)")
    } else if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        None
    } else if hash.len() == 13
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        Some("crypt")
    } else {
        Some("non-bcrypt or plain-text")
    };
    if let Some(scheme) = scheme {
        return Err(Some(scheme));
    }
    // Two digits, as every bcrypt writer puts them (`str::parse` alone would take `+5`).
    if !hash
        .get(4..6)
        .is_some_and(|cost| cost.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(None);
    }
    let parts = bcrypt::HashParts::from_str(hash).map_err(|_| None)?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(None);
    }
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `htpasswd -Bbn USER PASSWORD` (apache2-utils, cost 5).
    const ALICE: &str = "alice:$2y$05$ot2yBkQ1mShpCZWpts1jN.22t4R8gJXF5TCSA1lP0O/jFrCWkqIyq"; // wonderland
    const BOB: &str = "bob:$2y$05$/cOXSfSED1DKn9szgwyfU.g9sWBIAVXXrgOIRQ8ZBqIIYQQJmqxdK"; // "b:o:b pass"
    const CAROL: &str = "carol:$2y$05$pGyUm5soW0kG9Wow5ASG8eDmNsD4cDT5cy1XIE0ALgaNsZb1cmNVu"; // c
    // `htpasswd -mbn` / `-sbn` / `-dbn` (password x) and `-pbn` (plain text).
    const MD5: &str = "mallory:$apr1$xDw3lK5a$SfQjmUAe4DiU/Ebk4O/Qj1";
    const SHA: &str = "sha:{SHA}EfatjsUqKYSrqv18O1FlA3hcIHI=";
    const CRYPT: &str = "crypt:a1iGXyH5hmQvU";
    const PLAIN: &str = "plain:s3cretpass";

    #[test]
    fn verifies_htpasswd_b_output() {
        let text = format!(
            "# proxy users\n\n{ALICE}\n   \n{BOB}\r\n  # carol below\n{}\n",
            CAROL.replace("$2y$", "$2b$")
        );
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 3);
        assert!(!users.is_empty());
        let cases = [
            ("alice", "wonderland", true),
            ("alice", "Wonderland", false),
            ("alice", "wonderland ", false),
            ("alice", "", false),
            ("bob", "b:o:b pass", true),
            ("bob", "b:o:b", false),
            ("carol", "c", true),
            ("carol", "wonderland", false),
            // Unknown users never pass, whatever the password.
            ("dave", "wonderland", false),
            ("dummy", "registry-proxy-dummy", false),
            ("Alice", "wonderland", false),
            ("", "", false),
        ];
        for (user, password, ok) in cases {
            assert_eq!(users.verify(user, password), ok, "{user}:{password}");
        }
        // `$2a$` is the same algorithm.
        let users = Htpasswd::parse(&ALICE.replace("$2y$", "$2a$")).unwrap();
        assert!(users.verify("alice", "wonderland"));
        assert!(Htpasswd::parse("").unwrap().is_empty());
    }

    #[test]
    fn decoy_has_the_usual_cost() {
        let users = Htpasswd::parse(&format!("{ALICE}\n{BOB}")).unwrap();
        assert!(users.decoy.starts_with("$2y$05$"), "{}", users.decoy);
        assert_eq!(check_hash(&users.decoy), Ok(5));
        assert_eq!(
            Htpasswd::parse("").unwrap().decoy,
            format!("$2y$10${DECOY_SALT_AND_HASH}")
        );
        // The decoy is a verifiable hash, so the unknown-user path really runs bcrypt.
        assert!(bcrypt::verify("registry-proxy-dummy", &users.decoy).unwrap());
    }

    #[test]
    fn unknown_users_cost_a_bcrypt_run() {
        let users = Htpasswd::parse(&format!("{ALICE}\n{BOB}")).unwrap();
        // The fastest of a few runs: load on the machine only makes runs slower.
        let fastest = |user: &str| {
            (0..3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    assert!(!users.verify(user, "not the password"));
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let known = fastest("alice");
        let unknown = fastest("mallory");
        assert!(unknown * 4 >= known, "unknown {unknown:?}, known {known:?}");
    }

    #[test]
    fn rejects_other_schemes_without_showing_the_hash() {
        let cases = [
            (MD5, "mallory", "MD5"),
            (SHA, "sha", "SHA-1"),
            (CRYPT, "crypt", "crypt"),
            (PLAIN, "plain", "plain-text"),
            (
                "old:$2x$05$ot2yBkQ1mShpCZWpts1jN.22t4R8gJXF5TCSA1lP0O/jFrCWkqIyq",
                "old",
                "$2x$",
            ),
            ("sha512:$6$salt$abcdef", "sha512", "SHA-crypt"),
        ];
        for (entry, user, scheme) in cases {
            let hash = entry.split_once(':').unwrap().1;
            let text = format!("{ALICE}\n# comment\n{entry}\n");
            let e = Htpasswd::parse(&text).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(
                shown.contains("line 3")
                    && shown.contains(&format!("{user:?}"))
                    && shown.contains(scheme),
                "{shown}"
            );
            assert!(!shown.contains(hash), "{shown}");
            assert!(shown.contains("htpasswd -B"), "{shown}");
        }
    }

    #[test]
    fn rejects_malformed_files() {
        let alice_hash = ALICE.split_once(':').unwrap().1;
        let cases: Vec<(String, &str)> = vec![
            ("alice".into(), "line 1: expected user:hash"),
            (
                format!("{ALICE}\n{ALICE}"),
                "line 2: user \"alice\" is listed twice",
            ),
            (format!(":{alice_hash}"), "line 1: invalid user name"),
            (format!("al ice:{alice_hash}"), "line 1: invalid user name"),
            (
                format!("{}:{alice_hash}", "u".repeat(256)),
                "line 1: invalid user name",
            ),
            (
                format!("{}x", ALICE),
                "line 1: user \"alice\" has a malformed bcrypt hash",
            ),
            (ALICE.replace("$05$", "$99$"), "malformed bcrypt hash"),
            (ALICE.replace("$05$", "$03$"), "malformed bcrypt hash"),
            (ALICE.replace("$05$", "$xx$"), "malformed bcrypt hash"),
            (ALICE.replace("$05$", "$+5$"), "malformed bcrypt hash"),
            (ALICE.replace('o', "é"), "malformed bcrypt hash"),
            ("alice:$2y$".into(), "malformed bcrypt hash"),
        ];
        for (text, want) in cases {
            let e = Htpasswd::parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains(alice_hash), "{e}");
        }
        let huge = "#".repeat(MAX_FILE_LEN + 1);
        assert!(matches!(
            Htpasswd::parse(&huge),
            Err(HtpasswdError::TooLarge { .. })
        ));
    }

    #[test]
    fn debug_shows_users_not_hashes() {
        let users = Htpasswd::parse(&format!("{ALICE}\n{BOB}")).unwrap();
        let shown = format!("{users:?}");
        assert!(shown.contains("alice") && shown.contains("bob"), "{shown}");
        assert!(!shown.contains("$2y$"), "{shown}");
    }

    #[test]
    fn never_panics() {
        let seeds = [ALICE, BOB, MD5, SHA, CRYPT, PLAIN, "# c", ""];
        for input in crate::registry::fuzz::inputs(23, &seeds, "ab$2y05./:#{}", 3000) {
            if let Ok(users) = Htpasswd::parse(&input) {
                for user in users.users.keys() {
                    assert!(!user.is_empty() && !user.contains(':'));
                }
            }
        }
    }
}
