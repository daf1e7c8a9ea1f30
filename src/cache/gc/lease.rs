//! The collector's lease: one object (`gc/lease`) naming the replica that may collect the bucket
//! until a time. Taken with `If-None-Match: *` when absent, renewed and taken over (once expired)
//! with `If-Match: <etag>` of the version read, so two replicas racing for it cannot both win: the
//! second conditional write fails with `412 Precondition Failed`.
//!
//! The holder believes it holds the lease for three quarters of its term, counted from before its
//! write was sent; the others take it over only once the term written in it has passed on their
//! clocks. Clocks that disagree by less than a quarter of the term never give two holders.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cache::store::{Condition, Records, StoreError, Written};

/// Where the lease lives, relative to the prefix.
pub const LEASE: &str = "gc/lease";

/// What the lease object says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Terms {
    /// The holding process: its replica name and a random part (a restart is another holder).
    holder: String,
    /// Milliseconds since the epoch after which anyone may take it over.
    expires_ms: u64,
    /// Makes every write's content, hence its ETag, unique.
    nonce: String,
}

/// One process's claim to the lease.
pub struct Lease {
    store: Arc<dyn Records>,
    holder: String,
    term: Duration,
    /// The version this process last wrote. Invariant: `Some` only while `until` is.
    etag: Option<String>,
    /// Until when this process may act as the holder.
    until: Option<Instant>,
    /// When this process last wrote the lease.
    renewed: Option<Instant>,
}

impl Lease {
    /// A claim for `holder` (unique per process) with leases of `term`.
    pub fn new(store: Arc<dyn Records>, holder: String, term: Duration) -> Lease {
        Lease {
            store,
            holder,
            term,
            etag: None,
            until: None,
            renewed: None,
        }
    }

    /// The holding process's name as written in the lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// True while this process may act as the holder.
    pub fn held(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() < until)
    }

    /// Renews the lease if a third of its term passed since the last write, else keeps it; takes
    /// it if it is free or expired. `true` if this process holds it afterwards.
    pub async fn keep(&mut self) -> Result<bool, StoreError> {
        if self.held() && self.renewed.is_some_and(|at| at.elapsed() < self.term / 3) {
            return Ok(true);
        }
        self.acquire().await
    }

    /// Takes or renews the lease now. `true` if this process holds it afterwards.
    pub async fn acquire(&mut self) -> Result<bool, StoreError> {
        if let Some(etag) = self.etag.clone().filter(|_| self.held()) {
            if self.write(Condition::Matches(etag)).await? {
                return Ok(true);
            }
            tracing::warn!(holder = %self.holder, "the bucket's collection lease was taken over");
        }
        self.lost();
        let Some(current) = self.store.read_record(LEASE).await? else {
            return self.write(Condition::Absent).await;
        };
        let terms: Option<Terms> = serde_json::from_slice(&current.bytes).ok();
        let takeable = match &terms {
            // Unreadable: someone wrote garbage; take it over like an expired one.
            None => true,
            Some(terms) => terms.holder == self.holder || terms.expires_ms <= now_ms(),
        };
        match (takeable, current.etag) {
            (true, Some(etag)) => self.write(Condition::Matches(etag)).await,
            (true, None) => {
                tracing::warn!(
                    "the object store gives no ETag: the collection lease cannot be taken over"
                );
                Ok(false)
            }
            (false, _) => Ok(false),
        }
    }

    /// Lets the lease go (on shutdown), if this process holds it: removed only if unchanged.
    pub async fn release(&mut self) {
        if let Some(etag) = self.etag.clone().filter(|_| self.held()) {
            // An expired term written over it is as good as a removal, and conditional.
            let terms = Terms {
                holder: self.holder.clone(),
                expires_ms: 0,
                nonce: nonce(),
            };
            if let Ok(bytes) = serde_json::to_vec(&terms) {
                let _ = self
                    .store
                    .write_record(LEASE, Bytes::from(bytes), Condition::Matches(etag))
                    .await;
            }
        }
        self.lost();
    }

    fn lost(&mut self) {
        self.etag = None;
        self.until = None;
        self.renewed = None;
    }

    /// Writes a new term under `condition`; `true` if written.
    async fn write(&mut self, condition: Condition) -> Result<bool, StoreError> {
        let sent = Instant::now();
        let terms = Terms {
            holder: self.holder.clone(),
            expires_ms: now_ms().saturating_add(self.term.as_millis() as u64),
            nonce: nonce(),
        };
        let bytes = serde_json::to_vec(&terms).map_err(|e| StoreError::Remote {
            store: "lease",
            key: LEASE.to_owned(),
            message: e.to_string(),
        })?;
        match self
            .store
            .write_record(LEASE, Bytes::from(bytes), condition)
            .await?
        {
            Written::Done { etag: Some(etag) } => {
                self.etag = Some(etag);
                self.until = Some(sent + self.term * 3 / 4);
                self.renewed = Some(sent);
                Ok(true)
            }
            Written::Done { etag: None } => {
                tracing::warn!(
                    "the object store gives no ETag: the collection lease cannot be renewed"
                );
                Ok(false)
            }
            Written::Conflict => Ok(false),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// 16 random hex characters.
pub(crate) fn nonce() -> String {
    let mut bytes = [0u8; 8];
    // A failing system RNG leaves zeros: the time still makes the content unique enough.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let mixed = u64::from_le_bytes(bytes) ^ now_ms().rotate_left(32);
    format!("{mixed:016x}")
}
