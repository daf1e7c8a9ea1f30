use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::settings::ALL;
use crate::access::identity::Identity;
use crate::access::rules::Action;
use crate::cli::Cli;
use crate::config::{AuthMode, Config, ConfigError, LogFormat, MirrorPolicy, Sources};
use crate::registry::host::RegistryHost;

/// Client access: htpasswd, client certificates, the auth cache, access rules, tunnel allow list.
mod access;
/// `REGISTRIES` entries spelled `http://` (plain-HTTP upstreams).
mod plain_http;
/// `REGISTRIES`, `AUTH_REGISTRIES`, per-registry overrides, upstream auth; no secret in errors.
mod registries;
/// `NAME_FILE` for secrets.
mod secret_files;
/// The seed's variables that are not needed: accepted with a warning.
mod seed;
/// Defaults, every variable and flag, and the precedence flag > env > file > default.
mod sources;
/// The TLS listener and the upstream CA file.
mod tls;
/// Single values: tag tiers, malformed values, unknown variables and keys, file value types.
mod values;

const SECRET: &str = "s3cr3t-Pa55";

/// Command-line arguments after the program name.
type Argv<'a> = &'a [&'a str];
/// Environment variables.
type Pairs<'a> = &'a [(&'a str, &'a str)];
/// Expected credentials: host, user, password.
type Triples<'a> = &'a [(&'a str, &'a str, &'a str)];

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(args: &[&str], pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let cli =
        Cli::try_parse_from(std::iter::once("registry-proxy").chain(args.iter().copied())).unwrap();
    Config::load(Sources {
        flags: &cli.serve,
        env: &env(pairs),
    })
}

fn load_ok(args: &[&str], pairs: &[(&str, &str)]) -> Config {
    match load(args, pairs) {
        Ok(config) => config,
        Err(e) => panic!("args {args:?} env {pairs:?}: {e}"),
    }
}

fn load_err(args: &[&str], pairs: &[(&str, &str)]) -> String {
    match load(args, pairs) {
        Ok(config) => panic!("args {args:?} env {pairs:?} loaded: {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// Loads a config file holding `text` (`--config FILE`, nothing else); the error it gives.
fn toml_err(text: &str) -> String {
    let file = toml_file(text);
    load_err(&["--config", file.path().to_str().unwrap()], &[])
}

/// Loads a config file holding `text` (`--config FILE`, nothing else).
fn toml_ok(text: &str) -> Config {
    let file = toml_file(text);
    load_ok(&["--config", file.path().to_str().unwrap()], &[])
}

/// Each config file text in `bad` is refused with an error containing its paired text.
fn assert_files_refused(bad: &[(&str, &str)]) {
    for (text, want) in bad {
        let e = toml_err(text);
        assert!(e.contains(want), "{text}: {e}");
    }
}

fn host(s: &str) -> RegistryHost {
    RegistryHost::parse(s).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const DAY: u64 = 86_400;
