//! `Authorization` / `Proxy-Authorization` credentials: `Basic <base64(user:password)>` (RFC 7617)
//! and `Bearer <token>` (RFC 6750). Pure parsers; a malformed header is `None`, never a panic.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;
use http::header::HeaderName;

/// Longest `Basic` header value accepted, in bytes.
pub const MAX_BASIC_LEN: usize = 4096;
/// Longest `Bearer` token accepted, in bytes: room for the proxy's own tokens, which are at most
/// 8 KiB (`access::token::MAX_TOKEN_LEN`) without the scheme.
pub const MAX_BEARER_LEN: usize = 8192;

/// Standard base64, padding optional (some clients drop it).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Splits `<scheme> <rest>` and returns `rest` if the scheme is `scheme` (case-insensitive).
fn strip_scheme<'a>(header_value: &'a str, scheme: &str) -> Option<&'a str> {
    let value = header_value.trim_matches(|c| c == ' ' || c == '\t');
    let (name, rest) = value.split_once([' ', '\t'])?;
    name.eq_ignore_ascii_case(scheme)
        .then(|| rest.trim_matches(|c| c == ' ' || c == '\t'))
}

/// Parses `Basic <base64(user:password)>` into the user and the password.
///
/// The scheme is case-insensitive and surrounding spaces are ignored. The user is everything before
/// the first `:` and must not be empty; the password is the rest and may contain `:`. Rejected: values
/// longer than [`MAX_BASIC_LEN`], invalid base64, non-UTF-8 credentials and control characters in
/// either part.
pub fn parse_basic(header_value: &str) -> Option<(String, String)> {
    if header_value.len() > MAX_BASIC_LEN {
        return None;
    }
    let encoded = strip_scheme(header_value, "basic")?;
    if encoded.is_empty() || encoded.contains([' ', '\t']) {
        return None;
    }
    let decoded = BASE64.decode(encoded).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    if decoded.chars().any(char::is_control) {
        return None;
    }
    let (user, password) = decoded.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

/// The `Basic` credentials in the first `name` header of `headers` (`Proxy-Authorization` on
/// `CONNECT` and absolute-form requests, `Authorization` on the proxy's own pages): `None` if there
/// is none, or if it is not visible ASCII or not valid for [`parse_basic`].
pub fn basic_credentials(headers: &HeaderMap, name: &HeaderName) -> Option<(String, String)> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_basic)
}

/// Parses `Bearer <token>` and returns the token.
///
/// The scheme is case-insensitive and surrounding spaces are ignored; the token must be a non-empty
/// `token68` (`A-Z a-z 0-9 - . _ ~ + /`, then optional trailing `=`) of at most [`MAX_BEARER_LEN`] bytes.
pub fn parse_bearer(header_value: &str) -> Option<&str> {
    let token = strip_scheme(header_value, "bearer")?;
    if token.len() > MAX_BEARER_LEN {
        return None;
    }
    let body = token.trim_end_matches('=');
    let valid = !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    valid.then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &[u8]) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn parses_basic() {
        let cases: Vec<(String, Option<(&str, &str)>)> = vec![
            (basic(b"alice:wonderland"), Some(("alice", "wonderland"))),
            (
                "Basic YWxpY2U6d29uZGVybGFuZA==".into(),
                Some(("alice", "wonderland")),
            ),
            (
                "basic YWxpY2U6d29uZGVybGFuZA==".into(),
                Some(("alice", "wonderland")),
            ),
            (
                "BASIC YWxpY2U6d29uZGVybGFuZA==".into(),
                Some(("alice", "wonderland")),
            ),
            (
                "  Basic   YWxpY2U6d29uZGVybGFuZA==  ".into(),
                Some(("alice", "wonderland")),
            ),
            (
                "\tBasic\tYWxpY2U6d29uZGVybGFuZA==\t".into(),
                Some(("alice", "wonderland")),
            ),
            // Padding may be missing.
            (
                "Basic YWxpY2U6d29uZGVybGFuZA".into(),
                Some(("alice", "wonderland")),
            ),
            (basic(b"bob:p:a:ss"), Some(("bob", "p:a:ss"))),
            (basic(b"bob:"), Some(("bob", ""))),
            (basic(b"bob: spaced pass "), Some(("bob", " spaced pass "))),
            (
                basic("jürgen:pässwörd€".as_bytes()),
                Some(("jürgen", "pässwörd€")),
            ),
            (basic(b":password"), None),
            (basic(b"nocolon"), None),
            (basic(b""), None),
            (basic(b"bob:pa\x00ss"), None),
            (basic(b"bob:pa\nss"), None),
            (basic(b"bo\tb:pass"), None),
            (basic(b"bob:pa\x7fss"), None),
            (basic("bob:pa\u{85}ss".as_bytes()), None),
            (basic(b"bob:\xff\xfe"), None),
            ("Basic".into(), None),
            ("Basic ".into(), None),
            ("Basic !!!!".into(), None),
            ("Basic YWxp Y2U6d29uZGVybGFuZA==".into(), None),
            ("Bearer YWxpY2U6d29uZGVybGFuZA==".into(), None),
            ("Basics YWxpY2U6d29uZGVybGFuZA==".into(), None),
            ("YWxpY2U6d29uZGVybGFuZA==".into(), None),
            ("".into(), None),
        ];
        for (input, want) in &cases {
            let got = parse_basic(input);
            let got = got.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
            assert_eq!(got, *want, "input {input:?}");
        }
    }

    #[test]
    fn basic_from_headers() {
        use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
        let mut headers = HeaderMap::new();
        assert_eq!(basic_credentials(&headers, &PROXY_AUTHORIZATION), None);
        headers.insert(AUTHORIZATION, basic(b"up:stream").parse().unwrap());
        assert_eq!(basic_credentials(&headers, &PROXY_AUTHORIZATION), None);
        headers.append(PROXY_AUTHORIZATION, basic(b"alice:pw").parse().unwrap());
        headers.append(PROXY_AUTHORIZATION, basic(b"bob:pw").parse().unwrap());
        let alice = Some(("alice".to_owned(), "pw".to_owned()));
        assert_eq!(basic_credentials(&headers, &PROXY_AUTHORIZATION), alice);
        let upstream = Some(("up".to_owned(), "stream".to_owned()));
        assert_eq!(basic_credentials(&headers, &AUTHORIZATION), upstream);
        // Not visible ASCII: refused, not decoded lossily.
        let obs_text = http::HeaderValue::from_bytes(b"Basic YWxpY2U6cHc=\xff").unwrap();
        headers.insert(PROXY_AUTHORIZATION, obs_text);
        assert_eq!(basic_credentials(&headers, &PROXY_AUTHORIZATION), None);
    }

    #[test]
    fn basic_length_cap() {
        // The same credential padded with trailing spaces to exactly the cap parses; one more
        // byte does not.
        let header = basic(format!("u:{}", "p".repeat(3000)).as_bytes());
        let at_cap = format!("{header:<MAX_BASIC_LEN$}");
        assert_eq!(at_cap.len(), MAX_BASIC_LEN);
        assert!(parse_basic(&at_cap).is_some());
        assert_eq!(parse_basic(&format!("{at_cap} ")), None);
    }

    #[test]
    fn parses_bearer() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";
        let cases: &[(&str, Option<&str>)] = &[
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc  ", Some("abc")),
            ("Bearer a+b/c==", Some("a+b/c==")),
            ("Bearer a~b.c_d-e", Some("a~b.c_d-e")),
            ("Bearer ==", None),
            ("Bearer a=b", None),
            ("Bearer a b", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearer a\"b", None),
            ("Bearer a,b", None),
            ("Bearer é", None),
            ("Basic abc", None),
            ("abc", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_bearer(input), *want, "input {input:?}");
        }
        assert_eq!(parse_bearer(&format!("Bearer {jwt}")), Some(jwt));
        // The cap is on the token, not the header: a token of the full length still fits.
        let long = format!("Bearer {}", "a".repeat(MAX_BEARER_LEN + 1));
        assert_eq!(parse_bearer(&long), None);
        let fits = format!("Bearer  {}", "a".repeat(MAX_BEARER_LEN));
        assert!(parse_bearer(&fits).is_some());
    }

    #[test]
    fn never_panics() {
        let seeds = [
            "Basic YWxpY2U6d29uZGVybGFuZA==",
            "Bearer abc.def-ghi",
            "basic Ojo6",
        ];
        for input in crate::registry::fuzz::inputs(17, &seeds, "ABCabc0129+/=: ", 5000) {
            if let Some((user, password)) = parse_basic(&input) {
                assert!(!user.is_empty() && !user.contains(':'), "{input:?}");
                assert!(!user.chars().chain(password.chars()).any(char::is_control));
            }
            if let Some(token) = parse_bearer(&input) {
                assert!(!token.is_empty() && !token.contains(' '), "{input:?}");
            }
        }
    }
}
