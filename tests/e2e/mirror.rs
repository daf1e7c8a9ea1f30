//! Issue 4: mirror modes that need no CA on the client, configured with the files that
//! `registry-proxy setup <client>` generates (every generated config is used by the test that
//! exercises it). Each case pulls first in one mode and then in another, and proves from the
//! upstream's access log that the second pull sent no blob request upstream, and from the proxy's log
//! that it answered them with `HIT`. Mirror pulls run with no proxy environment and without trust in
//! the upstreams' CA, so a client falling back to the upstream itself would fail.

use crate::harness::{
    self, HUB, Image, Proxy, Pull, Via, Watch, verify_content_store, verify_skopeo_dir,
};

/// containerd `hosts.toml` from `registry-proxy setup containerd`, used with `ctr --hosts-dir`:
/// registry.test through its own `hosts.toml`, second.test through the `_default` catch-all (the
/// generator is told only about registry.test), Docker Hub through `docker.io/hosts.toml`. Each image
/// was first pulled by skopeo in CONNECT mode.
#[test]
fn containerd_hosts_toml_after_skopeo_connect() {
    let Some(env) = harness::env() else { return };
    let cases: [(&str, &str, &str, Image); 3] = [
        (
            "registry.test",
            "registry.test",
            "registry.test/test/schema2:v1",
            env.image("SCHEMA2"),
        ),
        (
            "second.test",
            "second.test",
            "second.test/test/multi:v1",
            env.image("MULTI_AMD64"),
        ),
        (
            HUB,
            "docker.io",
            "docker.io/library/small:v1",
            env.image("LIBSMALL"),
        ),
    ];
    let _claim = harness::claim(&[
        ("registry.test", "test/schema2"),
        ("second.test", "test/multi"),
        (HUB, "library/small"),
    ]);
    let proxy = Proxy::start(env, &[]);
    let prefix = proxy.setup("containerd", &["--registries", "registry.test"]);
    let hosts_dir = prefix.join("etc/containerd/certs.d");
    for f in [
        "_default/hosts.toml",
        "registry.test/hosts.toml",
        "docker.io/hosts.toml",
    ] {
        assert!(hosts_dir.join(f).is_file(), "setup containerd wrote no {f}");
    }
    assert!(
        !hosts_dir.join("second.test").exists(),
        "second.test must go through _default in this test"
    );
    let hosts_arg = hosts_dir.display().to_string();

    for (host, registry, image_name, image) in &cases {
        let mut watch = Watch::new(env, host, &image.repo, &image.blobs());
        let dir = proxy.skopeo(env, Via::Connect, image_name, &[]);
        watch.assert_fetched(&image.layer_digests(), "first pull (skopeo, CONNECT)");
        // a single-platform skopeo copy of an index stores the platform's manifest
        verify_skopeo_dir(&dir, &image.digest, &image.blobs());

        watch.reset();
        let mark = proxy.mark();
        let store = proxy.ctr(env, Via::Mirror, image_name, &["--hosts-dir", &hosts_arg]);
        watch.assert_no_blob_requests(
            &format!("second pull of {image_name} (ctr, hosts.toml mirror)"),
            false,
        );
        proxy.assert_blob_hits(mark, registry, &image.repo, &image.blobs());
        verify_content_store(&store, &image.blobs());
    }
}

/// dockerd with the `registry-mirrors` of `registry-proxy setup docker`'s daemon.json (Docker Hub,
/// no `ns`, no path prefix), after a first pull through the path prefix
/// `127.0.0.1:PORT/docker.io/library/small`.
#[test]
fn dockerd_registry_mirrors_after_path_prefix() {
    let Some(env) = harness::env() else { return };
    let small = env.image("LIBSMALL");
    let _claim = harness::claim(&[(HUB, &small.repo)]);
    let proxy = Proxy::start(env, &[]);
    let prefix = proxy.setup("docker", &[]);
    let daemon_json = std::fs::read_to_string(prefix.join("etc/docker/daemon.json"))
        .expect("setup docker wrote no daemon.json");
    let daemon: serde_json::Value =
        serde_json::from_str(&daemon_json).expect("daemon.json is JSON");
    let mirrors: Vec<&str> = daemon["registry-mirrors"]
        .as_array()
        .expect("registry-mirrors array")
        .iter()
        .map(|m| m.as_str().expect("mirror URL"))
        .collect();
    assert_eq!(mirrors, [proxy.url()], "registry-mirrors in {daemon_json}");

    let mut watch = Watch::new(env, HUB, &small.repo, &small.blobs());
    let path_prefix = format!("docker://{}/docker.io/library/small:v1", proxy.addr);
    let dir = proxy.skopeo(env, Via::Mirror, &path_prefix, &["--src-tls-verify=false"]);
    watch.assert_fetched(&small.layer_digests(), "first pull (skopeo, path prefix)");
    verify_skopeo_dir(&dir, &small.digest, &small.blobs());

    watch.reset();
    let mark = proxy.mark();
    let mirrors_env = mirrors.join(" ");
    let (_, out) = proxy.pull(
        env,
        Via::Mirror,
        &Pull {
            wrapper: "dockerd_pull.sh",
            image: "small:v1",
            args: &[],
            envs: &[("DOCKERD_MIRRORS", &mirrors_env)],
        },
    );
    assert!(out.contains("small:v1"), "docker pull output: {out}");
    watch.assert_no_blob_requests("second pull (dockerd, registry-mirrors)", false);
    proxy.assert_blob_hits(mark, "docker.io", &small.repo, &small.blobs());
}

/// podman with the `registries.conf` of `registry-proxy setup podman` (path-prefix mirror
/// `127.0.0.1:PORT/second.test`), after a first pull by ctr in CONNECT mode.
#[test]
fn podman_registries_conf_after_ctr_connect() {
    let Some(env) = harness::env() else { return };
    let host = "second.test";
    let s2 = env.image("SCHEMA2");
    let _claim = harness::claim(&[(host, &s2.repo)]);
    let proxy = Proxy::start(env, &[]);
    let prefix = proxy.setup("podman", &["--registries", harness::REGISTRIES]);
    let conf = prefix.join("etc/containers/registries.conf.d/50-registry-proxy.conf");
    let text =
        std::fs::read_to_string(&conf).expect("setup podman wrote no registries.conf drop-in");
    assert!(
        text.contains(&format!("{}/second.test", proxy.addr)),
        "no path-prefix mirror for second.test in:\n{text}"
    );

    let mut watch = Watch::new(env, host, &s2.repo, &s2.blobs());
    let store = proxy.ctr(env, Via::Connect, "second.test/test/schema2:v1", &[]);
    watch.assert_fetched(&s2.layer_digests(), "first pull (ctr, CONNECT)");
    verify_content_store(&store, &s2.blobs());

    watch.reset();
    let mark = proxy.mark();
    let conf_s = conf.display().to_string();
    let (_, out) = proxy.pull(
        env,
        Via::Mirror,
        &Pull {
            wrapper: "podman_pull.sh",
            image: "second.test/test/schema2:v1",
            args: &[],
            envs: &[("PODMAN_REGISTRIES_CONF", &conf_s)],
        },
    );
    assert_image_id(&out, &s2);
    watch.assert_no_blob_requests("second pull (podman, registries.conf mirror)", false);
    proxy.assert_blob_hits(mark, host, &s2.repo, &s2.blobs());
}

/// skopeo addressing the proxy directly (`docker://127.0.0.1:PORT/registry.test/test/small:v1`),
/// after a first pull by podman in CONNECT mode.
#[test]
fn skopeo_path_prefix_after_podman_connect() {
    let Some(env) = harness::env() else { return };
    let host = "registry.test";
    let small = env.image("SMALL");
    let _claim = harness::claim(&[(host, &small.repo)]);
    let proxy = Proxy::start(env, &[]);

    let mut watch = Watch::new(env, host, &small.repo, &small.blobs());
    let (_, out) = proxy.pull(
        env,
        Via::Connect,
        &Pull {
            wrapper: "podman_pull.sh",
            image: "registry.test/test/small:v1",
            args: &[],
            envs: &[],
        },
    );
    assert_image_id(&out, &small);
    watch.assert_fetched(&small.layer_digests(), "first pull (podman, CONNECT)");

    watch.reset();
    let mark = proxy.mark();
    let image = format!("docker://{}/registry.test/test/small:v1", proxy.addr);
    let dir = proxy.skopeo(env, Via::Mirror, &image, &["--src-tls-verify=false"]);
    watch.assert_no_blob_requests("second pull (skopeo, path prefix)", false);
    proxy.assert_blob_hits(mark, host, &small.repo, &small.blobs());
    verify_skopeo_dir(&dir, &small.digest, &small.blobs());
}

/// `podman pull -q` prints the image ID, the config digest's hex: podman verified every blob.
fn assert_image_id(out: &str, image: &Image) {
    let id = out.lines().last().unwrap_or("").trim();
    assert_eq!(
        Some(id),
        image.config.strip_prefix("sha256:"),
        "podman pulled another image (output {out:?})"
    );
}
