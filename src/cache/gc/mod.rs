//! Space and expiry for the shared bucket (`S3_MAX_SIZE`, `CACHE_INACTIVE`; DESIGN §6): one
//! replica at a time removes what the bucket should no longer hold.
//!
//! - **Who.** At start-up each replica probes whether the store honours conditional writes (two
//!   `If-None-Match: *` creates of one probe key: the second must fail). If it does, the replicas
//!   share a lease object (`lease.rs`) and whoever holds it collects. If not (Garage 2.x), only
//!   the replica whose `REPLICA_NAME` is `S3_GC_LEADER` collects, without a lease; without
//!   `S3_GC_LEADER` nobody does, and the log says so.
//! - **What.** Last use lives in the bucket, never only in a replica's memory: every replica
//!   rewrites a small access record (`gc/used/<key path>`, empty; its last write is the use) when it
//!   reads or serves an object, at most every [`USED_EVERY`] per object. A pass lists the content,
//!   the access records and the links, and removes what [`plan`] chooses (inactive first, then
//!   least recently used while over the cap; nothing written or used within [`GRACE`]).
//! - **Order.** A blob or manifest is removed first, then its access record; links whose content
//!   is gone go last (once older than the grace window). A manifest or link left pointing at a
//!   removed blob is harmless: the blob is then a miss on every tier and is fetched again; nothing
//!   partial or wrong can be served, because content objects only ever exist whole and verified.

mod lease;
mod plan;

pub(crate) use lease::nonce;
pub use lease::{LEASE, Lease};
pub use plan::{Entry, Policy, plan};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::key::{ContentKind, ObjectKey};
use super::store::{Condition, Records, SharedStore, StoreError, Written};
use crate::config::S3Settings;
use crate::registry::digest::Digest;

/// Where access records live, relative to the prefix.
pub const USED_DIR: &str = "gc/used/";
/// Where the start-up probe writes.
pub const PROBE_DIR: &str = "gc/probe/";
/// Objects written or used more recently than this are never collected.
pub const GRACE: Duration = Duration::from_secs(3600);
/// How often at most a replica rewrites one object's access record: a quarter of [`GRACE`], so an
/// object in use always looks used within the grace window.
pub const USED_EVERY: Duration = Duration::from_secs(900);
/// How often a collection pass runs (and the lease is renewed).
pub const EVERY: Duration = Duration::from_secs(600);
/// How often a bucket that did not answer the probe is asked again.
const PROBE_RETRY: Duration = Duration::from_secs(30);

/// The access record of a content object.
pub fn used_path(key: &ObjectKey) -> String {
    format!("{USED_DIR}{}", key.path())
}

/// Totals of what this process collected, for the metrics.
#[derive(Debug, Default)]
pub struct Collected {
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
}

/// How the collector runs.
#[derive(Debug, Clone)]
pub struct GcSettings {
    pub policy: Policy,
    /// Time between passes.
    pub every: Duration,
    /// A lease's term (three passes).
    pub lease_term: Duration,
    /// `REPLICA_NAME`.
    pub name: String,
    /// `S3_GC_LEADER`.
    pub leader: Option<String>,
}

impl GcSettings {
    /// The settings of `s3` with `CACHE_INACTIVE` and the default intervals.
    pub fn new(s3: &S3Settings, inactive: Duration) -> GcSettings {
        GcSettings {
            policy: Policy {
                max_size: s3.max_size,
                inactive,
                grace: GRACE,
            },
            every: EVERY,
            lease_term: EVERY * 3,
            name: s3.replica_name.clone(),
            leader: s3.gc_leader.clone(),
        }
    }
}

/// Who collects, as decided at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The store honours conditional writes: whoever holds the lease.
    Lease,
    /// It does not, and `S3_GC_LEADER` names this replica: this one, alone.
    Alone,
    /// It does not, and this replica is not the leader (or there is none).
    NotHere,
}

impl Mode {
    /// The mode for a store that does (`true`) or does not honour conditional writes; logs it.
    pub fn decide(conditional: bool, settings: &GcSettings) -> Mode {
        if conditional {
            tracing::info!(
                "the object store honours conditional writes: replicas take turns collecting the bucket through a lease"
            );
            return Mode::Lease;
        }
        match &settings.leader {
            Some(leader) if *leader == settings.name => {
                tracing::info!(%leader, "the object store ignores conditional writes: this replica (S3_GC_LEADER) collects the bucket alone");
                Mode::Alone
            }
            Some(leader) => {
                tracing::info!(%leader, replica = %settings.name, "the object store ignores conditional writes: only the replica named by S3_GC_LEADER collects the bucket, not this one");
                Mode::NotHere
            }
            None => {
                tracing::warn!(
                    "the object store ignores conditional writes and S3_GC_LEADER is not set: NOBODY collects the bucket (S3_MAX_SIZE and CACHE_INACTIVE are not enforced on it); set S3_GC_LEADER to one replica's REPLICA_NAME"
                );
                Mode::NotHere
            }
        }
    }
}

/// Whether `store` honours `If-None-Match: *`: creates one probe key twice (the second must be
/// refused), then removes it.
pub async fn conditional_writes(store: &dyn Records) -> Result<bool, StoreError> {
    let path = format!("{PROBE_DIR}{}", lease::nonce());
    let first = store
        .write_record(&path, Bytes::from_static(b"1"), Condition::Absent)
        .await?;
    let second = match first {
        Written::Done { .. } => {
            store
                .write_record(&path, Bytes::from_static(b"2"), Condition::Absent)
                .await
        }
        // A fresh random key that already exists: nothing sensible was learnt.
        Written::Conflict => Ok(Written::Done { etag: None }),
    };
    if let Err(e) = store.delete_record(&path).await {
        tracing::debug!(error = %e, "cannot remove the conditional-write probe");
    }
    Ok(matches!(second?, Written::Conflict))
}

/// What one pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Blobs and manifests removed.
    pub objects: u64,
    pub bytes: u64,
    /// Links, and access records without their object, removed.
    pub records: u64,
    /// The lease was lost in the middle: the pass stopped.
    pub interrupted: bool,
}

/// One collection pass at time `now`. With a `lease`, it is kept (renewed when due) before each
/// removal, and the pass stops as soon as it is lost.
pub async fn collect(
    store: &dyn SharedStore,
    policy: &Policy,
    now: SystemTime,
    mut lease: Option<&mut Lease>,
) -> Result<PassReport, StoreError> {
    let mut entries = Vec::new();
    for kind in [ContentKind::Blob, ContentKind::Manifest] {
        for listed in store.list(kind).await? {
            entries.push(Entry {
                key: listed.key,
                len: listed.meta.len,
                modified: listed.meta.modified,
                used: None,
            });
        }
    }
    let mut used: HashMap<String, (String, SystemTime)> = HashMap::new();
    for (path, meta) in store.list_records(USED_DIR).await? {
        if let Some(rel) = path.strip_prefix(USED_DIR) {
            used.insert(rel.to_owned(), (path.clone(), meta.modified));
        }
    }
    for entry in &mut entries {
        entry.used = used.get(&entry.key.path()).map(|(_, t)| *t);
    }
    let victims = plan(&entries, policy, now);
    let lens: HashMap<&ObjectKey, u64> = entries.iter().map(|e| (&e.key, e.len)).collect();
    let mut report = PassReport::default();
    let mut gone: HashSet<ObjectKey> = HashSet::new();
    for key in &victims {
        if !still_held(&mut lease).await {
            report.interrupted = true;
            return Ok(report);
        }
        store.delete(key).await?;
        report.objects += 1;
        report.bytes += lens.get(key).copied().unwrap_or(0);
        gone.insert(key.clone());
        if let Some((path, _)) = used.remove(&key.path()) {
            store.delete_record(&path).await?;
        }
    }
    let present: HashSet<String> = entries
        .iter()
        .filter(|e| !gone.contains(&e.key))
        .map(|e| e.key.path())
        .collect();
    let old = |modified: SystemTime| {
        now.duration_since(modified)
            .is_ok_and(|age| age >= policy.grace)
    };
    // Access records whose object is gone (removed by a purge, or never uploaded).
    let mut stale: Vec<String> = used
        .into_iter()
        .filter(|(rel, (_, t))| !present.contains(rel) && old(*t))
        .map(|(_, (path, _))| path)
        .collect();
    // Links to content the bucket no longer holds.
    for (path, meta) in store.list_records("repos/").await? {
        if old(meta.modified)
            && let Some(content) = linked_content(&path)
            && !present.contains(&content.path())
        {
            stale.push(path);
        }
    }
    for path in stale {
        if !still_held(&mut lease).await {
            report.interrupted = true;
            return Ok(report);
        }
        store.delete_record(&path).await?;
        report.records += 1;
    }
    Ok(report)
}

async fn still_held(lease: &mut Option<&mut Lease>) -> bool {
    match lease {
        None => true,
        Some(lease) => match lease.keep().await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the collection lease; stopping this pass");
                false
            }
        },
    }
}

/// The content a link path names: `repos/…/_blobs/<hex>` or `repos/…/_manifests/<hex>`.
fn linked_content(path: &str) -> Option<ObjectKey> {
    let (rest, hex) = path.rsplit_once('/')?;
    let digest = Digest::parse(&format!("sha256:{hex}")).ok()?;
    if rest.ends_with("/_blobs") {
        Some(ObjectKey::blob(&digest))
    } else if rest.ends_with("/_manifests") {
        Some(ObjectKey::manifest(&digest))
    } else {
        None
    }
}

/// Collects the bucket for as long as `collected` is alive (the cache holds it): probes the store
/// until it answers, decides the [`Mode`], then runs a pass every `settings.every` when this
/// replica may.
pub async fn run(store: Arc<dyn SharedStore>, settings: GcSettings, collected: Weak<Collected>) {
    let conditional = loop {
        if collected.strong_count() == 0 {
            return;
        }
        match conditional_writes(store.as_ref()).await {
            Ok(answer) => break answer,
            Err(e) => {
                tracing::debug!(error = %e, "cannot probe the object store for conditional writes yet");
                tokio::time::sleep(PROBE_RETRY).await;
            }
        }
    };
    let mode = Mode::decide(conditional, &settings);
    if mode == Mode::NotHere {
        return;
    }
    let holder = format!("{}/{}", settings.name, lease::nonce());
    let records: Arc<dyn Records> = store.clone();
    let mut lease = Lease::new(records, holder, settings.lease_term);
    let mut tick = tokio::time::interval(settings.every);
    loop {
        tick.tick().await;
        let Some(totals) = collected.upgrade() else {
            lease.release().await;
            return;
        };
        let lease = match mode {
            Mode::Alone => None,
            _ => match lease.acquire().await {
                Ok(true) => Some(&mut lease),
                Ok(false) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot take the collection lease");
                    continue;
                }
            },
        };
        match collect(store.as_ref(), &settings.policy, SystemTime::now(), lease).await {
            Ok(report) => {
                totals.objects.fetch_add(report.objects, Ordering::Relaxed);
                totals.bytes.fetch_add(report.bytes, Ordering::Relaxed);
                if report.objects + report.records > 0 {
                    tracing::info!(
                        objects = report.objects,
                        bytes = report.bytes,
                        records = report.records,
                        interrupted = report.interrupted,
                        "collected the object store"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "collecting the object store failed; next pass later")
            }
        }
    }
}
