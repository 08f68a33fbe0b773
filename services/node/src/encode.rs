//! Typed cells straight to protobuf bytes: each column is written as its
//! field of the dataset message, so the node never builds an intermediate
//! message per row; and each row's order-preserving sort key. Whatever the
//! store, this is the one encoder. Values are masked as the permit says,
//! before they leave the region.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use yrd_datasets::Cell;
use yrd_proto::mesh::{Value, value};
use yrd_proto::schema::{DatasetSchema, FieldSchema, FieldType};
use yrd_query::sortkey::KeyWriter;

use crate::policy::{AppKey, Mask};
use crate::store::{SortColumn, StoreError, describe_key};

/// Appends the message encoding of `field` holding `cell` to `buf`, masked
/// by `mask` if any (`key` is the application's key for `hash`). Defaults
/// (NULL, empty strings, zeros, false) are omitted, as proto3 does; so is
/// a value its mask withholds (`redact`, a mask that does not fit).
pub fn encode_field(
    field: &FieldSchema,
    cell: Option<&Cell>,
    mask: Option<Mask>,
    key: Option<&AppKey>,
    buf: &mut Vec<u8>,
) {
    let masked;
    let cell = match (cell, mask) {
        (Some(c), Some(m)) => {
            masked = m.apply(c, key);
            masked.as_ref()
        }
        (c, None) => c,
        (None, Some(_)) => None,
    };
    let Some(cell) = cell else { return };
    let tag = field.number;
    match (field.ty, cell) {
        (FieldType::String | FieldType::Date, Cell::Text(s)) if !s.is_empty() => put_bytes(tag, s.as_bytes(), buf),
        (FieldType::Int, Cell::Int(i)) if *i != 0 => {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        (FieldType::Bool, Cell::Bool(true)) => {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(1, buf);
        }
        (FieldType::Double, Cell::Real(r)) if *r != 0.0 => put_double(tag, *r, buf),
        (FieldType::Double, Cell::Int(i)) if *i != 0 => put_double(tag, *i as f64, buf),
        (FieldType::Timestamp, Cell::Time(secs) | Cell::Int(secs)) => {
            // google.protobuf.Timestamp { int64 seconds = 1; }: present even
            // at the epoch, as a message field is.
            let secs = *secs;
            let inner = if secs == 0 {
                0
            } else {
                1 + encoded_len_varint(secs as u64)
            };
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(inner as u64, buf);
            if secs != 0 {
                encode_key(1, WireType::Varint, buf);
                encode_varint(secs as u64, buf);
            }
        }
        // Zero values, and cells whose kind does not match the field's type
        // (impossible for data loaded through validation).
        _ => {}
    }
}

/// The length of the message encoding of a row whose cells are in schema
/// order, unmasked: what [`encode_field`] would write for every field, and
/// what `import.max_row_bytes` bounds. Computed without encoding.
pub fn encoded_len(schema: &DatasetSchema, cells: &[Option<Cell>]) -> usize {
    schema
        .fields
        .iter()
        .zip(cells)
        .map(|(field, cell)| cell.as_ref().map_or(0, |c| field_len(field, c)))
        .sum()
}

/// The length of one field's encoding, as [`encode_field`] writes it.
fn field_len(field: &FieldSchema, cell: &Cell) -> usize {
    let tag = field.number;
    match (field.ty, cell) {
        (FieldType::String | FieldType::Date, Cell::Text(s)) if !s.is_empty() => {
            key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
        }
        (FieldType::Int, Cell::Int(i)) if *i != 0 => key_len(tag) + encoded_len_varint(*i as u64),
        (FieldType::Bool, Cell::Bool(true)) => key_len(tag) + 1,
        (FieldType::Double, Cell::Real(r)) if *r != 0.0 => key_len(tag) + 8,
        (FieldType::Double, Cell::Int(i)) if *i != 0 => key_len(tag) + 8,
        (FieldType::Timestamp, Cell::Time(secs) | Cell::Int(secs)) => {
            let inner = if *secs == 0 {
                0
            } else {
                1 + encoded_len_varint(*secs as u64)
            };
            key_len(tag) + encoded_len_varint(inner as u64) + inner
        }
        _ => 0,
    }
}

/// The bytes one row adds to a `RowBatch`: its `Any` (type URL and value)
/// and its sort key, each a length-delimited field of the batch.
pub fn row_message_len(type_url: &str, value_len: usize, sort_key_len: usize) -> usize {
    let delimited = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    delimited(delimited(type_url.len()) + delimited(value_len)) + delimited(sort_key_len)
}

/// The error for a row of `bytes` encoded, more than a batch may carry
/// (`limit`), naming it by its primary key: the last sort columns, whose
/// cells are `keys` (aligned with `order`).
pub fn row_too_large(
    schema: &DatasetSchema,
    order: &[SortColumn],
    keys: &[Option<Cell>],
    bytes: usize,
    limit: usize,
) -> StoreError {
    let values: Vec<(&str, String, usize)> = schema
        .primary_key
        .iter()
        .filter_map(|&f| {
            let i = order.iter().position(|c| c.field == f)?;
            let (text, full) = match keys.get(i)?.as_ref()? {
                Cell::Text(s) => (s.chars().take(256).collect(), s.len()),
                Cell::Int(n) | Cell::Time(n) => (n.to_string(), 0),
                Cell::Real(r) => (r.to_string(), 0),
                Cell::Bool(b) => (b.to_string(), 0),
            };
            Some((schema.fields[f].name.as_str(), text, full))
        })
        .collect();
    let key = describe_key(values.iter().map(|(f, t, n)| (*f, t.as_str(), *n)));
    StoreError::RowTooLarge {
        dataset: schema.id.clone(),
        key,
        bytes: bytes as u64,
        limit: limit as u64,
    }
}

fn put_bytes(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn put_double(tag: u32, v: f64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Writes the sort key of a row from its sort columns' cells, aligned with
/// `order`. Sort columns are never masked (the permit refuses that), so the
/// key carries no hidden value.
pub fn sort_key(schema: &DatasetSchema, order: &[SortColumn], cells: &[Option<Cell>], key: &mut KeyWriter) {
    key.clear();
    for (col, cell) in order.iter().zip(cells) {
        let desc = col.descending;
        match (schema.fields[col.field].ty, cell) {
            (FieldType::Date, Some(Cell::Text(s))) => key.push_date(s, desc),
            (_, Some(Cell::Text(s))) => key.push_str(s, desc),
            (_, Some(Cell::Time(v))) | (FieldType::Timestamp, Some(Cell::Int(v))) => key.push_timestamp(*v, desc),
            (FieldType::Double, Some(Cell::Int(v))) => key.push_f64(*v as f64, desc),
            (_, Some(Cell::Int(v))) => key.push_i64(*v, desc),
            (_, Some(Cell::Real(v))) => key.push_f64(*v, desc),
            (_, Some(Cell::Bool(v))) => key.push_bool(*v, desc),
            // Sortable fields are required, so never null.
            (_, None) => key.push_null(desc),
        }
    }
}

/// The protobuf value of a cell of a field of type `ty` (an empty value for
/// NULL): group keys, min and max, resume keys.
pub fn cell_value(ty: FieldType, cell: Option<Cell>) -> Value {
    let kind = cell.map(|c| match (ty, c) {
        (FieldType::Date, Cell::Text(t)) => value::Kind::DateValue(t),
        (_, Cell::Text(t)) => value::Kind::StringValue(t),
        (_, Cell::Time(s)) | (FieldType::Timestamp, Cell::Int(s)) => {
            value::Kind::TimestampValue(prost_types::Timestamp { seconds: s, nanos: 0 })
        }
        (_, Cell::Bool(b)) => value::Kind::BoolValue(b),
        (FieldType::Double, Cell::Int(i)) => value::Kind::DoubleValue(i as f64),
        (_, Cell::Int(i)) => value::Kind::IntValue(i),
        (_, Cell::Real(r)) => value::Kind::DoubleValue(r),
    });
    Value { kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use yrd_proto::datasets::enterprise::v1::Enterprise;
    use yrd_proto::schema::Registry;

    #[test]
    fn encoded_fields_decode_as_the_dataset_message() {
        let schema = Registry::standard().unwrap().get("enterprise").unwrap().clone();
        let mut buf = Vec::new();
        let f = |n: &str| schema.field(n).unwrap().1;
        let text = |s: &str| Some(Cell::Text(s.to_owned()));
        encode_field(
            f("credit_code"),
            text("91320500MA1XXXXX0").as_ref(),
            None,
            None,
            &mut buf,
        );
        encode_field(f("registered_capital"), Some(&Cell::Real(1.5e6)), None, None, &mut buf);
        encode_field(
            f("legal_representative"),
            text("王小明").as_ref(),
            Some(Mask::Surname),
            None,
            &mut buf,
        );
        encode_field(f("address"), None, None, None, &mut buf);
        let e = Enterprise::decode(buf.as_slice()).unwrap();
        assert_eq!(e.credit_code, "91320500MA1XXXXX0");
        assert_eq!(e.registered_capital, 1.5e6);
        assert_eq!(e.legal_representative, "王**");
        assert_eq!(e.address, "");
    }

    #[test]
    fn every_mask_encodes_as_a_valid_value_of_its_field() {
        let schema = Registry::standard().unwrap().get("enterprise").unwrap().clone();
        let f = |n: &str| schema.field(n).unwrap().1;
        let key = AppKey::derive(b"node-secret-0123456789", "spiffe://yrd.mesh/app/a");
        let mut buf = Vec::new();
        let text = |s: &str| Cell::Text(s.to_owned());
        encode_field(
            f("established"),
            Some(&text("1998-07-15")),
            Some(Mask::Year),
            None,
            &mut buf,
        );
        encode_field(
            f("registered_capital"),
            Some(&Cell::Real(1_234_567.0)),
            Some(Mask::Round { digits: 4 }),
            None,
            &mut buf,
        );
        encode_field(
            f("name"),
            Some(&text("苏州某某公司")),
            Some(Mask::Hash),
            Some(&key),
            &mut buf,
        );
        encode_field(
            f("address"),
            Some(&text("苏州市虎丘区")),
            Some(Mask::Redact),
            None,
            &mut buf,
        );
        encode_field(
            f("contact_phone"),
            Some(&text("13812345678")),
            Some(Mask::Keep { first: 3, last: 4 }),
            None,
            &mut buf,
        );
        let e = Enterprise::decode(buf.as_slice()).unwrap();
        assert_eq!(e.established, "1998-01-01");
        assert_eq!(e.registered_capital, 1_230_000.0);
        assert_eq!(e.name, key.hash("苏州某某公司"));
        assert_eq!(e.address, "", "redacted: left out");
        assert_eq!(e.contact_phone, "138****5678");
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        let registry = Registry::standard().unwrap();
        let spec = yrd_datasets::demo::DemoSpec { seed: 3, scale: 0.01 };
        for schema in registry.datasets() {
            let rows = yrd_datasets::demo::rows(&schema.id, "320000", &spec).unwrap();
            for named in rows.take(50) {
                let mut cells = yrd_datasets::cells_from_named(schema, named).unwrap();
                // Zeros and empty text are left out of both.
                if let Some(c) = cells.iter_mut().find(|c| matches!(c, Some(Cell::Real(_)))) {
                    *c = Some(Cell::Real(0.0));
                }
                let mut buf = Vec::new();
                for (f, c) in schema.fields.iter().zip(&cells) {
                    encode_field(f, c.as_ref(), None, None, &mut buf);
                }
                assert_eq!(encoded_len(schema, &cells), buf.len(), "{}", schema.id);
            }
        }
        let schema = registry.get("air_quality").unwrap();
        let mut cells = vec![None; schema.fields.len()];
        let (t, _) = schema.field("observed_at").unwrap();
        for secs in [0, 1, -1, 1_740_816_000] {
            cells[t] = Some(Cell::Time(secs));
            let mut buf = Vec::new();
            encode_field(&schema.fields[t], cells[t].as_ref(), None, None, &mut buf);
            assert_eq!(encoded_len(schema, &cells), buf.len(), "{secs}");
        }
    }

    #[test]
    fn timestamps_encode_as_messages() {
        let schema = Registry::standard().unwrap().get("air_quality").unwrap().clone();
        let mut buf = Vec::new();
        encode_field(
            schema.field("observed_at").unwrap().1,
            Some(&Cell::Time(1_740_816_000)),
            None,
            None,
            &mut buf,
        );
        encode_field(
            schema.field("aqi").unwrap().1,
            Some(&Cell::Int(57)),
            None,
            None,
            &mut buf,
        );
        let a = yrd_proto::datasets::environment::v1::AirQualityHourly::decode(buf.as_slice()).unwrap();
        assert_eq!(a.observed_at.unwrap().seconds, 1_740_816_000);
        assert_eq!(a.aqi, 57);
    }

    #[test]
    fn sort_keys_follow_the_order() {
        let schema = Registry::standard().unwrap().get("enterprise").unwrap().clone();
        let (cap, _) = schema.field("registered_capital").unwrap();
        let (code, _) = schema.field("credit_code").unwrap();
        let order = [SortColumn::desc(cap), SortColumn::asc(code)];
        let key_of = |c: f64, k: &str| {
            let mut w = KeyWriter::new();
            sort_key(
                &schema,
                &order,
                &[Some(Cell::Real(c)), Some(Cell::Text(k.into()))],
                &mut w,
            );
            w.finish()
        };
        assert!(key_of(5.0, "b") < key_of(4.0, "a"));
        assert!(key_of(5.0, "a") < key_of(5.0, "b"));
    }
}
