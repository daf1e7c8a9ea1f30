//! `cache purge` and `cache ls` with a shared bucket (`STORAGE=s3://…`, against `moto_server`):
//! the admin API's purge removes the image from the bucket by the same rule as from the local
//! disk (blobs, manifest, links, tag record; what another image uses stays), and the bucket's
//! listing shows what it holds.

use bytes::Bytes;
use registry_proxy::cache::bucket_ops::{list_bucket, purge_bucket};
use registry_proxy::cache::{LinkKind, ObjectKey, PurgeRequest, PurgeTarget, Store};
use registry_proxy::registry::host::RegistryHost;
use registry_proxy::registry::image::ImageRef;
use registry_proxy::registry::name::RepoName;

use crate::admin::call;
use crate::bucket::{S3Server, digest, env_pairs, pull, wait_for};
use crate::cache_crash::bin_command;
use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{FAKE_HOST, TestProxy, random_bytes};

pub(crate) const MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image of `repo` on the fake upstream: its manifest, then its blobs (layer, config).
pub(crate) fn image(
    fake: &Fake,
    repo: &str,
    layer: &Bytes,
    config: &Bytes,
) -> (String, Vec<String>) {
    let (layer_digest, config_digest) = (sha256_digest(layer), sha256_digest(config));
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    ));
    let manifest_digest = sha256_digest(&manifest);
    for path in [
        format!("/v2/{repo}/manifests/v1"),
        format!("/v2/{repo}/manifests/{manifest_digest}"),
    ] {
        fake.route(
            &path,
            Behavior::Manifest {
                bytes: manifest.clone(),
                media_type: MEDIA_TYPE.into(),
            },
        );
    }
    for (digest, bytes) in [(&layer_digest, layer), (&config_digest, config)] {
        fake.route(
            &format!("/v2/{repo}/blobs/{digest}"),
            Behavior::Blob(bytes.clone()),
        );
    }
    (manifest_digest, vec![layer_digest, config_digest])
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_removes_the_image_from_the_bucket_too() {
    let server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    // team/app and team/other share their config blob.
    let config = random_bytes(1_500, 71);
    let (app_manifest, app_blobs) = image(&fake, "team/app", &random_bytes(40_000, 72), &config);
    let env = server.env("purge");
    let proxy = TestProxy::start(&fake, &env_pairs(&env)).await;
    let blobs: Vec<&str> = app_blobs.iter().map(String::as_str).collect();
    pull(&proxy, &app_manifest, &blobs, MEDIA_TYPE).await;

    let store = server.store("purge");
    let registry = RegistryHost::parse(FAKE_HOST).unwrap();
    let app = RepoName::parse("team/app").unwrap();
    let accept_key = registry_proxy::registry::media::accept_key([MEDIA_TYPE]);
    let app_keys = vec![
        ObjectKey::blob(&digest(&app_blobs[0])),
        ObjectKey::manifest(&digest(&app_manifest)),
        ObjectKey::link(&registry, &app, LinkKind::Blob, &digest(&app_blobs[0])),
        ObjectKey::link(&registry, &app, LinkKind::Blob, &digest(&app_blobs[1])),
        ObjectKey::link(&registry, &app, LinkKind::Manifest, &digest(&app_manifest)),
        ObjectKey::tag(&registry, &app, "v1", &accept_key),
    ];
    let shared = ObjectKey::blob(&digest(&app_blobs[1]));
    wait_for(&store, &app_keys).await;
    wait_for(&store, std::slice::from_ref(&shared)).await;

    // Another replica's image, only in the bucket: it uses the shared config blob.
    let other = RepoName::parse("team/other").unwrap();
    let other_manifest = {
        let (bytes, media_type) = (
            Bytes::from(format!(
                r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
                app_blobs[1],
                config.len()
            )),
            MEDIA_TYPE,
        );
        let key = ObjectKey::manifest(&registry_proxy::registry::digest::Digest::sha256_of(&bytes));
        store
            .put(
                &key,
                registry_proxy::cache::store::Object {
                    bytes: bytes.clone(),
                    media_type: Some(media_type.into()),
                },
            )
            .await
            .unwrap();
        let manifest_digest = key.content().unwrap().1.clone();
        let record = registry_proxy::cache::TagRecord {
            digest: manifest_digest.to_string(),
            media_type: media_type.into(),
            checked_at: registry_proxy::cache::unix_now(),
        };
        let tag = ObjectKey::tag(&registry, &other, "v2", &accept_key);
        store
            .put(
                &tag,
                registry_proxy::cache::store::Object {
                    bytes: serde_json::to_vec(&record).unwrap().into(),
                    media_type: None,
                },
            )
            .await
            .unwrap();
        for link in [
            ObjectKey::link(&registry, &other, LinkKind::Manifest, &manifest_digest),
            ObjectKey::link(&registry, &other, LinkKind::Blob, &digest(&app_blobs[1])),
        ] {
            store.put(&link, Default::default()).await.unwrap();
        }
        key
    };

    // The bucket's listing shows both images, the other replica's included.
    let listed =
        serde_json::to_value(list_bucket(&store, "s3://proxy-cache/purge").await.unwrap()).unwrap();
    assert_eq!(listed["cache_dir"], "s3://proxy-cache/purge");
    let text = listed.to_string();
    assert!(
        text.contains("team/app") && text.contains("team/other"),
        "{text}"
    );

    // A dry run through the library says what would go and removes nothing.
    let request = PurgeRequest {
        target: Some(PurgeTarget::Image(
            ImageRef::parse(&format!("{FAKE_HOST}/team/app:v1")).unwrap(),
        )),
        older_than: None,
        dry_run: true,
    };
    let report = purge_bucket(&store, &request).await.unwrap();
    assert_eq!(report.images.len(), 1);
    for key in &app_keys {
        assert!(store.head(key).await.unwrap().is_some(), "{key}");
    }

    // The admin API purges the local disk and the bucket.
    let (status, report) = call(
        &proxy,
        "POST",
        "/admin/cache/purge",
        Some(serde_json::json!({"image": format!("{FAKE_HOST}/team/app:v1")})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["images"].as_array().unwrap().len(), 1, "{report}");
    let bucket = &report["bucket"];
    assert_eq!(bucket["images"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(bucket["kept_shared"], 1, "{report}");
    for key in &app_keys {
        assert_eq!(
            store.head(key).await.unwrap(),
            None,
            "{key} left in the bucket"
        );
    }
    // What the other image uses stays.
    assert!(store.head(&shared).await.unwrap().is_some());
    assert!(store.head(&other_manifest).await.unwrap().is_some());

    // The command line: `cache ls --bucket` shows what only the bucket holds, and `cache purge`
    // purges a target only the bucket holds (the local disk never had it).
    let cli = |args: &[&str]| {
        let out = bin_command(&env)
            .arg("cache")
            .args(args)
            .arg("--cache-dir")
            .arg(proxy.cache_dir())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let listed = cli(&["ls", "--bucket", "--json"]).to_string();
    assert!(
        listed.contains("team/other") && !listed.contains("team/app"),
        "{listed}"
    );
    let report = cli(&["purge", &format!("{FAKE_HOST}/team/other:v2"), "--json"]);
    assert_eq!(report["images"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(
        report["bucket"]["images"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(store.head(&shared).await.unwrap().is_none());
    assert!(store.head(&other_manifest).await.unwrap().is_none());
}
