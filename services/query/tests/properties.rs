//! Property tests (proptest, on stable) of the query language's parsers and
//! encodings: the filter parser against the typed tree it produces, the
//! order-preserving sort keys, the signed page tokens, and whole requests
//! as the gateway and then a node check them. Case counts are
//! modest so that the whole file runs in a few seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cmp::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use prost::Message;
use yrd_proto::mesh::{
    CompareOp, Comparison, FilterExpr, FilterList, NodeQueryRequest, QueryRequest, Value, filter_expr, value,
};
use yrd_proto::schema::{DatasetSchema, FieldType, Registry};
use yrd_query::filter::{check_filter, parse_filter, to_text};
use yrd_query::sortkey::{KeyWriter, decode_key};
use yrd_query::token::{Cursor, PageTokens};
use yrd_query::{CheckedQuery, Limits, QueryError};

/// Cases per property: enough to find the usual slips, few enough that the
/// file stays fast in CI.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Failures are shown, not kept in a regressions file in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn schema(id: &str) -> &'static DatasetSchema {
    Registry::standard().unwrap().get(id).unwrap()
}

/// Limits wide enough for every generated tree.
fn wide() -> Limits {
    Limits {
        max_filter_length: 1 << 20,
        max_filter_depth: 64,
        max_filter_terms: 10_000,
        ..Limits::default()
    }
}

// ---- generated values ----------------------------------------------------

/// Any string, including NUL, quotes, backslashes, stars and multi-byte
/// characters.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[\"'\\\\*()\\x00 a-c长é\u{1F600}]{0,8}", Just(String::new()),]
}

/// A valid `YYYY-MM-DD` date in the years 1 to 9999.
fn any_date() -> impl Strategy<Value = String> {
    (1u32..=9999, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

/// Whole seconds of a time in the years 1 to 9999, which RFC 3339 can write.
fn any_seconds() -> impl Strategy<Value = i64> {
    -62_135_596_800i64..=253_402_300_799
}

/// Finite doubles, negative, zero and subnormal ones included.
fn any_finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(f64::MIN_POSITIVE / 2.0),
        Just(f64::MAX),
        Just(f64::MIN),
        -1e6f64..1e6,
    ]
}

/// A value of a field's type, as the parser would type its literal.
fn value_of(ty: FieldType) -> BoxedStrategy<value::Kind> {
    match ty {
        FieldType::String => any_text().prop_map(value::Kind::StringValue).boxed(),
        FieldType::Int => any::<i64>().prop_map(value::Kind::IntValue).boxed(),
        FieldType::Double => any_finite().prop_map(value::Kind::DoubleValue).boxed(),
        FieldType::Bool => any::<bool>().prop_map(value::Kind::BoolValue).boxed(),
        FieldType::Date => any_date().prop_map(value::Kind::DateValue).boxed(),
        FieldType::Timestamp => any_seconds()
            .prop_map(|seconds| value::Kind::TimestampValue(prost_types::Timestamp { seconds, nanos: 0 }))
            .boxed(),
    }
}

const OPS: [CompareOp; 7] = [
    CompareOp::Eq,
    CompareOp::Ne,
    CompareOp::Lt,
    CompareOp::Le,
    CompareOp::Gt,
    CompareOp::Ge,
    CompareOp::Has,
];

/// A comparison on a filterable field of `schema`.
fn comparison(schema: &'static DatasetSchema) -> BoxedStrategy<FilterExpr> {
    let fields: Vec<_> = schema.fields.iter().filter(|f| f.filterable).collect();
    (0..fields.len(), 0..OPS.len(), any::<bool>())
        .prop_flat_map(move |(f, op, prefix)| {
            let field = fields[f];
            let op = OPS[op];
            // A prefix applies only to `:` on a string field.
            let prefix = prefix && op == CompareOp::Has && field.ty == FieldType::String;
            let name = field.name.clone();
            value_of(field.ty).prop_map(move |kind| FilterExpr {
                kind: Some(filter_expr::Kind::Comparison(Comparison {
                    field: name.clone(),
                    op: op as i32,
                    value: Some(Value { kind: Some(kind) }),
                    prefix,
                })),
            })
        })
        .boxed()
}

/// A tree in the parser's normal form: lists of two or more operands, no
/// AND directly inside an AND nor OR inside an OR (the parser flattens
/// those).
fn tree(schema: &'static DatasetSchema) -> impl Strategy<Value = FilterExpr> {
    comparison(schema).prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| FilterExpr {
                kind: Some(filter_expr::Kind::Not(Box::new(e))),
            }),
            (prop::collection::vec(inner.clone(), 2..4), any::<bool>()).prop_map(|(operands, and)| list(operands, and)),
        ]
    })
}

/// An AND (or OR) of `operands`, flattening operands of the same kind.
fn list(operands: Vec<FilterExpr>, and: bool) -> FilterExpr {
    let mut exprs = Vec::new();
    for e in operands {
        match e.kind {
            Some(filter_expr::Kind::And(l)) if and => exprs.extend(l.exprs),
            Some(filter_expr::Kind::Or(l)) if !and => exprs.extend(l.exprs),
            kind => exprs.push(FilterExpr { kind }),
        }
    }
    let l = FilterList { exprs };
    FilterExpr {
        kind: Some(if and {
            filter_expr::Kind::And(l)
        } else {
            filter_expr::Kind::Or(l)
        }),
    }
}

/// Text made of the filter language's own pieces, so that random input
/// reaches deep into the parser rather than failing at the first character.
fn filterish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(" AND ".to_owned()),
        Just(" OR ".to_owned()),
        Just("NOT ".to_owned()),
        Just("-".to_owned()),
        Just("city".to_owned()),
        Just("name".to_owned()),
        Just("registered_capital".to_owned()),
        Just("established".to_owned()),
        Just("legal_representative".to_owned()),
        Just(" = ".to_owned()),
        Just(":".to_owned()),
        Just(" >= ".to_owned()),
        Just("!=".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\\".to_owned()),
        Just("*".to_owned()),
        Just("1.5e3".to_owned()),
        Just("-7".to_owned()),
        Just("2020-02-29".to_owned()),
        Just("长".to_owned()),
        Just(" ".to_owned()),
        ".{0,3}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// The request parameters a filter error may name.
fn names_a_filter_param(e: &QueryError) -> bool {
    e.param() == "filter" && !e.to_string().is_empty()
}

/// A query request of `enterprise` from parts that are each valid or
/// nearly so: a generated filter (as text), some field names (one of them
/// perhaps unknown), an order on a sortable field or on any field, a page
/// size from 0 past the limit.
fn query_request() -> impl Strategy<Value = QueryRequest> {
    let ds = schema("enterprise");
    let names: Vec<String> = ds.fields.iter().map(|f| f.name.clone()).collect();
    let name = prop_oneof![9 => proptest::sample::select(names), 1 => Just("no_such_field".to_owned())];
    (
        proptest::option::of(tree(ds)),
        proptest::collection::vec(name.clone(), 0..4),
        proptest::option::of((name, any::<bool>())),
        -1i32..1200,
    )
        .prop_map(|(filter, fields, order, page_size)| QueryRequest {
            dataset: "enterprise".into(),
            filter: filter.map(|f| to_text(&f)).unwrap_or_default(),
            fields,
            order_by: order
                .map(|(f, desc)| if desc { format!("{f} desc") } else { f })
                .unwrap_or_default(),
            page_size,
            ..QueryRequest::default()
        })
}

proptest! {
    #![proptest_config(config())]

    /// A request the gateway accepts becomes a node request that a node
    /// accepts as the same query (the same filter, order, projection and
    /// fingerprint); a refusal names its parameter and is the caller's
    /// fault, never `INTERNAL`.
    #[test]
    fn what_the_gateway_accepts_a_node_accepts_as_the_same_query(req in query_request()) {
        let schemas = Registry::standard().unwrap();
        for limits in [Limits::default(), wide()] {
            match CheckedQuery::from_request(&req, schemas, &limits) {
                Ok(q) => {
                    let node = q.node_request(&[], q.page_size);
                    let node = NodeQueryRequest::decode(node.encode_to_vec().as_slice()).unwrap();
                    let (back, resume) = CheckedQuery::from_node_request(&node, schemas, &limits)
                        .map_err(|e| TestCaseError::fail(format!("the gateway accepted {req:?}, a node refused it: {e}")))?;
                    prop_assert!(resume.is_none());
                    prop_assert_eq!(&back.filter, &q.filter);
                    prop_assert_eq!(&back.order_keys, &q.order_keys);
                    prop_assert_eq!(&back.projection, &q.projection);
                    prop_assert_eq!(back.fingerprint(&[]), q.fingerprint(&[]));
                }
                Err(e) => {
                    prop_assert!(!e.param().is_empty(), "{:?}", e);
                    let code = tonic::Status::from(e).code();
                    prop_assert!(code != tonic::Code::Internal && code != tonic::Code::Ok);
                }
            }
        }
    }

    /// Printing a tree and parsing it back gives the same tree, and the
    /// tree passes the typed checks.
    #[test]
    fn printed_trees_parse_back_to_themselves(
        expr in prop_oneof![tree(schema("enterprise")), tree(schema("air_quality")), tree(schema("water_quality"))]
    ) {
        let ds = ["enterprise", "air_quality", "water_quality"]
            .into_iter()
            .map(schema)
            .find(|s| check_filter(&expr, s, &wide()).is_ok());
        let ds = ds.expect("a generated tree checks against its dataset");
        let text = to_text(&expr);
        let back = parse_filter(&text, ds, &wide());
        prop_assert_eq!(back, Ok(Some(expr.clone())), "{}", text);
        // The canonical text is a fixed point.
        prop_assert_eq!(to_text(&parse_filter(&text, ds, &wide()).unwrap().unwrap()), text);
    }

    /// Arbitrary text never panics: it parses to a tree that passes the
    /// typed checks, or is refused naming the `filter` parameter.
    #[test]
    fn any_text_parses_or_is_refused_naming_filter(text in prop_oneof![".{0,64}", filterish()]) {
        for limits in [Limits::default(), wide()] {
            match parse_filter(&text, schema("enterprise"), &limits) {
                Ok(None) => prop_assert!(text.trim().is_empty()),
                Ok(Some(expr)) => {
                    prop_assert_eq!(check_filter(&expr, schema("enterprise"), &limits), Ok(()));
                    // What parsed prints and parses back to the same tree.
                    prop_assert_eq!(
                        parse_filter(&to_text(&expr), schema("enterprise"), &wide()),
                        Ok(Some(expr))
                    );
                }
                Err(e) => prop_assert!(names_a_filter_param(&e), "{:?}", e),
            }
        }
    }

    /// Deep or long input is refused by the depth or term limit, however
    /// it is nested, and never overflows the stack (the test thread has
    /// the default 2 MiB).
    #[test]
    fn deep_input_is_refused_by_a_named_limit(
        depth in 65usize..5_000,
        kind in 0usize..4,
    ) {
        let text = match kind {
            0 => format!("{}city = a{}", "(".repeat(depth), ")".repeat(depth)),
            1 => format!("{}city = a", "NOT ".repeat(depth)),
            2 => format!("{}city = a", "-".repeat(depth)),
            _ => format!("{}city = a{}", "(NOT ".repeat(depth / 2), ")".repeat(depth / 2)),
        };
        match parse_filter(&text, schema("enterprise"), &wide()) {
            Err(QueryError::Limit { param: "filter", limit: "max_filter_depth", max: 64, .. }) => {}
            other => prop_assert!(false, "{other:?}"),
        }
    }

    // ---- sort keys -------------------------------------------------------

    /// For every type, `a < b` exactly when `key(a) < key(b)`, ascending,
    /// and the reverse descending; decoding gives the value back.
    #[test]
    fn sort_keys_preserve_order_and_round_trip(
        pair in prop_oneof![
            (any::<i64>(), any::<i64>()).prop_map(|(a, b)| (Typed::Int(a), Typed::Int(b))),
            (any_finite(), any_finite()).prop_map(|(a, b)| (Typed::Double(a), Typed::Double(b))),
            (any_text(), any_text()).prop_map(|(a, b)| (Typed::Text(a), Typed::Text(b))),
            (".{0,6}", ".{0,6}").prop_map(|(a, b)| (Typed::Text(a), Typed::Text(b))),
            (any_date(), any_date()).prop_map(|(a, b)| (Typed::Date(a), Typed::Date(b))),
            (any::<i64>(), any::<i64>()).prop_map(|(a, b)| (Typed::Timestamp(a), Typed::Timestamp(b))),
            (any::<bool>(), any::<bool>()).prop_map(|(a, b)| (Typed::Bool(a), Typed::Bool(b))),
            any::<i64>().prop_map(|a| (Typed::Null, Typed::Int(a))),
        ],
        descending in any::<bool>(),
    ) {
        let (a, b) = pair;
        let (ka, kb) = (a.key(descending), b.key(descending));
        let natural = a.cmp(&b);
        let expected = if descending { natural.reverse() } else { natural };
        prop_assert_eq!(ka.cmp(&kb), expected, "{:?} vs {:?}", a, b);
        for (v, k) in [(&a, &ka), (&b, &kb)] {
            let ty = v.field_type();
            let back = decode_key(k, &[ty], &[descending]).unwrap();
            prop_assert_eq!(back, vec![v.value()]);
        }
    }

    /// Concatenated keys order as tuples, component by component, whatever
    /// the components (a string never runs into the next component).
    #[test]
    fn composite_keys_order_as_tuples(
        a in (any_text(), any::<i64>()),
        b in (any_text(), any::<i64>()),
        desc in (any::<bool>(), any::<bool>()),
    ) {
        let key = |(s, i): &(String, i64)| {
            let mut w = KeyWriter::new();
            w.push_str(s, desc.0);
            w.push_i64(*i, desc.1);
            w.finish()
        };
        let dir = |o: Ordering, d: bool| if d { o.reverse() } else { o };
        let expected = dir(a.0.cmp(&b.0), desc.0).then(dir(a.1.cmp(&b.1), desc.1));
        prop_assert_eq!(key(&a).cmp(&key(&b)), expected);
        let back = decode_key(&key(&a), &[FieldType::String, FieldType::Int], &[desc.0, desc.1]).unwrap();
        prop_assert_eq!(back, vec![
            Value { kind: Some(value::Kind::StringValue(a.0.clone())) },
            Value { kind: Some(value::Kind::IntValue(a.1)) },
        ]);
    }

    /// Arbitrary bytes never panic the decoder: they decode or are refused
    /// as a malformed sort key of a page token.
    #[test]
    fn any_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..64), desc in any::<bool>()) {
        let types = [FieldType::String, FieldType::Double, FieldType::Date];
        match decode_key(&bytes, &types, &[desc; 3]) {
            Ok(values) => prop_assert_eq!(values.len(), 3),
            Err(e) => prop_assert_eq!(e.param(), "page_token"),
        }
    }

    // ---- page tokens -----------------------------------------------------

    /// A sealed token opens to its cursors, for its query, before it expires.
    #[test]
    fn tokens_round_trip(cursors in cursors(), fingerprint in any::<[u8; 32]>(), secret in secret()) {
        let tokens = PageTokens::new(&secret, Duration::from_secs(600));
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let token = tokens.seal(&fingerprint, &cursors, now);
        prop_assert_eq!(tokens.open(&token, &fingerprint, now), Ok(cursors));
    }

    /// Any change to a token is refused: one flipped bit anywhere in its
    /// bytes, a cut, or bytes added; so is another query's fingerprint.
    #[test]
    fn tampered_tokens_are_refused(
        cursors in cursors(),
        fingerprint in any::<[u8; 32]>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
        other in any::<[u8; 32]>(),
    ) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let tokens = PageTokens::new(b"a secret of at least sixteen bytes", Duration::from_secs(600));
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let token = tokens.seal(&fingerprint, &cursors, now);
        let bytes = b64.decode(&token).unwrap();
        let refused = |t: &str| match tokens.open(t, &fingerprint, now) {
            Err(QueryError::PageToken { .. }) => Ok(()),
            other => Err(TestCaseError::fail(format!("{other:?}"))),
        };
        let mut flipped = bytes.clone();
        flipped[at.index(bytes.len())] ^= 1 << bit;
        refused(&b64.encode(&flipped))?;
        refused(&b64.encode(&bytes[..cut.index(bytes.len())]))?;
        let mut longer = bytes.clone();
        longer.push(0);
        refused(&b64.encode(&longer))?;
        if other != fingerprint {
            prop_assert!(tokens.open(&token, &other, now).is_err());
        }
    }

    /// Arbitrary text never panics the token decoder and is refused.
    #[test]
    fn any_text_is_not_a_token(text in prop_oneof![".{0,80}", "[A-Za-z0-9_-]{0,120}"]) {
        let tokens = PageTokens::new(b"a secret of at least sixteen bytes", Duration::from_secs(600));
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let refused = matches!(tokens.open(&text, &[0; 32], now), Err(QueryError::PageToken { .. }));
        prop_assert!(refused);
    }
}

fn cursors() -> impl Strategy<Value = Vec<Cursor>> {
    prop::collection::vec(
        ("[0-9]{6}", prop::collection::vec(any::<u8>(), 0..40), any::<bool>()).prop_map(
            |(region, last_key, exhausted)| Cursor {
                region,
                last_key,
                exhausted,
            },
        ),
        0..5,
    )
}

fn secret() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 16..80)
}

/// A value of one sort-key type, with its natural order.
#[derive(Debug, Clone)]
enum Typed {
    Null,
    Int(i64),
    Double(f64),
    Text(String),
    Date(String),
    Timestamp(i64),
    Bool(bool),
}

impl Typed {
    fn key(&self, descending: bool) -> Vec<u8> {
        let mut w = KeyWriter::new();
        match self {
            Self::Null => w.push_null(descending),
            Self::Int(v) => w.push_i64(*v, descending),
            Self::Double(v) => w.push_f64(*v, descending),
            Self::Text(v) => w.push_str(v, descending),
            Self::Date(v) => w.push_date(v, descending),
            Self::Timestamp(v) => w.push_timestamp(*v, descending),
            Self::Bool(v) => w.push_bool(*v, descending),
        }
        w.finish()
    }

    /// Missing values first, then by value (`-0.0` equals `0.0`; strings by
    /// code point, which is their UTF-8 byte order; dates by calendar).
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Null, Self::Null) => Ordering::Equal,
            (Self::Null, _) => Ordering::Less,
            (_, Self::Null) => Ordering::Greater,
            (Self::Int(a), Self::Int(b)) | (Self::Timestamp(a), Self::Timestamp(b)) => a.cmp(b),
            (Self::Double(a), Self::Double(b)) => a.partial_cmp(b).unwrap(),
            (Self::Text(a), Self::Text(b)) | (Self::Date(a), Self::Date(b)) => a.cmp(b),
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            _ => unreachable!("pairs are of one type"),
        }
    }

    fn field_type(&self) -> FieldType {
        match self {
            Self::Null | Self::Int(_) => FieldType::Int,
            Self::Double(_) => FieldType::Double,
            Self::Text(_) => FieldType::String,
            Self::Date(_) => FieldType::Date,
            Self::Timestamp(_) => FieldType::Timestamp,
            Self::Bool(_) => FieldType::Bool,
        }
    }

    /// The value decoding gives back (`-0.0` comes back as `0.0`).
    fn value(&self) -> Value {
        let kind = match self {
            Self::Null => None,
            Self::Int(v) => Some(value::Kind::IntValue(*v)),
            Self::Double(v) => Some(value::Kind::DoubleValue(if *v == 0.0 { 0.0 } else { *v })),
            Self::Text(v) => Some(value::Kind::StringValue(v.clone())),
            Self::Date(v) => Some(value::Kind::DateValue(v.clone())),
            Self::Timestamp(v) => Some(value::Kind::TimestampValue(prost_types::Timestamp {
                seconds: *v,
                nanos: 0,
            })),
            Self::Bool(v) => Some(value::Kind::BoolValue(*v)),
        };
        Value { kind }
    }
}
