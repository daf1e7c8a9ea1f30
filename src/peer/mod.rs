//! Replicas that share upstream downloads (DESIGN §6, `PEERS`). Each blob has one owner among the
//! healthy replicas, chosen by rendezvous hashing of its digest ([`owner_among`]); a replica that
//! misses locally and in the bucket asks the owner on its peer port (`PEER_LISTEN`, requests
//! authenticated with `PEER_SECRET`) and relays the owner's growing download as it arrives, so a
//! herd spread over every replica costs one upstream GET. If the owner is down, refuses or is slow
//! to answer, the replica fetches the blob itself: at worst two downloads of identical, verified
//! bytes.
//!
//! Membership: every [`PROBE_EVERY`] the entries of `PEERS` are resolved (a DNS name gives every
//! A/AAAA record) and each address asked for its instance id; those that answer are healthy, and
//! the one answering this replica's own id is this replica. Until it has found itself a replica
//! forwards nothing.

mod listen;

pub use listen::accept_loop;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::body::{self, Body};
use crate::config::PeerSettings;
use crate::registry::digest::Digest;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;
use crate::secret::Secret;

/// How often the replicas are resolved and asked whether they are up.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Longest wait for a replica's answer to a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the owner's response head; then this replica fetches the blob itself.
const OWNER_TIMEOUT: Duration = Duration::from_secs(15);

/// Who downloads a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This replica (also while it does not know the others yet).
    Me,
    /// Another replica, at its peer address.
    Peer(SocketAddr),
}

/// The replica's view of its peers.
pub struct Peers {
    /// This replica's instance id, random per start.
    id: String,
    secret: Secret,
    /// `PEERS` as given.
    entries: Vec<String>,
    membership: Mutex<Membership>,
    client: Client<HttpConnector, Body>,
}

#[derive(Debug, Default, Clone)]
struct Membership {
    /// Replicas that answered the last probe. Invariant: sorted, no duplicates.
    healthy: Vec<SocketAddr>,
    /// This replica's address among them, once a probe found it.
    me: Option<SocketAddr>,
}

impl Peers {
    /// The peers of `settings`; call [`Peers::spawn_prober`] to learn who is up.
    pub fn new(settings: &PeerSettings) -> Arc<Peers> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(PROBE_TIMEOUT));
        Arc::new(Peers {
            id: instance_id(),
            secret: settings.secret.clone(),
            entries: settings.peers.clone(),
            membership: Mutex::new(Membership::default()),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(http),
        })
    }

    /// Probes the replicas now and every [`PROBE_EVERY`], for as long as `self` is in use.
    pub fn spawn_prober(self: &Arc<Self>) {
        let peers: Weak<Peers> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(strong) = peers.upgrade() else {
                    return;
                };
                strong.probe_round().await;
                drop(strong);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
    }

    /// Who downloads `digest`.
    pub fn owner(&self, digest: &Digest) -> Owner {
        let membership = lock(&self.membership);
        let Some(me) = membership.me else {
            return Owner::Me;
        };
        match owner_among(&membership.healthy, digest) {
            Some(addr) if addr != me => Owner::Peer(addr),
            _ => Owner::Me,
        }
    }

    /// Forgets a replica that did not answer a request, until the next probe finds it again.
    pub fn lost(&self, addr: SocketAddr) {
        lock(&self.membership).healthy.retain(|a| *a != addr);
    }

    /// Asks the owner for a blob. A response head within [`OWNER_TIMEOUT`] (any status), or why
    /// there is none.
    pub async fn fetch(
        &self,
        owner: SocketAddr,
        registry: &RegistryHost,
        name: &RepoName,
        digest: &Digest,
    ) -> Result<Response<Incoming>, String> {
        let registry = utf8_percent_encode(&registry.to_string(), NON_ALPHANUMERIC).to_string();
        let uri = format!("http://{owner}/peer/blobs/{registry}/{name}/{digest}");
        self.send(&uri, OWNER_TIMEOUT).await
    }

    /// The healthy replicas and which is this one, as JSON (`GET /peer/status`).
    pub fn status_json(&self) -> String {
        let membership = lock(&self.membership).clone();
        serde_json::json!({
            "id": self.id,
            "me": membership.me.map(|a| a.to_string()),
            "healthy": membership.healthy.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// True if a request carries the shared secret.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // Compare without a shortcut on the first difference.
        let (given, wanted) = (given.as_bytes(), self.secret.expose().as_bytes());
        given.len() == wanted.len()
            && given
                .iter()
                .zip(wanted)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// One round: resolve every entry, ask every address its id.
    async fn probe_round(&self) {
        let mut addrs = Vec::new();
        for entry in &self.entries {
            match tokio::net::lookup_host(entry.as_str()).await {
                Ok(found) => addrs.extend(found),
                Err(e) => tracing::debug!(%entry, error = %e, "cannot resolve a peer"),
            }
        }
        addrs.sort();
        addrs.dedup();
        let answers = futures_util::future::join_all(addrs.iter().map(|addr| async move {
            let uri = format!("http://{addr}/peer/id");
            let response = self.send(&uri, PROBE_TIMEOUT).await.ok()?;
            if response.status() != StatusCode::OK {
                return None;
            }
            let body = tokio::time::timeout(PROBE_TIMEOUT, response.into_body().collect())
                .await
                .ok()?
                .ok()?
                .to_bytes();
            Some((*addr, body))
        }))
        .await;
        let mut next = Membership::default();
        for (addr, id) in answers.into_iter().flatten() {
            if id == self.id.as_bytes() {
                next.me = Some(addr);
            }
            next.healthy.push(addr);
        }
        let mut membership = lock(&self.membership);
        if membership.healthy != next.healthy {
            tracing::info!(
                healthy = ?next.healthy.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "peer replicas"
            );
        }
        *membership = next;
    }

    async fn send(&self, uri: &str, timeout: Duration) -> Result<Response<Incoming>, String> {
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.secret.expose()))
            .map_err(|_| "PEER_SECRET is not a valid header value".to_owned())?;
        let request = Request::get(uri)
            .header(AUTHORIZATION, bearer)
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(format!("no answer in {timeout:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// The owner of `digest` among `candidates`: the highest score of `sha256(address, digest)`
/// (rendezvous hashing, so a replica coming or going moves only its own share of digests).
pub fn owner_among(candidates: &[SocketAddr], digest: &Digest) -> Option<SocketAddr> {
    candidates.iter().copied().max_by_key(|addr| {
        let hash = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{addr}\n{digest}").as_bytes(),
        );
        let mut score = [0u8; 8];
        score.copy_from_slice(&hash.as_ref()[..8]);
        (u64::from_be_bytes(score), *addr)
    })
}

/// A random id for this start of the process.
fn instance_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No randomness: the time and process id still tell replicas apart.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return format!("{now:x}-{}", std::process::id());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is a failed test
    use super::*;

    #[test]
    fn owners_spread_and_move_only_with_their_replica() {
        let replicas: Vec<SocketAddr> = (1..=3)
            .map(|i| format!("10.0.0.{i}:3129").parse().unwrap())
            .collect();
        let digests: Vec<Digest> = (0..300u32)
            .map(|i| Digest::sha256_of(&i.to_be_bytes()))
            .collect();
        let owners: Vec<SocketAddr> = digests
            .iter()
            .map(|d| owner_among(&replicas, d).unwrap())
            .collect();
        for replica in &replicas {
            let share = owners.iter().filter(|o| *o == replica).count();
            assert!((60..=140).contains(&share), "{replica} owns {share} of 300");
        }
        // The order of the list does not matter.
        let mut reversed = replicas.clone();
        reversed.reverse();
        assert!(
            digests
                .iter()
                .zip(&owners)
                .all(|(d, o)| owner_among(&reversed, d) == Some(*o))
        );
        // Without the third replica, only its digests move.
        let two = &replicas[..2];
        for (digest, owner) in digests.iter().zip(&owners) {
            let now = owner_among(two, digest).unwrap();
            if *owner != replicas[2] {
                assert_eq!(now, *owner);
            }
        }
        assert_eq!(owner_among(&[], &digests[0]), None);
    }
}
