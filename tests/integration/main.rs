//! In-process integration tests: the proxy on 127.0.0.1:0 in front of a scriptable fake upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod access;
mod admin;
mod auth;
mod blobs;
mod bucket;
mod bucket_gc;
mod bucket_purge;
mod cache_crash;
mod cache_disk;
mod cache_ops;
mod cache_verify;
mod connect;
mod errors;
mod fake;
mod harness;
mod images;
mod keepalive;
mod logging;
mod manifests;
mod mirror;
mod reload;
mod replicas;
#[path = "../support/seed_ca.rs"]
mod seed_ca;
mod setup;
mod startup;
mod status;
mod streaming;
mod tunnel;
mod warm;
mod zero_copy;
