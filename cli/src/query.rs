//! `yrdctl query` and `yrdctl explain`: rows of a dataset paged through the
//! gateway, and the plan the gateway would run for them.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use yrd_proto::mesh::query_response::Kind as ResponseKind;
use yrd_proto::mesh::{Consistency, QueryRequest, QuerySummary, RegionState, RegionStatus};
use yrd_proto::schema::Registry;

use crate::cli::QueryArgs;
use crate::client::{Connection, status_error};
use crate::output::{self, Format, RowDecoder, RowWriter};

/// The largest page asked for when `--page-size` is not given: large pages
/// cost fewer round trips, and the gateway's default limit (5000) allows it.
pub const MAX_DEFAULT_PAGE_SIZE: u64 = 1000;

/// The page size to ask for: `--page-size`, or the limit up to
/// [`MAX_DEFAULT_PAGE_SIZE`].
pub fn page_size(args: &QueryArgs) -> i32 {
    args.page_size.unwrap_or_else(|| {
        // The limit is at least 1 (clap checks) and the cap fits an i32.
        i32::try_from(args.limit.min(MAX_DEFAULT_PAGE_SIZE)).unwrap_or(i32::MAX)
    })
}

/// The request for one page. Everything but the page size and token is the
/// same on every page: the gateway binds its page tokens to the query.
pub fn request(args: &QueryArgs, page_size: i32, page_token: String) -> QueryRequest {
    QueryRequest {
        dataset: args.dataset.clone(),
        filter: args.filter.clone().unwrap_or_default(),
        fields: args.fields.clone(),
        order_by: args.order_by.clone().unwrap_or_default(),
        page_size,
        page_token,
        regions: args.regions.clone(),
        consistency: consistency(args.all_regions) as i32,
        purpose: args.purpose.clone(),
        ..Default::default()
    }
}

/// The consistency a `--all-regions` flag asks for.
pub fn consistency(all_regions: bool) -> Consistency {
    if all_regions {
        Consistency::AllRegions
    } else {
        Consistency::BestEffort
    }
}

/// The table and CSV columns: the requested fields, or every field of the
/// dataset in declaration order (empty when this build does not know the
/// dataset: the first row's message then decides).
pub fn columns(args: &QueryArgs) -> Vec<String> {
    if !args.fields.is_empty() {
        return args.fields.clone();
    }
    Registry::standard()
        .ok()
        .and_then(|r| r.get(&args.dataset))
        .map(|d| d.fields.iter().map(|f| f.name.clone()).collect())
        .unwrap_or_default()
}

/// Per-region outcome summed over the pages of one query.
#[derive(Debug, Default)]
struct Summary {
    /// Regions in the order the gateway first listed them.
    order: Vec<String>,
    /// Totals by region id.
    regions: HashMap<String, RegionTotal>,
    /// Distinct trace ids of the pages, in order.
    trace_ids: Vec<String>,
    /// The gateway's audit record of each page, in order.
    audit_ids: Vec<String>,
    /// Rows printed.
    rows: u64,
    /// Pages fetched.
    pages: u32,
}

/// One region's outcome over all pages.
#[derive(Debug, Default)]
struct RegionTotal {
    /// The state shown: the first failure, else the latest answer.
    state: i32,
    /// Rows over all pages.
    rows: u64,
    /// Time over all pages.
    elapsed: Duration,
    /// The latest freshness reported.
    freshness: Option<prost_types::Timestamp>,
    /// The message that goes with `state`.
    message: String,
}

impl Summary {
    /// Adds one page's summary: rows and time add up; a failure on any page
    /// is what the region's line shows; a region skipped on a later page
    /// (finished earlier) keeps the state it had.
    fn add(&mut self, page: &QuerySummary) {
        self.pages += 1;
        if !page.trace_id.is_empty() && !self.trace_ids.contains(&page.trace_id) {
            self.trace_ids.push(page.trace_id.clone());
        }
        if !page.audit_id.is_empty() {
            self.audit_ids.push(page.audit_id.clone());
        }
        for s in &page.regions {
            let total = self.regions.entry(s.region.clone()).or_insert_with(|| {
                self.order.push(s.region.clone());
                RegionTotal::default()
            });
            total.rows += s.rows;
            total.elapsed += s.elapsed.and_then(|d| Duration::try_from(d).ok()).unwrap_or_default();
            if s.freshness.is_some() {
                total.freshness = s.freshness;
            }
            let ok_or_unset = |state: i32| {
                state == RegionState::Ok as i32
                    || state == RegionState::Unspecified as i32
                    || state == RegionState::Skipped as i32
            };
            let skipped_now = s.state == RegionState::Skipped as i32;
            let had_answer = total.state == RegionState::Ok as i32;
            // Keep the first failure; otherwise the latest state, unless the
            // region merely finished on an earlier page.
            if ok_or_unset(total.state) && !(skipped_now && had_answer) {
                total.state = s.state;
                total.message = s.message.clone();
            }
        }
    }

    /// The totals as statuses, for the region table.
    fn statuses(&self) -> Vec<RegionStatus> {
        self.order
            .iter()
            .filter_map(|r| {
                let t = self.regions.get(r)?;
                Some(RegionStatus {
                    region: r.clone(),
                    state: t.state,
                    rows: t.rows,
                    elapsed: prost_types::Duration::try_from(t.elapsed).ok(),
                    freshness: t.freshness,
                    message: t.message.clone(),
                    ..RegionStatus::default()
                })
            })
            .collect()
    }

    /// The lines under the region table. The trace and audit ids are the
    /// gateway's text, shown through [`output::escape_text`].
    fn footer(&self, more: bool, limit: u64) -> String {
        let mut text = format!(
            "{} row{} in {} page{}",
            self.rows,
            if self.rows == 1 { "" } else { "s" },
            self.pages,
            if self.pages == 1 { "" } else { "s" }
        );
        if more {
            text.push_str(&format!("; more rows: raise --limit (now {limit})"));
        }
        match self.trace_ids.as_slice() {
            [] => {}
            [one] => text.push_str(&format!("\n{}", output::trace_hint(one))),
            // Each page is a call of its own, so a trace of its own.
            many => text.push_str(&format!(
                "\ntraces, one per page: {}  (yrdctl traces --trace-id ID)",
                escaped_list(many)
            )),
        }
        match self.audit_ids.as_slice() {
            [] => {}
            [one] => text.push_str(&format!("\ngateway audit record: {}", output::escape_text(one))),
            many => text.push_str(&format!(
                "\ngateway audit records, one per page: {}",
                escaped_list(many)
            )),
        }
        text
    }
}

/// Texts of the gateway, each shown through [`output::escape_text`], joined
/// with commas.
fn escaped_list(texts: &[String]) -> String {
    texts
        .iter()
        .map(|t| output::escape_text(t))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `yrdctl query`.
pub async fn query(conn: &Connection, args: &QueryArgs) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let mut decoder = RowDecoder::new()?;
    let mut writer = RowWriter::new(std::io::stdout().lock(), args.output, columns(args));
    let mut summary = Summary::default();
    let per_page = page_size(args);
    let mut token = String::new();
    let mut more = false;
    loop {
        let remaining = args.limit - summary.rows;
        let size = i32::try_from(remaining).unwrap_or(i32::MAX).min(per_page);
        let req = conn.request(request(args, size, std::mem::take(&mut token)));
        // The channel's timeout covers only the start of a stream; this
        // bounds the whole page, in case the gateway stops sending.
        let page_deadline = tokio::time::Instant::now() + conn.patience();
        let mut stream = client.query(req).await.map_err(status_error)?.into_inner();
        let mut page_rows = 0u64;
        let mut page_summary = None;
        loop {
            let next = tokio::time::timeout_at(page_deadline, stream.message())
                .await
                .map_err(|_| anyhow::anyhow!("the gateway sent no complete page within {:?}", conn.patience()))?;
            let Some(message) = next.map_err(status_error)? else {
                break;
            };
            match message.kind {
                Some(ResponseKind::Batch(batch)) => {
                    for row in &batch.rows {
                        // The gateway honours the page size; this only
                        // guards --limit against a page that overruns it.
                        if summary.rows + page_rows >= args.limit {
                            more = true;
                            break;
                        }
                        writer.push(&decoder.decode(row)?)?;
                        page_rows += 1;
                    }
                    writer.flush()?;
                }
                Some(ResponseKind::Summary(s)) => page_summary = Some(s),
                None => {}
            }
        }
        let page = page_summary.context("the gateway's answer ended without its summary")?;
        summary.rows += page_rows;
        summary.add(&page);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        if summary.rows >= args.limit {
            more = true;
            break;
        }
        if page_rows == 0 {
            // Asking again with the same state would loop for ever.
            tracing::warn!("the gateway sent an empty page with a next page token; stopping here");
            more = true;
            break;
        }
    }
    let mut out = writer.finish()?;
    let statuses = summary.statuses();
    let mut footer = summary.footer(more, args.limit);
    if let Some(note) = output::partial_note(&statuses) {
        footer.push('\n');
        footer.push_str(&note);
    }
    if args.output == Format::Table {
        writeln!(out, "\n{}\n{footer}", output::region_table(&statuses))?;
        out.flush()?;
    } else {
        drop(out);
        eprintln!("{}\n{footer}", output::region_table(&statuses));
    }
    Ok(())
}

/// Runs `yrdctl explain`: the same request as the first page of `query`.
pub async fn explain(conn: &Connection, args: &QueryArgs) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let req = conn.request(request(args, page_size(args), String::new()));
    let plan = client.explain(req).await.map_err(status_error)?.into_inner();
    let mut out = std::io::stdout().lock();
    let headers: Vec<String> = [
        "region",
        "name",
        "included",
        "reason",
        "filter",
        "policy",
        "row scope added",
        "fields",
        "min group",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = plan
        .regions
        .iter()
        .map(|r| {
            let p = r.policy.clone().unwrap_or_default();
            let decided = if r.policy.is_none() {
                String::new()
            } else if p.allowed {
                format!("allowed by {}", p.rule)
            } else {
                format!("denied: {} ({})", p.reason, p.message)
            };
            let fields: Vec<String> = p
                .fields
                .iter()
                .map(|f| match f.treatment.as_str() {
                    "masked" => format!("{} {}", f.field, f.mask),
                    t => format!("{} {t}", f.field),
                })
                .collect();
            vec![
                r.region.clone(),
                output::region_name(&r.region).to_owned(),
                if r.included { "yes" } else { "no" }.to_owned(),
                r.reason.clone(),
                r.filter.as_ref().map(yrd_query::filter::to_text).unwrap_or_default(),
                decided,
                p.row_scope_text.clone(),
                fields.join(", "),
                if p.min_group_size > 0 {
                    p.min_group_size.to_string()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    match args.output {
        Format::Json => {
            let decoder = RowDecoder::new()?;
            let text = output::proto_json(decoder.pool(), &plan, "yrd.mesh.v1.ExplainResponse")?;
            writeln!(out, "{text}")?;
        }
        Format::Csv => output::write_records(&mut out, Format::Csv, &headers, rows, &[])?,
        Format::Table => {
            let order: Vec<String> = plan
                .order_keys
                .iter()
                .map(|k| {
                    format!(
                        "{}{}",
                        output::escape_text(&k.field),
                        if k.descending { " desc" } else { "" }
                    )
                })
                .collect();
            writeln!(out, "dataset          {}", output::escape_text(&plan.dataset))?;
            writeln!(out, "plan             {}", output::escape_text(&plan.description))?;
            writeln!(out, "order            {}", order.join(", "))?;
            writeln!(out, "page size        {}", plan.page_size)?;
            let deadline = plan
                .region_deadline
                .and_then(|d| Duration::try_from(d).ok())
                .map_or_else(String::new, |d| format!("{} ms", d.as_millis()));
            writeln!(out, "region deadline  {deadline}")?;
            writeln!(out, "{}", output::table(&headers, rows, &[]))?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(region: &str, state: RegionState, rows: u64, message: &str) -> RegionStatus {
        RegionStatus {
            region: region.into(),
            state: state as i32,
            rows,
            elapsed: Some(prost_types::Duration {
                seconds: 0,
                nanos: 2_000_000,
            }),
            freshness: None,
            message: message.into(),
            ..RegionStatus::default()
        }
    }

    #[test]
    fn summaries_add_up_over_pages() {
        let mut s = Summary::default();
        s.add(&QuerySummary {
            regions: vec![
                status("310000", RegionState::Ok, 10, ""),
                status("320000", RegionState::Ok, 5, ""),
                status("330000", RegionState::Ok, 0, ""),
            ],
            next_page_token: "t".into(),
            trace_id: "abc".into(),
            rows: 15,
            audit_id: "gateway-g-1".into(),
        });
        s.add(&QuerySummary {
            regions: vec![
                status("310000", RegionState::Ok, 3, ""),
                status("320000", RegionState::DeadlineExceeded, 0, "slow"),
                status("330000", RegionState::Skipped, 0, "finished on an earlier page"),
            ],
            next_page_token: String::new(),
            trace_id: "abc".into(),
            rows: 3,
            audit_id: "gateway-g-3".into(),
        });
        let statuses = s.statuses();
        assert_eq!(statuses.len(), 3);
        assert_eq!((statuses[0].rows, statuses[0].state), (13, RegionState::Ok as i32));
        assert_eq!(
            statuses[0].elapsed,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 4_000_000
            })
        );
        assert_eq!(statuses[1].state, RegionState::DeadlineExceeded as i32);
        assert_eq!(statuses[1].message, "slow");
        assert_eq!(
            statuses[2].state,
            RegionState::Ok as i32,
            "finishing early is not a skip"
        );
        s.rows = 18;
        assert_eq!(
            s.footer(true, 18),
            "18 rows in 2 pages; more rows: raise --limit (now 18)\ntrace: abc  (yrdctl traces --trace-id abc)\n\
             gateway audit records, one per page: gateway-g-1, gateway-g-3"
        );
    }

    #[test]
    fn footer_ids_are_escaped() {
        let page = |trace: &str, audit: &str| QuerySummary {
            trace_id: trace.into(),
            audit_id: audit.into(),
            rows: 1,
            ..QuerySummary::default()
        };
        let mut one = Summary::default();
        one.add(&page("t\x1b[31m", "a\u{202e}"));
        one.rows = 1;
        assert_eq!(
            one.footer(false, 10),
            "1 row in 1 page\ntrace: t\\x1b[31m  (yrdctl traces --trace-id t\\x1b[31m)\n\
             gateway audit record: a\\u{202e}"
        );
        let mut many = Summary::default();
        many.add(&page("t1\x1b[31m", "a1\u{202e}"));
        many.add(&page("t2\u{202e}", "a2\x1b[0m"));
        many.rows = 2;
        let footer = many.footer(false, 10);
        assert!(!footer.lines().any(|l| l.chars().any(output::is_hidden)), "{footer:?}");
        assert_eq!(
            footer,
            "2 rows in 2 pages\ntraces, one per page: t1\\x1b[31m, t2\\u{202e}  (yrdctl traces --trace-id ID)\n\
             gateway audit records, one per page: a1\\u{202e}, a2\\x1b[0m"
        );
    }

    #[test]
    fn page_size_follows_the_limit() {
        use clap::Parser;
        let args = |extra: &[&str]| {
            let cli = crate::cli::Cli::try_parse_from(["yrdctl", "query", "enterprise"].iter().chain(extra)).unwrap();
            match cli.command {
                crate::cli::Command::Query(q) => q,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(page_size(&args(&[])), 100);
        assert_eq!(page_size(&args(&["--limit", "5000"])), 1000);
        assert_eq!(page_size(&args(&["--limit", "5000", "--page-size", "250"])), 250);
        let q = args(&[
            "--all-regions",
            "--filter",
            "city = \"320500\"",
            "--purpose",
            "audit sample",
        ]);
        let req = request(&q, 7, "tok".into());
        assert_eq!(req.consistency, Consistency::AllRegions as i32);
        assert_eq!(req.purpose, "audit sample");
        assert_eq!((req.page_size, req.page_token.as_str()), (7, "tok"));
        assert_eq!(columns(&q)[0], "credit_code");
    }
}
