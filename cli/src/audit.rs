//! `yrdctl audit verify|show`: check an audit log's chain and signatures,
//! and list its records, from local files or, with an auditor's identity,
//! from a region through the gateway (`yrd.mesh.v1.Audit/ReadAudit`).

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use yrd_audit::{Decision, Filter, Record};
use yrd_proto::mesh::ReadAuditRequest;
use yrd_proto::mesh::audit_client::AuditClient;

use crate::client::{Connection, status_error};
use crate::output;

/// `yrdctl audit` commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain, sequence and signed checkpoints;
    /// exits non-zero naming the first bad record.
    Verify(VerifyArgs),
    /// List an audit log's records, filtered, from local files or from a
    /// region through the gateway (an auditor's profile).
    Show(ShowArgs),
}

/// Arguments of `yrdctl audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Log directories (all their audit-*.jsonl files, in order) or files,
    /// together one series from seq 1.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The mesh CA certificate (PEM): checkpoint signers must hold a
    /// certificate it issued. Without it, signatures are checked against
    /// the certificates the checkpoints carry, whoever issued them.
    #[arg(long, value_name = "CA.pem")]
    pub ca: Option<PathBuf>,
}

/// How `yrdctl audit show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// A table for people.
    Table,
    /// The records as stored, one JSON object per line.
    Json,
}

/// Arguments of `yrdctl audit show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A log directory or file.
    #[arg(value_name = "PATH", required_unless_present = "region", conflicts_with = "region")]
    pub path: Option<PathBuf>,
    /// Read this region's log through the gateway, as the profile's
    /// identity (an auditor of that region).
    #[arg(long, value_name = "ID")]
    pub region: Option<String>,
    /// Only records acting for (or called by) this application: its name
    /// or SPIFFE URI.
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    /// Only records of this dataset.
    #[arg(long, value_name = "DATASET")]
    pub dataset: Option<String>,
    /// Only records with this decision.
    #[arg(long, value_parser = ["allow", "deny", "fail"])]
    pub decision: Option<String>,
    /// Only records at or after this time: RFC 3339 (2026-12-01T08:00:00Z)
    /// or a date (2026-12-01, midnight UTC).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub since: Option<SystemTime>,
    /// Only records before this time (as --since).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub until: Option<SystemTime>,
    /// At most this many records.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Output format.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = ShowFormat::Table)]
    pub format: ShowFormat,
}

impl ShowArgs {
    /// The filter the arguments ask for.
    pub fn filter(&self) -> Filter {
        Filter {
            subject: self.app.clone(),
            dataset: self.dataset.clone(),
            decision: self.decision.as_deref().and_then(|d| d.parse::<Decision>().ok()),
            since: self.since,
            until: self.until,
            limit: self.limit.map(|n| n as usize),
        }
    }

    /// The gateway request for `--region`.
    pub fn request(&self, region: &str) -> ReadAuditRequest {
        ReadAuditRequest {
            region: region.to_owned(),
            app: self.app.clone().unwrap_or_default(),
            dataset: self.dataset.clone().unwrap_or_default(),
            decision: self.decision.clone().unwrap_or_default(),
            since: self.since.map(prost_types::Timestamp::from),
            until: self.until.map(prost_types::Timestamp::from),
            limit: self.limit.unwrap_or(0),
        }
    }
}

/// Parses `--since` / `--until`: RFC 3339, or a date at midnight UTC,
/// through the protocol's own date forms.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    let seconds = yrd_proto::datetime::parse_timestamp(text)
        .or_else(|| yrd_proto::datetime::parse_date(text).map(|d| d.midnight().assume_utc().unix_timestamp()))
        .ok_or_else(|| format!("{text:?} is not a time: use RFC 3339 (2026-12-01T08:00:00Z) or a date (2026-12-01)"))?;
    let since_epoch = std::time::Duration::from_secs(seconds.unsigned_abs());
    Ok(if seconds >= 0 {
        SystemTime::UNIX_EPOCH + since_epoch
    } else {
        SystemTime::UNIX_EPOCH - since_epoch
    })
}

/// Runs an `audit` command.
pub async fn run(
    command: &AuditCommand,
    connection: impl FnOnce() -> anyhow::Result<Connection>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        AuditCommand::Verify(args) => verify(args, &mut out),
        AuditCommand::Show(args) => match (&args.path, &args.region) {
            (Some(path), _) => show_local(path, args, &mut out),
            (None, Some(region)) => show_remote(&connection()?, region, args, &mut out).await,
            (None, None) => anyhow::bail!("give a log PATH, or --region to read through the gateway"),
        },
    }
}

/// `yrdctl audit verify`: the report, or the first bad record as the error.
pub fn verify(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let ca = match &args.ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading the CA {}", path.display()))?),
        None => None,
    };
    let report = yrd_audit::verify(&args.paths, ca.as_deref()).map_err(|e| match e {
        yrd_audit::AuditError::BadRecord { .. } => {
            anyhow::anyhow!("audit log verification FAILED at the first bad record: {e}")
        }
        other => anyhow::Error::new(other).context("audit log verification failed"),
    })?;
    writeln!(out, "{report}")?;
    Ok(())
}

/// `yrdctl audit show PATH`.
pub fn show_local(path: &std::path::Path, args: &ShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut shown = Shown::new(args.format);
    for item in yrd_audit::read(path, &args.filter())? {
        let (line, record) = item?;
        shown.push(out, &line, record)?;
    }
    shown.finish(out)
}

/// `yrdctl audit show --region R`: the region's records through the gateway.
pub async fn show_remote(conn: &Connection, region: &str, args: &ShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let channel = conn.channel().await?;
    let mut client = AuditClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let mut stream = client
        .read_audit(conn.request(args.request(region)))
        .await
        .map_err(status_error)?
        .into_inner();
    let filter = args.filter();
    let mut left = filter.limit.unwrap_or(usize::MAX);
    let mut shown = Shown::new(args.format);
    while left > 0
        && let Some(batch) = tokio::time::timeout(conn.patience(), stream.message())
            .await
            .context("the gateway stopped sending audit records within the timeout")?
            .map_err(status_error)?
    {
        for line in batch.lines {
            let (_, record) = yrd_audit::parse_line(&line).map_err(|reason| {
                anyhow::anyhow!("region {region} sent an audit line that does not parse: {reason}")
            })?;
            // The region filters; filtering again keeps the output to what
            // was asked whatever the region's version.
            if left > 0 && filter.matches(&record) {
                left -= 1;
                shown.push(out, &line, record)?;
            }
        }
    }
    shown.finish(out)
}

/// Records on their way out: JSON lines as they come, a table at the end.
struct Shown {
    format: ShowFormat,
    rows: Vec<Vec<String>>,
}

/// The table's columns.
const COLUMNS: [&str; 10] = [
    "time",
    "seq",
    "kind",
    "subject",
    "purpose",
    "dataset",
    "decision",
    "rule/reason",
    "rows",
    "trace id",
];

impl Shown {
    fn new(format: ShowFormat) -> Self {
        Self {
            format,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, out: &mut dyn Write, line: &str, record: Record) -> anyhow::Result<()> {
        match self.format {
            ShowFormat::Json => {
                // The stored JSON, byte for byte, without the hash.
                let json = line.split_once(' ').map_or(line, |(_, json)| json);
                writeln!(out, "{json}")?;
            }
            ShowFormat::Table => self.rows.push(row(record)),
        }
        Ok(())
    }

    fn finish(self, out: &mut dyn Write) -> anyhow::Result<()> {
        if self.format == ShowFormat::Table {
            let headers: Vec<String> = COLUMNS.iter().map(|&c| c.to_owned()).collect();
            let numeric: Vec<bool> = COLUMNS.iter().map(|&c| c == "seq" || c == "rows").collect();
            let empty = self.rows.is_empty();
            writeln!(out, "{}", output::table(&headers, self.rows, &numeric))?;
            if empty {
                writeln!(out, "no records match")?;
            }
        }
        Ok(())
    }
}

/// A record's table row.
fn row(record: Record) -> Vec<String> {
    let e = record.entry;
    let rule = match (e.rule, e.reason) {
        (Some(rule), Some(reason)) => format!("{rule} / {reason}"),
        (rule, reason) => rule.or(reason).unwrap_or_default(),
    };
    vec![
        record.time,
        record.seq.to_string(),
        e.kind.into_owned(),
        e.subject.as_deref().map(short_id).unwrap_or_default(),
        e.purpose.unwrap_or_default(),
        e.dataset.unwrap_or_default(),
        e.decision.to_string(),
        rule,
        e.rows.map(|r| r.to_string()).unwrap_or_default(),
        e.trace_id.unwrap_or_default(),
    ]
}

/// A SPIFFE URI without its scheme and trust domain (`app/dashboard`).
fn short_id(uri: &str) -> String {
    uri.strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once('/'))
        .map_or_else(|| uri.to_owned(), |(_, path)| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use yrd_audit::{AuditConfig, AuditLog, Entry};
    use yrd_identity::{Ca, IssueRequest, PeerId, Signer, issue_in_memory};

    const SOURCE: &str = "spiffe://yrd.mesh/region/320000/node/nj-1";

    fn parse(args: &[&str]) -> Result<AuditCommand, clap::Error> {
        let cli = Cli::try_parse_from(["yrdctl", "audit"].iter().chain(args))?;
        match cli.command {
            Command::Audit(command) => Ok(command),
            other => panic!("not audit: {other:?}"),
        }
    }

    fn show(args: &[&str]) -> ShowArgs {
        match parse(&[&["show"], args].concat()).unwrap() {
            AuditCommand::Show(show) => show,
            other => panic!("not show: {other:?}"),
        }
    }

    /// A closed, signed log of 12 records in `dir`, and the CA's PEM.
    async fn log(dir: &std::path::Path) -> String {
        let ca = Ca::generate("yrd.mesh").unwrap();
        let (cert, key) = issue_in_memory(
            &ca,
            &IssueRequest::new(PeerId::node("yrd.mesh", "320000", "nj-1").unwrap()),
        )
        .unwrap();
        let signer = Signer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let log = AuditLog::open(&AuditConfig::in_dir(dir), SOURCE, Some(signer)).unwrap();
        for i in 0..12u64 {
            let mut e = Entry::new(
                "query",
                if i.is_multiple_of(4) {
                    Decision::Deny
                } else {
                    Decision::Allow
                },
            );
            let app = if i.is_multiple_of(2) { "dashboard" } else { "analyst" };
            e.subject = Some(format!("spiffe://yrd.mesh/app/{app}"));
            e.dataset = Some("enterprise".into());
            e.purpose = Some("supervision".into());
            e.rule = Some(format!("grant-{app}"));
            e.reason = (i.is_multiple_of(4)).then(|| "NO_GRANT".to_owned());
            e.rows = Some(i * 10);
            e.trace_id = Some(format!("{:032x}", i + 1));
            log.append(e).await.unwrap();
        }
        log.close().await.unwrap();
        ca.cert_pem().to_owned()
    }

    #[test]
    fn arguments_parse() {
        assert!(parse(&["show"]).is_err(), "a path or --region is needed");
        assert!(parse(&["show", "dir", "--region", "320000"]).is_err());
        assert!(parse(&["show", "dir", "--decision", "maybe"]).is_err());
        assert!(parse(&["show", "dir", "--since", "yesterday"]).is_err());
        assert!(parse(&["show", "dir", "--limit", "0"]).is_err());
        assert!(parse(&["verify"]).is_err(), "verify needs a path");
        let AuditCommand::Verify(v) = parse(&["verify", "a", "b", "--ca", "ca.pem"]).unwrap() else {
            panic!()
        };
        assert_eq!(v.paths, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(v.ca, Some(PathBuf::from("ca.pem")));

        let s = show(&[
            "--region",
            "320000",
            "--app",
            "dashboard",
            "--dataset",
            "enterprise",
            "--decision",
            "deny",
            "--since",
            "2026-12-01",
            "--until",
            "2026-12-02T08:00:00Z",
            "--limit",
            "5",
            "-o",
            "json",
        ]);
        assert_eq!(s.format, ShowFormat::Json);
        let request = s.request("320000");
        assert_eq!(
            (
                request.region.as_str(),
                request.app.as_str(),
                request.dataset.as_str(),
                request.decision.as_str()
            ),
            ("320000", "dashboard", "enterprise", "deny")
        );
        assert_eq!(request.limit, 5);
        assert_eq!(request.since.unwrap().seconds, 1_796_083_200);
        assert_eq!(request.until.unwrap().seconds, 1_796_083_200 + 86_400 + 8 * 3600);
        let filter = s.filter();
        assert_eq!(filter.decision, Some(Decision::Deny));
        assert_eq!(filter.limit, Some(5));
        assert_eq!(show(&["dir", "--format", "table"]).format, ShowFormat::Table);
        assert_eq!(show(&["dir"]).request("x").limit, 0);
    }

    #[tokio::test]
    async fn verify_passes_an_untouched_log_and_names_the_first_bad_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let ca = log(&dir).await;
        let ca_path = tmp.path().join("ca.pem");
        std::fs::write(&ca_path, ca).unwrap();
        let args = VerifyArgs {
            paths: vec![dir.clone()],
            ca: Some(ca_path),
        };
        let mut out = Vec::new();
        verify(&args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ok: 1 file(s), 13 records"), "{text}");
        assert!(text.contains("issued by the given CA"), "{text}");
        assert!(text.contains("ends with a signed checkpoint"), "{text}");

        // One byte changed in the fourth record.
        let file = dir.join(yrd_audit::file_name(1));
        let stored = std::fs::read_to_string(&file).unwrap();
        let mut lines: Vec<String> = stored.lines().map(str::to_owned).collect();
        lines[3] = lines[3].replacen("supervision", "supervisioN", 1);
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let err = verify(&args, &mut Vec::new()).unwrap_err();
        let text = crate::error_text(&err);
        assert!(text.contains(&format!("{}:4: seq 4:", file.display())), "{text}");
        assert!(text.contains("edited"), "{text}");
    }

    #[tokio::test]
    async fn show_lists_filtered_records_as_a_table_or_json() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        log(&dir).await;
        let dir_text = dir.to_str().unwrap();

        let mut out = Vec::new();
        show_local(
            &dir,
            &show(&[dir_text, "--app", "dashboard", "--decision", "deny"]),
            &mut out,
        )
        .unwrap();
        let table = String::from_utf8(out).unwrap();
        for column in COLUMNS {
            assert!(table.contains(column), "{column}: {table}");
        }
        // i = 0, 4, 8: dashboard and deny.
        let rows: Vec<&str> = table.lines().filter(|l| l.contains("app/dashboard")).collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(
            rows.iter()
                .all(|r| r.contains("deny") && r.contains("grant-dashboard / NO_GRANT")),
            "{table}"
        );
        assert!(!table.contains("analyst"), "{table}");

        let mut out = Vec::new();
        show_local(&dir, &show(&[dir_text, "--limit", "4", "-o", "json"]), &mut out).unwrap();
        let json = String::from_utf8(out).unwrap();
        let records: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(records.len(), 4);
        assert_eq!(records[3]["seq"], 4);
        assert_eq!(records[0]["source"], SOURCE);

        let mut out = Vec::new();
        show_local(&dir, &show(&[dir_text, "--dataset", "air_quality"]), &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("no records match"));

        let mut out = Vec::new();
        show_local(&dir, &show(&[dir_text, "--until", "2000-01-01"]), &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("no records match"));
    }
}
