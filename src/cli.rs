//! The command line: `registry-proxy [serve] [FLAGS]`, `registry-proxy cache verify|ls|purge`,
//! `registry-proxy warm IMAGE…`, `registry-proxy setup CLIENT --proxy URL`. Every setting flag is kept as the raw string the user
//! typed; `config::load` parses flag, environment variable and config-file values with one parser, so
//! all three fail with the same message.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::settings::{self, Kind, Setting};

/// A caching proxy for container registries.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "registry-proxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for running the proxy when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The command to run: `serve` with the top-level flags when no subcommand was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve(ServeArgs),
    /// Maintain the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print the configuration a client needs to use this proxy.
    Setup(SetupArgs),
    /// List every setting with its flag, default and meaning.
    Settings {
        /// As the Markdown table of the README.
        #[arg(long)]
        markdown: bool,
    },
    /// Pre-pull images into the cache: through a running proxy (--proxy) or straight into a cache
    /// directory (--cache-dir, or CACHE_DIR).
    Warm(WarmArgs),
}

/// Every `cache` subcommand is safe while a proxy runs on the same directory: nothing in flight
/// (`tmp/`) is touched.
#[derive(Debug, Clone, Subcommand)]
pub enum CacheCommand {
    /// Check every cached blob against its digest; remove the corrupt ones.
    Verify(ServeArgs),
    /// List registries, repositories, tags and images with sizes, blob sharing and last use.
    Ls(LsArgs),
    /// Remove images (by reference, repository glob or age) and every blob and manifest no other
    /// image uses.
    Purge(PurgeArgs),
}

/// `registry-proxy cache ls [--json] [--bucket]`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// Print JSON (schema `registry-proxy.cache-ls.v1`) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// List what the shared bucket holds (`STORAGE=s3://…`) instead of the local disk.
    #[arg(long)]
    pub bucket: bool,
    /// Settings (for `CACHE_DIR`, and `STORAGE` and the `S3_*` settings with --bucket).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `registry-proxy cache purge [IMAGE|REPO-GLOB] [--older-than AGE] [--dry-run]`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// An image (`quay.io/org/app:tag`, `alpine`, `…@sha256:…`) or a repository glob
    /// (`quay.io/org/*`).
    #[arg(value_name = "IMAGE|REPO-GLOB")]
    pub target: Option<String>,
    /// Only images not used for this long (e.g. 30d); alone, every such image.
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Settings (for `CACHE_DIR`; with `STORAGE=s3://…` the shared bucket is purged too).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `registry-proxy warm [--proxy URL | --cache-dir DIR] [--platform P] [--file FILE] IMAGE…`.
#[derive(Debug, Clone, Args)]
pub struct WarmArgs {
    /// Images to pre-pull (`alpine:3`, `quay.io/org/app:1.2`, `…@sha256:…`).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// A running proxy's plain-HTTP address, e.g. http://proxy.internal:3128 (default: warm
    /// straight into CACHE_DIR with an in-process proxy).
    #[arg(long, value_name = "URL", conflicts_with = "CACHE_DIR")]
    pub proxy: Option<String>,
    /// Only this platform of multi-platform images, e.g. linux/arm64 (default: all).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Read image references from this file: one per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Proxy user, if the proxy asks for a login [env: REGISTRY_PROXY_USER]
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Read the proxy user's password from stdin [env: REGISTRY_PROXY_PASSWORD]
    #[arg(long)]
    pub password_stdin: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Settings for --cache-dir mode (upstreams, credentials, timeouts), as `serve` takes them.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `registry-proxy setup CLIENT --proxy URL [--mode mirror|connect]`.
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// The client to configure.
    #[arg(value_enum)]
    pub client: SetupClient,
    /// How clients reach the proxy, e.g. `http://proxy.internal:3128`.
    #[arg(long, value_name = "URL")]
    pub proxy: String,
    /// `mirror`: registry-mirror / path-prefix configuration; `connect`: HTTPS_PROXY plus the proxy CA.
    #[arg(long, value_enum, default_value_t = SetupMode::Mirror)]
    pub mode: SetupMode,
    /// Write the files under this directory instead of `/` (the script's `PREFIX` variable).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub prefix: String,
    /// Settings (for `REGISTRIES`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Container clients `setup` knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetupClient {
    Docker,
    Containerd,
    Crio,
    Podman,
    K3s,
    Kind,
    /// The seed's `/setup/systemd`: Docker through `HTTPS_PROXY` with the proxy CA installed.
    Systemd,
}

/// How a client is pointed at the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetupMode {
    /// Registry mirror / path prefix (`/v2/...` on the listener).
    Mirror,
    /// `HTTPS_PROXY` (CONNECT) with the proxy CA trusted.
    Connect,
}

/// Every setting as a flag, built from the settings table (`config::settings::ALL`): the flag of
/// `CACHE_MAX_SIZE` is `--cache-max-size`, and a secret's `NAME_FILE` is `--name-file`. Each flag
/// overrides the environment variable, which overrides the config file, which overrides the
/// default. Boolean flags take an optional value: `--allow-push` or `--allow-push=false`. Values are
/// kept as the raw text typed; `config::load` parses them.
#[derive(Clone, Default)]
pub struct ServeArgs {
    /// Raw values by environment variable name (`NAME` or a secret's `NAME_FILE`).
    values: BTreeMap<String, String>,
}

impl ServeArgs {
    /// The raw value of the flag for the setting whose environment variable is `env_name`
    /// (`"CACHE_MAX_SIZE"` → `--cache-max-size`), if given. `None` for unknown names.
    pub fn get(&self, env_name: &str) -> Option<&str> {
        self.values.get(env_name).map(String::as_str)
    }

    /// Every flag argument: each setting, and `NAME_FILE` for each secret.
    fn args() -> Vec<Arg> {
        let mut args = Vec::new();
        for setting in settings::ALL {
            args.push(setting_arg(setting));
            if let Some(file_variant) = setting.file_variant() {
                args.push(
                    Arg::new(file_variant.clone())
                        .long(
                            settings::flag_of(&file_variant)
                                .trim_start_matches('-')
                                .to_owned(),
                        )
                        .value_name("FILE")
                        .help(format!(
                            "Read {} from this file [env: {file_variant}]",
                            setting.name
                        )),
                );
            }
        }
        args
    }

    /// The names (ids) of every flag argument.
    fn ids() -> impl Iterator<Item = String> {
        settings::ALL
            .iter()
            .flat_map(|s| std::iter::once(s.name.to_owned()).chain(s.file_variant()))
    }
}

/// The flag of one setting, with its help, environment variable and default.
fn setting_arg(setting: &Setting) -> Arg {
    let mut tail = format!("[env: {}]", setting.name);
    if let Some(default) = settings::shown_default(setting) {
        tail.push_str(&format!(" [default: {default}]"));
    }
    let short = format!("{} {tail}", setting.help);
    let long = if setting.details.is_empty() {
        short.clone()
    } else {
        format!("{}. {}\n{tail}", setting.help, setting.details)
    };
    let flag = setting.flag();
    let arg = Arg::new(setting.name)
        .long(flag.trim_start_matches('-').to_owned())
        .value_name(setting.value_name)
        .help(short)
        .long_help(long)
        .hide(!setting.documented());
    if setting.kind == Kind::Bool {
        arg.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
    } else {
        arg
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ServeArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for id in ServeArgs::ids() {
            if let Ok(Some(value)) = matches.try_get_one::<String>(&id) {
                self.values.insert(id, value.clone());
            }
        }
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(ServeArgs::args())
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.args(ServeArgs::args())
    }
}

/// Prints the flags that were given; secrets (and the files naming them) as `[REDACTED]`.
impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ServeArgs");
        for (name, value) in &self.values {
            if settings::is_secret(name) {
                s.field(name, &"[REDACTED]");
            } else {
                s.field(name, value);
            }
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::try_parse_from(["registry-proxy", "--listen", "127.0.0.1:1"]).unwrap();
        assert!(cli.command.is_none());
        match cli.into_command() {
            Command::Serve(args) => assert_eq!(args.get("LISTEN"), Some("127.0.0.1:1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subcommands() {
        let cli =
            Cli::try_parse_from(["registry-proxy", "serve", "--cache-max-size", "1g"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Serve(ref a)) if a.get("CACHE_MAX_SIZE") == Some("1g"))
        );

        let cli = Cli::try_parse_from(["registry-proxy", "cache", "verify", "--cache-dir", "/c"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Cache { command: CacheCommand::Verify(ref a) }) if a.get("CACHE_DIR") == Some("/c")
        ));

        let cli = Cli::try_parse_from([
            "registry-proxy",
            "setup",
            "k3s",
            "--proxy",
            "http://p:3128",
            "--registries",
            "quay.io",
        ])
        .unwrap();
        let Some(Command::Setup(setup)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(setup.client, SetupClient::K3s);
        assert_eq!(setup.mode, SetupMode::Mirror);
        assert_eq!(setup.proxy, "http://p:3128");
        assert_eq!(setup.serve.get("REGISTRIES"), Some("quay.io"));

        let cli = Cli::try_parse_from([
            "registry-proxy",
            "setup",
            "crio",
            "--proxy",
            "http://p:3128",
            "--mode",
            "connect",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Setup(ref s)) if s.mode == SetupMode::Connect));
    }

    #[test]
    fn operator_commands() {
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "cache",
            "ls",
            "--json",
            "--cache-dir",
            "/c",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Cache { command: CacheCommand::Ls(ref a) }) if a.json && a.serve.get("CACHE_DIR") == Some("/c")
        ));
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "cache",
            "purge",
            "quay.io/org/*",
            "--older-than",
            "30d",
            "--dry-run",
        ])
        .unwrap();
        let Some(Command::Cache {
            command: CacheCommand::Purge(purge),
        }) = cli.command
        else {
            panic!("{cli:?}")
        };
        assert_eq!(purge.target.as_deref(), Some("quay.io/org/*"));
        assert_eq!(purge.older_than.as_deref(), Some("30d"));
        assert!(purge.dry_run && !purge.json);
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "warm",
            "--proxy",
            "http://p:3128",
            "--platform",
            "linux/arm64",
            "--file",
            "list.txt",
            "alpine:3",
            "quay.io/x/y",
        ])
        .unwrap();
        let Some(Command::Warm(warm)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(warm.images, ["alpine:3", "quay.io/x/y"]);
        assert_eq!(warm.proxy.as_deref(), Some("http://p:3128"));
        assert_eq!(warm.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(warm.file, Some(PathBuf::from("list.txt")));
        assert!(
            Cli::try_parse_from([
                "registry-proxy",
                "warm",
                "--proxy",
                "http://p:3128",
                "--cache-dir",
                "/c",
                "x"
            ])
            .is_err(),
            "--proxy and --cache-dir exclude each other"
        );
    }

    #[test]
    fn rejects_bad_command_lines() {
        let bad: &[&[&str]] = &[
            &["registry-proxy", "setup", "docker"],
            &["registry-proxy", "setup", "lxc", "--proxy", "http://p"],
            &[
                "registry-proxy",
                "setup",
                "docker",
                "--proxy",
                "http://p",
                "--mode",
                "tunnel",
            ],
            &["registry-proxy", "--no-such-flag", "x"],
            &["registry-proxy", "--listen", "1.2.3.4:1", "serve"],
            &["registry-proxy", "--allow-push", "false"],
        ];
        for args in bad {
            assert!(Cli::try_parse_from(*args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn boolean_flags_take_an_optional_value() {
        let cli =
            Cli::try_parse_from(["registry-proxy", "--allow-push", "--verify-ssl=false"]).unwrap();
        assert_eq!(cli.serve.get("ALLOW_PUSH"), Some("true"));
        assert_eq!(cli.serve.get("VERIFY_SSL"), Some("false"));
        assert_eq!(cli.serve.get("DEBUG"), None);
    }

    #[test]
    fn every_flag_is_reachable_by_name() {
        for name in ServeArgs::ids() {
            let flag = format!("--{}=x", name.to_ascii_lowercase().replace('_', "-"));
            let cli = Cli::try_parse_from(["registry-proxy", flag.as_str()]).unwrap();
            assert_eq!(cli.serve.get(&name), Some("x"), "{flag}");
            // The same under `serve` and `cache verify`.
            let cli = Cli::try_parse_from(["registry-proxy", "serve", flag.as_str()]).unwrap();
            assert!(
                matches!(cli.command, Some(Command::Serve(ref a)) if a.get(&name) == Some("x")),
                "{flag}"
            );
        }
        assert_eq!(ServeArgs::default().get("NOT_A_SETTING"), None);
    }

    #[test]
    fn help_lists_every_documented_flag_with_env_and_default() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for setting in settings::ALL {
            let flag = setting.flag();
            let shown = help.contains(&format!("{flag} <")) || help.contains(&format!("{flag}[=<"));
            if !setting.documented() {
                assert!(!help.contains(&flag), "{flag} is hidden");
                continue;
            }
            assert!(shown, "{flag} missing from --help");
            assert!(
                help.contains(&format!("[env: {}]", setting.name)),
                "{flag}: no [env: ...]"
            );
            if let Some(default) = settings::shown_default(setting) {
                assert!(
                    help.contains(&format!("[default: {default}]")),
                    "{flag}: no [default: {default}]"
                );
            }
        }
        assert!(help.contains("--auth-registries-file"));
    }

    #[test]
    fn debug_hides_passwords() {
        let cli = Cli::try_parse_from([
            "registry-proxy",
            "--auth-registries",
            "a.test:u:hunter2",
            "--debug",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("[REDACTED]") && shown.contains("DEBUG"),
            "{shown}"
        );
    }

    #[test]
    fn config_file_flag() {
        let cli = Cli::try_parse_from(["registry-proxy", "--config", "/etc/rp.toml"]).unwrap();
        assert_eq!(cli.serve.get("CONFIG"), Some("/etc/rp.toml"));
    }
}
