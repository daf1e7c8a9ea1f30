//! Registry error codes and the distribution JSON error body
//! (`{"errors":[{"code":"…","message":"…"}]}`), both ways: built for our clients, read from
//! upstreams.

use std::fmt;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};

/// An error code of the distribution spec, plus the proxy's own `UNAVAILABLE` and `RANGE_INVALID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `BLOB_UNKNOWN`: blob unknown to registry (404).
    BlobUnknown,
    /// `BLOB_UPLOAD_INVALID`: blob upload invalid (400).
    BlobUploadInvalid,
    /// `BLOB_UPLOAD_UNKNOWN`: blob upload unknown to registry (404).
    BlobUploadUnknown,
    /// `DIGEST_INVALID`: provided digest did not match uploaded content, or is malformed (400).
    DigestInvalid,
    /// `MANIFEST_BLOB_UNKNOWN`: a pushed manifest references a blob unknown to the registry (400).
    ManifestBlobUnknown,
    /// `MANIFEST_INVALID`: manifest (or tag) invalid (400).
    ManifestInvalid,
    /// `MANIFEST_UNKNOWN`: manifest unknown to registry (404).
    ManifestUnknown,
    /// `NAME_INVALID`: invalid repository name, or a malformed registry path (400).
    NameInvalid,
    /// `NAME_UNKNOWN`: repository name not known to registry, or not a registry path (404).
    NameUnknown,
    /// `SIZE_INVALID`: provided length did not match content length (400).
    SizeInvalid,
    /// `UNAUTHORIZED`: authentication required (401).
    Unauthorized,
    /// `DENIED`: requested access to the resource is denied (403).
    Denied,
    /// `UNSUPPORTED`: the operation is unsupported; also our "method not allowed" (405).
    Unsupported,
    /// `TOOMANYREQUESTS`: too many requests (429).
    TooManyRequests,
    /// `UNAVAILABLE`: the upstream registry could not be reached (503; handlers may use 502/504).
    Unavailable,
    /// `RANGE_INVALID`: the `Range` header is malformed or not satisfiable (416).
    RangeInvalid,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BlobUnknown,
        ErrorCode::BlobUploadInvalid,
        ErrorCode::BlobUploadUnknown,
        ErrorCode::DigestInvalid,
        ErrorCode::ManifestBlobUnknown,
        ErrorCode::ManifestInvalid,
        ErrorCode::ManifestUnknown,
        ErrorCode::NameInvalid,
        ErrorCode::NameUnknown,
        ErrorCode::SizeInvalid,
        ErrorCode::Unauthorized,
        ErrorCode::Denied,
        ErrorCode::Unsupported,
        ErrorCode::TooManyRequests,
        ErrorCode::Unavailable,
        ErrorCode::RangeInvalid,
    ];

    /// The code as it appears on the wire, e.g. `MANIFEST_UNKNOWN`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
        }
    }

    /// The code for a wire string (exact, upper-case match), if it is one we know.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The status a registry usually answers with this code (as the distribution registry does).
    pub fn status(&self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Serialize)]
struct BodyOut<'a> {
    errors: [EntryOut<'a>; 1],
}

#[derive(Serialize)]
struct EntryOut<'a> {
    code: &'static str,
    message: &'a str,
}

/// The JSON error body: exactly `{"errors":[{"code":"…","message":"…"}]}`, message escaped.
pub fn error_body(code: ErrorCode, message: &str) -> Bytes {
    let body = BodyOut {
        errors: [EntryOut {
            code: code.as_str(),
            message,
        }],
    };
    match serde_json::to_vec(&body) {
        Ok(v) => Bytes::from(v),
        // Serializing two strings cannot fail; keep a valid body regardless.
        Err(_) => Bytes::from_static(b"{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"\"}]}"),
    }
}

#[derive(Deserialize)]
struct BodyIn {
    errors: Vec<serde_json::Value>,
}

/// The first error's code and message from an upstream's error body; `None` unless it is a JSON
/// object with a non-empty `errors` array whose first entry has a string `code`. A missing or
/// non-string `message` reads as empty; other fields (`detail`, …) are ignored.
pub fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    let parsed: BodyIn = serde_json::from_slice(body).ok()?;
    let first = parsed.errors.first()?;
    let code = first.get("code")?.as_str()?.to_owned();
    let message = first
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_owned();
    Some((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_have_statuses() {
        let cases: &[(ErrorCode, &str, u16)] = &[
            (ErrorCode::BlobUnknown, "BLOB_UNKNOWN", 404),
            (ErrorCode::BlobUploadInvalid, "BLOB_UPLOAD_INVALID", 400),
            (ErrorCode::BlobUploadUnknown, "BLOB_UPLOAD_UNKNOWN", 404),
            (ErrorCode::DigestInvalid, "DIGEST_INVALID", 400),
            (ErrorCode::ManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", 400),
            (ErrorCode::ManifestInvalid, "MANIFEST_INVALID", 400),
            (ErrorCode::ManifestUnknown, "MANIFEST_UNKNOWN", 404),
            (ErrorCode::NameInvalid, "NAME_INVALID", 400),
            (ErrorCode::NameUnknown, "NAME_UNKNOWN", 404),
            (ErrorCode::SizeInvalid, "SIZE_INVALID", 400),
            (ErrorCode::Unauthorized, "UNAUTHORIZED", 401),
            (ErrorCode::Denied, "DENIED", 403),
            (ErrorCode::Unsupported, "UNSUPPORTED", 405),
            (ErrorCode::TooManyRequests, "TOOMANYREQUESTS", 429),
            (ErrorCode::Unavailable, "UNAVAILABLE", 503),
            (ErrorCode::RangeInvalid, "RANGE_INVALID", 416),
        ];
        assert_eq!(cases.len(), ErrorCode::ALL.len());
        for (code, wire, status) in cases {
            assert_eq!(code.as_str(), *wire);
            assert_eq!(code.to_string(), *wire);
            assert_eq!(code.status().as_u16(), *status, "{wire}");
            assert_eq!(ErrorCode::parse(wire), Some(*code));
        }
        assert_eq!(ErrorCode::parse("manifest_unknown"), None);
        assert_eq!(ErrorCode::parse(""), None);
    }

    #[test]
    fn builds_bodies() {
        let cases: &[(ErrorCode, &str, &str)] = &[
            (
                ErrorCode::ManifestUnknown,
                "manifest unknown",
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
            (
                ErrorCode::Denied,
                "say \"no\"\\\n",
                r#"{"errors":[{"code":"DENIED","message":"say \"no\"\\\n"}]}"#,
            ),
            (
                ErrorCode::Unsupported,
                "",
                r#"{"errors":[{"code":"UNSUPPORTED","message":""}]}"#,
            ),
            (
                ErrorCode::NameInvalid,
                "ctl\u{1}é",
                "{\"errors\":[{\"code\":\"NAME_INVALID\",\"message\":\"ctl\\u0001é\"}]}",
            ),
        ];
        for (code, message, want) in cases {
            let body = error_body(*code, message);
            assert_eq!(std::str::from_utf8(&body).unwrap(), *want);
            let back = parse_error_body(&body).unwrap();
            assert_eq!(back, (code.as_str().to_owned(), (*message).to_owned()));
        }
    }

    #[test]
    fn parses_upstream_bodies() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"library/x","Action":"pull"}]}]}"#,
                Some(("UNAUTHORIZED", "authentication required")),
            ),
            (
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"a"},{"code":"DENIED","message":"b"}]}"#,
                Some(("TOOMANYREQUESTS", "a")),
            ),
            (
                r#" {"errors":[{"code":"X_CUSTOM"}], "extra": 1} "#,
                Some(("X_CUSTOM", "")),
            ),
            (
                r#"{"errors":[{"code":"DENIED","message":7}]}"#,
                Some(("DENIED", "")),
            ),
            (r#"{"errors":[]}"#, None),
            (r#"{"errors":[{"message":"no code"}]}"#, None),
            (r#"{"errors":[{"code":1}]}"#, None),
            (r#"{"errors":"nope"}"#, None),
            (r#"{"error":"not the format"}"#, None),
            (r#"[1,2]"#, None),
            ("<html>502 Bad Gateway</html>", None),
            ("", None),
            ("{\"errors\":[{\"code\":\"DENIED\"", None),
        ];
        for (input, want) in cases {
            let got = parse_error_body(input.as_bytes());
            let want = want.map(|(c, m)| (c.to_owned(), m.to_owned()));
            assert_eq!(got, want, "input {input:?}");
        }
        assert_eq!(parse_error_body(&[0xff, 0xfe, b'{']), None);
    }

    #[test]
    fn never_panics() {
        let seeds = [
            r#"{"errors":[{"code":"DENIED","message":"m","detail":null}]}"#,
            r#"{"errors":[{"code":"A"}]}"#,
        ];
        for input in crate::registry::fuzz::inputs(7, &seeds, "{}[]\":,errorscodemessage", 3000) {
            let _ = parse_error_body(input.as_bytes());
            let body = error_body(ErrorCode::NameInvalid, &input);
            let (code, message) = parse_error_body(&body).unwrap();
            assert_eq!(code, "NAME_INVALID");
            assert_eq!(message, input);
        }
    }
}
