//! Small objects a shared bucket keeps for its own housekeeping, outside the cache's layout
//! (`gc/…` under the prefix: the collector's lease, access records, the start-up probe), written
//! with the conditions S3 knows: `If-None-Match: *` ([`Condition::Absent`]) and `If-Match: <etag>`
//! ([`Condition::Matches`]). A store that ignores them (Garage 2.x) just overwrites; the collector
//! finds out at start-up (`cache/gc/`).

use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{ObjectMeta, Store, StoreError};

/// A housekeeping object as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub bytes: Bytes,
    /// The version to name in [`Condition::Matches`]; `None` if the store gave none.
    pub etag: Option<String>,
    pub modified: SystemTime,
}

/// When a write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Whatever is there.
    Any,
    /// Only if nothing is there (`If-None-Match: *`).
    Absent,
    /// Only if this version is there (`If-Match`).
    Matches(String),
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written; the new version, if the store gave one.
    Done { etag: Option<String> },
    /// The condition did not hold: nothing was written.
    Conflict,
}

/// Housekeeping objects by path (relative to the store's root, `/`-separated).
pub trait Records: Send + Sync + 'static {
    /// The object at `path`, with its version; `None` if absent.
    fn read_record<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>>;

    /// Writes `bytes` at `path` if `condition` holds.
    fn write_record<'a>(
        &'a self,
        path: &'a str,
        bytes: Bytes,
        condition: Condition,
    ) -> BoxFuture<'a, Result<Written, StoreError>>;

    /// Removes the object at `path`; an absent one is not an error.
    fn delete_record<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Every object whose path starts with `dir` (a directory, ending in `/`): paths and metadata.
    fn list_records<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, ObjectMeta)>, StoreError>>;
}

/// A store that replicas share: the cache's objects and the housekeeping records beside them.
pub trait SharedStore: Store + Records {}

impl<T: Store + Records> SharedStore for T {}
