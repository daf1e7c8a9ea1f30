//! `registry-proxy cache verify` for a store other than the local disk (the object store): rehashes
//! every blob and manifest it lists and deletes those whose content does not match their digest.
//! Safe while proxies use the store: only whole objects are listed (an upload in progress is not
//! visible), and an object deleted meanwhile is skipped.

use futures_util::StreamExt;

use super::{Store, StoreError};
use crate::cache::VerifyReport;
use crate::cache::key::ContentKind;
use crate::registry::digest::Digest;

/// Verifies every content object of `store`.
pub async fn verify_store(store: &dyn Store) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    for kind in [ContentKind::Blob, ContentKind::Manifest] {
        for listed in store.list(kind).await? {
            let Some((_, digest)) = listed.key.content() else {
                continue;
            };
            let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
            let mut len = 0u64;
            let mut stream = if listed.meta.len == 0 {
                Box::pin(futures_util::stream::empty())
            } else {
                store.read(&listed.key, 0, listed.meta.len - 1)
            };
            let mut readable = true;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => {
                        hasher.update(&chunk);
                        len += chunk.len() as u64;
                    }
                    Err(e) => {
                        // Deleted or replaced meanwhile, or unreadable now: not judged.
                        tracing::warn!(key = %listed.key, error = %e, "cannot read an object to verify it");
                        readable = false;
                        break;
                    }
                }
            }
            if !readable {
                continue;
            }
            report.checked += 1;
            report.bytes += len;
            let matches = Digest::from_ring(&hasher.finish()).as_ref() == Some(digest);
            if !matches {
                tracing::warn!(store = store.name(), key = %listed.key, "corrupt object removed");
                store.delete(&listed.key).await?;
                report.corrupt += 1;
            }
        }
    }
    Ok(report)
}
