//! The store conformance suite: test functions generic over any [`Store`],
//! checked against a reference computed in Rust from the same rows. Every
//! backend runs all of them on a store opened over [`registry`] (a test
//! dataset, `sample`, with one field of every type, required and optional):
//!
//! ```ignore
//! let store = MyStore::open_with(..., conformance::registry());
//! conformance::paging_in_every_order(&store).await;
//! ```
//!
//! Each function loads the rows it needs (replacing what is there), so they
//! may run in any order, on one store or on fresh ones. A failure panics.

// Test code: a failed expectation is a panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use yrd_datasets::Cell;
use yrd_proto::mesh::{AggregateFunction, CompareOp, Comparison, FilterExpr, FilterList, Value, filter_expr, value};
use yrd_proto::schema::{DatasetSchema, FieldType, Registry};

use super::{
    AggregatePlan, Cells, GroupCells, LoadOptions, Partial, Rejection, ScanPlan, SortColumn, Store, StoreError,
};
use crate::encode::cell_value;

/// The test dataset's id.
pub const DATASET: &str = "sample";

/// Rows of the functional checks: small, with ties, NULLs and negatives.
const ROWS: usize = 97;

/// Rows of the cancellation and deadline checks: enough for a statement
/// that runs a while.
const MANY_ROWS: usize = 30_000;

/// The registry holding the test dataset, compiled from `conformance.proto`.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let here = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store");
        let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
        let mut compiler = protox::Compiler::new([here, protos]).expect("proto include paths");
        compiler.include_imports(true);
        compiler
            .open_files(["conformance.proto"])
            .expect("conformance.proto compiles");
        Registry::from_pool(&compiler.descriptor_pool()).expect("the sample dataset is valid")
    })
}

/// The test dataset.
pub fn schema() -> Arc<DatasetSchema> {
    registry().get(DATASET).expect("sample dataset").clone()
}

fn field(name: &str) -> usize {
    schema().field(name).expect("sample field").0
}

/// The deterministic sample rows, in schema order.
pub fn rows(n: usize) -> Vec<Cells> {
    const TEXTS: [&str; 8] = ["苏州", "苏州工业园", "南京", "alpha", "alphabet", "beta", "", "Zed"];
    const REGIONS: [&str; 4] = ["310000", "320000", "330000", "340000"];
    (0..n)
        .map(|i| {
            let mut h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = || {
                h ^= h >> 29;
                h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                h ^= h >> 32;
                h
            };
            let pick = |r: u64, k: u64| (r % k) as usize;
            let text = |r: u64| Cell::Text(TEXTS[pick(r, 8)].to_owned());
            let int = |r: u64| Cell::Int((r % 21) as i64 - 10);
            let real = |r: u64| Cell::Real((r % 1000) as f64 / 8.0 - 40.0);
            let time = |r: u64| {
                Cell::Time(if r.is_multiple_of(17) {
                    -86_400
                } else {
                    1_700_000_000 + (r % 50) as i64 * 3600
                })
            };
            let day = |r: u64| Cell::Text(format!("2024-{:02}-{:02}", 1 + r % 12, 1 + (r / 12) % 28));
            let maybe = |r: u64, c: Cell| (!r.is_multiple_of(4)).then_some(c);
            let (r1, r2, r3, r4, r5, r6, r7) = (next(), next(), next(), next(), next(), next(), next());
            vec![
                Some(Cell::Text(format!("r{i:05}"))),
                Some(Cell::Text(REGIONS[pick(r1, 4)].to_owned())),
                Some(text(r2)),
                Some(int(r3)),
                Some(real(r4)),
                Some(Cell::Bool(r5 % 3 == 0)),
                Some(time(r6)),
                Some(day(r7)),
                maybe(r1 >> 8, text(r3 >> 4)),
                maybe(r2 >> 8, int(r4 >> 4)),
                maybe(r3 >> 8, real(r5 >> 4)),
                maybe(r4 >> 8, Cell::Bool((r6 >> 4) % 2 == 0)),
                maybe(r5 >> 8, time(r7 >> 4)),
                maybe(r6 >> 8, day(r1 >> 4)),
                Some(Cell::Text("张伟明".to_owned())),
            ]
        })
        .collect()
}

/// Replaces the sample dataset's rows with `rows(n)`, and returns them.
pub async fn load_sample<S: Store + ?Sized>(store: &S, n: usize) -> Vec<Cells> {
    let data = rows(n);
    let source = data.clone().into_iter().enumerate().map(|(i, c)| Ok((i as u64 + 1, c)));
    let outcome = store
        .load(schema(), LoadOptions::replace(), Box::new(source))
        .await
        .expect("load");
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(outcome.inserted, n as u64);
    data
}

/// Every cell of every row comes back as loaded, NULLs included.
pub async fn round_trip<S: Store + ?Sized>(store: &S) {
    let data = load_sample(store, ROWS).await;
    let all: Vec<usize> = (0..schema().fields.len()).collect();
    let got = scan_all(store, plan(vec![key(0, false)], None, all)).await.unwrap();
    assert_eq!(got, data);
    let stats = store.stats().await.unwrap();
    let (_, sample) = stats.iter().find(|(id, _)| id == DATASET).expect("stats of sample");
    assert_eq!(sample.rows, ROWS as u64);
    assert!(sample.updated_at.is_some());
}

/// Paging through every sortable order, ascending and descending, with
/// keyset resume: every row exactly once, in the reference order; and a
/// mixed-direction order of several fields.
pub async fn paging_in_every_order<S: Store + ?Sized>(store: &S) {
    let data = load_sample(store, ROWS).await;
    let schema = schema();
    let id = field("id");
    let mut orders: Vec<Vec<SortColumn>> = Vec::new();
    for (f, _) in schema.fields.iter().enumerate().filter(|(_, f)| f.sortable) {
        for descending in [false, true] {
            let mut order = vec![key(f, descending)];
            if f != id {
                order.push(key(id, false));
            }
            orders.push(order);
        }
    }
    orders.push(vec![
        key(field("b"), true),
        key(field("i"), false),
        key(field("day"), true),
        key(id, false),
    ]);
    for order in orders {
        let mut expected = data.clone();
        expected.sort_by(|a, b| compare_rows(&order, a, b));
        let expected: Vec<Cell> = expected.into_iter().map(|r| r[id].clone().unwrap()).collect();
        let mut after = None;
        let mut seen = Vec::new();
        loop {
            let mut columns: Vec<usize> = order.iter().map(|k| k.field).collect();
            columns.push(id);
            let mut p = plan(order.clone(), None, columns);
            p.after = after.clone();
            p.limit = 10;
            p.batch_rows = 3;
            let page = scan_all(store, p).await.unwrap();
            assert!(page.len() <= 10);
            let Some(last) = page.last() else { break };
            after = Some(
                order
                    .iter()
                    .enumerate()
                    .map(|(i, k)| cell_value(schema.fields[k.field].ty, last[i].clone()))
                    .collect(),
            );
            seen.extend(page.iter().map(|r| r[order.len()].clone().unwrap()));
            if page.len() < 10 {
                break;
            }
        }
        assert_eq!(seen, expected, "order {order:?}");
    }
}

/// Every filter operator on every field type, required and optional, and
/// AND, OR, NOT around them: the rows kept are the reference's.
pub async fn every_filter_operator<S: Store + ?Sized>(store: &S) {
    let data = load_sample(store, ROWS).await;
    let schema = schema();
    let ops = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Has,
    ];
    let mut filters = Vec::new();
    for name in ["s", "i", "d", "b", "t", "day", "os", "oi", "od", "ob", "ot", "oday"] {
        let f = field(name);
        let pivot = pivot(&data, f);
        for op in ops {
            filters.push(compare(name, op, pivot.clone(), false));
        }
    }
    // Prefix matches, with a prefix shared by several values.
    for (name, prefix) in [("s", "苏州"), ("s", "alpha"), ("os", "al"), ("s", "")] {
        filters.push(compare(name, CompareOp::Has, text_value(prefix), true));
    }
    let some = |f: &str, op, i| compare(f, op, pivot(&data, field(f)), i);
    filters.push(and(vec![
        some("i", CompareOp::Gt, false),
        some("b", CompareOp::Eq, false),
    ]));
    filters.push(or(vec![
        some("d", CompareOp::Lt, false),
        some("oi", CompareOp::Ne, false),
    ]));
    filters.push(not(some("os", CompareOp::Eq, false)));
    filters.push(not(and(vec![
        some("od", CompareOp::Ge, false),
        some("ob", CompareOp::Eq, false),
    ])));
    filters.push(and(vec![
        or(vec![
            some("region", CompareOp::Eq, false),
            some("day", CompareOp::Le, false),
        ]),
        not(or(vec![
            some("ot", CompareOp::Gt, false),
            some("oday", CompareOp::Lt, false),
        ])),
    ]));
    for filter in filters {
        let expected: Vec<Cells> = data
            .iter()
            .filter(|r| eval(&schema, &filter, r) == Some(true))
            .cloned()
            .collect();
        let all: Vec<usize> = (0..schema.fields.len()).collect();
        let got = scan_all(store, plan(vec![key(field("id"), false)], Some(filter.clone()), all))
            .await
            .unwrap();
        assert_eq!(got, expected, "filter {filter:?}");
    }
}

/// NULLs: equality and ordering never match NULL; `!=` does (it is `IS
/// NOT`); NOT of an unknown comparison is still unknown. Checked apart
/// from the reference, by counts.
pub async fn nulls<S: Store + ?Sized>(store: &S) {
    let data = load_sample(store, ROWS).await;
    for name in ["os", "oi", "od", "ob", "ot", "oday"] {
        let f = field(name);
        let nulls = data.iter().filter(|r| r[f].is_none()).count();
        assert!(nulls > 0 && nulls < data.len(), "{name} has NULLs and values");
        let v = pivot(&data, f);
        let equal = data
            .iter()
            .filter(|r| {
                r[f].as_ref()
                    .map(|c| cell_value(schema().fields[f].ty, Some(c.clone())))
                    == Some(v.clone())
            })
            .count();
        let count = |filter| async move {
            scan_all(
                store,
                plan(vec![key(field("id"), false)], Some(filter), vec![field("id")]),
            )
            .await
            .unwrap()
            .len()
        };
        assert_eq!(
            count(compare(name, CompareOp::Eq, v.clone(), false)).await,
            equal,
            "{name} ="
        );
        assert_eq!(
            count(compare(name, CompareOp::Ne, v.clone(), false)).await,
            data.len() - equal,
            "{name} != keeps NULLs"
        );
        assert_eq!(
            count(not(compare(name, CompareOp::Eq, v.clone(), false))).await,
            data.len() - equal - nulls,
            "NOT ({name} =) drops NULLs"
        );
        let lt = count(compare(name, CompareOp::Lt, v.clone(), false)).await;
        let ge = count(compare(name, CompareOp::Ge, v.clone(), false)).await;
        assert_eq!(lt + ge, data.len() - nulls, "{name} < and >= never hold for NULL");
    }
}

/// count, sum, min, max and avg partials, grouped and not, with and without
/// a filter, against the reference; and the group limit.
pub async fn aggregates<S: Store + ?Sized>(store: &S) {
    let data = load_sample(store, ROWS).await;
    let schema = schema();
    use AggregateFunction::{Avg, Count, Max, Min, Sum};
    let metrics: Vec<(AggregateFunction, Option<usize>)> = vec![
        (Count, None),
        (Count, Some(field("oi"))),
        (Sum, Some(field("i"))),
        (Sum, Some(field("d"))),
        (Sum, Some(field("od"))),
        (Sum, Some(field("s"))),
        (Avg, Some(field("d"))),
        (Avg, Some(field("oi"))),
        (Min, Some(field("i"))),
        (Max, Some(field("i"))),
        (Min, Some(field("od"))),
        (Max, Some(field("d"))),
        (Min, Some(field("s"))),
        (Max, Some(field("os"))),
        (Min, Some(field("t"))),
        (Max, Some(field("ot"))),
        (Min, Some(field("day"))),
        (Max, Some(field("oday"))),
        (Min, Some(field("ob"))),
        (Max, Some(field("b"))),
    ];
    let groupings = [
        vec![],
        vec![field("region")],
        vec![field("b")],
        vec![field("region"), field("b")],
        vec![field("day")],
    ];
    let filters = [
        None,
        Some(compare(
            "i",
            CompareOp::Ge,
            Value {
                kind: Some(value::Kind::IntValue(0)),
            },
            false,
        )),
        // Nothing matches: one empty group without group_by, none with.
        Some(compare("id", CompareOp::Eq, text_value("none"), false)),
    ];
    for group_by in &groupings {
        for filter in &filters {
            let kept: Vec<&Cells> = data
                .iter()
                .filter(|r| filter.as_ref().is_none_or(|f| eval(&schema, f, r) == Some(true)))
                .collect();
            let expected = reference_groups(&schema, &kept, group_by, &metrics);
            let got = store
                .aggregate(
                    AggregatePlan {
                        schema: schema.clone(),
                        filter: filter.clone(),
                        group_by: group_by.clone(),
                        metrics: metrics.clone(),
                        limit: 1_000,
                    },
                    far(),
                )
                .await
                .unwrap();
            assert_eq!(
                got.groups.len(),
                expected.len(),
                "groups by {group_by:?} where {filter:?}"
            );
            for (g, e) in got.groups.iter().zip(&expected) {
                assert_eq!(g.keys, e.keys, "group keys by {group_by:?}");
                for ((m, p), q) in metrics.iter().zip(&g.metrics).zip(&e.metrics) {
                    assert_eq!(
                        (p.count, &p.min, &p.max),
                        (q.count, &q.min, &q.max),
                        "{m:?} of {:?}",
                        g.keys
                    );
                    assert!(
                        (p.sum - q.sum).abs() <= 1e-9 * q.sum.abs().max(1.0),
                        "{m:?}: {} vs {}",
                        p.sum,
                        q.sum
                    );
                }
            }
        }
    }
    let limited = store
        .aggregate(
            AggregatePlan {
                schema: schema.clone(),
                filter: None,
                group_by: vec![field("day")],
                metrics: vec![(Count, None)],
                limit: 3,
            },
            far(),
        )
        .await
        .unwrap();
    let all = reference_groups(
        &schema,
        &data.iter().collect::<Vec<_>>(),
        &[field("day")],
        &[(Count, None)],
    );
    assert_eq!(limited.groups, all[..3].to_vec(), "the first groups, in key order");
}

/// Loading is all or nothing: one bad row (rejected by the caller, or a
/// duplicate key found by the store) writes nothing, and every rejection
/// comes back with its line.
pub async fn loading_is_all_or_nothing<S: Store + ?Sized>(store: &S) {
    let data = load_sample(store, ROWS).await;
    let before = store.stats().await.unwrap();
    let mut fresh = rows(ROWS + 5).split_off(ROWS);
    // Line 4 duplicates a stored row's key, line 5 an earlier line's.
    fresh[3][0] = data[0][0].clone();
    fresh[4][0] = fresh[0][0].clone();
    let mut source: Vec<Result<(u64, Cells), Rejection>> = fresh
        .into_iter()
        .enumerate()
        .map(|(i, c)| Ok((i as u64 + 1, c)))
        .collect();
    source[1] = Err(Rejection::new(2, "test", "rejected by the importer"));
    let outcome = store
        .load(schema(), LoadOptions::append(), Box::new(source.into_iter()))
        .await
        .unwrap();
    assert_eq!(outcome.inserted, 0);
    let lines: Vec<u64> = outcome.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![2, 4, 5], "{:?}", outcome.rejected);
    assert!(outcome.rejected[1].reason.contains("id"), "{:?}", outcome.rejected[1]);
    assert_eq!(outcome.rejected_rows, 3);
    assert_eq!(outcome.causes.get("duplicate_key"), Some(&2), "{:?}", outcome.causes);
    assert_eq!(store.stats().await.unwrap(), before, "nothing written");
    let all: Vec<usize> = (0..schema().fields.len()).collect();
    let got = scan_all(store, plan(vec![key(0, false)], None, all)).await.unwrap();
    assert_eq!(got, data, "nothing written");
    // A good append is kept.
    let more = rows(ROWS + 2).split_off(ROWS);
    let source = more.into_iter().enumerate().map(|(i, c)| Ok((i as u64 + 1, c)));
    let outcome = store
        .load(schema(), LoadOptions::append(), Box::new(source))
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.rejected.len()), (2, 0));
}

/// Many rejections: the first few are kept in full, in input order, all of
/// them counted by cause, and nothing is written.
pub async fn rejections_are_capped<S: Store + ?Sized>(store: &S) {
    const BAD: usize = 5_000;
    const SHOWN: usize = 7;
    let data = load_sample(store, ROWS).await;
    let before = store.stats().await.unwrap();
    let mut fresh = rows(ROWS + BAD + 1).split_off(ROWS);
    // The last line duplicates a stored key: a rejection of the store's.
    fresh[BAD][0] = data[0][0].clone();
    let source = fresh.into_iter().enumerate().map(|(i, cells)| {
        let line = i as u64 + 2;
        match i % 3 {
            _ if i == BAD => Ok((line, cells)),
            0 => Err(Rejection::new(line, "s: max_length", format!("line {line} too long"))),
            1 => Err(Rejection {
                line,
                reason: "two problems".into(),
                causes: vec!["s: max_length".into(), "i: min".into()],
            }),
            _ => Ok((line, cells)),
        }
    });
    let options = LoadOptions {
        replace: false,
        max_rejections_shown: SHOWN,
    };
    let outcome = store.load(schema(), options, Box::new(source)).await.unwrap();
    assert_eq!(outcome.inserted, 0);
    let lines: Vec<u64> = outcome.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![2, 3, 5, 6, 8, 9, 11], "the first {SHOWN}, in order");
    let bad = (BAD / 3 * 2 + usize::from(!BAD.is_multiple_of(3)) + usize::from(BAD % 3 > 1)) as u64;
    assert_eq!(outcome.rejected_rows, bad + 1);
    let causes: Vec<(&str, u64)> = outcome.causes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        causes,
        vec![("duplicate_key", 1), ("i: min", bad / 2), ("s: max_length", bad)],
        "every rejection counted by cause"
    );
    assert_eq!(store.stats().await.unwrap(), before, "nothing written");
}

/// The bytes of a row's values, as the budget of a scan's batches counts
/// them: text as its bytes, every other value 8, NULL nothing.
fn value_bytes(row: &Cells) -> usize {
    row.iter()
        .map(|c| match c {
            None => 0,
            Some(Cell::Text(t)) => t.len(),
            Some(_) => 8,
        })
        .sum()
}

/// Batches are cut by bytes as well as by rows: none holds more than the
/// budget (but a single row), the rows are the same; a row larger than the
/// budget ends the scan with an error naming its primary key.
pub async fn batches_are_cut_by_bytes<S: Store + ?Sized>(store: &S) {
    let data = load_sample(store, ROWS).await;
    let all: Vec<usize> = (0..schema().fields.len()).collect();
    let largest = data.iter().map(value_bytes).max().unwrap();
    let budget = largest * 3;
    let mut p = plan(vec![key(0, false)], None, all.clone());
    p.batch_rows = 1_000;
    p.batch_bytes = budget;
    let mut scan = store.scan(p, far()).await.unwrap();
    let (mut got, mut batches) = (Vec::new(), 0);
    while let Some(batch) = scan.rows.recv().await {
        let batch = batch.unwrap();
        let bytes: usize = batch.iter().map(value_bytes).sum();
        assert!(bytes <= budget, "a batch of {bytes} bytes over a budget of {budget}");
        batches += 1;
        got.extend(batch);
    }
    assert_eq!(got, data, "the same rows, in order");
    assert!(batches >= ROWS / 3, "{batches} batches of at most 3 rows' bytes");

    // A budget smaller than a row: the scan fails, naming the row by key.
    let mut p = plan(vec![key(0, false)], None, all);
    p.batch_bytes = largest - 1;
    let result = scan_all(store, p).await;
    let Err(StoreError::RowTooLarge {
        dataset,
        key,
        bytes,
        limit,
    }) = result
    else {
        panic!("expected RowTooLarge, got {result:?}");
    };
    let first_too_large = data.iter().find(|r| value_bytes(r) > largest - 1).unwrap();
    let Some(Cell::Text(id)) = &first_too_large[0] else {
        panic!("ids are text")
    };
    assert_eq!(
        (dataset.as_str(), key.as_str()),
        (DATASET, format!("id = {id}").as_str())
    );
    assert_eq!(
        (bytes, limit),
        (value_bytes(first_too_large) as u64, largest as u64 - 1)
    );
}

/// Closing the receiver (as dropping it does) stops the scan: the rest is
/// never sent and the stream ends soon; an aggregate whose future is
/// dropped leaves the store usable.
pub async fn cancellation<S: Store + ?Sized>(store: &S) {
    load_sample(store, MANY_ROWS).await;
    let all: Vec<usize> = (0..schema().fields.len()).collect();
    let mut p = plan(vec![key(field("d"), true), key(field("id"), false)], None, all);
    p.batch_rows = 10;
    let mut scan = store.scan(p, far()).await.unwrap();
    let first = scan.rows.recv().await.expect("a first batch").unwrap();
    assert_eq!(first.len(), 10);
    scan.rows.close();
    let mut drained = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = scan.rows.recv().await {
            if let Ok(batch) = item {
                drained += batch.len();
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the scan stops once its consumer has gone");
    assert!(drained < MANY_ROWS - 10, "the rest is never sent ({drained} drained)");

    let plan = AggregatePlan {
        schema: schema(),
        filter: None,
        group_by: vec![field("id")],
        metrics: vec![(AggregateFunction::Count, None)],
        limit: MANY_ROWS as u64 + 1,
    };
    let dropped = tokio::time::timeout(Duration::from_millis(1), store.aggregate(plan.clone(), far())).await;
    drop(dropped);
    let done = store.aggregate(plan, far()).await.unwrap();
    assert_eq!(done.groups.len(), MANY_ROWS);
}

/// A scan or an aggregate past its deadline ends with
/// [`StoreError::DeadlineExceeded`], not with a partial answer.
pub async fn deadline<S: Store + ?Sized>(store: &S) {
    load_sample(store, MANY_ROWS).await;
    let all: Vec<usize> = (0..schema().fields.len()).collect();
    // Not an index's order: the whole table is sorted before the first row.
    let filter = compare(
        "oi",
        CompareOp::Ne,
        Value {
            kind: Some(value::Kind::IntValue(3)),
        },
        false,
    );
    let mut p = plan(
        vec![key(field("d"), false), key(field("id"), false)],
        Some(filter.clone()),
        all,
    );
    p.batch_rows = 50;
    let past = Instant::now();
    let result = match store.scan(p, past).await {
        Ok(mut scan) => {
            let mut last = Ok(());
            while let Some(item) = scan.rows.recv().await {
                if let Err(e) = item {
                    last = Err(e);
                }
            }
            last
        }
        Err(e) => Err(e),
    };
    assert!(
        matches!(result, Err(StoreError::DeadlineExceeded(_))),
        "scan past its deadline: {result:?}"
    );
    let result = store
        .aggregate(
            AggregatePlan {
                schema: schema(),
                filter: Some(filter),
                group_by: vec![field("id")],
                metrics: vec![(AggregateFunction::Sum, Some(field("d")))],
                limit: MANY_ROWS as u64 + 1,
            },
            past,
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::DeadlineExceeded(_))),
        "aggregate past its deadline: {:?}",
        result.map(|a| a.groups.len())
    );
}

// Plans and results.

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn key(field: usize, descending: bool) -> SortColumn {
    SortColumn { field, descending }
}

fn plan(order: Vec<SortColumn>, filter: Option<FilterExpr>, columns: Vec<usize>) -> ScanPlan {
    ScanPlan {
        schema: schema(),
        filter,
        order,
        after: None,
        limit: 1_000_000,
        columns,
        batch_rows: 16,
        batch_bytes: 4 << 20,
    }
}

/// Every row of a scan, or its error.
pub async fn scan_all<S: Store + ?Sized>(store: &S, plan: ScanPlan) -> Result<Vec<Cells>, StoreError> {
    let columns = plan.columns.len();
    let batch_rows = plan.batch_rows;
    let mut scan = store.scan(plan, far()).await?;
    let mut out = Vec::new();
    while let Some(batch) = scan.rows.recv().await {
        let batch = batch?;
        assert!(
            !batch.is_empty() && batch.len() <= batch_rows,
            "batch of {}",
            batch.len()
        );
        assert!(batch.iter().all(|r| r.len() == columns));
        out.extend(batch);
    }
    Ok(out)
}

// Filters.

fn text_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_owned())),
    }
}

fn compare(field: &str, op: CompareOp, value: Value, prefix: bool) -> FilterExpr {
    FilterExpr {
        kind: Some(filter_expr::Kind::Comparison(Comparison {
            field: field.to_owned(),
            op: op as i32,
            value: Some(value),
            prefix,
        })),
    }
}

fn and(exprs: Vec<FilterExpr>) -> FilterExpr {
    FilterExpr {
        kind: Some(filter_expr::Kind::And(FilterList { exprs })),
    }
}

fn or(exprs: Vec<FilterExpr>) -> FilterExpr {
    FilterExpr {
        kind: Some(filter_expr::Kind::Or(FilterList { exprs })),
    }
}

fn not(expr: FilterExpr) -> FilterExpr {
    FilterExpr {
        kind: Some(filter_expr::Kind::Not(Box::new(expr))),
    }
}

/// A value of field `f` held by some row: the seventh non-null one, so
/// that some rows sort before it and some after.
fn pivot(data: &[Cells], f: usize) -> Value {
    let cell = data
        .iter()
        .filter_map(|r| r[f].clone())
        .nth(7)
        .expect("non-null values");
    cell_value(schema().fields[f].ty, Some(cell))
}

/// The reference semantics, SQL's three-valued logic: `None` is unknown.
/// A comparison with NULL is unknown, except `!=`, which is `IS NOT`.
fn eval(schema: &DatasetSchema, expr: &FilterExpr, row: &Cells) -> Option<bool> {
    match expr.kind.as_ref().expect("expression kind") {
        filter_expr::Kind::Comparison(c) => {
            let (f, fs) = schema.field(&c.field).expect("known field");
            let literal = literal_cell(fs.ty, c.value.as_ref().expect("a value"));
            let op = CompareOp::try_from(c.op).expect("an operator");
            let Some(cell) = &row[f] else {
                return if op == CompareOp::Ne { Some(true) } else { None };
            };
            if op == CompareOp::Has && c.prefix {
                let (Cell::Text(s), Cell::Text(p)) = (cell, &literal) else {
                    panic!("prefix on text only")
                };
                return Some(s.starts_with(p.as_str()));
            }
            let ord = compare_cells(cell, &literal);
            Some(match op {
                CompareOp::Eq | CompareOp::Has => ord == Ordering::Equal,
                CompareOp::Ne => ord != Ordering::Equal,
                CompareOp::Lt => ord == Ordering::Less,
                CompareOp::Le => ord != Ordering::Greater,
                CompareOp::Gt => ord == Ordering::Greater,
                CompareOp::Ge => ord != Ordering::Less,
                CompareOp::Unspecified => panic!("no operator"),
            })
        }
        filter_expr::Kind::And(l) => {
            let parts: Vec<Option<bool>> = l.exprs.iter().map(|e| eval(schema, e, row)).collect();
            if parts.contains(&Some(false)) {
                Some(false)
            } else if parts.contains(&None) {
                None
            } else {
                Some(true)
            }
        }
        filter_expr::Kind::Or(l) => {
            let parts: Vec<Option<bool>> = l.exprs.iter().map(|e| eval(schema, e, row)).collect();
            if parts.contains(&Some(true)) {
                Some(true)
            } else if parts.contains(&None) {
                None
            } else {
                Some(false)
            }
        }
        filter_expr::Kind::Not(inner) => eval(schema, inner, row).map(|b| !b),
    }
}

/// A filter literal as the cell it is compared with.
fn literal_cell(ty: FieldType, v: &Value) -> Cell {
    match (ty, v.kind.clone().expect("a literal")) {
        (_, value::Kind::StringValue(s) | value::Kind::DateValue(s)) => Cell::Text(s),
        (FieldType::Double, value::Kind::IntValue(i)) => Cell::Real(i as f64),
        (_, value::Kind::IntValue(i)) => Cell::Int(i),
        (_, value::Kind::DoubleValue(d)) => Cell::Real(d),
        (_, value::Kind::BoolValue(b)) => Cell::Bool(b),
        (_, value::Kind::TimestampValue(t)) => Cell::Time(t.seconds),
    }
}

/// Orders two cells of one field: text bytewise, numbers numerically,
/// false before true.
fn compare_cells(a: &Cell, b: &Cell) -> Ordering {
    match (a, b) {
        (Cell::Text(x), Cell::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Cell::Int(x), Cell::Int(y)) | (Cell::Time(x), Cell::Time(y)) => x.cmp(y),
        (Cell::Real(x), Cell::Real(y)) => x.total_cmp(y),
        (Cell::Bool(x), Cell::Bool(y)) => x.cmp(y),
        (x, y) => panic!("cells of different kinds: {x:?} and {y:?}"),
    }
}

fn compare_rows(order: &[SortColumn], a: &Cells, b: &Cells) -> Ordering {
    for k in order {
        let (x, y) = (
            a[k.field].as_ref().expect("sortable"),
            b[k.field].as_ref().expect("sortable"),
        );
        let ord = compare_cells(x, y);
        let ord = if k.descending { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

// Aggregates.

fn reference_groups(
    schema: &DatasetSchema,
    rows: &[&Cells],
    group_by: &[usize],
    metrics: &[(AggregateFunction, Option<usize>)],
) -> Vec<GroupCells> {
    let mut groups: Vec<(Cells, Vec<&Cells>)> = Vec::new();
    for row in rows {
        let keys: Cells = group_by.iter().map(|&g| row[g].clone()).collect();
        match groups.iter_mut().find(|(k, _)| *k == keys) {
            Some((_, members)) => members.push(row),
            None => groups.push((keys, vec![row])),
        }
    }
    if group_by.is_empty() && groups.is_empty() {
        groups.push((Vec::new(), Vec::new()));
    }
    groups.sort_by(|(a, _), (b, _)| {
        a.iter()
            .zip(b)
            .map(|(x, y)| compare_cells(x.as_ref().expect("required"), y.as_ref().expect("required")))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
    groups
        .into_iter()
        .map(|(keys, members)| GroupCells {
            keys,
            metrics: metrics
                .iter()
                .map(|(_, f)| match f {
                    None => Partial {
                        count: members.len() as u64,
                        sum: 0.0,
                        min: None,
                        max: None,
                    },
                    Some(f) => {
                        let values: Vec<&Cell> = members.iter().filter_map(|r| r[*f].as_ref()).collect();
                        let sum = if schema.fields[*f].ty.is_numeric() {
                            values
                                .iter()
                                .map(|c| match c {
                                    Cell::Int(i) => *i as f64,
                                    Cell::Real(r) => *r,
                                    _ => 0.0,
                                })
                                .sum()
                        } else {
                            0.0
                        };
                        Partial {
                            count: values.len() as u64,
                            sum,
                            min: values.iter().copied().min_by(|a, b| compare_cells(a, b)).cloned(),
                            max: values.iter().copied().max_by(|a, b| compare_cells(a, b)).cloned(),
                        }
                    }
                })
                .collect(),
        })
        .collect()
}
