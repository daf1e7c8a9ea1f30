//! The local disk store: each object a file at its key's path under the cache root (a manifest's
//! media type in a `.type` file beside it), written to `tmp/` and renamed into place, so a crash
//! never leaves a partial object visible. Files are 0600 and directories 0700 (`private.rs`).
//!
//! Besides the [`Store`] interface it gives the cache what only a local file system can: temp files
//! that readers of a download in flight read while they grow, and plain blocking calls for the
//! threads that already block (the fill's writer, the index scan, eviction).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;

use super::{ByteStream, Listed, Object, ObjectMeta, ObjectWrite, Store, StoreError};
use crate::cache::chunks::{ChunkReader, READ_CHUNK};
use crate::cache::key::{ContentKind, ObjectKey};
use crate::cache::{index::Index, private};

const NAME: &str = "disk";

/// Objects as files under a root directory.
#[derive(Debug)]
pub struct DiskStore {
    root: PathBuf,
    tmp_counter: AtomicU64,
    /// Names this instance's temp files apart from those of any other process or instance using
    /// the store (two containers sharing the volume may both be PID 1).
    tmp_prefix: String,
}

impl DiskStore {
    /// The store at `root`, whose directories the cache has created.
    pub fn new(root: &Path) -> DiskStore {
        DiskStore {
            root: root.to_path_buf(),
            tmp_counter: AtomicU64::new(0),
            tmp_prefix: tmp_prefix(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key` lives.
    pub(crate) fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.path())
    }

    /// A fresh name in `tmp/`, unique to this instance of the store.
    pub(crate) fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}", self.tmp_prefix))
    }

    /// Creates a new private temp file (blocking).
    pub(crate) fn create_temp(&self) -> io::Result<(PathBuf, std::fs::File)> {
        let tmp = self.tmp_path();
        let file = private::create_new(&tmp)?;
        Ok((tmp, file))
    }

    /// Moves a finished temp file to `target`, creating its directory (blocking).
    pub(crate) fn commit(tmp: &Path, target: &Path) -> io::Result<()> {
        if let Some(parent) = target.parent() {
            private::create_dir_all(parent)?;
        }
        std::fs::rename(tmp, target)
    }

    /// The length of an object (a blocking `stat`, as cheap as a lookup gets).
    pub(crate) fn len(&self, key: &ObjectKey) -> Option<u64> {
        std::fs::metadata(self.path(key)).ok().map(|m| m.len())
    }

    /// True if the object exists.
    pub(crate) fn exists(&self, key: &ObjectKey) -> bool {
        self.path(key).exists()
    }

    /// Writes a small object without a media type (blocking; temp file and rename).
    pub(crate) fn put_blocking(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.tmp_path();
        // A new file: never another writer's temp file.
        let written = private::create_new(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| DiskStore::commit(&tmp, &self.path(key)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(StoreError::io(NAME, key))
    }

    /// Removes an object and its side file (blocking); an absent one is not an error.
    pub(crate) fn delete_blocking(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let path = self.path(key);
        let _ = std::fs::remove_file(DiskStore::type_path(&path));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io(NAME, key)(e)),
            _ => Ok(()),
        }
    }

    /// Records `when` as the object's last use (its mtime).
    pub(crate) fn set_modified(&self, key: &ObjectKey, when: SystemTime) -> io::Result<()> {
        std::fs::File::open(self.path(key)).and_then(|f| f.set_modified(when))
    }

    /// Bytes `start..=end` of an object, read in chunks on blocking threads.
    pub(crate) fn read_range(
        &self,
        key: &ObjectKey,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + Sync + use<> {
        file_stream(self.path(key), start, end)
    }

    /// The side file holding the media type of the object at `path`.
    fn type_path(path: &Path) -> PathBuf {
        path.with_extension("type")
    }

    /// Lists one kind (blocking).
    fn list_blocking(root: &Path, kind: ContentKind) -> Vec<Listed> {
        let mut out = Vec::new();
        for shard in Index::shards(root) {
            if !shard.starts_with(kind.dir()) {
                continue;
            }
            for (rel, len, modified) in Index::scan_shard(root, &shard) {
                let Some(key) = rel.to_str().and_then(ObjectKey::parse_content) else {
                    continue;
                };
                out.push(Listed {
                    key,
                    meta: ObjectMeta { len, modified },
                });
            }
        }
        out
    }
}

impl Store for DiskStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn head<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, StoreError>> {
        Box::pin(async move {
            match std::fs::metadata(self.path(key)) {
                Ok(meta) => Ok(Some(ObjectMeta {
                    len: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                })),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StoreError::io(NAME, key)(e)),
            }
        })
    }

    fn read(&self, key: &ObjectKey, start: u64, end: u64) -> ByteStream {
        Box::pin(self.read_range(key, start, end))
    }

    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Object>, StoreError>> {
        Box::pin(async move {
            let path = self.path(key);
            let bytes = match tokio::fs::read(&path).await {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::io(NAME, key)(e)),
            };
            // A manifest is whole only with its media type (written first, see `finish`).
            let media_type = match key.content() {
                Some((ContentKind::Manifest, _)) => {
                    match tokio::fs::read_to_string(DiskStore::type_path(&path)).await {
                        Ok(t) => Some(t),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(StoreError::io(NAME, key)(e)),
                    }
                }
                _ => None,
            };
            Ok(Some(Object { bytes, media_type }))
        })
    }

    fn begin_write<'a>(
        &'a self,
        key: &'a ObjectKey,
        media_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWrite>, StoreError>> {
        Box::pin(async move {
            let tmp = self.tmp_path();
            let created = {
                let tmp = tmp.clone();
                tokio::task::spawn_blocking(move || private::create_new(&tmp))
                    .await
                    .map_err(io::Error::other)
                    .and_then(|r| r)
            };
            let file = created.map_err(StoreError::io(NAME, key))?;
            let target = self.path(key);
            let side = media_type.map(|t| (self.tmp_path(), t.to_owned()));
            Ok(Box::new(DiskWrite {
                key: key.clone(),
                tmp,
                file: Some(file),
                target,
                side,
                len: 0,
                finished: false,
            }) as Box<dyn ObjectWrite>)
        })
    }

    fn delete<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.delete_blocking(key) })
    }

    fn list(&self, kind: ContentKind) -> BoxFuture<'_, Result<Vec<Listed>, StoreError>> {
        let root = self.root.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || DiskStore::list_blocking(&root, kind))
                .await
                .map_err(|e| StoreError::Io {
                    store: NAME,
                    key: kind.dir().to_owned(),
                    source: io::Error::other(e),
                })
        })
    }
}

/// An object being written to a temp file.
struct DiskWrite {
    key: ObjectKey,
    tmp: PathBuf,
    /// Invariant: `Some` except while a blocking write holds it.
    file: Option<std::fs::File>,
    target: PathBuf,
    /// The media type and the temp name its side file is written under.
    side: Option<(PathBuf, String)>,
    len: u64,
    finished: bool,
}

impl ObjectWrite for DiskWrite {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut file = self.file.take().ok_or_else(|| {
                StoreError::io(NAME, &self.key)(io::Error::other("an earlier write failed"))
            })?;
            let len = chunk.len() as u64;
            let (file, written) = tokio::task::spawn_blocking(move || {
                let written = file.write_all(&chunk);
                (file, written)
            })
            .await
            .map_err(|e| StoreError::io(NAME, &self.key)(io::Error::other(e)))?;
            written.map_err(StoreError::io(NAME, &self.key))?;
            self.file = Some(file);
            self.len += len;
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, StoreError>> {
        Box::pin(async move {
            let file = self.file.take();
            let (tmp, target, side) = (self.tmp.clone(), self.target.clone(), self.side.clone());
            let committed = tokio::task::spawn_blocking(move || {
                let mut file = file.ok_or_else(|| io::Error::other("an earlier write failed"))?;
                file.flush()?;
                // The side file first: whoever sees the object sees its media type.
                if let Some((side_tmp, media_type)) = &side {
                    private::create_new(side_tmp)?.write_all(media_type.as_bytes())?;
                    if let Err(e) = DiskStore::commit(side_tmp, &DiskStore::type_path(&target)) {
                        let _ = std::fs::remove_file(side_tmp);
                        return Err(e);
                    }
                }
                DiskStore::commit(&tmp, &target)
            })
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
            committed.map_err(StoreError::io(NAME, &self.key))?;
            self.finished = true;
            Ok(self.len)
        })
    }
}

impl Drop for DiskWrite {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `<pid>-<random>`: unique to one open store.
fn tmp_prefix() -> String {
    let mut random = [0u8; 6];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).is_err() {
        // No randomness: the time still tells instances of one process apart.
        let nanos = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        random[..4].copy_from_slice(&nanos.to_le_bytes());
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", std::process::id())
}

/// Streams `start..=end` of a file in chunks read on blocking threads.
pub(crate) fn file_stream(
    path: PathBuf,
    start: u64,
    end: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + Sync {
    struct S {
        path: PathBuf,
        file: Option<ChunkReader>,
        pos: u64,
        end: u64,
    }
    futures_util::stream::unfold(
        S {
            path,
            file: None,
            pos: start,
            end,
        },
        |mut s| async move {
            if s.pos > s.end {
                return None;
            }
            let want = usize::try_from(s.end - s.pos + 1)
                .unwrap_or(READ_CHUNK)
                .min(READ_CHUNK);
            let file = s.file.take();
            let path = s.path.clone();
            let pos = s.pos;
            let joined = tokio::task::spawn_blocking(move || {
                let mut file = match file {
                    Some(f) => f,
                    None => ChunkReader::new(std::fs::File::open(&path)?),
                };
                let bytes = file.read_at(pos, want)?;
                Ok::<_, io::Error>((file, bytes))
            })
            .await;
            match joined {
                Ok(Ok((file, bytes))) if !bytes.is_empty() => {
                    s.pos += bytes.len() as u64;
                    s.file = Some(file);
                    Some((Ok(bytes), s))
                }
                Ok(Ok(_)) => {
                    s.pos = u64::MAX;
                    Some((
                        Err(io::Error::other("cached file shorter than expected")),
                        s,
                    ))
                }
                Ok(Err(e)) => {
                    s.pos = u64::MAX;
                    Some((Err(e), s))
                }
                Err(e) => {
                    s.pos = u64::MAX;
                    Some((Err(io::Error::other(e)), s))
                }
            }
        },
    )
}
