//! The file `CACHE_DIR/.registry-proxy-cache`: it says "this directory is a registry-proxy cache"
//! (so that `cache verify`, `ls` and `purge` refuse a mistyped directory instead of reporting a
//! healthy empty cache), and it is the lock that tells processes sharing a store apart. Every
//! process that opens the store holds a shared `flock` on it for as long as it runs; the one that
//! finds nobody else holding it (an exclusive lock succeeds) may empty `tmp/`, because then no
//! download is in flight there.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use super::{CacheError, io_err, private};

/// The marker's file name, in the cache root.
pub const MARKER: &str = ".registry-proxy-cache";

const MARKER_TEXT: &[u8] =
    b"registry-proxy cache directory (blobs/, manifests/, repos/, tmp/); this file is its marker and lock\n";

/// Opens (creating) the marker and takes the shared lock. `true` with it when no other process had
/// the store open at that moment (so `tmp/` holds only leftovers).
pub(super) fn open_and_lock(root: &Path) -> Result<(File, bool), CacheError> {
    let path = root.join(MARKER);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(private::FILE_MODE)
        .open(&path)
        .map_err(io_err(&path))?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        let _ = std::io::Write::write_all(&mut &file, MARKER_TEXT);
    }
    let alone = match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => true,
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => false,
        Err(e) => {
            // A file system without locks: behave as a single process would.
            tracing::warn!(path = %path.display(), error = %e, "cannot lock the cache marker; assuming no other process uses this cache");
            return Ok((file, true));
        }
    };
    // Exclusive → shared, so that the next process sees someone is here but can join.
    if let Err(e) = flock(&file, FlockOperation::LockShared) {
        tracing::warn!(path = %path.display(), error = %e, "cannot hold the cache marker lock");
    }
    Ok((file, alone))
}

/// Checks that `root` is a cache: the marker is there, or the store's layout is (a cache made
/// before the marker existed). Never creates anything.
pub fn check_cache_dir(root: &Path) -> Result<(), CacheError> {
    let not_a_cache = || CacheError::NotACache {
        path: root.to_path_buf(),
    };
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(not_a_cache()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_a_cache()),
        Err(e) => return Err(io_err(root)(e)),
    }
    if root.join(MARKER).is_file() {
        return Ok(());
    }
    let layout = ["blobs/sha256", "manifests/sha256", "repos"]
        .iter()
        .all(|d| root.join(d).is_dir());
    if layout { Ok(()) } else { Err(not_a_cache()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_caches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(matches!(
            check_cache_dir(&root.join("missing")),
            Err(CacheError::NotACache { .. })
        ));
        assert!(matches!(
            check_cache_dir(root),
            Err(CacheError::NotACache { .. })
        ));
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(root.join("manifests/sha256")).unwrap();
        assert!(
            check_cache_dir(root).is_err(),
            "half a layout is not a cache"
        );
        std::fs::create_dir_all(root.join("repos")).unwrap();
        assert!(
            check_cache_dir(root).is_ok(),
            "an older cache without the marker"
        );

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(MARKER), b"").unwrap();
        assert!(check_cache_dir(other.path()).is_ok());
        std::fs::write(other.path().join("file"), b"").unwrap();
        assert!(check_cache_dir(&other.path().join("file")).is_err());
    }

    #[test]
    fn the_second_process_is_not_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (first, alone) = open_and_lock(dir.path()).unwrap();
        assert!(alone);
        // Another open file description behaves as another process would.
        let (second, alone) = open_and_lock(dir.path()).unwrap();
        assert!(!alone, "the first holder is still there");
        drop(first);
        drop(second);
        let (_third, alone) = open_and_lock(dir.path()).unwrap();
        assert!(alone, "locks go with their holders");
        assert!(
            std::fs::read_to_string(dir.path().join(MARKER))
                .unwrap()
                .starts_with("registry-proxy cache")
        );
    }
}
