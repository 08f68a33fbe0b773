//! Rows from the store straight to protobuf bytes: each selected column is
//! written as its field of the dataset message, so the node never builds
//! an intermediate message per row. Personal and secret values are masked
//! here, before they leave the region.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use rusqlite::types::ValueRef;
use yrd_proto::mesh::Sensitivity;
use yrd_proto::schema::{FieldSchema, FieldType};
use yrd_query::sortkey::KeyWriter;

use super::sql::SortColumn;
use yrd_proto::schema::DatasetSchema;

/// Masks a personal or secret value. Personal values keep their first
/// character (a surname); secret values keep their first and last.
pub fn mask(sensitivity: Sensitivity, text: &str) -> String {
    let n = text.chars().count();
    match sensitivity {
        Sensitivity::Personal => text
            .chars()
            .enumerate()
            .map(|(i, c)| if i == 0 { c } else { '*' })
            .collect(),
        Sensitivity::Secret => text
            .chars()
            .enumerate()
            .map(|(i, c)| if i == 0 || (i + 1 == n && n > 2) { c } else { '*' })
            .collect(),
        _ => text.to_owned(),
    }
}

/// Appends the message encoding of `field` holding `value` to `buf`.
/// Defaults (empty strings, zeros, false) are omitted, as proto3 does.
pub fn encode_field(field: &FieldSchema, value: ValueRef<'_>, buf: &mut Vec<u8>) {
    let tag = field.number;
    match (field.ty, value) {
        (_, ValueRef::Null) => {}
        (FieldType::String | FieldType::Date, ValueRef::Text(bytes)) => {
            if bytes.is_empty() {
                return;
            }
            if field.is_confidential() {
                let masked = mask(field.sensitivity, &String::from_utf8_lossy(bytes));
                put_bytes(tag, masked.as_bytes(), buf);
            } else {
                put_bytes(tag, bytes, buf);
            }
        }
        (FieldType::Int, ValueRef::Integer(i)) if i != 0 => {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(i as u64, buf);
        }
        (FieldType::Bool, ValueRef::Integer(i)) if i != 0 => {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(1, buf);
        }
        (FieldType::Double, ValueRef::Real(r)) if r != 0.0 => put_double(tag, r, buf),
        (FieldType::Double, ValueRef::Integer(i)) if i != 0 => put_double(tag, i as f64, buf),
        (FieldType::Timestamp, ValueRef::Integer(secs)) => {
            // google.protobuf.Timestamp { int64 seconds = 1; }
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
        // Zero values, and values whose storage class does not match the
        // column's type (impossible for data loaded through validation).
        _ => {}
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

/// Writes the sort key of a row whose first columns are the sort columns.
pub fn sort_key(
    schema: &DatasetSchema,
    order: &[SortColumn],
    row: &rusqlite::Row<'_>,
    key: &mut KeyWriter,
) -> rusqlite::Result<()> {
    key.clear();
    for (i, col) in order.iter().enumerate() {
        let desc = col.descending;
        match (schema.fields[col.field].ty, row.get_ref(i)?) {
            (FieldType::Date, ValueRef::Text(b)) => key.push_date(&String::from_utf8_lossy(b), desc),
            (_, ValueRef::Text(b)) => key.push_str(&String::from_utf8_lossy(b), desc),
            (FieldType::Timestamp, ValueRef::Integer(v)) => key.push_timestamp(v, desc),
            (FieldType::Bool, ValueRef::Integer(v)) => key.push_bool(v != 0, desc),
            (FieldType::Double, ValueRef::Integer(v)) => key.push_f64(v as f64, desc),
            (_, ValueRef::Integer(v)) => key.push_i64(v, desc),
            (_, ValueRef::Real(v)) => key.push_f64(v, desc),
            // Sortable fields are required, so never null; blobs are never stored.
            (_, ValueRef::Null | ValueRef::Blob(_)) => {
                return Err(rusqlite::Error::InvalidColumnType(
                    i,
                    schema.fields[col.field].name.clone(),
                    rusqlite::types::Type::Null,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use yrd_proto::datasets::enterprise::v1::Enterprise;
    use yrd_proto::schema::Registry;

    #[test]
    fn masks_keep_little() {
        assert_eq!(mask(Sensitivity::Personal, "张伟明"), "张**");
        assert_eq!(mask(Sensitivity::Secret, "32010219800101123X"), "3****************X");
        assert_eq!(mask(Sensitivity::Secret, "ab"), "a*");
        assert_eq!(mask(Sensitivity::Public, "abc"), "abc");
    }

    #[test]
    fn encoded_fields_decode_as_the_dataset_message() {
        let schema = Registry::standard().unwrap().get("enterprise").unwrap().clone();
        let mut buf = Vec::new();
        let f = |n: &str| schema.field(n).unwrap().1;
        encode_field(f("credit_code"), ValueRef::Text(b"91320500MA1XXXXX0"), &mut buf);
        encode_field(f("registered_capital"), ValueRef::Real(1.5e6), &mut buf);
        encode_field(f("legal_representative"), ValueRef::Text("王小明".as_bytes()), &mut buf);
        encode_field(f("address"), ValueRef::Null, &mut buf);
        let e = Enterprise::decode(buf.as_slice()).unwrap();
        assert_eq!(e.credit_code, "91320500MA1XXXXX0");
        assert_eq!(e.registered_capital, 1.5e6);
        assert_eq!(e.legal_representative, "王**");
        assert_eq!(e.address, "");
    }

    #[test]
    fn timestamps_encode_as_messages() {
        let schema = Registry::standard().unwrap().get("air_quality").unwrap().clone();
        let mut buf = Vec::new();
        encode_field(
            schema.field("observed_at").unwrap().1,
            ValueRef::Integer(1_740_816_000),
            &mut buf,
        );
        encode_field(schema.field("aqi").unwrap().1, ValueRef::Integer(57), &mut buf);
        let a = yrd_proto::datasets::environment::v1::AirQualityHourly::decode(buf.as_slice()).unwrap();
        assert_eq!(a.observed_at.unwrap().seconds, 1_740_816_000);
        assert_eq!(a.aqi, 57);
    }
}
