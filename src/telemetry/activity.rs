//! What the status page shows besides counters: downloads in flight with their progress, a ring of
//! per-minute samples of the counters, and the most used repositories since start. All bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Metrics, Verdict, lock};
use crate::cache::{Fill, FillState};
use crate::registry::host::RegistryHost;

/// Per-minute samples kept (two hours).
pub const HISTORY_LEN: usize = 120;
/// Repositories tracked for "most used"; beyond it the least used one is forgotten.
pub(super) const USAGE_MAX: usize = 512;

/// Cumulative counters at one moment (all registries together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Requests answered from the cache (HIT, REVALIDATED, STALE).
    pub hits: u64,
    /// Requests that went upstream for something cacheable (MISS).
    pub misses: u64,
    /// Response body bytes sent to clients.
    pub sent_bytes: u64,
    /// Of those, bytes sent from the cache (HIT, REVALIDATED, STALE).
    pub saved_bytes: u64,
    /// Body bytes received from upstreams.
    pub upstream_bytes: u64,
}

impl Totals {
    /// The difference `self - earlier` (counters only grow; saturating anyway).
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            hits: self.hits.saturating_sub(earlier.hits),
            misses: self.misses.saturating_sub(earlier.misses),
            sent_bytes: self.sent_bytes.saturating_sub(earlier.sent_bytes),
            saved_bytes: self.saved_bytes.saturating_sub(earlier.saved_bytes),
            upstream_bytes: self.upstream_bytes.saturating_sub(earlier.upstream_bytes),
        }
    }
}

/// One minute of activity, for the status page's charts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Interval {
    /// Unix seconds at the interval's end.
    pub end: u64,
    /// Length in seconds (the last one is the minute in progress).
    pub seconds: u64,
    #[serde(flatten)]
    pub totals: Totals,
}

/// A download in flight as the status page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadView {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    /// Bytes received so far.
    pub bytes: u64,
    /// The blob's length, if upstream announced it.
    pub total: Option<u64>,
    pub seconds: f64,
    /// `waiting` (for upstream's headers), `downloading`, `uncached` (the disk failed), `verifying`.
    pub state: &'static str,
}

/// A repository's use since start.
#[derive(Debug, Clone, Serialize)]
pub struct RepoUse {
    /// `registry/repository`.
    pub image: String,
    /// Manifest GETs answered with success.
    pub pulls: u64,
    /// Response bytes sent for it.
    pub bytes: u64,
}

#[derive(Debug)]
struct Download {
    slot: usize,
    registry: String,
    repository: String,
    fill: Arc<Fill>,
    started: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Activity {
    downloads: HashMap<u64, Download>,
    next_id: u64,
    /// (Unix seconds, cumulative totals), oldest first. Invariant: at most `HISTORY_LEN + 1`.
    history: VecDeque<(u64, Totals)>,
    /// `registry/repository` → (pulls, bytes). Invariant: at most `USAGE_MAX` entries.
    usage: HashMap<String, (u64, u64)>,
}

/// Removes its download from the status when dropped.
pub struct DownloadGuard {
    metrics: Arc<Metrics>,
    id: u64,
}

impl Drop for DownloadGuard {
    fn drop(&mut self) {
        lock(&self.metrics.activity).downloads.remove(&self.id);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Metrics {
    /// A blob download into the cache started; it shows as in flight until the guard is dropped.
    pub fn download_started(
        self: &Arc<Self>,
        registry: &RegistryHost,
        repository: &str,
        fill: Arc<Fill>,
    ) -> DownloadGuard {
        let mut activity = lock(&self.activity);
        let id = activity.next_id;
        activity.next_id += 1;
        activity.downloads.insert(
            id,
            Download {
                slot: self.slot_of(registry),
                registry: registry.to_string(),
                repository: repository.to_owned(),
                fill,
                started: Instant::now(),
            },
        );
        DownloadGuard {
            metrics: self.clone(),
            id,
        }
    }

    /// Downloads in flight per registry slot.
    pub(crate) fn downloads_by_slot(&self, slots: usize) -> Vec<u64> {
        let mut counts = vec![0u64; slots];
        for d in lock(&self.activity).downloads.values() {
            if let Some(c) = counts.get_mut(d.slot) {
                *c += 1;
            }
        }
        counts
    }

    /// Downloads in flight with their progress, longest running first.
    pub fn downloads(&self) -> Vec<DownloadView> {
        let activity = lock(&self.activity);
        let mut out: Vec<(Duration, DownloadView)> = activity
            .downloads
            .values()
            .map(|d| {
                let total = d.fill.total();
                let (bytes, state) = match d.fill.state() {
                    FillState::Pending | FillState::Failed(_) => (0, "waiting"),
                    FillState::Growing(n) if total == Some(n) => (n, "verifying"),
                    FillState::Growing(n) => (n, "downloading"),
                    FillState::Uncached { on_disk } => (on_disk, "uncached"),
                    FillState::Done(n) | FillState::Streamed { len: n, .. } => (n, "verifying"),
                };
                let age = d.started.elapsed();
                (
                    age,
                    DownloadView {
                        registry: d.registry.clone(),
                        repository: d.repository.clone(),
                        digest: d.fill.digest.to_string(),
                        bytes,
                        total,
                        seconds: age.as_secs_f64(),
                        state,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(age, _)| std::cmp::Reverse(*age));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// The counters summed over all registries.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for per in &self.table.slots {
            let requests = |v: Verdict| per.requests[v.index()].load(Relaxed);
            let sent = |v: Verdict| per.sent[v.index()].load(Relaxed);
            for v in [Verdict::Hit, Verdict::Revalidated, Verdict::Stale] {
                t.hits += requests(v);
                t.saved_bytes += sent(v);
            }
            t.misses += requests(Verdict::Miss);
            t.sent_bytes += Verdict::ALL.iter().map(|v| sent(*v)).sum::<u64>();
            t.upstream_bytes += per.upstream_bytes.load(Relaxed);
        }
        t
    }

    /// Records the counters now (the proxy calls this once a minute).
    pub fn sample(&self) {
        let totals = self.totals();
        let mut activity = lock(&self.activity);
        activity.history.push_back((unix_now(), totals));
        while activity.history.len() > HISTORY_LEN + 1 {
            activity.history.pop_front();
        }
    }

    /// Activity per sampled minute, oldest first, then the minute in progress.
    pub fn history(&self) -> Vec<Interval> {
        let now = (unix_now(), self.totals());
        let activity = lock(&self.activity);
        let points: Vec<(u64, Totals)> = activity
            .history
            .iter()
            .copied()
            .chain(std::iter::once(now))
            .collect();
        points
            .windows(2)
            .map(|w| Interval {
                end: w[1].0,
                seconds: w[1].0.saturating_sub(w[0].0),
                totals: w[1].1.since(&w[0].1),
            })
            .collect()
    }

    /// Counts a successful registry response for the "most used" table.
    pub(crate) fn record_use(&self, registry: &str, repository: &str, pull: bool, bytes: u64) {
        let key = format!("{registry}/{repository}");
        let mut activity = lock(&self.activity);
        let usage = &mut activity.usage;
        if !usage.contains_key(&key) && usage.len() >= USAGE_MAX {
            let least = usage
                .iter()
                .min_by_key(|(_, (pulls, bytes))| (*pulls, *bytes))
                .map(|(k, _)| k.clone());
            if let Some(least) = least {
                usage.remove(&least);
            }
        }
        let entry = usage.entry(key).or_default();
        entry.0 += u64::from(pull);
        entry.1 += bytes;
    }

    /// The `n` repositories pulled most since start (then by bytes sent).
    pub fn most_used(&self, n: usize) -> Vec<RepoUse> {
        let activity = lock(&self.activity);
        let mut all: Vec<RepoUse> = activity
            .usage
            .iter()
            .map(|(image, (pulls, bytes))| RepoUse {
                image: image.clone(),
                pulls: *pulls,
                bytes: *bytes,
            })
            .collect();
        all.sort_by(|a, b| (b.pulls, b.bytes, &a.image).cmp(&(a.pulls, a.bytes, &b.image)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_bounded_and_keeps_the_most_used() {
        let m = Metrics::new(false, &[]);
        m.record_use("docker.io", "library/popular", true, 10);
        m.record_use("docker.io", "library/popular", true, 10);
        for i in 0..USAGE_MAX + 10 {
            m.record_use("docker.io", &format!("scan/{i}"), false, 1);
        }
        assert_eq!(lock(&m.activity).usage.len(), USAGE_MAX);
        let top = m.most_used(1);
        assert_eq!(top[0].image, "docker.io/library/popular");
        assert_eq!((top[0].pulls, top[0].bytes), (2, 20));
    }

    #[test]
    fn history_is_bounded_and_ends_with_the_minute_in_progress() {
        let m = Metrics::new(false, &[]);
        for _ in 0..HISTORY_LEN + 5 {
            m.sample();
        }
        assert_eq!(m.history().len(), HISTORY_LEN + 1);
        let delta = Totals {
            hits: 5,
            misses: 1,
            sent_bytes: 10,
            saved_bytes: 8,
            upstream_bytes: 2,
        };
        assert_eq!(delta.since(&Totals::default()), delta);
        assert_eq!(Totals::default().since(&delta), Totals::default());
    }
}
