//! `registry-proxy warm`: through a running proxy (the library and the real binary with a file of
//! references), one platform or all, and straight into a cache directory beside a running proxy
//! without disturbing its downloads in flight.

use std::time::Duration;

use http_body_util::BodyExt;

use crate::cache_crash::{bin_command, bin_env};
use crate::fake::Fake;
use crate::harness::{FAKE_HOST, TestProxy, serve_slow_blob};
use crate::images::{Quiet, publish, warm_through};

fn upstream_gets(fake: &Fake) -> usize {
    fake.hits_containing("GET /v2/")
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_fetches_every_platform_then_finds_everything_cached() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let fx = publish(&fake, 100);
    let proxy = TestProxy::start(&fake, &[("CACHE_MIN_FREE", "0")]).await;
    let multi = fx.multi.reference();
    let single = fx.single.reference();

    let summary = warm_through(proxy.addr, &[&multi, &single], None).await;
    assert_eq!(summary.failed(), 0, "{summary}");
    let (m, s) = (&summary.images[0], &summary.images[1]);
    assert_eq!(m.digest.as_deref(), Some(fx.multi.root.digest.as_str()));
    assert_eq!(m.platforms, ["linux/amd64", "linux/arm64/v8"]);
    assert_eq!((m.manifests_fetched, m.manifests_cached), (3, 0));
    assert_eq!((m.blobs_fetched, m.blobs_cached), (5, 0));
    let multi_blob_bytes: u64 =
        fx.multi.own_blobs.iter().map(|b| b.len()).sum::<u64>() + fx.shared.len();
    assert_eq!(m.bytes_fetched, multi_blob_bytes);
    // The shared layer was cached by the first image already.
    assert_eq!((s.blobs_fetched, s.blobs_cached), (2, 1));
    assert_eq!(s.bytes_cached, fx.shared.len());
    for blob in fx.multi.own_blobs.iter().chain(&fx.single.own_blobs) {
        assert!(proxy.has_blob(&blob.digest));
    }

    // Again: nothing is fetched, and upstream sees no GET at all (tags are revalidated by HEAD).
    let gets = upstream_gets(&fake);
    let again = warm_through(proxy.addr, &[&multi, &single], None).await;
    assert_eq!(again.failed(), 0, "{again}");
    for image in &again.images {
        assert_eq!(image.blobs_fetched, 0, "{again}");
        assert_eq!(image.manifests_fetched, 0, "{again}");
    }
    assert_eq!(again.images[0].blobs_cached, 5);
    assert_eq!(upstream_gets(&fake), gets);
    assert!(
        again.to_string().contains("fetched 0 blobs (0 B)"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_one_platform_only() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let fx = publish(&fake, 110);
    let proxy = TestProxy::start(&fake, &[("CACHE_MIN_FREE", "0")]).await;
    let multi = fx.multi.reference();

    let summary = warm_through(proxy.addr, &[&multi], Some("linux/arm64")).await;
    assert_eq!(summary.failed(), 0, "{summary}");
    assert_eq!(summary.images[0].platforms, ["linux/arm64/v8"]);
    assert_eq!(summary.images[0].blobs_fetched, 3);
    let (amd_config, amd_layer, arm_config, arm_layer) = (
        &fx.multi.own_blobs[0],
        &fx.multi.own_blobs[1],
        &fx.multi.own_blobs[2],
        &fx.multi.own_blobs[3],
    );
    assert!(proxy.has_blob(&arm_config.digest) && proxy.has_blob(&arm_layer.digest));
    assert!(!proxy.has_blob(&amd_config.digest) && !proxy.has_blob(&amd_layer.digest));

    let summary = warm_through(proxy.addr, &[&multi], Some("linux/s390x")).await;
    assert_eq!(summary.failed(), 1);
    let error = summary.images[0].error.clone().unwrap();
    assert!(
        error.contains("no linux/s390x in the index (it has: linux/amd64, linux/arm64/v8)"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_warms_a_rollout_file_and_fails_on_a_missing_image() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let fx = publish(&fake, 120);
    let proxy = TestProxy::start(&fake, &[("CACHE_MIN_FREE", "0")]).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("rollout.txt");
    std::fs::write(
        &list,
        format!(
            "# rollout\n{}\n\n{FAKE_HOST}/lib/missing:v1   # not there\n",
            fx.single.reference()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking({
        let addr = proxy.addr;
        let multi = fx.multi.reference();
        move || {
            bin_command(&[])
                .args(["warm", "--proxy", &format!("http://{addr}"), "--file"])
                .arg(&list)
                .arg(multi)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "ok      {} [linux/amd64, linux/arm64/v8]: fetched 5 blobs",
            fx.multi.reference()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "ok      {}: fetched 2 blobs",
            fx.single.reference()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("FAILED  {FAKE_HOST}/lib/missing:v1")),
        "{stdout}"
    );
    assert!(stdout.contains("3 images, 1 failed"), "{stdout}");
    // Not a terminal: plain progress lines on stderr.
    assert!(
        stderr.contains(&format!(
            "{}: blob     fetched sha256:",
            fx.single.reference()
        )),
        "{stderr}"
    );
    assert!(proxy.has_blob(&fx.single.own_blobs[1].digest));
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_into_a_cache_dir_leaves_a_running_proxys_downloads_alone() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let fx = publish(&fake, 130);
    let (slow, slow_digest) = serve_slow_blob(&fake, "lib/slow", (600_000, 131), 10, 300);
    let proxy = TestProxy::start(&fake, &[("CACHE_MIN_FREE", "0")]).await;
    let (response, in_flight) = proxy
        .download_in_flight(&format!("/v2/{FAKE_HOST}/lib/slow/blobs/{slow_digest}"))
        .await;

    // A second cache user on the same directory, as `warm --cache-dir` is.
    let summary = registry_proxy::warm::warm_cache_dir(
        proxy.config(),
        None,
        &[registry_proxy::registry::image::ImageRef::parse(&fx.single.reference()).unwrap()],
        &Quiet,
    )
    .await
    .unwrap();
    assert_eq!(summary.failed(), 0, "{summary}");
    assert_eq!(summary.images[0].blobs_fetched, 3);
    assert!(proxy.has_blob(&fx.single.own_blobs[1].digest));
    assert!(
        in_flight[0].exists(),
        "the running proxy's temp file is still there: {:?} committed {} files {:?}",
        in_flight,
        proxy.has_blob(&slow_digest),
        proxy.tmp_files()
    );

    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, slow);
    // Committed by rename from its temp file, which therefore survived.
    for _ in 0..100 {
        if proxy.has_blob(&slow_digest) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.has_blob(&slow_digest));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_warms_straight_into_a_cache_dir() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let fx = publish(&fake, 140);
    let dir = tempfile::tempdir().unwrap();
    let env = bin_env(dir.path(), &fake);
    let multi = fx.multi.reference();
    let out = tokio::task::spawn_blocking({
        let env = env.clone();
        move || {
            bin_command(&env)
                .args(["warm", "--platform", "linux/amd64", &multi])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[linux/amd64]: fetched 3 blobs"),
        "{stdout}"
    );
    let catalog = registry_proxy::cache::list(&dir.path().join("cache")).unwrap();
    let image = &catalog.registries[0].repositories[0].images[0];
    assert_eq!(image.digest, fx.multi.root.digest);
    let cached: Vec<(&str, bool)> = image
        .platforms
        .iter()
        .map(|p| (p.platform.as_str(), p.cached))
        .collect();
    assert_eq!(cached, [("linux/amd64", true), ("linux/arm64/v8", false)]);
    assert!(image.missing_bytes > 0, "arm64 is not cached");
}
