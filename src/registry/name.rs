//! Repository names (`library/alpine`, `org/team/image`) as the OCI distribution spec defines them:
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes.
//! Checked by hand (no regex): a name reaches the cache's file paths, so the grammar is the guard.

use std::fmt;
use std::str::FromStr;

/// Longest repository name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A validated repository name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RepoName(
    /// Invariant: matches the spec grammar (so no empty, `.` or `..` component, only
    /// `[a-z0-9._/-]`); at most [`MAX_NAME_LEN`] bytes, plus 8 after [`RepoName::for_docker_hub`].
    String,
);

/// Why a repository name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("repository name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("repository name is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
    },
    /// A `/`-separated component does not match `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
    #[error("invalid repository name component {component:?}")]
    Component {
        /// The offending component (may be empty).
        component: String,
    },
}

impl RepoName {
    /// Parses and validates a repository name.
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: s.len() });
        }
        if let Some(bad) = s.split('/').find(|c| !valid_component(c)) {
            return Err(NameError::Component {
                component: bad.to_owned(),
            });
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as Docker Hub knows it: one-component names live under `library/`
    /// (`alpine` → `library/alpine`); others are returned unchanged.
    pub fn for_docker_hub(&self) -> RepoName {
        if self.0.contains('/') {
            self.clone()
        } else {
            RepoName(format!("library/{}", self.0))
        }
    }

    /// The `/`-separated components, in order (never empty).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<RepoName, NameError> {
        RepoName::parse(s)
    }
}

impl AsRef<str> for RepoName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `.`, `_`, `__` or one or more `-`.
fn valid_separator(sep: &[u8]) -> bool {
    matches!(sep, b"." | b"_" | b"__") || (!sep.is_empty() && sep.iter().all(|b| *b == b'-'))
}

/// One component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if is_alnum(*first) && is_alnum(*last) => {}
        _ => return false,
    }
    // Start of the separator run being read, if any. The last byte is alphanumeric, so every
    // run is closed inside the loop.
    let mut run_start: Option<usize> = None;
    for (i, b) in bytes.iter().enumerate() {
        if is_alnum(*b) {
            if let Some(start) = run_start.take()
                && !bytes.get(start..i).is_some_and(valid_separator)
            {
                return false;
            }
        } else if matches!(b, b'.' | b'_' | b'-') {
            run_start.get_or_insert(i);
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        let long_ok = "a".repeat(255);
        let long_bad = "a".repeat(256);
        let cases: &[(&str, bool)] = &[
            ("alpine", true),
            ("library/alpine", true),
            ("org/team/image", true),
            ("a", true),
            ("0", true),
            ("my-app", true),
            ("my--app", true),
            ("my---app", true),
            ("my.app", true),
            ("my_app", true),
            ("my__app", true),
            ("a.b-c_d__e", true),
            ("a/b/c/d/e/f", true),
            ("a/manifests/blobs", true),
            ("registry.k8s.io/pause", true),
            (&long_ok, true),
            (&long_bad, false),
            ("", false),
            ("Alpine", false),
            ("library/Alpine", false),
            ("my___app", false),
            ("my..app", false),
            ("my.-app", false),
            ("my-.app", false),
            ("my_-app", false),
            ("-app", false),
            ("app-", false),
            (".app", false),
            ("app.", false),
            ("_app", false),
            ("app_", false),
            ("/app", false),
            ("app/", false),
            ("a//b", false),
            ("a/./b", false),
            ("a/../b", false),
            ("..", false),
            (".", false),
            ("a b", false),
            ("a:b", false),
            ("a%2fb", false),
            ("a\\b", false),
            ("é", false),
            ("a\0", false),
        ];
        for (input, ok) in cases {
            let got = RepoName::parse(input);
            assert_eq!(got.is_ok(), *ok, "input {input:?}: {got:?}");
            if let Ok(name) = got {
                assert_eq!(name.as_str(), *input);
                assert_eq!(name.to_string(), *input);
            }
        }
    }

    #[test]
    fn errors_say_what() {
        assert_eq!(RepoName::parse(""), Err(NameError::Empty));
        assert_eq!(
            RepoName::parse(&"a".repeat(300)),
            Err(NameError::TooLong { len: 300 })
        );
        assert_eq!(
            RepoName::parse("ok/Bad/ok"),
            Err(NameError::Component {
                component: "Bad".into()
            })
        );
        assert_eq!(
            RepoName::parse("a//b"),
            Err(NameError::Component {
                component: String::new()
            })
        );
    }

    #[test]
    fn docker_hub_library() {
        let cases = [
            ("alpine", "library/alpine"),
            ("library/alpine", "library/alpine"),
            ("user/app", "user/app"),
            ("a/b/c", "a/b/c"),
        ];
        for (input, want) in cases {
            assert_eq!(
                RepoName::parse(input).unwrap().for_docker_hub().as_str(),
                want
            );
        }
    }

    #[test]
    fn components() {
        let name = RepoName::parse("org/team/image").unwrap();
        assert_eq!(
            name.components().collect::<Vec<_>>(),
            ["org", "team", "image"]
        );
        let one: RepoName = "alpine".parse().unwrap();
        assert_eq!(one.components().collect::<Vec<_>>(), ["alpine"]);
    }

    #[test]
    fn never_panics() {
        let seeds = ["library/alpine", "a.b-c_d__e/f--g", "org/team/image"];
        for input in crate::registry::fuzz::inputs(11, &seeds, "abz09._-/", 5000) {
            if let Ok(name) = RepoName::parse(&input) {
                assert_eq!(name.as_str(), input);
                assert!(input.len() <= MAX_NAME_LEN);
                assert!(
                    name.components()
                        .all(|c| !c.is_empty() && c != "." && c != ".."),
                    "{input:?}"
                );
                assert!(input.bytes().all(|b| is_alnum(b) || b"._-/".contains(&b)));
                assert_eq!(
                    RepoName::parse(name.for_docker_hub().as_str()).is_ok(),
                    name.for_docker_hub().as_str().len() <= MAX_NAME_LEN
                );
            }
        }
    }
}
