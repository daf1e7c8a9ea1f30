//! The operator's view of the shared bucket: `cache purge` and `cache ls` with `STORAGE=s3://…`.
//!
//! Both run the local disk's own code (`purge.rs`, `catalog.rs`) over a **mirror** of the bucket's
//! metadata in a temporary directory: links and tag records as they are, manifests with their
//! media type, blobs as sparse files of their size whose modification time is their last use (the
//! later of their own write and their access record's, see `gc/`). Nothing of a blob's content is
//! downloaded. A purge then removes from the bucket exactly the objects the same purge removed
//! from the mirror, so the bucket and the local disk follow one rule: an image, a tag or a
//! repository goes with every blob and manifest no remaining image uses.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::catalog::{Catalog, list};
use super::gc::USED_DIR;
use super::key::ContentKind;
use super::marker::MARKER;
use super::purge::{PurgeReport, PurgeRequest, purge};
use super::store::SharedStore;
use super::{CacheError, io_err};

/// Purges the bucket behind `store` as `purge` would purge a local cache holding the same objects.
/// With `dry_run`, only says what would go.
pub async fn purge_bucket(
    store: &dyn SharedStore,
    request: &PurgeRequest,
) -> Result<PurgeReport, CacheError> {
    let dir = mirror(store).await?;
    let root = dir.path().to_path_buf();
    let before = files(&root)?;
    let request = request.clone();
    let (report, after) = tokio::task::spawn_blocking(move || {
        let report = purge(&root, &request)?;
        Ok::<_, CacheError>((report, files(&root)?))
    })
    .await
    .map_err(|e| CacheError::Io {
        path: dir.path().to_path_buf(),
        source: std::io::Error::other(e),
    })??;
    if report.dry_run {
        return Ok(report);
    }
    // Content first: a link or tag left without its object is a miss, never a wrong answer.
    let mut gone: Vec<&String> = before.difference(&after).collect();
    gone.sort_by_key(|path| !path.starts_with("blobs/") && !path.starts_with("manifests/"));
    for path in gone {
        store.delete_record(path).await.map_err(remote)?;
        if let Some(content) = path
            .strip_prefix("blobs/")
            .map(|_| path.as_str())
            .or_else(|| path.strip_prefix("manifests/").map(|_| path.as_str()))
        {
            store
                .delete_record(&format!("{USED_DIR}{content}"))
                .await
                .map_err(remote)?;
        }
    }
    Ok(report)
}

/// One report for a purge of the local disk (`local`) and of the bucket (`bucket`, if there is
/// one): the local report with the bucket's inside. "Not in the cache" is an error only if neither
/// holds the target.
pub fn combine(
    local: Result<PurgeReport, CacheError>,
    bucket: Option<Result<PurgeReport, CacheError>>,
    dry_run: bool,
) -> Result<PurgeReport, CacheError> {
    match (local, bucket) {
        (Ok(local), None) => Ok(local),
        (Ok(mut local), Some(Ok(bucket))) => {
            local.bucket = Some(Box::new(bucket));
            Ok(local)
        }
        (Ok(local), Some(Err(CacheError::Purge(_)))) => Ok(local),
        (Ok(_), Some(Err(e))) => Err(e),
        (Err(CacheError::Purge(_)), Some(Ok(bucket))) => Ok(PurgeReport {
            dry_run,
            bucket: Some(Box::new(bucket)),
            ..PurgeReport::default()
        }),
        (Err(e), _) => Err(e),
    }
}

/// What the bucket holds, as `cache ls` shows a local cache; `name` (`s3://bucket/prefix`) stands
/// in the listing's `cache_dir`.
pub async fn list_bucket(store: &dyn SharedStore, name: &str) -> Result<Catalog, CacheError> {
    let dir = mirror(store).await?;
    let root = dir.path().to_path_buf();
    let mut catalog = tokio::task::spawn_blocking(move || list(&root))
        .await
        .map_err(|e| CacheError::Io {
            path: dir.path().to_path_buf(),
            source: std::io::Error::other(e),
        })??;
    catalog.cache_dir = name.to_owned();
    Ok(catalog)
}

fn remote(e: super::StoreError) -> CacheError {
    CacheError::Io {
        path: PathBuf::from("(object store)"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Copies the bucket's metadata into a fresh temporary directory laid out as a cache.
async fn mirror(store: &dyn SharedStore) -> Result<Scratch, CacheError> {
    let dir = Scratch::new()?;
    let root = dir.path();
    for sub in ["blobs/sha256", "manifests/sha256", "repos"] {
        let path = root.join(sub);
        std::fs::create_dir_all(&path).map_err(io_err(&path))?;
    }
    std::fs::write(root.join(MARKER), b"").map_err(io_err(&root.join(MARKER)))?;

    let used: HashMap<String, SystemTime> = store
        .list_records(USED_DIR)
        .await
        .map_err(remote)?
        .into_iter()
        .filter_map(|(path, meta)| Some((path.strip_prefix(USED_DIR)?.to_owned(), meta.modified)))
        .collect();
    for listed in store.list(ContentKind::Blob).await.map_err(remote)? {
        let rel = listed.key.path();
        let last_use = used
            .get(&rel)
            .map_or(listed.meta.modified, |t| (*t).max(listed.meta.modified));
        let path = root.join(&rel);
        let file = create(&path)?;
        file.set_len(listed.meta.len).map_err(io_err(&path))?;
        file.set_modified(last_use).map_err(io_err(&path))?;
    }
    for listed in store.list(ContentKind::Manifest).await.map_err(remote)? {
        let Some(object) = store.get(&listed.key).await.map_err(remote)? else {
            continue;
        };
        let rel = listed.key.path();
        let path = root.join(&rel);
        write(&path, &object.bytes)?;
        write(
            &path.with_extension("type"),
            object.media_type.unwrap_or_default().as_bytes(),
        )?;
        let last_use = used
            .get(&rel)
            .map_or(listed.meta.modified, |t| (*t).max(listed.meta.modified));
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(last_use))
            .map_err(io_err(&path))?;
    }
    for (rel, _) in store.list_records("repos/").await.map_err(remote)? {
        if !safe_relative(&rel) {
            continue;
        }
        let path = root.join(&rel);
        if rel.contains("/_tags/") {
            match store.read_record(&rel).await.map_err(remote)? {
                Some(record) => write(&path, &record.bytes)?,
                None => continue,
            }
        } else {
            create(&path)?;
        }
    }
    Ok(dir)
}

/// A private temporary directory, removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, CacheError> {
        let path = std::env::temp_dir().join(format!(
            "registry-proxy-bucket-{}-{}",
            std::process::id(),
            super::gc::nonce()
        ));
        super::private::create_dir_all(&path).map_err(io_err(&path))?;
        Ok(Scratch(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A listed path that stays inside the mirror: no empty, `.` or `..` segment, no backslash.
fn safe_relative(rel: &str) -> bool {
    !rel.starts_with('/')
        && !rel.contains('\\')
        && rel
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

fn create(path: &Path) -> Result<File, CacheError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    File::create(path).map_err(io_err(path))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    use std::io::Write as _;
    create(path)?.write_all(bytes).map_err(io_err(path))
}

/// Every file under `root` but the marker and manifests' `.type` side files, relative.
fn files(root: &Path) -> Result<BTreeSet<String>, CacheError> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
                continue;
            }
            let Some(rel) = path
                .strip_prefix(root)
                .ok()
                .and_then(|p| p.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            if rel != MARKER && !rel.ends_with(".type") {
                out.insert(rel);
            }
        }
    }
    Ok(out)
}
