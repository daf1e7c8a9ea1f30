//! Where objects live, behind one small interface (modelled on pingora-cache's `Storage`): look an
//! object up, read a range of it, write one (nothing is visible until the writer finishes; a
//! writer dropped unfinished is abandoned), delete one, list what a kind holds.
//!
//! Stores know names ([`ObjectKey`]) and bytes, nothing about registries, digests' meaning or
//! clients: verifying content, single flight and space are the cache's business (`fill/`,
//! `space.rs`). The local disk ([`DiskStore`]) is always there, in front; downloads in flight
//! stream through it, since their readers read its growing temp file.

mod disk;
mod records;
mod s3;
mod verify;

pub use disk::DiskStore;
pub use records::{Condition, Record, Records, SharedStore, Written};
pub use s3::{HyperConnector, S3Store};
pub use verify::verify_store;

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;

use super::key::{ContentKind, ObjectKey};

/// Bytes read from a store; an error ends the stream (an aborted transfer for a client).
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync + 'static>>;

/// A store's failure. Internal: a client never caused one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{store} {key}: {source}")]
    Io {
        store: &'static str,
        key: String,
        source: io::Error,
    },
    /// The remote store refused or could not be reached; its message names no credential.
    #[error("{store} {key}: {message}")]
    Remote {
        store: &'static str,
        key: String,
        message: String,
    },
}

impl StoreError {
    pub(crate) fn io(store: &'static str, key: &ObjectKey) -> impl FnOnce(io::Error) -> Self {
        let key = key.path();
        move |source| StoreError::Io { store, key, source }
    }
}

/// What a lookup tells about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    pub len: u64,
    /// Last write, or last use where the store records it (the disk does, as the mtime).
    pub modified: SystemTime,
}

/// A small object read or written whole: a manifest, a tag record, a link (empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Object {
    pub bytes: Bytes,
    /// The media type stored with it (manifests).
    pub media_type: Option<String>,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: ObjectKey,
    pub meta: ObjectMeta,
}

/// A store of objects by key.
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and errors (`disk`, `s3`).
    fn name(&self) -> &'static str;

    /// The object's length and last change; `None` if it is absent.
    fn head<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, StoreError>>;

    /// Bytes `start..=end` of an object. A missing or short object ends the stream with an error.
    fn read(&self, key: &ObjectKey, start: u64, end: u64) -> ByteStream;

    /// A small object, whole, with its media type; `None` if it is absent.
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Object>, StoreError>>;

    /// Starts writing `key`. Nothing is visible at `key` until [`ObjectWrite::finish`] succeeds;
    /// a writer dropped before that is abandoned and leaves nothing behind.
    fn begin_write<'a>(
        &'a self,
        key: &'a ObjectKey,
        media_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWrite>, StoreError>>;

    /// Writes a small object whole, with the same all-or-nothing visibility.
    fn put<'a>(
        &'a self,
        key: &'a ObjectKey,
        object: Object,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut writer = self.begin_write(key, object.media_type.as_deref()).await?;
            writer.write(object.bytes).await?;
            writer.finish().await.map(|_| ())
        })
    }

    /// Removes an object (and what is stored with it); an absent one is not an error.
    fn delete<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Every object of a kind, for eviction, verification and reconciling stores.
    fn list(&self, kind: ContentKind) -> BoxFuture<'_, Result<Vec<Listed>, StoreError>>;
}

/// An object being written (see [`Store::begin_write`]).
pub trait ObjectWrite: Send {
    /// Appends bytes.
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Makes the object visible at its key with everything written; its length.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<u64, StoreError>>;
}

/// What every store must do; run by the tests against each implementation.
#[doc(hidden)]
pub mod conformance;
