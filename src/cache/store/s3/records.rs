//! [`Records`] for the bucket: plain and conditional PUTs (`object_store`'s `PutMode::Create` is
//! `If-None-Match: *`, `PutMode::Update` is `If-Match: <etag>`), GETs with the ETag, listings.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{S3Store, meta, remote_message};
use crate::cache::store::{Condition, ObjectMeta, Record, Records, StoreError, Written};

impl S3Store {
    fn record_location(&self, path: &str) -> Result<object_store::path::Path, StoreError> {
        self.path(path)
            .map_err(|message| remote_message(path.to_owned(), message))
    }
}

fn failed(path: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
    move |e| remote_message(path.to_owned(), e.to_string())
}

impl Records for S3Store {
    fn read_record<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            let location = self.record_location(path)?;
            let got = match self.client.get(&location).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(failed(path)(e)),
            };
            let (etag, modified) = (got.meta.e_tag.clone(), meta(&got.meta).modified);
            let bytes = got.bytes().await.map_err(failed(path))?;
            Ok(Some(Record {
                bytes,
                etag,
                modified,
            }))
        })
    }

    fn write_record<'a>(
        &'a self,
        path: &'a str,
        bytes: Bytes,
        condition: Condition,
    ) -> BoxFuture<'a, Result<Written, StoreError>> {
        Box::pin(async move {
            let location = self.record_location(path)?;
            let mode = match condition {
                Condition::Any => PutMode::Overwrite,
                Condition::Absent => PutMode::Create,
                Condition::Matches(etag) => PutMode::Update(UpdateVersion {
                    e_tag: Some(etag),
                    version: None,
                }),
            };
            let options = PutOptions {
                mode,
                ..PutOptions::default()
            };
            match self
                .client
                .put_opts(&location, PutPayload::from(bytes), options)
                .await
            {
                Ok(put) => Ok(Written::Done { etag: put.e_tag }),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Ok(Written::Conflict),
                Err(e) => Err(failed(path)(e)),
            }
        })
    }

    fn delete_record<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let location = self.record_location(path)?;
            match self.client.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(failed(path)(e)),
            }
        })
    }

    fn list_records<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, ObjectMeta)>, StoreError>> {
        Box::pin(async move {
            let prefix = self.record_location(dir.trim_end_matches('/'))?;
            let mut listing = self.client.list(Some(&prefix));
            let mut out = Vec::new();
            while let Some(found) = listing.next().await {
                let found = found.map_err(failed(dir))?;
                if let Some(rel) = self.relative(&found.location) {
                    out.push((rel.to_owned(), meta(&found)));
                }
            }
            Ok(out)
        })
    }
}
