//! The one name of everything the cache holds. Every store lays its objects out by the same
//! relative path ([`ObjectKey::path`]): a file under the cache root on disk, an object under the
//! bucket's prefix in an object store.
//!
//! - `blobs/sha256/ab/<hex>`: blob bytes, present only once their sha256 matched;
//! - `manifests/sha256/ab/<hex>`: manifest bytes exactly as upstream sent them (their media type
//!   alongside, see the store);
//! - `repos/<registry>/<repository>/_blobs/<hex>`, `_manifests/<hex>`: a repository is known to hold
//!   a digest (empty objects);
//! - `repos/<registry>/<repository>/_tags/<tag>/<accept-hash>.json`: a tag's digest per Accept set;
//! - `repos/<registry>/<repository>/_public`: upstream last served the repository anonymously.
//!
//! Every part is validated before it gets here (digest hex, the host grammar, the repository name
//! grammar, the tag grammar), so no key can name anything outside its store; no repository path
//! component can start with `_`, so the `_…` names never collide with a repository's.

use std::fmt;

use crate::registry::digest::Digest;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;

/// Which kind of object a repository link records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    Blob,
    Manifest,
}

impl LinkKind {
    fn dir(self) -> &'static str {
        match self {
            LinkKind::Blob => "_blobs",
            LinkKind::Manifest => "_manifests",
        }
    }
}

/// Content-addressed objects, the ones that take space and are listed, evicted and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKind {
    Blob,
    Manifest,
}

impl ContentKind {
    /// The directory (prefix) the kind lives under.
    pub fn dir(self) -> &'static str {
        match self {
            ContentKind::Blob => "blobs/sha256",
            ContentKind::Manifest => "manifests/sha256",
        }
    }
}

/// A repository of a registry: the scope of links, tags and the public mark.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    pub registry: RegistryHost,
    pub name: RepoName,
}

/// The name of one stored object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// Blob or manifest bytes by digest.
    Content(ContentKind, Digest),
    /// `repo` is known to hold `digest`.
    Link(Repo, LinkKind, Digest),
    /// A tag's resolution for one Accept set, named by a hash of the set.
    Tag {
        repo: Repo,
        tag: String,
        accept_hash: String,
    },
    /// Upstream last served the repository anonymously.
    Public(Repo),
}

impl ObjectKey {
    pub fn blob(digest: &Digest) -> ObjectKey {
        ObjectKey::Content(ContentKind::Blob, digest.clone())
    }

    pub fn manifest(digest: &Digest) -> ObjectKey {
        ObjectKey::Content(ContentKind::Manifest, digest.clone())
    }

    pub fn link(registry: &RegistryHost, name: &RepoName, kind: LinkKind, digest: &Digest) -> Self {
        ObjectKey::Link(Repo::new(registry, name), kind, digest.clone())
    }

    /// A tag record; `accept` is the Accept set's canonical key (hashed into the name).
    pub fn tag(registry: &RegistryHost, name: &RepoName, tag: &str, accept: &str) -> ObjectKey {
        let hash = ring::digest::digest(&ring::digest::SHA256, accept.as_bytes());
        ObjectKey::Tag {
            repo: Repo::new(registry, name),
            tag: tag.to_owned(),
            accept_hash: hex(&hash.as_ref()[..8]),
        }
    }

    pub fn public(registry: &RegistryHost, name: &RepoName) -> ObjectKey {
        ObjectKey::Public(Repo::new(registry, name))
    }

    /// The object's path relative to its store's root, `/`-separated.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// The content kind and digest, for blobs and manifests.
    pub fn content(&self) -> Option<(ContentKind, &Digest)> {
        match self {
            ObjectKey::Content(kind, digest) => Some((*kind, digest)),
            _ => None,
        }
    }

    /// The key of a content object from its path (`blobs/sha256/ab/<hex>`), as a store lists it.
    /// `None` for anything else (side files, stray names, a hex in the wrong shard).
    pub fn parse_content(path: &str) -> Option<ObjectKey> {
        let (kind, rest) = [ContentKind::Blob, ContentKind::Manifest]
            .into_iter()
            .find_map(|kind| Some((kind, path.strip_prefix(kind.dir())?.strip_prefix('/')?)))?;
        let (shard, hex) = rest.split_once('/')?;
        let digest = Digest::parse(&format!("sha256:{hex}")).ok()?;
        (shard == shard_of(hex)).then_some(ObjectKey::Content(kind, digest))
    }
}

impl Repo {
    pub fn new(registry: &RegistryHost, name: &RepoName) -> Repo {
        Repo {
            registry: registry.clone(),
            name: name.clone(),
        }
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repos/{}/{}", self.registry, self.name.as_str())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Content(kind, digest) => {
                let hex = digest.encoded();
                write!(f, "{}/{}/{hex}", kind.dir(), shard_of(hex))
            }
            ObjectKey::Link(repo, kind, digest) => {
                write!(f, "{repo}/{}/{}", kind.dir(), digest.encoded())
            }
            ObjectKey::Tag {
                repo,
                tag,
                accept_hash,
            } => write!(f, "{repo}/_tags/{tag}/{accept_hash}.json"),
            ObjectKey::Public(repo) => write!(f, "{repo}/_public"),
        }
    }
}

/// The shard directory of a hex digest: its first two characters.
fn shard_of(hex: &str) -> &str {
    &hex[..2.min(hex.len())]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is a failed test
    use super::*;

    #[test]
    fn paths_are_the_store_layout() {
        let digest = Digest::sha256_of(b"x");
        let hex = digest.encoded();
        let registry = RegistryHost::parse("registry.test:5000").unwrap();
        let name = RepoName::parse("team/app").unwrap();
        assert_eq!(
            ObjectKey::blob(&digest).path(),
            format!("blobs/sha256/{}/{hex}", &hex[..2])
        );
        assert_eq!(
            ObjectKey::manifest(&digest).path(),
            format!("manifests/sha256/{}/{hex}", &hex[..2])
        );
        assert_eq!(
            ObjectKey::link(&registry, &name, LinkKind::Blob, &digest).path(),
            format!("repos/registry.test:5000/team/app/_blobs/{hex}")
        );
        assert_eq!(
            ObjectKey::link(&registry, &name, LinkKind::Manifest, &digest).path(),
            format!("repos/registry.test:5000/team/app/_manifests/{hex}")
        );
        // The tag record's name: the first 8 bytes of the Accept key's sha256, in hex.
        let accept = ring::digest::digest(&ring::digest::SHA256, b"accept");
        assert_eq!(
            ObjectKey::tag(&registry, &name, "v1", "accept").path(),
            format!(
                "repos/registry.test:5000/team/app/_tags/v1/{}.json",
                super::hex(&accept.as_ref()[..8])
            )
        );
        assert_eq!(
            ObjectKey::public(&registry, &name).path(),
            "repos/registry.test:5000/team/app/_public"
        );
    }

    #[test]
    fn content_paths_parse_back() {
        let digest = Digest::sha256_of(b"y");
        for key in [ObjectKey::blob(&digest), ObjectKey::manifest(&digest)] {
            assert_eq!(ObjectKey::parse_content(&key.path()), Some(key));
        }
        let hex = digest.encoded();
        for stray in [
            format!("blobs/sha256/{}/{hex}.type", &hex[..2]),
            format!("blobs/sha256/zz/{hex}"),
            format!("blobs/sha256/{hex}"),
            format!("tmp/{hex}"),
            "blobs/sha256/ab/ab".to_owned(),
        ] {
            assert_eq!(ObjectKey::parse_content(&stray), None, "{stray}");
        }
    }
}
