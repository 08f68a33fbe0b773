//! Loading data: `yrd-node import` (CSV or JSON Lines) and `yrd-node
//! generate` (the demo data). Both pass every row through the same
//! validation, and both are all or nothing ([`Store::load`]). The rows are
//! read lazily, as the store pulls them off the async threads.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use yrd_datasets::Cell;
use yrd_datasets::demo::{self, DemoSpec};
use yrd_datasets::validate::{cells_from_named, validate_row};
use yrd_proto::datetime::parse_timestamp;
use yrd_proto::schema::{DatasetSchema, FieldSchema, FieldType};

use crate::error::NodeError;
use crate::store::{LoadOutcome, Rejection, Store};

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

/// Checks one row against the dataset's rules and this node's region.
pub fn check_row(
    schema: &DatasetSchema,
    region: &str,
    line: u64,
    cells: Vec<Option<Cell>>,
) -> Result<(u64, Vec<Option<Cell>>), Rejection> {
    let mut reasons: Vec<String> = validate_row(schema, &cells).iter().map(ToString::to_string).collect();
    if let Some(Some(Cell::Text(r))) = cells.get(schema.region_field)
        && r != region
    {
        reasons.push(format!("region: {r} is not this node's region {region}"));
    }
    if reasons.is_empty() {
        Ok((line, cells))
    } else {
        Err(Rejection {
            line,
            reason: reasons.join("; "),
        })
    }
}

/// Imports a file into a dataset, appending to its rows.
pub async fn import_file(
    store: &dyn Store,
    region: &str,
    dataset: &str,
    path: &Path,
    format: Format,
) -> Result<LoadOutcome, NodeError> {
    let schema = store
        .registry()
        .get(dataset)
        .ok_or_else(|| yrd_query::QueryError::UnknownDataset {
            dataset: dataset.to_owned(),
        })?
        .clone();
    let io = |source| NodeError::Io {
        path: path.display().to_string(),
        source,
    };
    let region = region.to_owned();
    let file = File::open(path).map_err(io)?;
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(false)
                .from_reader(BufReader::new(file));
            let headers = reader
                .headers()
                .map_err(|e| NodeError::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .clone();
            let columns = match csv_columns(&schema, &headers) {
                Ok(c) => c,
                Err(reason) => {
                    return Ok(LoadOutcome {
                        inserted: 0,
                        rejected: vec![Rejection { line: 1, reason }],
                    });
                }
            };
            let rows_schema = schema.clone();
            let rows = reader.into_records().map(move |rec| {
                let schema = &rows_schema;
                let rec = rec.map_err(|e| Rejection {
                    line: e.position().map_or(0, |p| p.line()),
                    reason: format!("not valid CSV: {e}"),
                })?;
                let line = rec.position().map_or(0, |p| p.line());
                let mut cells = vec![None; schema.fields.len()];
                let mut errors = Vec::new();
                for (col, text) in columns.iter().zip(rec.iter()) {
                    let f = &schema.fields[*col];
                    match parse_text(f, text) {
                        Ok(c) => cells[*col] = c,
                        Err(e) => errors.push(e),
                    }
                }
                if !errors.is_empty() {
                    return Err(Rejection {
                        line,
                        reason: errors.join("; "),
                    });
                }
                check_row(schema, &region, line, cells)
            });
            Ok(store.load(schema, false, Box::new(rows)).await?)
        }
        Format::JsonLines => {
            let rows_schema = schema.clone();
            let lines = BufReader::new(file).lines().enumerate().filter_map(move |(i, l)| {
                let schema = &rows_schema;
                let line = i as u64 + 1;
                match l {
                    Err(e) => Some(Err(Rejection {
                        line,
                        reason: format!("cannot be read: {e}"),
                    })),
                    Ok(text) if text.trim().is_empty() => None,
                    Ok(text) => {
                        Some(json_row(schema, line, &text).and_then(|cells| check_row(schema, &region, line, cells)))
                    }
                }
            });
            Ok(store.load(schema, false, Box::new(lines)).await?)
        }
    }
}

/// Replaces every dataset's rows with the region's demo data.
pub async fn generate(store: &dyn Store, region: &str, spec: &DemoSpec) -> Result<Vec<(String, u64)>, NodeError> {
    let mut loaded = Vec::new();
    for schema in store.registry().datasets() {
        let rows = demo::rows(&schema.id, region, spec).map_err(|e| NodeError::Demo(e.to_string()))?;
        let (rows_schema, region_owned) = (Arc::clone(schema), region.to_owned());
        let checked = rows.enumerate().map(move |(i, named)| {
            let line = i as u64 + 1;
            let cells = cells_from_named(&rows_schema, named).map_err(|v| Rejection {
                line,
                reason: v.to_string(),
            })?;
            check_row(&rows_schema, &region_owned, line, cells)
        });
        let outcome = store.load(schema.clone(), true, Box::new(checked)).await?;
        if let Some(first) = outcome.rejected.first() {
            // A generator must never write what its importer rejects.
            return Err(NodeError::Demo(format!(
                "{}: generated row {} was rejected ({} in all): {}",
                schema.id,
                first.line,
                outcome.rejected.len(),
                first.reason
            )));
        }
        loaded.push((schema.id.clone(), outcome.inserted));
    }
    Ok(loaded)
}

fn csv_columns(schema: &DatasetSchema, headers: &csv::StringRecord) -> Result<Vec<usize>, String> {
    let mut columns = Vec::new();
    for h in headers {
        let name = h.trim();
        let (i, _) = schema
            .field(name)
            .ok_or_else(|| format!("header: dataset {} has no field {name:?}", schema.id))?;
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

/// What a value looks like in an error: the value itself, unless the field
/// is personal or secret.
fn shown(field: &FieldSchema, text: &str) -> String {
    if field.is_confidential() {
        "(value withheld)".to_owned()
    } else {
        format!("{text:?}")
    }
}

fn parse_text(field: &FieldSchema, text: &str) -> Result<Option<Cell>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = |what: &str| format!("{}: {} is not {what}", field.name, shown(field, text));
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
    let reject = |reason: String| Rejection { line, reason };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| reject(format!("not valid JSON: {e}")))?;
    let object = value.as_object().ok_or_else(|| reject("not a JSON object".into()))?;
    let mut cells = vec![None; schema.fields.len()];
    let mut errors = Vec::new();
    for (key, v) in object {
        let Some((i, f)) = schema.field(key) else {
            errors.push(format!("dataset {} has no field {key:?}", schema.id));
            continue;
        };
        let cell = match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => parse_text(f, s),
            serde_json::Value::Bool(b) if f.ty == FieldType::Bool => Ok(Some(Cell::Bool(*b))),
            serde_json::Value::Number(n) => match f.ty {
                FieldType::Int => n
                    .as_i64()
                    .map(|i| Some(Cell::Int(i)))
                    .ok_or_else(|| format!("{key}: {} is not an integer", shown(f, &n.to_string()))),
                FieldType::Double => n
                    .as_f64()
                    .map(|x| Some(Cell::Real(x)))
                    .ok_or_else(|| format!("{key}: not a number")),
                FieldType::Timestamp => n
                    .as_i64()
                    .map(|i| Some(Cell::Time(i)))
                    .ok_or_else(|| format!("{key}: not a timestamp")),
                _ => Err(format!("{key}: a {} field needs a string, not a number", f.ty.name())),
            },
            _ => Err(format!("{key}: a {} field cannot hold this JSON value", f.ty.name())),
        };
        match cell {
            Ok(c) => cells[i] = c,
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(cells)
    } else {
        Err(reject(errors.join("; ")))
    }
}
