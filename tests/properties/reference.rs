//! `Reference::parse` and `valid_tag`: a tag by its grammar, anything with a `:` as a digest.

use std::sync::LazyLock;

use proptest::prelude::*;
use regex::Regex;
use registry_proxy::registry::digest::Digest;
use registry_proxy::registry::reference::{Reference, ReferenceError, valid_tag};

use crate::strategies::{config, digest_text, mutated, tag_text, text};

/// The distribution spec's tag grammar.
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").unwrap());

proptest! {
    #![proptest_config(config())]

    /// Tags built from the grammar parse as tags, digests as digests, both to themselves.
    #[test]
    fn valid_references_parse(tag in tag_text(), digest in digest_text()) {
        prop_assert!(valid_tag(&tag));
        prop_assert_eq!(Reference::parse(&tag), Ok(Reference::Tag(tag.clone())));
        let d = Digest::parse(&digest).unwrap();
        prop_assert_eq!(Reference::parse(&digest), Ok(Reference::Digest(d)));
        for s in [&tag, &digest] {
            let r: Reference = s.parse().unwrap();
            prop_assert_eq!(&r.to_string(), s);
        }
    }

    /// Arbitrary and near-valid references: a tag exactly when the grammar says so, a digest
    /// exactly when `Digest::parse` takes it, never a panic.
    #[test]
    fn accepts_exactly_the_grammar(
        s in prop_oneof![
            text("aZ09_.-:"),
            mutated(tag_text()),
            mutated(digest_text()),
        ],
    ) {
        prop_assert_eq!(valid_tag(&s), TAG.is_match(&s), "{:?}", s);
        let got = Reference::parse(&s);
        if s.contains(':') {
            match (&got, Digest::parse(&s)) {
                (Ok(Reference::Digest(d)), Ok(want)) => prop_assert_eq!(d, &want),
                (Err(ReferenceError::Digest { source }), Err(want)) => {
                    prop_assert_eq!(source, &want);
                }
                (got, want) => prop_assert!(false, "{s:?}: {got:?}, digest {want:?}"),
            }
        } else {
            match &got {
                Ok(Reference::Tag(t)) => {
                    prop_assert!(TAG.is_match(&s));
                    prop_assert_eq!(t, &s);
                }
                Err(ReferenceError::Tag { tag }) => {
                    prop_assert!(!TAG.is_match(&s));
                    prop_assert!(tag.chars().count() <= 160 && s.starts_with(tag.as_str()));
                }
                other => prop_assert!(false, "{s:?}: {other:?}"),
            }
        }
        if let Ok(r) = got {
            prop_assert_eq!(r.to_string(), s.clone());
            prop_assert!(s.is_ascii() && !s.contains('/'));
        }
    }
}
