//! Which objects one collection pass removes, decided from listings alone (pure: no I/O).
//!
//! An object's last use is the later of its own last write and its access record's (`gc/used/…`).
//! Nothing written or used within the grace window is ever chosen. Of the rest, everything unused
//! for `CACHE_INACTIVE` goes; then, while the bucket holds more than `S3_MAX_SIZE`, the least
//! recently used.

use std::time::{Duration, SystemTime};

use crate::cache::key::ObjectKey;

/// A content object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: ObjectKey,
    pub len: u64,
    /// Its last write.
    pub modified: SystemTime,
    /// Its access record's last write, if it has one.
    pub used: Option<SystemTime>,
}

impl Entry {
    /// The later of its write and its recorded use.
    pub fn last_use(&self) -> SystemTime {
        self.used
            .map_or(self.modified, |used| used.max(self.modified))
    }
}

/// The limits a pass keeps the bucket to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `S3_MAX_SIZE`; `None`: no cap.
    pub max_size: Option<u64>,
    /// `CACHE_INACTIVE`.
    pub inactive: Duration,
    /// Objects written or used more recently than this are never collected.
    pub grace: Duration,
}

/// The objects to remove, in the order to remove them (inactive ones first, then least recently
/// used first).
pub fn plan(entries: &[Entry], policy: &Policy, now: SystemTime) -> Vec<ObjectKey> {
    let age = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO);
    let mut candidates: Vec<&Entry> = entries
        .iter()
        .filter(|e| age(e.last_use()) >= policy.grace)
        .collect();
    candidates.sort_by_key(|e| (e.last_use(), e.key.path()));
    let mut total: u64 = entries.iter().map(|e| e.len).sum();
    let mut victims = Vec::new();
    let mut rest = Vec::new();
    for entry in candidates {
        if age(entry.last_use()) >= policy.inactive {
            total = total.saturating_sub(entry.len);
            victims.push(entry.key.clone());
        } else {
            rest.push(entry);
        }
    }
    if let Some(max) = policy.max_size {
        for entry in rest {
            if total <= max {
                break;
            }
            total = total.saturating_sub(entry.len);
            victims.push(entry.key.clone());
        }
    }
    victims
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Digest;

    const HOUR: Duration = Duration::from_secs(3600);

    fn entry(name: &str, len: u64, written_h_ago: u64, used_h_ago: Option<u64>) -> Entry {
        let now = SystemTime::UNIX_EPOCH + HOUR * 10_000;
        Entry {
            key: ObjectKey::blob(&Digest::sha256_of(name.as_bytes())),
            len,
            modified: now - HOUR * written_h_ago as u32,
            used: used_h_ago.map(|h| now - HOUR * h as u32),
        }
    }

    fn names(victims: &[ObjectKey], entries: &[(&str, Entry)]) -> Vec<String> {
        victims
            .iter()
            .map(|v| {
                entries
                    .iter()
                    .find(|(_, e)| e.key == *v)
                    .map(|(n, _)| (*n).to_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn least_recently_used_go_first_until_under_the_cap() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 10_000;
        let named = [
            ("old-but-used", entry("a", 100, 500, Some(2))),
            ("oldest", entry("b", 100, 400, None)),
            ("older", entry("c", 100, 300, Some(200))),
            ("recent", entry("d", 100, 3, None)),
        ];
        let entries: Vec<Entry> = named.iter().map(|(_, e)| e.clone()).collect();
        let policy = Policy {
            max_size: Some(250),
            inactive: HOUR * 24 * 60,
            grace: HOUR,
        };
        let victims = plan(&entries, &policy, now);
        assert_eq!(names(&victims, &named), ["oldest", "older"]);
        // No cap: nothing is old enough to be inactive.
        let policy = Policy {
            max_size: None,
            ..policy
        };
        assert!(plan(&entries, &policy, now).is_empty());
    }

    #[test]
    fn inactive_ones_go_whatever_the_size() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 10_000;
        let named = [
            ("unused", entry("a", 1, 500, Some(100))),
            ("used", entry("b", 1, 500, Some(10))),
        ];
        let entries: Vec<Entry> = named.iter().map(|(_, e)| e.clone()).collect();
        let policy = Policy {
            max_size: Some(1 << 40),
            inactive: HOUR * 50,
            grace: HOUR,
        };
        assert_eq!(names(&plan(&entries, &policy, now), &named), ["unused"]);
    }

    #[test]
    fn nothing_inside_the_grace_window_is_collected() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 10_000;
        let named = [
            ("fresh", entry("a", 1000, 0, None)),
            ("just-used", entry("b", 1000, 900, Some(0))),
            ("stale", entry("c", 1000, 900, None)),
        ];
        let entries: Vec<Entry> = named.iter().map(|(_, e)| e.clone()).collect();
        let policy = Policy {
            max_size: Some(1),
            inactive: HOUR,
            grace: HOUR * 2,
        };
        // Over the cap even after removing everything it may: only the stale one goes.
        assert_eq!(names(&plan(&entries, &policy, now), &named), ["stale"]);
    }
}
