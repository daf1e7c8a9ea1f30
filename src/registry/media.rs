//! Manifest and config media types, and the normalised `Accept` set that keys cached tags (a tag
//! can resolve to different manifests for clients that accept different types).

use std::collections::BTreeSet;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI artifact manifest (withdrawn from the spec, still seen in referrers).
pub const OCI_ARTIFACT_MANIFEST: &str = "application/vnd.oci.artifact.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI empty descriptor (`{}`), used as config of artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform), schema 2.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 1, signed.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker image manifest, schema 1, unsigned.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Every manifest media type we recognise.
pub const MANIFEST_MEDIA_TYPES: [&str; 7] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
    OCI_ARTIFACT_MANIFEST,
];

/// Normalises one or more `Accept` header values into a stable cache key: split on commas, drop
/// parameters (`;q=0.5`), trim, lower-case, deduplicate, sort, join with `,`; nothing left is
/// `*/*`. Entries with `q=0` ("not acceptable") are dropped rather than keyed, so they cannot make
/// a client share the key of one that accepts that type.
pub fn accept_key<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut types = BTreeSet::new();
    for value in values {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or_default().trim();
            if media.is_empty() || parts.any(is_q_zero) {
                continue;
            }
            types.insert(media.to_ascii_lowercase());
        }
    }
    if types.is_empty() {
        return "*/*".to_owned();
    }
    types.into_iter().collect::<Vec<_>>().join(",")
}

/// True for a `q=0`, `q=0.0`, `q=0.000` parameter.
fn is_q_zero(param: &str) -> bool {
    let Some((name, value)) = param.split_once('=') else {
        return false;
    };
    if !name.trim().eq_ignore_ascii_case("q") {
        return false;
    }
    let value = value.trim();
    let fraction = match value.strip_prefix('0') {
        Some(rest) => rest,
        None => return false,
    };
    fraction.is_empty()
        || fraction
            .strip_prefix('.')
            .is_some_and(|zeros| zeros.bytes().all(|b| b == b'0'))
}

/// True if `media_type` (parameters and case ignored) is a manifest or index type.
pub fn is_manifest_media_type(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    MANIFEST_MEDIA_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(essence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_keys() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "*/*"),
            (&[""], "*/*"),
            (&[" , ,"], "*/*"),
            (&["*/*"], "*/*"),
            (&[OCI_MANIFEST], OCI_MANIFEST),
            (
                &[
                    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json;q=0.5",
                ],
                "application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.index.v1+json",
            ),
            (
                &[
                    "application/vnd.oci.image.index.v1+json",
                    "APPLICATION/VND.DOCKER.DISTRIBUTION.MANIFEST.V2+JSON ; q=0.9",
                    "application/vnd.oci.image.index.v1+json",
                ],
                "application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.index.v1+json",
            ),
            (&["b/b, a/a", "c/c"], "a/a,b/b,c/c"),
            (&["c/c", "a/a, b/b"], "a/a,b/b,c/c"),
            (&["a/a;q=0, b/b"], "b/b"),
            (&["a/a; Q = 0.000"], "*/*"),
            (&["a/a;q=0.01"], "a/a"),
            (&["a/a;q=1, a/a;q=0"], "a/a"),
            (&["a/a;charset=utf-8;q=0.5"], "a/a"),
        ];
        for (values, want) in cases {
            assert_eq!(accept_key(values.iter().copied()), *want, "{values:?}");
        }
    }

    #[test]
    fn manifest_types() {
        for t in MANIFEST_MEDIA_TYPES {
            assert!(is_manifest_media_type(t), "{t}");
        }
        let cases = [
            (
                "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
                true,
            ),
            (" APPLICATION/VND.OCI.IMAGE.INDEX.V1+JSON", true),
            (OCI_CONFIG, false),
            (OCI_EMPTY, false),
            (DOCKER_CONFIG, false),
            ("application/json", false),
            ("application/octet-stream", false),
            ("", false),
        ];
        for (input, want) in cases {
            assert_eq!(is_manifest_media_type(input), want, "{input:?}");
        }
    }

    #[test]
    fn never_panics() {
        let seeds = [
            "application/vnd.oci.image.manifest.v1+json;q=0.5, */*",
            "application/vnd.docker.distribution.manifest.v2+json",
        ];
        let inputs = crate::registry::fuzz::inputs(31, &seeds, "a/;q=0.5,+", 4000);
        for pair in inputs.chunks(2) {
            let key = accept_key(pair.iter().map(String::as_str));
            assert!(!key.is_empty());
            // Stable: the key of the key is the key.
            assert_eq!(accept_key([key.as_str()]), key, "{pair:?}");
            let _ = is_manifest_media_type(&pair[0]);
        }
    }
}
