//! The fixed table of registry labels, each slot a block of atomics, and the process-wide counters.

use std::sync::atomic::{AtomicI64, AtomicU64};

use super::OTHER;
use super::histogram::{FILL_BUCKETS, Histogram, TTFB_BUCKETS};
use crate::registry::host::RegistryHost;

pub(super) fn counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// Everything counted for one registry label.
#[derive(Debug)]
pub(crate) struct PerRegistry {
    pub(crate) requests: [AtomicU64; 6],
    pub(crate) sent: [AtomicU64; 6],
    pub(crate) ttfb: [Histogram; 6],
    pub(crate) upstream_requests: [AtomicU64; 3],
    pub(crate) upstream_errors: [AtomicU64; 10],
    pub(crate) upstream_bytes: AtomicU64,
    pub(crate) blob_fetches: AtomicU64,
    pub(crate) fill: Histogram,
    /// Docker Hub's `ratelimit-remaining` / `ratelimit-limit` as last seen; -1: never seen.
    pub(crate) ratelimit_remaining: AtomicI64,
    pub(crate) ratelimit_limit: AtomicI64,
    /// Unix milliseconds of the last usable upstream answer and of the last failure; 0: never.
    pub(crate) last_ok_ms: AtomicU64,
    pub(crate) last_error_ms: AtomicU64,
    /// `UpstreamFault::index() + 1` of the last failure; 0: none.
    pub(crate) last_fault: AtomicU64,
    pub(crate) verify: [AtomicU64; 4],
}

impl PerRegistry {
    pub(super) fn new() -> PerRegistry {
        PerRegistry {
            requests: counters(),
            sent: counters(),
            ttfb: std::array::from_fn(|_| Histogram::new(TTFB_BUCKETS)),
            upstream_requests: counters(),
            upstream_errors: counters(),
            upstream_bytes: AtomicU64::new(0),
            blob_fetches: AtomicU64::new(0),
            fill: Histogram::new(FILL_BUCKETS),
            ratelimit_remaining: AtomicI64::new(-1),
            ratelimit_limit: AtomicI64::new(-1),
            last_ok_ms: AtomicU64::new(0),
            last_error_ms: AtomicU64::new(0),
            last_fault: AtomicU64::new(0),
            verify: counters(),
        }
    }
}

/// An upstream's health and quota as the status page shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamHealth {
    pub registry: String,
    /// Unix milliseconds of the last usable answer, if any.
    pub last_ok_ms: Option<u64>,
    /// Unix milliseconds of the last failure, if any, and its kind.
    pub last_error_ms: Option<u64>,
    pub last_error: Option<&'static str>,
    pub requests: u64,
    pub errors: u64,
    pub ratelimit_remaining: Option<i64>,
    pub ratelimit_limit: Option<i64>,
}

/// The store's figures at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheFacts {
    pub bytes: u64,
    pub entries: u64,
    pub max_bytes: u64,
    pub free_bytes: Option<u64>,
    pub evictions: u64,
    pub evicted_bytes: u64,
    /// Blobs and manifests this replica's collector removed from the shared bucket, and bytes.
    pub bucket_collected: u64,
    pub bucket_collected_bytes: u64,
}

/// Process-wide gauges and counters that are not per registry.
#[derive(Debug, Default)]
pub(crate) struct Global {
    pub(crate) aborted_responses: AtomicU64,
    /// Body bytes the kernel sent straight from cache files (`sendfile`, see `zero_copy`).
    pub(crate) zero_copy_bytes: AtomicU64,
    /// Responses whose body was handed to the kernel that way.
    pub(crate) zero_copy_responses: AtomicU64,
    pub(crate) tunnels: AtomicU64,
    pub(crate) tunnels_open: AtomicU64,
    pub(crate) tunnel_bytes: AtomicU64,
    pub(crate) refusals: [AtomicU64; 8],
}

/// The fixed table of registry labels and their counters.
#[derive(Debug)]
pub(crate) struct Table {
    /// Label values: Docker Hub, the configured registries, and [`OTHER`] last.
    pub(crate) names: Vec<String>,
    pub(crate) slots: Vec<PerRegistry>,
}

impl Table {
    pub(crate) fn new(registries: &[RegistryHost]) -> Table {
        let mut names = vec![RegistryHost::docker_hub().to_string()];
        for r in registries {
            let name = r.to_string();
            if !names.contains(&name) && name != OTHER {
                names.push(name);
            }
        }
        names.push(OTHER.to_owned());
        let slots = names.iter().map(|_| PerRegistry::new()).collect();
        Table { names, slots }
    }

    /// The slot of a registry's label (its canonical name), `other` if not in the table.
    pub(crate) fn slot(&self, name: &str) -> usize {
        let last = self.names.len() - 1;
        self.names[..last]
            .iter()
            .position(|n| n == name)
            .unwrap_or(last)
    }

    pub(crate) fn get(&self, slot: usize) -> &PerRegistry {
        &self.slots[slot.min(self.slots.len() - 1)]
    }
}
