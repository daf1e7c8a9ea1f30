//! What every [`Store`] must do, run against each implementation: the disk in the unit tests, the
//! object store against a real S3 server in the integration tests. Test code: it panics on the
//! first store that does not conform.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use bytes::Bytes;
use futures_util::StreamExt;

use super::{Object, Store};
use crate::cache::key::{ContentKind, LinkKind, ObjectKey};
use crate::registry::digest::Digest;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;

async fn read_all(
    store: &dyn Store,
    key: &ObjectKey,
    start: u64,
    end: u64,
) -> Result<Vec<u8>, String> {
    let mut stream = store.read(key, start, end);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Runs every check against `store`, which must be empty.
pub async fn check(store: &dyn Store) {
    // Larger than one part of a multipart upload (8 MiB), so the object store streams it in parts.
    let blob: Bytes = (0..9_000_000u32)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    let digest = Digest::sha256_of(&blob);
    let key = ObjectKey::blob(&digest);
    assert_eq!(store.head(&key).await.unwrap(), None, "absent at first");
    assert_eq!(store.get(&key).await.unwrap(), None);

    // A streamed write is invisible until finished.
    let mut writer = store.begin_write(&key, None).await.unwrap();
    writer.write(blob.slice(..300_000)).await.unwrap();
    writer.write(blob.slice(300_000..8_500_000)).await.unwrap();
    writer.write(blob.slice(8_500_000..)).await.unwrap();
    assert_eq!(
        store.head(&key).await.unwrap(),
        None,
        "invisible before finish"
    );
    assert_eq!(writer.finish().await.unwrap(), blob.len() as u64);
    assert_eq!(
        store.head(&key).await.unwrap().map(|m| m.len),
        Some(blob.len() as u64)
    );

    // Ranges.
    assert_eq!(
        read_all(store, &key, 0, blob.len() as u64 - 1)
            .await
            .unwrap(),
        blob
    );
    assert_eq!(read_all(store, &key, 10, 19).await.unwrap(), &blob[10..20]);
    assert_eq!(
        read_all(store, &key, 8_388_600, 8_388_700).await.unwrap(),
        &blob[8_388_600..=8_388_700],
        "across the parts"
    );
    let missing = ObjectKey::blob(&Digest::sha256_of(b"missing"));
    assert!(
        read_all(store, &missing, 0, 9).await.is_err(),
        "a missing object is an error"
    );

    // An abandoned write leaves nothing.
    let other = ObjectKey::blob(&Digest::sha256_of(b"abandoned"));
    let mut writer = store.begin_write(&other, None).await.unwrap();
    writer.write(blob.slice(..8_500_000)).await.unwrap();
    drop(writer);
    assert_eq!(store.head(&other).await.unwrap(), None, "abandoned");

    // Small objects, with and without a media type.
    let manifest = Bytes::from_static(b"{\"schemaVersion\":2}");
    let mkey = ObjectKey::manifest(&Digest::sha256_of(&manifest));
    let object = Object {
        bytes: manifest.clone(),
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
    };
    store.put(&mkey, object.clone()).await.unwrap();
    assert_eq!(store.get(&mkey).await.unwrap(), Some(object));
    let registry = RegistryHost::parse("registry.test:5000").unwrap();
    let name = RepoName::parse("team/app").unwrap();
    let link = ObjectKey::link(&registry, &name, LinkKind::Blob, &digest);
    let empty = Object {
        bytes: Bytes::new(),
        media_type: None,
    };
    store.put(&link, empty.clone()).await.unwrap();
    assert_eq!(store.get(&link).await.unwrap(), Some(empty));
    assert_eq!(store.head(&link).await.unwrap().map(|m| m.len), Some(0));

    // Listing by kind.
    let blobs = store.list(ContentKind::Blob).await.unwrap();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert_eq!(blobs[0].key, key);
    assert_eq!(blobs[0].meta.len, blob.len() as u64);
    let manifests = store.list(ContentKind::Manifest).await.unwrap();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!(manifests[0].key, mkey);

    // Deleting, also what is absent.
    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap();
    store.delete(&mkey).await.unwrap();
    assert_eq!(store.head(&key).await.unwrap(), None);
    assert_eq!(store.get(&mkey).await.unwrap(), None);
    assert!(store.list(ContentKind::Blob).await.unwrap().is_empty());
}
