//! The `registry-proxy` binary: parse flags and environment, then run.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use registry_proxy::cli::{CacheCommand, Cli, Command};
use registry_proxy::config::{Config, S3Settings, Sources, Storage};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("registry-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        None => serve(&cli.serve, &env, &runtime),
        Some(Command::Serve(args)) => serve(&args, &env, &runtime),
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
            Ok(())
        }
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
            Ok(())
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
