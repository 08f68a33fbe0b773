//! What the fuzz targets check, one function per target, so that the
//! targets themselves are one line each. Every function takes the fuzzer's
//! bytes and panics (a crash libFuzzer reports) only when an invariant of
//! the real code breaks: a panic in the code itself, a tree the parser
//! made that its own checks refuse, a gateway-checked request a node
//! refuses, an encoding that does not round-trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, UNIX_EPOCH};

use prost::Message;
use yrd_proto::mesh::{AggregateRequest, FilterExpr, NodeAggregateRequest, NodeQueryRequest, QueryRequest, Value};
use yrd_proto::schema::{DatasetSchema, FieldType, Registry};
use yrd_query::filter::{check_filter, parse_filter, regions_matched, to_text};
use yrd_query::sortkey::{KeyWriter, decode_key};
use yrd_query::token::{Cursor, PageTokens, query_fingerprint};
use yrd_query::{CheckedAggregate, CheckedQuery, Limits, QueryError};

/// The standard datasets.
pub fn schemas() -> &'static Registry {
    Registry::standard().expect("the standard schemas")
}

/// The limits a deployment may set at their widest (every hard bound).
pub fn widest() -> Limits {
    Limits {
        max_filter_length: yrd_query::limits::MAX_FILTER_LENGTH_BOUND,
        max_filter_depth: yrd_query::limits::MAX_FILTER_DEPTH_BOUND,
        max_filter_terms: yrd_query::limits::MAX_FILTER_TERMS_BOUND,
        ..Limits::default()
    }
}

/// An error is one a caller can be given: it names a parameter, has a
/// message, and becomes a status.
fn reportable(e: QueryError) {
    assert!(!e.param().is_empty(), "{e:?}");
    assert!(!e.to_string().is_empty());
    let status = tonic::Status::from(e);
    assert_ne!(status.code(), tonic::Code::Ok);
    assert_ne!(status.code(), tonic::Code::Internal);
}

/// Filter text: parsed against every dataset under the default and the
/// widest limits. What parses passes the typed checks, prints to text that
/// parses back to the same tree, and can be fingerprinted and pruned;
/// what does not is refused naming `filter`.
pub fn filter_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for schema in schemas().datasets() {
        for limits in [Limits::default(), widest()] {
            match parse_filter(text, schema, &limits) {
                Ok(None) => assert!(text.trim().is_empty()),
                Ok(Some(expr)) => {
                    assert_eq!(check_filter(&expr, schema, &limits), Ok(()), "{text:?}");
                    let printed = to_text(&expr);
                    assert_eq!(
                        parse_filter(&printed, schema, &limits),
                        Ok(Some(expr.clone())),
                        "{text:?} printed as {printed:?}"
                    );
                    let _ = regions_matched(&expr, &schema.fields[schema.region_field].name);
                    let _ = query_fingerprint(&schema.id, Some(&expr), &[], &[], &[]);
                }
                Err(e) => {
                    assert_eq!(e.param(), "filter", "{e:?}");
                    reportable(e);
                }
            }
        }
    }
}

/// A typed tree from protobuf bytes (as a node receives it): checked
/// against every dataset. A tree that passes prints to text that parses
/// within the same limits (nodes and audits print trees).
pub fn filter_tree(data: &[u8]) {
    let Ok(expr) = FilterExpr::decode(data) else {
        return;
    };
    for schema in schemas().datasets() {
        for limits in [Limits::default(), widest()] {
            match check_filter(&expr, schema, &limits) {
                Ok(()) => {
                    let printed = to_text(&expr);
                    let parsed = parse_filter(&printed, schema, &limits);
                    assert!(matches!(parsed, Ok(Some(_))), "{expr:?} printed as {printed:?}: {parsed:?}");
                    let _ = regions_matched(&expr, &schema.fields[schema.region_field].name);
                }
                Err(e) => {
                    assert_eq!(e.param(), "filter_expr", "{e:?}");
                    reportable(e);
                }
            }
        }
    }
}

/// Page tokens: arbitrary text is refused by a secret nothing here seals
/// with (the fuzzer sees every token sealed under the harness's own
/// secret, and the seed corpus holds one, so those may open); under the
/// harness's secret it opens or is refused without a panic. Cursors made
/// from the bytes seal and open back to themselves, and one changed byte
/// of a sealed token is refused.
pub fn page_token(data: &[u8]) {
    let tokens = PageTokens::new(b"fuzzing secret, sixteen bytes+", Duration::from_secs(300));
    let stranger = PageTokens::new(b"a secret this harness never seals with", Duration::from_secs(300));
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let fingerprint = [7u8; 32];
    if let Ok(text) = std::str::from_utf8(data) {
        match stranger.open(text, &fingerprint, now) {
            Err(QueryError::PageToken { .. }) => {}
            other => panic!("{text:?} opened under a secret nothing sealed with: {other:?}"),
        }
        match tokens.open(text, &fingerprint, now) {
            Ok(_) | Err(QueryError::PageToken { .. }) => {}
            Err(other) => panic!("{text:?} refused naming another parameter: {other:?}"),
        }
    }
    let cursors: Vec<Cursor> = data
        .chunks(9)
        .map(|c| Cursor {
            region: String::from_utf8_lossy(&c[..c.len().min(6)]).into_owned(),
            last_key: c.get(6..).unwrap_or_default().to_vec(),
            exhausted: c.first().is_some_and(|b| b & 1 == 1),
        })
        .collect();
    let token = tokens.seal(&fingerprint, &cursors, now);
    assert_eq!(tokens.open(&token, &fingerprint, now), Ok(cursors));
    if let Some(&first) = data.first() {
        let mut bytes = token.into_bytes();
        let at = usize::from(first) % bytes.len();
        // Another character of the token alphabet.
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        assert!(tokens.open(&altered, &fingerprint, now).is_err(), "{altered}");
    }
    let later = now + Duration::from_secs(301);
    assert!(tokens.open(&tokens.seal(&fingerprint, &[], now), &fingerprint, later).is_err());
}

const TYPES: [FieldType; 6] = [
    FieldType::String,
    FieldType::Int,
    FieldType::Double,
    FieldType::Bool,
    FieldType::Timestamp,
    FieldType::Date,
];

/// Sort keys: the first byte says how many components (1 to 4) and their
/// directions, the next ones their types, the rest is the key. Decoding
/// never panics, and what decodes encodes to a key that decodes to the
/// same values and encodes to itself again.
pub fn sort_key(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(head & 3) + 1;
    if rest.len() < n {
        return;
    }
    let (type_bytes, key) = rest.split_at(n);
    let types: Vec<FieldType> = type_bytes.iter().map(|b| TYPES[usize::from(*b) % TYPES.len()]).collect();
    let desc: Vec<bool> = (0..n).map(|i| head >> (2 + i) & 1 == 1).collect();
    let values = match decode_key(key, &types, &desc) {
        Ok(v) => v,
        Err(e) => {
            assert_eq!(e.param(), "page_token");
            return;
        }
    };
    assert_eq!(values.len(), n);
    let encode = |values: &[Value]| {
        let mut w = KeyWriter::new();
        for (v, &d) in values.iter().zip(&desc) {
            w.push_value(v, d).unwrap();
        }
        w.finish()
    };
    let once = encode(&values);
    let again = decode_key(&once, &types, &desc).unwrap();
    assert_eq!(encode(&again), once);
}

/// Requests of both services, decoded from protobuf (the first byte picks
/// the message) and checked as the gateway and the nodes check them. A
/// request the gateway accepts becomes a node request the node accepts as
/// the same query; a node request a node accepts, checked again, is the
/// same; every refusal is reportable.
pub fn requests(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    for limits in [Limits::default(), widest()] {
        match which % 4 {
            0 => {
                let Ok(req) = QueryRequest::decode(body) else { return };
                match CheckedQuery::from_request(&req, schemas(), &limits) {
                    Ok(q) => {
                        let node = q.node_request(&[], q.page_size);
                        let node = NodeQueryRequest::decode(node.encode_to_vec().as_slice()).unwrap();
                        let (back, resume) = CheckedQuery::from_node_request(&node, schemas(), &limits)
                            .unwrap_or_else(|e| panic!("the gateway accepted {req:?}, a node refused it: {e}"));
                        assert!(resume.is_none());
                        assert_eq!(back.filter, q.filter);
                        assert_eq!(back.order_keys, q.order_keys);
                        assert_eq!(back.projection, q.projection);
                        assert_eq!(back.fingerprint(&[]), q.fingerprint(&[]));
                        assert!(back.page_size <= limits.max_page_size);
                    }
                    Err(e) => reportable(e),
                }
            }
            1 => {
                let Ok(req) = AggregateRequest::decode(body) else { return };
                match CheckedAggregate::from_request(&req, schemas(), &limits) {
                    Ok(a) => {
                        let node = a.node_request();
                        let node = NodeAggregateRequest::decode(node.encode_to_vec().as_slice()).unwrap();
                        let back = CheckedAggregate::from_node_request(&node, schemas(), &limits)
                            .unwrap_or_else(|e| panic!("the gateway accepted {req:?}, a node refused it: {e}"));
                        assert_eq!(back.filter, a.filter);
                        assert_eq!(back.group_fields, a.group_fields);
                        assert_eq!(back.metric_fields, a.metric_fields);
                    }
                    Err(e) => reportable(e),
                }
            }
            2 => {
                let Ok(req) = NodeQueryRequest::decode(body) else { return };
                match CheckedQuery::from_node_request(&req, schemas(), &limits) {
                    Ok((q, resume)) => {
                        assert_eq!(resume.is_some(), !req.resume_key.is_empty());
                        let again = q.node_request(&req.resume_key, q.page_size);
                        let (back, _) = CheckedQuery::from_node_request(&again, schemas(), &limits)
                            .unwrap_or_else(|e| panic!("{req:?} passed once, not twice: {e}"));
                        assert_eq!(back.order_keys, q.order_keys);
                    }
                    Err(e) => reportable(e),
                }
            }
            _ => {
                let Ok(req) = NodeAggregateRequest::decode(body) else { return };
                match CheckedAggregate::from_node_request(&req, schemas(), &limits) {
                    Ok(a) => {
                        let back = CheckedAggregate::from_node_request(&a.node_request(), schemas(), &limits)
                            .unwrap_or_else(|e| panic!("{req:?} passed once, not twice: {e}"));
                        assert_eq!(back.metric_fields, a.metric_fields);
                    }
                    Err(e) => reportable(e),
                }
            }
        }
    }
}

/// The dataset an import target reads: picked by the first byte.
fn import_schema(data: &[u8]) -> Option<(std::sync::Arc<DatasetSchema>, &[u8])> {
    let (&which, body) = data.split_first()?;
    let all = schemas().datasets();
    Some((all[usize::from(which) % all.len()].clone(), body))
}

/// Checks what an import reader produced: rows in order of their lines,
/// no more rows than lines, every accepted row of the dataset's width.
fn check_rows<I, C>(rows: I, body: &[u8], width: usize)
where
    I: Iterator<Item = Result<(u64, Vec<C>), yrd_node::store::Rejection>>,
{
    let lines = body.iter().filter(|&&b| b == b'\n' || b == b'\r').count() as u64 + 1;
    let mut last = 0;
    for (i, row) in rows.enumerate() {
        assert!(i as u64 <= lines + 1, "more rows than lines");
        let line = match row {
            Ok((line, cells)) => {
                assert_eq!(cells.len(), width);
                line
            }
            Err(rejection) => {
                assert!(!rejection.reason.is_empty());
                rejection.line
            }
        };
        assert!(line >= last, "line {line} after line {last}");
        assert!(line <= lines + 1, "line {line} of {lines}");
        last = line;
    }
}

/// CSV import: the first byte picks the dataset, the rest is the file.
pub fn import_csv(data: &[u8]) {
    let Some((schema, body)) = import_schema(data) else {
        return;
    };
    let width = schema.fields.len();
    let rows = yrd_node::import::CsvRows::new(body, schema, "320000", yrd_node::import::DEFAULT_MAX_ROW_BYTES);
    check_rows(rows, body, width);
}

/// JSON Lines import: the first byte picks the dataset, the rest is the
/// file.
pub fn import_jsonl(data: &[u8]) {
    let Some((schema, body)) = import_schema(data) else {
        return;
    };
    let width = schema.fields.len();
    let rows = yrd_node::import::JsonRows::new(body, schema, "320000", yrd_node::import::DEFAULT_MAX_ROW_BYTES);
    check_rows(rows, body, width);
}
