//! `yrdctl`: the yrd-mesh command line. Parses the arguments and hands them
//! to the library, so that tests run the same code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, sets up logging and runs the command.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = yrdctl::cli::Cli::parse();
    if !cli.command.installs_telemetry() {
        yrdctl::init_logging();
    }
    yrdctl::run(cli).await
}
