//! `registry-proxy warm`: pre-pulls images through a proxy so that a rollout finds them cached.
//! It asks the proxy's plain-HTTP mirror port for each image the way a client would (path-prefix
//! mode, `/v2/<registry>/<repo>/…`): the manifest, every platform's manifest of an index (or only
//! the `--platform` asked for), then each config and layer. A blob the proxy already holds is only
//! asked with `HEAD`; the others are downloaded (and discarded here, after checking their digest).
//! The proxy's `X-Registry-Proxy-Cache` header says what was already there.
//!
//! With `--cache-dir` instead of `--proxy`, an in-process proxy is started on `127.0.0.1:0` over
//! that directory with the same configuration `serve` would use ([`warm_cache_dir`]).
//!
//! Progress goes to a [`Progress`] sink: bars on a terminal, plain lines otherwise
//! (`progress.rs`), or the admin API's job table (`jobs.rs`).

mod client;
pub mod jobs;
pub mod progress;

pub use client::Credentials;
pub use jobs::Jobs;

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use http::header::{CONTENT_TYPE, HeaderName};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;

use crate::cache::catalog::human_bytes;
use crate::registry::digest::Digest;
use crate::registry::image::ImageRef;
use crate::registry::manifest::{self, Descriptor, Manifest, Platform};
use crate::registry::media;
use crate::registry::reference::Reference;
use client::MirrorClient;

/// The response header in which the proxy says whether it served from its cache.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-registry-proxy-cache");

/// What `warm` asks for manifests: what Docker and containerd accept (so the tag record the proxy
/// keeps for this Accept set is the one their pulls use).
pub const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

/// Largest manifest read (the proxy's own limit).
const MAX_MANIFEST: usize = 16 << 20;

/// Blobs of one image downloaded at once.
const PARALLEL_BLOBS: usize = 3;

/// Why warming an image failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("{0}")]
    Request(String),
    #[error("login: {0}")]
    Auth(String),
    #[error("{what}: the proxy answered {status}: {message}")]
    Status {
        what: String,
        status: StatusCode,
        message: String,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{0}")]
    Options(String),
}

/// How to warm.
#[derive(Clone, Debug)]
pub struct Options {
    /// `host:port` of the proxy's plain-HTTP listener.
    pub proxy: String,
    /// Only this platform of an index (default: every platform; attestations are skipped).
    pub platform: Option<Platform>,
    pub credentials: Option<Credentials>,
    /// Longest wait for a response head or a manifest body.
    pub timeout: Duration,
}

/// What happened to one image.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageSummary {
    pub image: String,
    /// The digest the reference resolved to.
    pub digest: Option<String>,
    /// Platforms warmed (empty for a single-platform image).
    pub platforms: Vec<String>,
    /// Manifests the proxy fetched upstream / already had.
    pub manifests_fetched: u64,
    pub manifests_cached: u64,
    /// Blobs the proxy fetched upstream (and their bytes) / already had.
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub blobs_cached: u64,
    pub bytes_cached: u64,
    pub error: Option<String>,
}

/// What a whole run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub images: Vec<ImageSummary>,
}

impl Summary {
    /// Images that failed.
    pub fn failed(&self) -> usize {
        self.images.iter().filter(|i| i.error.is_some()).count()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mut fetched, mut fetched_bytes, mut cached, mut cached_bytes) = (0, 0, 0, 0);
        for image in &self.images {
            match &image.error {
                Some(e) => writeln!(f, "FAILED  {}: {e}", image.image)?,
                None => {
                    let platforms = if image.platforms.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", image.platforms.join(", "))
                    };
                    writeln!(
                        f,
                        "ok      {}{platforms}: fetched {} blobs ({}), already cached {} blobs ({})",
                        image.image,
                        image.blobs_fetched,
                        human_bytes(image.bytes_fetched),
                        image.blobs_cached,
                        human_bytes(image.bytes_cached)
                    )?;
                }
            }
            fetched += image.blobs_fetched;
            fetched_bytes += image.bytes_fetched;
            cached += image.blobs_cached;
            cached_bytes += image.bytes_cached;
        }
        write!(
            f,
            "{} images, {} failed; fetched {fetched} blobs ({}), already cached {cached} blobs ({})",
            self.images.len(),
            self.failed(),
            human_bytes(fetched_bytes),
            human_bytes(cached_bytes)
        )
    }
}

/// What a [`Progress`] sink is told.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// Work on an image starts.
    ImageStarted { image: &'a str },
    /// Its blobs are known: how many and how many bytes (declared).
    Planned {
        image: &'a str,
        blobs: u64,
        bytes: u64,
    },
    /// A manifest was read; `cached`: the proxy already had it.
    Manifest {
        image: &'a str,
        digest: &'a str,
        cached: bool,
    },
    /// Bytes of a blob arrived (only for blobs being downloaded).
    BlobBytes { image: &'a str, bytes: u64 },
    /// A blob is done; `cached`: the proxy already had it (nothing downloaded).
    BlobDone {
        image: &'a str,
        digest: &'a str,
        size: u64,
        cached: bool,
    },
    /// The image is done (see `summary.error`).
    ImageDone { summary: &'a ImageSummary },
}

/// Where progress goes.
pub trait Progress: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// Reads a file of image references: one per line, `#` starts a comment, blank lines skipped.
pub fn parse_image_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Warms `images` (already parsed) through the proxy in `options`, one image after the other.
pub async fn warm(options: &Options, images: &[ImageRef], progress: &dyn Progress) -> Summary {
    let client = MirrorClient::new(
        options.proxy.clone(),
        options.credentials.clone(),
        options.timeout,
    );
    let mut done: HashSet<(String, String)> = HashSet::new();
    let mut summary = Summary::default();
    for image in images {
        let name = image.to_string();
        progress.event(Event::ImageStarted { image: &name });
        let mut result = ImageSummary {
            image: name.clone(),
            ..ImageSummary::default()
        };
        if let Err(e) = warm_image(&client, options, image, &mut result, &mut done, progress).await
        {
            result.error = Some(e.to_string());
        }
        progress.event(Event::ImageDone { summary: &result });
        summary.images.push(result);
    }
    summary
}

/// The path-prefix path of a repository on the proxy.
fn repo_path(image: &ImageRef) -> String {
    format!("/v2/{}/{}", image.registry, image.repo)
}

fn is_hit(response: &http::Response<hyper::body::Incoming>) -> bool {
    matches!(
        response
            .headers()
            .get(CACHE_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("HIT" | "REVALIDATED" | "STALE")
    )
}

async fn error_status(
    what: String,
    response: http::Response<hyper::body::Incoming>,
    timeout: Duration,
) -> WarmError {
    let status = response.status();
    let body = client::read_limited(response, 64 * 1024, timeout)
        .await
        .unwrap_or_default();
    // The registry JSON error's message, else the start of the body.
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    WarmError::Status {
        what,
        status,
        message: message.trim().to_owned(),
    }
}

/// GETs a manifest, checks its digest; the parsed manifest and its digest.
async fn fetch_manifest(
    client: &MirrorClient,
    options: &Options,
    image: &ImageRef,
    reference: &Reference,
    result: &mut ImageSummary,
    progress: &dyn Progress,
) -> Result<(Manifest, Digest), WarmError> {
    let what = format!("{}/{}:{reference}", image.registry, image.repo);
    let path = format!("{}/manifests/{reference}", repo_path(image));
    let response = client.send(Method::GET, &path, Some(ACCEPT)).await?;
    if response.status() != StatusCode::OK {
        return Err(error_status(what, response, options.timeout).await);
    }
    let cached = is_hit(&response);
    let media_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = client::read_limited(response, MAX_MANIFEST, options.timeout).await?;
    let digest = Digest::sha256_of(&bytes);
    if let Reference::Digest(wanted) = reference
        && wanted.is_sha256()
        && *wanted != digest
    {
        return Err(WarmError::Invalid {
            what,
            reason: format!("the manifest's digest is {digest}, not {wanted}"),
        });
    }
    let parsed = manifest::parse(&bytes, &media_type).map_err(|e| WarmError::Invalid {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    if cached {
        result.manifests_cached += 1;
    } else {
        result.manifests_fetched += 1;
    }
    progress.event(Event::Manifest {
        image: &result.image,
        digest: digest.as_str(),
        cached,
    });
    Ok((parsed, digest))
}

async fn warm_image(
    client: &MirrorClient,
    options: &Options,
    image: &ImageRef,
    result: &mut ImageSummary,
    done: &mut HashSet<(String, String)>,
    progress: &dyn Progress,
) -> Result<(), WarmError> {
    let (top, digest) =
        fetch_manifest(client, options, image, &image.reference, result, progress).await?;
    result.digest = Some(digest.to_string());
    let mut images: Vec<Manifest> = Vec::new();
    match top {
        Manifest::Index { manifests } => {
            let chosen: Vec<&Descriptor> = manifests
                .iter()
                .filter(|d| match (&options.platform, &d.platform) {
                    (Some(wanted), Some(p)) => p.satisfies(wanted),
                    (Some(_), None) => false,
                    (None, Some(p)) => !p.is_unknown(),
                    (None, None) => media::is_manifest_media_type(&d.media_type),
                })
                .collect();
            if chosen.is_empty() {
                let offered: Vec<String> = manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .filter(|p| !p.is_unknown())
                    .map(ToString::to_string)
                    .collect();
                return Err(WarmError::Invalid {
                    what: result.image.clone(),
                    reason: match &options.platform {
                        Some(p) => format!(
                            "no {p} in the index (it has: {})",
                            if offered.is_empty() {
                                "no platforms".to_owned()
                            } else {
                                offered.join(", ")
                            }
                        ),
                        None => "the index lists no platform".to_owned(),
                    },
                });
            }
            for child in chosen {
                if let Some(p) = &child.platform {
                    result.platforms.push(p.to_string());
                }
                let (m, _) = fetch_manifest(
                    client,
                    options,
                    image,
                    &Reference::Digest(child.digest.clone()),
                    result,
                    progress,
                )
                .await?;
                if m.is_index() {
                    return Err(WarmError::Invalid {
                        what: format!("{}@{}", result.image, child.digest),
                        reason: "an index inside an index is not supported".into(),
                    });
                }
                images.push(m);
            }
        }
        single => images.push(single),
    }
    // Every config and layer once, in order.
    let mut blobs: Vec<Descriptor> = Vec::new();
    for m in &images {
        for d in m.references() {
            if d.digest.is_sha256() && blobs.iter().all(|b| b.digest != d.digest) {
                blobs.push(d.clone());
            }
        }
    }
    progress.event(Event::Planned {
        image: &result.image,
        blobs: blobs.len() as u64,
        bytes: blobs.iter().map(|b| b.size).sum(),
    });
    let repo_key = format!("{}/{}", image.registry, image.repo);
    let outcomes = futures_util::stream::iter(blobs.into_iter().map(|blob| {
        let seen = done.contains(&(repo_key.clone(), blob.digest.to_string()));
        let name = result.image.clone();
        async move {
            let outcome = if seen {
                // Warmed for this repository earlier in this run.
                progress.event(Event::BlobDone {
                    image: &name,
                    digest: blob.digest.as_str(),
                    size: blob.size,
                    cached: true,
                });
                Ok((blob.size, true))
            } else {
                warm_blob(client, options, image, &blob, &name, progress).await
            };
            (blob, outcome)
        }
    }))
    .buffer_unordered(PARALLEL_BLOBS)
    .collect::<Vec<_>>()
    .await;
    let mut first_error = None;
    for (blob, outcome) in outcomes {
        match outcome {
            Ok((size, cached)) => {
                done.insert((repo_key.clone(), blob.digest.to_string()));
                if cached {
                    result.blobs_cached += 1;
                    result.bytes_cached += size;
                } else {
                    result.blobs_fetched += 1;
                    result.bytes_fetched += size;
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One blob: `HEAD` first (a hit needs no transfer), else a `GET` whose bytes are counted and
/// hashed. `(size, cached)`.
async fn warm_blob(
    client: &MirrorClient,
    options: &Options,
    image: &ImageRef,
    blob: &Descriptor,
    name: &str,
    progress: &dyn Progress,
) -> Result<(u64, bool), WarmError> {
    let what = format!("{}/{}@{}", image.registry, image.repo, blob.digest);
    let path = format!("{}/blobs/{}", repo_path(image), blob.digest);
    let head = client.send(Method::HEAD, &path, None).await?;
    if head.status() == StatusCode::OK && is_hit(&head) {
        let size = content_length(&head).unwrap_or(blob.size);
        progress.event(Event::BlobDone {
            image: name,
            digest: blob.digest.as_str(),
            size,
            cached: true,
        });
        return Ok((size, true));
    }
    let response = client.send(Method::GET, &path, None).await?;
    if response.status() != StatusCode::OK {
        return Err(error_status(what, response, options.timeout).await);
    }
    let cached = is_hit(&response);
    let mut body = response.into_body();
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    loop {
        // A stalled transfer fails after the timeout; a slow one goes on as long as bytes come.
        let frame = match tokio::time::timeout(options.timeout, body.frame()).await {
            Err(_) => {
                return Err(WarmError::Request(format!(
                    "{what}: no data for {:?}",
                    options.timeout
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(WarmError::Request(format!("{what}: transfer failed: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            hash.update(&data);
            size += data.len() as u64;
            progress.event(Event::BlobBytes {
                image: name,
                bytes: data.len() as u64,
            });
        }
    }
    let mut arr = [0u8; 32];
    arr.copy_from_slice(hash.finish().as_ref());
    let got = Digest::from_sha256(&arr);
    if got != blob.digest {
        return Err(WarmError::Invalid {
            what,
            reason: format!("received bytes hash to {got}"),
        });
    }
    progress.event(Event::BlobDone {
        image: name,
        digest: blob.digest.as_str(),
        size,
        cached,
    });
    Ok((size, cached))
}

fn content_length(response: &http::Response<hyper::body::Incoming>) -> Option<u64> {
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Warms directly into the cache of `config` (`warm --cache-dir`): an in-process proxy on
/// `127.0.0.1:0` over that cache, with the upstream settings of `config`, reachable only from
/// this machine and only for as long as the warm runs. Client authentication and the TLS listener
/// are off for it (the operator running this is the only client).
pub async fn warm_cache_dir(
    mut config: crate::Config,
    platform: Option<Platform>,
    images: &[ImageRef],
    progress: &dyn Progress,
) -> Result<Summary, crate::StartError> {
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.tls_listen = None;
    config.proxy_htpasswd = None;
    config.tls_client_ca_file = None;
    config.access = crate::access::rules::Rules::default();
    let timeout = config.timeouts.proxy_read.max(Duration::from_secs(30));
    let proxy = crate::Proxy::bind(config).await?;
    let addr = proxy
        .local_addr()
        .ok_or_else(|| crate::StartError::Listen {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            source: std::io::Error::other("no local address"),
        })?;
    let server = tokio::spawn(proxy.run());
    let options = Options {
        proxy: addr.to_string(),
        platform,
        credentials: None,
        timeout,
    };
    let summary = warm(&options, images, progress).await;
    server.abort();
    let _ = server.await;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_lists() {
        let text = "# rollout 42\nalpine:3\n\n  quay.io/org/app:1.2   # the app\n#skip\n\t\nregistry.local:5000/x@sha256:abc\n";
        assert_eq!(
            parse_image_list(text),
            [
                "alpine:3",
                "quay.io/org/app:1.2",
                "registry.local:5000/x@sha256:abc"
            ]
        );
        assert!(parse_image_list("# only comments\n\n").is_empty());
    }

    #[test]
    fn summary_counts_failures() {
        let summary = Summary {
            images: vec![
                ImageSummary {
                    image: "a".into(),
                    blobs_fetched: 2,
                    bytes_fetched: 2048,
                    blobs_cached: 1,
                    bytes_cached: 10,
                    ..ImageSummary::default()
                },
                ImageSummary {
                    image: "b".into(),
                    error: Some("boom".into()),
                    ..ImageSummary::default()
                },
            ],
        };
        assert_eq!(summary.failed(), 1);
        let text = summary.to_string();
        assert!(text.contains("FAILED  b: boom"), "{text}");
        assert!(
            text.contains("fetched 2 blobs (2.0 KiB), already cached 1 blobs (10 B)"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "2 images, 1 failed; fetched 2 blobs (2.0 KiB), already cached 1 blobs (10 B)"
            ),
            "{text}"
        );
    }
}
