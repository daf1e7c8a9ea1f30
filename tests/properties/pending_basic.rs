//! PENDING — not declared in `main.rs` yet: enable with `mod pending_basic;` (or rename to
//! `basic.rs`) once `registry_proxy::registry::basic` has landed.
//!
//! Expected API (`Authorization` / `Proxy-Authorization` values, network input):
//! - `pub fn parse_basic(value: &str) -> Option<(String, String)>`: `Basic <base64(user:pass)>`
//!   → `(user, pass)`; the user has no `:`, the password may be anything (`:` included); never
//!   panics.
//! - `pub fn parse_bearer(value: &str) -> Option<&str>`: `Bearer <token68>` → the token; never
//!   panics. If it returns a `Secret` (or `String`) instead, adapt [`bearer`] below — the only
//!   place that knows.
//!
//! Scheme names are case-insensitive (RFC 9110 §11.1): [`basic_scheme_any_case`] holds that
//! separately so a stricter parser fails one clearly named property.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use registry_proxy::registry::basic::{parse_basic, parse_bearer};

use crate::strategies::{bytes, config, mutated, text};

/// ADAPT: the bearer token as a string, whatever `parse_bearer` returns.
fn bearer(value: &str) -> Option<String> {
    parse_bearer(value).map(|t| t.to_owned())
}

/// `Basic <base64(user:password)>`.
fn basic_header(scheme: &str, user: &str, password: &str) -> String {
    format!("{scheme} {}", STANDARD.encode(format!("{user}:{password}")))
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._@-]{1,24}",
        any::<String>().prop_map(|s| s.replace(':', "")),
    ]
}

fn password() -> impl Strategy<Value = String> {
    prop_oneof!["[ -~]{0,40}", any::<String>()]
}

proptest! {
    #![proptest_config(config())]

    /// `Basic base64(user:pass)` gives back the user (no `:`) and any password.
    #[test]
    fn basic_round_trips(user in user(), password in password()) {
        let header = basic_header("Basic", &user, &password);
        prop_assert_eq!(parse_basic(&header), Some((user, password)), "{:?}", header);
    }

    /// The scheme is case-insensitive.
    #[test]
    fn basic_scheme_any_case(user in user(), password in password(), scheme in "[bB][aA][sS][iI][cC]") {
        let header = basic_header(&scheme, &user, &password);
        prop_assert_eq!(parse_basic(&header), Some((user, password)), "{:?}", header);
    }

    /// `Bearer <token>` gives back the token.
    #[test]
    fn bearer_round_trips(token in "[A-Za-z0-9._~+/-]{1,200}={0,2}") {
        prop_assert_eq!(bearer(&format!("Bearer {token}")), Some(token));
    }

    /// Arbitrary headers, arbitrary bytes behind `Basic `, and near-valid headers never panic;
    /// an accepted Basic credential decodes from its header.
    #[test]
    fn garbage_never_panics(
        value in prop_oneof![
            text("BasicBearer =:+/"),
            bytes().prop_map(|b| format!("Basic {}", STANDARD.encode(b))),
            bytes().prop_map(|b| format!("Basic {}", String::from_utf8_lossy(&b))),
            mutated((user(), password()).prop_map(|(u, p)| basic_header("Basic", &u, &p))),
        ],
    ) {
        if let Some((user, password)) = parse_basic(&value) {
            prop_assert!(!user.contains(':'), "{value:?}");
            let encoded = value.split_once(' ').map(|(_, e)| e.trim()).unwrap_or("");
            let decoded = STANDARD.decode(encoded).ok().and_then(|d| String::from_utf8(d).ok());
            prop_assert_eq!(decoded, Some(format!("{user}:{password}")), "{:?}", value);
        }
        let _ = bearer(&value);
    }
}
