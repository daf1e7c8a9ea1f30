//! Image references as people type them — `alpine`, `quay.io/org/app:1.2`,
//! `registry.local:5000/team/x@sha256:…` — normalised as `docker pull` does: a first component
//! with a `.` or `:` (or `localhost`) is the registry, otherwise Docker Hub; Docker Hub names of one
//! component live under `library/`; no tag and no digest means `:latest`.

use std::fmt;

use super::host::RegistryHost;
use super::name::RepoName;
use super::reference::Reference;

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: RegistryHost,
    pub repo: RepoName,
    /// The digest when one was given (a tag given with it is dropped, as `docker pull` ignores
    /// it), else the tag (`latest` when none was given).
    pub reference: Reference,
}

/// Why an image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid registry in {image:?}: {reason}")]
    Registry { image: String, reason: String },
    #[error("invalid repository in {image:?}: {reason}")]
    Repository { image: String, reason: String },
    #[error("invalid tag or digest in {image:?}: {reason}")]
    Reference { image: String, reason: String },
}

impl ImageRef {
    /// Parses and normalises an image reference.
    pub fn parse(input: &str) -> Result<ImageRef, ImageRefError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let shown = || s.chars().take(300).collect::<String>();
        let (rest, digest) = match s.rsplit_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (s, None),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        let (registry, repo) = match name.split_once('/') {
            Some((first, repo)) if RegistryHost::looks_like_host(first) => {
                let registry = RegistryHost::parse(first).map_err(|e| ImageRefError::Registry {
                    image: shown(),
                    reason: e.to_string(),
                })?;
                (registry, repo)
            }
            _ => (RegistryHost::docker_hub(), name),
        };
        let mut repo = RepoName::parse(repo).map_err(|e| ImageRefError::Repository {
            image: shown(),
            reason: e.to_string(),
        })?;
        if registry.is_docker_hub() {
            repo = repo.for_docker_hub();
        }
        let reference_error = |reason: String| ImageRefError::Reference {
            image: shown(),
            reason,
        };
        let reference = match (digest, tag) {
            (Some(d), _) => {
                let r = Reference::parse(d).map_err(|e| reference_error(e.to_string()))?;
                if !r.is_digest() {
                    return Err(reference_error("expected a digest after @".into()));
                }
                // A tag given with a digest must still be a valid tag.
                if let Some(t) = tag
                    && !super::reference::valid_tag(t)
                {
                    return Err(reference_error(format!("invalid tag {t:?}")));
                }
                r
            }
            (None, Some(t)) => {
                if !super::reference::valid_tag(t) {
                    return Err(reference_error(format!("invalid tag {t:?}")));
                }
                Reference::Tag(t.to_owned())
            }
            (None, None) => Reference::Tag("latest".into()),
        };
        Ok(ImageRef {
            registry,
            repo,
            reference,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}/{}:{t}", self.registry, self.repo),
            Reference::Digest(d) => write!(f, "{}/{}@{d}", self.registry, self.repo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_like_docker() {
        let cases: &[(&str, &str)] = &[
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3", "docker.io/library/alpine:3"),
            ("library/alpine:3", "docker.io/library/alpine:3"),
            ("docker.io/alpine", "docker.io/library/alpine:latest"),
            (
                "index.docker.io/library/alpine",
                "docker.io/library/alpine:latest",
            ),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("quay.io/org/app:1.2", "quay.io/org/app:1.2"),
            ("quay.io/org/team/app", "quay.io/org/team/app:latest"),
            ("registry.local:5000/x", "registry.local:5000/x:latest"),
            ("registry.local:5000/x:v1", "registry.local:5000/x:v1"),
            ("localhost/x:v1", "localhost/x:v1"),
            ("[::1]:5000/x:v1", "[::1]:5000/x:v1"),
            ("Quay.IO/org/app", "quay.io/org/app:latest"),
        ];
        for (input, want) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *want, "{input}");
        }
        let by_digest = ImageRef::parse(&format!("quay.io/org/app:1.2@{D}")).unwrap();
        assert_eq!(by_digest.to_string(), format!("quay.io/org/app@{D}"));
        let by_digest = ImageRef::parse(&format!("alpine@{D}")).unwrap();
        assert_eq!(
            by_digest.to_string(),
            format!("docker.io/library/alpine@{D}")
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "  ",
            "Alpine",
            "quay.io/Org/app",
            "quay.io/org/app:",
            "quay.io/org/app:-x",
            "quay.io/org/app@latest",
            "quay.io/org/app@sha256:zz",
            "quay.io:0/x",
            "quay.io/",
            "a b",
            "quay.io/org/app:1.2:3",
            "../x",
            "x/../../y",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn never_panics() {
        let seeds = ["alpine", "quay.io/org/app:1.2", &format!("x@{D}")];
        for input in crate::registry::fuzz::inputs(71, &seeds, "a.:/@_-9", 4000) {
            if let Ok(r) = ImageRef::parse(&input) {
                // What it prints parses back to itself.
                assert_eq!(
                    ImageRef::parse(&r.to_string()).as_ref(),
                    Ok(&r),
                    "{input:?}"
                );
            }
        }
    }
}
