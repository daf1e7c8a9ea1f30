//! An S3-compatible bucket as a [`Store`] (AWS S3, MinIO, Ceph RGW, Garage, GCS's S3 API), through
//! the `object_store` crate's S3 client over the proxy's own hyper client and rustls configuration
//! (`s3/http.rs`).
//!
//! Objects live at `<prefix>/<key path>`: the bucket lays out exactly what the disk does, so it is
//! self-describing. A manifest's media type is its `Content-Type`. A streamed write becomes visible
//! only when complete: small objects go up in one PUT, larger ones as a multipart upload to the
//! final key that is completed by [`ObjectWrite::finish`] and aborted when the writer is dropped
//! unfinished (S3 never shows an incomplete multipart upload).

mod http;
mod records;

pub use http::HyperConnector;

use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::MultipartUpload;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};

use super::{ByteStream, Listed, Object, ObjectMeta, ObjectWrite, Store, StoreError};
use crate::cache::key::{ContentKind, ObjectKey};
use crate::config::S3Settings;

const NAME: &str = "s3";

/// Bytes per part of a multipart upload (S3 wants at least 5 MiB for all but the last).
const PART: usize = 8 << 20;

/// Retries of one request before the store reports an error (and the cache treats the bucket as
/// down until its probe succeeds).
const RETRIES: usize = 2;
/// Longest a request and its retries may take.
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// A bucket (and prefix) of an S3-compatible object store.
#[derive(Clone)]
pub struct S3Store {
    client: Arc<dyn ObjectStore>,
    /// Invariant: no leading or trailing `/`; empty for the bucket's root.
    prefix: String,
}

impl S3Store {
    /// A client for the bucket in `settings`, sending requests through `http`.
    pub fn new(settings: &S3Settings, http: HyperConnector) -> Result<S3Store, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_http_connector(http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: RETRIES,
                retry_timeout: RETRY_TIMEOUT,
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_client_options(ClientOptions::new().with_allow_http(true));
        }
        if let Some((id, secret)) = &settings.credentials {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
        }
        let client = builder.build().map_err(|e| StoreError::Remote {
            store: NAME,
            key: String::new(),
            message: e.to_string(),
        })?;
        Ok(S3Store {
            client: Arc::new(client),
            prefix: settings.prefix.clone(),
        })
    }

    /// Where `key` lives in the bucket.
    fn location(&self, key: &ObjectKey) -> Result<Path, StoreError> {
        self.path(&key.path())
            .map_err(|message| remote_message(key.path(), message))
    }

    fn path(&self, rel: &str) -> Result<Path, String> {
        let full = if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        Path::parse(full).map_err(|e| e.to_string())
    }

    /// The key path of a listed location (`None` outside the prefix).
    fn relative<'a>(&self, location: &'a Path) -> Option<&'a str> {
        let full: &str = location.as_ref();
        if self.prefix.is_empty() {
            return Some(full);
        }
        full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }
}

/// Names the prefix only: the client's configuration holds the credentials.
impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn remote_message(key: String, message: String) -> StoreError {
    StoreError::Remote {
        store: NAME,
        key,
        message,
    }
}

fn remote(key: &ObjectKey) -> impl FnOnce(object_store::Error) -> StoreError {
    let key = key.path();
    move |e| remote_message(key, e.to_string())
}

fn meta(meta: &object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        len: meta.size,
        modified: SystemTime::from(meta.last_modified),
    }
}

impl Store for S3Store {
    fn name(&self) -> &'static str {
        NAME
    }

    fn head<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, StoreError>> {
        Box::pin(async move {
            let location = self.location(key)?;
            match self.client.head(&location).await {
                Ok(found) => Ok(Some(meta(&found))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(remote(key)(e)),
            }
        })
    }

    fn read(&self, key: &ObjectKey, start: u64, end: u64) -> ByteStream {
        let client = self.client.clone();
        let location = self.location(key);
        let opened = async move {
            let location = location.map_err(io::Error::other)?;
            let options = GetOptions {
                range: Some(GetRange::Bounded(start..end.saturating_add(1))),
                ..GetOptions::default()
            };
            let got = client
                .get_opts(&location, options)
                .await
                .map_err(io::Error::other)?;
            if got.range != (start..end.saturating_add(1)) {
                return Err(io::Error::other(format!(
                    "bucket object shorter than expected: bytes {:?} of {start}..={end}",
                    got.range
                )));
            }
            Ok(got.into_stream().map_err(io::Error::other))
        };
        Box::pin(Exclusive::new(
            futures_util::stream::once(opened).try_flatten().boxed(),
        ))
    }

    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Object>, StoreError>> {
        Box::pin(async move {
            let location = self.location(key)?;
            let got = match self.client.get(&location).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(remote(key)(e)),
            };
            // Only a manifest has a media type of its own (S3 gives every object one).
            let is_manifest = matches!(key.content(), Some((ContentKind::Manifest, _)));
            let media_type = got
                .attributes
                .get(&Attribute::ContentType)
                .map(|v| v.to_string())
                .filter(|_| is_manifest);
            if is_manifest && media_type.is_none() {
                return Ok(None);
            }
            let bytes = got.bytes().await.map_err(remote(key))?;
            Ok(Some(Object { bytes, media_type }))
        })
    }

    fn begin_write<'a>(
        &'a self,
        key: &'a ObjectKey,
        media_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWrite>, StoreError>> {
        Box::pin(async move {
            Ok(Box::new(S3Write {
                client: self.client.clone(),
                key: key.clone(),
                location: self.location(key)?,
                attributes: attributes(media_type),
                buffer: BytesMut::new(),
                upload: None,
                len: 0,
            }) as Box<dyn ObjectWrite>)
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a ObjectKey,
        object: Object,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let location = self.location(key)?;
            let options = PutOptions {
                attributes: attributes(object.media_type.as_deref()),
                ..PutOptions::default()
            };
            self.client
                .put_opts(&location, PutPayload::from(object.bytes), options)
                .await
                .map(|_| ())
                .map_err(remote(key))
        })
    }

    fn delete<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let location = self.location(key)?;
            match self.client.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(remote(key)(e)),
            }
        })
    }

    fn list(&self, kind: ContentKind) -> BoxFuture<'_, Result<Vec<Listed>, StoreError>> {
        Box::pin(async move {
            let prefix = self
                .path(kind.dir())
                .map_err(|m| remote_message(kind.dir().to_owned(), m))?;
            let mut listing = self.client.list(Some(&prefix));
            let mut out = Vec::new();
            while let Some(found) = listing.next().await {
                let found =
                    found.map_err(|e| remote_message(kind.dir().to_owned(), e.to_string()))?;
                let Some(key) = self
                    .relative(&found.location)
                    .and_then(ObjectKey::parse_content)
                else {
                    continue;
                };
                out.push(Listed {
                    key,
                    meta: meta(&found),
                });
            }
            Ok(out)
        })
    }
}

fn attributes(media_type: Option<&str>) -> Attributes {
    let mut attributes = Attributes::new();
    if let Some(t) = media_type {
        attributes.insert(Attribute::ContentType, t.to_owned().into());
    }
    attributes
}

/// An object being written. Parts go up as they fill; the multipart upload is only created once
/// a first part is full, so a small object is a single PUT at `finish`.
struct S3Write {
    client: Arc<dyn ObjectStore>,
    key: ObjectKey,
    location: Path,
    attributes: Attributes,
    /// Bytes not yet sent. Invariant: shorter than [`PART`] between calls.
    buffer: BytesMut,
    /// The multipart upload, once started. Aborted on drop unless completed (then `None`).
    upload: Option<Box<dyn MultipartUpload>>,
    len: u64,
}

impl S3Write {
    /// Sends one full part from the buffer.
    async fn send_part(&mut self) -> Result<(), StoreError> {
        let part = self.buffer.split_to(PART).freeze();
        if self.upload.is_none() {
            let options = PutMultipartOptions {
                attributes: self.attributes.clone(),
                ..PutMultipartOptions::default()
            };
            let upload = self
                .client
                .put_multipart_opts(&self.location, options)
                .await
                .map_err(remote(&self.key))?;
            self.upload = Some(upload);
        }
        let Some(upload) = self.upload.as_mut() else {
            return Err(remote_message(self.key.path(), "no upload".into()));
        };
        upload
            .put_part(PutPayload::from(part))
            .await
            .map_err(remote(&self.key))
    }
}

impl ObjectWrite for S3Write {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.len += chunk.len() as u64;
            self.buffer.extend_from_slice(&chunk);
            while self.buffer.len() >= PART {
                self.send_part().await?;
            }
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, StoreError>> {
        Box::pin(async move {
            let rest = self.buffer.split().freeze();
            match self.upload.take() {
                None => {
                    let options = PutOptions {
                        attributes: std::mem::take(&mut self.attributes),
                        ..PutOptions::default()
                    };
                    self.client
                        .put_opts(&self.location, PutPayload::from(rest), options)
                        .await
                        .map_err(remote(&self.key))?;
                }
                Some(mut upload) => {
                    let completed = async {
                        if !rest.is_empty() {
                            upload.put_part(PutPayload::from(rest)).await?;
                        }
                        upload.complete().await
                    }
                    .await;
                    if let Err(e) = completed {
                        // Put it back so that dropping `self` aborts it.
                        self.upload = Some(upload);
                        return Err(remote(&self.key)(e));
                    }
                }
            }
            Ok(self.len)
        })
    }
}

impl Drop for S3Write {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let key = self.key.path();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(%key, error = %e, "cannot abort an unfinished upload; the bucket's lifecycle rule removes it");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(%key, "unfinished upload left to the bucket's lifecycle rule (no runtime to abort it)");
            }
        }
    }
}

/// A `Send` stream made `Sync`: only ever polled through `&mut`, so the lock is never taken.
struct Exclusive<S>(Mutex<S>);

impl<S> Exclusive<S> {
    fn new(stream: S) -> Self {
        Exclusive(Mutex::new(stream))
    }
}

impl<S: Stream + Unpin> Stream for Exclusive<S> {
    type Item = S::Item;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        inner.poll_next_unpin(cx)
    }
}
