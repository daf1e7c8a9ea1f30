//! `cache purge`: removes images by reference, by repository glob or by age, with every blob and
//! manifest no remaining image uses. Safe beside a running proxy: only committed files are
//! removed (never anything under `tmp/`, where downloads in flight live), by unlinking them, and
//! the store is read again just before objects go, so that a manifest committed meanwhile keeps
//! what it refers to.
//!
//! Removing a tag whose image keeps other tags only removes the tag (as `docker rmi` untags);
//! removing an image's last tag, its digest, or its whole repository removes the image.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::catalog::{ObjKey, ObjectKind, Scan, human_bytes, rel_path, sha256_hex};
use super::{CacheError, unix_now};
use crate::registry::host::RegistryHost;
use crate::registry::image::ImageRef;
use crate::registry::reference::Reference;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    /// One image: `registry/repo:tag` or `registry/repo@sha256:…`.
    Image(ImageRef),
    /// Every image of the repositories matching `registry/repository` (`*` any run of characters,
    /// `/` included; `?` one character other than `/`).
    Glob(String),
}

impl PurgeTarget {
    /// A glob if it has `*` or `?`, else an image reference (normalised as `docker pull` does).
    pub fn parse(s: &str) -> Result<PurgeTarget, CacheError> {
        let s = s.trim();
        if !s.contains(['*', '?']) {
            return ImageRef::parse(s)
                .map(PurgeTarget::Image)
                .map_err(|e| CacheError::Purge(e.to_string()));
        }
        let bad = |why: &str| CacheError::Purge(format!("repository glob {s:?}: {why}"));
        if !s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'.' | b'_' | b'-' | b':' | b'[' | b']' | b'/' | b'*' | b'?'
                )
        }) {
            return Err(bad(
                "only registry and repository name characters, * and ? are allowed",
            ));
        }
        let (first, rest) = s.split_once('/').unwrap_or((s, ""));
        if first == "*" || first.contains(['*', '?']) {
            return Ok(PurgeTarget::Glob(s.to_ascii_lowercase()));
        }
        if !RegistryHost::looks_like_host(first) {
            // `library/*` means Docker Hub, as `library/alpine` would.
            return Ok(PurgeTarget::Glob(format!("docker.io/{s}")));
        }
        let host = RegistryHost::parse(first).map_err(|e| bad(&e.to_string()))?;
        if rest.is_empty() {
            return Err(bad("expected registry/repository-glob, e.g. quay.io/org/*"));
        }
        // `docker.io/alp*` means `docker.io/library/alp*`, as `docker.io/alpine` would.
        let rest = if host.is_docker_hub() && !rest.contains('/') && rest != "*" {
            format!("library/{rest}")
        } else {
            rest.to_owned()
        };
        Ok(PurgeTarget::Glob(format!("{host}/{rest}")))
    }
}

impl fmt::Display for PurgeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PurgeTarget::Image(r) => write!(f, "{r}"),
            PurgeTarget::Glob(g) => f.write_str(g),
        }
    }
}

/// A purge: what, how old at least, and whether to only say what would go.
#[derive(Debug, Clone, Default)]
pub struct PurgeRequest {
    pub target: Option<PurgeTarget>,
    /// Only images whose last use is at least this long ago (images with no cached manifest count
    /// as old).
    pub older_than: Option<Duration>,
    pub dry_run: bool,
}

/// What a purge removed (or, with `dry_run`, would remove). Its JSON form is part of the admin
/// API (`POST /admin/cache/purge`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    /// Images removed: `registry/repo@digest` with the tags they had.
    pub images: Vec<PurgedImage>,
    /// Tags removed whose image stays (it has other tags): `registry/repo:tag`.
    pub untagged: Vec<String>,
    pub removed_objects: Vec<RemovedObject>,
    /// Objects of removed images that stay because other images use them.
    pub kept_shared: u64,
    pub removed_links: u64,
    pub removed_tags: u64,
    pub bytes_freed: u64,
    /// The same purge in the shared bucket (`STORAGE=s3://…`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<Box<PurgeReport>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PurgedImage {
    pub image: String,
    pub tags: Vec<String>,
    pub last_used: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemovedObject {
    pub kind: ObjectKind,
    pub digest: String,
    pub size: u64,
}

impl RemovedObject {
    /// The object's path relative to the cache root.
    pub fn rel_path(&self) -> PathBuf {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(&self.digest);
        rel_path(&(self.kind, hex.to_owned()))
    }
}

impl fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for image in &self.images {
            if image.tags.is_empty() {
                writeln!(f, "{verb} image {}", image.image)?;
            } else {
                writeln!(
                    f,
                    "{verb} image {} (tags {})",
                    image.image,
                    image.tags.join(", ")
                )?;
            }
        }
        for tag in &self.untagged {
            writeln!(f, "{verb} tag {tag} (its image has other tags and stays)")?;
        }
        for object in &self.removed_objects {
            let kind = match object.kind {
                ObjectKind::Blob => "blob",
                ObjectKind::Manifest => "manifest",
            };
            writeln!(
                f,
                "{verb} {kind} {} ({})",
                object.digest,
                human_bytes(object.size)
            )?;
        }
        write!(
            f,
            "{} {} images, {} objects, {} links, {} tag records; {} objects kept (other images use them); {} {}",
            if self.dry_run {
                "would remove"
            } else {
                "removed"
            },
            self.images.len(),
            self.removed_objects.len(),
            self.removed_links,
            self.removed_tags,
            self.kept_shared,
            if self.dry_run { "would free" } else { "freed" },
            human_bytes(self.bytes_freed)
        )?;
        if let Some(bucket) = &self.bucket {
            write!(f, "\nobject store:\n{bucket}")?;
        }
        Ok(())
    }
}

/// Purges the cache at `root`.
pub fn purge(root: &Path, req: &PurgeRequest) -> Result<PurgeReport, CacheError> {
    if req.target.is_none() && req.older_than.is_none() {
        return Err(CacheError::Purge(
            "name an image, a repository glob or --older-than".into(),
        ));
    }
    let scan = Scan::load(root)?;
    let images = scan.images();
    let now = unix_now();
    let old_enough = |last_used: Option<u64>| match req.older_than {
        None => true,
        Some(age) => last_used.is_none_or(|t| now.saturating_sub(t) >= age.as_secs()),
    };

    let mut selected: BTreeSet<usize> = BTreeSet::new();
    let mut tags: BTreeSet<(usize, String)> = BTreeSet::new();
    let mut whole_repos: BTreeSet<usize> = BTreeSet::new();
    let mut untagged = Vec::new();
    match &req.target {
        None => selected.extend(
            images
                .iter()
                .enumerate()
                .filter(|(_, image)| old_enough(image.last_used))
                .map(|(i, _)| i),
        ),
        Some(PurgeTarget::Glob(glob)) => {
            let repos: Vec<usize> = scan
                .repos
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    crate::access::rules::glob_matches(
                        glob.as_bytes(),
                        format!("{}/{}", r.registry, r.name).as_bytes(),
                    )
                })
                .map(|(i, _)| i)
                .collect();
            if repos.is_empty() {
                return Err(CacheError::Purge(format!(
                    "no cached repository matches {glob}"
                )));
            }
            if req.older_than.is_none() {
                whole_repos.extend(repos.iter().copied());
            }
            selected.extend(
                images
                    .iter()
                    .enumerate()
                    .filter(|(_, image)| repos.contains(&image.repo) && old_enough(image.last_used))
                    .map(|(i, _)| i),
            );
        }
        Some(PurgeTarget::Image(image_ref)) => {
            let registry = image_ref.registry.to_string();
            let Some(repo) = scan
                .repos
                .iter()
                .position(|r| r.registry == registry && r.name == image_ref.repo.as_str())
            else {
                return Err(CacheError::Purge(format!(
                    "{}/{} is not in the cache",
                    image_ref.registry, image_ref.repo
                )));
            };
            match &image_ref.reference {
                Reference::Tag(tag) => {
                    if !scan.repos[repo].tags.contains_key(tag) {
                        return Err(CacheError::Purge(format!(
                            "{image_ref} is not in the cache"
                        )));
                    }
                    for (i, image) in images.iter().enumerate() {
                        if image.repo != repo
                            || !image.tags.contains(tag)
                            || !old_enough(image.last_used)
                        {
                            continue;
                        }
                        tags.insert((repo, tag.clone()));
                        if image.tags.iter().all(|t| t == tag) {
                            selected.insert(i);
                        } else {
                            untagged.push(format!("{image_ref}"));
                        }
                    }
                }
                Reference::Digest(digest) => {
                    let hex = sha256_hex(digest.as_str()).unwrap_or_default();
                    let found = images
                        .iter()
                        .enumerate()
                        .find(|(_, image)| image.repo == repo && image.root == hex);
                    match found {
                        Some((i, image)) => {
                            if old_enough(image.last_used) {
                                selected.insert(i);
                            }
                        }
                        None => {
                            let parent = images.iter().find(|image| {
                                image.repo == repo && image.platforms.iter().any(|(_, h)| h == hex)
                            });
                            return Err(CacheError::Purge(match parent {
                                Some(parent) => format!(
                                    "{image_ref} is one platform of the image {}/{}@sha256:{}; purge that image",
                                    image_ref.registry, image_ref.repo, parent.root
                                ),
                                None => format!("{image_ref} is not in the cache"),
                            }));
                        }
                    }
                }
            }
        }
    }
    for &i in &selected {
        for tag in &images[i].tags {
            tags.insert((images[i].repo, tag.clone()));
        }
    }

    // What the images that stay use, everywhere and per repository.
    let mut kept_keys: HashSet<ObjKey> = HashSet::new();
    let mut kept_by_repo: HashMap<usize, HashSet<ObjKey>> = HashMap::new();
    for (i, image) in images.iter().enumerate() {
        if selected.contains(&i) {
            continue;
        }
        for (key, _, _) in &image.objects {
            kept_keys.insert(key.clone());
            kept_by_repo
                .entry(image.repo)
                .or_default()
                .insert(key.clone());
        }
    }
    let empty = HashSet::new();

    let mut report = PurgeReport {
        dry_run: req.dry_run,
        untagged,
        ..PurgeReport::default()
    };
    let mut tag_files: Vec<PathBuf> = Vec::new();
    for (repo, tag) in &tags {
        if let Some(records) = scan.repos[*repo].tags.get(tag) {
            tag_files.extend(records.iter().map(|(path, _)| path.clone()));
        }
    }
    let mut links: BTreeSet<PathBuf> = BTreeSet::new();
    let mut victims: BTreeMap<ObjKey, u64> = BTreeMap::new();
    let mut kept_shared: BTreeSet<ObjKey> = BTreeSet::new();
    for &i in &selected {
        let image = &images[i];
        let repo = &scan.repos[image.repo];
        let kept_here = kept_by_repo.get(&image.repo).unwrap_or(&empty);
        for (key, _, _) in &image.objects {
            if !kept_here.contains(key) {
                let (dir, set) = match key.0 {
                    ObjectKind::Manifest => ("_manifests", &repo.manifest_links),
                    ObjectKind::Blob => ("_blobs", &repo.blob_links),
                };
                if set.contains(&key.1) {
                    links.insert(repo.dir.join(dir).join(&key.1));
                }
            }
            let Some(size) = object_size(&scan, key) else {
                continue;
            };
            if kept_keys.contains(key) {
                kept_shared.insert(key.clone());
            } else {
                victims.insert(key.clone(), size);
            }
        }
        report.images.push(PurgedImage {
            image: format!("{}/{}@sha256:{}", repo.registry, repo.name, image.root),
            tags: image.tags.clone(),
            last_used: image.last_used,
        });
    }
    for &repo in &whole_repos {
        let r = &scan.repos[repo];
        let kept_here = kept_by_repo.get(&repo).unwrap_or(&empty);
        for (dir, kind, set) in [
            ("_manifests", ObjectKind::Manifest, &r.manifest_links),
            ("_blobs", ObjectKind::Blob, &r.blob_links),
        ] {
            for hex in set {
                if !kept_here.contains(&(kind, hex.clone())) {
                    links.insert(r.dir.join(dir).join(hex));
                }
            }
        }
    }
    report.kept_shared = kept_shared.len() as u64;

    if req.dry_run {
        report.removed_tags = tag_files.len() as u64;
        report.removed_links = links.len() as u64;
        for (key, size) in victims {
            report.bytes_freed += size;
            report.removed_objects.push(removed(key, size));
        }
        return Ok(report);
    }

    for path in &tag_files {
        if remove_file(path) {
            report.removed_tags += 1;
        }
    }
    for path in &links {
        if remove_file(path) {
            report.removed_links += 1;
        }
    }
    for &repo in &whole_repos {
        remove_file(&scan.repos[repo].dir.join("_public"));
    }
    // A manifest committed since the scan keeps what it refers to.
    let after = Scan::load(root)?;
    let still_used = Scan::users(&after.images());
    for (key, size) in victims {
        if still_used.contains_key(&key) {
            report.kept_shared += 1;
            continue;
        }
        let path = root.join(rel_path(&key));
        if remove_file(&path) {
            if key.0 == ObjectKind::Manifest {
                remove_file(&path.with_extension("type"));
            }
            report.bytes_freed += size;
            report.removed_objects.push(removed(key, size));
        }
    }
    // Empty directories of the repositories touched, up to `repos/<registry>`.
    let touched: BTreeSet<usize> = selected
        .iter()
        .map(|&i| images[i].repo)
        .chain(tags.iter().map(|(r, _)| *r))
        .chain(whole_repos.iter().copied())
        .collect();
    for repo in touched {
        let r = &scan.repos[repo];
        for (_, tag) in tags.iter().filter(|(t, _)| *t == repo) {
            let _ = std::fs::remove_dir(r.dir.join("_tags").join(tag));
        }
        for dir in ["_tags", "_manifests", "_blobs"] {
            let _ = std::fs::remove_dir(r.dir.join(dir));
        }
        // Nothing left of the repository: its "served anonymously" note goes too (re-learned
        // upstream on the next pull).
        if ["_tags", "_manifests", "_blobs"]
            .iter()
            .all(|d| !r.dir.join(d).exists())
        {
            remove_file(&r.dir.join("_public"));
        }
        let stop = root.join("repos");
        let mut dir = r.dir.clone();
        while dir.starts_with(&stop) && dir != stop && std::fs::remove_dir(&dir).is_ok() {
            if !dir.pop() {
                break;
            }
        }
    }
    Ok(report)
}

fn object_size(scan: &Scan, key: &ObjKey) -> Option<u64> {
    match key.0 {
        ObjectKind::Blob => scan.blobs.get(&key.1).map(|i| i.size),
        ObjectKind::Manifest => scan.manifests.get(&key.1).map(|i| i.size),
    }
}

fn removed(key: ObjKey, size: u64) -> RemovedObject {
    RemovedObject {
        kind: key.0,
        digest: format!("sha256:{}", key.1),
        size,
    }
}

/// Unlinks a committed file; true if it was there to remove.
fn remove_file(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let cases: &[(&str, &str)] = &[
            ("quay.io/org/*", "quay.io/org/*"),
            ("Quay.io/org/*", "quay.io/org/*"),
            ("library/*", "docker.io/library/*"),
            ("docker.io/alp*", "docker.io/library/alp*"),
            ("docker.io/*", "docker.io/*"),
            ("*", "*"),
            ("*/org/app", "*/org/app"),
            (
                "registry.local:5000/team/?pp",
                "registry.local:5000/team/?pp",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                PurgeTarget::parse(input).unwrap(),
                PurgeTarget::Glob((*want).to_owned()),
                "{input}"
            );
        }
        assert_eq!(
            PurgeTarget::parse("alpine").unwrap().to_string(),
            "docker.io/library/alpine:latest"
        );
        for bad in [
            "quay.io/*$(x)",
            "quay.io:0/*",
            "quay.io*/ org",
            "",
            "Alpine",
        ] {
            assert!(PurgeTarget::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            PurgeTarget::parse("quay.io").is_ok(),
            "an image called quay.io"
        );
    }
}
