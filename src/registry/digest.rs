//! Content digests (`sha256:<64 hex>`), as the OCI image spec defines them:
//! `algorithm ":" encoded`, algorithm `[a-z0-9]+([+._-][a-z0-9]+)*`, encoded `[a-zA-Z0-9=_-]+`.
//! The registered algorithms are checked strictly: `sha256` needs exactly 64 lower-case hex
//! digits, `sha512` 128. Other algorithms parse if they match the grammar; callers check
//! [`Digest::is_sha256`] before trusting the cache with one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A validated digest such as `sha256:e3b0c442…`. Serialized as its string form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(
    /// Invariant: `algorithm:encoded` matching the grammar above, exactly one `:` (the encoded
    /// part's alphabet has none); lower-case hex of the right length for sha256/sha512.
    String,
);

/// Why a digest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// There is no `:` between algorithm and encoded part.
    #[error("digest has no ':' between algorithm and hash")]
    MissingSeparator,
    /// The algorithm does not match `[a-z0-9]+([+._-][a-z0-9]+)*`.
    #[error("invalid digest algorithm {algorithm:?}")]
    InvalidAlgorithm {
        /// The algorithm part (cut to 64 characters).
        algorithm: String,
    },
    /// The encoded part is empty or has characters outside its alphabet (lower-case hex for
    /// sha256/sha512, `[a-zA-Z0-9=_-]` otherwise).
    #[error("invalid characters in {algorithm} digest")]
    InvalidEncoding {
        /// The algorithm (valid).
        algorithm: String,
    },
    /// A sha256/sha512 digest with the wrong number of hex digits.
    #[error("{algorithm} digest has {actual} hex digits, expected {expected}")]
    WrongLength {
        /// The algorithm (`sha256` or `sha512`).
        algorithm: String,
        /// Required number of hex digits.
        expected: usize,
        /// Number of hex digits given.
        actual: usize,
    },
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Digest {
    /// Parses and validates a digest.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::MissingSeparator)?;
        if !valid_algorithm(algorithm) {
            return Err(DigestError::InvalidAlgorithm {
                algorithm: algorithm.chars().take(64).collect(),
            });
        }
        let expected = match algorithm {
            "sha256" => Some(64),
            "sha512" => Some(128),
            _ => None,
        };
        let charset_ok = match expected {
            Some(_) => encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            None => encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-')),
        };
        if encoded.is_empty() || !charset_ok {
            return Err(DigestError::InvalidEncoding {
                algorithm: algorithm.to_owned(),
            });
        }
        if let Some(expected) = expected
            && encoded.len() != expected
        {
            return Err(DigestError::WrongLength {
                algorithm: algorithm.to_owned(),
                expected,
                actual: encoded.len(),
            });
        }
        Ok(Digest(s.to_owned()))
    }

    /// The sha256 digest of a 32-byte hash value.
    pub fn from_sha256(bytes: &[u8; 32]) -> Digest {
        let mut s = String::with_capacity(7 + 64);
        s.push_str("sha256:");
        for b in bytes {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Digest(s)
    }

    /// The sha256 digest of `data` (computed with `ring`).
    pub fn sha256_of(data: &[u8]) -> Digest {
        let hash = ring::digest::digest(&ring::digest::SHA256, data);
        let mut bytes = [0u8; 32];
        for (out, b) in bytes.iter_mut().zip(hash.as_ref()) {
            *out = *b;
        }
        Digest::from_sha256(&bytes)
    }

    /// The digest a finished `ring` SHA-256 computation gives; `None` for any other algorithm's
    /// output (not 32 bytes).
    pub fn from_ring(hash: &ring::digest::Digest) -> Option<Digest> {
        <&[u8; 32]>::try_from(hash.as_ref())
            .ok()
            .map(Digest::from_sha256)
    }

    /// The algorithm, e.g. `sha256`.
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    /// The encoded hash, e.g. the 64 hex digits of a sha256 digest.
    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, e)| e)
    }

    /// True for a (valid) sha256 digest, the only kind the cache stores.
    pub fn is_sha256(&self) -> bool {
        self.algorithm() == "sha256"
    }

    /// The whole digest, `algorithm:encoded`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`.
fn valid_algorithm(a: &str) -> bool {
    let mut prev_sep = true; // at the start a separator is as bad as after one
    for b in a.bytes() {
        let sep = matches!(b, b'+' | b'.' | b'_' | b'-');
        if sep && prev_sep {
            return false;
        }
        if !(sep || b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return false;
        }
        prev_sep = sep;
    }
    !prev_sep
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(s: String) -> Result<Digest, DigestError> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_digests() {
        let hex64 = "a".repeat(64);
        let hex128 = "0123456789abcdef".repeat(8);
        let ok = |s: String| (s, true);
        let bad = |s: String| (s, false);
        let cases: Vec<(String, bool)> = vec![
            ok(EMPTY_SHA256.into()),
            ok(format!("sha256:{hex64}")),
            ok(format!("sha512:{hex128}")),
            ok("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8".into()),
            ok("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564".into()),
            ok("blake3:abc=".into()),
            ok("a.b_c-d+e:X".into()),
            bad(format!("sha256:{}", "a".repeat(63))),
            bad(format!("sha256:{}", "a".repeat(65))),
            bad(format!("sha256:{}", "A".repeat(64))),
            bad(format!("sha256:{}g", "a".repeat(63))),
            bad(format!("sha512:{hex64}")),
            bad(format!("SHA256:{hex64}")),
            bad(format!("sha256::{hex64}")),
            bad(hex64.clone()),
            bad("".into()),
            bad(":".into()),
            bad("sha256:".into()),
            bad(":abc".into()),
            bad("-sha:abc".into()),
            bad("sha-:abc".into()),
            bad("sh..a:abc".into()),
            bad("sh+-a:abc".into()),
            bad("blake3:ab/c".into()),
            bad("blake3:ab:c".into()),
            bad("blake3:ab.c".into()),
            bad("blake3:é".into()),
        ];
        for (input, ok) in &cases {
            let got = Digest::parse(input);
            assert_eq!(got.is_ok(), *ok, "input {input:?}: {got:?}");
            if let Ok(d) = got {
                assert_eq!(d.to_string(), *input);
                assert_eq!(format!("{}:{}", d.algorithm(), d.encoded()), *input);
            }
        }
    }

    #[test]
    fn errors_say_what() {
        assert_eq!(Digest::parse("nocolon"), Err(DigestError::MissingSeparator));
        assert_eq!(
            Digest::parse("Sha256:ab"),
            Err(DigestError::InvalidAlgorithm {
                algorithm: "Sha256".into()
            })
        );
        assert_eq!(
            Digest::parse("sha256:xyz"),
            Err(DigestError::InvalidEncoding {
                algorithm: "sha256".into()
            })
        );
        assert_eq!(
            Digest::parse("sha256:abc"),
            Err(DigestError::WrongLength {
                algorithm: "sha256".into(),
                expected: 64,
                actual: 3
            })
        );
    }

    #[test]
    fn accessors() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.encoded().len(), 64);
        assert!(d.is_sha256());
        assert_eq!(d.as_str(), EMPTY_SHA256);
        let other = Digest::parse("blake3:abc").unwrap();
        assert!(!other.is_sha256());
        assert_eq!(other.algorithm(), "blake3");
        assert_eq!(other.encoded(), "abc");
    }

    #[test]
    fn computes_sha256() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY_SHA256);
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x0f;
        let d = Digest::from_sha256(&bytes);
        assert_eq!(d.encoded(), format!("ab{}0f", "0".repeat(60)));
        assert_eq!(Digest::parse(d.as_str()), Ok(d));
    }

    #[test]
    fn serde_as_string() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:short\"").is_err());
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn never_panics() {
        let seeds = [EMPTY_SHA256, "blake3:abc=", "a.b_c-d+e:X_-="];
        for input in crate::registry::fuzz::inputs(13, &seeds, "sha256:0123456789abcdef", 5000) {
            if let Ok(d) = Digest::parse(&input) {
                assert_eq!(d.as_str(), input);
                assert_eq!(Digest::parse(d.as_str()).as_ref(), Ok(&d));
                assert!(input.is_ascii());
                if d.is_sha256() {
                    assert_eq!(d.encoded().len(), 64);
                }
            }
        }
    }
}
