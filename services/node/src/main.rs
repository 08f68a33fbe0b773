//! `yrd-node`: serve a region's datasets, import files, or load demo data.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use yrd_datasets::demo::DemoSpec;
use yrd_node::import::{self, Format};
use yrd_node::{NodeConfig, server};

/// A yrd-mesh region node.
#[derive(Debug, Parser)]
#[command(name = "yrd-node", version, about)]
struct Cli {
    /// The node's TOML configuration file.
    #[arg(long, global = true, env = "YRD_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format (default: the config's telemetry.log_format, text).
    #[arg(long, global = true, value_enum, env = "YRD_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Confirms the config's `insecure = true` (plaintext, no client
    /// certificates, loopback only; development only): a config file alone
    /// cannot turn it on. Deliberately not read from the environment.
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the datasets over gRPC (the default).
    Serve,
    /// Import a CSV or JSON Lines file into a dataset: all rows or none.
    Import {
        /// Dataset id, such as `enterprise`.
        #[arg(long)]
        dataset: String,
        /// File format; by default taken from the file's extension.
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
        /// The file.
        file: PathBuf,
    },
    /// Replace every dataset with this region's deterministic demo data.
    Generate {
        /// Seed (default: the config's demo.seed); use the same on every region.
        #[arg(long)]
        seed: Option<u64>,
        /// Scale (default: the config's demo.scale); 1 gives 20,000 enterprises.
        #[arg(long)]
        scale: Option<f64>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FileFormat {
    Csv,
    Jsonl,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("yrd-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs logs and traces for this process: service `yrd-node`, the
/// node's region on every span's resource.
fn init_telemetry(config: &NodeConfig, format: Option<LogFormat>) -> anyhow::Result<yrd_telemetry::Telemetry> {
    let mut t = config.telemetry.clone();
    if t.service_name.is_empty() || t.service_name == yrd_telemetry::TelemetryConfig::default().service_name {
        t.service_name = "yrd-node".into();
    }
    t.region.get_or_insert_with(|| config.region.clone());
    match format {
        Some(LogFormat::Json) => t.log_format = yrd_telemetry::LogFormat::Json,
        Some(LogFormat::Text) => t.log_format = yrd_telemetry::LogFormat::Text,
        None => {}
    }
    Ok(yrd_telemetry::init(&t)?)
}

/// What is checked before serving, beyond the config's own validation:
/// insecure mode only with `--insecure` (and `--insecure` only with it),
/// and the certificate's identity against the config.
fn check_start(config: &NodeConfig, path: &std::path::Path, insecure_flag: bool) -> anyhow::Result<()> {
    let shown = path.display().to_string();
    yrd_server::check_insecure_flag(&shown, config.insecure, insecure_flag)?;
    config.check_certificate(&shown)?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config.context("--config is required (or set YRD_NODE_CONFIG)")?;
    let config = NodeConfig::load(&path)?;
    let command = cli.command.unwrap_or(Command::Serve);
    if matches!(command, Command::Serve) {
        // Import and generate serve nothing: only serving is checked.
        check_start(&config, &path, cli.insecure)?;
    }
    let telemetry = init_telemetry(&config, cli.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = match command {
        Command::Serve => runtime.block_on(async {
            // Installed before start: a signal that comes while the store
            // opens waits for a clean shutdown instead of killing the process.
            let mut signals = yrd_server::ShutdownSignals::install()?;
            let node = server::start(config).await?;
            let signal = signals.recv().await?;
            tracing::info!(signal, "shutting down");
            node.shutdown().await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Import { dataset, format, file } => {
            let format = match format {
                Some(FileFormat::Csv) => Format::Csv,
                Some(FileFormat::Jsonl) => Format::JsonLines,
                None => Format::from_path(&file)
                    .context("cannot tell the format from the file name; pass --format csv|jsonl")?,
            };
            let outcome = runtime.block_on(async {
                let store = server::open_store(&config).await?;
                import::import_file_with(store.as_ref(), &config.region, &dataset, &file, format, &config.import)
                    .await
                    .map_err(anyhow::Error::from)
            })?;
            if outcome.is_rejected() {
                // Bounded whatever the file: the first rows in full, then
                // one line per cause.
                eprint!(
                    "{}",
                    import::rejection_report(&outcome, config.import.max_rejections_shown)
                );
                Ok(ExitCode::FAILURE)
            } else {
                println!("imported {} rows", outcome.inserted);
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Generate { seed, scale } => {
            let spec = DemoSpec {
                seed: seed.unwrap_or(config.demo.seed),
                scale: scale.unwrap_or(config.demo.scale),
            };
            let loaded = runtime.block_on(async {
                let store = server::open_store(&config).await?;
                import::generate(store.as_ref(), &config.region, &spec)
                    .await
                    .map_err(anyhow::Error::from)
            })?;
            for (dataset, rows) in loaded {
                println!("{dataset}: {rows} rows");
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    // Flush the spans still queued for export (bounded wait).
    if let Err(e) = telemetry.shutdown() {
        eprintln!("yrd-node: {e}");
    }
    outcome
}
