//! The admin API: the operator commands over HTTP on the proxy's own port.
//! - `GET /admin/cache`: what `cache ls --json` prints ([`crate::cache::Catalog`]);
//! - `POST /admin/cache/purge` with `{"image": "quay.io/org/app:1"}`, `{"glob": "quay.io/org/*"}`
//!   and/or `{"older_than": "30d"}`, optionally `"dry_run": true`: what `cache purge` does, and its
//!   report ([`crate::cache::PurgeReport`]); the proxy also forgets what it held in memory of it;
//! - `POST /admin/warm` with `["alpine:3", …]` or `{"images": […], "platform": "linux/arm64"}`:
//!   starts warming in the background (`202` with the job's id);
//! - `GET /admin/warm`: every recent job with its progress.
//!
//! Who may: with client authentication on, any proxy user (the listener asked for one before
//! routing here); with it off, only clients connecting from a loopback address ([`allowed`]).
//! Errors, refusals included, go through [`Failure`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::body::{self, Body};
use crate::cache::{PurgeRequest, PurgeTarget};
use crate::registry::error::ErrorCode;
use crate::registry::image::ImageRef;
use crate::registry::manifest::Platform;
use crate::serve::State;
use crate::serve::error::Failure;
use crate::warm::Credentials;

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// Whether a client may use the admin API at all: with client authentication on, the user was
/// checked before (any proxy user may); with it off, only a client on this machine.
pub(crate) fn allowed(auth_on: bool, peer: IpAddr) -> bool {
    auth_on || peer.to_canonical().is_loopback()
}

pub(super) async fn handle(
    state: Arc<State>,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    if !allowed(crate::serve::access::auth_on(&state), peer) {
        return Failure::denied(
            "the admin API answers only clients on this machine when client authentication is off",
        )
        .into_response();
    }
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        ("/admin/cache", &Method::GET) => list(&state).await,
        ("/admin/cache/purge", &Method::POST) => purge(&state, req).await,
        ("/admin/warm", &Method::POST) => warm(&state, req).await,
        ("/admin/warm", &Method::GET) => json(StatusCode::OK, &serde_json::json!({
            "jobs": state.warm_jobs.list(),
        })),
        ("/admin/cache" | "/admin/cache/purge" | "/admin/warm", _) => Failure::client(
            ErrorCode::Unsupported,
            format!("{method} is not supported on {path}"),
        )
        .into_response(),
        _ => Failure::client(
            ErrorCode::NameUnknown,
            "no such admin endpoint (GET /admin/cache, POST /admin/cache/purge, GET|POST /admin/warm)",
        )
        .into_response(),
    }
}

async fn list(state: &Arc<State>) -> Response<Body> {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || crate::cache::list(s.cache.root())).await {
        Ok(Ok(catalog)) => json(StatusCode::OK, &catalog),
        Ok(Err(e)) => internal(&e.to_string()),
        Err(e) => internal(&e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    image: Option<String>,
    glob: Option<String>,
    older_than: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

async fn purge(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let body: PurgeBody = match read_json(req).await {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let target = match (&body.image, &body.glob) {
        (Some(_), Some(_)) => return bad_request("give image or glob, not both"),
        (Some(image), None) => match ImageRef::parse(image) {
            Ok(r) => Some(PurgeTarget::Image(r)),
            Err(e) => return bad_request(&e.to_string()),
        },
        (None, Some(glob)) => match PurgeTarget::parse(glob) {
            Ok(t @ PurgeTarget::Glob(_)) => Some(t),
            Ok(PurgeTarget::Image(_)) => {
                return bad_request("a glob needs * or ?; use \"image\" for one image");
            }
            Err(e) => return bad_request(&e.to_string()),
        },
        (None, None) => None,
    };
    let older_than = match body
        .older_than
        .as_deref()
        .map(crate::config::parse_duration)
    {
        None => None,
        Some(Ok(age)) => Some(age),
        Some(Err(e)) => return bad_request(&format!("older_than: {e}")),
    };
    if target.is_none() && older_than.is_none() {
        return bad_request("give image, glob or older_than");
    }
    let request = PurgeRequest {
        target,
        older_than,
        dry_run: body.dry_run,
    };
    let s = state.clone();
    let local = request.clone();
    let done = tokio::task::spawn_blocking(move || {
        let report = crate::cache::purge(s.cache.root(), &local)?;
        if !report.dry_run {
            s.cache.forget_purged(&report);
        }
        Ok::<_, crate::cache::CacheError>(report)
    })
    .await;
    // The shared bucket too (`STORAGE=s3://…`), by the same rule.
    let done = match (done, state.cache.bucket_store()) {
        (Ok(local), Some(store)) => {
            let bucket = crate::cache::bucket_ops::purge_bucket(store.as_ref(), &request).await;
            Ok(crate::cache::bucket_ops::combine(
                local,
                Some(bucket),
                request.dry_run,
            ))
        }
        (done, _) => done,
    };
    match done {
        Ok(Ok(report)) => {
            tracing::info!(
                images = report.images.len(),
                objects = report.removed_objects.len(),
                bytes = report.bytes_freed,
                dry_run = report.dry_run,
                "cache purge through the admin API"
            );
            json(StatusCode::OK, &report)
        }
        Ok(Err(crate::cache::CacheError::Purge(message))) => {
            Failure::client(ErrorCode::NameUnknown, message).into_response()
        }
        Ok(Err(e)) => internal(&e.to_string()),
        Err(e) => internal(&e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WarmBody {
    List(Vec<String>),
    Job {
        images: Vec<String>,
        platform: Option<String>,
    },
}

async fn warm(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    // The job logs in as the requester (the listener checked these credentials already).
    let credentials = crate::registry::basic::basic_credentials(req.headers(), &AUTHORIZATION).map(
        |(user, password)| Credentials {
            user,
            password: crate::secret::Secret::new(password),
        },
    );
    let body: WarmBody = match read_json(req).await {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let (names, platform) = match body {
        WarmBody::List(images) => (images, None),
        WarmBody::Job { images, platform } => (images, platform),
    };
    if names.is_empty() {
        return bad_request("no images to warm");
    }
    let mut images = Vec::new();
    for name in &names {
        match ImageRef::parse(name) {
            Ok(r) => images.push(r),
            Err(e) => return bad_request(&e.to_string()),
        }
    }
    let platform = match platform.as_deref().map(Platform::parse) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return bad_request(&e.to_string()),
    };
    let shown: Vec<String> = images.iter().map(ToString::to_string).collect();
    let timeout = state
        .config
        .timeouts
        .proxy_read
        .max(Duration::from_secs(30));
    let id = state
        .warm_jobs
        .start(images, platform, credentials, timeout);
    tracing::info!(id, images = ?shown, "warm job started through the admin API");
    let mut response = json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "id": id, "images": shown, "status": "/admin/warm" }),
    );
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/admin/warm"));
    response
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Failure> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|_| {
            Failure::client(
                ErrorCode::SizeInvalid,
                format!("request body larger than {MAX_BODY} bytes or broken"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::client(ErrorCode::NameInvalid, format!("request body: {e}")))
}

fn bad_request(message: &str) -> Response<Body> {
    Failure::client(ErrorCode::NameInvalid, message).into_response()
}

fn internal(message: &str) -> Response<Body> {
    Failure::Internal {
        message: message.to_owned(),
    }
    .into_response()
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = match serde_json::to_vec_pretty(value) {
        Ok(mut b) => {
            b.push(b'\n');
            Bytes::from(b)
        }
        Err(e) => return internal(&e.to_string()),
    };
    let len = bytes.len();
    let mut r = Response::new(body::full(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_use_the_admin_api() {
        let loopback: [IpAddr; 4] = [
            "127.0.0.1".parse().unwrap(),
            "127.10.0.3".parse().unwrap(),
            "::1".parse().unwrap(),
            "::ffff:127.0.0.1".parse().unwrap(),
        ];
        let remote: [IpAddr; 5] = [
            "10.0.0.5".parse().unwrap(),
            "192.168.1.1".parse().unwrap(),
            "::ffff:10.0.0.5".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
        ];
        for ip in loopback {
            assert!(allowed(false, ip), "{ip} is this machine");
            assert!(allowed(true, ip), "{ip}");
        }
        for ip in remote {
            assert!(!allowed(false, ip), "{ip} without client authentication");
            assert!(allowed(true, ip), "{ip} with a checked user");
        }
    }
}
