//! `registry-proxy cache verify`: rehashes every blob and manifest in the store and removes any
//! whose content does not match its digest (disk corruption, manual tampering, a power loss).
//! It refuses a directory that is not a cache, and never looks into `tmp/`: the files there are
//! downloads in flight of a proxy running on the same store (leftovers of a crash are removed by
//! the next proxy to start).

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use super::{CacheError, check_cache_dir, io_err};
use crate::registry::digest::Digest;

/// What a verification pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    pub corrupt: u64,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checked {} objects ({} bytes): {} corrupt removed",
            self.checked, self.bytes, self.corrupt
        )
    }
}

/// Verifies the store at `root`; safe while a proxy runs on it (a file is removed only once its
/// content is known to be wrong, and only committed files are read).
pub fn verify(root: &Path) -> Result<VerifyReport, CacheError> {
    check_cache_dir(root)?;
    let mut report = VerifyReport::default();
    for top in ["blobs/sha256", "manifests/sha256"] {
        let Ok(shards) = std::fs::read_dir(root.join(top)) else {
            continue;
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                if name.contains('.') {
                    continue;
                }
                let (hex, len) = match hash_file(&path) {
                    Ok(hashed) => hashed,
                    // Evicted or purged meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                };
                report.checked += 1;
                report.bytes += len;
                if hex != name {
                    tracing::warn!(path = %path.display(), actual = %hex, "corrupt cache entry removed");
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&path)(e)),
                    }
                    let _ = std::fs::remove_file(path.with_extension("type"));
                    report.corrupt += 1;
                }
            }
        }
    }
    Ok(report)
}

fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        len += n as u64;
    }
    let hex = Digest::from_ring(&ctx.finish()).map_or_else(String::new, |d| d.encoded().to_owned());
    Ok((hex, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_corrupt_and_keeps_good() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"hello";
        let good_hex: String = ring::digest::digest(&ring::digest::SHA256, good)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let shard = dir.path().join("blobs/sha256").join(&good_hex[..2]);
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join(&good_hex), good).unwrap();
        let bad_hex = "ab".repeat(32);
        let bad_shard = dir.path().join("blobs/sha256/ab");
        std::fs::create_dir_all(&bad_shard).unwrap();
        std::fs::write(bad_shard.join(&bad_hex), b"not what the name says").unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/123-0"), b"partial").unwrap();

        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        std::fs::create_dir_all(dir.path().join("manifests/sha256")).unwrap();

        let report = verify(dir.path()).unwrap();
        assert_eq!(report.checked, 2);
        assert_eq!(report.corrupt, 1);
        assert!(shard.join(&good_hex).exists());
        assert!(!bad_shard.join(&bad_hex).exists());
        assert!(
            dir.path().join("tmp/123-0").exists(),
            "a download in flight is left alone"
        );
    }

    #[test]
    fn refuses_what_is_not_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert!(matches!(
            verify(dir.path()),
            Err(CacheError::NotACache { .. })
        ));
        assert!(matches!(
            verify(&dir.path().join("typo")),
            Err(CacheError::NotACache { .. })
        ));
        assert!(!dir.path().join("typo").exists(), "nothing is created");
    }
}
