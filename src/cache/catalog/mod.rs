//! `cache ls`: what the store holds, read from its files alone (safe beside a running proxy: only
//! committed objects are read, never `tmp/`). Registries and repositories come from `repos/`, tags
//! from their records, images from the manifests the repositories hold: an index leads to its
//! platforms' manifests, a manifest to its config and layers. Every image says how many bytes of it
//! are cached, how many are its alone and how many it shares with other images, and when it was
//! last used (the newest mtime of its manifests, which the proxy rewrites on use).
//!
//! The JSON form ([`Catalog`], `cache ls --json`, `GET /admin/cache`) is a stable schema, named by
//! its `schema` field; fields are only ever added.

mod report;
mod scan;

pub use report::{human_age, human_bytes};
pub(crate) use scan::{Image, ObjKey, Scan, rel_path, sha256_hex};
use scan::{dedup_objects, push_image_objects};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use super::CacheError;

/// The `schema` of [`Catalog`]'s JSON form.
pub const SCHEMA: &str = "registry-proxy.cache-ls.v1";

/// Everything `cache ls` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    pub cache_dir: String,
    /// When the listing was made, seconds since the epoch.
    pub generated_at: u64,
    pub totals: Totals,
    pub registries: Vec<RegistryEntry>,
}

/// Store-wide figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Committed blobs and manifests, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub manifests: u64,
    pub manifest_bytes: u64,
    pub images: u64,
    /// Cached objects no image refers to (blobs fetched alone, leftovers of evicted images).
    pub unreferenced_objects: u64,
    pub unreferenced_bytes: u64,
    /// Cached objects used by more than one image, and their bytes.
    pub shared_objects: u64,
    pub shared_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistryEntry {
    /// `docker.io`, `quay.io`, `registry.local:5000`.
    pub name: String,
    /// Bytes of the cached objects its images use (each counted once).
    pub bytes: u64,
    pub repositories: Vec<RepositoryEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepositoryEntry {
    /// `library/alpine`, `org/app`.
    pub name: String,
    /// Upstream was last seen serving it anonymously (`verify` mode records this).
    pub public: bool,
    /// Bytes of the cached objects its images use (each counted once).
    pub bytes: u64,
    pub tags: Vec<TagEntry>,
    pub images: Vec<ImageEntry>,
}

/// A tag and the manifest it resolves to (one entry per Accept set the proxy saw).
#[derive(Debug, Clone, Serialize)]
pub struct TagEntry {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// When upstream last confirmed the tag, seconds since the epoch.
    pub checked_at: u64,
}

/// An image: a manifest or index a repository holds that is not a platform of another one there.
#[derive(Debug, Clone, Serialize)]
pub struct ImageEntry {
    pub digest: String,
    pub media_type: String,
    /// `index` or `manifest`.
    pub kind: &'static str,
    /// Tags of the repository that resolve to it.
    pub tags: Vec<String>,
    /// False when the manifest itself is no longer cached (only its tag record is).
    pub cached: bool,
    /// For an index: its entries.
    pub platforms: Vec<PlatformEntry>,
    /// Bytes of its cached objects (manifests, configs, layers).
    pub bytes: u64,
    /// Bytes of the cached objects no other image uses (what purging it frees).
    pub unique_bytes: u64,
    /// Bytes of the cached objects other images use too.
    pub shared_bytes: u64,
    /// Declared bytes of the objects it refers to that are not cached.
    pub missing_bytes: u64,
    /// Newest last use of its manifests, seconds since the epoch (`None`: none cached).
    pub last_used: Option<u64>,
    pub objects: Vec<ObjectEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformEntry {
    /// `linux/arm64/v8`; `unknown/unknown` for attestations.
    pub platform: String,
    pub digest: String,
    pub cached: bool,
    /// Cached bytes of this platform's manifest, config and layers.
    pub bytes: u64,
}

/// One object an image uses.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectEntry {
    pub digest: String,
    /// `manifest`, `config` or `layer`.
    pub role: &'static str,
    /// Bytes on disk if cached, else the size the manifest declares.
    pub size: u64,
    pub cached: bool,
    /// How many images in the whole cache use it.
    pub images: u64,
}

/// Blob or manifest: where an object lives in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Blob,
    Manifest,
}

/// Lists the cache at `root`.
pub fn list(root: &Path) -> Result<Catalog, CacheError> {
    let scan = Scan::load(root)?;
    let images = scan.images();
    let users = Scan::users(&images);
    let mut totals = Totals {
        blobs: scan.blobs.len() as u64,
        blob_bytes: scan.blobs.values().map(|i| i.size).sum(),
        manifests: scan.manifests.len() as u64,
        manifest_bytes: scan.manifests.values().map(|i| i.size).sum(),
        images: images.len() as u64,
        ..Totals::default()
    };
    totals.objects = totals.blobs + totals.manifests;
    totals.bytes = totals.blob_bytes + totals.manifest_bytes;
    for (kind, map) in [
        (ObjectKind::Blob, &scan.blobs),
        (ObjectKind::Manifest, &scan.manifests),
    ] {
        for (hex, info) in map {
            match users.get(&(kind, hex.clone())).copied().unwrap_or(0) {
                0 => {
                    totals.unreferenced_objects += 1;
                    totals.unreferenced_bytes += info.size;
                }
                1 => {}
                _ => {
                    totals.shared_objects += 1;
                    totals.shared_bytes += info.size;
                }
            }
        }
    }

    let mut by_repo: BTreeMap<usize, Vec<&Image>> = BTreeMap::new();
    for image in &images {
        by_repo.entry(image.repo).or_default().push(image);
    }
    let mut registries: Vec<RegistryEntry> = Vec::new();
    let mut registry_objects: BTreeMap<String, BTreeSet<ObjKey>> = BTreeMap::new();
    for (index, repo) in scan.repos.iter().enumerate() {
        let repo_images = by_repo.get(&index).cloned().unwrap_or_default();
        let mut repo_objects = BTreeSet::new();
        let mut entries = Vec::new();
        for image in repo_images {
            repo_objects.extend(image.objects.iter().map(|(k, _, _)| k.clone()));
            entries.push(image_entry(&scan, &users, image));
        }
        let bytes = cached_bytes(&scan, repo_objects.iter());
        registry_objects
            .entry(repo.registry.clone())
            .or_default()
            .extend(repo_objects);
        let tags = repo
            .tags
            .iter()
            .flat_map(|(tag, records)| {
                records.iter().map(move |(_, r)| TagEntry {
                    tag: tag.clone(),
                    digest: r.digest.clone(),
                    media_type: r.media_type.clone(),
                    checked_at: r.checked_at,
                })
            })
            .collect();
        let entry = RepositoryEntry {
            name: repo.name.clone(),
            public: repo.public,
            bytes,
            tags,
            images: entries,
        };
        match registries.last_mut() {
            Some(r) if r.name == repo.registry => r.repositories.push(entry),
            _ => registries.push(RegistryEntry {
                name: repo.registry.clone(),
                bytes: 0,
                repositories: vec![entry],
            }),
        }
    }
    for registry in &mut registries {
        if let Some(objects) = registry_objects.get(&registry.name) {
            registry.bytes = cached_bytes(&scan, objects.iter());
        }
    }
    Ok(Catalog {
        schema: SCHEMA,
        cache_dir: root.display().to_string(),
        generated_at: super::unix_now(),
        totals,
        registries,
    })
}

fn cached_bytes<'a>(scan: &Scan, keys: impl Iterator<Item = &'a ObjKey>) -> u64 {
    keys.filter_map(|k| scan.info(k)).map(|i| i.size).sum()
}

fn image_entry(scan: &Scan, users: &HashMap<ObjKey, u64>, image: &Image) -> ImageEntry {
    let mut entry = ImageEntry {
        digest: format!("sha256:{}", image.root),
        media_type: image.media_type.clone(),
        kind: if image.is_index { "index" } else { "manifest" },
        tags: image.tags.clone(),
        cached: scan.manifests.contains_key(&image.root),
        platforms: Vec::new(),
        bytes: 0,
        unique_bytes: 0,
        shared_bytes: 0,
        missing_bytes: 0,
        last_used: image.last_used,
        objects: Vec::new(),
    };
    for (key, role, declared) in &image.objects {
        let info = scan.info(key);
        let count = users.get(key).copied().unwrap_or(0);
        match info {
            Some(i) => {
                entry.bytes += i.size;
                if count > 1 {
                    entry.shared_bytes += i.size;
                } else {
                    entry.unique_bytes += i.size;
                }
            }
            None => entry.missing_bytes += declared,
        }
        entry.objects.push(ObjectEntry {
            digest: format!("sha256:{}", key.1),
            role,
            size: info.map_or(*declared, |i| i.size),
            cached: info.is_some(),
            images: count,
        });
    }
    for (platform, hex) in &image.platforms {
        let mut bytes = scan.manifests.get(hex).map_or(0, |i| i.size);
        if let Some((m, _)) = scan.manifest(hex) {
            let mut objects = Vec::new();
            push_image_objects(&mut objects, &m);
            dedup_objects(&mut objects);
            bytes += cached_bytes(scan, objects.iter().map(|(k, _, _)| k));
        }
        entry.platforms.push(PlatformEntry {
            platform: platform
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), ToString::to_string),
            digest: format!("sha256:{hex}"),
            cached: scan.manifests.contains_key(hex),
            bytes,
        });
    }
    entry
}
