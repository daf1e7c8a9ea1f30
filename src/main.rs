//! The `registry-proxy` binary: parse flags and environment, then run.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use registry_proxy::cache::CacheError;
use registry_proxy::cli::{CacheCommand, Cli, Command};
use registry_proxy::config::{Config, Sources};

#[path = "main/operator.rs"]
mod operator;

/// Exit status of a command given a directory that is not a cache (a usage error).
const NOT_A_CACHE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("registry-proxy: {e:#}");
            match e.downcast_ref::<CacheError>() {
                Some(CacheError::NotACache { .. }) => ExitCode::from(NOT_A_CACHE),
                _ => ExitCode::FAILURE,
            }
        }
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
            registry_proxy::telemetry::init_logging(config.log_format, config.debug);
            let report =
                registry_proxy::cache::verify(&config.cache_dir).context("cache verify")?;
            println!("{report}");
            if report.corrupt > 0 {
                anyhow::bail!("{} corrupt entries removed", report.corrupt);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Cache {
            command: CacheCommand::Ls(args),
        }) => operator::ls(&args, &env),
        Some(Command::Cache {
            command: CacheCommand::Purge(args),
        }) => operator::purge(&args, &env),
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
    }
}

fn serve(
    args: &registry_proxy::cli::ServeArgs,
    env: &HashMap<String, String>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let config = Config::load(Sources { flags: args, env })?;
    registry_proxy::telemetry::init_logging(config.log_format, config.debug);
    runtime.block_on(async {
        let proxy = registry_proxy::Proxy::bind(config).await?;
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
