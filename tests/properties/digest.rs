//! `Digest::parse` against the OCI image spec grammar, with the `regex` crate as the oracle, and
//! the digests the proxy computes itself.

use std::sync::LazyLock;

use proptest::prelude::*;
use regex::Regex;
use registry_proxy::registry::digest::{Digest, DigestError};

use crate::strategies::{bytes, config, digest_text, mutated, text};

static ALGORITHM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+([+._-][a-z0-9]+)*$").unwrap());
static ENCODED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9=_-]+$").unwrap());
static SHA256: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-f0-9]{64}$").unwrap());
static SHA512: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-f0-9]{128}$").unwrap());

/// Valid by the spec: `algorithm ":" encoded`, with the registered algorithms' encodings.
fn spec_valid(s: &str) -> bool {
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return false;
    };
    ALGORITHM.is_match(algorithm)
        && match algorithm {
            "sha256" => SHA256.is_match(encoded),
            "sha512" => SHA512.is_match(encoded),
            _ => ENCODED.is_match(encoded),
        }
}

proptest! {
    #![proptest_config(config())]

    /// Digests built from the grammar parse to themselves, split into their parts, and survive
    /// the serde string form.
    #[test]
    fn valid_digests_parse(s in digest_text()) {
        let d = Digest::parse(&s);
        prop_assert!(d.is_ok(), "{s:?}: {d:?}");
        let d = d.unwrap();
        prop_assert_eq!(d.as_str(), s.as_str());
        prop_assert_eq!(format!("{}:{}", d.algorithm(), d.encoded()), s.clone());
        prop_assert_eq!(d.is_sha256(), s.starts_with("sha256:"));
        let json = serde_json::to_string(&d).unwrap();
        prop_assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    /// Arbitrary and near-valid digests: accepted exactly when the grammar says so; a parsed
    /// digest's hex length matches its algorithm.
    #[test]
    fn accepts_exactly_the_grammar(
        s in prop_oneof![text("sha256:0123456789abcdef+._-="), mutated(digest_text())],
    ) {
        let got = Digest::parse(&s);
        prop_assert_eq!(got.is_ok(), spec_valid(&s), "{:?}: {:?}", s, got);
        match got {
            Ok(d) => {
                prop_assert_eq!(d.as_str(), s.as_str());
                match d.algorithm() {
                    "sha256" => prop_assert_eq!(d.encoded().len(), 64),
                    "sha512" => prop_assert_eq!(d.encoded().len(), 128),
                    _ => {}
                }
            }
            Err(DigestError::MissingSeparator) => prop_assert!(!s.contains(':')),
            Err(DigestError::WrongLength { expected, actual, .. }) => {
                prop_assert_ne!(expected, actual);
            }
            Err(_) => {}
        }
        // The serde form refuses exactly what `parse` refuses.
        let json = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(serde_json::from_str::<Digest>(&json).is_ok(), spec_valid(&s));
    }

    /// The digests the proxy computes are valid sha256 digests.
    #[test]
    fn computed_digests_are_valid(data in bytes(), raw in any::<[u8; 32]>()) {
        for d in [Digest::sha256_of(&data), Digest::from_sha256(&raw)] {
            prop_assert!(d.is_sha256());
            prop_assert_eq!(Digest::parse(d.as_str()), Ok(d.clone()));
        }
    }
}
