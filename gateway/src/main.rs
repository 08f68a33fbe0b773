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
    /// Log format (default: the config's telemetry.log_format, text).
    #[arg(long, value_enum, env = "YRD_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Confirms the config's `insecure = true` (plaintext, no client
    /// certificates, loopback only; development only): a config file alone
    /// cannot turn it on. Deliberately not read from the environment.
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yrd-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What is checked before serving, beyond the config's own validation:
/// insecure mode only with `--insecure` (and `--insecure` only with it),
/// and the certificate's identity against the config.
fn check_start(config: &GatewayConfig, path: &std::path::Path, insecure_flag: bool) -> anyhow::Result<()> {
    let shown = path.display().to_string();
    yrd_server::check_insecure_flag(&shown, config.insecure, insecure_flag)?;
    config.check_certificate(&shown)?;
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&cli.config)?;
    check_start(&config, &cli.config, cli.insecure)?;
    let mut t = config.telemetry.clone();
    if t.service_name == yrd_telemetry::TelemetryConfig::default().service_name {
        t.service_name = "yrd-gateway".into();
    }
    match cli.log_format {
        Some(LogFormat::Json) => t.log_format = yrd_telemetry::LogFormat::Json,
        Some(LogFormat::Text) => t.log_format = yrd_telemetry::LogFormat::Text,
        None => {}
    }
    let telemetry = yrd_telemetry::init(&t)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let served: anyhow::Result<()> = runtime.block_on(async {
        // Installed before start: a signal that comes during start waits
        // for a clean shutdown instead of killing the process.
        let mut signals = yrd_server::ShutdownSignals::install()?;
        let gateway = yrd_gateway::start(config).await?;
        let signal = signals.recv().await?;
        tracing::info!(signal, "shutting down");
        gateway.shutdown().await?;
        Ok(())
    });
    // Flush the spans still queued for export (bounded wait).
    if let Err(e) = telemetry.shutdown() {
        eprintln!("yrd-gateway: {e}");
    }
    served
}
