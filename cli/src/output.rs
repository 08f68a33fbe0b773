//! Printing answers: rows decoded from their `Any` wrappers with
//! prost-reflect and written as a table, JSON Lines or CSV; tables of
//! catalog, regions and per-region outcomes; proto JSON of responses.
//!
//! What the data says reaches a terminal or a spreadsheet, so it is made
//! harmless on the way out:
//!
//! - **Tables** (and the other lines for people, such as [`trace_hint`]
//!   and [`partial_note`]) show control characters (C0, DEL, C1), bidi
//!   controls and the other invisible format characters (Unicode `Cf`,
//!   and the line and paragraph separators) as visible escapes ([`escape_text`]:
//!   `\x1b`, `\n`, `\u{202e}`), and column widths are measured on the escaped
//!   text. Backslashes are left as they are.
//! - **CSV** cells that a spreadsheet would run as a formula (starting with
//!   `=`, `+`, `-`, `@`, tab or CR, as OWASP's CSV-injection guidance
//!   lists, also after leading whitespace or a BOM, which a spreadsheet may
//!   trim) get a leading `'` ([`csv_cell`]), except cells that are a plain
//!   number (`-12`, `+3.5`, `-1e-7`), which no spreadsheet runs: negative
//!   numbers, of numeric fields or not, stay numbers. `yrdctl --csv-raw`
//!   turns this off ([`set_csv_raw`]).
//! - **JSON** is escaped by serde for `"`, `\` and C0; [`json_text`] also
//!   writes DEL, C1 and the format characters as `\uXXXX`, which reads back
//!   to the same string.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

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
    let trace_id = escape_text(trace_id);
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

/// Whether `c` is shown as an escape in text for people: C0 controls
/// (tab and line ends included), DEL, C1 controls, the line and paragraph
/// separators, and every format character (Unicode general category `Cf`:
/// the bidi controls U+061C, U+200E/U+200F, U+202A–U+202E and
/// U+2066–U+2069, zero-width characters, the BOM, tag characters, ...).
pub fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

/// Text from the data as a terminal may show it: every [`is_hidden`]
/// character as a visible escape (`\t`, `\n`, `\r`, `\x1b` for the other C0
/// controls and DEL, `\u{9b}` or `\u{202e}` for the rest), everything else
/// as it is. Borrowed when nothing needs escaping.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{0}'..='\u{1f}' | '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if is_hidden(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether CSV cells are written as they are ([`set_csv_raw`]).
static CSV_RAW: AtomicBool = AtomicBool::new(false);

/// Turns the CSV formula protection of [`csv_cell`] off (`yrdctl
/// --csv-raw`) or back on, for every CSV this process writes.
pub fn set_csv_raw(raw: bool) {
    CSV_RAW.store(raw, Ordering::Relaxed);
}

/// Whether CSV cells are written as they are.
pub fn csv_raw() -> bool {
    CSV_RAW.load(Ordering::Relaxed)
}

/// One CSV cell made safe to open in a spreadsheet: a cell starting with
/// tab or CR, or with `=`, `+`, `-` or `@` after any whitespace (Unicode's,
/// the ideographic space included), BOMs or zero-width spaces, which a
/// spreadsheet may trim when it imports, gets a leading `'`, so that it is
/// shown as text instead of run as a formula (`=cmd|' /C calc'!A0`),
/// unless what follows the whitespace is a plain number such as `-12.5`,
/// which stays a number.
pub fn csv_cell(text: &str) -> Cow<'_, str> {
    if text.starts_with(['\t', '\r']) {
        return Cow::Owned(format!("'{text}"));
    }
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '\u{feff}' | '\u{200b}'));
    match trimmed.chars().next() {
        Some('=' | '+' | '-' | '@') if !is_plain_number(trimmed) => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
    }
}

/// A decimal number and nothing else: an optional sign, digits with at
/// most one `.`, an optional exponent (`-12`, `+3.5`, `-1e-7`).
fn is_plain_number(text: &str) -> bool {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (digits(int) || int.is_empty()) && (digits(frac) || frac.is_empty()) && !(int.is_empty() && frac.is_empty())
        }
        None => digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(digits)
}

/// Serialized JSON with DEL, the C1 controls and the format characters
/// ([`is_hidden`] beyond C0: serde escapes C0 in strings already, and any
/// left is whitespace between tokens) written as `\uXXXX` escapes
/// (surrogate pairs above the BMP). Outside strings JSON holds only ASCII
/// punctuation, letters, digits and whitespace, so every such character is
/// inside a string, and the escaped text parses to the same value.
pub fn json_text(json: String) -> String {
    let escaped = |c: char| c > '\u{1f}' && is_hidden(c);
    if !json.chars().any(escaped) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escaped(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A table in the workspace's plain style; numeric columns align right.
/// Every header and cell is shown through [`escape_text`], so widths are
/// those of the escaped text.
pub fn table(headers: &[String], rows: Vec<Vec<String>>, numeric: &[bool]) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(headers.iter().map(|h| escape_text(h).into_owned()));
    for row in rows {
        t.add_row(row.into_iter().map(|c| match escape_text(&c) {
            Cow::Borrowed(_) => c,
            Cow::Owned(escaped) => escaped,
        }));
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
            let raw = csv_raw();
            let mut w = csv::Writer::from_writer(out);
            w.write_record(csv_cells(headers, raw))?;
            for row in rows {
                w.write_record(csv_cells(&row, raw))?;
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
                writeln!(out, "{}", json_text(serde_json::Value::Object(object).to_string()))?;
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
    Ok(json_text(serde_json::to_string(&dynamic)?))
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
    /// CSV cells as they are, without formula protection ([`csv_cell`]).
    csv_raw: bool,
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
            csv_raw: csv_raw(),
        }
    }

    /// Writes CSV cells as they are (`true`) or with formula protection
    /// (`false`, the default unless [`set_csv_raw`] said otherwise).
    pub fn with_csv_raw(mut self, raw: bool) -> Self {
        self.csv_raw = raw;
        self
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
                let text = json_text(serde_json::to_string(row)?);
                writeln!(self.out, "{text}")?;
            }
            Format::Csv => {
                self.write_csv_header()?;
                let cells: Vec<String> = self.columns.iter().map(|c| cell(row, c)).collect();
                self.out.write_all(&csv_line(&cells, self.csv_raw)?)?;
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
            let line = csv_line(&self.columns, self.csv_raw)?;
            self.out.write_all(&line)?;
        }
        Ok(())
    }
}

/// One CSV record, quoted as needed, with its line end. Encoded apart from
/// the output so that writing stays a plain `io::Write`, whose errors (a
/// closed pipe) are reported as such.
fn csv_line(cells: &[String], raw: bool) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(csv_cells(cells, raw))?;
    w.into_inner().context("encoding a CSV record")
}

/// The cells of one CSV record, through [`csv_cell`] unless `raw`.
fn csv_cells(cells: &[String], raw: bool) -> impl Iterator<Item = Cow<'_, [u8]>> {
    cells.iter().map(
        move |c| match if raw { Cow::Borrowed(c.as_str()) } else { csv_cell(c) } {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        },
    )
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
        .map(|s| format!("{} ({})", escape_text(&s.region), state_name(s.state)))
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

    /// The characters of the finding: NUL, an ANSI colour, BEL, U+202E.
    const HOSTILE: &str = "a\u{0}b\x1b[31mred\x07\u{202e}evil";

    fn hostile_enterprise() -> prost_types::Any {
        any(
            &Enterprise {
                credit_code: "91320500MA1XYZ1234".into(),
                name: HOSTILE.into(),
                address: "=cmd|' /C calc'!A0".into(),
                industry: "@SUM(1+1)".into(),
                status: "-2+3".into(),
                legal_representative: "+cmd".into(),
                registered_capital: -1250.5,
                ..Enterprise::default()
            },
            "yrd.datasets.enterprise.v1.Enterprise",
        )
    }

    #[test]
    fn control_and_bidi_characters_are_escaped_for_people() {
        assert_eq!(escape_text(HOSTILE), "a\\x00b\\x1b[31mred\\x07\\u{202e}evil");
        assert!(matches!(escape_text("苏州恒达机械 a\\b"), Cow::Borrowed(_)));
        for (c, shown) in [
            ('\t', "\\t"),
            ('\n', "\\n"),
            ('\r', "\\r"),
            ('\u{7f}', "\\x7f"),
            ('\u{9b}', "\\u{9b}"),
            ('\u{61c}', "\\u{61c}"),
            ('\u{200e}', "\\u{200e}"),
            ('\u{200f}', "\\u{200f}"),
            ('\u{202a}', "\\u{202a}"),
            ('\u{2066}', "\\u{2066}"),
            ('\u{2069}', "\\u{2069}"),
            ('\u{200b}', "\\u{200b}"),
            ('\u{2028}', "\\u{2028}"),
            ('\u{feff}', "\\u{feff}"),
            ('\u{e0041}', "\\u{e0041}"),
        ] {
            assert_eq!(escape_text(&format!("x{c}y")), format!("x{shown}y"), "{c:?}");
        }
        let text = written(Format::Table, &["name", "registered_capital"], &[hostile_enterprise()]);
        assert!(text.contains("a\\x00b\\x1b[31mred\\x07\\u{202e}evil"), "{text}");
        assert!(!text.chars().any(|c| is_hidden(c) && c != '\n'), "{text:?}");
        // Widths are those of the escaped text: every line equally wide.
        let widths: Vec<usize> = text.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{widths:?}\n{text}");
        // Headers and the other tables too.
        let t = table(
            &["h\u{1b}]0;x\u{7}".to_owned()],
            vec![vec!["\u{202e}1".to_owned()]],
            &[false],
        )
        .to_string();
        assert!(t.contains("h\\x1b]0;x\\x07") && t.contains("\\u{202e}1"), "{t}");
        let status = RegionStatus {
            region: "31\u{1b}[2J".into(),
            state: RegionState::Unavailable as i32,
            message: "down\u{7}".into(),
            ..Default::default()
        };
        let t = region_table(std::slice::from_ref(&status)).to_string();
        assert!(
            t.contains("31\\x1b[2J") && t.contains("down\\x07") && !t.contains('\u{1b}'),
            "{t}"
        );
        let note = partial_note(&[status]).unwrap();
        assert!(note.contains("31\\x1b[2J") && !note.contains('\u{1b}'), "{note}");
        assert!(!trace_hint("ab\u{1b}c").contains('\u{1b}'));
    }

    #[test]
    fn csv_cells_cannot_become_formulas() {
        let text = written(
            Format::Csv,
            &[
                "address",
                "industry",
                "status",
                "legal_representative",
                "registered_capital",
            ],
            &[hostile_enterprise()],
        );
        assert_eq!(
            text,
            "address,industry,status,legal_representative,registered_capital\n\
             '=cmd|' /C calc'!A0,'@SUM(1+1),'-2+3,'+cmd,-1250.5\n"
        );
        for (cell, out) in [
            ("=1+1", "'=1+1"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-12", "-12"),
            ("+3.5", "+3.5"),
            ("-1e-7", "-1e-7"),
            ("-.5", "-.5"),
            ("-", "'-"),
            ("-1-1", "'-1-1"),
            ("-inf", "'-inf"),
            ("a=b", "a=b"),
            ("", ""),
            // What a spreadsheet may trim before it looks for a formula.
            (" =1+1", "' =1+1"),
            ("\u{feff}=1+1", "'\u{feff}=1+1"),
            ("\u{a0}\n@SUM(A1)", "'\u{a0}\n@SUM(A1)"),
            (" -12", " -12"),
            ("\u{3000}=1+1", "'\u{3000}=1+1"),
            ("\u{200b}+cmd", "'\u{200b}+cmd"),
            ("\t12", "'\t12"),
            ("  ", "  "),
        ] {
            assert_eq!(csv_cell(cell), out, "{cell:?}");
        }
        // --csv-raw: as they are.
        let mut decoder = RowDecoder::new().unwrap();
        let mut w = RowWriter::new(Vec::new(), Format::Csv, vec!["address".to_owned()]).with_csv_raw(true);
        w.push(&decoder.decode(&hostile_enterprise()).unwrap()).unwrap();
        let raw = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(raw, "address\n=cmd|' /C calc'!A0\n");
        // The records of the other commands too.
        let mut out = Vec::new();
        let headers = vec!["a".to_owned(), "n".to_owned()];
        write_records(
            &mut out,
            Format::Csv,
            &headers,
            vec![vec!["=HYPERLINK(\"x\")".into(), "-3".into()]],
            &[false, true],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a,n\n\"'=HYPERLINK(\"\"x\"\")\",-3\n");
    }

    #[test]
    fn json_escapes_every_hidden_character_and_reads_back() {
        let text = written(Format::Json, &[], &[hostile_enterprise()]);
        assert!(!text.trim_end().chars().any(is_hidden), "{text:?}");
        assert!(
            text.contains("\\u0000") && text.contains("\\u001b") && text.contains("\\u0007"),
            "{text}"
        );
        assert!(text.contains("\\u202e"), "{text}");
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["name"], HOSTILE, "the escapes read back to the same text");
        let wide = json_text(serde_json::to_string("\u{e0041}\u{7f}\u{85}").unwrap());
        assert_eq!(wide, "\"\\udb40\\udc41\\u007f\\u0085\"");
        assert_eq!(serde_json::from_str::<String>(&wide).unwrap(), "\u{e0041}\u{7f}\u{85}");
        let mut out = Vec::new();
        write_records(
            &mut out,
            Format::Json,
            &["a".to_owned()],
            vec![vec!["\u{202e}x".into()]],
            &[false],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":\"\\u202ex\"}\n");
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
