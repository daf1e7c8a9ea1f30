//! Property tests of every parser that reads network input (issue 7, item 8: fuzzing), run by the
//! normal `cargo test` with a bounded number of cases per property.
//!
//! Each module takes one parser of `registry_proxy::registry` or `registry_proxy::access` and
//! checks that it never panics on arbitrary strings or bytes and on near-valid inputs (valid ones
//! from the grammar with `%`, `..`, NUL, non-ASCII or very long pieces mixed in), that whatever it
//! accepts is valid by its grammar, and that inputs built from the grammar parse back to what they
//! were built from. [`route`] also holds the round trip `parse_path(route.path()) == route` and
//! the mirror target (`?ns=`, host prefix, Docker Hub).
//!
//! Cases per property: [`strategies::DEFAULT_CASES`], or `PROPTEST_CASES` from the environment
//! when set. A failing case is shrunk and saved in `tests/proptest-regressions/<module>.txt`;
//! commit that file so the case is replayed first from then on.
//!
//! The modules under `access` and the credential parsers take input from clients too: `basic`
//! (`Authorization`, `Proxy-Authorization`), `token` (the proxy's tokens and token requests),
//! `rules` (access patterns against request targets), `tunnel` (`TUNNEL_ALLOW` entries, `CONNECT`
//! targets and the policy) and `htpasswd` (`PROXY_HTPASSWD`). Where a parser has a documented
//! semantics, a model of it (often the `regex` crate) is the oracle.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod basic;
mod challenge;
mod digest;
mod error;
mod host;
mod htpasswd;
mod media;
mod name;
mod range;
mod reference;
mod route;
mod rules;
mod strategies;
mod token;
mod tunnel;
