//! Shared harness: the real-peer environment (started once per test process by `up.sh`), one real
//! `registry-proxy` process per test, the client wrappers, upstream access-log counting and content
//! checks.
//!
//! - `env`: the environment, claims on upstream repositories, [`Reaped`] child processes.
//! - `proxy`: the [`Proxy`] process, its [`Opts`] and its log lines ([`LogLine`]).
//! - `clients`: the client wrappers ([`Pull`] with skopeo, ctr, podman, dockerd).
//! - `upstream`: the upstream registries' access logs ([`Watch`], [`RepoLog`]), pushes and direct
//!   requests.
//! - `content`: checks of what clients wrote against the upstream's digests.
//! - `requests`: single requests (curl, [`Way`], [`Response`]) and the registry login flow.
//! - `relay`: a throttling TCP [`Relay`] between the proxy and an upstream.

mod clients;
mod content;
mod env;
mod proxy;
mod relay;
mod requests;
mod upstream;

pub(crate) use clients::{Pull, Via};
pub(crate) use content::{assert_same_dirs, verify_content_store, verify_skopeo_dir};
pub(crate) use env::{Env, Image, Reaped, claim, env};
pub(crate) use proxy::{LogLine, Opts, Proxy, strip_ansi};
pub(crate) use relay::Relay;
pub(crate) use requests::{Login, Response, Way, parse_challenge, token_of};
pub(crate) use upstream::{RepoLog, Watch, direct_status, push_copy};

/// Registries the proxy intercepts (besides Docker Hub, always).
pub(crate) const REGISTRIES: &str = "registry.test second.test basic.test token.test";
/// Central credentials held by the proxy. token.test's token realm is on another host (auth.test),
/// to which the proxy sends central credentials only when an entry names that realm host exactly;
/// the `token.test` entry makes the registry `central`.
pub(crate) const AUTH_REGISTRIES: &str =
    "basic.test:alice:s3cret-basic token.test:bob:s3cret-token auth.test:bob:s3cret-token";

/// The token realms of token.test and the emulated Docker Hub are not registries the proxy
/// intercepts and live on loopback (`auth.test` 127.0.0.5, `auth.docker.io` 127.0.0.7), which the
/// default `TUNNEL_ALLOW` (`*:443`) refuses: name them, as an operator would.
pub(crate) const TUNNEL_ALLOW: &str = "*:443 auth.test:443 auth.docker.io:443";

/// The emulated Docker Hub's registry host (its access log is `logs/registry-1.docker.io.log`).
pub(crate) const HUB: &str = "registry-1.docker.io";
