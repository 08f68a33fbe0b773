//! `yrdctl aggregate`: grouped metrics across regions, merged by the gateway.

use std::io::Write;

use anyhow::Context;
use yrd_proto::mesh::value::Kind as ValueKind;
use yrd_proto::mesh::{AggregateFunction, AggregateRequest, AggregateResponse, Metric, Value};
use yrd_proto::schema::{DatasetSchema, Registry};
use yrd_query::order::{metric_name, parse_metric};

use crate::cli::AggregateArgs;
use crate::client::{Connection, status_error};
use crate::output::{self, Format};
use crate::query::consistency;

/// The metrics of `--metric` flags, parsed against the dataset (count(*)
/// when none), so that a typo is reported before anything is sent.
pub fn metrics(schema: &DatasetSchema, texts: &[String]) -> anyhow::Result<Vec<Metric>> {
    if texts.is_empty() {
        return Ok(vec![Metric {
            function: AggregateFunction::Count as i32,
            field: String::new(),
        }]);
    }
    texts
        .iter()
        .map(|t| parse_metric(t, schema).with_context(|| format!("--metric {t:?}")))
        .collect()
}

/// A group key or metric value as text.
pub fn value_text(value: Option<&Value>) -> String {
    match value.and_then(|v| v.kind.as_ref()) {
        None => String::new(),
        Some(ValueKind::StringValue(s) | ValueKind::DateValue(s)) => s.clone(),
        Some(ValueKind::IntValue(n)) => n.to_string(),
        Some(ValueKind::DoubleValue(x)) => output::number_text(*x),
        Some(ValueKind::BoolValue(b)) => b.to_string(),
        Some(ValueKind::TimestampValue(ts)) => output::timestamp(ts),
    }
}

/// Whether a value is a number (aligned right, a JSON number).
fn is_number(value: Option<&Value>) -> bool {
    matches!(
        value.and_then(|v| v.kind.as_ref()),
        Some(ValueKind::IntValue(_) | ValueKind::DoubleValue(_))
    )
}

/// The lines under the region table: the number of groups, a note when
/// the answer is partial, the trace and the gateway's audit record (the
/// gateway's text, shown through [`output::escape_text`]).
fn footer(answer: &AggregateResponse) -> String {
    let groups = answer.groups.len();
    let mut footer = format!("{groups} group{}", if groups == 1 { "" } else { "s" });
    if let Some(note) = output::partial_note(&answer.regions) {
        footer.push('\n');
        footer.push_str(&note);
    }
    if !answer.trace_id.is_empty() {
        footer.push('\n');
        footer.push_str(&output::trace_hint(&answer.trace_id));
    }
    if !answer.audit_id.is_empty() {
        footer.push_str(&format!(
            "\ngateway audit record: {}",
            output::escape_text(&answer.audit_id)
        ));
    }
    footer
}

/// Runs `yrdctl aggregate`.
pub async fn aggregate(conn: &Connection, args: &AggregateArgs) -> anyhow::Result<()> {
    let registry = Registry::standard().map_err(|e| anyhow::anyhow!("dataset schemas: {e}"))?;
    let schema = registry.get(&args.dataset).with_context(|| {
        let known: Vec<&str> = registry.datasets().iter().map(|d| d.id.as_str()).collect();
        format!(
            "dataset {:?} does not exist (known: {})",
            args.dataset,
            known.join(", ")
        )
    })?;
    let metrics = metrics(schema, &args.metrics)?;
    let mut client = conn.connect().await?;
    let req = conn.request(AggregateRequest {
        dataset: args.dataset.clone(),
        filter: args.filter.clone().unwrap_or_default(),
        group_by: args.group_by.clone(),
        metrics: metrics.clone(),
        regions: args.regions.clone(),
        consistency: consistency(args.all_regions) as i32,
        purpose: args.purpose.clone(),
        ..Default::default()
    });
    let answer = client.aggregate(req).await.map_err(status_error)?.into_inner();

    let mut headers = args.group_by.clone();
    headers.extend(metrics.iter().map(metric_name));
    let mut numeric = vec![false; headers.len()];
    let rows: Vec<Vec<String>> = answer
        .groups
        .iter()
        .map(|g| {
            let keys = (0..args.group_by.len()).map(|i| g.keys.get(i));
            let values = (0..metrics.len()).map(|i| g.metrics.get(i).and_then(|m| m.value.as_ref()));
            keys.chain(values)
                .enumerate()
                .map(|(i, v)| {
                    if is_number(v) {
                        numeric[i] = true;
                    }
                    value_text(v)
                })
                .collect()
        })
        .collect();

    let mut out = std::io::stdout().lock();
    output::write_records(&mut out, args.output, &headers, rows, &numeric)?;
    let footer = footer(&answer);
    let regions = output::region_table(&answer.regions);
    if args.output == Format::Table {
        writeln!(out, "\n{regions}\n{footer}")?;
        out.flush()?;
    } else {
        out.flush()?;
        drop(out);
        eprintln!("{regions}\n{footer}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_against_the_schema() {
        let schema = Registry::standard().unwrap().get("enterprise").unwrap();
        let m = metrics(schema, &[]).unwrap();
        assert_eq!(m.iter().map(metric_name).collect::<Vec<_>>(), ["count(*)"]);
        let m = metrics(schema, &["avg(registered_capital)".into(), "COUNT(*)".into()]).unwrap();
        assert_eq!(
            m.iter().map(metric_name).collect::<Vec<_>>(),
            ["avg(registered_capital)", "count(*)"]
        );
        let e = metrics(schema, &["sum(name)".into()]).unwrap_err();
        assert!(format!("{e:#}").starts_with("--metric \"sum(name)\": "), "{e:#}");
        assert!(metrics(schema, &["median(registered_capital)".into()]).is_err());
    }

    #[test]
    fn footer_ids_are_escaped() {
        let answer = AggregateResponse {
            trace_id: "t\x1b[31m".into(),
            audit_id: "gateway-g-1\u{202e}\x1b[2J".into(),
            ..AggregateResponse::default()
        };
        assert_eq!(
            footer(&answer),
            "0 groups\ntrace: t\\x1b[31m  (yrdctl traces --trace-id t\\x1b[31m)\n\
             gateway audit record: gateway-g-1\\u{202e}\\x1b[2J"
        );
    }

    #[test]
    fn values_print_plainly() {
        let v = |kind| Value { kind: Some(kind) };
        assert_eq!(value_text(Some(&v(ValueKind::DoubleValue(6.17284e8)))), "617284000");
        assert_eq!(value_text(Some(&v(ValueKind::IntValue(42)))), "42");
        assert_eq!(value_text(Some(&v(ValueKind::StringValue("320000".into())))), "320000");
        assert_eq!(
            value_text(Some(&v(ValueKind::TimestampValue(prost_types::Timestamp {
                seconds: 86_400,
                nanos: 0
            })))),
            "1970-01-02T00:00:00Z"
        );
        assert_eq!(value_text(None), "");
        assert!(is_number(Some(&v(ValueKind::IntValue(1)))));
    }
}
