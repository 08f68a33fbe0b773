//! `yrdctl access`: apply for conditionally shared data and follow the
//! requests (applications), list, approve, refuse and revoke them (a
//! region's operators), all through the gateway's `Access` service.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use tonic::transport::Channel;
use yrd_proto::mesh::access_client::AccessClient;
use yrd_proto::mesh::{
    AccessRequest, AccessState, DecideAccessRequest, ListAccessRequestsRequest, ListRegionsRequest,
    RequestAccessRequest, RevokeAccessRequest,
};

use crate::client::{Connection, status_error};
use crate::output::{self, Format};

/// `yrdctl access` commands.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Apply for fields of a region's dataset (an application).
    Request(RequestArgs),
    /// A region's requests, pending first, with their age against the
    /// answer deadline (operators: all; applications: their own).
    List(ListArgs),
    /// Approve a pending request, optionally narrowed (a region's operator).
    Approve(ApproveArgs),
    /// Refuse a pending request, with a reason (a region's operator).
    Refuse(ReasonArgs),
    /// Revoke an approved request's grant, with a reason (a region's operator).
    Revoke(ReasonArgs),
    /// This application's requests and their decisions, in every region or one.
    Status(StatusArgs),
}

/// Arguments of `yrdctl access request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The providing region, such as 320000.
    #[arg(long, value_name = "ID")]
    pub region: String,
    /// Dataset id, such as enterprise.
    #[arg(long)]
    pub dataset: String,
    /// Fields applied for.
    #[arg(long, value_delimiter = ',', value_name = "FIELD,...", required = true)]
    pub fields: Vec<String>,
    /// What the data is for (required; a grant allows only this purpose).
    #[arg(long, value_name = "TEXT")]
    pub purpose: String,
    /// Last day of access, YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub until: String,
    /// Only rows matching this filter (AIP-160), such as 'city = "320500"'.
    #[arg(long, value_name = "FILTER")]
    pub row_scope: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// A request state for `--state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Waiting for a decision.
    Pending,
    /// Approved.
    Approved,
    /// Refused.
    Refused,
    /// Revoked.
    Revoked,
}

impl StateArg {
    fn proto(self) -> AccessState {
        match self {
            Self::Pending => AccessState::Pending,
            Self::Approved => AccessState::Approved,
            Self::Refused => AccessState::Refused,
            Self::Revoked => AccessState::Revoked,
        }
    }
}

/// Arguments of `yrdctl access list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The region.
    #[arg(long, value_name = "ID")]
    pub region: String,
    /// Only requests in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Arguments of `yrdctl access approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The region.
    #[arg(long, value_name = "ID")]
    pub region: String,
    /// The request id, such as 320000-7.
    pub id: String,
    /// Grant only these of the fields applied for.
    #[arg(long, value_delimiter = ',', value_name = "FIELD,...")]
    pub fields: Vec<String>,
    /// Narrow the row scope: this filter is ANDed with the one applied for.
    #[arg(long, value_name = "FILTER")]
    pub row_scope: Option<String>,
    /// An earlier last day than applied for, YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// A note for the applicant.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Arguments of `yrdctl access refuse` and `yrdctl access revoke`.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    /// The region.
    #[arg(long, value_name = "ID")]
    pub region: String,
    /// The request id, such as 320000-7.
    pub id: String,
    /// Why (required; the applicant reads it).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Arguments of `yrdctl access status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this region (default: every region of the gateway).
    #[arg(long, value_name = "ID")]
    pub region: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

async fn client(conn: &Connection) -> anyhow::Result<AccessClient<Channel>> {
    Ok(AccessClient::new(conn.channel().await?))
}

/// Runs one `yrdctl access` command.
pub async fn run(conn: &Connection, command: &AccessCommand) -> anyhow::Result<()> {
    let mut access = client(conn).await?;
    let (requests, format, detail) = match command {
        AccessCommand::Request(a) => {
            let answer = access
                .request_access(conn.request(RequestAccessRequest {
                    region: a.region.clone(),
                    dataset: a.dataset.clone(),
                    fields: a.fields.clone(),
                    purpose: a.purpose.clone(),
                    until: a.until.clone(),
                    row_scope: a.row_scope.clone().unwrap_or_default(),
                    row_scope_expr: None,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            (vec![answer], a.output, true)
        }
        AccessCommand::List(a) => {
            let answer = access
                .list_access_requests(conn.request(ListAccessRequestsRequest {
                    region: a.region.clone(),
                    state: a.state.map_or(AccessState::Unspecified, StateArg::proto) as i32,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            (answer.requests, a.output, false)
        }
        AccessCommand::Approve(a) => {
            let answer = access
                .decide_access(conn.request(DecideAccessRequest {
                    region: a.region.clone(),
                    id: a.id.clone(),
                    approve: true,
                    reason: a.reason.clone().unwrap_or_default(),
                    fields: a.fields.clone(),
                    row_scope: a.row_scope.clone().unwrap_or_default(),
                    row_scope_expr: None,
                    until: a.until.clone().unwrap_or_default(),
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            (vec![answer], a.output, true)
        }
        AccessCommand::Refuse(a) => {
            let answer = access
                .decide_access(conn.request(DecideAccessRequest {
                    region: a.region.clone(),
                    id: a.id.clone(),
                    approve: false,
                    reason: a.reason.clone(),
                    ..Default::default()
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            (vec![answer], a.output, true)
        }
        AccessCommand::Revoke(a) => {
            let answer = access
                .revoke_access(conn.request(RevokeAccessRequest {
                    region: a.region.clone(),
                    id: a.id.clone(),
                    reason: a.reason.clone(),
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            (vec![answer], a.output, true)
        }
        AccessCommand::Status(a) => {
            let regions = match &a.region {
                Some(r) => vec![r.clone()],
                None => {
                    let mut federation = conn.connect().await?;
                    federation
                        .list_regions(conn.request(ListRegionsRequest {}))
                        .await
                        .map_err(status_error)?
                        .into_inner()
                        .regions
                        .into_iter()
                        .map(|r| r.region)
                        .collect()
                }
            };
            let mut all = Vec::new();
            for region in regions {
                let answer = access
                    .list_access_requests(conn.request(ListAccessRequestsRequest {
                        region: region.clone(),
                        state: AccessState::Unspecified as i32,
                    }))
                    .await
                    .map_err(|s| status_error(s).context(format!("region {region}")))?
                    .into_inner();
                all.extend(answer.requests);
            }
            (all, a.output, true)
        }
    };
    let mut out = std::io::stdout().lock();
    print(&mut out, &requests, format, detail)?;
    Ok(out.flush()?)
}

/// A state in words: `pending`, `approved`, ...
pub fn state_text(state: i32) -> String {
    AccessState::try_from(state).map_or_else(
        |_| format!("state {state}"),
        |s| s.as_str_name().trim_start_matches("ACCESS_STATE_").to_ascii_lowercase(),
    )
}

/// The headers and one row per request. `detail` adds the purpose, the
/// decision's reason and the terms granted (what an applicant follows).
pub fn records(requests: &[AccessRequest], detail: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let mut headers = vec![
        "id",
        "state",
        "applicant",
        "dataset",
        "fields",
        "until",
        "row scope",
        "filed",
        "due",
        "age (wd)",
        "overdue",
    ];
    if detail {
        headers.extend([
            "purpose",
            "decided",
            "by",
            "reason",
            "granted fields",
            "granted until",
            "granted row scope",
        ]);
    }
    let ts = |t: &Option<prost_types::Timestamp>| t.as_ref().map(output::timestamp).unwrap_or_default();
    let rows = requests
        .iter()
        .map(|r| {
            let mut row = vec![
                r.id.clone(),
                state_text(r.state),
                r.applicant.clone(),
                r.dataset.clone(),
                r.fields.join(","),
                r.until.clone(),
                r.row_scope_text.clone(),
                ts(&r.created),
                ts(&r.answer_due),
                r.age_working_days.to_string(),
                if r.overdue { "OVERDUE".into() } else { String::new() },
            ];
            if detail {
                row.extend([
                    r.purpose.clone(),
                    ts(&r.decided),
                    r.decided_by.clone(),
                    r.reason.clone(),
                    r.granted_fields.join(","),
                    r.granted_until.clone(),
                    r.granted_row_scope_text.clone(),
                ]);
            }
            row
        })
        .collect();
    (headers.into_iter().map(String::from).collect(), rows)
}

fn print(out: &mut impl Write, requests: &[AccessRequest], format: Format, detail: bool) -> anyhow::Result<()> {
    let (headers, rows) = records(requests, detail);
    let numeric: Vec<bool> = headers.iter().map(|h| h == "age (wd)").collect();
    if format == Format::Table && rows.is_empty() {
        writeln!(out, "no access requests")?;
        return Ok(());
    }
    output::write_records(out, format, &headers, rows, &numeric)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<AccessCommand, clap::Error> {
        let cli = Cli::try_parse_from(["yrdctl", "access"].iter().chain(args))?;
        match cli.command {
            Command::Access(a) => Ok(a),
            other => panic!("not access: {other:?}"),
        }
    }

    #[test]
    fn access_flags_parse() {
        let AccessCommand::Request(r) = parse(&[
            "request",
            "--region",
            "320000",
            "--dataset",
            "enterprise",
            "--fields",
            "name,contact_phone",
            "--purpose",
            "licensing",
            "--until",
            "2027-06-30",
            "--row-scope",
            "city = \"320500\"",
        ])
        .unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.fields, ["name", "contact_phone"]);
        assert_eq!(r.row_scope.as_deref(), Some("city = \"320500\""));
        assert!(parse(&["request", "--region", "320000", "--dataset", "enterprise"]).is_err());
        let AccessCommand::Approve(a) =
            parse(&["approve", "--region", "320000", "320000-1", "--fields", "name"]).unwrap()
        else {
            panic!("not an approval")
        };
        assert_eq!(
            (a.id.as_str(), a.fields.as_slice()),
            ("320000-1", &["name".to_owned()][..])
        );
        // A refusal and a revocation need a reason.
        assert!(parse(&["refuse", "--region", "320000", "320000-1"]).is_err());
        assert!(parse(&["revoke", "--region", "320000", "320000-1"]).is_err());
        assert!(parse(&["list", "--region", "320000", "--state", "pending"]).is_ok());
        assert!(parse(&["list", "--region", "320000", "--state", "lost"]).is_err());
        assert!(parse(&["status"]).is_ok());
    }

    #[test]
    fn records_show_the_deadline_and_the_decision() {
        let r = AccessRequest {
            id: "320000-1".into(),
            state: AccessState::Refused as i32,
            fields: vec!["name".into(), "address".into()],
            overdue: true,
            age_working_days: 12,
            reason: "no legal basis".into(),
            ..Default::default()
        };
        let (headers, rows) = records(std::slice::from_ref(&r), true);
        let at = |h: &str| rows[0][headers.iter().position(|x| x == h).unwrap()].clone();
        assert_eq!(at("state"), "refused");
        assert_eq!(at("fields"), "name,address");
        assert_eq!(at("age (wd)"), "12");
        assert_eq!(at("overdue"), "OVERDUE");
        assert_eq!(at("reason"), "no legal basis");
        let (headers, _) = records(&[r], false);
        assert!(!headers.iter().any(|h| h == "reason"));
    }
}
