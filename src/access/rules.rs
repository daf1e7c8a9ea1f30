//! Per-repository access rules: the TOML file's `[groups]` and `[[access]]` tables.
//!
//! ```toml
//! [groups]
//! ci = ["builder1", "builder2"]
//!
//! [[access]]
//! match = "quay.io/team/*"   # "<registry>/<repository glob>"; "*" alone matches everything
//! pull  = ["alice", "@ci"]   # "*" = any authenticated user, "anonymous" = anyone at all
//! fetch = ["alice"]
//! push  = []
//! ```
//!
//! A request is matched as `<registry>/<repository>`: the registry as [`RegistryHost`] prints it
//! (`docker.io` for Docker Hub, `host:port` when a port other than 443 is set) and the full
//! repository name (`library/alpine` on Docker Hub). In patterns `*` matches any run of characters,
//! `/` included, and `?` one character other than `/`; everything else is literal and
//! case-sensitive, except the registry part, which is lower-cased. The matching entry with the most
//! literal characters wins (ties: the earlier entry). `fetch` implies `pull`; `push` implies nothing.
//! With no `[[access]]` entry, everyone may do everything when client authentication is off, and
//! every authenticated user when it is on; with entries, a request no entry matches is denied.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::identity::Identity;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;

/// What a client wants to do with a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read what is cached.
    Pull,
    /// Make the proxy go upstream for what is not cached (implies [`Action::Pull`]).
    Fetch,
    /// Write through to upstream (also gated by `ALLOW_PUSH`).
    Push,
}

/// One `[[access]]` table as written in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRule {
    /// `match`: `<registry>/<repository glob>`, or `*`.
    pub pattern: String,
    pub pull: Vec<String>,
    pub fetch: Vec<String>,
    pub push: Vec<String>,
}

/// Why the access rules were rejected. `index` counts `[[access]]` entries from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("[[access]] entry {index}: `match` is empty (use \"*\" to match everything)")]
    EmptyMatch { index: usize },
    #[error("[[access]] entry {index}: match {pattern:?}: {reason}")]
    Pattern {
        index: usize,
        pattern: String,
        reason: String,
    },
    #[error("[[access]] entry {index}: {list} names the unknown group @{group}")]
    UnknownGroup {
        index: usize,
        list: &'static str,
        group: String,
    },
    #[error("[[access]] entry {index}: {list} has an invalid name {name:?}")]
    BadName {
        index: usize,
        list: &'static str,
        name: String,
    },
    #[error(
        "[groups] {group:?}: invalid member {member:?} (groups hold user names, \"*\" or \"anonymous\"; no nested groups)"
    )]
    BadMember { group: String, member: String },
    #[error("[groups]: invalid group name {group:?}")]
    BadGroupName { group: String },
}

/// Who an entry's list lets in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Principals {
    /// `anonymous`: everyone, authenticated or not.
    everyone: bool,
    /// `*`: every authenticated user.
    any_user: bool,
    users: BTreeSet<String>,
}

impl Principals {
    fn admits(&self, who: &Identity) -> bool {
        match who {
            Identity::Anonymous => self.everyone,
            Identity::User(name) => self.everyone || self.any_user || self.users.contains(name),
        }
    }

    fn union(&self, other: &Principals) -> Principals {
        Principals {
            everyone: self.everyone || other.everyone,
            any_user: self.any_user || other.any_user,
            users: self.users.union(&other.users).cloned().collect(),
        }
    }
}

/// A compiled `[[access]]` entry.
#[derive(Clone, Debug)]
struct Entry {
    /// Invariant: only the characters [`valid_pattern_char`] accepts; registry part lower-case and,
    /// when glob-free, in [`RegistryHost`]'s canonical form.
    pattern: String,
    /// Characters other than `*` and `?` in `pattern`: the precedence.
    literal: usize,
    /// `pull` ∪ `fetch`.
    pull: Principals,
    fetch: Principals,
    push: Principals,
}

/// The access rules in force.
#[derive(Clone, Debug)]
pub struct Rules {
    entries: Vec<Entry>,
    /// Client authentication is configured (`PROXY_HTPASSWD` or `TLS_CLIENT_CA_FILE`).
    auth_on: bool,
}

impl Default for Rules {
    /// No entries, client authentication off: everyone may do everything.
    fn default() -> Rules {
        Rules {
            entries: Vec::new(),
            auth_on: false,
        }
    }
}

fn valid_pattern_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '[' | ']' | '/' | '*' | '?')
}

/// A user name as htpasswd or a certificate CN can carry it: 1 to 255 bytes, no control
/// characters, no leading or trailing blanks (a CN such as `Jane Doe` has inner spaces).
fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.trim() == name
        && !name.chars().any(char::is_control)
}

/// `pattern` in canonical form, or why it is unusable.
fn normalize_pattern(pattern: &str) -> Result<String, String> {
    if pattern == "*" {
        return Ok(pattern.to_owned());
    }
    if let Some(c) = pattern.chars().find(|c| !valid_pattern_char(*c)) {
        return Err(format!(
            "invalid character {c:?} (patterns use registry and repository name characters, * and ?)"
        ));
    }
    let Some((registry, repo)) = pattern.split_once('/') else {
        if pattern.contains('*') {
            return Ok(pattern.to_ascii_lowercase());
        }
        return Err(
            "expected <registry>/<repository glob>, e.g. \"quay.io/team/*\" or \"docker.io/library/alpine\""
                .to_owned(),
        );
    };
    if repo.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository names are lower case".to_owned());
    }
    let registry = registry.to_ascii_lowercase();
    if registry.contains(['*', '?']) {
        return Ok(format!("{registry}/{repo}"));
    }
    let host = RegistryHost::parse(&registry).map_err(|e| e.to_string())?;
    // `docker.io/alpine` means what `docker pull alpine` pulls.
    let repo = if host.is_docker_hub() && !repo.contains(['/', '*']) {
        Cow::Owned(format!("library/{repo}"))
    } else {
        Cow::Borrowed(repo)
    };
    Ok(format!("{host}/{repo}"))
}

/// `*` matches any run of bytes (`/` included), `?` one byte other than `/`, anything else itself.
pub(crate) fn glob_matches(pattern: &[u8], subject: &[u8]) -> bool {
    let (mut p, mut s) = (0, 0);
    // The last `*` seen and the subject position it is currently made to match up to.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = subject.get(s) {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, s));
                p += 1;
            }
            Some(b'?') if c != b'/' => {
                p += 1;
                s += 1;
            }
            Some(&literal) if literal != b'?' && literal == c => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((star_p, star_s)) => {
                    p = star_p + 1;
                    s = star_s + 1;
                    star = Some((star_p, star_s + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|c| *c == b'*'))
}

impl Rules {
    /// Compiles the `[[access]]` entries (in file order) with the `[groups]` they refer to.
    /// `auth_on`: client authentication is configured, which decides the defaults.
    pub fn new(
        entries: Vec<AccessRule>,
        groups: BTreeMap<String, Vec<String>>,
        auth_on: bool,
    ) -> Result<Rules, RulesError> {
        let mut resolved: BTreeMap<String, Principals> = BTreeMap::new();
        for (group, members) in &groups {
            if !valid_user_name(group) || group.starts_with('@') {
                return Err(RulesError::BadGroupName {
                    group: group.clone(),
                });
            }
            let mut principals = Principals::default();
            for member in members {
                if member.starts_with('@') || !add_principal(&mut principals, member) {
                    return Err(RulesError::BadMember {
                        group: group.clone(),
                        member: member.clone(),
                    });
                }
            }
            resolved.insert(group.clone(), principals);
        }

        let mut compiled = Vec::with_capacity(entries.len());
        for (i, rule) in entries.iter().enumerate() {
            let index = i + 1;
            if rule.pattern.trim().is_empty() {
                return Err(RulesError::EmptyMatch { index });
            }
            let pattern =
                normalize_pattern(&rule.pattern).map_err(|reason| RulesError::Pattern {
                    index,
                    pattern: rule.pattern.clone(),
                    reason,
                })?;
            let list = |list: &'static str, names: &[String]| -> Result<Principals, RulesError> {
                let mut principals = Principals::default();
                for name in names {
                    if let Some(group) = name.strip_prefix('@') {
                        let members =
                            resolved
                                .get(group)
                                .ok_or_else(|| RulesError::UnknownGroup {
                                    index,
                                    list,
                                    group: group.to_owned(),
                                })?;
                        principals = principals.union(members);
                    } else if !add_principal(&mut principals, name) {
                        return Err(RulesError::BadName {
                            index,
                            list,
                            name: name.clone(),
                        });
                    }
                }
                Ok(principals)
            };
            let pull = list("pull", &rule.pull)?;
            let fetch = list("fetch", &rule.fetch)?;
            let push = list("push", &rule.push)?;
            compiled.push(Entry {
                literal: pattern.chars().filter(|c| !matches!(c, '*' | '?')).count(),
                pattern,
                pull: pull.union(&fetch),
                fetch,
                push,
            });
        }
        Ok(Rules {
            entries: compiled,
            auth_on,
        })
    }

    /// True if there are no `[[access]]` entries (the defaults apply).
    pub fn is_default(&self) -> bool {
        self.entries.is_empty()
    }

    /// May `who` do `action` on `registry`'s repository `repo`?
    pub fn allows(
        &self,
        who: &Identity,
        action: Action,
        registry: &RegistryHost,
        repo: &RepoName,
    ) -> bool {
        if self.entries.is_empty() {
            return !self.auth_on || matches!(who, Identity::User(_));
        }
        let repo = if registry.is_docker_hub() {
            Cow::Owned(repo.for_docker_hub())
        } else {
            Cow::Borrowed(repo)
        };
        let subject = format!("{registry}/{repo}");
        let mut best: Option<&Entry> = None;
        for entry in &self.entries {
            if best.is_some_and(|b| b.literal >= entry.literal) {
                continue;
            }
            if glob_matches(entry.pattern.as_bytes(), subject.as_bytes()) {
                best = Some(entry);
            }
        }
        let Some(entry) = best else {
            return false;
        };
        match action {
            Action::Pull => entry.pull.admits(who),
            Action::Fetch => entry.fetch.admits(who),
            Action::Push => entry.push.admits(who),
        }
    }

    /// May `who` know that `repo` exists (for filtering `_catalog` and tag lists)? The same as
    /// [`Action::Pull`].
    pub fn may_see_repo(&self, who: &Identity, registry: &RegistryHost, repo: &RepoName) -> bool {
        self.allows(who, Action::Pull, registry, repo)
    }
}

/// Adds `anonymous`, `*` or a user name; false if `name` is none of them.
fn add_principal(principals: &mut Principals, name: &str) -> bool {
    match name {
        "anonymous" => principals.everyone = true,
        "*" => principals.any_user = true,
        user if valid_user_name(user) && !user.starts_with('@') => {
            principals.users.insert(user.to_owned());
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests;
