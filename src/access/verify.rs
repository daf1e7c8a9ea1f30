//! What upstream said about a credential and a repository, remembered for `AUTH_CACHE_TTL`.
//!
//! For registries in `verify` mode a cached private object goes only to a client whose own
//! credential upstream accepted for that repository. Asking upstream (an authenticated `HEAD`) on
//! every hit would make hits as slow as misses, so each answer is kept per (credential hash,
//! registry, repository): fresh answers decide on their own; older ones are kept as a fallback for
//! when upstream cannot be asked (it is down and the proxy serves stale), so an outage does not
//! lock out a user upstream accepted before. The anonymous "credential" stands for the question
//! "is this repository public?".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;

/// Answers kept at most; beyond it the oldest quarter goes.
const MAX_ANSWERS: usize = 65_536;

/// A credential as the verifier knows it: a SHA-256 of what the client presented, or anonymous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    Anonymous,
    Credential([u8; 32]),
}

impl Principal {
    /// The principal for a credential's bytes (`user:password`, or a raw header value).
    pub fn of(secret: &[u8]) -> Principal {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        Principal::Credential(hash)
    }
}

/// What is known about a principal and a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Upstream answered within the TTL: `true` = accepted.
    Fresh(bool),
    /// Upstream answered, longer ago than the TTL; only good when upstream cannot be asked.
    Stale(bool),
    /// Never asked.
    Unknown,
}

#[derive(Clone, Copy)]
struct Answer {
    accepted: bool,
    at: Instant,
}

type Key = (Principal, RegistryHost, RepoName);

/// The remembered answers. One per proxy.
pub struct Verifier {
    ttl: Duration,
    /// Invariant: at most `MAX_ANSWERS` entries.
    answers: Mutex<HashMap<Key, Answer>>,
}

impl Verifier {
    pub fn new(ttl: Duration) -> Verifier {
        Verifier {
            ttl,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// What is known about `who` reading `repo` of `registry`.
    pub fn known(&self, who: Principal, registry: &RegistryHost, repo: &RepoName) -> Known {
        let answers = lock(&self.answers);
        match answers.get(&(who, registry.clone(), repo.clone())) {
            None => Known::Unknown,
            Some(a) if a.at.elapsed() < self.ttl => Known::Fresh(a.accepted),
            Some(a) => Known::Stale(a.accepted),
        }
    }

    /// Records upstream's answer.
    pub fn record(&self, who: Principal, registry: &RegistryHost, repo: &RepoName, accepted: bool) {
        let mut answers = lock(&self.answers);
        if answers.len() >= MAX_ANSWERS {
            let mut ages: Vec<Instant> = answers.values().map(|a| a.at).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 4];
            answers.retain(|_, a| a.at > cutoff);
        }
        answers.insert(
            (who, registry.clone(), repo.clone()),
            Answer {
                accepted,
                at: Instant::now(),
            },
        );
    }

    /// Number of answers held (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.answers).len()
    }

    /// True if no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn answers_go_stale_after_the_ttl() {
        let v = Verifier::new(Duration::from_secs(300));
        let hub = RegistryHost::docker_hub();
        let alice = Principal::of(b"alice:pw");
        assert_eq!(v.known(alice, &hub, &repo("team/app")), Known::Unknown);
        v.record(alice, &hub, &repo("team/app"), true);
        assert_eq!(v.known(alice, &hub, &repo("team/app")), Known::Fresh(true));
        // Other credentials, repositories and the anonymous question are separate.
        assert_eq!(
            v.known(Principal::of(b"alice:wrong"), &hub, &repo("team/app")),
            Known::Unknown
        );
        assert_eq!(v.known(alice, &hub, &repo("team/other")), Known::Unknown);
        assert_eq!(
            v.known(Principal::Anonymous, &hub, &repo("team/app")),
            Known::Unknown
        );
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(v.known(alice, &hub, &repo("team/app")), Known::Stale(true));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded() {
        let v = Verifier::new(Duration::from_secs(300));
        let hub = RegistryHost::docker_hub();
        for i in 0..(MAX_ANSWERS + 10) {
            v.record(
                Principal::of(i.to_string().as_bytes()),
                &hub,
                &repo("a/b"),
                false,
            );
            if i % 1000 == 0 {
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        }
        assert!(v.len() <= MAX_ANSWERS);
    }
}
