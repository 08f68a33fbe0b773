//! `yrd-gateway`: the federation endpoint for applications.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use yrd_gateway::GatewayConfig;

/// The yrd-mesh gateway.
#[derive(Debug, Parser)]
#[command(name = "yrd-gateway", version, about)]
struct Cli {
    /// The gateway's TOML configuration file.
    #[arg(long, env = "YRD_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "YRD_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yrd-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&cli.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let gateway = yrd_gateway::start(config).await?;
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        tracing::info!("shutting down");
        gateway.shutdown().await?;
        Ok(())
    })
}
