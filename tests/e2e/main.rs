//! End-to-end tests: the real `registry-proxy` binary between real clients (skopeo, ctr, podman,
//! dockerd) and real upstreams (the Debian distribution registry with TLS, Basic auth, token auth and
//! an emulated Docker Hub) started by `tests/e2e/env/up.sh`.
//!
//! They run only with `REGISTRY_PROXY_E2E=1` (set by `scripts/test`); otherwise every test prints
//! why it is skipped and passes. Each test starts its own proxy (own port, cache and CA) and proves
//! cache hits from the upstream registries' own access logs, as before/after deltas filtered by the
//! repositories it pulls (`harness::claim` keeps two tests from counting the same repository at once).
//!
//! - `connect`: issue 2 — `HTTPS_PROXY` + the proxy CA (CONNECT interception), every client pulling twice.
//! - `mirror`: issue 4 — mirror modes with generated client configs (`registry-proxy setup …`), the
//!   second pull in another mode than the first.
//! - `access`: issue 7 — client authentication (CONNECT `Proxy-Authorization`, mirror-mode login),
//!   `verify` mode for private registries (refused clients get no byte, cold, warm or in flight) and
//!   the access rules of the config file.
//! - `image`: issue 8 — the container image built without registry access (`scripts/build-image`),
//!   checked by `scripts/image-smoke`, pulled through, restarted on the same volumes and pulled again.
//! - `replicas`: issue 9 — three replicas sharing one bucket (`moto_server`) and their downloads
//!   (`PEERS`): skopeo and ctr through different replicas fetch each blob from upstream once, and a
//!   replica on an empty disk serves the image from the bucket alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod access;
mod connect;
mod harness;
mod image;
mod mirror;
mod replicas;
