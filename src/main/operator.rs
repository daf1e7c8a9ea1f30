//! The operator commands at the edge: `cache ls`, `cache purge`, `warm` — reading flags, the
//! environment and stdin, printing tables, JSON and summaries, choosing exit codes. The work is
//! the library's (`cache::list`, `cache::purge`, `warm`).

use std::collections::HashMap;
use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use registry_proxy::cache::store::{HyperConnector, S3Store};
use registry_proxy::cache::{PurgeRequest, PurgeTarget};
use registry_proxy::cli::{LsArgs, PurgeArgs, WarmArgs};
use registry_proxy::config::{Config, Sources, Storage};
use registry_proxy::registry::image::ImageRef;
use registry_proxy::registry::manifest::Platform;
use registry_proxy::secret::Secret;
use registry_proxy::warm::{self, Credentials};

/// How long `warm --proxy` waits for a response head or a stalled body.
const WARM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The shared bucket of `STORAGE=s3://…`, if set.
fn bucket(config: &Config) -> anyhow::Result<Option<S3Store>> {
    let Storage::S3(s3) = &config.storage else {
        return Ok(None);
    };
    let policy = std::sync::Arc::new(registry_proxy::access::tunnel::TunnelPolicy::new(
        config.tunnel_allow.clone(),
        Vec::new(),
    ));
    let http = HyperConnector::for_config(config, s3, policy)?;
    Ok(Some(S3Store::new(s3, http)?))
}

pub(crate) fn ls(
    args: &LsArgs,
    env: &HashMap<String, String>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(Sources {
        flags: &args.serve,
        env,
    })?;
    let catalog = if args.bucket {
        let Some(store) = runtime.block_on(async { bucket(&config) })? else {
            bail!("cache ls --bucket: STORAGE is not an s3:// bucket");
        };
        let name = match &config.storage {
            Storage::S3(s3) => format!("s3://{}/{}", s3.bucket, s3.prefix),
            Storage::Disk => String::new(),
        };
        runtime
            .block_on(registry_proxy::cache::bucket_ops::list_bucket(
                &store, &name,
            ))
            .context("cache ls --bucket")?
    } else {
        registry_proxy::cache::list(&config.cache_dir).context("cache ls")?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
    } else {
        print!("{}", catalog.table());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn purge(
    args: &PurgeArgs,
    env: &HashMap<String, String>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(Sources {
        flags: &args.serve,
        env,
    })?;
    registry_proxy::telemetry::init_logging(config.log_format, config.debug);
    let target = args
        .target
        .as_deref()
        .map(PurgeTarget::parse)
        .transpose()
        .context("cache purge")?;
    let older_than = args
        .older_than
        .as_deref()
        .map(registry_proxy::config::parse_duration)
        .transpose()
        .context("--older-than")?;
    let request = PurgeRequest {
        target,
        older_than,
        dry_run: args.dry_run,
    };
    let local = registry_proxy::cache::purge(&config.cache_dir, &request);
    let report = match runtime.block_on(async { bucket(&config) })? {
        None => local,
        Some(store) => {
            let in_bucket = runtime.block_on(registry_proxy::cache::bucket_ops::purge_bucket(
                &store, &request,
            ));
            registry_proxy::cache::bucket_ops::combine(local, Some(in_bucket), request.dry_run)
        }
    }
    .context("cache purge")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn warm(
    args: &WarmArgs,
    env: &HashMap<String, String>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    let mut names = args.images.clone();
    if let Some(file) = &args.file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("--file {}", file.display()))?;
        names.extend(warm::parse_image_list(&text));
    }
    if names.is_empty() {
        bail!("nothing to warm: name images, or a file of them with --file");
    }
    let images = names
        .iter()
        .map(|n| ImageRef::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let progress = warm::progress::for_stderr();
    let summary = match &args.proxy {
        Some(url) => {
            let proxy = registry_proxy::setup::ProxyUrl::parse(url).context("--proxy")?;
            if proxy.is_https() {
                bail!("--proxy: use the proxy's plain-HTTP listener (http://host:port)");
            }
            let options = warm::Options {
                proxy: proxy.authority(),
                platform,
                credentials: credentials(args, env)?,
                timeout: WARM_TIMEOUT,
            };
            runtime.block_on(warm::warm(&options, &images, progress.as_ref()))
        }
        None => {
            let config = Config::load(Sources {
                flags: &args.serve,
                env,
            })?;
            if config.debug {
                registry_proxy::telemetry::init_logging(config.log_format, config.debug);
            }
            runtime.block_on(warm::warm_cache_dir(
                config,
                platform,
                &images,
                progress.as_ref(),
            ))?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(if summary.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `--user` and the password from stdin (`--password-stdin`), else `REGISTRY_PROXY_USER` and
/// `REGISTRY_PROXY_PASSWORD`.
fn credentials(
    args: &WarmArgs,
    env: &HashMap<String, String>,
) -> anyhow::Result<Option<Credentials>> {
    let user = args
        .user
        .clone()
        .or_else(|| env.get("REGISTRY_PROXY_USER").cloned())
        .filter(|u| !u.is_empty());
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("--password-stdin")?;
        Some(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        env.get("REGISTRY_PROXY_PASSWORD").cloned()
    };
    match (user, password) {
        (Some(user), Some(password)) => Ok(Some(Credentials {
            user,
            password: Secret::new(password),
        })),
        (Some(_), None) => {
            bail!("--user needs a password: --password-stdin or REGISTRY_PROXY_PASSWORD")
        }
        (None, Some(_)) if args.password_stdin => bail!("--password-stdin needs --user"),
        _ => Ok(None),
    }
}
