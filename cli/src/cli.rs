//! The command line: every command, flag and default, as clap types.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

/// The yrd-mesh command line: bring a local mesh up, manage the PKI, query
/// the gateway.
#[derive(Debug, Parser)]
#[command(name = "yrdctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Client profile: the gateway's address and this application's
    /// certificate (`yrdctl up` writes DATA_DIR/profile.toml).
    #[arg(long, global = true, env = "YRD_PROFILE", value_name = "PATH")]
    pub profile: Option<PathBuf>,
    /// Time limit of each request to the gateway (or to an admin endpoint),
    /// such as 30s, 500ms or 2m.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Write CSV cells as they are: without it, a text cell starting with
    /// =, +, -, @, tab or CR gets a leading ' so that a spreadsheet shows
    /// it instead of running it as a formula (plain numbers such as -12.5
    /// are left alone).
    #[arg(long, global = true)]
    pub csv_raw: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the mesh CA and issue certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Run a local mesh (four region nodes and a gateway, with demo data)
    /// in this process until Ctrl-C.
    Up(UpArgs),
    /// The datasets of all regions, with rows and freshness per region.
    Catalog(OutputArgs),
    /// The regions the gateway federates, their endpoints and health.
    Regions(OutputArgs),
    /// Rows of a dataset from every region, paged through the gateway.
    Query(QueryArgs),
    /// Grouped counts, sums, averages, minima and maxima across regions.
    Aggregate(AggregateArgs),
    /// The plan the gateway would run for a query, without running it.
    Explain(QueryArgs),
    /// Recent traces from the admin endpoints of the profile, or one
    /// trace's spans drawn as a tree with durations and time bars.
    Traces(TracesArgs),
    /// Verify a region's or gateway's audit log, or list its records.
    #[command(subcommand)]
    Audit(crate::audit::AuditCommand),
    /// Apply for access to conditionally shared data, decide and follow requests.
    #[command(subcommand)]
    Access(crate::access::AccessCommand),
}

impl Command {
    /// Whether the command installs the process's telemetry (tracing
    /// subscriber, span buffer, OTLP export) itself, instead of the plain
    /// logging of the client commands: `yrdctl up` does, for the mesh it
    /// runs.
    pub fn installs_telemetry(&self) -> bool {
        matches!(self, Command::Up(_))
    }
}

/// `yrdctl pki` commands.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a new mesh CA (ca.pem and ca.key) in a directory.
    Init(PkiInitArgs),
    /// Issue (or renew) a certificate signed by the mesh CA.
    Issue(PkiIssueArgs),
}

/// Arguments of `yrdctl pki init`.
#[derive(Debug, Args)]
pub struct PkiInitArgs {
    /// The PKI directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Trust domain of the mesh's SPIFFE identities.
    #[arg(long, default_value = yrd_identity::DEFAULT_TRUST_DOMAIN, value_name = "DOMAIN")]
    pub trust_domain: String,
}

/// The kind of process a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    /// A region node (a server; needs --region).
    Node,
    /// A gateway (a server).
    Gateway,
    /// An application (a client).
    App,
    /// A region's operator: decides access requests (a client; needs --region).
    Operator,
    /// A region's auditor: reads the region's audit (a client; needs --region).
    Auditor,
}

/// Arguments of `yrdctl pki issue`.
#[derive(Debug, Args)]
pub struct PkiIssueArgs {
    /// The PKI directory holding the CA.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// What the certificate is for.
    #[arg(long, value_enum)]
    pub kind: PeerKind,
    /// The holder's name, such as nj-1 or dashboard (A-Z, a-z, 0-9, '.', '-', '_').
    #[arg(long)]
    pub name: String,
    /// The node's region, a GB/T 2260 province-level code such as 320000
    /// (nodes only).
    #[arg(long, value_name = "ID")]
    pub region: Option<String>,
    /// A DNS name clients dial, in addition to localhost for servers
    /// (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// An IP address clients dial, in addition to 127.0.0.1 and ::1 for
    /// servers (repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Leave localhost, 127.0.0.1 and ::1 out of a server certificate (for
    /// a deployment that names its hosts with --dns and --ip).
    #[arg(long)]
    pub no_local_names: bool,
}

/// Arguments of `yrdctl up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the PKI, configs and region stores live; reused on restart.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Size of the demo data: 1 gives 20,000 enterprises and a year of
    /// hourly air readings per region.
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale)]
    pub scale: f64,
    /// Seed of the demo data, shared by every region.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// The gateway's port; the nodes listen on the four ports after it
    /// (0: any free ports).
    #[arg(long, default_value_t = 50070)]
    pub port: u16,
    /// The admin HTTP port (metrics, health, recent traces) of the whole
    /// mesh: every component runs in this process and shares it (default:
    /// the gateway's port + 10, so 50080; 0: any free port).
    #[arg(long, value_name = "PORT")]
    pub admin_port: Option<u16>,
}

/// Arguments of `yrdctl traces`: one of `--trace-id`, `--last` or
/// `--slowest` (default `--last 10`).
#[derive(Debug, Args)]
pub struct TracesArgs {
    /// Draw this trace (32 hexadecimal digits, as `yrdctl query` prints).
    #[arg(long, value_name = "ID", conflicts_with_all = ["last", "slowest"], value_parser = parse_trace_id)]
    pub trace_id: Option<String>,
    /// List the N most recently started traces, newest first (the default,
    /// with N = 10).
    #[arg(long, value_name = "N", conflicts_with = "slowest", value_parser = clap::value_parser!(u16).range(1..=MAX_TRACES))]
    pub last: Option<u16>,
    /// List the N traces that took longest, slowest first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=MAX_TRACES))]
    pub slowest: Option<u16>,
    /// Also list the gRPC health checks: the gateway checks every region
    /// every few seconds, each check a trace of its own, which would
    /// otherwise crowd out the queries.
    #[arg(long, conflicts_with = "trace_id")]
    pub include_health: bool,
    /// Output format (json: the merged JSON of the admin endpoints).
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The most traces `--last` and `--slowest` may ask for: the admin
/// endpoint's limit (`yrd_telemetry::MAX_TRACES`).
pub const MAX_TRACES: i64 = 1000;

/// How many traces `yrdctl traces` lists when asked for nothing in particular.
pub const DEFAULT_LAST: u16 = 10;

/// What `yrdctl traces` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceQuery {
    /// One trace's spans, by trace id (lowercase hex).
    Trace(String),
    /// The N most recently started traces.
    Last(u16),
    /// The N slowest traces.
    Slowest(u16),
}

impl TracesArgs {
    /// The one thing asked for (`--last 10` when nothing is).
    pub fn query(&self) -> TraceQuery {
        match (&self.trace_id, self.last, self.slowest) {
            (Some(id), _, _) => TraceQuery::Trace(id.clone()),
            (None, _, Some(n)) => TraceQuery::Slowest(n),
            (None, last, None) => TraceQuery::Last(last.unwrap_or(DEFAULT_LAST)),
        }
    }
}

/// Parses a trace id: 32 hexadecimal digits, not all zero; lowercased as
/// the admin endpoints write them.
pub fn parse_trace_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a trace id (32 hexadecimal digits)"));
    }
    if id.bytes().all(|b| b == b'0') {
        return Err("the all-zero trace id is invalid".to_owned());
    }
    Ok(id.to_ascii_lowercase())
}

/// Arguments of commands whose only option is the output format.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Arguments of `yrdctl query` and `yrdctl explain`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Dataset id, such as enterprise or air_quality (see `yrdctl catalog`).
    pub dataset: String,
    /// Filter (AIP-160), such as 'registered_capital > 1000000 AND city = "320500"'.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Only these regions, such as 320000,330000 (default: all).
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub regions: Vec<String>,
    /// Only these fields, in this order (default: all).
    #[arg(long, value_delimiter = ',', value_name = "FIELD,...")]
    pub fields: Vec<String>,
    /// Sort order, such as 'registered_capital desc, name'.
    #[arg(long, value_name = "EXPR")]
    pub order_by: Option<String>,
    /// Why the data is used, such as 'cross-provincial licence check': each
    /// region's node checks it against its grants (at most 200 characters).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub purpose: String,
    /// Most rows to fetch, over as many pages as needed.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Rows per page (default: the limit, at most 1000).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub page_size: Option<i32>,
    /// Fail unless every region answers (default: answer with the regions
    /// that do, and say which did not).
    #[arg(long)]
    pub all_regions: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Arguments of `yrdctl aggregate`.
#[derive(Debug, Args)]
pub struct AggregateArgs {
    /// Dataset id, such as enterprise.
    pub dataset: String,
    /// Group by this field (repeatable; `region` always works).
    #[arg(long = "group-by", value_name = "FIELD")]
    pub group_by: Vec<String>,
    /// A metric: count(*), count(f), sum(f), avg(f), min(f) or max(f)
    /// (repeatable; default count(*)).
    #[arg(long = "metric", value_name = "METRIC")]
    pub metrics: Vec<String>,
    /// Filter (AIP-160).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Only these regions (default: all).
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub regions: Vec<String>,
    /// Why the data is used; each region's node checks it against its
    /// grants (at most 200 characters).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub purpose: String,
    /// Fail unless every region answers.
    #[arg(long)]
    pub all_regions: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}; use ms, s, m or h")),
    };
    // Zero would make every call fail at once; a day is beyond any sane wait.
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text:?} is not between 1ms and 24h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a demo scale: the range a node's config accepts, checked here so
/// the error names the flag rather than a generated file.
fn parse_scale(text: &str) -> Result<f64, String> {
    let scale: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if scale > 0.0 && scale <= 100.0 {
        Ok(scale)
    } else {
        Err(format!("{scale} is not in (0, 100]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "0", "10x", "-1s", "2d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "yrdctl",
            "query",
            "enterprise",
            "--regions",
            "310000,320000",
            "--fields=name,city",
            "--limit",
            "20",
            "-o",
            "csv",
            "--purpose",
            "licence check",
        ])
        .unwrap();
        let Command::Query(q) = cli.command else {
            panic!("not a query: {:?}", cli.command)
        };
        assert_eq!(q.purpose, "licence check");
        assert_eq!(q.regions, ["310000", "320000"]);
        assert_eq!(q.fields, ["name", "city"]);
        assert_eq!((q.limit, q.output), (20, Format::Csv));
        assert!(Cli::try_parse_from(["yrdctl", "query", "enterprise", "--limit", "0"]).is_err());
        assert!(Cli::try_parse_from(["yrdctl", "up", "--data-dir", "d", "--scale", "0"]).is_err());
        assert!(!cli.csv_raw, "CSV cells are protected by default");
        let cli = Cli::try_parse_from(["yrdctl", "query", "enterprise", "-o", "csv", "--csv-raw"]).unwrap();
        assert!(cli.csv_raw);
        let cli = Cli::try_parse_from(["yrdctl", "--csv-raw", "regions", "-o", "csv"]).unwrap();
        assert!(cli.csv_raw);
    }

    fn traces(args: &[&str]) -> Result<TraceQuery, clap::Error> {
        let cli = Cli::try_parse_from(["yrdctl", "traces"].iter().chain(args))?;
        match cli.command {
            Command::Traces(t) => Ok(t.query()),
            other => panic!("not traces: {other:?}"),
        }
    }

    #[test]
    fn traces_flags_are_exclusive() {
        assert_eq!(traces(&[]).unwrap(), TraceQuery::Last(10));
        assert_eq!(traces(&["--last", "5"]).unwrap(), TraceQuery::Last(5));
        assert_eq!(traces(&["--slowest", "3"]).unwrap(), TraceQuery::Slowest(3));
        let id = "4BF92F3577B34DA6A3CE929D0E0E4736";
        assert_eq!(
            traces(&["--trace-id", id]).unwrap(),
            TraceQuery::Trace(id.to_ascii_lowercase())
        );
        assert!(traces(&["--last", "5", "--slowest", "3"]).is_err());
        assert!(traces(&["--trace-id", id, "--last", "5"]).is_err());
        assert!(traces(&["--last", "0"]).is_err());
        assert!(traces(&["--last", "1001"]).is_err());
        assert!(traces(&["--trace-id", "abc"]).is_err());
        assert!(traces(&["--trace-id", &"0".repeat(32)]).is_err());
        assert!(traces(&["--trace-id", id, "--include-health"]).is_err());
        assert_eq!(traces(&["--include-health"]).unwrap(), TraceQuery::Last(10));
        assert_eq!(MAX_TRACES, i64::try_from(yrd_telemetry::MAX_TRACES).unwrap());
    }
}
