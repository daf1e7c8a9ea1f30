//! `Authorization` / `Proxy-Authorization` credentials: `parse_basic`, `parse_bearer` and
//! `basic_credentials` (the header lookup the CONNECT, absolute-form and admin paths use).
//!
//! `Basic` round-trips for any user without `:` or control characters and any password without
//! control characters, whatever the case of the scheme, the blanks around it and the padding;
//! `Bearer` round-trips for any `token68`; whatever either accepts meets its documented promise;
//! `Proxy-Authorization` is read from its own header only, first value, visible ASCII only.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderValue};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use registry_proxy::registry::basic::{
    MAX_BASIC_LEN, MAX_BEARER_LEN, basic_credentials, parse_basic, parse_bearer,
};

use crate::strategies::{bytes, config, mutated, text};

/// `<scheme><blanks><base64(user:password)><blanks>` with optional leading blanks and padding.
#[derive(Clone, Debug)]
struct Layout {
    scheme: String,
    before: &'static str,
    between: &'static str,
    after: &'static str,
    padded: bool,
}

fn layout(scheme: &'static str) -> impl Strategy<Value = Layout> {
    let blanks = || select(&["", " ", "\t", "  ", " \t "][..]);
    let between = select(&[" ", "\t", "   ", "\t \t"][..]);
    let case = vec(any::<bool>(), scheme.len());
    (case, blanks(), between, blanks(), any::<bool>()).prop_map(
        move |(case, before, between, after, padded)| Layout {
            scheme: scheme
                .chars()
                .zip(case)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect(),
            before,
            between,
            after,
            padded,
        },
    )
}

fn encode(credential: &[u8], padded: bool) -> String {
    if padded {
        STANDARD.encode(credential)
    } else {
        STANDARD_NO_PAD.encode(credential)
    }
}

fn header(l: &Layout, credential: &[u8]) -> String {
    format!(
        "{}{}{}{}{}",
        l.before,
        l.scheme,
        l.between,
        encode(credential, l.padded),
        l.after
    )
}

fn without_controls(s: String) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// A user name: non-empty, no `:`, no control characters.
fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9._@-]{1,24}",
        1 => "[^:\\p{Cc}]{1,40}",
        1 => any::<String>().prop_map(|s| {
            let s: String = without_controls(s).replace(':', "");
            if s.is_empty() { "u".to_owned() } else { s }
        }),
    ]
}

/// A password: no control characters; `:`, blanks and non-ASCII welcome.
fn password() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        "[:]{0,3}[^\\p{Cc}]{0,40}",
        any::<String>().prop_map(without_controls),
    ]
}

/// A `token68`: the characters, then optional `=` padding.
fn token68() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/-]{1,300}={0,2}"
}

/// Control characters the credential may not carry (C0, DEL, C1).
fn control() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        Just('\u{7f}'),
        (0x80u32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
    ]
}

/// Inserts `c` at a character boundary of `s` chosen by `at`.
fn insert_char(s: &str, at: Index, c: char) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let at = at.index(chars.len() + 1);
    chars.insert(at, c);
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(config())]

    /// `Basic base64(user:password)` gives back the user and the password, whatever the case of
    /// the scheme, the blanks around and after it, and with or without base64 padding.
    #[test]
    fn basic_round_trips(user in user(), password in password(), l in layout("basic")) {
        let value = header(&l, format!("{user}:{password}").as_bytes());
        prop_assume!(value.len() <= MAX_BASIC_LEN);
        prop_assert_eq!(parse_basic(&value), Some((user, password)), "{:?}", value);
    }

    /// The scheme alone, in any case, with the canonical layout: a stricter parser fails here by
    /// name.
    #[test]
    fn basic_scheme_any_case(user in user(), password in password(), scheme in "[bB][aA][sS][iI][cC]") {
        let value = format!("{scheme} {}", STANDARD.encode(format!("{user}:{password}")));
        prop_assume!(value.len() <= MAX_BASIC_LEN);
        prop_assert_eq!(parse_basic(&value), Some((user, password)), "{:?}", value);
    }

    /// Credentials outside the grammar are refused: no `:`, an empty user, a control character
    /// anywhere, invalid UTF-8, a blank inside the base64, another scheme, or a value over the
    /// length cap.
    #[test]
    fn basic_refuses_bad_credentials(
        user in user(),
        password in password(),
        l in layout("basic"),
        c in control(),
        at in any::<Index>(),
        bad_byte in 0x80u8..=0xff,
        which in 0..7u8,
    ) {
        let good = format!("{user}:{password}");
        let value = match which {
            0 => header(&l, user.as_bytes()),
            1 => header(&l, format!(":{password}").as_bytes()),
            2 => header(&l, insert_char(&good, at, c).as_bytes()),
            3 => {
                // A lone continuation or lead byte, or a byte that never occurs in UTF-8.
                let mut b = good.clone().into_bytes();
                b.insert(at.index(b.len() + 1), bad_byte);
                prop_assume!(String::from_utf8(b.clone()).is_err());
                header(&l, &b)
            }
            4 => {
                let encoded = STANDARD.encode(&good);
                let i = 1 + at.index(encoded.len() - 1);
                format!("Basic {} {}", &encoded[..i], &encoded[i..])
            }
            5 => header(&Layout { scheme: "Bearer".into(), ..l }, good.as_bytes()),
            _ => {
                let value = header(&l, good.as_bytes());
                format!("{value:<width$}", width = MAX_BASIC_LEN + 1)
            }
        };
        prop_assert_eq!(parse_basic(&value), None, "{:?}", value);
    }

    /// `Bearer <token68>` gives back the token, whatever the case of the scheme and the blanks.
    #[test]
    fn bearer_round_trips(token in token68(), l in layout("bearer")) {
        let value = format!("{}{}{}{token}{}", l.before, l.scheme, l.between, l.after);
        prop_assert_eq!(parse_bearer(&value), Some(token.as_str()), "{:?}", value);
    }

    /// A token with a character outside `token68`, `=` before its end, or over the length cap is
    /// refused.
    #[test]
    fn bearer_refuses_bad_tokens(
        token in "[A-Za-z0-9._~+/-]{2,40}",
        bad in prop_oneof![
            select(&['"', ',', ';', '\\', '(', ')', '@', '!', '%', '*', 'é', '\0', '\u{7f}', '😀'][..]),
            Just('='),
        ],
        at in any::<Index>(),
        too_long in any::<bool>(),
    ) {
        let value = if too_long {
            format!("Bearer {}", token.repeat(MAX_BEARER_LEN / token.len() + 1))
        } else {
            // Strictly inside the token, so a `=` is not trailing padding.
            let i = 1 + at.index(token.len() - 1);
            format!("Bearer {}{bad}{}", &token[..i], &token[i..])
        };
        prop_assert_eq!(parse_bearer(&value), None, "{:?}", value);
    }

    /// Arbitrary headers, arbitrary bytes behind `Basic `, and near-valid headers never panic;
    /// whatever is accepted keeps the parsers' promises and decodes from the header itself.
    #[test]
    fn accepted_values_keep_their_promises(
        value in prop_oneof![
            text("BasicBearer \t=:+/"),
            bytes().prop_map(|b| format!("Basic {}", STANDARD.encode(b))),
            bytes().prop_map(|b| format!("Basic {}", String::from_utf8_lossy(&b))),
            mutated((user(), password()).prop_map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))))),
            mutated(token68().prop_map(|t| format!("Bearer {t}"))),
        ],
    ) {
        if let Some((user, password)) = parse_basic(&value) {
            prop_assert!(!user.is_empty() && !user.contains(':'), "{value:?}");
            prop_assert!(!user.chars().chain(password.chars()).any(char::is_control), "{value:?}");
            let encoded = value.trim_matches([' ', '\t'])
                .split_once([' ', '\t'])
                .map(|(_, e)| e.trim_matches([' ', '\t']))
                .unwrap_or("");
            let decoded = STANDARD_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            prop_assert_eq!(decoded, Some(format!("{user}:{password}")), "{:?}", value);
        }
        if let Some(token) = parse_bearer(&value) {
            prop_assert!(value.contains(token));
            let body = token.trim_end_matches('=');
            prop_assert!(
                !body.is_empty()
                    && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)),
                "{value:?} → {token:?}"
            );
        }
    }

    /// `Proxy-Authorization: Basic` gives the proxy user, taken from that header only (never
    /// from `Authorization`, which carries upstream credentials), first value first.
    #[test]
    fn proxy_authorization_round_trips(
        user in user(),
        password in password(),
        l in layout("basic"),
        upstream in proptest::option::of((user(), password())),
        later in proptest::option::of((user(), password())),
    ) {
        let to_header = |u: &str, p: &str| HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
        let mut headers = HeaderMap::new();
        if let Some((u, p)) = &upstream {
            headers.insert(AUTHORIZATION, to_header(u, p).unwrap());
        }
        prop_assert_eq!(basic_credentials(&headers, &PROXY_AUTHORIZATION), None);
        let value = header(&l, format!("{user}:{password}").as_bytes());
        prop_assume!(value.len() <= MAX_BASIC_LEN);
        headers.append(PROXY_AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        if let Some((u, p)) = &later {
            headers.append(PROXY_AUTHORIZATION, to_header(u, p).unwrap());
        }
        prop_assert_eq!(
            basic_credentials(&headers, &PROXY_AUTHORIZATION),
            Some((user, password))
        );
        prop_assert_eq!(basic_credentials(&headers, &AUTHORIZATION), upstream);
    }

    /// Any header value bytes a client can send: visible ASCII is parsed as `parse_basic` parses
    /// it; anything else (obs-text, which `http` keeps as bytes) is refused, never decoded lossily.
    #[test]
    fn proxy_authorization_bytes(
        raw in prop_oneof![
            bytes(),
            (user(), password(), any::<Index>(), 0x80u8..=0xff).prop_map(|(u, p, at, b)| {
                let mut v = format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))).into_bytes();
                v.insert(at.index(v.len() + 1), b);
                v
            }),
        ],
    ) {
        let Ok(value) = HeaderValue::from_bytes(&raw) else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        headers.insert(PROXY_AUTHORIZATION, value);
        let got = basic_credentials(&headers, &PROXY_AUTHORIZATION);
        match std::str::from_utf8(&raw) {
            Ok(s) if raw.iter().all(|b| *b == b'\t' || (b' '..=b'~').contains(b)) => {
                prop_assert_eq!(got, parse_basic(s));
            }
            _ => prop_assert_eq!(got, None),
        }
    }
}
