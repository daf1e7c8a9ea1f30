//! Figures for the status page and metrics: evictions, and the repositories holding the most
//! cached bytes. The latter walks `repos/` (links only, sizes from the index) at most once per
//! [`USAGE_EVERY`], with a bound on the entries it reads, so a page refresh stays cheap whatever
//! the cache size.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::index::Index;
use super::{Cache, lock};

/// How long a walk of `repos/` is reused.
pub const USAGE_EVERY: Duration = Duration::from_secs(60);
/// Repositories kept from a walk (largest first).
const KEEP: usize = 50;
/// Directory entries a walk reads at most.
const MAX_ENTRIES: usize = 500_000;

/// A cached repository's share of the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepoSize {
    /// `registry/repository`.
    pub image: String,
    /// Bytes of the committed blobs and manifests linked to it (an object shared by several
    /// repositories counts for each).
    pub bytes: u64,
    pub blobs: u64,
    /// Tags recorded for it.
    pub tags: u64,
}

/// The last walk and when it was made.
pub(super) type UsageMemo = Option<(Instant, Arc<Vec<RepoSize>>)>;

impl Cache {
    /// Entries and bytes evicted since start.
    pub fn evictions(&self) -> (u64, u64) {
        (
            self.space.evicted.load(Ordering::Relaxed),
            self.space.evicted_bytes.load(Ordering::Relaxed),
        )
    }

    /// The repositories holding the most cached blob bytes, largest first (at most 50), from a
    /// walk at most [`USAGE_EVERY`] old. Blocking: call from a blocking thread.
    pub fn largest_repositories(&self) -> Arc<Vec<RepoSize>> {
        let mut memo = lock(&self.space.usage);
        if let Some((at, sizes)) = &*memo
            && at.elapsed() < USAGE_EVERY
        {
            return sizes.clone();
        }
        let sizes = Arc::new(walk(&self.root, &self.space.index));
        *memo = Some((Instant::now(), sizes.clone()));
        sizes
    }
}

struct Walk<'a> {
    index: &'a std::sync::Mutex<Index>,
    budget: usize,
    out: Vec<RepoSize>,
}

fn walk(root: &Path, index: &std::sync::Mutex<Index>) -> Vec<RepoSize> {
    let mut w = Walk {
        index,
        budget: MAX_ENTRIES,
        out: Vec::new(),
    };
    let Ok(registries) = std::fs::read_dir(root.join("repos")) else {
        return Vec::new();
    };
    for registry in registries.flatten() {
        let name = registry.file_name().to_string_lossy().into_owned();
        if registry.file_type().is_ok_and(|t| t.is_dir()) {
            w.repo_dir(&registry.path(), &name, "");
        }
    }
    let mut out = w.out;
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.image.cmp(&b.image)));
    out.truncate(KEEP);
    out
}

impl Walk<'_> {
    /// Visits `dir`, the directory of repository `name` (empty at the registry's top), and the
    /// repositories nested below it.
    fn repo_dir(&mut self, dir: &Path, registry: &str, name: &str) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut blobs: Vec<String> = Vec::new();
        let mut manifests: Vec<String> = Vec::new();
        let mut tags = 0u64;
        let mut children = Vec::new();
        for entry in entries.flatten() {
            if self.budget == 0 {
                break;
            }
            self.budget -= 1;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            match file_name.as_str() {
                "_blobs" => blobs.extend(self.list(&entry.path())),
                "_manifests" => manifests.extend(self.list(&entry.path())),
                "_tags" => tags = self.list(&entry.path()).len() as u64,
                n if n.starts_with('_') => {}
                _ if entry.file_type().is_ok_and(|t| t.is_dir()) => {
                    children.push((entry.path(), file_name))
                }
                _ => {}
            }
        }
        let holds_objects = !blobs.is_empty() || !manifests.is_empty();
        if !name.is_empty() && holds_objects {
            let index = lock(self.index);
            let sizes = |top: &str, hexes: &[String]| -> Vec<u64> {
                hexes
                    .iter()
                    .filter_map(|h| {
                        let shard = h.get(..2).filter(|_| h.len() > 2)?;
                        index.size_of(&Path::new(top).join(shard).join(h))
                    })
                    .collect()
            };
            let blob_sizes = sizes("blobs/sha256", &blobs);
            let manifest_bytes: u64 = sizes("manifests/sha256", &manifests).iter().sum();
            drop(index);
            let bytes = blob_sizes.iter().sum::<u64>() + manifest_bytes;
            // Links to objects no longer (or not yet) in the store count for nothing.
            if bytes > 0 {
                self.out.push(RepoSize {
                    image: format!("{registry}/{name}"),
                    bytes,
                    blobs: blob_sizes.len() as u64,
                    tags,
                });
            }
        }
        for (path, child) in children {
            let child_name = if name.is_empty() {
                child
            } else {
                format!("{name}/{child}")
            };
            self.repo_dir(&path, registry, &child_name);
        }
    }

    fn list(&mut self, dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if self.budget == 0 {
                break;
            }
            self.budget -= 1;
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
        out
    }
}
