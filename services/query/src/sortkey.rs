//! Order-preserving byte encoding of sort keys: a row's key is the
//! concatenation of its order_by values, encoded so that comparing two keys
//! bytewise orders the rows as the order_by does. The gateway merges the
//! regions' streams by comparing these bytes, without decoding rows.
//!
//! Each component is a type tag followed by a body:
//!
//! - integers and timestamps (seconds): 8 bytes big-endian with the sign bit
//!   flipped, so negative numbers sort first;
//! - doubles: the IEEE bits, all inverted for negatives and the sign bit
//!   flipped for positives; `-0.0` is written as `0.0` and every NaN as one
//!   NaN, which sorts after infinity;
//! - booleans: one byte;
//! - strings and dates: the UTF-8 bytes with `00` escaped as `00 FF`, then the
//!   terminator `00 01`, so that a string sorts before its extensions;
//! - a missing value: the tag alone, smallest of all tags.
//!
//! Every component is prefix-free, so concatenations compare component by
//! component. A descending component is the ascending one with every byte
//! inverted, which reverses its order.

use yrd_proto::mesh::{Value, value};
use yrd_proto::schema::FieldType;

use crate::QueryError;

/// Tag of a missing value: smallest, so missing values sort first.
const TAG_NULL: u8 = 0x01;
const TAG_BOOL: u8 = 0x10;
const TAG_INT: u8 = 0x20;
const TAG_DOUBLE: u8 = 0x30;
const TAG_TIMESTAMP: u8 = 0x40;
const TAG_STRING: u8 = 0x50;
const TAG_DATE: u8 = 0x60;

/// The bits of the NaN every NaN is written as (a positive quiet NaN, which
/// after the sign flip sorts above positive infinity).
const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// Builds one sort key. Reuse one writer across rows with [`clear`] to
/// avoid an allocation per row.
///
/// [`clear`]: KeyWriter::clear
#[derive(Debug, Clone, Default)]
pub struct KeyWriter {
    buf: Vec<u8>,
}

impl KeyWriter {
    /// An empty key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a string component.
    pub fn push_str(&mut self, v: &str, descending: bool) {
        self.push_text(TAG_STRING, v, descending);
    }

    /// Appends a date (`YYYY-MM-DD`) component. Dates are encoded as their
    /// text, whose order is the calendar's.
    pub fn push_date(&mut self, v: &str, descending: bool) {
        self.push_text(TAG_DATE, v, descending);
    }

    /// Appends an integer component.
    pub fn push_i64(&mut self, v: i64, descending: bool) {
        self.push_fixed(TAG_INT, i64_bits(v), descending);
    }

    /// Appends a double component. `-0.0` equals `0.0`; NaN sorts last.
    pub fn push_f64(&mut self, v: f64, descending: bool) {
        self.push_fixed(TAG_DOUBLE, f64_bits(v), descending);
    }

    /// Appends a boolean component (`false` first).
    pub fn push_bool(&mut self, v: bool, descending: bool) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[TAG_BOOL, u8::from(v)]);
        self.finish_component(start, descending);
    }

    /// Appends a timestamp component, in whole seconds since the epoch.
    pub fn push_timestamp(&mut self, secs: i64, descending: bool) {
        self.push_fixed(TAG_TIMESTAMP, i64_bits(secs), descending);
    }

    /// Appends a missing value, which sorts before every value.
    pub fn push_null(&mut self, descending: bool) {
        let start = self.buf.len();
        self.buf.push(TAG_NULL);
        self.finish_component(start, descending);
    }

    /// Appends a typed value: a date value as a date, a timestamp by its
    /// whole seconds, a value with no kind as missing.
    pub fn push_value(&mut self, v: &Value, descending: bool) -> Result<(), QueryError> {
        match &v.kind {
            None => self.push_null(descending),
            Some(value::Kind::StringValue(s)) => self.push_str(s, descending),
            Some(value::Kind::DateValue(s)) => self.push_date(s, descending),
            Some(value::Kind::IntValue(i)) => self.push_i64(*i, descending),
            Some(value::Kind::DoubleValue(d)) => self.push_f64(*d, descending),
            Some(value::Kind::BoolValue(b)) => self.push_bool(*b, descending),
            Some(value::Kind::TimestampValue(ts)) => {
                if !(0..1_000_000_000).contains(&ts.nanos) {
                    return Err(QueryError::Invalid {
                        param: "order_by",
                        message: format!("a timestamp sort value has nanos {} out of range", ts.nanos),
                    });
                }
                self.push_timestamp(ts.seconds, descending);
            }
        }
        Ok(())
    }

    /// The key so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the key, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The finished key.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn push_fixed(&mut self, tag: u8, bits: u64, descending: bool) {
        let start = self.buf.len();
        self.buf.push(tag);
        self.buf.extend_from_slice(&bits.to_be_bytes());
        self.finish_component(start, descending);
    }

    fn push_text(&mut self, tag: u8, v: &str, descending: bool) {
        let start = self.buf.len();
        self.buf.reserve(v.len() + 3);
        self.buf.push(tag);
        for &b in v.as_bytes() {
            self.buf.push(b);
            if b == 0 {
                self.buf.push(0xff);
            }
        }
        self.buf.extend_from_slice(&[0x00, 0x01]);
        self.finish_component(start, descending);
    }

    fn finish_component(&mut self, start: usize, descending: bool) {
        if descending {
            for b in &mut self.buf[start..] {
                *b = !*b;
            }
        }
    }
}

/// Decodes a key written for fields of `types`, in order, with the given
/// directions. A malformed key is reported as a bad page token, the only
/// way a key reaches a server from outside.
pub fn decode_key(bytes: &[u8], types: &[FieldType], descending: &[bool]) -> Result<Vec<Value>, QueryError> {
    if types.len() != descending.len() {
        return Err(malformed(format!(
            "{} sort fields but {} directions",
            types.len(),
            descending.len()
        )));
    }
    let mut reader = Reader { bytes, pos: 0 };
    let mut values = Vec::with_capacity(types.len());
    for (i, (&ty, &desc)) in types.iter().zip(descending).enumerate() {
        let value = reader
            .component(ty, desc)
            .map_err(|problem| malformed(format!("sort key {}: {problem}", i + 1)))?;
        values.push(value);
    }
    if reader.pos != bytes.len() {
        return Err(malformed(format!(
            "{} bytes left after the last sort key",
            bytes.len() - reader.pos
        )));
    }
    Ok(values)
}

fn malformed(problem: String) -> QueryError {
    QueryError::PageToken {
        reason: format!("carries a malformed sort key ({problem})"),
    }
}

fn i64_bits(v: i64) -> u64 {
    // Flipping the sign bit maps i64::MIN..=i64::MAX onto 0..=u64::MAX.
    (v as u64) ^ (1 << 63)
}

fn f64_bits(v: f64) -> u64 {
    let bits = if v.is_nan() {
        CANONICAL_NAN
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    };
    // Negative doubles order in reverse of their bits, so all their bits are
    // inverted; positive ones only need to sort above them.
    if bits >> 63 == 1 { !bits } else { bits | (1 << 63) }
}

fn f64_from_bits(encoded: u64) -> f64 {
    let bits = if encoded >> 63 == 1 {
        encoded & !(1 << 63)
    } else {
        !encoded
    };
    f64::from_bits(bits)
}

/// Reads components, undoing the inversion of descending ones.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self, desc: bool) -> Result<u8, String> {
        let b = *self.bytes.get(self.pos).ok_or("ends early")?;
        self.pos += 1;
        Ok(if desc { !b } else { b })
    }

    fn u64(&mut self, desc: bool) -> Result<u64, String> {
        let mut bits = 0u64;
        for _ in 0..8 {
            bits = bits << 8 | u64::from(self.byte(desc)?);
        }
        Ok(bits)
    }

    fn text(&mut self, desc: bool) -> Result<String, String> {
        let mut out = Vec::new();
        loop {
            match self.byte(desc)? {
                0x00 => match self.byte(desc)? {
                    0x01 => break,
                    0xff => out.push(0),
                    other => return Err(format!("bad escape 00 {other:02x}")),
                },
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| "a string is not UTF-8".to_owned())
    }

    fn component(&mut self, ty: FieldType, desc: bool) -> Result<Value, String> {
        let tag = self.byte(desc)?;
        if tag == TAG_NULL {
            return Ok(Value { kind: None });
        }
        let expected = match ty {
            FieldType::String => TAG_STRING,
            FieldType::Int => TAG_INT,
            FieldType::Double => TAG_DOUBLE,
            FieldType::Bool => TAG_BOOL,
            FieldType::Timestamp => TAG_TIMESTAMP,
            FieldType::Date => TAG_DATE,
        };
        if tag != expected {
            return Err(format!("tag {tag:02x} where a {} was expected", ty.name()));
        }
        let kind = match ty {
            FieldType::String => value::Kind::StringValue(self.text(desc)?),
            FieldType::Date => value::Kind::DateValue(self.text(desc)?),
            FieldType::Int => value::Kind::IntValue((self.u64(desc)? ^ (1 << 63)) as i64),
            FieldType::Double => value::Kind::DoubleValue(f64_from_bits(self.u64(desc)?)),
            FieldType::Timestamp => {
                let seconds = (self.u64(desc)? ^ (1 << 63)) as i64;
                value::Kind::TimestampValue(prost_types::Timestamp { seconds, nanos: 0 })
            }
            FieldType::Bool => match self.byte(desc)? {
                0 => value::Kind::BoolValue(false),
                1 => value::Kind::BoolValue(true),
                other => return Err(format!("boolean byte {other:02x}")),
            },
        };
        Ok(Value { kind: Some(kind) })
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    /// splitmix64: a deterministic generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Clone>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())].clone()
        }
    }

    const TYPES: [FieldType; 6] = [
        FieldType::String,
        FieldType::Int,
        FieldType::Double,
        FieldType::Bool,
        FieldType::Timestamp,
        FieldType::Date,
    ];

    fn random_value(rng: &mut Rng, ty: FieldType) -> Value {
        // Small domains, so that equal values and shared prefixes are common.
        let kind = match ty {
            FieldType::String => {
                let alphabet = ['\0', '\u{1}', 'a', 'b', '\u{7f}', '\u{ff}', 'é', '长', '\u{10ffff}'];
                let len = rng.below(5);
                value::Kind::StringValue((0..len).map(|_| rng.pick(&alphabet)).collect())
            }
            FieldType::Int => value::Kind::IntValue(match rng.below(3) {
                0 => rng.pick(&[
                    i64::MIN,
                    i64::MIN + 1,
                    -256,
                    -255,
                    -1,
                    0,
                    1,
                    255,
                    256,
                    i64::MAX - 1,
                    i64::MAX,
                ]),
                1 => rng.next() as i64,
                _ => rng.below(7) as i64 - 3,
            }),
            FieldType::Double => value::Kind::DoubleValue(match rng.below(3) {
                0 => rng.pick(&[
                    f64::NEG_INFINITY,
                    f64::MIN,
                    -1.5,
                    -1.0,
                    -f64::MIN_POSITIVE,
                    -5e-324,
                    -0.0,
                    0.0,
                    5e-324,
                    f64::MIN_POSITIVE,
                    1.0,
                    1.5,
                    f64::MAX,
                    f64::INFINITY,
                    f64::NAN,
                    -f64::NAN,
                ]),
                1 => f64::from_bits(rng.next()),
                _ => rng.below(5) as f64 - 2.0,
            }),
            FieldType::Bool => value::Kind::BoolValue(rng.below(2) == 1),
            FieldType::Timestamp => {
                let seconds = rng.pick(&[i64::MIN, -1, 0, 1, 1_740_816_000, i64::MAX]);
                value::Kind::TimestampValue(prost_types::Timestamp { seconds, nanos: 0 })
            }
            FieldType::Date => value::Kind::DateValue(
                rng.pick(&["1969-12-31", "1970-01-01", "2020-02-29", "2020-03-01"])
                    .into(),
            ),
        };
        // Sometimes missing.
        Value {
            kind: (rng.below(12) != 0).then_some(kind),
        }
    }

    /// The order the encoding must reproduce, written independently.
    fn reference(a: &Value, b: &Value) -> Ordering {
        use value::Kind::*;
        let f = |x: f64| if x.is_nan() { (1, 0.0) } else { (0, x) };
        match (&a.kind, &b.kind) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(StringValue(x)), Some(StringValue(y))) | (Some(DateValue(x)), Some(DateValue(y))) => {
                x.as_bytes().cmp(y.as_bytes())
            }
            (Some(IntValue(x)), Some(IntValue(y))) => x.cmp(y),
            (Some(DoubleValue(x)), Some(DoubleValue(y))) => {
                let (fx, fy) = (f(*x), f(*y));
                fx.0.cmp(&fy.0).then(fx.1.partial_cmp(&fy.1).unwrap())
            }
            (Some(BoolValue(x)), Some(BoolValue(y))) => x.cmp(y),
            (Some(TimestampValue(x)), Some(TimestampValue(y))) => x.seconds.cmp(&y.seconds),
            other => panic!("mixed kinds {other:?}"),
        }
    }

    fn encode(values: &[Value], descending: &[bool]) -> Vec<u8> {
        let mut w = KeyWriter::new();
        for (v, &d) in values.iter().zip(descending) {
            w.push_value(v, d).unwrap();
        }
        w.finish()
    }

    fn same(a: &Value, b: &Value) -> bool {
        reference(a, b) == Ordering::Equal
    }

    #[test]
    fn byte_order_is_tuple_order() {
        let mut rng = Rng(0x5eed);
        for round in 0..400 {
            let width = 1 + rng.below(4);
            let types: Vec<FieldType> = (0..width).map(|_| rng.pick(&TYPES)).collect();
            let descending: Vec<bool> = (0..width).map(|_| rng.below(2) == 1).collect();
            let tuples: Vec<Vec<Value>> = (0..40)
                .map(|_| types.iter().map(|&t| random_value(&mut rng, t)).collect())
                .collect();
            let keys: Vec<Vec<u8>> = tuples.iter().map(|t| encode(t, &descending)).collect();
            for (i, a) in tuples.iter().enumerate() {
                for (j, b) in tuples.iter().enumerate() {
                    let expected = a
                        .iter()
                        .zip(b)
                        .zip(&descending)
                        .map(|((x, y), &d)| if d { reference(y, x) } else { reference(x, y) })
                        .find(|o| o.is_ne())
                        .unwrap_or(Ordering::Equal);
                    assert_eq!(
                        keys[i].cmp(&keys[j]),
                        expected,
                        "round {round}: {a:?} vs {b:?} ({descending:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_round_trip() {
        let mut rng = Rng(42);
        for _ in 0..2000 {
            let width = rng.below(5);
            let types: Vec<FieldType> = (0..width).map(|_| rng.pick(&TYPES)).collect();
            let descending: Vec<bool> = (0..width).map(|_| rng.below(2) == 1).collect();
            let values: Vec<Value> = types.iter().map(|&t| random_value(&mut rng, t)).collect();
            let decoded = decode_key(&encode(&values, &descending), &types, &descending).unwrap();
            assert_eq!(decoded.len(), values.len());
            for (d, v) in decoded.iter().zip(&values) {
                // Equal in order; -0.0 comes back as 0.0 and NaN as NaN.
                assert!(same(d, v), "{d:?} != {v:?}");
                if let Some(value::Kind::DoubleValue(x)) = v.kind
                    && !x.is_nan()
                    && x != 0.0
                {
                    assert_eq!(d.kind, v.kind);
                }
            }
        }
    }

    #[test]
    fn strings_that_are_prefixes_sort_first() {
        let enc = |s: &str, d: bool| {
            let mut w = KeyWriter::new();
            w.push_str(s, d);
            w.push_i64(0, false);
            w.finish()
        };
        let ordered = [
            "", "\0", "\0\0", "\0\u{1}", "\u{1}", "a", "a\0", "a\0b", "a\u{1}", "ab", "b", "é", "长",
        ];
        for pair in ordered.windows(2) {
            assert!(enc(pair[0], false) < enc(pair[1], false), "{pair:?}");
            assert!(enc(pair[0], true) > enc(pair[1], true), "{pair:?} descending");
        }
    }

    #[test]
    fn extreme_numbers() {
        let int = |v: i64, d: bool| {
            let mut w = KeyWriter::new();
            w.push_i64(v, d);
            w.finish()
        };
        let ints = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX];
        for pair in ints.windows(2) {
            assert!(int(pair[0], false) < int(pair[1], false));
            assert!(int(pair[0], true) > int(pair[1], true));
        }
        let double = |v: f64| {
            let mut w = KeyWriter::new();
            w.push_f64(v, false);
            w.finish()
        };
        assert_eq!(double(-0.0), double(0.0));
        assert_eq!(double(f64::NAN), double(-f64::NAN));
        let doubles = [
            f64::NEG_INFINITY,
            f64::MIN,
            -1.0,
            -5e-324,
            0.0,
            5e-324,
            1.0,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
        ];
        for pair in doubles.windows(2) {
            assert!(double(pair[0]) < double(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn writer_is_reusable() {
        let mut w = KeyWriter::new();
        w.push_str("x", false);
        let first = w.as_bytes().to_vec();
        w.clear();
        assert!(w.as_bytes().is_empty());
        w.push_str("x", false);
        assert_eq!(w.as_bytes(), first);
        assert_eq!(w.finish(), first);
    }

    #[test]
    fn dates_and_timestamps_decode_typed() {
        let mut w = KeyWriter::new();
        w.push_value(
            &Value {
                kind: Some(value::Kind::DateValue("2020-01-01".into())),
            },
            true,
        )
        .unwrap();
        w.push_timestamp(-5, false);
        let decoded = decode_key(w.as_bytes(), &[FieldType::Date, FieldType::Timestamp], &[true, false]).unwrap();
        assert_eq!(decoded[0].kind, Some(value::Kind::DateValue("2020-01-01".into())));
        assert_eq!(
            decoded[1].kind,
            Some(value::Kind::TimestampValue(prost_types::Timestamp {
                seconds: -5,
                nanos: 0
            }))
        );
        let bad = Value {
            kind: Some(value::Kind::TimestampValue(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            })),
        };
        assert!(w.push_value(&bad, false).is_err());
    }

    #[test]
    fn malformed_keys_are_page_token_errors() {
        let mut w = KeyWriter::new();
        w.push_str("abc", false);
        w.push_i64(7, true);
        let key = w.finish();
        let reason = |bytes: &[u8], types: &[FieldType], desc: &[bool]| match decode_key(bytes, types, desc) {
            Err(QueryError::PageToken { reason }) => reason,
            other => panic!("{other:?}"),
        };
        let types = [FieldType::String, FieldType::Int];
        assert!(reason(&key[..key.len() - 1], &types, &[false, true]).contains("sort key 2: ends early"));
        assert!(reason(&key, &[FieldType::Int, FieldType::Int], &[false, true]).contains("where a integer"));
        assert!(reason(&key, &types, &[true, true]).contains("sort key 1"));
        assert!(reason(&key, &types[..1], &[false]).contains("bytes left"));
        assert!(reason(&key, &types, &[false]).contains("directions"));
        assert!(reason(&[TAG_STRING, 0xff, 0x00, 0x01], &[FieldType::String], &[false]).contains("UTF-8"));
        assert!(reason(&[TAG_STRING, 0x00, 0x07], &[FieldType::String], &[false]).contains("bad escape"));
        assert!(reason(&[TAG_BOOL, 2], &[FieldType::Bool], &[false]).contains("boolean"));
        assert_eq!(decode_key(&[], &[], &[]), Ok(vec![]));
    }
}
