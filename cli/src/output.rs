//! Printing answers: rows decoded from their `Any` wrappers with
//! prost-reflect and written as a table, JSON Lines or CSV; tables of
//! catalog, regions and per-region outcomes; proto JSON of responses.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use clap::ValueEnum;
use comfy_table::{CellAlignment, Table};
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value};
use yrd_proto::datetime::format_timestamp;
use yrd_proto::mesh::{RegionState, RegionStatus};
use yrd_proto::schema::TYPE_URL_PREFIX;

/// Full name of the well-known timestamp message.
const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// JSON: one object per line (rows, groups) or the proto JSON of the answer.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Decodes rows from their `Any` wrappers by the message named in the
/// type URL, with the descriptors compiled into this build.
#[derive(Debug)]
pub struct RowDecoder {
    /// The mesh's descriptors, dataset messages included.
    pool: DescriptorPool,
    /// Descriptors already looked up, by type URL.
    by_url: HashMap<String, MessageDescriptor>,
}

impl RowDecoder {
    /// A decoder over the mesh's descriptor set.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            pool: yrd_proto::descriptor_pool().context("decoding the compiled-in descriptor set")?,
            by_url: HashMap::new(),
        })
    }

    /// The pool, for encoding responses as proto JSON.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Decodes one row.
    pub fn decode(&mut self, row: &prost_types::Any) -> anyhow::Result<DynamicMessage> {
        let descriptor = match self.by_url.get(&row.type_url) {
            Some(d) => d.clone(),
            None => {
                let name = row.type_url.strip_prefix(TYPE_URL_PREFIX).unwrap_or(&row.type_url);
                let d = self.pool.get_message_by_name(name).with_context(|| {
                    format!(
                        "a row of type {:?} is not known to this yrdctl; a newer build may know it",
                        row.type_url
                    )
                })?;
                self.by_url.insert(row.type_url.clone(), d.clone());
                d
            }
        };
        DynamicMessage::decode(descriptor, row.value.as_slice())
            .with_context(|| format!("a row of type {} does not decode", row.type_url))
    }
}

/// The text of one field of a row for a table or CSV cell: empty when the
/// message has no such field or the field is unset.
pub fn cell(message: &DynamicMessage, field: &str) -> String {
    let Some(fd) = message.descriptor().get_field_by_name(field) else {
        return String::new();
    };
    // Fields without presence (proto3 scalars) are never "unset": 0 is a
    // value. Message fields (timestamps) and `optional` ones can be absent.
    if fd.supports_presence() && !message.has_field(&fd) {
        return String::new();
    }
    value_text(&message.get_field(&fd), &fd)
}

/// Whether a field holds numbers, which tables align right.
pub fn is_numeric(field: &FieldDescriptor) -> bool {
    matches!(
        field.kind(),
        Kind::Double
            | Kind::Float
            | Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed32
            | Kind::Sfixed64
    )
}

/// A reflected value as text.
fn value_text(value: &Value, field: &FieldDescriptor) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(x) => number_text(f64::from(*x)),
        Value::F64(x) => number_text(*x),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => b.iter().map(|byte| format!("{byte:02x}")).collect(),
        Value::EnumNumber(n) => match field.kind() {
            Kind::Enum(e) => e.get_value(*n).map_or_else(|| n.to_string(), |v| v.name().to_owned()),
            _ => n.to_string(),
        },
        Value::Message(m) if m.descriptor().full_name() == TIMESTAMP => timestamp_message_text(m),
        // Datasets are flat; anything else is shown as its proto JSON.
        Value::Message(m) => serde_json::to_string(m).unwrap_or_default(),
        Value::List(items) => items
            .iter()
            .map(|v| value_text(v, field))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Map(_) => format!("{value:?}"),
    }
}

/// A double without exponent noise: Rust prints the shortest text that
/// reads back to the same value and never uses an exponent, so 6.17284e8
/// is `617284000` and 0.1 stays `0.1`.
pub fn number_text(x: f64) -> String {
    format!("{x}")
}

/// A `google.protobuf.Timestamp` message as RFC 3339.
fn timestamp_message_text(m: &DynamicMessage) -> String {
    let seconds = match m.get_field_by_name("seconds").as_deref() {
        Some(Value::I64(s)) => *s,
        _ => 0,
    };
    let nanos = match m.get_field_by_name("nanos").as_deref() {
        Some(Value::I32(n)) => *n,
        _ => 0,
    };
    timestamp_text(seconds, nanos)
}

/// Seconds and nanoseconds as RFC 3339 in UTC; fractions only when present.
pub fn timestamp_text(seconds: i64, nanos: i32) -> String {
    let text = format_timestamp(seconds);
    if nanos <= 0 {
        return text;
    }
    let fraction = format!("{nanos:09}");
    let fraction = fraction.trim_end_matches('0');
    match text.strip_suffix('Z') {
        Some(base) => format!("{base}.{fraction}Z"),
        None => text,
    }
}

/// A protobuf timestamp as RFC 3339.
pub fn timestamp(ts: &prost_types::Timestamp) -> String {
    timestamp_text(ts.seconds, ts.nanos)
}

/// A protobuf duration in milliseconds, one decimal.
pub fn millis(d: &prost_types::Duration) -> String {
    let ms = d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1_000_000.0;
    format!("{ms:.1}")
}

/// The line naming a call's trace, with the command that draws it.
pub fn trace_hint(trace_id: &str) -> String {
    format!("trace: {trace_id}  (yrdctl traces --trace-id {trace_id})")
}

/// A region state in words: `ok`, `deadline exceeded`, ...
pub fn state_name(state: i32) -> String {
    RegionState::try_from(state).map_or_else(
        |_| format!("state {state}"),
        |s| {
            s.as_str_name()
                .trim_start_matches("REGION_STATE_")
                .to_ascii_lowercase()
                .replace('_', " ")
        },
    )
}

/// A region's display name, for the regions this build knows.
pub fn region_name(region: &str) -> &'static str {
    yrd_datasets::codes::regions::province(region).map_or("", |p| p.name_en)
}

/// A table in the workspace's plain style; numeric columns align right.
pub fn table(headers: &[String], rows: Vec<Vec<String>>, numeric: &[bool]) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(headers);
    for row in rows {
        t.add_row(row);
    }
    for (i, &right) in numeric.iter().enumerate() {
        if right && let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Headers and rows written as a table, CSV or JSON Lines (one object per
/// row, keyed by header; `numeric` columns become JSON numbers when they
/// parse as such).
pub fn write_records(
    out: &mut dyn Write,
    format: Format,
    headers: &[String],
    rows: Vec<Vec<String>>,
    numeric: &[bool],
) -> anyhow::Result<()> {
    match format {
        Format::Table => writeln!(out, "{}", table(headers, rows, numeric))?,
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(headers)?;
            for row in rows {
                w.write_record(row)?;
            }
            w.flush()?;
        }
        Format::Json => {
            for row in rows {
                let object: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .zip(row)
                    .zip(numeric.iter().chain(std::iter::repeat(&false)))
                    .map(|((h, v), &num)| (h.clone(), json_cell(v, num)))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Object(object))?;
            }
        }
    }
    Ok(())
}

/// A cell as a JSON value: numbers stay numbers, empty cells are null.
fn json_cell(text: String, numeric: bool) -> serde_json::Value {
    if text.is_empty() {
        return serde_json::Value::Null;
    }
    if numeric && let Ok(n) = text.parse::<serde_json::Number>() {
        return serde_json::Value::Number(n);
    }
    serde_json::Value::String(text)
}

/// A prost message as proto JSON, through its descriptor.
pub fn proto_json<M: prost::Message>(pool: &DescriptorPool, message: &M, full_name: &str) -> anyhow::Result<String> {
    let descriptor = pool
        .get_message_by_name(full_name)
        .with_context(|| format!("{full_name} is not in the descriptor set"))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .with_context(|| format!("re-decoding {full_name}"))?;
    Ok(serde_json::to_string(&dynamic)?)
}

/// Writes rows as they arrive: JSON Lines and CSV stream, a table waits for
/// all rows (the row count is bounded by `--limit`).
pub struct RowWriter<W: Write> {
    /// Where rows go.
    out: W,
    /// How they are written.
    format: Format,
    /// Field names of the table and CSV columns.
    columns: Vec<String>,
    /// Table rows, kept until [`RowWriter::finish`].
    rows: Vec<Vec<String>>,
    /// Per column, whether it holds numbers (from the first row's descriptor).
    numeric: Option<Vec<bool>>,
    /// Whether the CSV header has been written.
    header_written: bool,
}

impl<W: Write> RowWriter<W> {
    /// A writer for these columns.
    pub fn new(out: W, format: Format, columns: Vec<String>) -> Self {
        Self {
            out,
            format,
            columns,
            rows: Vec::new(),
            numeric: None,
            header_written: false,
        }
    }

    /// Writes (or, for a table, keeps) one row.
    pub fn push(&mut self, row: &DynamicMessage) -> anyhow::Result<()> {
        if self.numeric.is_none() {
            let descriptor = row.descriptor();
            // A dataset this build has no schema for: show every field of
            // the message, in declaration order.
            if self.columns.is_empty() && self.format != Format::Json {
                self.columns = descriptor.fields().map(|f| f.name().to_owned()).collect();
            }
            self.numeric = Some(
                self.columns
                    .iter()
                    .map(|c| descriptor.get_field_by_name(c).is_some_and(|f| is_numeric(&f)))
                    .collect(),
            );
        }
        match self.format {
            Format::Json => {
                let text = serde_json::to_string(row)?;
                writeln!(self.out, "{text}")?;
            }
            Format::Csv => {
                self.write_csv_header()?;
                let cells: Vec<String> = self.columns.iter().map(|c| cell(row, c)).collect();
                self.out.write_all(&csv_line(&cells)?)?;
            }
            Format::Table => self.rows.push(self.columns.iter().map(|c| cell(row, c)).collect()),
        }
        Ok(())
    }

    /// Flushes what was written, so a reader sees each batch as it comes.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }

    /// Prints the table (or the CSV header of an empty answer) and flushes.
    pub fn finish(mut self) -> anyhow::Result<W> {
        match self.format {
            Format::Table => {
                let numeric = self.numeric.take().unwrap_or_default();
                let rows = std::mem::take(&mut self.rows);
                writeln!(self.out, "{}", table(&self.columns, rows, &numeric))?;
            }
            Format::Csv => self.write_csv_header()?,
            Format::Json => {}
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes the CSV header once.
    fn write_csv_header(&mut self) -> anyhow::Result<()> {
        if !self.header_written {
            self.header_written = true;
            let line = csv_line(&self.columns)?;
            self.out.write_all(&line)?;
        }
        Ok(())
    }
}

/// One CSV record, quoted as needed, with its line end. Encoded apart from
/// the output so that writing stays a plain `io::Write`, whose errors (a
/// closed pipe) are reported as such.
fn csv_line(cells: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(cells)?;
    w.into_inner().context("encoding a CSV record")
}

/// The outcome of every region as a table: region, name, state, rows,
/// elapsed ms, freshness, message.
pub fn region_table(statuses: &[RegionStatus]) -> Table {
    let headers: Vec<String> = ["region", "name", "state", "rows", "elapsed ms", "freshness", "message"]
        .map(String::from)
        .to_vec();
    let rows = statuses
        .iter()
        .map(|s| {
            vec![
                s.region.clone(),
                region_name(&s.region).to_owned(),
                state_name(s.state),
                s.rows.to_string(),
                // A region that was not asked took no time worth showing.
                if s.state == RegionState::Skipped as i32 {
                    String::new()
                } else {
                    s.elapsed.as_ref().map(millis).unwrap_or_default()
                },
                s.freshness.as_ref().map(timestamp).unwrap_or_default(),
                s.message.clone(),
            ]
        })
        .collect();
    table(&headers, rows, &[false, false, false, true, true, false, false])
}

/// A warning line when some asked regions did not answer in full: the rows
/// or groups above are then a best-effort answer.
pub fn partial_note(statuses: &[RegionStatus]) -> Option<String> {
    let failed: Vec<String> = statuses
        .iter()
        .filter(|s| s.state != RegionState::Ok as i32 && s.state != RegionState::Skipped as i32)
        .map(|s| format!("{} ({})", s.region, state_name(s.state)))
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "partial answer: {} did not answer in full, so their data may be missing above",
            failed.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use yrd_proto::datasets::enterprise::v1::Enterprise;
    use yrd_proto::datasets::environment::v1::AirQualityHourly;

    use super::*;

    fn any<M: Message>(message: &M, name: &str) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("{TYPE_URL_PREFIX}{name}"),
            value: message.encode_to_vec(),
        }
    }

    fn enterprise() -> prost_types::Any {
        any(
            &Enterprise {
                credit_code: "91320500MA1XYZ1234".into(),
                name: "苏州恒达机械有限公司".into(),
                legal_representative: "张*".into(),
                representative_id_number: String::new(),
                region: "320000".into(),
                city: "320500".into(),
                district: "320505".into(),
                industry: "C34".into(),
                registered_capital: 617_284_000.0,
                established: "2016-03-09".into(),
                status: "active".into(),
                address: "苏州市虎丘区, \"A\" 座".into(),
                ..Enterprise::default()
            },
            "yrd.datasets.enterprise.v1.Enterprise",
        )
    }

    fn air() -> prost_types::Any {
        any(
            &AirQualityHourly {
                station_code: "1141A".into(),
                station_name: "Xuhui Shangshida".into(),
                region: "310000".into(),
                city: "310100".into(),
                observed_at: Some(prost_types::Timestamp {
                    seconds: 1_735_707_600,
                    nanos: 0,
                }),
                pm25: 35.5,
                pm10: 0.1,
                o3: 0.0,
                no2: 1e-7,
                so2: 6.0,
                co: 0.8,
                aqi: 51,
                aqi_level: 2,
                primary_pollutant: "PM2.5".into(),
            },
            "yrd.datasets.environment.v1.AirQualityHourly",
        )
    }

    #[test]
    fn enterprise_cells() {
        let row = RowDecoder::new().unwrap().decode(&enterprise()).unwrap();
        assert_eq!(cell(&row, "credit_code"), "91320500MA1XYZ1234");
        assert_eq!(cell(&row, "name"), "苏州恒达机械有限公司");
        assert_eq!(cell(&row, "registered_capital"), "617284000");
        assert_eq!(cell(&row, "established"), "2016-03-09");
        assert_eq!(cell(&row, "representative_id_number"), "", "masked fields stay empty");
        assert_eq!(cell(&row, "no_such_field"), "");
        let numeric = is_numeric(&row.descriptor().get_field_by_name("registered_capital").unwrap());
        assert!(numeric);
    }

    #[test]
    fn air_quality_cells() {
        let row = RowDecoder::new().unwrap().decode(&air()).unwrap();
        assert_eq!(cell(&row, "observed_at"), "2025-01-01T05:00:00Z");
        assert_eq!(cell(&row, "pm25"), "35.5");
        assert_eq!(cell(&row, "pm10"), "0.1");
        assert_eq!(cell(&row, "o3"), "0", "zero is a value, not unset");
        assert_eq!(cell(&row, "no2"), "0.0000001");
        assert_eq!(cell(&row, "aqi"), "51");
        let mut unset = AirQualityHourly::decode(air().value.as_slice()).unwrap();
        unset.observed_at = None;
        let row = RowDecoder::new()
            .unwrap()
            .decode(&any(&unset, "yrd.datasets.environment.v1.AirQualityHourly"))
            .unwrap();
        assert_eq!(cell(&row, "observed_at"), "", "an unset timestamp is empty");
    }

    #[test]
    fn timestamps_keep_fractions() {
        assert_eq!(timestamp_text(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp_text(0, 250_000_000), "1970-01-01T00:00:00.25Z");
    }

    fn written(format: Format, columns: &[&str], rows: &[prost_types::Any]) -> String {
        let mut decoder = RowDecoder::new().unwrap();
        let mut w = RowWriter::new(Vec::new(), format, columns.iter().map(|c| c.to_string()).collect());
        for r in rows {
            w.push(&decoder.decode(r).unwrap()).unwrap();
        }
        String::from_utf8(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn csv_rows() {
        let text = written(
            Format::Csv,
            &["credit_code", "registered_capital", "address"],
            &[enterprise()],
        );
        assert_eq!(
            text,
            "credit_code,registered_capital,address\n91320500MA1XYZ1234,617284000,\"苏州市虎丘区, \"\"A\"\" 座\"\n"
        );
        let text = written(Format::Csv, &["station_code", "observed_at", "aqi"], &[air()]);
        assert_eq!(text, "station_code,observed_at,aqi\n1141A,2025-01-01T05:00:00Z,51\n");
        assert_eq!(
            written(Format::Csv, &["a", "b"], &[]),
            "a,b\n",
            "an empty answer keeps its header"
        );
    }

    #[test]
    fn json_rows_are_proto_json() {
        let text = written(Format::Json, &[], &[enterprise(), air()]);
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["creditCode"], "91320500MA1XYZ1234");
        assert_eq!(lines[0]["registeredCapital"], 617_284_000.0);
        assert!(lines[0].get("representativeIdNumber").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["observedAt"], "2025-01-01T05:00:00Z");
        assert_eq!(lines[1]["aqi"], "51", "int64 is a string in proto JSON");
    }

    #[test]
    fn table_rows() {
        let text = written(
            Format::Table,
            &["name", "registered_capital", "established"],
            &[enterprise()],
        );
        assert!(text.contains("registered_capital"), "{text}");
        assert!(text.contains("苏州恒达机械有限公司"), "{text}");
        assert!(text.contains("617284000"), "{text}");
        assert!(!text.contains("e8"), "{text}");
        let text = written(Format::Table, &["station_code", "observed_at", "pm25"], &[air()]);
        assert!(text.contains("2025-01-01T05:00:00Z") && text.contains("35.5"), "{text}");
    }

    #[test]
    fn unknown_row_types_are_named() {
        let err = RowDecoder::new()
            .unwrap()
            .decode(&prost_types::Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: Vec::new(),
            })
            .unwrap_err();
        assert!(err.to_string().contains("x.Y"), "{err}");
    }

    #[test]
    fn partial_answers_are_flagged() {
        let status = |region: &str, state: RegionState| RegionStatus {
            region: region.into(),
            state: state as i32,
            ..Default::default()
        };
        assert_eq!(
            partial_note(&[
                status("310000", RegionState::Ok),
                status("320000", RegionState::Skipped)
            ]),
            None
        );
        let note = partial_note(&[
            status("310000", RegionState::Ok),
            status("330000", RegionState::Unavailable),
        ])
        .unwrap();
        assert!(
            note.starts_with("partial answer: 330000 (unavailable) did not answer"),
            "{note}"
        );
    }

    #[test]
    fn region_states_in_words() {
        assert_eq!(state_name(RegionState::Ok as i32), "ok");
        assert_eq!(state_name(RegionState::DeadlineExceeded as i32), "deadline exceeded");
        assert_eq!(state_name(99), "state 99");
        assert_eq!(region_name("320000"), "Jiangsu");
        assert_eq!(
            millis(&prost_types::Duration {
                seconds: 1,
                nanos: 300_000
            }),
            "1000.3"
        );
    }
}
