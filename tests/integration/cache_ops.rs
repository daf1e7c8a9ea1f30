//! `cache ls`, `cache purge` and `cache verify` on a cache a proxy filled (and is still running on):
//! sizes and sharing as the images have them, purges that remove exactly what no remaining image
//! uses, and a verify that refuses what is not a cache and leaves downloads in flight alone.

use std::path::Path;
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;
use registry_proxy::cache::{self, PurgeRequest, PurgeTarget};

use crate::cache_crash::bin_command;
use crate::fake::Fake;
use crate::harness::{FAKE_HOST, TestProxy, assert_succeeded, serve_slow_blob};
use crate::images::{Fixture, publish, warm_through};

async fn warmed(seed: u64) -> (Fake, Fixture, TestProxy) {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let fx = publish(&fake, seed);
    let proxy = TestProxy::start(&fake, &[("CACHE_MIN_FREE", "0")]).await;
    let summary = warm_through(
        proxy.addr,
        &[&fx.multi.reference(), &fx.single.reference()],
        None,
    )
    .await;
    assert_eq!(summary.failed(), 0, "{summary}");
    (fake, fx, proxy)
}

fn image<'a>(catalog: &'a cache::Catalog, repo: &str) -> Option<&'a cache::catalog::ImageEntry> {
    catalog
        .registries
        .iter()
        .flat_map(|r| &r.repositories)
        .find(|r| r.name == repo)
        .and_then(|r| r.images.first())
}

fn cache_cmd(dir: &Path, args: &[&str]) -> std::process::Output {
    bin_command(&[])
        .arg("cache")
        .args(args)
        .arg("--cache-dir")
        .arg(dir)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_shows_images_with_sizes_and_sharing() {
    let (_fake, fx, proxy) = warmed(200).await;
    let catalog = cache::list(&proxy.cache_dir()).unwrap();
    assert_eq!(catalog.schema, "registry-proxy.cache-ls.v1");
    assert_eq!(catalog.registries.len(), 1);
    assert_eq!(catalog.registries[0].name, FAKE_HOST);
    let repos: Vec<&str> = catalog.registries[0]
        .repositories
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(repos, ["lib/multi", "lib/single"]);

    let multi = image(&catalog, "lib/multi").unwrap();
    assert_eq!(multi.digest, fx.multi.root.digest);
    assert_eq!(multi.kind, "index");
    assert_eq!(multi.tags, ["v1"]);
    assert_eq!(multi.bytes, fx.multi.total(&fx.shared));
    assert_eq!(multi.unique_bytes, fx.multi.unique(&fx.shared));
    assert_eq!(multi.shared_bytes, fx.shared.len());
    assert_eq!(multi.missing_bytes, 0);
    assert!(multi.last_used.is_some());
    let platforms: Vec<(&str, bool)> = multi
        .platforms
        .iter()
        .map(|p| (p.platform.as_str(), p.cached))
        .collect();
    assert_eq!(platforms, [("linux/amd64", true), ("linux/arm64/v8", true)]);
    let amd = &multi.platforms[0];
    assert_eq!(
        amd.bytes,
        fx.multi.children[0].len()
            + fx.multi.own_blobs[0].len()
            + fx.multi.own_blobs[1].len()
            + fx.shared.len()
    );

    let single = image(&catalog, "lib/single").unwrap();
    assert_eq!(single.kind, "manifest");
    assert_eq!(single.bytes, fx.single.total(&fx.shared));
    assert_eq!(single.unique_bytes, fx.single.unique(&fx.shared));
    let shared = single
        .objects
        .iter()
        .find(|o| o.digest == fx.shared.digest)
        .unwrap();
    assert_eq!(
        (shared.images, shared.role, shared.cached),
        (2, "layer", true)
    );
    assert!(
        single
            .objects
            .iter()
            .filter(|o| o.digest != fx.shared.digest)
            .all(|o| o.images == 1)
    );

    let t = &catalog.totals;
    assert_eq!(t.images, 2);
    assert_eq!((t.shared_objects, t.shared_bytes), (1, fx.shared.len()));
    assert_eq!(t.unreferenced_objects, 0);
    assert_eq!(
        t.bytes,
        fx.multi.total(&fx.shared) + fx.single.unique(&fx.shared)
    );

    // The binary prints the same listing as JSON, and a table for people.
    let dir = proxy.cache_dir();
    let out = tokio::task::spawn_blocking(move || {
        (cache_cmd(&dir, &["ls", "--json"]), cache_cmd(&dir, &["ls"]))
    })
    .await
    .unwrap();
    let (json_out, table_out) = out;
    assert_succeeded(&json_out);
    let mut from_bin: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let mut from_lib = serde_json::to_value(&catalog).unwrap();
    from_bin["generated_at"] = 0.into();
    from_lib["generated_at"] = 0.into();
    assert_eq!(from_bin, from_lib);
    let table = String::from_utf8_lossy(&table_out.stdout);
    assert!(table.starts_with("IMAGE"), "{table}");
    assert!(
        table.contains(&format!("{FAKE_HOST}/lib/multi:v1"))
            && table.contains("linux/amd64,linux/arm64/v8 (2/2)"),
        "{table}"
    );
    assert!(table.contains("2 images in 2 repositories"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_reference_removes_only_what_no_other_image_uses() {
    let (fake, fx, proxy) = warmed(210).await;
    let root = proxy.cache_dir();

    // A platform is not an image of its own; a missing image is an error.
    let child = format!("{FAKE_HOST}/lib/multi@{}", fx.multi.children[0].digest);
    let e = cache::purge(
        &root,
        &PurgeRequest {
            target: Some(PurgeTarget::parse(&child).unwrap()),
            ..PurgeRequest::default()
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("is one platform of the image"),
        "{e}"
    );
    let e = cache::purge(
        &root,
        &PurgeRequest {
            target: Some(PurgeTarget::parse(&format!("{FAKE_HOST}/lib/multi:v2")).unwrap()),
            ..PurgeRequest::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("is not in the cache"), "{e}");

    let report = cache::purge(
        &root,
        &PurgeRequest {
            target: Some(PurgeTarget::parse(&fx.single.reference()).unwrap()),
            ..PurgeRequest::default()
        },
    )
    .unwrap();
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].tags, ["v1"]);
    let mut removed: Vec<&str> = report
        .removed_objects
        .iter()
        .map(|o| o.digest.as_str())
        .collect();
    removed.sort();
    let mut expected: Vec<&str> = fx
        .single
        .own_blobs
        .iter()
        .map(|b| b.digest.as_str())
        .chain([fx.single.root.digest.as_str()])
        .collect();
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(report.bytes_freed, fx.single.unique(&fx.shared));
    assert_eq!(report.kept_shared, 1);
    assert!(proxy.has_blob(&fx.shared.digest), "the shared layer stays");
    assert!(!proxy.has_blob(&fx.single.own_blobs[1].digest));
    let left = root.join("repos").join(FAKE_HOST).join("lib/single");
    assert!(!left.exists(), "{:?}", walk(&left));
    let catalog = cache::list(&root).unwrap();
    assert!(image(&catalog, "lib/single").is_none());

    // The other image still pulls from the cache alone: no upstream GET.
    let gets = fake.hits_containing("GET /v2/");
    let accept = [("accept", registry_proxy::warm::ACCEPT)];
    let (status, headers, _) = proxy
        .request(
            "GET",
            &format!("/v2/{FAKE_HOST}/lib/multi/manifests/v1"),
            &accept,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-registry-proxy-cache"], "REVALIDATED");
    for child in &fx.multi.children {
        let (status, headers, _) = proxy
            .request(
                "GET",
                &format!("/v2/{FAKE_HOST}/lib/multi/manifests/{}", child.digest),
                &accept,
            )
            .await;
        assert_eq!(
            (status.as_u16(), &headers["x-registry-proxy-cache"]),
            (200, &"HIT".parse().unwrap())
        );
    }
    for blob in fx.multi.own_blobs.iter().chain([&fx.shared]) {
        let (status, headers, body) = proxy
            .get(&format!("/v2/{FAKE_HOST}/lib/multi/blobs/{}", blob.digest))
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-registry-proxy-cache"], "HIT");
        assert_eq!(body, blob.bytes);
    }
    assert_eq!(fake.hits_containing("GET /v2/"), gets, "no upstream GET");
}

/// Sets the last use (mtime) of a manifest in the store.
fn age_manifest(root: &Path, digest: &str, age: Duration) {
    let hex = digest.trim_start_matches("sha256:");
    let path = root.join("manifests/sha256").join(&hex[..2]).join(hex);
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_age_then_by_glob() {
    let (_fake, fx, proxy) = warmed(220).await;
    let root = proxy.cache_dir();
    let forty_days = Duration::from_secs(40 * 86_400);
    for m in std::iter::once(&fx.multi.root).chain(&fx.multi.children) {
        age_manifest(&root, &m.digest, forty_days);
    }
    let by_age = PurgeRequest {
        target: None,
        older_than: Some(Duration::from_secs(30 * 86_400)),
        dry_run: true,
    };
    let dry = cache::purge(&root, &by_age).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.images.len(), 1);
    assert_eq!(
        dry.images[0].image,
        format!("{FAKE_HOST}/lib/multi@{}", fx.multi.root.digest)
    );
    assert_eq!(dry.bytes_freed, fx.multi.unique(&fx.shared));
    assert!(
        proxy.has_blob(&fx.multi.own_blobs[0].digest),
        "a dry run removes nothing"
    );

    let done = cache::purge(
        &root,
        &PurgeRequest {
            dry_run: false,
            ..by_age
        },
    )
    .unwrap();
    assert_eq!(done.bytes_freed, fx.multi.unique(&fx.shared));
    assert_eq!(done.removed_objects.len(), 3 + 4);
    for blob in &fx.multi.own_blobs {
        assert!(!proxy.has_blob(&blob.digest));
    }
    assert!(proxy.has_blob(&fx.shared.digest), "the other image uses it");
    assert!(proxy.has_blob(&fx.single.own_blobs[0].digest));

    // The binary, by glob: the rest goes, the shared layer with it.
    let dir = root.clone();
    let out = tokio::task::spawn_blocking(move || {
        let dry = cache_cmd(&dir, &["purge", &format!("{FAKE_HOST}/lib/*"), "--dry-run"]);
        let real = cache_cmd(&dir, &["purge", &format!("{FAKE_HOST}/lib/*")]);
        (dry, real)
    })
    .await
    .unwrap();
    let (dry, real) = out;
    let dry_text = String::from_utf8_lossy(&dry.stdout);
    assert_succeeded(&dry);
    assert!(dry_text.contains("would remove image"), "{dry_text}");
    let text = String::from_utf8_lossy(&real.stdout);
    assert_succeeded(&real);
    assert!(
        text.contains(&format!(
            "removed image {FAKE_HOST}/lib/single@{} (tags v1)",
            fx.single.root.digest
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("removed blob {}", fx.shared.digest)),
        "{text}"
    );
    assert!(text.contains("freed"), "{text}");
    let catalog = cache::list(&root).unwrap();
    assert_eq!(catalog.totals.objects, 0, "{catalog:?}");
    assert!(catalog.registries.is_empty());
    assert!(
        !root.join("repos").join(FAKE_HOST).exists(),
        "empty directories go too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_refuse_a_directory_that_is_not_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a cache").unwrap();
    let missing = dir.path().join("typo");
    let (a, b, c, d) = tokio::task::spawn_blocking({
        let (dir, missing) = (dir.path().to_path_buf(), missing.clone());
        move || {
            (
                cache_cmd(&dir, &["verify"]),
                cache_cmd(&missing, &["verify"]),
                cache_cmd(&dir, &["ls"]),
                cache_cmd(&dir, &["purge", "alpine"]),
            )
        }
    })
    .await
    .unwrap();
    for out in [&a, &b, &c, &d] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("is not a registry-proxy cache"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    assert!(!missing.exists(), "nothing is created");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "nothing is created");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_leaves_a_download_in_flight_alone() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let (data, digest) = serve_slow_blob(&fake, "lib/app", (800_000, 230), 10, 300);
    let proxy = TestProxy::start(&fake, &[("CACHE_MIN_FREE", "0")]).await;
    let (response, in_flight) = proxy
        .download_in_flight(&format!("/v2/{FAKE_HOST}/lib/app/blobs/{digest}"))
        .await;

    let dir = proxy.cache_dir();
    let out = tokio::task::spawn_blocking(move || cache_cmd(&dir, &["verify"]))
        .await
        .unwrap();
    assert_succeeded(&out);
    assert!(in_flight[0].exists(), "verify left the temp file alone");
    assert!(
        !proxy.has_blob(&digest),
        "still downloading when verify ran"
    );

    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, data);
    for _ in 0..100 {
        if proxy.has_blob(&digest) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.has_blob(&digest), "the download committed");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path().display().to_string());
            out.extend(walk(&e.path()));
        }
    }
    out
}
