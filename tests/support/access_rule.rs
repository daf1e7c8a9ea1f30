//! `rule(pattern, pull, fetch, push)`: an access rule of the config file built in one line, shared
//! by the unit tests of `access::rules` and the property tests of the rules. The including module
//! has `AccessRule` in scope.

use super::AccessRule;

/// The rule for `pattern` naming the users or groups that may pull, fetch and push.
pub(crate) fn rule(pattern: &str, pull: &[&str], fetch: &[&str], push: &[&str]) -> AccessRule {
    let owned = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
    AccessRule {
        pattern: pattern.to_owned(),
        pull: owned(pull),
        fetch: owned(fetch),
        push: owned(push),
    }
}
