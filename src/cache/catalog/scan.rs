//! Reading the store's files for `cache ls` and `cache purge`: committed objects with their size
//! and last use, and per repository its tags, links and images (manifest walk: an index leads to
//! its platforms' manifests, a manifest to its config and layers).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::ObjectKind;
use crate::cache::{CacheError, TagRecord, check_cache_dir, io_err};
use crate::registry::digest::Digest;
use crate::registry::manifest::{self, Manifest, Platform};

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

    pub(super) fn info(&self, key: &ObjKey) -> Option<FileInfo> {
        match key.0 {
            ObjectKind::Blob => self.blobs.get(&key.1).copied(),
            ObjectKind::Manifest => self.manifests.get(&key.1).copied(),
        }
    }

    /// A cached manifest, parsed, with its stored media type.
    pub(super) fn manifest(&self, hex: &str) -> Option<(Manifest, String)> {
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

pub(super) fn push_image_objects(objects: &mut Vec<(ObjKey, &'static str, u64)>, m: &Manifest) {
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
pub(super) fn dedup_objects(objects: &mut Vec<(ObjKey, &'static str, u64)>) {
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
