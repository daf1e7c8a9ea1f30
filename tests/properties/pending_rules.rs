//! PENDING — not declared in `main.rs` yet: enable with `mod pending_rules;` (or rename to
//! `rules.rs`) once `registry_proxy::access::rules` has landed.
//!
//! Expected API (the `[[access]]` globs of DESIGN.md §5, matched against request targets):
//! `Rules::new(..)` builds a rule set from `match` globs (`registry/repository` with `*`; the
//! longest match wins; `"*"` matches everything) and user lists, and `allows(..)` answers
//! whether a user may pull a target. The exact signatures were not settled when this was
//! written: [`allows`] below is the one place that calls them; adapt it, and the properties
//! hold as they are.
//!
//! Properties: never panics on arbitrary globs and targets; `*` matches every target; a glob
//! without `*` matches exactly its own target; `prefix/*` matches what is under the prefix and
//! nothing beside it; the longest matching glob decides.

use proptest::collection::vec;
use proptest::prelude::*;
use registry_proxy::access::rules::Rules;

use crate::strategies::{config, host_like, mutated, name_text, text};

/// ADAPT: builds rules from `(glob, users allowed to pull)` pairs and asks whether `user` may
/// pull `target` (`registry/repository`); `None` if the rules are refused.
fn allows(rules: &[(&str, &[&str])], user: &str, target: &str) -> Option<bool> {
    let rules = Rules::new(rules).ok()?;
    Some(rules.allows(user, target))
}

/// A `registry/repository` target from the grammars.
fn target() -> impl Strategy<Value = String> {
    (host_like(), name_text()).prop_map(|(h, n)| format!("{}/{n}", h.canonical.unwrap_or(h.text)))
}

proptest! {
    #![proptest_config(config())]

    /// `*` matches every target.
    #[test]
    fn star_matches_everything(target in target()) {
        prop_assert_eq!(allows(&[("*", &["alice"])], "alice", &target), Some(true));
        prop_assert_eq!(allows(&[("*", &["alice"])], "bob", &target), Some(false));
    }

    /// A glob without `*` matches its own target and no other.
    #[test]
    fn literal_globs_match_exactly(a in target(), b in target()) {
        prop_assert_eq!(allows(&[(a.as_str(), &["alice"])], "alice", &a), Some(true));
        if a != b {
            prop_assert_eq!(allows(&[(a.as_str(), &["alice"])], "alice", &b), Some(false));
        }
    }

    /// `prefix/*` matches targets under the prefix, not ones that merely start with its text.
    #[test]
    fn prefix_globs(prefix in target(), rest in name_text(), sibling in "[a-z0-9]{1,8}") {
        let glob = format!("{prefix}/*");
        let rules: &[(&str, &[&str])] = &[(glob.as_str(), &["alice"])];
        prop_assert_eq!(allows(rules, "alice", &format!("{prefix}/{rest}")), Some(true));
        prop_assert_eq!(allows(rules, "alice", &format!("{prefix}{sibling}/{rest}")), Some(false));
    }

    /// The longest matching glob decides, in whatever order the rules are written.
    #[test]
    fn longest_match_wins(prefix in target(), rest in name_text(), other in target(), flip in any::<bool>()) {
        let glob = format!("{prefix}/*");
        let mut rules: Vec<(&str, &[&str])> = vec![("*", &["alice"]), (glob.as_str(), &["bob"])];
        if flip {
            rules.reverse();
        }
        let inside = format!("{prefix}/{rest}");
        prop_assert_eq!(allows(&rules, "bob", &inside), Some(true));
        prop_assert_eq!(allows(&rules, "alice", &inside), Some(false));
        if !other.starts_with(&format!("{prefix}/")) {
            prop_assert_eq!(allows(&rules, "alice", &other), Some(true));
            prop_assert_eq!(allows(&rules, "bob", &other), Some(false));
        }
    }

    /// Arbitrary and near-valid globs and targets never panic.
    #[test]
    fn garbage_never_panics(
        globs in vec(prop_oneof![text("*/.:-_az09[]?{}\\"), mutated(target().prop_map(|t| t + "/*"))], 0..4),
        target in prop_oneof![text("*/.:-_az09"), mutated(target())],
    ) {
        let rules: Vec<(&str, &[&str])> = globs.iter().map(|g| (g.as_str(), &["alice"][..])).collect();
        let _ = allows(&rules, "alice", &target);
    }
}
