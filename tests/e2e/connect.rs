//! Issue 2: CONNECT interception (`HTTPS_PROXY` + the proxy CA through `SSL_CERT_DIR`). Every case
//! pulls twice through the same proxy and proves from the upstream's own access log that the second
//! pull sent no blob request upstream, from the proxy's log that it answered those blobs with `HIT`,
//! and that the content is byte-identical (to the upstream digests and between the two pulls).

use crate::harness::{
    self, HUB, Proxy, Pull, Via, Watch, assert_same_dirs, verify_content_store, verify_skopeo_dir,
};

/// skopeo, twice, same registry and repository; `blobs` are the digests both pulls fetch.
fn skopeo_twice(
    host: &str,
    image_name: &str,
    top_digest: &str,
    repo: &str,
    blobs: &[String],
    layers: &[String],
    args: &[&str],
) {
    let Some(env) = harness::env() else { return };
    let _claim = harness::claim(&[(host, repo)]);
    let proxy = Proxy::start(env, &[]);
    let mut watch = Watch::new(env, host, repo, blobs);

    let first = proxy.skopeo(env, Via::Connect, image_name, args);
    watch.assert_fetched(layers, "first skopeo pull");
    verify_skopeo_dir(&first, top_digest, blobs);

    watch.reset();
    let mark = proxy.mark();
    let second = proxy.skopeo(env, Via::Connect, image_name, args);
    watch.assert_no_blob_requests("second skopeo pull (CONNECT)", false);
    let registry = if host == HUB { "docker.io" } else { host };
    proxy.assert_blob_hits(mark, registry, repo, blobs);
    verify_skopeo_dir(&second, top_digest, blobs);
    assert_same_dirs(&first, &second);
}

/// 256 MiB layer, anonymous TLS registry.
#[test]
fn skopeo_big_layer_anonymous() {
    let Some(env) = harness::env() else { return };
    let big = env.image("BIG");
    skopeo_twice(
        "registry.test",
        "registry.test/test/big:v1",
        &big.digest,
        &big.repo,
        &big.blobs(),
        &big.layer_digests(),
        &[],
    );
}

/// Multi-arch OCI index (`--all`: both platforms) from a Basic-auth registry; the client has no
/// credentials, the proxy's `AUTH_REGISTRIES` entry answers the challenge.
#[test]
fn skopeo_multi_arch_index_basic_auth_central_creds() {
    let Some(env) = harness::env() else { return };
    let multi = env.image("MULTI");
    let (amd, arm) = (env.image("MULTI_AMD64"), env.image("MULTI_ARM64"));
    let blobs: Vec<String> = amd.blobs().into_iter().chain(arm.blobs()).collect();
    let layers: Vec<String> = amd
        .layer_digests()
        .into_iter()
        .chain(arm.layer_digests())
        .collect();
    skopeo_twice(
        "basic.test",
        "basic.test/test/multi:v1",
        &multi.digest,
        &multi.repo,
        &blobs,
        &layers,
        &["--all"],
    );
    // the registry refuses anonymous clients: the 200s above were the proxy's central credentials
    let blob = format!("/v2/test/multi/blobs/{}", amd.layers[0].0);
    assert_eq!(harness::direct_status(env, "basic.test", &blob), 401);
}

/// Docker schema2 manifest from a token-auth registry (token server on auth.test), central creds.
#[test]
fn skopeo_schema2_token_auth_central_creds() {
    let Some(env) = harness::env() else { return };
    let s2 = env.image("SCHEMA2");
    skopeo_twice(
        "token.test",
        "token.test/test/schema2:v1",
        &s2.digest,
        &s2.repo,
        &s2.blobs(),
        &s2.layer_digests(),
        &[],
    );
    let blob = format!("/v2/test/schema2/blobs/{}", s2.layers[0].0);
    assert_eq!(harness::direct_status(env, "token.test", &blob), 401);
    let tokens = std::fs::read_to_string(env.workdir.join("logs/token.log")).unwrap_or_default();
    assert!(
        tokens.lines().any(|l| l.contains("service=token.test")
            && l.contains("user=bob")
            && l.contains("repository:test/schema2:pull")),
        "the token server never issued bob a pull token for test/schema2:\n{tokens}"
    );
}

/// The emulated Docker Hub (token realm auth.docker.io), as `docker.io/library/small:v1`.
#[test]
fn skopeo_docker_hub() {
    let Some(env) = harness::env() else { return };
    let small = env.image("LIBSMALL");
    skopeo_twice(
        HUB,
        "docker.io/library/small:v1",
        &small.digest,
        &small.repo,
        &small.blobs(),
        &small.layer_digests(),
        &[],
    );
}

/// ctr (containerd 1.6, fetching in the ctr process): the 256 MiB layer, then the multi-arch index
/// with every platform, each pulled twice into fresh containerd stores.
#[test]
fn ctr_big_layer_and_multi_arch_index() {
    let Some(env) = harness::env() else { return };
    let host = "second.test";
    let big = env.image("BIG");
    let (amd, arm) = (env.image("MULTI_AMD64"), env.image("MULTI_ARM64"));
    let multi_blobs: Vec<String> = amd.blobs().into_iter().chain(arm.blobs()).collect();
    let multi_layers: Vec<String> = amd
        .layer_digests()
        .into_iter()
        .chain(arm.layer_digests())
        .collect();
    let _claim = harness::claim(&[(host, "test/big"), (host, "test/multi")]);
    let proxy = Proxy::start(env, &[]);

    for (image, repo, blobs, layers, args) in [
        (
            "second.test/test/big:v1",
            "test/big",
            big.blobs(),
            big.layer_digests(),
            &[][..],
        ),
        (
            "second.test/test/multi:v1",
            "test/multi",
            multi_blobs,
            multi_layers,
            &["--all-platforms"][..],
        ),
    ] {
        let mut watch = Watch::new(env, host, repo, &blobs);
        let store = proxy.ctr(env, Via::Connect, image, args);
        watch.assert_fetched(&layers, "first ctr pull");
        verify_content_store(&store, &blobs);
        // free the 256 MiB (content + unpacked snapshot) before the second pull
        if let Some(root) = store.ancestors().nth(3) {
            std::fs::remove_dir_all(root).ok();
        }

        watch.reset();
        let mark = proxy.mark();
        let store = proxy.ctr(env, Via::Connect, image, args);
        watch.assert_no_blob_requests("second ctr pull (CONNECT)", false);
        proxy.assert_blob_hits(mark, host, repo, &blobs);
        verify_content_store(&store, &blobs);
    }
}

/// dockerd (the daemon pulls, so HTTPS_PROXY and SSL_CERT_DIR are on dockerd) through a token-auth
/// registry with the proxy's central credentials, twice with fresh daemons.
#[test]
fn dockerd_token_auth_central_creds() {
    let Some(env) = harness::env() else { return };
    let host = "token.test";
    let small = env.image("SMALL");
    let _claim = harness::claim(&[(host, &small.repo)]);
    let proxy = Proxy::start(env, &[]);
    let mut watch = Watch::new(env, host, &small.repo, &small.blobs());
    let pull = Pull {
        wrapper: "dockerd_pull.sh",
        image: "token.test/test/small:v1",
        args: &[],
        envs: &[],
    };
    let (_, out) = proxy.pull(env, Via::Connect, &pull);
    assert!(
        out.contains("token.test/test/small:v1"),
        "docker pull output: {out}"
    );
    watch.assert_fetched(&small.layer_digests(), "first dockerd pull");

    watch.reset();
    let mark = proxy.mark();
    proxy.pull(env, Via::Connect, &pull);
    watch.assert_no_blob_requests("second dockerd pull (CONNECT)", false);
    // dockerd verifies every layer against its digest; the cache served all of them
    proxy.assert_blob_hits(mark, host, &small.repo, &small.blobs());
}
