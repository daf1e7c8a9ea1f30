//! Measures `Cache::open` on a store holding many blobs (the start-up cost of the index).
//!
//! ```text
//! cargo run --release --example cache_startup -- [COUNT] [--dir DIR] [--cold]
//! ```
//! Creates COUNT (default 100000) small blob files under a temporary directory (or DIR, reused if
//! it already holds them), then opens the cache five times and prints, each time, how long until
//! `Cache::open` returns (the proxy can serve) and until the background index scan is complete. `--cold`
//! drops the kernel's page, dentry and inode caches before each open (root only; it slows the
//! whole machine for a moment, so do not run it next to other measurements).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a measurement tool: fail loudly

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use registry_proxy::cache::{Cache, Limits};

fn main() {
    let mut count = 100_000usize;
    let mut dir: Option<PathBuf> = None;
    let mut cold = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = Some(args.next().expect("--dir DIR").into()),
            "--cold" => cold = true,
            n => count = n.parse().expect("COUNT, --dir DIR or --cold"),
        }
    }
    let temp;
    let root = match dir {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().unwrap();
            temp.path().to_path_buf()
        }
    };
    let created = Instant::now();
    let made = populate(&root, count);
    if made > 0 {
        println!("created {made} blob files in {:?}", created.elapsed());
    }
    let limits = Limits {
        max_size: u64::MAX,
        inactive: Duration::from_secs(60 * 86400),
        min_free: 0,
    };
    for round in 1..=5 {
        if cold {
            drop_caches();
        }
        let start = Instant::now();
        let cache = Cache::open(&root, limits.clone()).unwrap();
        let open = start.elapsed();
        cache.wait_loaded();
        let loaded = start.elapsed();
        println!(
            "round {round}{}: ready to serve after {:.1} ms; index complete ({} entries, {} bytes) after {:.1} ms",
            if cold { " (cold)" } else { "" },
            open.as_secs_f64() * 1000.0,
            cache.entries(),
            cache.size(),
            loaded.as_secs_f64() * 1000.0
        );
    }
}

/// Writes `count` blobs of 1 KiB named by their sha256, unless they are already there.
fn populate(root: &Path, count: usize) -> usize {
    let mut made = 0;
    for i in 0..count {
        let data = format!("{i:01024}");
        let hex: String = ring::digest::digest(&ring::digest::SHA256, data.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = root.join("blobs/sha256").join(&hex[..2]);
        let path = dir.join(&hex);
        if path.exists() {
            continue;
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, data).unwrap();
        made += 1;
    }
    made
}

fn drop_caches() {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("--cold needs root");
}
