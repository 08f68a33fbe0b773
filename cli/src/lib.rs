//! `yrdctl`, the yrd-mesh command line, as a library: `main` only parses
//! the arguments and calls [`run`].
//!
//! - [`pki`]: `yrdctl pki init|issue`, the mesh CA and certificates;
//! - [`up`]: `yrdctl up`, a local mesh of four region nodes and a gateway in
//!   one process;
//! - [`catalog`], [`query`], [`aggregate`]: the client commands, which talk
//!   to a gateway through [`client`] with the settings of a [`profile`] and
//!   print with [`output`];
//! - [`traces`]: `yrdctl traces`, recent traces read from the admin
//!   endpoints with the HTTP client of [`admin`];
//! - [`audit`]: `yrdctl audit verify|show`, audit logs checked and listed.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod aggregate;
pub mod audit;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod output;
pub mod pki;
pub mod profile;
pub mod query;
pub mod traces;
pub mod up;

use std::process::ExitCode;

use cli::{Cli, Command, PkiCommand};

/// The log filter when `RUST_LOG` is not set: our own progress, and only
/// warnings from the libraries (the in-process nodes and gateway included).
const DEFAULT_LOG_FILTER: &str = "warn,yrdctl=info";

/// Logs to stderr, so that stdout carries only a command's answer and can
/// be piped. Not for `yrdctl up`, which installs the mesh's telemetry
/// (logs included) itself: see [`cli::Command::installs_telemetry`].
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only on a terminal: a redirected log stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs one command and turns its outcome into the process's exit code,
/// printing any error on stderr.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`yrdctl query ... | head`) is not an
        // error of ours: stop quietly, as Unix tools do.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yrdctl: {}", error_lines(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, like `{:#}`, but without the
/// repetition of errors that print their source in their own message too
/// (`path: No such file`, then `No such file` again).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        match parts.last_mut() {
            Some(last) if last.ends_with(&text) => {}
            Some(last) if text.starts_with(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    parts.join(": ")
}

/// [`error_text`] as printed for people: each of its lines shown through
/// [`output::escape_text`], so that the text of a server (a status
/// message, an endpoint's answer) quoted in an error cannot send escape
/// sequences or bidi controls to the terminal. The line breaks between
/// the lines are kept.
pub fn error_lines(e: &anyhow::Error) -> String {
    error_text(e)
        .split('\n')
        .map(output::escape_text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the command `cli` names.
async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        profile,
        timeout,
        csv_raw,
        command,
    } = cli;
    output::set_csv_raw(csv_raw);
    let connection = || client::Connection::new(profile.as_deref(), timeout);
    match command {
        Command::Pki(PkiCommand::Init(args)) => pki::init(&args),
        Command::Pki(PkiCommand::Issue(args)) => pki::issue(&args),
        Command::Up(args) => up::run(&args).await,
        Command::Catalog(args) => catalog::catalog(&connection()?, &args).await,
        Command::Regions(args) => catalog::regions(&connection()?, &args).await,
        Command::Query(args) => query::query(&connection()?, &args).await,
        Command::Explain(args) => query::explain(&connection()?, &args).await,
        Command::Aggregate(args) => aggregate::aggregate(&connection()?, &args).await,
        Command::Traces(args) => traces::traces(profile.as_deref(), timeout, &args).await,
        Command::Audit(command) => audit::run(&command, connection).await,
        Command::Access(command) => access::run(&connection()?, &command).await,
    }
}

/// Whether the error comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause.downcast_ref::<csv::Error>().is_some_and(
                |c| matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe),
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_causes_are_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        #[derive(Debug)]
        struct PathError(std::io::Error);
        impl std::fmt::Display for PathError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "/x/ca.pem: {}", self.0)
            }
        }
        impl std::error::Error for PathError {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(PathError(io)).context("loading the CA");
        assert_eq!(error_text(&e), "loading the CA: /x/ca.pem: No such file");
        let e = anyhow::anyhow!("tcp connect error: refused").context("tcp connect error");
        assert_eq!(error_text(&e), "tcp connect error: refused");
    }

    #[test]
    fn a_status_message_is_printed_escaped() {
        let status = tonic::Status::internal("boom\x1b[31m\u{202e}\nyrdctl: all good");
        let e = client::status_error(status).context("region 320000");
        let text = error_lines(&e);
        assert_eq!(
            text,
            "region 320000: the gateway answered INTERNAL: boom\\x1b[31m\\u{202e}\\nyrdctl: all good"
        );
        // Other errors are escaped line by line, their own line breaks kept.
        let e = anyhow::anyhow!("no admin endpoint answered:\n  http://a: \u{202e}x\x1b]0;t\x07");
        assert_eq!(
            error_lines(&e),
            "no admin endpoint answered:\n  http://a: \\u{202e}x\\x1b]0;t\\x07"
        );
    }
}
