//! `cache ls`: what the store holds, read from its files alone (safe beside a running proxy: only
//! committed objects are read, never `tmp/`). Registries and repositories come from `repos/`, tags
//! from their records, images from the manifests the repositories hold: an index leads to its
//! platforms' manifests, a manifest to its config and layers. Every image says how many bytes of it
//! are cached, how many are its alone and how many it shares with other images, and when it was
//! last used (the newest mtime of its manifests, which the proxy rewrites on use).
//!
//! The JSON form ([`Catalog`], `cache ls --json`, `GET /admin/cache`) is a stable schema, named by
//! its `schema` field; fields are only ever added.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::{CacheError, TagRecord, check_cache_dir, io_err};
use crate::registry::digest::Digest;
use crate::registry::manifest::{self, Manifest, Platform};

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

/// An object in the store, by kind and hex digest.
pub(crate) type ObjKey = (ObjectKind, String);

/// A committed file: size and last use (mtime).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileInfo {
    pub(crate) size: u64,
    pub(crate) mtime: u64,
}

/// The store as read from disk: objects, and per repository its tags and links.
pub(crate) struct Scan {
    pub(crate) root: PathBuf,
    pub(crate) blobs: HashMap<String, FileInfo>,
    pub(crate) manifests: HashMap<String, FileInfo>,
    pub(crate) repos: Vec<RepoScan>,
}

pub(crate) struct RepoScan {
    pub(crate) registry: String,
    pub(crate) name: String,
    /// `repos/<registry>/<name>`.
    pub(crate) dir: PathBuf,
    pub(crate) public: bool,
    /// Tag → its records (file, content), one per Accept set.
    pub(crate) tags: BTreeMap<String, Vec<(PathBuf, TagRecord)>>,
    pub(crate) manifest_links: BTreeSet<String>,
    pub(crate) blob_links: BTreeSet<String>,
}

/// An image as the scan found it.
pub(crate) struct Image {
    /// Index into `Scan::repos`.
    pub(crate) repo: usize,
    pub(crate) root: String,
    pub(crate) media_type: String,
    pub(crate) is_index: bool,
    pub(crate) tags: Vec<String>,
    /// Platforms of an index: (platform, child hex).
    pub(crate) platforms: Vec<(Option<Platform>, String)>,
    /// Every object it uses with its role and declared size, root first.
    pub(crate) objects: Vec<(ObjKey, &'static str, u64)>,
    /// Manifests of this image (root and children) that are cached.
    pub(crate) last_used: Option<u64>,
}

impl Scan {
    /// Reads the store at `root` (which must be a cache).
    pub(crate) fn load(root: &Path) -> Result<Scan, CacheError> {
        check_cache_dir(root)?;
        let blobs = scan_objects(&root.join("blobs/sha256"))?;
        let manifests = scan_objects(&root.join("manifests/sha256"))?;
        let mut repos = Vec::new();
        let repos_dir = root.join("repos");
        match std::fs::read_dir(&repos_dir) {
            Ok(entries) => {
                let mut registries: Vec<(String, PathBuf)> = entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| Some((e.file_name().to_str()?.to_owned(), e.path())))
                    .collect();
                registries.sort();
                for (registry, dir) in registries {
                    walk_repos(&registry, &dir, "", &mut repos);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&repos_dir)(e)),
        }
        Ok(Scan {
            root: root.to_path_buf(),
            blobs,
            manifests,
            repos,
        })
    }

    fn info(&self, key: &ObjKey) -> Option<FileInfo> {
        match key.0 {
            ObjectKind::Blob => self.blobs.get(&key.1).copied(),
            ObjectKind::Manifest => self.manifests.get(&key.1).copied(),
        }
    }

    /// A cached manifest, parsed, with its stored media type.
    fn manifest(&self, hex: &str) -> Option<(Manifest, String)> {
        self.manifests.get(hex)?;
        let path = self.root.join(manifest_rel(hex));
        let bytes = std::fs::read(&path).ok()?;
        let media_type = std::fs::read_to_string(path.with_extension("type")).unwrap_or_default();
        let parsed = manifest::parse(&bytes, &media_type).ok()?;
        Some((parsed, media_type))
    }

    /// The images of every repository.
    pub(crate) fn images(&self) -> Vec<Image> {
        let mut parsed: HashMap<String, Option<(Manifest, String)>> = HashMap::new();
        let mut get = |hex: &str| -> Option<(Manifest, String)> {
            parsed
                .entry(hex.to_owned())
                .or_insert_with(|| self.manifest(hex))
                .clone()
        };
        let mut out = Vec::new();
        for (index, repo) in self.repos.iter().enumerate() {
            let mut tagged: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (tag, records) in &repo.tags {
                for (_, record) in records {
                    if let Some(hex) = sha256_hex(&record.digest) {
                        let tags = tagged.entry(hex.to_owned()).or_default();
                        if !tags.contains(tag) {
                            tags.push(tag.clone());
                        }
                    }
                }
            }
            // Platforms of an index this repository holds are part of that image, not images.
            let mut children = BTreeSet::new();
            for hex in repo.manifest_links.iter().chain(tagged.keys()) {
                if let Some((Manifest::Index { manifests }, _)) = get(hex) {
                    children.extend(
                        manifests
                            .iter()
                            .filter_map(|d| sha256_hex(d.digest.as_str()).map(str::to_owned)),
                    );
                }
            }
            let roots: BTreeSet<&String> =
                tagged
                    .keys()
                    .chain(repo.manifest_links.iter().filter(|hex| {
                        !children.contains(*hex) && self.manifests.contains_key(*hex)
                    }))
                    .collect();
            for root in roots {
                let tags = tagged.get(root).cloned().unwrap_or_default();
                let tag_type = repo
                    .tags
                    .values()
                    .flatten()
                    .find(|(_, r)| sha256_hex(&r.digest) == Some(root.as_str()))
                    .map(|(_, r)| r.media_type.clone());
                let mut image = Image {
                    repo: index,
                    root: root.clone(),
                    media_type: tag_type.unwrap_or_default(),
                    is_index: false,
                    tags,
                    platforms: Vec::new(),
                    objects: vec![((ObjectKind::Manifest, root.clone()), "manifest", 0)],
                    last_used: None,
                };
                match get(root) {
                    Some((Manifest::Index { manifests }, media_type)) => {
                        image.is_index = true;
                        image.media_type = media_type;
                        for child in manifests {
                            let Some(hex) = sha256_hex(child.digest.as_str()) else {
                                continue;
                            };
                            image
                                .platforms
                                .push((child.platform.clone(), hex.to_owned()));
                            image.objects.push((
                                (ObjectKind::Manifest, hex.to_owned()),
                                "manifest",
                                child.size,
                            ));
                            if let Some((m, _)) = get(hex) {
                                push_image_objects(&mut image.objects, &m);
                            }
                        }
                    }
                    Some((m, media_type)) => {
                        image.media_type = media_type;
                        push_image_objects(&mut image.objects, &m);
                    }
                    None => {}
                }
                dedup_objects(&mut image.objects);
                image.last_used = image
                    .objects
                    .iter()
                    .filter(|(key, _, _)| key.0 == ObjectKind::Manifest)
                    .filter_map(|(key, _, _)| self.info(key))
                    .map(|i| i.mtime)
                    .max();
                out.push(image);
            }
        }
        out
    }

    /// How many images use each object.
    pub(crate) fn users(images: &[Image]) -> HashMap<ObjKey, u64> {
        let mut users: HashMap<ObjKey, u64> = HashMap::new();
        for image in images {
            for (key, _, _) in &image.objects {
                *users.entry(key.clone()).or_default() += 1;
            }
        }
        users
    }
}

fn push_image_objects(objects: &mut Vec<(ObjKey, &'static str, u64)>, m: &Manifest) {
    if let Manifest::Image { config, layers } = m {
        for (d, role) in config
            .iter()
            .map(|d| (d, "config"))
            .chain(layers.iter().map(|d| (d, "layer")))
        {
            if let Some(hex) = sha256_hex(d.digest.as_str()) {
                objects.push(((ObjectKind::Blob, hex.to_owned()), role, d.size));
            }
        }
    }
}

/// Keeps the first occurrence of each object.
fn dedup_objects(objects: &mut Vec<(ObjKey, &'static str, u64)>) {
    let mut seen = BTreeSet::new();
    objects.retain(|(key, _, _)| seen.insert(key.clone()));
}

/// The hex part of a `sha256:` digest (validated), the only kind the store keeps.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let parsed = Digest::parse(digest).ok()?;
    if !parsed.is_sha256() {
        return None;
    }
    digest.strip_prefix("sha256:")
}

pub(crate) fn blob_rel(hex: &str) -> PathBuf {
    PathBuf::from(format!("blobs/sha256/{}/{hex}", &hex[..2.min(hex.len())]))
}

pub(crate) fn manifest_rel(hex: &str) -> PathBuf {
    PathBuf::from(format!(
        "manifests/sha256/{}/{hex}",
        &hex[..2.min(hex.len())]
    ))
}

pub(crate) fn rel_path(key: &ObjKey) -> PathBuf {
    match key.0 {
        ObjectKind::Blob => blob_rel(&key.1),
        ObjectKind::Manifest => manifest_rel(&key.1),
    }
}

fn mtime_secs(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Committed objects under `blobs/sha256` or `manifests/sha256`: hex → size and mtime. Names that
/// are not 64 hex digits (side files, strays) are skipped.
fn scan_objects(top: &Path) -> Result<HashMap<String, FileInfo>, CacheError> {
    let mut out = HashMap::new();
    let shards = match std::fs::read_dir(top) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(top)(e)),
    };
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            let Some(name) = file.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.insert(
                name,
                FileInfo {
                    size: meta.len(),
                    mtime: mtime_secs(&meta),
                },
            );
        }
    }
    Ok(out)
}

/// Finds repositories under a registry directory: a directory holding `_tags`, `_manifests`,
/// `_blobs` or `_public` is one (repository components never start with `_`); its other
/// subdirectories may hold deeper ones.
fn walk_repos(registry: &str, dir: &Path, name: &str, out: &mut Vec<RepoScan>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs = Vec::new();
    let mut is_repo = false;
    for entry in entries.flatten() {
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file_name.starts_with('_') {
            is_repo = true;
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
            subdirs.push(file_name);
        }
    }
    if is_repo && !name.is_empty() {
        out.push(RepoScan {
            registry: registry.to_owned(),
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            public: dir.join("_public").exists(),
            tags: read_tags(&dir.join("_tags")),
            manifest_links: read_links(&dir.join("_manifests")),
            blob_links: read_links(&dir.join("_blobs")),
        });
    }
    subdirs.sort();
    for sub in subdirs {
        let child = if name.is_empty() {
            sub.clone()
        } else {
            format!("{name}/{sub}")
        };
        walk_repos(registry, &dir.join(&sub), &child, out);
    }
}

fn read_links(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

fn read_tags(dir: &Path) -> BTreeMap<String, Vec<(PathBuf, TagRecord)>> {
    let mut out = BTreeMap::new();
    let Ok(tags) = std::fs::read_dir(dir) else {
        return out;
    };
    for tag in tags.flatten() {
        let Some(name) = tag.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(records) = std::fs::read_dir(tag.path()) else {
            continue;
        };
        let mut list = Vec::new();
        for record in records.flatten() {
            let path = record.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if let Ok(parsed) = serde_json::from_slice::<TagRecord>(&bytes) {
                list.push((path, parsed));
            }
        }
        if !list.is_empty() {
            list.sort_by(|a, b| a.0.cmp(&b.0));
            out.insert(name, list);
        }
    }
    out
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

/// Bytes for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An age for people: `45s`, `12m`, `3h`, `20d`.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

impl Catalog {
    /// The human table: one line per image, then totals.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 7]> = vec![[
            "IMAGE".into(),
            "DIGEST".into(),
            "PLATFORMS".into(),
            "SIZE".into(),
            "UNIQUE".into(),
            "SHARED".into(),
            "LAST USED".into(),
        ]];
        for registry in &self.registries {
            for repo in &registry.repositories {
                for image in &repo.images {
                    let name = format!("{}/{}", registry.name, repo.name);
                    let name = if image.tags.is_empty() {
                        format!("{name} (untagged)")
                    } else {
                        format!("{name}:{}", image.tags.join(","))
                    };
                    let platforms = if image.kind == "index" {
                        let cached: Vec<&str> = image
                            .platforms
                            .iter()
                            .filter(|p| p.cached && p.platform != "unknown/unknown")
                            .map(|p| p.platform.as_str())
                            .collect();
                        let all = image
                            .platforms
                            .iter()
                            .filter(|p| p.platform != "unknown/unknown")
                            .count();
                        format!("{} ({}/{all})", cached.join(","), cached.len())
                    } else {
                        "-".into()
                    };
                    let short = image.digest.get(..19).unwrap_or(&image.digest).to_owned();
                    let last = match image.last_used {
                        Some(t) => {
                            format!("{} ago", human_age(self.generated_at.saturating_sub(t)))
                        }
                        None => "-".into(),
                    };
                    let mut size = human_bytes(image.bytes);
                    if !image.cached {
                        size = "not cached".into();
                    } else if image.missing_bytes > 0 {
                        size.push('+');
                    }
                    rows.push([
                        name,
                        short,
                        platforms,
                        size,
                        human_bytes(image.unique_bytes),
                        human_bytes(image.shared_bytes),
                        last,
                    ]);
                }
            }
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "\n{} images in {} repositories; {} objects, {} ({} blobs, {} manifests)",
            t.images,
            self.registries
                .iter()
                .map(|r| r.repositories.len())
                .sum::<usize>(),
            t.objects,
            human_bytes(t.bytes),
            t.blobs,
            t.manifests
        );
        let _ = writeln!(
            out,
            "shared by several images: {} objects, {}; used by no image: {} objects, {}",
            t.shared_objects,
            human_bytes(t.shared_bytes),
            t.unreferenced_objects,
            human_bytes(t.unreferenced_bytes)
        );
        if rows.len() > 1 {
            out.push_str("(SIZE ends in + when some platforms or layers are not cached)\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(3 * 3600), "3h");
        assert_eq!(human_age(40 * 86_400), "40d");
    }
}
