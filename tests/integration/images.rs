//! Two images on the fake upstream for the operator commands: `lib/multi:v1`, an OCI index with
//! linux/amd64 and linux/arm64 manifests, and `lib/single:v1`, a Docker schema 2 manifest. Both
//! use one shared base layer; every other blob is an image's own.

use bytes::Bytes;

use crate::fake::{Behavior, Fake, sha256_digest};
use crate::harness::{FAKE_HOST, random_bytes};

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// An object of a test image: digest and bytes.
#[derive(Clone)]
pub(crate) struct Object {
    pub(crate) digest: String,
    pub(crate) bytes: Bytes,
}

impl Object {
    fn new(bytes: Bytes) -> Object {
        Object {
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// One image as published.
pub(crate) struct TestImage {
    /// Repository on the fake (`lib/multi`).
    pub(crate) repo: &'static str,
    /// The manifest (or index) the tag `v1` points at.
    pub(crate) root: Object,
    /// Platform manifests of an index (amd64, arm64).
    pub(crate) children: Vec<Object>,
    /// Configs and layers of its own (not the shared layer), per platform in order.
    pub(crate) own_blobs: Vec<Object>,
}

impl TestImage {
    /// `fake.test/<repo>:v1`.
    pub(crate) fn reference(&self) -> String {
        format!("{FAKE_HOST}/{}:v1", self.repo)
    }

    /// Every byte of it in the cache: manifests, configs, own layers and the shared layer.
    pub(crate) fn total(&self, shared: &Object) -> u64 {
        self.root.len()
            + self.children.iter().map(Object::len).sum::<u64>()
            + self.own_blobs.iter().map(Object::len).sum::<u64>()
            + shared.len()
    }

    /// What only it uses.
    pub(crate) fn unique(&self, shared: &Object) -> u64 {
        self.total(shared) - shared.len()
    }
}

pub(crate) struct Fixture {
    pub(crate) multi: TestImage,
    pub(crate) single: TestImage,
    pub(crate) shared: Object,
}

fn descriptor(media_type: &str, o: &Object) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": o.digest, "size": o.len()})
}

fn image_manifest(media_type: &str, config: &Object, layers: &[&Object]) -> Object {
    let config_type = if media_type == OCI_MANIFEST {
        "application/vnd.oci.image.config.v1+json"
    } else {
        "application/vnd.docker.container.image.v1+json"
    };
    let layer_type = if media_type == OCI_MANIFEST {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    };
    let json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, config),
        "layers": layers.iter().map(|l| descriptor(layer_type, l)).collect::<Vec<_>>(),
    });
    Object::new(Bytes::from(serde_json::to_vec_pretty(&json).unwrap()))
}

fn config(arch: &str, seed: u64) -> Object {
    Object::new(Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux", "seed": seed,
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap(),
    ))
}

/// Publishes both images on `fake` (blob and manifest routes by tag and by digest).
pub(crate) fn publish(fake: &Fake, seed: u64) -> Fixture {
    let shared = Object::new(random_bytes(120_000, seed));

    let amd_config = config("amd64", seed);
    let amd_layer = Object::new(random_bytes(80_000, seed + 1));
    let arm_config = config("arm64", seed);
    let arm_layer = Object::new(random_bytes(90_000, seed + 2));
    let amd = image_manifest(OCI_MANIFEST, &amd_config, &[&shared, &amd_layer]);
    let arm = image_manifest(OCI_MANIFEST, &arm_config, &[&shared, &arm_layer]);
    let index_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.digest, "size": amd.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.digest, "size": arm.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    });
    let index = Object::new(Bytes::from(serde_json::to_vec_pretty(&index_json).unwrap()));
    let multi = TestImage {
        repo: "lib/multi",
        root: index,
        children: vec![amd, arm],
        own_blobs: vec![amd_config, amd_layer, arm_config, arm_layer],
    };

    let single_config = config("amd64", seed + 10);
    let single_layer = Object::new(random_bytes(70_000, seed + 3));
    let single_manifest =
        image_manifest(DOCKER_MANIFEST, &single_config, &[&shared, &single_layer]);
    let single = TestImage {
        repo: "lib/single",
        root: single_manifest,
        children: Vec::new(),
        own_blobs: vec![single_config, single_layer],
    };

    for (image, root_type) in [(&multi, OCI_INDEX), (&single, DOCKER_MANIFEST)] {
        let manifest = |o: &Object, media_type: &str| Behavior::Manifest {
            bytes: o.bytes.clone(),
            media_type: media_type.to_owned(),
        };
        fake.route(
            &format!("/v2/{}/manifests/v1", image.repo),
            manifest(&image.root, root_type),
        );
        fake.route(
            &format!("/v2/{}/manifests/{}", image.repo, image.root.digest),
            manifest(&image.root, root_type),
        );
        for child in &image.children {
            fake.route(
                &format!("/v2/{}/manifests/{}", image.repo, child.digest),
                manifest(child, OCI_MANIFEST),
            );
        }
        for blob in image.own_blobs.iter().chain([&shared]) {
            fake.route(
                &format!("/v2/{}/blobs/{}", image.repo, blob.digest),
                Behavior::Blob(blob.bytes.clone()),
            );
        }
    }
    Fixture {
        multi,
        single,
        shared,
    }
}

/// A progress sink that says nothing.
pub(crate) struct Quiet;

impl registry_proxy::warm::Progress for Quiet {
    fn event(&self, _: registry_proxy::warm::Event<'_>) {}
}

/// Warms `images` through `proxy` with the library, as `warm --proxy` does.
pub(crate) async fn warm_through(
    addr: std::net::SocketAddr,
    images: &[&str],
    platform: Option<&str>,
) -> registry_proxy::warm::Summary {
    let options = registry_proxy::warm::Options {
        proxy: addr.to_string(),
        platform: platform.map(|p| registry_proxy::registry::manifest::Platform::parse(p).unwrap()),
        credentials: None,
        timeout: std::time::Duration::from_secs(10),
    };
    let refs: Vec<_> = images
        .iter()
        .map(|i| registry_proxy::registry::image::ImageRef::parse(i).unwrap())
        .collect();
    registry_proxy::warm::warm(&options, &refs, &Quiet).await
}
