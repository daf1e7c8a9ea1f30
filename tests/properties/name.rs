//! `RepoName::parse` against the spec grammar, with the `regex` crate as the oracle.

use std::sync::LazyLock;

use proptest::prelude::*;
use regex::Regex;
use registry_proxy::registry::name::{MAX_NAME_LEN, NameError, RepoName};

use crate::strategies::{config, mutated, name_text, text};

/// The OCI distribution spec's name grammar, verbatim.
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$").unwrap()
});

/// Valid by the spec: the grammar and the length limit.
fn spec_valid(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && NAME.is_match(s)
}

proptest! {
    #![proptest_config(config())]

    /// Names built from the grammar parse to themselves.
    #[test]
    fn valid_names_parse(s in name_text()) {
        let name = RepoName::parse(&s);
        prop_assert!(name.is_ok(), "{s:?}: {name:?}");
        let name = name.unwrap();
        prop_assert_eq!(name.as_str(), s.as_str());
        prop_assert_eq!(name.to_string(), s.clone());
        prop_assert_eq!(s.parse::<RepoName>(), Ok(name.clone()));
        prop_assert_eq!(name.components().collect::<Vec<_>>(), s.split('/').collect::<Vec<_>>());
        // Docker Hub's `library/` form re-validates whenever it fits the limit.
        let hub = name.for_docker_hub();
        if s.contains('/') {
            prop_assert_eq!(&hub, &name);
        } else {
            prop_assert_eq!(hub.as_str(), format!("library/{s}"));
        }
        if hub.as_str().len() <= MAX_NAME_LEN {
            prop_assert_eq!(RepoName::parse(hub.as_str()), Ok(hub.clone()));
        }
    }

    /// Arbitrary and near-valid names: accepted exactly when the spec grammar says so, never a
    /// panic, and the error names the right reason.
    #[test]
    fn accepts_exactly_the_grammar(
        s in prop_oneof![text("abz09._-/"), mutated(name_text())],
    ) {
        let got = RepoName::parse(&s);
        prop_assert_eq!(got.is_ok(), spec_valid(&s), "{:?}: {:?}", s, got);
        match got {
            Ok(name) => {
                prop_assert_eq!(name.as_str(), s.as_str());
                prop_assert!(name.components().all(|c| !c.is_empty() && c != "." && c != ".."));
            }
            Err(NameError::Empty) => prop_assert!(s.is_empty()),
            Err(NameError::TooLong { len }) => {
                prop_assert_eq!(len, s.len());
                prop_assert!(len > MAX_NAME_LEN);
            }
            Err(NameError::Component { component }) => {
                prop_assert!(s.split('/').any(|c| c == component), "{component:?} in {s:?}");
                prop_assert!(!NAME.is_match(&component));
            }
        }
    }
}
