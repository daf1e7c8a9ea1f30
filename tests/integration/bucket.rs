//! The object-store tier (`STORAGE=s3://…`) against a real S3 server: `moto_server` (PyPI
//! `moto[server]`, installed by `scripts/test`), started here on a free loopback port and stopped
//! by PID. A replica on an empty disk serves what another put in the bucket without upstream GETs;
//! a bucket that stops loses no local hit and corrupts nothing, and uploads resume when it is back;
//! a proxy killed in the middle of an upload leaves nothing visible; `cache verify` checks the
//! bucket too.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use registry_proxy::body;
use registry_proxy::cache::store::{HyperConnector, S3Store, conformance};
use registry_proxy::cache::{LinkKind, ObjectKey, Store};
use registry_proxy::registry::digest::Digest;
use registry_proxy::registry::host::RegistryHost;
use registry_proxy::registry::name::RepoName;
use tokio::net::TcpStream;

use crate::cache_crash::{BinProxy, assert_verifies_clean, bin_env, blob_file, cache_verify, get};
use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{
    FAKE_HOST, TestProxy, blob_path, get_partly, random_bytes, serve_random_blob,
    serve_random_blobs, serve_slow_blob,
};

const BUCKET: &str = "proxy-cache";

/// A `moto_server` on 127.0.0.1, with the bucket created; killed when dropped.
pub(crate) struct S3Server {
    child: Option<Child>,
    port: u16,
}

impl S3Server {
    pub(crate) async fn start() -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = S3Server { child: None, port };
        server.run().await;
        server
    }

    /// Starts the server process on this port and creates the bucket (moto keeps nothing across
    /// a restart).
    async fn run(&mut self) {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]') must be installed");
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(status) = self.raw("PUT", &format!("/{BUCKET}")).await {
                assert!(status.is_success(), "creating the bucket: {status}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not start");
    }

    /// Kills the server (the bucket becomes unreachable).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub(crate) async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The settings that put a proxy's objects under `prefix` in the bucket.
    pub(crate) fn env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            ("STORAGE".into(), format!("s3://{BUCKET}/{prefix}")),
            ("S3_ENDPOINT".into(), self.endpoint()),
            ("S3_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ]
    }

    /// A client of the bucket under `prefix`, to look at what the proxies put there.
    pub(crate) fn store(&self, prefix: &str) -> S3Store {
        let env: std::collections::HashMap<String, String> = self.env(prefix).into_iter().collect();
        let cli =
            <registry_proxy::cli::Cli as clap::Parser>::try_parse_from(["registry-proxy"]).unwrap();
        let config = registry_proxy::config::Config::load(registry_proxy::config::Sources {
            flags: &cli.serve,
            env: &env,
        })
        .unwrap();
        let registry_proxy::config::Storage::S3(s3) = &config.storage else {
            panic!("expected s3 storage");
        };
        let policy = Arc::new(registry_proxy::access::tunnel::TunnelPolicy::new(
            Vec::new(),
            Vec::new(),
        ));
        S3Store::new(s3, HyperConnector::for_config(&config, s3, policy).unwrap()).unwrap()
    }

    /// A request straight to the server (moto checks no signature): the status.
    async fn raw(&self, method: &str, path: &str) -> Result<StatusCode, String> {
        Ok(self.raw_body(method, path).await?.0)
    }

    async fn raw_body(&self, method: &str, path: &str) -> Result<(StatusCode, Bytes), String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .body(body::empty())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Multipart uploads begun and neither completed nor aborted, as the server lists them.
    pub(crate) async fn uploads_in_progress(&self) -> usize {
        let (_, body) = self
            .raw_body("GET", &format!("/{BUCKET}?uploads"))
            .await
            .unwrap();
        String::from_utf8_lossy(&body).matches("<Upload>").count()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn env_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The whole object, or `None` if absent.
async fn read_object(store: &S3Store, key: &ObjectKey) -> Option<Vec<u8>> {
    let len = store.head(key).await.unwrap()?.len;
    let mut out = Vec::new();
    if len > 0 {
        let mut stream = store.read(key, 0, len - 1);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
    }
    Some(out)
}

/// Waits until every key is in the bucket (uploads run in the background).
pub(crate) async fn wait_for(store: &S3Store, keys: &[ObjectKey]) {
    for _ in 0..600 {
        let mut missing = 0;
        for key in keys {
            if store.head(key).await.ok().flatten().is_none() {
                missing += 1;
            }
        }
        if missing == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("uploads did not reach the bucket");
}

/// Pulls `team/app:v1` like a client: the manifest by tag and by digest, then the blobs.
pub(crate) async fn pull(
    proxy: &TestProxy,
    manifest_digest: &str,
    blob_digests: &[&str],
    media_type: &str,
) -> (Bytes, Vec<Bytes>) {
    let base = format!("/v2/{FAKE_HOST}/team/app");
    let accept = ("accept", media_type);
    let (status, headers, body) = proxy
        .request("GET", &format!("{base}/manifests/v1"), &[accept])
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["docker-content-digest"], manifest_digest);
    let (status, _, by_digest) = proxy
        .request(
            "GET",
            &format!("{base}/manifests/{manifest_digest}"),
            &[accept],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_digest, body);
    let mut blobs = Vec::new();
    for digest in blob_digests {
        let (status, _, blob) = proxy.get(&format!("{base}/blobs/{digest}")).await;
        assert_eq!(status, 200);
        blobs.push(blob);
    }
    (body, blobs)
}

pub(crate) fn digest(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_store_conforms() {
    let server = S3Server::start().await;
    conformance::check(&server.store("conformance")).await;
    assert_eq!(
        server.uploads_in_progress().await,
        0,
        "the abandoned multipart upload was aborted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_on_an_empty_disk_serves_from_the_bucket_without_upstream_gets() {
    let server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    // A layer larger than one upload part, a config blob, and their manifest under a tag.
    let layer = random_bytes(9_000_000, 81);
    let config = random_bytes(2_000, 82);
    let (layer_digest, config_digest) = (sha256_digest(&layer), sha256_digest(&config));
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    ));
    let manifest_digest = sha256_digest(&manifest);
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    for path in [
        "/v2/team/app/manifests/v1".to_owned(),
        format!("/v2/team/app/manifests/{manifest_digest}"),
    ] {
        fake.route(
            &path,
            Behavior::Manifest {
                bytes: manifest.clone(),
                media_type: media_type.into(),
            },
        );
    }
    for (digest, bytes) in [(&layer_digest, &layer), (&config_digest, &config)] {
        fake.route(
            &format!("/v2/team/app/blobs/{digest}"),
            Behavior::Blob(bytes.clone()),
        );
    }
    let env = server.env("replicas");
    let blob_digests = [layer_digest.as_str(), config_digest.as_str()];
    let first = TestProxy::start(&fake, &env_pairs(&env)).await;
    let (body, blobs) = pull(&first, &manifest_digest, &blob_digests, media_type).await;
    assert_eq!(
        (body, blobs),
        (manifest.clone(), vec![layer.clone(), config.clone()])
    );
    let gets = |fake: &Fake| {
        [
            "/v2/team/app/manifests/v1".to_owned(),
            format!("/v2/team/app/manifests/{manifest_digest}"),
            format!("/v2/team/app/blobs/{layer_digest}"),
            format!("/v2/team/app/blobs/{config_digest}"),
        ]
        .iter()
        .map(|path| fake.hits("GET", path))
        .sum::<usize>()
    };
    let upstream_gets = gets(&fake);
    assert_eq!(upstream_gets, 3, "the tag's GET, then each blob once");

    // Everything the second replica needs reaches the bucket in the background.
    let store = server.store("replicas");
    let registry = RegistryHost::parse(FAKE_HOST).unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    let accept_key = registry_proxy::registry::media::accept_key([media_type]);
    let keys = [
        ObjectKey::blob(&digest(&layer_digest)),
        ObjectKey::blob(&digest(&config_digest)),
        ObjectKey::manifest(&digest(&manifest_digest)),
        ObjectKey::link(&registry, &repo, LinkKind::Blob, &digest(&layer_digest)),
        ObjectKey::link(&registry, &repo, LinkKind::Blob, &digest(&config_digest)),
        ObjectKey::link(
            &registry,
            &repo,
            LinkKind::Manifest,
            &digest(&manifest_digest),
        ),
        ObjectKey::tag(&registry, &repo, "v1", &accept_key),
    ];
    wait_for(&store, &keys).await;
    assert_eq!(
        read_object(&store, &keys[0]).await.unwrap(),
        layer,
        "the layer went up whole, in parts"
    );

    // A second replica with an empty disk: everything from the bucket, no GET upstream.
    let second = TestProxy::start(&fake, &env_pairs(&env)).await;
    let (body, blobs) = pull(&second, &manifest_digest, &blob_digests, media_type).await;
    assert_eq!((body, blobs), (manifest, vec![layer.clone(), config]));
    assert_eq!(
        gets(&fake),
        upstream_gets,
        "no upstream GET from the second replica"
    );
    // What it read from the bucket is kept on its own disk.
    assert_eq!(
        std::fs::read(blob_file(&second.cache_dir(), &layer_digest)).unwrap(),
        layer
    );
    let metrics = second.metrics().await;
    let fetches = metrics.lines().find(|l| {
        l.starts_with("registry_proxy_upstream_blob_fetches_total{registry=\"fake.test\"}")
    });
    assert!(fetches.is_none_or(|l| l.ends_with(" 0")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_bucket_loses_no_local_hit_and_uploads_resume() {
    let mut server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    let before = random_bytes(300_000, 83);
    let during = random_bytes(500_000, 84);
    let (before_digest, during_digest) = (sha256_digest(&before), sha256_digest(&during));
    for (digest, bytes) in [(&before_digest, &before), (&during_digest, &during)] {
        fake.route(
            &format!("/v2/lib/app/blobs/{digest}"),
            Behavior::Blob(bytes.clone()),
        );
    }
    let env = server.env("outage");
    let proxy = TestProxy::start(&fake, &env_pairs(&env)).await;
    let url = |digest: &str| format!("/v2/{FAKE_HOST}/lib/app/blobs/{digest}");
    assert_eq!(proxy.get(&url(&before_digest)).await.2, before);
    let store = server.store("outage");
    wait_for(&store, &[ObjectKey::blob(&digest(&before_digest))]).await;

    server.stop();
    // Local hits keep working, without upstream; a miss streams from upstream.
    for _ in 0..3 {
        let (status, _, body) = proxy.get(&url(&before_digest)).await;
        assert_eq!((status, body), (StatusCode::OK, before.clone()));
    }
    let (status, _, body) = proxy.get(&url(&during_digest)).await;
    assert_eq!((status, body), (StatusCode::OK, during.clone()));
    let (status, _, body) = proxy.get(&url(&during_digest)).await;
    assert_eq!((status, body), (StatusCode::OK, during.clone()));
    assert_eq!(
        fake.hits("GET", &format!("/v2/lib/app/blobs/{before_digest}")),
        1
    );
    assert_eq!(
        fake.hits("GET", &format!("/v2/lib/app/blobs/{during_digest}")),
        1
    );

    // The bucket comes back (empty: moto keeps nothing): the upload that waited goes up, whole.
    server.restart().await;
    let during_key = ObjectKey::blob(&digest(&during_digest));
    wait_for(&store, std::slice::from_ref(&during_key)).await;
    assert_eq!(read_object(&store, &during_key).await.unwrap(), during);
    // Nothing in it is wrong.
    let report = registry_proxy::cache::store::verify_store(&store)
        .await
        .unwrap();
    assert_eq!(report.corrupt, 0);
    assert!(report.checked >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_killed_midway_leaves_nothing_visible() {
    let server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    // Slow enough to kill the proxy after the first 8 MiB part went up, before the end.
    let (data, blob_digest) = serve_slow_blob(&fake, "lib/app", (24_000_000, 85), 240, 40);
    let upstream_path = blob_path("lib/app", &blob_digest);
    let dir = tempfile::tempdir().unwrap();
    let mut env = bin_env(dir.path(), &fake);
    env.extend(server.env("killed"));
    let store = server.store("killed");
    let key = ObjectKey::blob(&digest(&blob_digest));
    let url = format!("/v2/{FAKE_HOST}/lib/app/blobs/{blob_digest}");

    let proxy = BinProxy::start(&env).await;
    let body = get_partly(proxy.addr, &url, 12_000_000).await;
    // The upload is under way: begun, not visible.
    for _ in 0..100 {
        if server.uploads_in_progress().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server.uploads_in_progress().await,
        1,
        "a multipart upload is under way"
    );
    assert!(store.head(&key).await.unwrap().is_none());
    proxy.kill9();
    assert!(
        body.collect().await.is_err(),
        "the client sees an aborted transfer"
    );
    assert!(store.head(&key).await.unwrap().is_none(), "nothing visible");
    assert!(
        store
            .list(registry_proxy::cache::key::ContentKind::Blob)
            .await
            .unwrap()
            .is_empty()
    );

    // A retry (after a restart) completes, and the bucket then holds the right bytes.
    fake.route(&upstream_path, Behavior::Blob(data.clone()));
    let proxy = BinProxy::start(&env).await;
    let (status, body) = get(proxy.addr, &url).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_deref(), Ok(data.as_ref()));
    wait_for(&store, std::slice::from_ref(&key)).await;
    assert_eq!(read_object(&store, &key).await.unwrap(), data);
    assert_eq!(fake.hits("GET", &upstream_path), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_verify_checks_the_bucket_too() {
    let server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    let blobs = serve_random_blobs(&fake, 2, 150_000, 86);
    let dir = tempfile::tempdir().unwrap();
    let mut env = bin_env(dir.path(), &fake);
    env.extend(server.env("verify"));
    let store = server.store("verify");
    let keys: Vec<ObjectKey> = blobs
        .iter()
        .map(|(_, d)| ObjectKey::blob(&digest(d)))
        .collect();

    let proxy = BinProxy::start(&env).await;
    for (data, digest) in &blobs {
        let (status, body) = get(
            proxy.addr,
            &format!("/v2/{FAKE_HOST}/lib/app/blobs/{digest}"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body.as_deref(), Ok(data.as_ref()));
    }
    wait_for(&store, &keys).await;
    drop(proxy);

    // Someone overwrites the first blob in the bucket with other bytes.
    store
        .put(
            &keys[0],
            registry_proxy::cache::store::Object {
                bytes: Bytes::from_static(b"not what the name says"),
                media_type: None,
            },
        )
        .await
        .unwrap();

    let out = cache_verify(&env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "removing something exits non-zero");
    assert!(
        stdout.contains("object store s3://proxy-cache/verify: checked 2 objects")
            && stdout.contains("1 corrupt removed"),
        "{stdout}"
    );
    assert!(
        store.head(&keys[0]).await.unwrap().is_none(),
        "the corrupt object is removed"
    );
    assert_eq!(
        read_object(&store, &keys[1]).await.unwrap(),
        blobs[1].0,
        "the good one stays"
    );
    assert_verifies_clean(&env);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_copy_waiting_for_its_upload_is_not_evicted() {
    let mut server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    let blobs = serve_random_blobs(&fake, 10, 400_000, 90);
    let mut env = server.env("pinned");
    env.push(("CACHE_MAX_SIZE".into(), "1m".into()));
    let proxy = TestProxy::start(&fake, &env_pairs(&env)).await;
    let url = |digest: &str| format!("/v2/{FAKE_HOST}/lib/app/blobs/{digest}");
    let stored = |digest: &str| blob_file(&proxy.cache_dir(), digest).exists();

    // With the bucket down, three blobs (more than CACHE_MAX_SIZE together) wait for their upload:
    // none may be evicted, or it would be lost to the bucket.
    server.stop();
    for (data, digest) in &blobs[..3] {
        assert_eq!(proxy.get(&url(digest)).await.2, *data);
    }
    assert!(blobs[..3].iter().all(|(_, d)| stored(d)), "all kept");

    // Once they are up, the cap applies again: the next commit evicts the least recently used.
    server.restart().await;
    let store = server.store("pinned");
    let keys: Vec<ObjectKey> = blobs[..3]
        .iter()
        .map(|(_, d)| ObjectKey::blob(&digest(d)))
        .collect();
    wait_for(&store, &keys).await;
    // Uploaded is not yet unpinned: give the uploader its moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.get(&url(&blobs[3].1)).await.2, blobs[3].0);
    assert!(
        !stored(&blobs[0].1),
        "least recently used evicted once uploaded"
    );
    assert!(stored(&blobs[3].1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_bucket_object_is_never_served_whole_and_is_replaced() {
    let server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    let (data, blob_digest) = serve_random_blob(&fake, "team/app", 3_000_000, 91);
    let path = format!("/v2/{FAKE_HOST}/team/app/blobs/{blob_digest}");
    let env = server.env("corrupt");
    let first = TestProxy::start(&fake, &env_pairs(&env)).await;
    first.assert_serves(&path, &data).await;
    let store = server.store("corrupt");
    let key = ObjectKey::blob(&digest(&blob_digest));
    let registry = RegistryHost::parse(FAKE_HOST).unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    let link = ObjectKey::link(&registry, &repo, LinkKind::Blob, &digest(&blob_digest));
    wait_for(&store, &[key.clone(), link]).await;

    // The bucket's copy goes bad: same length, one byte changed.
    let mut bad = data.to_vec();
    bad[1_500_000] ^= 0xff;
    let corrupt = || async {
        store
            .put(
                &key,
                registry_proxy::cache::store::Object {
                    bytes: Bytes::from(bad.clone()),
                    media_type: None,
                },
            )
            .await
            .unwrap();
        assert_ne!(read_object(&store, &key).await.unwrap(), data);
    };
    let removed = || async {
        for _ in 0..100 {
            if store.head(&key).await.unwrap().is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    corrupt().await;

    // A replica whose disk has no room for it reads it from the bucket directly: the last bytes
    // are held back until the digest matched, so the transfer fails; the object is removed.
    let mut small_env = env.clone();
    small_env.push(("CACHE_MAX_SIZE".into(), "1m".into()));
    let small = TestProxy::start(&fake, &env_pairs(&small_env)).await;
    let (status, body) = small.request_result("GET", &path).await;
    assert_eq!(status, 200);
    assert!(
        body.is_err(),
        "a corrupt object read from the bucket must not end as a clean body"
    );
    assert!(
        removed().await,
        "the corrupt object is removed from the bucket"
    );
    drop(small);
    corrupt().await;

    // A replica on an empty disk copies it from the bucket: the transfer fails, never a whole
    // clean body, and nothing is kept on its disk.
    let second = TestProxy::start(&fake, &env_pairs(&env)).await;
    let (status, body) = second.request_result("GET", &path).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a corrupt copy must not end as a clean body");
    assert!(!blob_file(&second.cache_dir(), &blob_digest).exists());

    // The corrupt object is removed from the bucket, so the retry misses it and goes upstream.
    assert!(
        removed().await,
        "the corrupt object is removed from the bucket"
    );
    let before = fake.hits("GET", &blob_path("team/app", &blob_digest));
    second.assert_serves(&path, &data).await;
    assert_eq!(
        fake.hits("GET", &blob_path("team/app", &blob_digest)),
        before + 1,
        "the retry fetched it upstream"
    );
    // And the good copy goes back up.
    wait_for(&store, std::slice::from_ref(&key)).await;
    assert_eq!(read_object(&store, &key).await.unwrap(), data);
}
