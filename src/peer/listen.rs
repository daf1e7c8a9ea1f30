//! The peer port (`PEER_LISTEN`): what replicas ask each other, every request authenticated with
//! `PEER_SECRET`:
//! - `GET /peer/id`: this replica's instance id (membership probes);
//! - `GET /peer/status`: the healthy replicas as this one sees them (JSON);
//! - `GET /peer/blobs/<registry, percent-encoded>/<repository>/<digest>`: a blob this replica owns,
//!   served from its cache or from its one upstream download, as it grows.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;

use super::Peers;
use crate::body::{self, Body};
use crate::listener::ConnectionLimit;
use crate::listener::limit::{self, Admission, Counted};
use crate::registry::digest::Digest;
use crate::registry::host::RegistryHost;
use crate::registry::name::RepoName;
use crate::serve::State;

/// Serves the peer port until the future is dropped. Open connections are capped by `limit` (a
/// cap of `MAX_CONNECTIONS` of the peer port's own, so that clients cannot starve replicas and the
/// other way round); beyond it a connection gets `503` (the asking replica then fetches itself).
pub async fn accept_loop(
    state: Arc<State>,
    peers: Arc<Peers>,
    listener: TcpListener,
    limit: Arc<ConnectionLimit>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = match limit.admit() {
            Admission::Admitted(slot) => slot,
            Admission::OverCap(place) => {
                tokio::spawn(async move {
                    let _place = place;
                    limit::answer_over_cap(stream).await;
                });
                continue;
            }
            Admission::Rejected => {
                limit::reject_now(&stream);
                continue;
            }
        };
        let stream = Counted::new(stream, slot);
        let (state, peers) = (state.clone(), peers.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (state, peers) = (state.clone(), peers.clone());
                async move { Ok::<_, Infallible>(handle(&state, &peers, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(state: &Arc<State>, peers: &Peers, request: Request<Incoming>) -> Response<Body> {
    if !peers.authorized(request.headers()) {
        return text(StatusCode::UNAUTHORIZED, "peer secret required\n");
    }
    if request.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let path = request.uri().path();
    match path {
        "/peer/id" => text(StatusCode::OK, peers.id()),
        "/peer/status" => {
            let mut response = text(StatusCode::OK, &peers.status_json());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => match path.strip_prefix("/peer/blobs/").and_then(parse_blob) {
            Some((registry, name, digest)) => {
                crate::serve::blob_for_peer(state, registry, name, digest).await
            }
            None => text(StatusCode::NOT_FOUND, "unknown peer request\n"),
        },
    }
}

/// `<registry, percent-encoded>/<repository>/<digest>`.
fn parse_blob(rest: &str) -> Option<(RegistryHost, RepoName, Digest)> {
    let (registry, rest) = rest.split_once('/')?;
    let (name, digest) = rest.rsplit_once('/')?;
    let registry = percent_decode_str(registry).decode_utf8().ok()?;
    Some((
        RegistryHost::parse(&registry).ok()?,
        RepoName::parse(name).ok()?,
        Digest::parse(digest).ok().filter(Digest::is_sha256)?,
    ))
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is a failed test
    use super::*;

    #[test]
    fn blob_paths_parse_and_hostile_ones_do_not() {
        let digest = Digest::sha256_of(b"x");
        let (registry, name, parsed) =
            parse_blob(&format!("registry.test%3A5000/team/app/{digest}")).unwrap();
        assert_eq!(registry.to_string(), "registry.test:5000");
        assert_eq!(name.as_str(), "team/app");
        assert_eq!(parsed, digest);
        for hostile in [
            format!("registry.test/../etc/{digest}"),
            format!("registry.test/team/app/sha512:{}", "a".repeat(128)),
            "registry.test/team/app/notadigest".to_owned(),
            format!("%2F%2E%2E/team/{digest}"),
            format!("registry.test/{digest}"),
        ] {
            assert!(parse_blob(&hostile).is_none(), "{hostile}");
        }
    }
}
