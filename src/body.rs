//! The body type used for every response the proxy sends and every request it makes upstream.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Errors carried by a body stream; an error aborts the transfer (the client never sees a clean end).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming body.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body held in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Wraps a body received from hyper (client or server side).
pub fn incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(|e| -> BoxError { Box::new(e) }).boxed()
}
