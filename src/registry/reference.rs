//! Manifest references: a tag (`latest`, `1.0`) or a digest (`sha256:…`).

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Longest tag accepted, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// What a manifest request names: a mutable tag or an immutable digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    /// A tag. Invariant: matches `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

/// Why a reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Not a valid tag (and no `:`, so not meant as a digest).
    #[error("invalid tag {tag:?}")]
    Tag {
        /// The rejected tag (cut to 160 characters).
        tag: String,
    },
    /// Has a `:` but is not a valid digest.
    #[error("invalid digest reference: {source}")]
    Digest {
        /// Why the digest was rejected.
        #[from]
        source: DigestError,
    },
}

impl Reference {
    /// Parses a reference: anything with a `:` must be a digest, anything else a tag.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            return Ok(Reference::Digest(Digest::parse(s)?));
        }
        if valid_tag(s) {
            Ok(Reference::Tag(s.to_owned()))
        } else {
            Err(ReferenceError::Tag {
                tag: s.chars().take(160).collect(),
            })
        }
    }

    /// True for a digest reference (immutable: cacheable forever).
    pub fn is_digest(&self) -> bool {
        matches!(self, Reference::Digest(_))
    }

    /// The tag, if this is one.
    pub fn as_tag(&self) -> Option<&str> {
        match self {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }

    /// The digest, if this is one.
    pub fn as_digest(&self) -> Option<&Digest> {
        match self {
            Reference::Tag(_) => None,
            Reference::Digest(d) => Some(d),
        }
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    bytes.len() <= MAX_TAG_LEN
        && (first.is_ascii_alphanumeric() || *first == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => fmt::Display::fmt(d, f),
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_references() {
        let long_ok = "a".repeat(128);
        let long_bad = "a".repeat(129);
        // (input, Some(true) = digest, Some(false) = tag, None = error)
        let cases: &[(&str, Option<bool>)] = &[
            ("latest", Some(false)),
            ("1.0", Some(false)),
            ("v1.2.3-rc.1", Some(false)),
            ("_private", Some(false)),
            ("UPPER_case", Some(false)),
            ("0", Some(false)),
            (&long_ok, Some(false)),
            (D, Some(true)),
            ("blake3:abc", Some(true)),
            (&long_bad, None),
            ("", None),
            (".hidden", None),
            ("-dash", None),
            ("a/b", None),
            ("a b", None),
            ("é", None),
            ("a+b", None),
            ("sha256:short", None),
            (":", None),
            ("latest:", None),
        ];
        for (input, want) in cases {
            let got = Reference::parse(input);
            match (want, &got) {
                (Some(true), Ok(Reference::Digest(d))) => assert_eq!(d.as_str(), *input),
                (Some(false), Ok(Reference::Tag(t))) => assert_eq!(t, input),
                (None, Err(_)) => {}
                _ => panic!("input {input:?}: got {got:?}, want {want:?}"),
            }
            if let Ok(r) = got {
                assert_eq!(r.to_string(), *input);
            }
        }
    }

    #[test]
    fn errors_and_accessors() {
        assert!(matches!(
            Reference::parse("sha256:xyz"),
            Err(ReferenceError::Digest { .. })
        ));
        assert_eq!(
            Reference::parse("-x"),
            Err(ReferenceError::Tag { tag: "-x".into() })
        );
        let tag = Reference::parse("latest").unwrap();
        assert_eq!(tag.as_tag(), Some("latest"));
        assert!(!tag.is_digest());
        assert!(tag.as_digest().is_none());
        let digest: Reference = D.parse().unwrap();
        assert!(digest.is_digest());
        assert_eq!(digest.as_digest().map(|d| d.as_str()), Some(D));
        assert_eq!(digest.as_tag(), None);
    }

    #[test]
    fn never_panics() {
        let seeds = ["latest", "v1.2.3-rc.1", D, "blake3:abc"];
        for input in crate::registry::fuzz::inputs(17, &seeds, "aZ09_.-:", 5000) {
            if let Ok(r) = Reference::parse(&input) {
                assert_eq!(r.to_string(), input);
                assert!(input.is_ascii() && !input.contains('/'));
            }
        }
    }
}
