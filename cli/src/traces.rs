//! `yrdctl traces`: the recent traces kept in memory by the mesh's
//! processes, read from their admin endpoints (`GET /traces`), merged, and
//! shown as a table or, for one trace, drawn as a tree of spans with their
//! durations and a time bar each:
//!
//! ```text
//! trace 4bf92f3577b34da6a3ce929d0e0e4736 · 5 spans · 100.00 ms · services: yrd-gateway, yrd-node · regions: 310000
//! span                                  duration  0 ms                             100.00 ms
//! yrd.mesh.v1.Federation/Query         100.00 ms  ████████████████████████████████████████
//! ├─ gateway.plan [dataset=enterprise]   2.00 ms  █·······································
//! ...
//! ```
//!
//! A trace crosses processes: the gateway records its spans and each region
//! node its own, so the profile lists every admin endpoint and the spans
//! are merged by span id. A span whose parent no endpoint recorded (a
//! remote caller's span, or one already evicted) is drawn as a root.
//!
//! Spans carry text that callers chose (a dataset name, an error
//! description), so it is made harmless as [`output`] describes: the
//! drawing shows every span-derived piece through [`output::escape_text`],
//! and JSON goes out through [`output::json_text`].

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use yrd_telemetry::{SpanRecord, TraceSummary};

use crate::admin::{self, AdminUrl};
use crate::cli::{TraceQuery, TracesArgs};
use crate::output::{self, Format};
use crate::profile::Profile;

/// Columns of the time bar.
pub const BAR_WIDTH: usize = 40;

/// The part of the bar a span covers.
const BAR_SPAN: char = '█';
/// The rest of the bar.
const BAR_IDLE: char = '·';

/// Longest error description shown on a span's line.
const MAX_ERROR_TEXT: usize = 60;

/// Runs `yrdctl traces`.
pub async fn traces(profile: Option<&Path>, timeout: Duration, args: &TracesArgs) -> anyhow::Result<()> {
    let profile = Profile::from_flag(profile)?;
    if profile.admin.is_empty() {
        bail!(
            "profile {} names no admin endpoint: add admin = [\"http://host:port\", ...] with the \
             admin_listen address of the gateway and of each node (`yrdctl up` writes it)",
            profile.path.display()
        );
    }
    let query = args.query();
    let path = request_path(&query, args.include_health);
    let mut out = std::io::stdout().lock();
    match &query {
        TraceQuery::Trace(id) => {
            let lists: Vec<Vec<SpanRecord>> = fetch_all(&profile.admin, &path, timeout).await?;
            let spans = merge_spans(lists);
            if spans.is_empty() {
                bail!(
                    "trace {id} is not in the recent-trace buffer of {}: it may be older than what \
                     the buffers keep, not sampled, or from processes the profile does not list",
                    endpoints_text(&profile.admin)
                );
            }
            match args.output {
                Format::Json => writeln!(out, "{}", json_line(&spans)?)?,
                Format::Csv => write_span_csv(&mut out, &spans)?,
                Format::Table => {
                    for line in draw_trace(&spans, BAR_WIDTH) {
                        writeln!(out, "{line}")?;
                    }
                }
            }
        }
        TraceQuery::Last(n) | TraceQuery::Slowest(n) => {
            let order = if matches!(query, TraceQuery::Last(_)) {
                Order::Newest
            } else {
                Order::Slowest
            };
            let lists: Vec<Vec<TraceSummary>> = fetch_all(&profile.admin, &path, timeout).await?;
            let summaries = merge_summaries(lists, order, usize::from(*n), args.include_health);
            match args.output {
                Format::Json => writeln!(out, "{}", json_line(&summaries)?)?,
                format => {
                    let (headers, rows) = summary_rows(&summaries);
                    output::write_records(
                        &mut out,
                        format,
                        &headers,
                        rows,
                        &[false, false, false, true, true, false],
                    )?;
                    if summaries.is_empty() && format == Format::Table {
                        let hidden = if args.include_health {
                            ""
                        } else {
                            " (health checks are hidden; --include-health lists them)"
                        };
                        writeln!(
                            out,
                            "no traces recorded yet{hidden}: run a query (yrdctl query ...) first"
                        )?;
                    } else if format == Format::Table {
                        writeln!(out, "draw one with: yrdctl traces --trace-id <trace id>")?;
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `value` as one line of JSON, with the characters a terminal would act
/// on escaped by [`output::json_text`]: what `--output json` prints.
pub fn json_line<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(output::json_text(serde_json::to_string(value)?))
}

/// The admin endpoint's path and query string for `query`. Unless health
/// checks are included, lists ask for as many traces as the endpoint gives
/// ([`MAX_TRACES`](crate::cli::MAX_TRACES)): the health checks among them
/// are dropped here, and N others must remain.
pub fn request_path(query: &TraceQuery, include_health: bool) -> String {
    let n = |n: &u16| {
        if include_health {
            n.to_string()
        } else {
            crate::cli::MAX_TRACES.to_string()
        }
    };
    match query {
        TraceQuery::Trace(id) => format!("/traces?trace_id={id}"),
        TraceQuery::Last(last) => format!("/traces?last={}", n(last)),
        TraceQuery::Slowest(slowest) => format!("/traces?slowest={}", n(slowest)),
    }
}

/// Whether a trace is a gRPC health check (of a region by the gateway, or
/// of any process by a load balancer).
pub fn is_health_check(summary: &TraceSummary) -> bool {
    summary.root_name.starts_with("grpc.health.v1.Health/")
}

/// The endpoints as a list for messages.
fn endpoints_text(endpoints: &[AdminUrl]) -> String {
    endpoints.iter().map(|u| u.url.as_str()).collect::<Vec<_>>().join(", ")
}

/// `GET`s `path` from every endpoint concurrently and parses each JSON
/// answer. An endpoint that fails is a warning on stderr; all failing is
/// the error.
async fn fetch_all<T: serde::de::DeserializeOwned>(
    endpoints: &[AdminUrl],
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<T>> {
    let answers = futures::future::join_all(endpoints.iter().map(|url| async move {
        let result = fetch_json::<T>(url, path, timeout).await;
        (url, result)
    }))
    .await;
    let mut parsed = Vec::new();
    let mut failures = Vec::new();
    for (url, result) in answers {
        match result {
            Ok(value) => parsed.push(value),
            Err(e) => failures.push(format!("{url}: {}", crate::error_text(&e))),
        }
    }
    if parsed.is_empty() {
        bail!("no admin endpoint answered:\n  {}", failures.join("\n  "));
    }
    for failure in failures {
        // The failure quotes the endpoint's answer.
        let failure = output::escape_text(&failure);
        eprintln!("yrdctl: warning: {failure} (what it holds is missing below)");
    }
    Ok(parsed)
}

/// One endpoint's answer, parsed.
async fn fetch_json<T: serde::de::DeserializeOwned>(
    url: &AdminUrl,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<T> {
    let response = admin::get(url, path, timeout).await?;
    if response.status != http::StatusCode::OK {
        // The status's Display is the code and its reason: `400 Bad Request`.
        // The body is the endpoint's text: it may hold line breaks too.
        bail!(
            "HTTP {}: {}",
            response.status,
            output::escape_text(&response.body_excerpt(200))
        );
    }
    serde_json::from_slice(&response.body).context("the answer is not the JSON yrdctl expects of /traces")
}

/// The spans of all endpoints, each once (by span id, the first copy
/// kept), earliest first.
pub fn merge_spans(lists: Vec<Vec<SpanRecord>>) -> Vec<SpanRecord> {
    let mut seen = HashSet::new();
    let mut spans: Vec<SpanRecord> = lists
        .into_iter()
        .flatten()
        .filter(|s| seen.insert(s.span_id.clone()))
        .collect();
    spans.sort_by(|a, b| (a.start_unix_nanos, &a.span_id).cmp(&(b.start_unix_nanos, &b.span_id)));
    spans
}

/// How trace summaries are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Latest start first.
    Newest,
    /// Longest duration first.
    Slowest,
}

/// Merges the summaries of several endpoints: one per trace id, from the
/// earliest start to the latest end any endpoint saw, its root the
/// earliest-starting endpoint's, erroring if any endpoint saw an error, and
/// with the largest span count any one endpoint reported (the count cannot
/// be summed without the span ids: two endpoints of one process report the
/// same spans). Health checks are dropped unless `include_health`. Ranked
/// by `order`, the first `n` kept.
pub fn merge_summaries(
    lists: Vec<Vec<TraceSummary>>,
    order: Order,
    n: usize,
    include_health: bool,
) -> Vec<TraceSummary> {
    let mut by_id: HashMap<String, TraceSummary> = HashMap::new();
    for summary in lists.into_iter().flatten() {
        match by_id.get_mut(&summary.trace_id) {
            None => {
                by_id.insert(summary.trace_id.clone(), summary);
            }
            Some(merged) => {
                let end = end_of(merged).max(end_of(&summary));
                if summary.start_unix_nanos < merged.start_unix_nanos {
                    merged.start_unix_nanos = summary.start_unix_nanos;
                    merged.root_name = summary.root_name;
                }
                merged.duration_nanos = end - merged.start_unix_nanos;
                merged.span_count = merged.span_count.max(summary.span_count);
                merged.error |= summary.error;
            }
        }
    }
    let mut merged: Vec<TraceSummary> = by_id
        .into_values()
        .filter(|s| include_health || !is_health_check(s))
        .collect();
    match order {
        Order::Newest => merged.sort_by(|a, b| {
            b.start_unix_nanos
                .cmp(&a.start_unix_nanos)
                .then_with(|| a.trace_id.cmp(&b.trace_id))
        }),
        Order::Slowest => merged.sort_by(|a, b| {
            b.duration_nanos
                .cmp(&a.duration_nanos)
                .then_with(|| b.start_unix_nanos.cmp(&a.start_unix_nanos))
                .then_with(|| a.trace_id.cmp(&b.trace_id))
        }),
    }
    merged.truncate(n);
    merged
}

/// The end of a summarized trace, in nanoseconds since the epoch.
fn end_of(s: &TraceSummary) -> u64 {
    s.start_unix_nanos.saturating_add(s.duration_nanos)
}

/// The table (or CSV) of summaries: headers and rows.
pub fn summary_rows(summaries: &[TraceSummary]) -> (Vec<String>, Vec<Vec<String>>) {
    let headers = ["trace id", "root span", "start", "duration ms", "spans", "error"]
        .map(String::from)
        .to_vec();
    let rows = summaries
        .iter()
        .map(|s| {
            vec![
                s.trace_id.clone(),
                s.root_name.clone(),
                // Milliseconds are what a person compares.
                time_text(s.start_unix_nanos / 1_000_000 * 1_000_000),
                millis_text(s.duration_nanos),
                s.span_count.to_string(),
                if s.error { "error" } else { "" }.to_owned(),
            ]
        })
        .collect();
    (headers, rows)
}

/// Nanoseconds since the epoch as RFC 3339 (UTC).
fn time_text(unix_nanos: u64) -> String {
    let seconds = i64::try_from(unix_nanos / 1_000_000_000).unwrap_or(i64::MAX);
    let nanos = i32::try_from(unix_nanos % 1_000_000_000).unwrap_or(0);
    output::timestamp_text(seconds, nanos)
}

/// Nanoseconds as milliseconds with two decimals.
fn millis_text(nanos: u64) -> String {
    format!("{:.2}", nanos as f64 / 1_000_000.0)
}

/// The spans as CSV, earliest first.
fn write_span_csv(out: &mut dyn Write, spans: &[SpanRecord]) -> anyhow::Result<()> {
    let headers: Vec<String> = [
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "kind",
        "service",
        "region",
        "start",
        "duration_ms",
        "status",
        "status_message",
    ]
    .map(String::from)
    .to_vec();
    let rows = spans
        .iter()
        .map(|s| {
            vec![
                s.trace_id.clone(),
                s.span_id.clone(),
                s.parent_span_id.clone(),
                s.name.clone(),
                s.kind.clone(),
                s.service.clone(),
                span_region(s).to_owned(),
                time_text(s.start_unix_nanos),
                millis_text(s.end_unix_nanos.saturating_sub(s.start_unix_nanos)),
                s.status.clone(),
                s.status_message.clone(),
            ]
        })
        .collect();
    output::write_records(out, Format::Csv, &headers, rows, &[])
}

/// The region a span is about: its `yrd.region` attribute, else the
/// region of the process that recorded it.
fn span_region(s: &SpanRecord) -> &str {
    s.attributes
        .get("yrd.region")
        .map(String::as_str)
        .filter(|r| !r.is_empty())
        .unwrap_or(&s.region)
}

/// The columns `start..end` of a `width`-column bar that a span from
/// `start` to `end` covers, in a window from `from` to `to` (all in
/// nanoseconds): at least one column, so that even an instant shows.
pub fn bar_columns(start: u64, end: u64, from: u64, to: u64, width: usize) -> (usize, usize) {
    if width == 0 {
        return (0, 0);
    }
    let total = u128::from(to.saturating_sub(from));
    if total == 0 {
        return (0, width);
    }
    let w = width as u128;
    let offset = |t: u64| u128::from(t.clamp(from, to) - from);
    let first = usize::try_from(offset(start) * w / total).unwrap_or(width);
    let last = usize::try_from((offset(end) * w).div_ceil(total)).unwrap_or(width);
    let first = first.min(width - 1);
    let last = last.clamp(first + 1, width);
    (first, last)
}

/// The time bar of a span: [`BAR_SPAN`] where it ran, [`BAR_IDLE`] elsewhere.
pub fn bar(start: u64, end: u64, from: u64, to: u64, width: usize) -> String {
    let (first, last) = bar_columns(start, end, from, to, width);
    (0..width)
        .map(|i| if (first..last).contains(&i) { BAR_SPAN } else { BAR_IDLE })
        .collect()
}

/// The attributes worth a place on a span's line, as `key=value` texts:
/// region and dataset (unless an ancestor's line shows the same), rows,
/// region state, a gRPC status other than OK, and an error status. The
/// values are shown through [`output::escape_text`]; the attributes shown,
/// the second part, are kept as they are, for comparing.
fn span_notes(s: &SpanRecord, inherited: &[(&'static str, String)]) -> (Vec<String>, Vec<(&'static str, String)>) {
    let attr = |key: &str| s.attributes.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let mut notes = Vec::new();
    let mut shown = Vec::new();
    for (key, label) in [("yrd.region", "region"), ("yrd.dataset", "dataset")] {
        if let Some(value) = attr(key) {
            if !inherited.iter().any(|(k, v)| *k == key && v == value) {
                notes.push(format!("{label}={}", output::escape_text(value)));
            }
            shown.push((key, value.to_owned()));
        }
    }
    if let Some(rows) = attr("yrd.rows") {
        notes.push(format!("rows={}", output::escape_text(rows)));
    }
    if let Some(state) = attr("yrd.region.state") {
        let state = state
            .strip_prefix("REGION_STATE_")
            .unwrap_or(state)
            .to_ascii_lowercase();
        notes.push(format!("state={}", output::escape_text(&state)));
    }
    let mut grpc = None;
    if let Some(code) = attr("rpc.grpc.status_code")
        && code != "0"
    {
        let name = code
            .parse::<i32>()
            .map(|c| crate::client::code_name(tonic::Code::from_i32(c)))
            .unwrap_or(code);
        notes.push(format!("grpc={}", output::escape_text(name)));
        grpc = Some(name);
    }
    if s.status == "error" {
        let message = s.status_message.trim();
        // A description that only repeats the gRPC code adds nothing.
        notes.push(
            if message.is_empty() || grpc.is_some_and(|g| g.eq_ignore_ascii_case(message)) {
                "error".to_owned()
            } else {
                let cut = if message.chars().count() > MAX_ERROR_TEXT {
                    "…"
                } else {
                    ""
                };
                // Cut first, then escaped: an escape is never cut in two.
                let shown: String = message.chars().take(MAX_ERROR_TEXT).collect();
                format!("error: {}{cut}", output::escape_text(&shown))
            },
        );
    }
    (notes, shown)
}

/// One drawn span: the tree and name part, and the duration.
struct Line {
    /// Tree prefix, name and notes.
    label: String,
    /// The duration text.
    duration: String,
    /// The time bar.
    bar: String,
}

/// The spans of one trace as a tree: a header line, a column line, one
/// line per span (tree prefix, name, notes in brackets, duration, time
/// bar), and a note on spans drawn as roots because their parent is
/// missing. `spans` should hold each span once (see [`merge_spans`]).
/// Every text taken from the spans is shown through
/// [`output::escape_text`], and widths are those of the escaped text.
pub fn draw_trace(spans: &[SpanRecord], width: usize) -> Vec<String> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| {
        (spans[a].start_unix_nanos, &spans[a].span_id).cmp(&(spans[b].start_unix_nanos, &spans[b].span_id))
    });
    let index: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    let mut orphans = Vec::new();
    for &i in &order {
        let parent = spans[i].parent_span_id.as_str();
        match index.get(parent) {
            Some(&p) if !parent.is_empty() && p != i => children.entry(p).or_default().push(i),
            _ => {
                if !parent.is_empty() {
                    orphans.push(i);
                }
                roots.push(i);
            }
        }
    }
    let from = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let to = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(from).max(from);

    let mut lines = Vec::new();
    let mut drawn = vec![false; spans.len()];
    let ctx = Draw {
        spans,
        children: &children,
        from,
        to,
        width,
    };
    for &root in &roots {
        ctx.draw(root, None, &[], &mut drawn, &mut lines);
    }
    // Spans in a parent cycle (malformed input) have no root: draw them
    // as roots rather than lose them.
    for &i in &order {
        if !drawn[i] {
            ctx.draw(i, None, &[], &mut drawn, &mut lines);
        }
    }

    let mut services = BTreeSet::new();
    let mut regions = BTreeSet::new();
    for s in spans {
        if !s.service.is_empty() {
            services.insert(s.service.as_str());
        }
        let region = span_region(s);
        if !region.is_empty() {
            regions.insert(region);
        }
    }
    let trace_id = output::escape_text(spans.first().map_or("", |s| s.trace_id.as_str()));
    let total = format!("{} ms", millis_text(to - from));
    let mut header = format!(
        "trace {trace_id} · {} span{} · {total}",
        spans.len(),
        if spans.len() == 1 { "" } else { "s" }
    );
    if !services.is_empty() {
        header.push_str(&format!(
            " · services: {}",
            services
                .into_iter()
                .map(output::escape_text)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !regions.is_empty() {
        header.push_str(&format!(
            " · regions: {}",
            regions
                .into_iter()
                .map(output::escape_text)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let label_width = lines
        .iter()
        .map(|l| l.label.chars().count())
        .chain(std::iter::once("span".len()))
        .max()
        .unwrap_or(0);
    let duration_width = lines
        .iter()
        .map(|l| l.duration.chars().count())
        .chain(std::iter::once("duration".len()))
        .max()
        .unwrap_or(0);
    let axis_end = width.saturating_sub("0 ms".len());
    let axis = format!("0 ms{total:>axis_end$}");
    let mut out = vec![
        header,
        format!("{:<label_width$}  {:>duration_width$}  {axis}", "span", "duration"),
    ];
    out.extend(
        lines
            .iter()
            .map(|l| format!("{:<label_width$}  {:>duration_width$}  {}", l.label, l.duration, l.bar)),
    );
    if !orphans.is_empty() {
        let names: Vec<Cow<'_, str>> = orphans.iter().map(|&i| output::escape_text(&spans[i].name)).collect();
        out.push(format!(
            "note: the parent of {} was not recorded by any admin endpoint of the profile \
             (a remote caller, a process not listed, or evicted); drawn as a root",
            names.join(", ")
        ));
    }
    out
}

/// What drawing the tree needs.
struct Draw<'a> {
    /// All spans.
    spans: &'a [SpanRecord],
    /// Children of each span, earliest first.
    children: &'a HashMap<usize, Vec<usize>>,
    /// Start of the trace's window.
    from: u64,
    /// End of the trace's window.
    to: u64,
    /// Bar width.
    width: usize,
}

impl Draw<'_> {
    /// Draws span `i` and its subtree. `branch` is `None` for a root, else
    /// the prefix of the parent's children and whether `i` is the last
    /// child; `inherited` holds the attributes shown by ancestors.
    fn draw(
        &self,
        i: usize,
        branch: Option<(&str, bool)>,
        inherited: &[(&'static str, String)],
        drawn: &mut [bool],
        lines: &mut Vec<Line>,
    ) {
        if drawn[i] {
            return;
        }
        drawn[i] = true;
        let s = &self.spans[i];
        let (prefix, child_prefix) = match branch {
            None => (String::new(), String::new()),
            Some((indent, last)) => (
                format!("{indent}{}", if last { "└─ " } else { "├─ " }),
                format!("{indent}{}", if last { "   " } else { "│  " }),
            ),
        };
        let (notes, shown) = span_notes(s, inherited);
        let mut label = format!("{prefix}{}", output::escape_text(&s.name));
        if !notes.is_empty() {
            label.push_str(&format!(" [{}]", notes.join(" ")));
        }
        lines.push(Line {
            label,
            duration: format!(
                "{} ms",
                millis_text(s.end_unix_nanos.saturating_sub(s.start_unix_nanos))
            ),
            bar: bar(s.start_unix_nanos, s.end_unix_nanos, self.from, self.to, self.width),
        });
        let mut context = inherited.to_vec();
        context.extend(shown);
        let kids: Vec<usize> = self
            .children
            .get(&i)
            .map(|k| k.iter().copied().filter(|&k| !drawn[k]).collect())
            .unwrap_or_default();
        for (n, &kid) in kids.iter().enumerate() {
            self.draw(kid, Some((&child_prefix, n + 1 == kids.len())), &context, drawn, lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    /// An arbitrary epoch for the tests, in nanoseconds.
    const T0: u64 = 1_767_225_600_000_000_000;

    /// A span from `start` to `end` ms after T0.
    fn span(id: &str, parent: &str, name: &str, start: f64, end: f64, attrs: &[(&str, &str)]) -> SpanRecord {
        let ms = |t: f64| T0 + (t * 1_000_000.0) as u64;
        SpanRecord {
            trace_id: TRACE.into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: name.into(),
            kind: "internal".into(),
            start_unix_nanos: ms(start),
            end_unix_nanos: ms(end),
            status: "unset".into(),
            status_message: String::new(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            service: "yrdctl-up".into(),
            region: String::new(),
        }
    }

    /// Three levels, two concurrent children of the fan-out (the later
    /// listed first, to check the ordering), and an orphan whose parent
    /// was never recorded.
    fn spans() -> Vec<SpanRecord> {
        let mut failed = span(
            "00000000000000b2",
            "00000000000000a2",
            "gateway.region",
            12.0,
            40.0,
            &[
                ("yrd.region", "320000"),
                ("yrd.dataset", "enterprise"),
                ("yrd.region.state", "REGION_STATE_UNAVAILABLE"),
                ("rpc.grpc.status_code", "14"),
            ],
        );
        failed.status = "error".into();
        failed.status_message = "UNAVAILABLE".into();
        vec![
            failed,
            span(
                "00000000000000a1",
                "",
                "yrd.mesh.v1.Federation/Query",
                0.0,
                80.0,
                &[("rpc.grpc.status_code", "0")],
            ),
            span(
                "00000000000000a2",
                "00000000000000a1",
                "gateway.fanout",
                10.0,
                70.0,
                &[("yrd.dataset", "enterprise")],
            ),
            span(
                "00000000000000b1",
                "00000000000000a2",
                "gateway.region",
                11.0,
                60.0,
                &[
                    ("yrd.region", "310000"),
                    ("yrd.dataset", "enterprise"),
                    ("yrd.rows", "20"),
                    ("yrd.region.state", "REGION_STATE_OK"),
                    ("rpc.grpc.status_code", "0"),
                ],
            ),
            span(
                "00000000000000c1",
                "00000000000000b1",
                "node.query",
                20.0,
                50.0,
                &[
                    ("yrd.region", "310000"),
                    ("yrd.dataset", "enterprise"),
                    ("yrd.rows", "20"),
                ],
            ),
            span(
                "00000000000000d1",
                "00000000000000ff",
                "store.query",
                30.0,
                30.5,
                &[("yrd.rows", "3")],
            ),
        ]
    }

    #[test]
    fn a_trace_is_drawn_as_a_tree() {
        let lines = draw_trace(&merge_spans(vec![spans()]), 40);
        let expected = [
            "trace 4bf92f3577b34da6a3ce929d0e0e4736 · 6 spans · 80.00 ms · services: yrdctl-up · regions: 310000, 320000",
            "span                                                                           duration  0 ms                            80.00 ms",
            "yrd.mesh.v1.Federation/Query                                                   80.00 ms  ████████████████████████████████████████",
            "└─ gateway.fanout [dataset=enterprise]                                         60.00 ms  ·····██████████████████████████████·····",
            "   ├─ gateway.region [region=310000 rows=20 state=ok]                          49.00 ms  ·····█████████████████████████··········",
            "   │  └─ node.query [rows=20]                                                  30.00 ms  ··········███████████████···············",
            "   └─ gateway.region [region=320000 state=unavailable grpc=UNAVAILABLE error]  28.00 ms  ······██████████████····················",
            "store.query [rows=3]                                                            0.50 ms  ···············█························",
            "note: the parent of store.query was not recorded by any admin endpoint of the profile \
             (a remote caller, a process not listed, or evicted); drawn as a root",
        ];
        assert_eq!(lines, expected, "\n{}", lines.join("\n"));
    }

    #[test]
    fn errors_are_described_once() {
        let mut s = span(
            "00000000000000e1",
            "",
            "store.query",
            0.0,
            1.0,
            &[("rpc.grpc.status_code", "13")],
        );
        s.status = "error".into();
        s.status_message = "database is locked".into();
        assert_eq!(span_notes(&s, &[]).0, ["grpc=INTERNAL", "error: database is locked"]);
        s.status_message = "x".repeat(70);
        let notes = span_notes(&s, &[]).0;
        assert_eq!(notes[1], format!("error: {}…", "x".repeat(60)));
        s.status_message = "INTERNAL".into();
        assert_eq!(span_notes(&s, &[]).0, ["grpc=INTERNAL", "error"]);
        // A region or dataset an ancestor shows is not repeated; another is.
        let s = span(
            "00000000000000e2",
            "",
            "node.query",
            0.0,
            1.0,
            &[("yrd.region", "310000"), ("yrd.dataset", "enterprise")],
        );
        let inherited = [
            ("yrd.region", "320000".to_owned()),
            ("yrd.dataset", "enterprise".to_owned()),
        ];
        assert_eq!(span_notes(&s, &inherited).0, ["region=310000"]);
    }

    /// Text a caller chose, with an escape sequence and a bidi override.
    const HOSTILE: &str = "x\x1b[31m\u{202e}y";
    /// [`HOSTILE`] as [`output::escape_text`] shows it.
    const HOSTILE_SHOWN: &str = "x\\x1b[31m\\u{202e}y";

    fn hostile_spans() -> Vec<SpanRecord> {
        let mut root = span(
            "00000000000000a1",
            "",
            &format!("root{HOSTILE}"),
            0.0,
            10.0,
            &[
                ("yrd.dataset", &format!("dataset{HOSTILE}")),
                ("yrd.region", &format!("region{HOSTILE}")),
                ("yrd.rows", HOSTILE),
                ("yrd.region.state", HOSTILE),
                ("rpc.grpc.status_code", HOSTILE),
            ],
        );
        root.status = "error".into();
        root.status_message = format!("failed{HOSTILE}");
        root.service = format!("service{HOSTILE}");
        root.trace_id = format!("trace{HOSTILE}");
        // A span whose parent is missing, named in the note under the tree.
        let orphan = span(
            "00000000000000b1",
            "00000000000000ff",
            &format!("orphan{HOSTILE}"),
            1.0,
            2.0,
            &[],
        );
        vec![root, orphan]
    }

    /// Whether `text` holds a character a terminal would act on.
    fn has_hidden(text: &str) -> bool {
        text.chars().any(output::is_hidden)
    }

    #[test]
    fn span_text_is_escaped_in_the_drawing() {
        let lines = draw_trace(&merge_spans(vec![hostile_spans()]), 10);
        let all = lines.join("\n");
        for line in &lines {
            assert!(!has_hidden(line), "{line:?}");
        }
        for shown in [
            format!("trace trace{HOSTILE_SHOWN} · 2 spans"),
            format!("services: service{HOSTILE_SHOWN}"),
            format!("regions: region{HOSTILE_SHOWN}"),
            format!("root{HOSTILE_SHOWN} ["),
            format!("region=region{HOSTILE_SHOWN}"),
            format!("dataset=dataset{HOSTILE_SHOWN}"),
            format!("rows={HOSTILE_SHOWN}"),
            format!("grpc={HOSTILE_SHOWN}"),
            format!("error: failed{HOSTILE_SHOWN}]"),
            format!("the parent of orphan{HOSTILE_SHOWN} was not recorded"),
        ] {
            assert!(all.contains(&shown), "{shown:?} in\n{all}");
        }
        assert!(all.contains(&format!("state={HOSTILE_SHOWN}")), "{all}");
        // Widths are those of the escaped text: the columns still line up.
        let bar_at = |line: &str| line.chars().count() - 10;
        assert_eq!(bar_at(&lines[2]), bar_at(&lines[3]), "{all}");
        // A long error is cut before it is escaped, never inside an escape.
        let mut long = span("00000000000000c1", "", "s", 0.0, 1.0, &[]);
        long.status = "error".into();
        long.status_message = format!("{}\u{202e}tail", "e".repeat(59));
        assert_eq!(
            span_notes(&long, &[]).0,
            [format!("error: {}\\u{{202e}}…", "e".repeat(59))]
        );
    }

    #[test]
    fn span_text_is_escaped_in_json() {
        let spans = hostile_spans();
        let text = json_line(&spans).unwrap();
        assert!(!has_hidden(&text), "{text:?}");
        assert!(text.contains("rootx\\u001b[31m\\u202ey"), "{text}");
        let back: Vec<SpanRecord> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spans, "the escaped JSON reads back to the same spans");

        let summaries = [TraceSummary {
            trace_id: TRACE.into(),
            root_name: format!("root{HOSTILE}"),
            start_unix_nanos: T0,
            duration_nanos: 1,
            span_count: 1,
            error: false,
        }];
        let text = json_line(&summaries).unwrap();
        assert!(!has_hidden(&text), "{text:?}");
        assert!(text.contains("rootx\\u001b[31m\\u202ey"), "{text}");
    }

    #[test]
    fn bars_are_placed_in_the_trace_window() {
        let ms = |t: u64| t * 1_000_000;
        // The whole window fills the bar.
        assert_eq!(bar_columns(0, ms(100), 0, ms(100), 40), (0, 40));
        // 10..30 ms of 100: columns 4..12.
        assert_eq!(bar_columns(ms(10), ms(30), 0, ms(100), 40), (4, 12));
        // A partial column is drawn (the end rounds up, the start down).
        assert_eq!(bar_columns(ms(11), ms(29), 0, ms(100), 40), (4, 12));
        // An instant still shows as one column, even at the very end.
        assert_eq!(bar_columns(ms(50), ms(50), 0, ms(100), 40), (20, 21));
        assert_eq!(bar_columns(ms(100), ms(100), 0, ms(100), 40), (39, 40));
        // The window need not start at zero.
        assert_eq!(bar_columns(ms(1050), ms(1100), ms(1000), ms(1100), 10), (5, 10));
        // A zero-length window: every span covers it all.
        assert_eq!(bar_columns(5, 5, 5, 5, 8), (0, 8));
        assert_eq!(bar(ms(10), ms(30), 0, ms(100), 20), "··████··············");
        assert_eq!(bar(0, 0, 0, 0, 3), "███");
        assert_eq!(bar(0, 1, 0, 1, 0), "");
    }

    #[test]
    fn duplicate_spans_are_merged_and_cycles_still_drawn() {
        let mut twice = spans();
        twice.truncate(3);
        let merged = merge_spans(vec![spans(), twice]);
        assert_eq!(merged.len(), 6);
        assert_eq!(merged[0].name, "yrd.mesh.v1.Federation/Query", "earliest first");
        // Two spans that are each other's parent: no root, both drawn.
        let a = span("000000000000000a", "000000000000000b", "a", 0.0, 2.0, &[]);
        let b = span("000000000000000b", "000000000000000a", "b", 1.0, 2.0, &[]);
        let lines = draw_trace(&[a, b], 4);
        assert_eq!(&lines[2..], ["a      2.00 ms  ████", "└─ b   1.00 ms  ··██"]);
    }

    fn summary(id: &str, root: &str, start_ms: u64, duration_ms: u64, spans: usize, error: bool) -> TraceSummary {
        TraceSummary {
            trace_id: id.into(),
            root_name: root.into(),
            start_unix_nanos: T0 + start_ms * 1_000_000,
            duration_nanos: duration_ms * 1_000_000,
            span_count: spans,
            error,
        }
    }

    #[test]
    fn summaries_are_merged_by_trace() {
        // The gateway saw all of trace a (0..100 ms, 12 spans); a node saw
        // its part (10..60 ms, 3 spans, an error) and trace c, which the
        // gateway no longer holds.
        let gateway = vec![
            summary("a", "yrd.mesh.v1.Federation/Query", 0, 100, 12, false),
            summary("b", "yrd.mesh.v1.Federation/Query", 200, 30, 9, false),
        ];
        let node = vec![
            summary("a", "yrd.mesh.v1.DataNode/Query", 10, 50, 3, true),
            summary("c", "yrd.mesh.v1.DataNode/Query", 300, 5, 3, false),
            // A node whose part of b ended after the gateway's spans did.
            summary("b", "yrd.mesh.v1.DataNode/Query", 210, 25, 3, false),
        ];
        let newest = merge_summaries(vec![gateway.clone(), node.clone()], Order::Newest, 10, true);
        let ids: Vec<&str> = newest.iter().map(|s| s.trace_id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        let a = &newest[2];
        assert_eq!(
            (
                a.root_name.as_str(),
                a.start_unix_nanos,
                a.duration_nanos,
                a.span_count,
                a.error
            ),
            ("yrd.mesh.v1.Federation/Query", T0, 100_000_000, 12, true)
        );
        let b = &newest[1];
        assert_eq!((b.start_unix_nanos, b.duration_nanos), (T0 + 200_000_000, 35_000_000));
        assert_eq!(b.root_name, "yrd.mesh.v1.Federation/Query");
        // The order of the endpoints does not matter.
        let reversed = merge_summaries(vec![node.clone(), gateway.clone()], Order::Newest, 10, true);
        assert_eq!(reversed, newest);

        let slowest = merge_summaries(vec![gateway.clone(), node.clone()], Order::Slowest, 2, true);
        let ids: Vec<&str> = slowest.iter().map(|s| s.trace_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(merge_summaries(vec![gateway, node], Order::Newest, 1, true).len(), 1);
        assert!(merge_summaries(vec![Vec::new()], Order::Slowest, 5, true).is_empty());

        // Health checks crowd out the queries unless asked for.
        let checks: Vec<TraceSummary> = (0..5)
            .map(|i| summary(&format!("h{i}"), "grpc.health.v1.Health/Check", 1000 + i, 0, 1, false))
            .collect();
        let lists = vec![
            checks,
            vec![summary("q", "yrd.mesh.v1.Federation/Query", 10, 9, 20, false)],
        ];
        let ids = |v: Vec<TraceSummary>| v.into_iter().map(|s| s.trace_id).collect::<Vec<_>>();
        assert_eq!(ids(merge_summaries(lists.clone(), Order::Newest, 2, false)), ["q"]);
        assert_eq!(ids(merge_summaries(lists, Order::Newest, 2, true)), ["h4", "h3"]);
    }

    #[test]
    fn summary_table_rows() {
        let (headers, rows) = summary_rows(&[summary("a", "root", 1234, 5, 3, true)]);
        assert_eq!(
            headers,
            ["trace id", "root span", "start", "duration ms", "spans", "error"]
        );
        assert_eq!(rows, [["a", "root", "2026-01-01T00:00:01.234Z", "5.00", "3", "error"]]);
    }

    #[test]
    fn request_paths() {
        assert_eq!(request_path(&TraceQuery::Last(5), true), "/traces?last=5");
        assert_eq!(request_path(&TraceQuery::Slowest(3), true), "/traces?slowest=3");
        assert_eq!(request_path(&TraceQuery::Last(5), false), "/traces?last=1000");
        assert_eq!(request_path(&TraceQuery::Slowest(3), false), "/traces?slowest=1000");
        assert_eq!(
            request_path(&TraceQuery::Trace(TRACE.into()), false),
            format!("/traces?trace_id={TRACE}")
        );
    }

    #[tokio::test]
    async fn unreachable_endpoints_warn_unless_all_fail() {
        // A port nobody listens on: bind, note the port, close.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            AdminUrl::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap()
        };
        let e = fetch_all::<Vec<TraceSummary>>(std::slice::from_ref(&closed), "/traces", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no admin endpoint answered"), "{e}");
        assert!(e.to_string().contains(&closed.url), "{e}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = AdminUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await.unwrap();
            let body = serde_json::to_string(&[summary("a", "root", 0, 1, 1, false)]).unwrap();
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(body.as_bytes()).await.unwrap();
        });
        let lists = fetch_all::<Vec<TraceSummary>>(&[closed, live], "/traces?last=1", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(lists.len(), 1);
        assert_eq!(lists[0][0].trace_id, "a");
    }
}
