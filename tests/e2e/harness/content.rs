//! Content checks: what the clients wrote against the upstream's digests.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

pub(crate) fn sha256_file(path: &Path) -> String {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut hex = String::with_capacity(64);
    for b in ctx.finish().as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}

/// Checks a skopeo `dir:` copy against the upstream's digests: `manifest.json` hashes to
/// `top_digest`, every blob named in `blobs` is present, and every file named by a digest (blobs,
/// `<hex>.manifest.json` instance manifests of `--all`) hashes to its name.
pub(crate) fn verify_skopeo_dir(dir: &Path, top_digest: &str, blobs: &[String]) {
    assert_eq!(
        sha256_file(&dir.join("manifest.json")),
        hex_of(top_digest),
        "{}: manifest.json is not byte-identical to the upstream manifest",
        dir.display()
    );
    let mut seen = HashSet::new();
    for entry in std::fs::read_dir(dir).expect("read skopeo dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let hex = name.strip_suffix(".manifest.json").unwrap_or(&name);
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            assert_eq!(
                sha256_file(&entry.path()),
                hex,
                "{}: content differs from its digest",
                entry.path().display()
            );
            seen.insert(format!("sha256:{hex}"));
        }
    }
    let missing: Vec<&String> = blobs.iter().filter(|b| !seen.contains(*b)).collect();
    assert!(
        missing.is_empty(),
        "{}: blobs missing: {missing:?}",
        dir.display()
    );
}

/// Two skopeo `dir:` copies hold the same files with the same bytes.
pub(crate) fn assert_same_dirs(a: &Path, b: &Path) {
    let list = |d: &Path| -> BTreeMap<String, PathBuf> {
        std::fs::read_dir(d)
            .expect("read dir")
            .map(|e| {
                let e = e.expect("entry");
                (e.file_name().to_string_lossy().into_owned(), e.path())
            })
            .collect()
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(
        la.keys().collect::<Vec<_>>(),
        lb.keys().collect::<Vec<_>>(),
        "the two pulls produced different files"
    );
    for (name, pa) in &la {
        let pb = &lb[name];
        let (ma, mb) = (
            std::fs::metadata(pa).expect("stat"),
            std::fs::metadata(pb).expect("stat"),
        );
        assert_eq!(
            ma.len(),
            mb.len(),
            "{name}: sizes differ between the two pulls"
        );
        assert_eq!(
            sha256_file(pa),
            sha256_file(pb),
            "{name}: bytes differ between the two pulls"
        );
    }
}

/// containerd's content store (`…/blobs/sha256`) holds every digest in `blobs` with those bytes.
pub(crate) fn verify_content_store(store: &Path, blobs: &[String]) {
    for d in blobs {
        let p = store.join(hex_of(d));
        assert!(
            p.exists(),
            "{d} not in containerd's content store {}",
            store.display()
        );
        assert_eq!(
            sha256_file(&p),
            hex_of(d),
            "{}: bytes differ from the digest",
            p.display()
        );
    }
}
