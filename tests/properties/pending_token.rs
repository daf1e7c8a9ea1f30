//! PENDING — not declared in `main.rs` yet: enable with `mod pending_token;` (or rename to
//! `token.rs`) once `registry_proxy::access::token` has landed.
//!
//! Expected API (the proxy's own token endpoint; tokens come back from clients):
//! - `TokenKey::ephemeral() -> TokenKey`: a fresh random key.
//! - `TokenKey::mint(&self, ..) -> String` and `TokenKey::open(&self, token: &str) -> Option<..>`
//!   (or `Result`): what one key mints, it opens to the same claims; `open` never panics on
//!   arbitrary strings and refuses tokens of another key and tampered tokens.
//! - `parse_token_request(query: &str, body: &[u8]) -> Result<TokenRequest, E>` (or `Option`):
//!   `GET /token?service=..&scope=..` and containerd's `POST /token` form body; never panics on
//!   arbitrary query strings and body bytes.
//!
//! The claim type and the exact signatures were not settled when this was written: [`mint`],
//! [`open`] and [`request`] below are the only places that call them; adapt those.

use proptest::collection::vec;
use proptest::prelude::*;
use registry_proxy::access::token::{TokenKey, parse_token_request};

use crate::strategies::{bytes, config, mutated, name_text, text};

/// ADAPT: a token for `user` with pull access to `repositories`.
fn mint(key: &TokenKey, user: &str, repositories: &[String]) -> String {
    key.mint(user, repositories)
}

/// ADAPT: the user and repositories a token carries, if `key` accepts it.
fn open(key: &TokenKey, token: &str) -> Option<(String, Vec<String>)> {
    key.open(token)
        .ok()
        .map(|claims| (claims.user, claims.repositories))
}

/// ADAPT: whether a token request parses.
fn request(query: &str, body: &[u8]) -> bool {
    parse_token_request(query, body).is_ok()
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9._@-]{1,24}", any::<String>()]
}

proptest! {
    #![proptest_config(config())]

    /// What a key mints it opens, to the same claims.
    #[test]
    fn mint_open_round_trips(user in user(), repositories in vec(name_text(), 0..4)) {
        let key = TokenKey::ephemeral();
        let token = mint(&key, &user, &repositories);
        prop_assert_eq!(open(&key, &token), Some((user, repositories)));
    }

    /// Another key's tokens and tampered tokens are refused.
    #[test]
    fn foreign_and_tampered_tokens_are_refused(
        user in user(),
        repositories in vec(name_text(), 0..3),
        at in any::<proptest::sample::Index>(),
        flip in 1u8..,
    ) {
        let key = TokenKey::ephemeral();
        let token = mint(&TokenKey::ephemeral(), &user, &repositories);
        prop_assert_eq!(open(&key, &token), None);

        let token = mint(&key, &user, &repositories);
        prop_assert!(!token.is_empty());
        let mut bytes = token.into_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= flip & 0x7f; // stays ASCII, changes the byte
        if let Ok(tampered) = String::from_utf8(bytes) {
            // A flip inside base64 padding bits may decode the same; anything else is refused.
            if let Some(opened) = open(&key, &tampered) {
                prop_assert_eq!(opened, (user, repositories));
            }
        }
    }

    /// `open` never panics on arbitrary or near-valid strings.
    #[test]
    fn open_never_panics(
        token in prop_oneof![
            text("abcXYZ019-_.=+/"),
            mutated(Just(()).prop_map(|_| mint(&TokenKey::ephemeral(), "alice", &[]))),
        ],
    ) {
        let key = TokenKey::ephemeral();
        prop_assert_eq!(open(&key, &token), None);
    }

    /// Token requests of any query string and body bytes never panic.
    #[test]
    fn requests_never_panic(
        query in prop_oneof![
            text("service=scope=repository:pull,push&%+"),
            mutated(Just("service=proxy&scope=repository:library/alpine:pull&scope=repository:a/b:pull,push".to_owned())),
        ],
        body in prop_oneof![
            bytes(),
            mutated(Just("grant_type=password&username=alice&password=x&service=proxy&scope=repository:a:pull".to_owned()))
                .prop_map(String::into_bytes),
        ],
    ) {
        let _ = request(&query, &body);
        let _ = request(&query, &[]);
        let _ = request("", &body);
    }
}
