//! Uncached routes (`tags/list`, referrers, catalog, uploads when `ALLOW_PUSH=true`, blobs with
//! digests the store does not hold): forwarded to upstream with the proxy's auth, streamed back.

use http::header::LINK;
use http::{HeaderMap, HeaderValue, Response};
use hyper::body::Incoming;

use super::access::{filter_catalog, set_length};
use super::error::Failure;
use super::{
    Ctx, Outcome, copy_response_headers, forward_request_headers, pull_scope, ratelimit_note,
};
use crate::body;
use crate::registry::link::rewrite_link;
use crate::registry::route::Route;
use crate::telemetry::Verdict;
use crate::upstream::UpstreamRequest;

pub(super) async fn handle(ctx: &Ctx<'_>, route: &Route, incoming: Incoming) -> Outcome {
    let is_read = ctx.method == http::Method::GET || ctx.method == http::Method::HEAD;
    let scope = match route {
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::TagsList { name }
        | Route::Referrers { name, .. }
        | Route::Upload { name, .. } => {
            if is_read {
                pull_scope(name)
            } else {
                format!("repository:{name}:pull,push")
            }
        }
        Route::Catalog => "registry:catalog:*".to_owned(),
        Route::Base => String::new(),
    };
    let mut path_and_query = route.path();
    if let Some(q) = &ctx.query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let request_body = if is_read {
        body::empty()
    } else {
        body::incoming(incoming)
    };
    let request = UpstreamRequest {
        registry: ctx.registry.clone(),
        method: ctx.method.clone(),
        path_and_query,
        headers: forward_request_headers(&ctx.headers),
        body: request_body,
        scope,
        auth: ctx.upstream_auth(),
    };
    match ctx.state.upstream.send(request).await {
        Ok(response) if matches!(route, Route::Catalog) && response.status().is_success() => {
            catalog(ctx, response).await
        }
        Ok(response) => {
            let note = ratelimit_note(response.headers());
            let (parts, incoming) = response.into_parts();
            let mut out = Response::new(body::incoming(incoming));
            *out.status_mut() = parts.status;
            copy_response_headers(&parts.headers, out.headers_mut());
            if matches!(route, Route::TagsList { .. } | Route::Referrers { .. }) {
                rewrite_links(ctx, out.headers_mut());
            }
            let mut outcome = Outcome::new(out, Verdict::Pass);
            outcome.note = note;
            outcome
        }
        Err(e) => Outcome::new(Failure::Upstream(e).into_response(), Verdict::Pass),
    }
}

/// Largest `_catalog` page filtered.
const MAX_CATALOG: usize = 8 << 20;

/// `_catalog` pages list only the repositories the client may pull.
async fn catalog(ctx: &Ctx<'_>, response: Response<Incoming>) -> Outcome {
    let (parts, incoming) = response.into_parts();
    let limited = http_body_util::Limited::new(incoming, MAX_CATALOG);
    let filtered = match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => filter_catalog(ctx, &collected.to_bytes()),
        Err(_) => None,
    };
    let Some(bytes) = filtered else {
        return Outcome::new(
            Failure::BadUpstream {
                code: crate::registry::error::ErrorCode::Unavailable,
                message: "upstream catalog could not be read".into(),
            }
            .into_response(),
            Verdict::Pass,
        );
    };
    let len = bytes.len();
    let mut out = Response::new(body::full(bytes));
    copy_response_headers(&parts.headers, out.headers_mut());
    set_length(out.headers_mut(), len);
    rewrite_links(ctx, out.headers_mut());
    Outcome::new(out, Verdict::Pass)
}

/// Pagination `Link`s point back at the proxy, named the way this client names the registry, so
/// the next page is asked of the proxy (and of the same upstream), not of Docker Hub or the
/// upstream itself.
fn rewrite_links(ctx: &Ctx<'_>, headers: &mut HeaderMap) {
    let links: Vec<HeaderValue> = headers.get_all(LINK).iter().cloned().collect();
    if links.is_empty() {
        return;
    }
    headers.remove(LINK);
    for link in links {
        let rewritten = link
            .to_str()
            .ok()
            .map(|v| rewrite_link(v, &ctx.registry, ctx.client.style))
            .and_then(|v| HeaderValue::from_str(&v).ok())
            .unwrap_or(link);
        headers.append(LINK, rewritten);
    }
}
