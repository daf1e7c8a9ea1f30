//! The `registry-proxy` binary: parse flags and environment, then run.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use registry_proxy::cache::CacheError;
use registry_proxy::cli::{CacheCommand, Cli, Command};
use registry_proxy::config::{Config, S3Settings, Sources, Storage};

#[path = "main/operator.rs"]
mod operator;

/// Exit status of a command given a directory that is not a cache (a usage error).
const NOT_A_CACHE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The one place a fatal error is reported: nothing below `main` logs it as well.
            eprintln!("registry-proxy: {}", one_line(&e));
            match e.downcast_ref::<CacheError>() {
                Some(CacheError::NotACache { .. }) => ExitCode::from(NOT_A_CACHE),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes on one line. Many errors already include their cause in their own
/// message (`"{path}: {source}"`); a cause whose text is already shown is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text.replace('\n', " ")
}

/// Logging on, then the configuration's warnings, once.
fn start_logging(config: &Config) {
    registry_proxy::telemetry::init_logging(config.log_format, config.debug);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        None => serve(&cli.serve, &env, &runtime).map(|()| ExitCode::SUCCESS),
        Some(Command::Serve(args)) => serve(&args, &env, &runtime).map(|()| ExitCode::SUCCESS),
        Some(Command::Cache {
            command: CacheCommand::Verify(args),
        }) => {
            let config = Config::load(Sources {
                flags: &args,
                env: &env,
            })?;
            start_logging(&config);
            let report =
                registry_proxy::cache::verify(&config.cache_dir).context("cache verify")?;
            println!("{report}");
            let mut corrupt = report.corrupt;
            if let Storage::S3(s3) = &config.storage {
                let report = runtime
                    .block_on(verify_bucket(&config, s3))
                    .context("cache verify: object store")?;
                println!("object store s3://{}/{}: {report}", s3.bucket, s3.prefix);
                corrupt += report.corrupt;
            }
            if corrupt > 0 {
                anyhow::bail!("{corrupt} corrupt entries removed");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Cache {
            command: CacheCommand::Ls(args),
        }) => operator::ls(&args, &env, &runtime),
        Some(Command::Cache {
            command: CacheCommand::Purge(args),
        }) => operator::purge(&args, &env, &runtime),
        Some(Command::Warm(args)) => operator::warm(&args, &env, &runtime),
        Some(Command::Setup(args)) => {
            let config = Config::load(Sources {
                flags: &args.serve,
                env: &env,
            })?;
            let request = registry_proxy::setup::Request {
                client: args.client,
                mode: args.mode,
                proxy: args.proxy.clone(),
                prefix: args.prefix.clone(),
            };
            print!("{}", registry_proxy::setup::render(&config, &request)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Settings { markdown }) => {
            use registry_proxy::config::settings;
            if markdown {
                print!("{}", settings::markdown());
            } else {
                for s in settings::ALL.iter().filter(|s| s.documented()) {
                    let default = settings::shown_default(s).unwrap_or_else(|| "none".into());
                    println!("{:<31} {:<33} {default}", s.name, s.flag());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(
    args: &registry_proxy::cli::ServeArgs,
    env: &HashMap<String, String>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let config = Config::load(Sources { flags: args, env })?;
    start_logging(&config);
    let (reload_args, reload_env) = (args.clone(), env.clone());
    runtime.block_on(async {
        let mut proxy = registry_proxy::Proxy::bind(config).await?;
        proxy.set_reloader(Box::new(move || {
            Config::load(Sources {
                flags: &reload_args,
                env: &reload_env,
            })
        }));
        if let Some(addr) = proxy.local_addr() {
            tracing::info!(%addr, "registry-proxy listening");
        }
        if let Some(addr) = proxy.tls_local_addr() {
            tracing::info!(%addr, "registry-proxy TLS mirror listener");
        }
        tokio::select! {
            () = proxy.run() => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
            () = terminate() => tracing::info!("terminated, stopping"),
        }
        Ok(())
    })
}

/// Rehashes every blob and manifest in the object store, removing the corrupt ones.
async fn verify_bucket(
    config: &Config,
    s3: &S3Settings,
) -> anyhow::Result<registry_proxy::cache::VerifyReport> {
    use registry_proxy::cache::store::{HyperConnector, S3Store, verify_store};
    let policy = std::sync::Arc::new(registry_proxy::access::tunnel::TunnelPolicy::new(
        config.tunnel_allow.clone(),
        Vec::new(),
    ));
    let store = S3Store::new(s3, HyperConnector::for_config(config, s3, policy)?)?;
    Ok(verify_store(&store).await?)
}

async fn terminate() {
    #[cfg(unix)]
    {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await
}
