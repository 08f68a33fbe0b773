//! `yrd-bench`: the benchmark harness of yrd-mesh. Run without arguments
//! (`cargo run --release -p yrd-bench`) it prepares a workspace (the mesh
//! CA, demo data, configs), starts the mesh as separate processes over
//! mutual TLS, measures every comparison of BENCHMARKS.md round by round,
//! prints figures and ratios and writes a JSON report. `--smoke` runs the
//! same in a few seconds' worth of work, for CI: it checks that everything
//! runs and that every variant delivers the same rows, and asserts no
//! timing. The `stub-node` and `hop` subcommands are the floor's processes,
//! started by the harness itself.

#![forbid(unsafe_code)]

mod client;
mod floor;
mod otlp;
mod procs;
mod run;
mod setup;
mod stats;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "yrd-bench", version, about)]
struct Cli {
    /// The workspace: certificates, generated stores (kept between runs),
    /// this run's configs and logs.
    #[arg(long, default_value = "target/yrd-bench")]
    dir: PathBuf,
    /// Where the JSON report goes (default: <dir>/report.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A short run that checks that every part works and agrees.
    #[arg(long)]
    smoke: bool,
    /// Rounds of every comparison (default 5; 1 in smoke mode).
    #[arg(long)]
    rounds: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// An in-memory stub node serving captured rows (started by the harness).
    StubNode {
        /// Where to listen.
        #[arg(long)]
        listen: SocketAddr,
        /// The region it stands for.
        #[arg(long)]
        region: String,
        /// The captured rows.
        #[arg(long)]
        rows: PathBuf,
        #[command(flatten)]
        tls: floor::TlsArgs,
    },
    /// The naive pass-through hop (started by the harness).
    Hop {
        /// Where to listen.
        #[arg(long)]
        listen: SocketAddr,
        /// The node (or stub) behind it.
        #[arg(long)]
        upstream: SocketAddr,
        #[command(flatten)]
        tls: floor::TlsArgs,
        /// The certificate it presents upstream.
        #[arg(long)]
        client_cert: Option<PathBuf>,
        /// Its key.
        #[arg(long)]
        client_key: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("yrd-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::StubNode {
                listen,
                region,
                rows,
                tls,
            }) => floor::run_stub(listen, region, &rows, &tls).await.map(|()| true),
            Some(Command::Hop {
                listen,
                upstream,
                tls,
                client_cert,
                client_key,
            }) => {
                let client = floor::TlsArgs {
                    ca: tls.ca.clone(),
                    cert: client_cert,
                    key: client_key,
                };
                floor::run_hop(listen, upstream, &client, &tls).await.map(|()| true)
            }
            None => {
                let mut settings = if cli.smoke {
                    run::Settings::smoke()
                } else {
                    run::Settings::full()
                };
                if let Some(r) = cli.rounds {
                    settings.rounds = r.max(1);
                }
                let out = cli.out.unwrap_or_else(|| cli.dir.join("report.json"));
                run::run(&cli.dir, &out, settings).await
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("yrd-bench: a part failed, or variants did not deliver the same rows (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("yrd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
