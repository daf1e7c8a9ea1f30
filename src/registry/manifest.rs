//! Manifests as data: what an OCI image manifest or index, a Docker schema 2 manifest or manifest
//! list (or a schema 1 manifest) refers to — child manifests with their platforms, the config and
//! the layers — parsed with serde from the bytes the cache stores. Used by `cache ls`, `cache purge`
//! and `warm` to walk an image; never by the request path, which stores manifests byte-exact.

use std::fmt;

use serde::Deserialize;

use super::digest::Digest;
use super::media;

/// One reference from a manifest to another object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    /// Size in bytes as the manifest declares it (0 when a schema 1 manifest does not say).
    pub size: u64,
    /// For an index entry: the platform it is for, if given.
    pub platform: Option<Platform>,
}

/// `os/architecture[/variant]` of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// What a manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// A multi-platform index (OCI image index, Docker manifest list).
    Index { manifests: Vec<Descriptor> },
    /// A single image (or artifact): its config, if any, and its layers (or artifact blobs).
    Image {
        config: Option<Descriptor>,
        layers: Vec<Descriptor>,
    },
}

/// Why manifest bytes could not be read as a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("manifest descriptor has an invalid digest: {0}")]
    Digest(#[from] super::digest::DigestError),
    #[error("manifest has neither manifests, layers nor fsLayers")]
    Shape,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    manifests: Option<Vec<RawDescriptor>>,
    layers: Option<Vec<RawDescriptor>>,
    /// OCI artifact manifest (withdrawn from the spec, still found in registries).
    blobs: Option<Vec<RawDescriptor>>,
    /// Docker schema 1.
    fs_layers: Option<Vec<RawFsLayer>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFsLayer {
    blob_sum: String,
}

impl RawDescriptor {
    fn into_descriptor(self) -> Result<Descriptor, ManifestError> {
        Ok(Descriptor {
            media_type: self.media_type,
            digest: Digest::parse(&self.digest)?,
            size: self.size,
            platform: self.platform.map(|p| Platform {
                os: p.os,
                architecture: p.architecture,
                variant: p.variant.filter(|v| !v.is_empty()),
            }),
        })
    }
}

fn descriptors(raw: Option<Vec<RawDescriptor>>) -> Result<Vec<Descriptor>, ManifestError> {
    raw.unwrap_or_default()
        .into_iter()
        .map(RawDescriptor::into_descriptor)
        .collect()
}

/// Reads manifest bytes. `media_type` is the one stored with them (the body's own `mediaType`
/// decides when present); the shape decides when neither says.
pub fn parse(bytes: &[u8], media_type: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = serde_json::from_slice(bytes)?;
    let declared = raw.media_type.as_deref().unwrap_or(media_type);
    let essence = declared.split(';').next().unwrap_or_default().trim();
    let is_index = essence.eq_ignore_ascii_case(media::OCI_INDEX)
        || essence.eq_ignore_ascii_case(media::DOCKER_MANIFEST_LIST)
        || (raw.manifests.is_some() && raw.layers.is_none() && raw.fs_layers.is_none());
    if is_index {
        return Ok(Manifest::Index {
            manifests: descriptors(raw.manifests)?,
        });
    }
    if let Some(fs_layers) = raw.fs_layers {
        // Schema 1 lists layers top first, repeated for empty layers; no sizes, no config.
        let mut layers: Vec<Descriptor> = Vec::new();
        for layer in fs_layers.into_iter().rev() {
            let digest = Digest::parse(&layer.blob_sum)?;
            if layers.iter().all(|l| l.digest != digest) {
                layers.push(Descriptor {
                    media_type: "application/vnd.docker.container.image.rootfs.diff+x-gtar".into(),
                    digest,
                    size: 0,
                    platform: None,
                });
            }
        }
        return Ok(Manifest::Image {
            config: None,
            layers,
        });
    }
    if raw.layers.is_none() && raw.blobs.is_none() && raw.config.is_none() {
        return Err(ManifestError::Shape);
    }
    let mut layers = descriptors(raw.layers)?;
    layers.extend(descriptors(raw.blobs)?);
    Ok(Manifest::Image {
        config: raw.config.map(RawDescriptor::into_descriptor).transpose()?,
        layers,
    })
}

impl Manifest {
    /// True for an index.
    pub fn is_index(&self) -> bool {
        matches!(self, Manifest::Index { .. })
    }

    /// Every descriptor: child manifests of an index; config then layers of an image.
    pub fn references(&self) -> Vec<&Descriptor> {
        match self {
            Manifest::Index { manifests } => manifests.iter().collect(),
            Manifest::Image { config, layers } => config.iter().chain(layers.iter()).collect(),
        }
    }
}

/// Why a `--platform` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform must be os/architecture[/variant], e.g. linux/arm64 (got {0:?})")]
pub struct PlatformError(String);

impl Platform {
    /// Parses `os/architecture[/variant]` (as `docker pull --platform` takes it).
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let err = || PlatformError(s.chars().take(64).collect());
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: Some(variant.to_ascii_lowercase()),
            }),
            _ => Err(err()),
        }
    }

    /// True if an index entry for `self` satisfies a request for `wanted`: same OS and
    /// architecture, and the same variant when `wanted` names one (`arm64` is `arm64/v8`).
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        if !self.os.eq_ignore_ascii_case(&wanted.os)
            || !self.architecture.eq_ignore_ascii_case(&wanted.architecture)
        {
            return false;
        }
        match (&wanted.variant, &self.variant) {
            (None, _) => true,
            (Some(w), Some(v)) => w.eq_ignore_ascii_case(v),
            (Some(w), None) => self.architecture == "arm64" && w == "v8",
        }
    }

    /// True for the `unknown/unknown` entries of attestations and signatures (not a platform).
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn oci_and_docker_images() {
        for media_type in [media::OCI_MANIFEST, media::DOCKER_MANIFEST] {
            let json = format!(
                r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"c","digest":"{A}","size":10}},"layers":[{{"mediaType":"l","digest":"{B}","size":20}},{{"mediaType":"l","digest":"{C}","size":30}}]}}"#
            );
            let m = parse(json.as_bytes(), "application/octet-stream").unwrap();
            let Manifest::Image { config, layers } = &m else {
                panic!("{m:?}")
            };
            assert_eq!(config.as_ref().unwrap().digest.as_str(), A);
            assert_eq!(config.as_ref().unwrap().size, 10);
            assert_eq!(layers.len(), 2);
            assert_eq!(layers[1].size, 30);
            assert_eq!(m.references().len(), 3);
            assert!(!m.is_index());
        }
    }

    #[test]
    fn indexes_with_platforms() {
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"{}","digest":"{A}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}},
                {{"mediaType":"{}","digest":"{B}","size":6,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                {{"mediaType":"{}","digest":"{C}","size":7,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
            media::OCI_MANIFEST,
            media::OCI_MANIFEST,
            media::OCI_MANIFEST
        );
        // No mediaType in the body: the stored one says index.
        let m = parse(json.as_bytes(), media::OCI_INDEX).unwrap();
        let Manifest::Index { manifests } = &m else {
            panic!("{m:?}")
        };
        let platforms: Vec<String> = manifests
            .iter()
            .map(|d| d.platform.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(
            platforms,
            ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]
        );
        assert!(manifests[2].platform.as_ref().unwrap().is_unknown());
        // The shape alone says index too.
        assert!(parse(json.as_bytes(), "").unwrap().is_index());
        let list = json.replace(
            "\"schemaVersion\":2,",
            &format!(
                "\"schemaVersion\":2,\"mediaType\":\"{}\",",
                media::DOCKER_MANIFEST_LIST
            ),
        );
        assert!(
            parse(list.as_bytes(), media::OCI_MANIFEST)
                .unwrap()
                .is_index()
        );
    }

    #[test]
    fn schema1_and_artifacts() {
        let json = format!(
            r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{A}"}},{{"blobSum":"{B}"}},{{"blobSum":"{A}"}}]}}"#
        );
        let m = parse(json.as_bytes(), media::DOCKER_SCHEMA1_SIGNED).unwrap();
        let Manifest::Image { config, layers } = m else {
            panic!()
        };
        assert!(config.is_none());
        let digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(digests, [A, B]);
        let artifact = format!(
            r#"{{"mediaType":"{}","blobs":[{{"mediaType":"x","digest":"{C}","size":3}}]}}"#,
            media::OCI_ARTIFACT_MANIFEST
        );
        let m = parse(artifact.as_bytes(), "").unwrap();
        assert_eq!(m.references().len(), 1);
    }

    #[test]
    fn refuses_what_is_not_a_manifest() {
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            "{\"layers\":[{\"digest\":\"sha256:xyz\"}]}",
            "{\"manifests\":[{\"size\":1}]}",
            "{\"layers\":[{\"digest\":\"sha256:aa\",\"size\":-1}]}",
        ] {
            assert!(parse(bad.as_bytes(), media::OCI_MANIFEST).is_err(), "{bad}");
        }
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        let bare = Platform::parse("linux/arm64").unwrap();
        assert!(v8.satisfies(&p));
        assert!(bare.satisfies(&v8), "arm64 is arm64/v8");
        assert!(
            !Platform::parse("linux/arm/v7")
                .unwrap()
                .satisfies(&Platform::parse("linux/arm/v6").unwrap())
        );
        assert!(!Platform::parse("linux/amd64").unwrap().satisfies(&p));
        assert_eq!(
            Platform::parse("Linux/AMD64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "a/b/c/d",
            "linux/am d64",
            "linux/$(x)",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn never_panics() {
        let seeds = [
            format!(r#"{{"manifests":[{{"digest":"{A}","size":1,"platform":{{"os":"linux"}}}}]}}"#),
            format!(r#"{{"config":{{"digest":"{A}"}},"layers":[{{"digest":"{B}","size":2}}]}}"#),
            format!(r#"{{"fsLayers":[{{"blobSum":"{C}"}}]}}"#),
        ];
        let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
        for input in crate::registry::fuzz::inputs(53, &seeds, "{}[]\":,0a", 3000) {
            let _ = parse(input.as_bytes(), media::OCI_INDEX);
            let _ = Platform::parse(&input);
        }
    }
}
