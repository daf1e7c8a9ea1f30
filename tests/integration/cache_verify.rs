//! `registry-proxy cache verify` through the real binary: a corrupted blob is reported and removed
//! (non-zero exit), a clean store passes, and the blob is fetched again afterwards.

use crate::cache_crash::{BinProxy, assert_verifies_clean, bin_env, blob_file, cache_verify, get};
use crate::fake::Fake;
use crate::harness::{FAKE_HOST, serve_random_blobs};

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_and_removes_a_corrupt_blob() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let blobs = serve_random_blobs(&fake, 2, 150_000, 60);
    let dir = tempfile::tempdir().unwrap();
    let env = bin_env(dir.path(), &fake);
    let cache = dir.path().join("cache");
    let url = |digest: &str| format!("/v2/{FAKE_HOST}/lib/app/blobs/{digest}");

    let proxy = BinProxy::start(&env).await;
    for (data, digest) in &blobs {
        let (status, body) = get(proxy.addr, &url(digest)).await;
        assert_eq!(status, 200);
        assert_eq!(body.as_deref(), Ok(data.as_ref()));
    }
    drop(proxy);

    // Flip one byte of the first blob.
    let corrupt = blob_file(&cache, &blobs[0].1);
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&corrupt, &bytes).unwrap();

    let out = cache_verify(&env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "removing something exits non-zero");
    assert!(
        stdout.contains("checked 2 objects") && stdout.contains("1 corrupt removed"),
        "{stdout}"
    );
    assert!(stderr.contains("1 corrupt entries removed"), "{stderr}");
    assert!(!corrupt.exists(), "the corrupt blob is removed");
    assert!(
        blob_file(&cache, &blobs[1].1).exists(),
        "the good one stays"
    );

    assert_verifies_clean(&env);

    // The removed blob is fetched again, whole and right; the other is still a hit.
    let proxy = BinProxy::start(&env).await;
    for (data, digest) in &blobs {
        let (status, body) = get(proxy.addr, &url(digest)).await;
        assert_eq!(status, 200);
        assert_eq!(body.as_deref(), Ok(data.as_ref()));
    }
    assert_eq!(
        fake.hits("GET", &format!("/v2/lib/app/blobs/{}", blobs[0].1)),
        2
    );
    assert_eq!(
        fake.hits("GET", &format!("/v2/lib/app/blobs/{}", blobs[1].1)),
        1
    );
}
