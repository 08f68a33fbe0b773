//! Loading data: `yrd-node import` (CSV or JSON Lines) and `yrd-node
//! generate` (the demo data). Both pass every row through the same
//! validation, and both are all or nothing ([`Store::load`]). The rows are
//! read lazily, as the store pulls them off the async threads.
//!
//! Import is bounded whatever the file: each string field is kept only up
//! to its `max_length` (four bytes a character) and each JSON line up to
//! [`JSON_LINE_FACTOR`] × `import.max_row_bytes`, longer ones are refused
//! by their length; a row larger than `import.max_row_bytes` encoded is
//! refused; and rejected rows are counted as they stream past, the first
//! `import.max_rejections_shown` kept in full ([`LoadOutcome::reject`]).
//! A rejected row describes at most [`MAX_VIOLATIONS_SHOWN_PER_ROW`] of
//! its problems, each cut to [`MAX_VIOLATION_REASON_BYTES`], counts the
//! rest, and names each cause once, so one rejection stays a few KiB
//! whatever its line holds.

mod reader;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use yrd_datasets::Cell;
use yrd_datasets::demo::{self, DemoSpec};
use yrd_datasets::validate::{Violation, cells_from_named, validate_row};
use yrd_proto::datetime::parse_timestamp;
use yrd_proto::schema::{DatasetSchema, FieldSchema, FieldType};

use crate::encode::encoded_len;
use crate::error::NodeError;
use crate::store::{LoadOptions, LoadOutcome, Rejection, Store};

pub use reader::{CsvError, CsvField, CsvReader, CsvRecord, read_line};

/// Default of `import.max_row_bytes`: 64 KiB of protobuf encoding a row.
pub const DEFAULT_MAX_ROW_BYTES: usize = 64 * 1024;
/// The bounds of `import.max_row_bytes`.
pub const MAX_ROW_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024;
/// Default of `import.max_rejections_shown`.
pub const DEFAULT_MAX_REJECTIONS_SHOWN: usize = 100;
/// The most `import.max_rejections_shown` may be.
pub const MAX_REJECTIONS_SHOWN_LIMIT: usize = 10_000;
/// A JSON line may be this many times `import.max_row_bytes`: room for
/// escapes (`\u0001` is six bytes for one) and the field names.
pub const JSON_LINE_FACTOR: usize = 8;
/// Bytes kept of a CSV field of a non-text type (a number, a boolean, a
/// timestamp): far more than any valid value needs.
pub const SCALAR_FIELD_BYTES: usize = 256;
/// Bytes kept of a CSV header field (a field name).
const HEADER_FIELD_BYTES: usize = 256;
/// Problems described in one row's rejection; past these, the reason only
/// says how many more there were. A JSON line may hold tens of thousands of
/// unknown keys, and its rejection must stay small.
pub const MAX_VIOLATIONS_SHOWN_PER_ROW: usize = 8;
/// Bytes kept of each problem described in a rejection's reason; a longer
/// description is cut there and says so.
pub const MAX_VIOLATION_REASON_BYTES: usize = 512;
/// Characters of a value quoted in a reason (fields that are not personal).
const SHOWN_CHARS: usize = 64;
/// The read buffer of an import file.
const READ_BUFFER: usize = 64 * 1024;

/// `[import]`: the limits of `yrd-node import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportConfig {
    /// Largest row, in bytes of its protobuf encoding; at most a quarter of
    /// `query.max_batch_bytes`, so every imported row can be served.
    pub max_row_bytes: usize,
    /// Rejected rows reported in full; the rest are counted by cause.
    pub max_rejections_shown: usize,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            max_row_bytes: DEFAULT_MAX_ROW_BYTES,
            max_rejections_shown: DEFAULT_MAX_REJECTIONS_SHOWN,
        }
    }
}

impl ImportConfig {
    /// Checks the limits against their bounds and against the node's
    /// `query.max_batch_bytes`: the key at fault and why.
    pub fn validate(&self, max_batch_bytes: usize) -> Result<(), (&'static str, String)> {
        if !MAX_ROW_BYTES_RANGE.contains(&self.max_row_bytes) {
            return Err((
                "import.max_row_bytes",
                format!(
                    "{} is not in {}..={}",
                    self.max_row_bytes,
                    MAX_ROW_BYTES_RANGE.start(),
                    MAX_ROW_BYTES_RANGE.end()
                ),
            ));
        }
        if self.max_row_bytes.saturating_mul(4) > max_batch_bytes {
            return Err((
                "import.max_row_bytes",
                format!(
                    "{} is more than a quarter of query.max_batch_bytes ({max_batch_bytes}): \
                     an imported row could not be served",
                    self.max_row_bytes
                ),
            ));
        }
        if self.max_rejections_shown > MAX_REJECTIONS_SHOWN_LIMIT {
            return Err((
                "import.max_rejections_shown",
                format!(
                    "{} is more than {MAX_REJECTIONS_SHOWN_LIMIT}",
                    self.max_rejections_shown
                ),
            ));
        }
        Ok(())
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            replace: false,
            max_rejections_shown: self.max_rejections_shown,
        }
    }
}

/// An input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row of field names.
    Csv,
    /// One JSON object per line, keyed by field name.
    JsonLines,
}

impl Format {
    /// The format a file name implies, if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" | "json" => Some(Self::JsonLines),
            _ => None,
        }
    }
}

/// Checks one row against the dataset's rules, this node's region and the
/// default `import.max_row_bytes`.
pub fn check_row(
    schema: &DatasetSchema,
    region: &str,
    line: u64,
    cells: Vec<Option<Cell>>,
) -> Result<(u64, Vec<Option<Cell>>), Rejection> {
    check_row_within(schema, region, line, cells, DEFAULT_MAX_ROW_BYTES)
}

/// Checks one row against the dataset's rules, this node's region and a
/// row size of at most `max_row_bytes` encoded.
pub fn check_row_within(
    schema: &DatasetSchema,
    region: &str,
    line: u64,
    cells: Vec<Option<Cell>>,
    max_row_bytes: usize,
) -> Result<(u64, Vec<Option<Cell>>), Rejection> {
    let mut violations = RowViolations::default();
    violations.extend(validate_row(schema, &cells));
    let region_field = &schema.fields[schema.region_field];
    if let Some(Some(Cell::Text(r))) = cells.get(schema.region_field)
        && r != region
        // A value past its length is refused for that alone, never quoted.
        && r.chars().count() <= region_field.max_length.unwrap_or(usize::MAX)
    {
        violations.push(Violation::field(
            &region_field.name,
            "node_region",
            format!("{} is not this node's region {region}", shown(region_field, r)),
        ));
    }
    if violations.is_empty() {
        let bytes = encoded_len(schema, &cells);
        if bytes > max_row_bytes {
            violations.push(Violation::row(
                "max_row_bytes",
                format!("the row is {bytes} bytes encoded, more than import.max_row_bytes = {max_row_bytes}"),
            ));
        }
    }
    if violations.is_empty() {
        Ok((line, cells))
    } else {
        Err(violations.into_rejection(line))
    }
}

/// One row's problems, gathered as they are found and bounded whatever the
/// row holds: the first [`MAX_VIOLATIONS_SHOWN_PER_ROW`] are kept to be
/// described, the rest are only counted, and each cause is kept once (at
/// most [`crate::store::MAX_CAUSES`] of them, the rest as
/// [`crate::store::OTHER_CAUSES`]).
#[derive(Debug, Default)]
struct RowViolations {
    /// The problems to describe, in the order found.
    shown: Vec<Violation>,
    /// Problems found past `shown`, only counted.
    more: u64,
    /// Each cause once, in the order first found.
    causes: Vec<String>,
}

impl RowViolations {
    /// Adds one problem.
    fn push(&mut self, violation: Violation) {
        let cause = violation.cause();
        if !self.causes.contains(&cause) {
            if self.causes.len() < crate::store::MAX_CAUSES {
                self.causes.push(cause);
            } else if !self.causes.iter().any(|c| c == crate::store::OTHER_CAUSES) {
                self.causes.push(crate::store::OTHER_CAUSES.to_owned());
            }
        }
        if self.shown.len() < MAX_VIOLATIONS_SHOWN_PER_ROW {
            self.shown.push(violation);
        } else {
            self.more += 1;
        }
    }

    /// Adds each of `violations`.
    fn extend(&mut self, violations: impl IntoIterator<Item = Violation>) {
        for v in violations {
            self.push(v);
        }
    }

    /// Whether no problem was found.
    fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }

    /// The row's rejection: the problems kept, each cut to
    /// [`MAX_VIOLATION_REASON_BYTES`], how many more there were, and each
    /// cause once.
    fn into_rejection(self, line: u64) -> Rejection {
        let mut reason = self
            .shown
            .iter()
            .map(|v| cut_reason(v.to_string()))
            .collect::<Vec<_>>()
            .join("; ");
        if self.more > 0 {
            reason.push_str(&format!(
                "; and {} more, not described (MAX_VIOLATIONS_SHOWN_PER_ROW = {MAX_VIOLATIONS_SHOWN_PER_ROW})",
                self.more
            ));
        }
        Rejection {
            line,
            reason,
            causes: self.causes,
        }
    }
}

/// One rejection for a row's violations.
fn rejection(line: u64, violations: impl IntoIterator<Item = Violation>) -> Rejection {
    let mut row = RowViolations::default();
    row.extend(violations);
    row.into_rejection(line)
}

/// A problem's description cut to [`MAX_VIOLATION_REASON_BYTES`] (on a
/// character boundary), saying so when it is.
fn cut_reason(mut text: String) -> String {
    if text.len() <= MAX_VIOLATION_REASON_BYTES {
        return text;
    }
    let mut end = MAX_VIOLATION_REASON_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(
        "... (cut at MAX_VIOLATION_REASON_BYTES = {MAX_VIOLATION_REASON_BYTES})"
    ));
    text
}

/// Imports a file into a dataset, appending to its rows, under the default
/// [`ImportConfig`].
pub async fn import_file(
    store: &dyn Store,
    region: &str,
    dataset: &str,
    path: &Path,
    format: Format,
) -> Result<LoadOutcome, NodeError> {
    import_file_with(store, region, dataset, path, format, &ImportConfig::default()).await
}

/// Imports a file into a dataset, appending to its rows, under `limits`.
pub async fn import_file_with(
    store: &dyn Store,
    region: &str,
    dataset: &str,
    path: &Path,
    format: Format,
    limits: &ImportConfig,
) -> Result<LoadOutcome, NodeError> {
    let schema = store
        .registry()
        .get(dataset)
        .ok_or_else(|| yrd_query::QueryError::UnknownDataset {
            dataset: dataset.to_owned(),
        })?
        .clone();
    // Opening may block (a network file system): not on this task's thread.
    let owned = path.to_owned();
    let opened = tokio::task::spawn_blocking(move || File::open(owned))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let file = opened.map_err(|source| NodeError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let input = BufReader::with_capacity(READ_BUFFER, file);
    let rows: crate::store::RowSource = match format {
        Format::Csv => Box::new(CsvRows::new(input, schema.clone(), region, limits.max_row_bytes)),
        Format::JsonLines => Box::new(JsonRows::new(input, schema.clone(), region, limits.max_row_bytes)),
    };
    Ok(store.load(schema, limits.load_options(), rows).await?)
}

/// The rows of a CSV file, checked, read as the store pulls them. The
/// header is read with the first row; if it is unusable, it is the one
/// rejection (line 1) and no row is read.
pub struct CsvRows<R> {
    reader: CsvReader<R>,
    schema: Arc<DatasetSchema>,
    region: String,
    max_row_bytes: usize,
    /// The field index of each column, once the header is read.
    columns: Option<Vec<usize>>,
    /// Bytes kept of each column.
    caps: Vec<usize>,
    record: CsvRecord,
    done: bool,
}

impl<R: BufRead> CsvRows<R> {
    /// The rows of `input` for `schema` at a node of `region`.
    pub fn new(input: R, schema: Arc<DatasetSchema>, region: &str, max_row_bytes: usize) -> Self {
        Self {
            reader: CsvReader::new(input),
            schema,
            region: region.to_owned(),
            max_row_bytes,
            columns: None,
            caps: Vec::new(),
            record: CsvRecord::default(),
            done: false,
        }
    }

    fn read_header(&mut self) -> Result<(), Rejection> {
        let header_error = |reason: String| Rejection::new(1, "header", format!("header: {reason}"));
        let caps = vec![HEADER_FIELD_BYTES; self.schema.fields.len() + 1];
        match self.reader.read_record(&caps, &mut self.record) {
            Ok(true) => {}
            Ok(false) => return Err(header_error("the file is empty".into())),
            Err(e) => return Err(header_error(e.to_string())),
        }
        if self.record.count > self.schema.fields.len() {
            return Err(header_error(format!(
                "{} fields, but dataset {} has {}",
                self.record.count,
                self.schema.id,
                self.schema.fields.len()
            )));
        }
        let mut names = Vec::with_capacity(self.record.fields.len());
        for f in &self.record.fields {
            if f.is_cut() {
                return Err(header_error(format!(
                    "a field name is {} bytes long; no field of dataset {} is",
                    f.len, self.schema.id
                )));
            }
            names.push(String::from_utf8_lossy(&f.bytes).into_owned());
        }
        let columns = csv_columns(&self.schema, &names).map_err(|reason| Rejection::new(1, "header", reason))?;
        self.caps = columns.iter().map(|&i| field_cap(&self.schema.fields[i])).collect();
        self.columns = Some(columns);
        Ok(())
    }

    fn row(&self, columns: &[usize]) -> Result<(u64, Vec<Option<Cell>>), Rejection> {
        let rec = &self.record;
        let schema = &self.schema;
        if rec.count != columns.len() {
            return Err(Rejection::new(
                rec.line,
                "field_count",
                format!("has {} fields, but the header has {}", rec.count, columns.len()),
            ));
        }
        let mut cells = vec![None; schema.fields.len()];
        let mut violations = RowViolations::default();
        for (&col, field) in columns.iter().zip(&rec.fields) {
            let f = &schema.fields[col];
            if field.is_cut() {
                violations.push(cut_violation(f, field.len));
                continue;
            }
            let Ok(text) = std::str::from_utf8(&field.bytes) else {
                violations.push(Violation::field(&f.name, "utf8", "is not valid UTF-8"));
                continue;
            };
            match parse_text(f, text) {
                Ok(c) => cells[col] = c,
                Err(v) => violations.push(v),
            }
        }
        if !violations.is_empty() {
            return Err(violations.into_rejection(rec.line));
        }
        check_row_within(schema, &self.region, rec.line, cells, self.max_row_bytes)
    }
}

impl<R: BufRead> Iterator for CsvRows<R> {
    type Item = Result<(u64, Vec<Option<Cell>>), Rejection>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.columns.is_none()
            && let Err(rejected) = self.read_header()
        {
            self.done = true;
            return Some(Err(rejected));
        }
        let columns = self.columns.take()?;
        let item = match self.reader.read_record(&self.caps, &mut self.record) {
            Ok(true) => Some(self.row(&columns)),
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                // Nothing after a read error or an unclosed quote can be
                // trusted to be a record: this is the last rejection.
                self.done = true;
                let line = match &e {
                    CsvError::Unclosed { line } => *line,
                    CsvError::Io(_) => self.record.line,
                };
                Some(Err(Rejection::new(line, "csv", e.to_string())))
            }
        };
        self.columns = Some(columns);
        item
    }
}

/// The rows of a JSON Lines file, checked, read as the store pulls them.
pub struct JsonRows<R> {
    input: R,
    schema: Arc<DatasetSchema>,
    region: String,
    max_row_bytes: usize,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> JsonRows<R> {
    /// The rows of `input` for `schema` at a node of `region`.
    pub fn new(input: R, schema: Arc<DatasetSchema>, region: &str, max_row_bytes: usize) -> Self {
        Self {
            input,
            schema,
            region: region.to_owned(),
            max_row_bytes,
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for JsonRows<R> {
    type Item = Result<(u64, Vec<Option<Cell>>), Rejection>;

    fn next(&mut self) -> Option<Self::Item> {
        let cap = self.max_row_bytes.saturating_mul(JSON_LINE_FACTOR);
        while !self.done {
            let read = read_line(&mut self.input, cap, &mut self.buf);
            self.line += 1;
            let line = self.line;
            let len = match read {
                Ok(Some(len)) => len,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(Rejection::new(line, "read", format!("cannot be read: {e}"))));
                }
            };
            if len > cap as u64 {
                return Some(Err(Rejection::new(
                    line,
                    "line_length",
                    format!(
                        "the line is {len} bytes long, more than a row of import.max_row_bytes = {} \
                         can take as JSON ({cap} bytes)",
                        self.max_row_bytes
                    ),
                )));
            }
            let Ok(text) = std::str::from_utf8(&self.buf) else {
                return Some(Err(Rejection::new(line, "utf8", "the line is not valid UTF-8")));
            };
            if text.trim().is_empty() {
                continue;
            }
            let schema = &self.schema;
            return Some(
                json_row(schema, line, text)
                    .and_then(|cells| check_row_within(schema, &self.region, line, cells, self.max_row_bytes)),
            );
        }
        None
    }
}

/// Bytes of a CSV field kept for validation: four a character of a text
/// field's `max_length` (so a longer field is surely too long), a fixed
/// few for other types.
fn field_cap(field: &FieldSchema) -> usize {
    field.max_length.map_or(SCALAR_FIELD_BYTES, |max| max.saturating_mul(4))
}

/// The violation of a CSV field longer than its cap: its length in bytes
/// and the field's limit, never its value.
fn cut_violation(field: &FieldSchema, bytes: u64) -> Violation {
    match field.max_length {
        Some(max) => Violation::field(
            &field.name,
            "max_length",
            format!("is {bytes} bytes long, more than its max_length of {max} characters"),
        ),
        None => Violation::field(
            &field.name,
            "type",
            format!("is {bytes} bytes long, too long for a {}", field.ty.name()),
        ),
    }
}

/// What `yrd-node import` reports of a rejected load, bounded whatever the
/// number of bad rows: each rejection kept (at most `max_shown`, the
/// load's `import.max_rejections_shown`) on its line, how many more there
/// were, one line per cause with its count, and the total.
pub fn rejection_report(outcome: &LoadOutcome, max_shown: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for r in &outcome.rejected {
        let _ = writeln!(out, "line {}: {}", r.line, r.reason);
    }
    let hidden = outcome.rejected_rows.saturating_sub(outcome.rejected.len() as u64);
    if hidden > 0 {
        let _ = writeln!(
            out,
            "... and {hidden} more rejected rows, not listed (import.max_rejections_shown = {max_shown})"
        );
    }
    if !outcome.causes.is_empty() {
        let _ = writeln!(out, "rejected rows by cause:");
        let mut causes: Vec<(&String, &u64)> = outcome.causes.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (cause, n) in causes {
            let _ = writeln!(out, "  {cause}: {n}");
        }
    }
    let _ = writeln!(out, "{} rows rejected; nothing was imported", outcome.rejected_rows);
    out
}

/// Replaces every dataset's rows with the region's demo data.
pub async fn generate(store: &dyn Store, region: &str, spec: &DemoSpec) -> Result<Vec<(String, u64)>, NodeError> {
    let mut loaded = Vec::new();
    for schema in store.registry().datasets() {
        let rows = demo::rows(&schema.id, region, spec).map_err(|e| NodeError::Demo(e.to_string()))?;
        let (rows_schema, region_owned) = (Arc::clone(schema), region.to_owned());
        let checked = rows.enumerate().map(move |(i, named)| {
            let line = i as u64 + 1;
            let cells = cells_from_named(&rows_schema, named).map_err(|v| rejection(line, [v]))?;
            check_row(&rows_schema, &region_owned, line, cells)
        });
        let outcome = store
            .load(schema.clone(), LoadOptions::replace(), Box::new(checked))
            .await?;
        if let Some(first) = outcome.rejected.first() {
            // A generator must never write what its importer rejects.
            return Err(NodeError::Demo(format!(
                "{}: generated row {} was rejected ({} in all): {}",
                schema.id, first.line, outcome.rejected_rows, first.reason
            )));
        }
        loaded.push((schema.id.clone(), outcome.inserted));
    }
    Ok(loaded)
}

fn csv_columns(schema: &DatasetSchema, headers: &[String]) -> Result<Vec<usize>, String> {
    let mut columns = Vec::new();
    for h in headers {
        let name = h.trim();
        let (i, _) = schema
            .field(name)
            .ok_or_else(|| format!("header: dataset {} has no field {}", schema.id, quoted(name)))?;
        if columns.contains(&i) {
            return Err(format!("header: field {name} appears twice"));
        }
        columns.push(i);
    }
    let missing: Vec<&str> = schema
        .fields
        .iter()
        .enumerate()
        .filter(|(i, f)| f.required && !columns.contains(i))
        .map(|(_, f)| f.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!("header: required fields missing: {}", missing.join(", ")));
    }
    Ok(columns)
}

/// What a value looks like in an error: the value itself, quoted and cut
/// short, unless the field is personal or secret.
fn shown(field: &FieldSchema, text: &str) -> String {
    if field.is_confidential() {
        "(value withheld)".to_owned()
    } else {
        quoted(text)
    }
}

/// Text quoted for a message, cut to [`SHOWN_CHARS`].
fn quoted(text: &str) -> String {
    yrd_query::error::quoted_excerpt(text, SHOWN_CHARS)
}

fn parse_text(field: &FieldSchema, text: &str) -> Result<Option<Cell>, Violation> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = |what: &str| Violation::field(&field.name, "type", format!("{} is not {what}", shown(field, text)));
    Ok(Some(match field.ty {
        FieldType::String | FieldType::Date => Cell::Text(text.to_owned()),
        FieldType::Int => Cell::Int(text.trim().parse().map_err(|_| bad("an integer"))?),
        FieldType::Double => {
            let v: f64 = text.trim().parse().map_err(|_| bad("a number"))?;
            if !v.is_finite() {
                return Err(bad("a finite number"));
            }
            Cell::Real(v)
        }
        FieldType::Bool => match text.trim() {
            "true" | "1" => Cell::Bool(true),
            "false" | "0" => Cell::Bool(false),
            _ => return Err(bad("a boolean (true or false)")),
        },
        FieldType::Timestamp => {
            let t = text.trim();
            Cell::Time(
                parse_timestamp(t)
                    .or_else(|| t.parse().ok())
                    .ok_or_else(|| bad("an RFC 3339 timestamp"))?,
            )
        }
    }))
}

fn json_row(schema: &DatasetSchema, line: u64, text: &str) -> Result<Vec<Option<Cell>>, Rejection> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Rejection::new(line, "json", format!("not valid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| Rejection::new(line, "json", "not a JSON object"))?;
    let mut cells = vec![None; schema.fields.len()];
    let mut violations = RowViolations::default();
    for (key, v) in object {
        let Some((i, f)) = schema.field(key) else {
            violations.push(Violation::row(
                "unknown_field",
                format!("dataset {} has no field {}", schema.id, quoted(key)),
            ));
            continue;
        };
        let kind = |reason: String| Violation::field(key, "type", reason);
        let cell = match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => parse_text(f, s),
            serde_json::Value::Bool(b) if f.ty == FieldType::Bool => Ok(Some(Cell::Bool(*b))),
            serde_json::Value::Number(n) => match f.ty {
                FieldType::Int => n
                    .as_i64()
                    .map(|i| Some(Cell::Int(i)))
                    .ok_or_else(|| kind(format!("{} is not an integer", shown(f, &n.to_string())))),
                FieldType::Double => n
                    .as_f64()
                    .map(|x| Some(Cell::Real(x)))
                    .ok_or_else(|| kind("not a number".into())),
                FieldType::Timestamp => n
                    .as_i64()
                    .map(|i| Some(Cell::Time(i)))
                    .ok_or_else(|| kind("not a timestamp".into())),
                _ => Err(kind(format!("a {} field needs a string, not a number", f.ty.name()))),
            },
            _ => Err(kind(format!("a {} field cannot hold this JSON value", f.ty.name()))),
        };
        match cell {
            Ok(c) => cells[i] = c,
            Err(e) => violations.push(e),
        }
    }
    if violations.is_empty() {
        Ok(cells)
    } else {
        Err(violations.into_rejection(line))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::store::conformance;
    use crate::store::sqlite::SqliteStore;

    const REGION: &str = "320000";
    const HEADER: &str = "id,region,s,i,d,b,t,day,person";

    fn good(n: usize) -> String {
        format!("r{n:05},{REGION},text {n},{n},1.5,true,1700000000,2024-01-01,张三")
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_with(&dir.path().join("i.sqlite"), REGION, 1, conformance::registry()).unwrap();
        (dir, s)
    }

    async fn import(bytes: &[u8], format: Format, limits: &ImportConfig) -> LoadOutcome {
        let (dir, s) = store();
        let path = dir.path().join("in");
        std::fs::write(&path, bytes).unwrap();
        import_file_with(&s, REGION, conformance::DATASET, &path, format, limits)
            .await
            .unwrap()
    }

    fn lines(outcome: &LoadOutcome) -> Vec<u64> {
        outcome.rejected.iter().map(|r| r.line).collect()
    }

    #[tokio::test]
    async fn csv_line_numbers_are_right_in_every_line_ending() {
        // Lines 3 and 6 are bad (an integer that is not), line 4 holds a
        // quoted field over two lines.
        let bad = |n: usize| good(n).replace(&format!(",{n},1.5"), ",many,1.5");
        let quoted = good(4).replace("text 4", "\"two\nlines\"");
        for end in ["\n", "\r\n", "\r"] {
            let rows = [
                HEADER.to_owned(),
                good(2),
                bad(3),
                quoted.replace('\n', end),
                good(5),
                bad(6),
            ];
            let text = rows.join(end) + end;
            let outcome = import(text.as_bytes(), Format::Csv, &ImportConfig::default()).await;
            assert_eq!(lines(&outcome), [3, 7], "line ending {end:?}: {:?}", outcome.rejected);
            assert!(
                outcome.rejected[0].reason.contains("i: \"many\" is not an integer"),
                "{:?}",
                outcome.rejected
            );
            assert_eq!(outcome.inserted, 0);
        }
        // A file without rejections loads.
        let text = [HEADER.to_owned(), good(1), good(2)].join("\r\n");
        let outcome = import(text.as_bytes(), Format::Csv, &ImportConfig::default()).await;
        assert_eq!(
            (outcome.inserted, outcome.rejected_rows),
            (2, 0),
            "{:?}",
            outcome.rejected
        );
    }

    #[tokio::test]
    async fn json_line_numbers_are_right_with_crlf() {
        let row = |n: usize, i: &str| {
            format!(
                "{{\"id\":\"r{n:05}\",\"region\":\"{REGION}\",\"s\":\"x\",\"i\":{i},\"d\":1.5,\"b\":true,\
                 \"t\":1700000000,\"day\":\"2024-01-01\",\"person\":\"张三\"}}"
            )
        };
        let text = [row(1, "1"), String::new(), row(3, "\"x\""), row(4, "4")].join("\r\n");
        let outcome = import(text.as_bytes(), Format::JsonLines, &ImportConfig::default()).await;
        assert_eq!(lines(&outcome), [3], "{:?}", outcome.rejected);
    }

    #[tokio::test]
    async fn a_field_past_its_max_length_is_refused_by_its_length_alone() {
        let long = "x".repeat(20_000);
        let text = format!("{HEADER}\n{}\n", good(1).replace("text 1", &long));
        let outcome = import(text.as_bytes(), Format::Csv, &ImportConfig::default()).await;
        let r = &outcome.rejected[0];
        assert_eq!(r.line, 2);
        assert_eq!(
            r.reason,
            "s: is 20000 bytes long, more than its max_length of 4096 characters"
        );
        assert_eq!(r.causes, ["s: max_length"]);
        // Just past the limit, counted in characters, in CSV and JSON.
        let text = format!("{HEADER}\n{}\n", good(1).replace("text 1", &"字".repeat(4097)));
        let outcome = import(text.as_bytes(), Format::Csv, &ImportConfig::default()).await;
        assert_eq!(
            outcome.rejected[0].reason,
            "s: is 4097 characters long, more than its max_length of 4096"
        );
        // A personal field: its length, never its value.
        let text = format!("{HEADER}\n{}\n", good(1).replace("张三", &"张".repeat(5000)));
        let outcome = import(text.as_bytes(), Format::Csv, &ImportConfig::default()).await;
        let r = &outcome.rejected[0];
        assert!(r.reason.starts_with("person: is 5000 characters long"), "{r:?}");
        assert!(!r.reason.contains('张'), "{r:?}");
        let json = format!("{{\"id\":\"r1\",\"person\":\"{}\"}}\n", "张".repeat(5000));
        let outcome = import(json.as_bytes(), Format::JsonLines, &ImportConfig::default()).await;
        let r = &outcome.rejected[0];
        assert!(r.reason.contains("person: is 5000 characters long"), "{r:?}");
        assert!(!r.reason.contains('张'), "{r:?}");
        // A number field far too long: refused as such, unread.
        let text = format!(
            "{HEADER}\n{}\n",
            good(1).replace(",1.5,", &format!(",{},", "9".repeat(1000)))
        );
        let outcome = import(text.as_bytes(), Format::Csv, &ImportConfig::default()).await;
        assert_eq!(
            outcome.rejected[0].reason,
            "d: is 1000 bytes long, too long for a number"
        );
    }

    #[tokio::test]
    async fn a_row_past_max_row_bytes_is_refused() {
        let limits = ImportConfig {
            max_row_bytes: 1024,
            ..ImportConfig::default()
        };
        let text = format!(
            "{HEADER}\n{}\n{}\n",
            good(1),
            good(2).replace("text 2", &"y".repeat(1100))
        );
        let outcome = import(text.as_bytes(), Format::Csv, &limits).await;
        assert_eq!(lines(&outcome), [3]);
        let r = &outcome.rejected[0];
        assert_eq!(r.causes, ["max_row_bytes"]);
        assert!(
            r.reason
                .contains("bytes encoded, more than import.max_row_bytes = 1024"),
            "{r:?}"
        );
        // A JSON line longer than any row of that size can be is not parsed.
        let json = format!("{{\"id\":\"r1\",\"s\":\"{}\"}}\n", "y".repeat(9000));
        let outcome = import(json.as_bytes(), Format::JsonLines, &limits).await;
        let r = &outcome.rejected[0];
        assert_eq!(
            (r.line, r.causes.as_slice()),
            (1, ["line_length".to_owned()].as_slice())
        );
        assert!(
            r.reason.contains("is 9018 bytes long") && r.reason.contains("(8192 bytes)"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn rejections_are_capped_and_counted_by_cause() {
        const BAD: usize = 20_000;
        let limits = ImportConfig {
            max_rejections_shown: 5,
            ..ImportConfig::default()
        };
        let mut text = Vec::new();
        writeln!(text, "{HEADER}").unwrap();
        for n in 0..BAD {
            // Every other row two problems, the rest one.
            let row = good(n).replace(&format!(",{n},1.5,"), ",x,1.5,");
            let row = if n % 2 == 0 {
                row.replace(",true,", ",maybe,")
            } else {
                row
            };
            writeln!(text, "{row}").unwrap();
        }
        writeln!(text, "{}", good(BAD)).unwrap();
        let outcome = import(&text, Format::Csv, &limits).await;
        assert_eq!(outcome.inserted, 0, "all or nothing");
        assert_eq!(lines(&outcome), [2, 3, 4, 5, 6], "the first rows in full");
        assert_eq!(outcome.rejected_rows, BAD as u64);
        let causes: Vec<(&str, u64)> = outcome.causes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(causes, [("b: type", BAD as u64 / 2), ("i: type", BAD as u64)]);
        let report = rejection_report(&outcome, limits.max_rejections_shown);
        println!("{report}");
        assert_eq!(report.lines().count(), 5 + 1 + 1 + 2 + 1, "{report}");
        assert!(report.contains("... and 19995 more rejected rows, not listed (import.max_rejections_shown = 5)"));
        assert!(report.contains("  i: type: 20000\n  b: type: 10000\n"), "{report}");
        assert!(
            report.ends_with("20000 rows rejected; nothing was imported\n"),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_json_line_of_many_unknown_keys_is_one_small_rejection() {
        const KEYS: usize = 50_000;
        // Room for the line: the default limit would refuse it by length.
        let limits = ImportConfig {
            max_row_bytes: 128 * 1024,
            ..ImportConfig::default()
        };
        let keys: Vec<String> = (0..KEYS).map(|n| format!("\"k{n}\":0")).collect();
        let json = format!("{{{}}}\n", keys.join(","));
        assert!(json.len() > 512 * 1024, "{} bytes", json.len());
        let outcome = import(json.as_bytes(), Format::JsonLines, &limits).await;
        assert_eq!(outcome.rejected_rows, 1);
        assert_eq!(lines(&outcome), [1]);
        let r = &outcome.rejected[0];
        assert!(r.reason.len() < 4096, "{} bytes: {}", r.reason.len(), r.reason);
        assert_eq!(r.causes, ["unknown_field"]);
        assert!(
            r.reason.ends_with(&format!(
                "; and {} more, not described (MAX_VIOLATIONS_SHOWN_PER_ROW = 8)",
                KEYS - MAX_VIOLATIONS_SHOWN_PER_ROW
            )),
            "{}",
            r.reason
        );
        assert_eq!(r.reason.matches("has no field").count(), MAX_VIOLATIONS_SHOWN_PER_ROW);
        let counted: Vec<(&str, u64)> = outcome.causes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(counted, [("unknown_field", 1)], "a cause counts rows");
        let report = rejection_report(&outcome, limits.max_rejections_shown);
        assert!(report.len() < 4096, "{report}");
        assert!(report.contains("  unknown_field: 1\n"), "{report}");
    }

    #[tokio::test]
    async fn a_csv_row_describes_at_most_a_few_problems_too() {
        // Every one of the nine fields is bad: nine problems, nine causes.
        let mut text = format!("{HEADER}\n").into_bytes();
        text.extend_from_slice(b"\xff,\xff,");
        text.extend_from_slice("x".repeat(20_000).as_bytes());
        text.extend_from_slice(b",many,much,maybe,soon,\xff,\xff\n");
        let outcome = import(&text, Format::Csv, &ImportConfig::default()).await;
        assert_eq!(lines(&outcome), [2]);
        let r = &outcome.rejected[0];
        assert_eq!(r.causes.len(), 9, "{r:?}");
        assert_eq!(outcome.causes.values().sum::<u64>(), 9, "{:?}", outcome.causes);
        assert!(
            r.reason
                .ends_with("; and 1 more, not described (MAX_VIOLATIONS_SHOWN_PER_ROW = 8)"),
            "{r:?}"
        );
        assert!(r.reason.len() < 4096, "{r:?}");
    }

    #[test]
    fn a_long_description_is_cut_on_a_character_boundary() {
        let cut = cut_reason("字".repeat(1000));
        let suffix = "... (cut at MAX_VIOLATION_REASON_BYTES = 512)";
        assert!(cut.ends_with(suffix), "{cut}");
        let kept = &cut[..cut.len() - suffix.len()];
        assert!(kept.len() <= MAX_VIOLATION_REASON_BYTES && kept.len() > MAX_VIOLATION_REASON_BYTES - 4);
        assert!(kept.chars().all(|c| c == '字'));
        assert_eq!(cut_reason("short".into()), "short");
    }

    #[tokio::test]
    async fn a_bad_header_or_an_unclosed_quote_is_one_rejection() {
        let outcome = import(b"id,region,nope\n", Format::Csv, &ImportConfig::default()).await;
        assert_eq!(lines(&outcome), [1]);
        assert!(
            outcome.rejected[0].reason.contains("has no field \"nope\""),
            "{:?}",
            outcome.rejected
        );
        let outcome = import(b"", Format::Csv, &ImportConfig::default()).await;
        assert_eq!(outcome.rejected[0].reason, "header: the file is empty");
        let text = format!("{HEADER}\n{}\n\"{}", good(1), good(3));
        let outcome = import(text.as_bytes(), Format::Csv, &ImportConfig::default()).await;
        assert_eq!(lines(&outcome), [3]);
        assert_eq!(outcome.rejected[0].causes, ["csv"]);
        let text = format!("{HEADER}\n{},extra\n", good(1));
        let outcome = import(text.as_bytes(), Format::Csv, &ImportConfig::default()).await;
        assert_eq!(outcome.rejected[0].reason, "has 10 fields, but the header has 9");
    }

    #[test]
    fn the_import_limits_are_checked_at_load_by_their_keys() {
        let check = |extra: &str| {
            let text = format!("region = \"{REGION}\"\ninsecure = true\n{extra}");
            crate::config::NodeConfig::parse(&text, "n.toml")
                .and_then(|c| c.validate("n.toml").map(|()| c))
                .map_err(|e| e.to_string())
        };
        let c = check("").unwrap();
        assert_eq!(c.import, ImportConfig::default());
        assert_eq!(c.import.max_row_bytes, 65_536);
        assert_eq!(c.query.max_batch_bytes, 4 << 20);
        let e = check("[import]\nmax_row_bytes = 10\n").unwrap_err();
        assert!(
            e.contains("import.max_row_bytes") && e.contains("1024..=1048576"),
            "{e}"
        );
        let e = check("[import]\nmax_row_bytes = 1048576\n[query]\nmax_batch_bytes = 2097152\n").unwrap_err();
        assert!(
            e.contains("import.max_row_bytes") && e.contains("a quarter of query.max_batch_bytes"),
            "{e}"
        );
        check("[import]\nmax_row_bytes = 1048576\n").unwrap();
        let e = check("[import]\nmax_rejections_shown = 10001\n").unwrap_err();
        assert!(e.contains("import.max_rejections_shown"), "{e}");
        let e = check("[query]\nmax_batch_bytes = 100\n").unwrap_err();
        assert!(
            e.contains("query.max_batch_bytes") && e.contains("65536..=16777216"),
            "{e}"
        );
        let e = check("[query]\nmax_batch_bytes = 67108864\n").unwrap_err();
        assert!(e.contains("query.max_batch_bytes"), "{e}");
        let e = check("[import]\nmax_rows = 1\n").unwrap_err();
        assert!(e.contains("max_rows"), "{e}");
    }

    /// Compiles one dataset message with the mesh's options.
    fn compile(body: &str) -> Result<yrd_proto::schema::Registry, yrd_proto::schema::SchemaError> {
        const KEYS: &str = "sensitivity: SENSITIVITY_PUBLIC sharing: SHARING_CLASS_UNCONDITIONAL \
                            filterable: true sortable: true required: true";
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "syntax = \"proto3\";\npackage t.v1;\nimport \"yrd/mesh/v1/options.proto\";\n\
             message T {{\n option (yrd.mesh.v1.dataset) = {{ id: \"t\" primary_key: [\"k\"] }};\n\
             string k = 1 [(yrd.mesh.v1.field) = {{ {KEYS} }}];\n\
             string region = 2 [(yrd.mesh.v1.field) = {{ {KEYS} }}];\n{body}\n}}\n"
        );
        std::fs::write(dir.path().join("t.proto"), text).unwrap();
        let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
        let mut compiler = protox::Compiler::new([dir.path(), Path::new(protos)]).unwrap();
        compiler.include_imports(true);
        compiler.open_files(["t.proto"]).unwrap();
        yrd_proto::schema::Registry::from_pool(&compiler.descriptor_pool())
    }

    #[test]
    fn max_length_is_read_from_the_descriptor_and_checked() {
        const OPTS: &str = "sensitivity: SENSITIVITY_PUBLIC sharing: SHARING_CLASS_UNCONDITIONAL";
        let ok = compile(&format!(
            "string note = 3 [(yrd.mesh.v1.field) = {{ {OPTS} max_length: 40 }}];"
        ))
        .unwrap();
        let t = ok.get("t").unwrap();
        assert_eq!(t.field("note").unwrap().1.max_length, Some(40));
        assert_eq!(
            t.field("k").unwrap().1.max_length,
            Some(yrd_proto::schema::DEFAULT_MAX_LENGTH)
        );
        let err = compile(&format!(
            "int64 n = 3 [(yrd.mesh.v1.field) = {{ {OPTS} max_length: 4 }}];"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("max_length applies to strings"), "{err}");
        let err = compile(&format!(
            "string s = 3 [(yrd.mesh.v1.field) = {{ {OPTS} max_length: 100000 }}];"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("more than 16384"), "{err}");
    }
}
